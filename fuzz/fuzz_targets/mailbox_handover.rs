//! Fuzz target: a mailbox request as a replica reads it, and for a handover its proof checked
//! against its items, on any bytes.

#![no_main]

use kolokol_protocol::mailbox::{Request, handover_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Request::Handover { mailbox_id, items, proof }) = Request::from_bytes(data) {
        let _ = handover_bytes(&mailbox_id, proof.timestamp, &items);
        let _ = proof.verify(&mailbox_id, &items, proof.timestamp);
        let _ = proof.verify(&mailbox_id, &items, 1_800_000_000);
    }
});
