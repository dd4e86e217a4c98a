//! Fuzz target: the codec decoding a `Advertisement`, on any bytes.

#![no_main]

use kolokol_protocol::codec;
use kolokol_protocol::envelope::Advertisement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<Advertisement>("advertisement", data);
});
