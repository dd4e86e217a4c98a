//! Fuzz target: a mailbox protocol version 2 request decoded, and its blinded proof verified,
//! on any bytes.

#![no_main]

use kolokol_protocol::mailbox::{Operation, RequestV2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match RequestV2::from_bytes(data) {
        Ok(RequestV2::Fetch { mailbox_id, proof }) => {
            let _ = proof.verify(&mailbox_id, Operation::Fetch, &[], 1_800_000_000);
        }
        Ok(RequestV2::Delete { mailbox_id, item_ids, proof }) => {
            let _ = proof.verify(&mailbox_id, Operation::Delete, &item_ids, 1_800_000_000);
        }
        _ => {}
    }
});
