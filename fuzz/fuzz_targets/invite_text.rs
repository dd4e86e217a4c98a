//! Fuzz target: invite code text of either version, on any string.

#![no_main]

use kolokol_protocol::invite::Invite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Invite::from_text_with_keys(&String::from_utf8_lossy(data), 1_800_000_000);
});
