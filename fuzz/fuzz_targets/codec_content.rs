//! Fuzz target: the codec decoding a `Content`, on any bytes.

#![no_main]

use kolokol_protocol::codec;
use kolokol_protocol::message::Content;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<Content>("content", data);
});
