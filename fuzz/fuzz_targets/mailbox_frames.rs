//! Fuzz target: the mailbox request and response frames, on any bytes.

#![no_main]

use kolokol_protocol::mailbox::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Request::from_bytes(data);
    let _ = Response::from_bytes(data);
});
