//! Fuzz target: the conflict rule on any set of changes. The input is cut into pieces, each
//! decoded as a change and kept without its signature checked (as a node reloading its own
//! store does), so the fuzzer reaches the fold with graphs of any shape: missing parents, wrong
//! numbers, unauthorized and concurrent changes. Resolving, answering and listing must not
//! panic, and resolving twice gives the same state.

#![no_main]

use kolokol_protocol::group::{GroupLog, GroupOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Pieces are separated by a 0xff 0x00 0xff marker, which no short change needs.
    let mut pieces = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(3).position(|w| w == [0xff, 0x00, 0xff]) {
        pieces.push(&rest[..at]);
        rest = &rest[at + 3..];
    }
    pieces.push(rest);
    let ops: Vec<GroupOp> = pieces.iter().filter_map(|p| GroupOp::from_bytes(p).ok()).collect();
    let Some(group) = ops.iter().find_map(|op| op.group().ok()) else { return };
    let mut log = GroupLog::new(group);
    for op in ops {
        let _ = log.insert_verified(op);
    }
    let state = log.resolve();
    assert_eq!(state, log.resolve());
    let heads = state.map(|s| s.heads).unwrap_or_default();
    let _ = log.answer(&log.missing(), &heads);
    if let Some(first) = heads.first() {
        let _ = log.not_ancestors_of(first);
    }
});
