//! Tests of the data directory: who may read it.

use std::os::unix::fs::PermissionsExt;

use crate::data_dir::{DATABASE_FILE, DataDir};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_new_data_dir_is_the_owners_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("new");
    let _dir = DataDir::open(&root).unwrap();
    assert_eq!(mode(&root), 0o700);
}

#[test]
fn an_open_data_dir_and_its_database_are_closed_to_others() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("lax");
    std::fs::create_dir(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join(DATABASE_FILE), b"").unwrap();
    std::fs::set_permissions(root.join(DATABASE_FILE), std::fs::Permissions::from_mode(0o644))
        .unwrap();
    let dir = DataDir::open(&root).unwrap();
    assert_eq!(mode(&root), 0o700);
    dir.restrict(DATABASE_FILE).unwrap();
    assert_eq!(mode(&root.join(DATABASE_FILE)), 0o600);
    dir.restrict("not-there").unwrap();
}
