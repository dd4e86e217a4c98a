//! Fuzz target: the stored conversation state reader, on any bytes.

#![no_main]

use kolokol_protocol::conversation::Conversation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = Conversation::from_bytes(data) {
        // What was accepted must encode again: the reader checked every invariant.
        let _ = state.to_bytes();
        let _ = state.receive_key_ids();
    }
});
