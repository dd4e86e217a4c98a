//! Fuzz target: the codec decoding a group message, on any bytes, and its bounds check.

#![no_main]

use kolokol_protocol::codec;
use kolokol_protocol::group::GroupMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = codec::decode::<GroupMessage>("group message", data) {
        let _ = message.is_valid();
    }
});
