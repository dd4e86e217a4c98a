//! Message ids: 128 random bits from the operating system's generator, for every outbox row
//! the node creates (texts, receipts, probes), so no two messages share an id.

use kolokol_protocol::message::MessageId;
use rand::RngCore;

/// A fresh random message id.
pub(crate) fn new_message_id() -> MessageId {
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    id
}
