//! Message ids: 128 random bits from the operating system's generator for every outbox row the
//! node creates (texts, read receipts, probes), so no two messages share an id; a delivery
//! receipt's id is derived from the message it answers instead, so one message gets at most one;
//! and the abbreviated ids people type, a unique prefix of the 32 hex digits.

use blake2::{Blake2s256, Digest};
use kolokol_protocol::message::MessageId;
use libp2p::PeerId;
use rand::RngCore;

/// A fresh random message id.
pub(crate) fn new_message_id() -> MessageId {
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    id
}

/// The id of our delivery receipt for message `of` from `sender`: the same every time, so the
/// same message fetched from a mailbox again (or replayed there by anyone) queues no second
/// receipt, and the outbox cannot be grown by repeats.
pub(crate) fn receipt_id(sender: &PeerId, of: &MessageId) -> MessageId {
    let digest = Blake2s256::new()
        .chain_update(b"kolokol-receipt-id:v1")
        .chain_update(sender.to_bytes())
        .chain_update(of)
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The fewest hex digits of an id a user may type for it: with fewer, a prefix would match
/// many messages in any busy outbox.
pub const MIN_ID_PREFIX: usize = 4;

/// An id as a person typed it: 4 to 32 hex digits, any case, surrounding space ignored;
/// returned in upper case, as SQLite's `hex()` writes ids. `None` if it is not one.
pub(crate) fn id_prefix(text: &str) -> Option<String> {
    let text = text.trim();
    ((MIN_ID_PREFIX..=32).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| text.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::id_prefix;

    #[test]
    fn an_id_prefix_is_four_to_thirty_two_hex_digits() {
        assert_eq!(id_prefix(" 3f9A ").as_deref(), Some("3F9A"));
        assert_eq!(id_prefix(&"a".repeat(32)).as_deref(), Some("A".repeat(32).as_str()));
        for bad in ["", "3f9", "3f9g", &"a".repeat(33), "3f 9a"] {
            assert_eq!(id_prefix(bad), None, "{bad:?}");
        }
    }
}
