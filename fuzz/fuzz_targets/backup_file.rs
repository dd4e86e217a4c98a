//! Fuzz target: a backup file's header parser and its contents decoder, on any bytes. Opening
//! needs the passphrase's key derivation, far too slow to fuzz; what is parsed before it and
//! decoded after it is what a damaged file reaches.

#![no_main]

use kolokol_protocol::backup::{Contents, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data);
    let _ = Contents::decode(data);
});
