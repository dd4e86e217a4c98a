//! Fuzz target: the codec decoding a `DeviceCertificate`, on any bytes.

#![no_main]

use kolokol_protocol::codec;
use kolokol_protocol::identity::DeviceCertificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<DeviceCertificate>("certificate", data);
});
