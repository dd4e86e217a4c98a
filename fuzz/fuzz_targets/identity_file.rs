//! Fuzz target: the identity.key reader, on any bytes.

#![no_main]

use kolokol_protocol::identity::Identity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Identity::from_file_bytes(data);
});
