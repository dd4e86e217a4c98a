//! Message ids: 128 random bits from the operating system's generator for every outbox row the
//! node creates (texts, read receipts, probes), so no two messages share an id; a delivery
//! receipt's id is derived from the message it answers instead, so one message gets at most one.

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
