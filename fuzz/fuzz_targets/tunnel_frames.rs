//! Fuzz target: the resumable stealth tunnel's frames, offers and answers, on any bytes.

#![no_main]

use kolokol_protocol::tunnel::{Answer, Offer, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while let Ok(Some((_, len))) = decode(&data[at..]) {
        at += len;
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Offer::find(text);
        let _ = Answer::parse(text, Some(text), Some(text));
    }
});
