//! The unit texts: what a user's node runs as, and the relay unit that docs/RELAY.md shows.

use std::path::Path;

use crate::service::{relay_unit, user_unit};

#[test]
fn the_user_unit_runs_this_binary_on_this_data_dir_and_restarts_it() {
    let unit = user_unit(
        Path::new("/home/ann/.cargo/bin/kolokol"),
        Path::new("/home/ann/my kolokol"),
        &["--bootstrap".into(), "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW".into()],
    );
    assert!(unit.starts_with("[Unit]\nDescription=Kolokol node"), "{unit}");
    assert!(
        unit.contains("\nExecStart=/home/ann/.cargo/bin/kolokol --data-dir \"/home/ann/my kolokol\" node --bootstrap /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW\n"),
        "{unit}"
    );
    for line in
        ["Restart=on-failure", "UMask=0077", "NoNewPrivileges=yes", "WantedBy=default.target"]
    {
        assert!(unit.lines().any(|l| l == line), "{line} missing: {unit}");
    }
    // Percent signs are systemd specifiers: a path with one is escaped, not expanded.
    let odd = user_unit(Path::new("/opt/k%h/kolokol"), Path::new("/tmp/a\"b"), &[]);
    assert!(odd.contains("ExecStart=/opt/k%%h/kolokol --data-dir \"/tmp/a\\\"b\" node\n"), "{odd}");
}

#[test]
fn relay_md_shows_exactly_the_relay_unit_kolokol_writes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/RELAY.md");
    let doc = std::fs::read_to_string(path).expect("docs/RELAY.md is readable");
    let unit = relay_unit(
        Path::new("/usr/local/bin/kolokol"),
        &[
            "--external-address".into(),
            "/ip4/198.51.100.4/tcp/4001".into(),
            "--metrics".into(),
            "127.0.0.1:9464".into(),
        ],
    );
    assert!(doc.contains(&format!("```ini\n{unit}```")), "RELAY.md's unit differs from:\n{unit}");
}
