//! Fuzz target: a presence record as a DHT server or a lookup reads it, on any bytes.

#![no_main]

use kolokol_protocol::identity::Identity;
use kolokol_protocol::presence::{PresenceRecord, record_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = record_key(&Identity::from_secrets([1; 32], [2; 32]).peer_id());
    let _ = PresenceRecord::from_dht(&key, data, 1_800_000_000);
});
