//! Fuzz target: a file message (an offer or a chunk) decoded from any bytes, then checked as a
//! receiver checks it, against its own offer's size and against any size.

#![no_main]

use kolokol_protocol::codec;
use kolokol_protocol::file::{self, FileMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, rest)) = data.split_first_chunk::<8>() else { return };
    let size = u64::from_be_bytes(*size);
    if let Ok(message) = codec::decode::<FileMessage>("file message", rest) {
        let _ = message.is_valid();
        match message {
            FileMessage::Offer(offer) => {
                let _ = offer.is_valid();
                let _ = offer.chunks();
                let _ = file::chunk_span(offer.size, offer.chunks().saturating_sub(1));
            }
            FileMessage::Chunk { index, data } => {
                if let Ok((offset, len)) = file::check_chunk(size, index, &data) {
                    assert!(offset + len as u64 <= size);
                }
            }
        }
    }
});
