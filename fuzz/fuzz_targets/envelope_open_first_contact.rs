//! Fuzz target: the format 3 first-contact opener, on any bytes.

#![no_main]

use std::sync::LazyLock;

use kolokol_protocol::envelope;
use kolokol_protocol::identity::Identity;
use libfuzzer_sys::fuzz_target;

/// Made once: deriving the keys for every input cost more than the opening being fuzzed.
static RECIPIENT: LazyLock<Identity> = LazyLock::new(|| Identity::from_secrets([3; 32], [4; 32]));

fuzz_target!(|data: &[u8]| {
    let recipient = &*RECIPIENT;
    let _ = envelope::open_first_contact(
        recipient.device(),
        recipient.identity_key(),
        data,
        1_800_000_000,
    );
});
