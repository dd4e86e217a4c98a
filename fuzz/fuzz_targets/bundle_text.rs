//! Fuzz target: a bootstrap bundle's text as `kolokol peers import` reads it, on any bytes.

#![no_main]

use kolokol_protocol::bundle::Bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Bundle::from_text(&String::from_utf8_lossy(data));
});
