//! Fuzz target: the format 1 opener and the header reader, on any bytes.

#![no_main]

use std::sync::LazyLock;

use kolokol_protocol::envelope;
use kolokol_protocol::identity::Identity;
use libfuzzer_sys::fuzz_target;

/// Made once: deriving the keys for every input cost more than the opening being fuzzed.
static RECIPIENT: LazyLock<Identity> = LazyLock::new(|| Identity::from_secrets([3; 32], [4; 32]));

fuzz_target!(|data: &[u8]| {
    let recipient = &*RECIPIENT;
    let _ = envelope::peek(data);
    let _ = envelope::open(recipient.device(), data, 1_800_000_000);
});
