//! What travels inside an envelope: a message with its id and timestamp, and the kinds of body.
//!
//! Every kind of body is a variant of [`Body`]; a new kind is a new variant appended at the
//! end (docs/PROTOCOL.md, rule 1.4), so what older nodes send still decodes the same.

use bincode::{Decode, Encode};

/// A message's 128-bit id, chosen at random by the sender. It names the message in the outbox,
/// in receipts and in the receiver's duplicate check.
pub type MessageId = [u8; 16];

/// The largest text a single message may carry, in bytes of UTF-8. A text whose body does not
/// fit one envelope travels in chunks ([`crate::chunk`]); this bound keeps its encoded body
/// within [`crate::chunk::MAX_CHUNKED_LEN`].
pub const MAX_TEXT_LEN: usize = 1_000_000;

/// The most message ids one read receipt may name. A reader who marks more at once sends
/// several receipts; a receipt naming more is ignored whole, so a peer cannot make us walk an
/// unbounded list (the decoder's size limit alone would allow about 4 000).
pub const MAX_READ_IDS: usize = 256;

/// The most message ids one batched delivery receipt ([`Body::Receipts`]) may name.
pub const MAX_RECEIPT_IDS: usize = 256;

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
    /// An end-to-end read receipt: the recipient's user has read the messages with these ids.
    /// Appended after `Receipt`, so the encoding of the older variants is unchanged. Valid only
    /// with 1 to [`MAX_READ_IDS`] ids; see [`Body::is_valid`].
    Read {
        /// The ids of the messages read, each sent by the receipt's recipient.
        of: Vec<MessageId>,
    },
    /// One chunk of a body too large for one envelope (see [`crate::chunk`]). Every chunk of a
    /// message travels in its own envelope, in a [`Content`] with the message's id and time;
    /// the receiver keeps them until it has all `count`, then decodes the body they make.
    /// Appended after `Read`; valid only within the bounds of [`crate::chunk::check`].
    Chunk {
        /// Position of this chunk, from 0.
        index: u32,
        /// How many chunks the message has, 1 to [`crate::chunk::MAX_CHUNKS`]. A body just
        /// over [`crate::chunk::MAX_UNCHUNKED_LEN`] makes one chunk.
        count: u32,
        /// Length of the encoded body the chunks carry, without the zero padding of the last.
        body_len: u32,
        /// Exactly [`crate::chunk::CHUNK_LEN`] bytes of the encoded body, the last chunk padded
        /// with zeros.
        data: Vec<u8>,
    },
    /// End-to-end delivery receipts for several messages at once: what [`Body::Receipt`] says,
    /// for each id. A node sends it when several receipts to one peer are due together, so a
    /// burst of messages costs one envelope of receipts rather than one each. Appended after
    /// `Chunk`; valid only with 1 to [`MAX_RECEIPT_IDS`] ids.
    Receipts {
        /// The ids of the acknowledged messages.
        of: Vec<MessageId>,
    },
    /// A message of a private group (a text, membership changes, or a request for changes),
    /// sent to each member in their own envelope (see [`crate::group`]). Appended after
    /// `Receipts`; valid only within the bounds of [`crate::group::GroupMessage::is_valid`].
    Group(crate::group::GroupMessage),
    /// A text message that knows its place in its sender's conversation: the `seq`-th text of
    /// series `series` that its sender wrote to this recipient. With the content's
    /// `sent_at_ms` (the send time), the recipient shows a conversation in the order it was
    /// written, whatever order the envelopes arrived in, and sees a gap where one is missing.
    /// Appended after `Group`, so every older variant, `Text` included, still decodes as
    /// before; valid only with `seq` ≥ 1 (see [`Body::is_valid`]).
    NumberedText {
        /// The sender's numbering of this conversation: chosen at random when the numbering
        /// began, and again when the sender had to begin it anew (its state was restored from
        /// an older backup), so numbers of two series are never compared.
        series: u64,
        /// The text's number in its series, from 1, one more for each text.
        seq: u64,
        /// What it says.
        text: String,
    },
    /// A file's offer or one of its chunks (see [`crate::file`]); the content's id is the
    /// transfer's. Appended after `NumberedText`; valid only within the bounds of
    /// [`crate::file::FileMessage::is_valid`].
    File(crate::file::FileMessage),
}

impl Body {
    /// Whether the body is within its bounds: a read receipt names at least one and at most
    /// [`MAX_READ_IDS`] ids. Receivers check this before acting on a body; decoding alone only
    /// bounds the total size.
    pub fn is_valid(&self) -> bool {
        match self {
            Body::Read { of } => !of.is_empty() && of.len() <= MAX_READ_IDS,
            Body::Receipts { of } => !of.is_empty() && of.len() <= MAX_RECEIPT_IDS,
            Body::Chunk { index, count, body_len, data } => {
                crate::chunk::check(*index, *count, *body_len, data).is_ok()
            }
            Body::NumberedText { seq, .. } => *seq >= 1,
            Body::Group(message) => message.is_valid(),
            Body::File(message) => message.is_valid(),
            Body::Text(_) | Body::Receipt { .. } => true,
        }
    }

    /// The text a user wrote, if the body is one (numbered or not).
    pub fn text(&self) -> Option<&str> {
        match self {
            Body::Text(text) | Body::NumberedText { text, .. } => Some(text),
            _ => None,
        }
    }
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

#[cfg(test)]
mod tests;
