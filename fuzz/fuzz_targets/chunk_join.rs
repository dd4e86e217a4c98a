//! Fuzz target: joining chunks into a message body, on any chunk data and claimed length.

#![no_main]

use kolokol_protocol::chunk::{self, CHUNK_LEN, MAX_CHUNKS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first four bytes claim the body length, the fifth how many chunks to pass (0 to one
    // more than the most); the rest is cut into one piece per chunk, each padded with zeros, so
    // the chunks differ and a body can span all of them.
    let (Some(len), Some(count)) = (data.get(..4), data.get(4)) else { return };
    let body_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let count = usize::from(*count) % (MAX_CHUNKS as usize + 2);
    let rest = &data[5..];
    let piece_len = rest.len().div_ceil(count.max(1)).max(1);
    let chunks: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let mut chunk: Vec<u8> =
                rest.iter().skip(i * piece_len).take(piece_len).copied().collect();
            chunk.resize(CHUNK_LEN, 0);
            chunk
        })
        .collect();
    let _ = chunk::join(chunks.iter().map(Vec::as_slice), body_len);
});
