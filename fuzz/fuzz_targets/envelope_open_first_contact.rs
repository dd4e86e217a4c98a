//! Fuzz target: the format 3 first-contact opener, on any bytes.

#![no_main]

use kolokol_protocol::envelope;
use kolokol_protocol::identity::Identity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let recipient = Identity::from_secrets([3; 32], [4; 32]);
    let _ = envelope::open_first_contact(
        recipient.device(),
        recipient.identity_key(),
        data,
        1_800_000_000,
    );
});
