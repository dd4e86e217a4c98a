//! Fuzz target: joining chunks into a message body, on any chunk data and claimed length.

#![no_main]

use kolokol_protocol::chunk::{self, CHUNK_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first four bytes claim the body length, the fifth how many chunks to pass; the rest,
    // padded with zeros, is the data of every chunk.
    let (Some(len), Some(count)) = (data.get(..4), data.get(4)) else { return };
    let body_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let mut piece = data[5..].to_vec();
    piece.resize(CHUNK_LEN, 0);
    let _ = chunk::join(std::iter::repeat_n(piece.as_slice(), usize::from(*count % 4)), body_len);
});
