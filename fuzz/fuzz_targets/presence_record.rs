//! Fuzz target: a presence record as a DHT server or a lookup reads it, on any bytes.

#![no_main]

use std::sync::LazyLock;

use kolokol_protocol::identity::Identity;
use kolokol_protocol::presence::{PresenceRecord, record_key};
use libfuzzer_sys::fuzz_target;

/// Made once: deriving the key for every input cost more than the decoding being fuzzed.
static KEY: LazyLock<Vec<u8>> =
    LazyLock::new(|| record_key(&Identity::from_secrets([1; 32], [2; 32]).peer_id()));

fuzz_target!(|data: &[u8]| {
    let _ = PresenceRecord::from_dht(&KEY, data, 1_800_000_000);
});
