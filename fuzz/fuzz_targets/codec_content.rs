//! Fuzz target: the codec decoding a `Content`, on any bytes.

#![no_main]

use kolokol_protocol::codec;
use kolokol_protocol::message::Content;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Whatever decodes, its bounds check (a read receipt's id count) answers without panicking.
    if let Ok(content) = codec::decode::<Content>("content", data) {
        let _ = content.body.is_valid();
        let _ = content.body.text();
    }
});
