//! What travels inside an envelope: a message with its id and timestamp, and the kinds of body.

use bincode::{Decode, Encode};

/// A message's 128-bit id, chosen at random by the sender. It names the message in the outbox,
/// in receipts and in the receiver's duplicate check.
pub type MessageId = [u8; 16];

/// The largest text a single message may carry, in bytes of UTF-8. It keeps the sealed content
/// inside the largest envelope bucket with room for the sender's certificate; longer texts are
/// refused until chunking exists.
pub const MAX_TEXT_LEN: usize = 60_000;

/// The decrypted content of one envelope.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Content {
    /// The message id; a receipt carries the id of the message it acknowledges.
    pub id: MessageId,
    /// When the sender created it, Unix milliseconds by the sender's clock.
    pub sent_at_ms: u64,
    /// What it says.
    pub body: Body,
}

/// The kinds of content.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Body {
    /// A text message typed by the user.
    Text(String),
    /// An end-to-end delivery receipt: the recipient has stored the message with this id.
    Receipt {
        /// The id of the acknowledged message.
        of: MessageId,
    },
}

/// Formats a message id as 32 lower-case hex digits, the form the CLI shows.
pub fn format_id(id: &MessageId) -> String {
    crate::identity::hex(id)
}

/// Parses the 32-hex-digit form of a message id.
pub fn parse_id(text: &str) -> Option<MessageId> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}
