//! Fuzz target: a signed prekey decoded and verified, on any bytes.

#![no_main]

use kolokol_protocol::codec;
use kolokol_protocol::prekey::SignedPrekey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(prekey) = codec::decode::<SignedPrekey>("signed prekey", data) {
        let _ = prekey.verify(&[1; 32], 1_800_000_000);
    }
});
