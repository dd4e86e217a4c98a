//! Fuzz target: a hybrid prekey decoded and verified (ML-KEM modulus check included), on any
//! bytes.

#![no_main]

use kolokol_protocol::codec;
use kolokol_protocol::prekey::HybridPrekey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(prekey) = codec::decode::<HybridPrekey>("hybrid prekey", data) {
        let _ = prekey.verify(&[1; 32], 1_800_000_000);
    }
});
