//! Fuzz target: a group change decoded from any bytes, verified, and resolved alone.

#![no_main]

use kolokol_protocol::group::{GroupLog, GroupOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(op) = GroupOp::from_bytes(data) {
        let _ = op.verify();
        if let Ok(group) = op.group() {
            let mut log = GroupLog::new(group);
            let _ = log.insert(op.clone());
            let _ = log.insert_verified(op);
            let _ = log.resolve();
        }
    }
});
