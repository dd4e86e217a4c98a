//! Fuzz target: the codec decoding a `Invite`, on any bytes.

#![no_main]

use kolokol_protocol::codec;
use kolokol_protocol::invite::Invite;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode::<Invite>("invite", data);
});
