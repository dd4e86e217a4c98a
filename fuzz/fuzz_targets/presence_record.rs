//! Fuzz target: a presence record as a DHT server or a lookup reads it, on any bytes, and its
//! part for contacts as a contact opens it.

#![no_main]

use std::sync::LazyLock;

use kolokol_protocol::identity::Identity;
use kolokol_protocol::mailbox_key::MailboxKey;
use kolokol_protocol::presence::{PresenceRecord, record_key};
use libfuzzer_sys::fuzz_target;

/// Made once: deriving the key for every input cost more than the decoding being fuzzed.
static KEY: LazyLock<Vec<u8>> =
    LazyLock::new(|| record_key(&Identity::from_secrets([1; 32], [2; 32]).peer_id()));

static MAILBOX: LazyLock<MailboxKey> = LazyLock::new(|| MailboxKey::from_secret(&[3; 32]));

fuzz_target!(|data: &[u8]| {
    if let Ok((record, _)) = PresenceRecord::from_dht(&KEY, data, 1_800_000_000) {
        let _ = record.open_for_contacts(MAILBOX.address(), 1_800_000_000);
    }
});
