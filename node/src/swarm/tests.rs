//! Tests of the swarm task's small helpers.

use crate::swarm::one_line;

#[test]
fn multi_line_errors_become_one_line() {
    let dial = "Failed to negotiate transport protocol(s): [\n    (/ip4/10.0.0.1/tcp/1: Connection refused)\r\n    (/ip4/10.0.0.2/tcp/1: timed out)\n]";
    assert_eq!(
        one_line(&dial),
        "Failed to negotiate transport protocol(s): [ (/ip4/10.0.0.1/tcp/1: Connection refused) (/ip4/10.0.0.2/tcp/1: timed out) ]"
    );
    assert_eq!(one_line(&"already one line"), "already one line");
}
