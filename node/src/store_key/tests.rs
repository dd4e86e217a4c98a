//! The key parameters file and the key files: what is accepted, and that anything else is
//! refused with an error, never a panic.

use std::os::unix::fs::PermissionsExt;

use proptest::prelude::*;
use zeroize::Zeroizing;

use super::*;

#[track_caller]
fn check_round_trip(params: KeyParams) {
    assert_eq!(KeyParams::parse(&params.to_text()), Ok(params));
}

#[test]
fn parameters_read_back_as_written() {
    check_round_trip(KeyParams::new_passphrase());
    check_round_trip(KeyParams::KeyFile);
    check_round_trip(KeyParams::Argon2id {
        memory_kib: MAX_MEMORY_KIB,
        passes: MAX_PASSES,
        lanes: 1,
        salt: [0xab; 16],
    });
}

#[test]
fn parameters_out_of_bounds_or_unknown_are_refused() {
    let salt = "00".repeat(16);
    for text in [
        String::new(),
        "kolokol-key-params 2\nkdf key-file\n".into(),
        "kolokol-key-params 1\n".into(),
        "kolokol-key-params 1\nkdf scrypt\n".into(),
        "kolokol-key-params 1\nkdf key-file\nsalt 00\n".into(),
        format!("kolokol-key-params 1\nkdf argon2id\nmemory_kib 2000000\npasses 3\nlanes 1\nsalt {salt}\n"),
        format!("kolokol-key-params 1\nkdf argon2id\nmemory_kib 65536\npasses 0\nlanes 1\nsalt {salt}\n"),
        "kolokol-key-params 1\nkdf argon2id\nmemory_kib 65536\npasses 3\nlanes 1\nsalt +f00000000000000000000000000000\n".into(),
        format!("kolokol-key-params 1\nkdf argon2id\nkdf argon2id\npasses 3\nlanes 1\nsalt {salt}\n"),
    ] {
        assert!(KeyParams::parse(&text).is_err(), "{text:?} was accepted");
    }
}

#[test]
fn one_passphrase_and_salt_make_one_key_and_another_salt_another() {
    let small = |salt| KeyParams::Argon2id { memory_kib: 64, passes: 1, lanes: 1, salt };
    let dir = Path::new("/nonexistent");
    let unlock = Unlock::Passphrase(Zeroizing::new("correct horse battery".into()));
    let key = |params: KeyParams| params.derive(&unlock, dir).expect("derives").pragma_value();
    assert_eq!(key(small([1; 16])), key(small([1; 16])));
    assert_ne!(key(small([1; 16])), key(small([2; 16])));
    let text = key(small([1; 16]));
    assert!(text.starts_with("\"x'") && text.ends_with("'\"") && text.len() == 2 * KEY_LEN + 5);
}

#[test]
fn a_key_file_must_be_32_bytes_and_the_owners_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.key");
    std::fs::write(&path, [7u8; KEY_LEN]).expect("written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(StoreKey::from_key_file(&path).is_ok());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let open = StoreKey::from_key_file(&path).expect_err("refused");
    assert!(open.to_string().contains("chmod 600"), "{open}");
    for len in [0, KEY_LEN - 1, KEY_LEN + 1] {
        std::fs::write(&path, vec![7u8; len]).expect("written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let short = StoreKey::from_key_file(&path).expect_err("refused");
        assert!(short.to_string().contains("exactly 32 random bytes"), "{short}");
    }
}

#[test]
fn a_passphrase_for_a_key_file_store_says_what_it_wants() {
    let unlock = Unlock::Passphrase(Zeroizing::new("correct horse battery".into()));
    let refused = KeyParams::KeyFile.derive(&unlock, Path::new("/d")).expect_err("refused");
    assert!(refused.to_string().contains("--key-file"), "{refused}");
}

#[test]
fn only_a_file_without_sqlites_header_is_encrypted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kolokol.db");
    assert!(!is_encrypted(&path).expect("missing"));
    std::fs::write(&path, b"").expect("written");
    assert!(!is_encrypted(&path).expect("empty"));
    std::fs::write(&path, b"SQLite format 3\0 and pages").expect("written");
    assert!(!is_encrypted(&path).expect("plain"));
    std::fs::write(&path, [0x5a; 4096]).expect("written");
    assert!(is_encrypted(&path).expect("encrypted"));
}

proptest! {
    /// Any text is parsed or refused, never a panic.
    #[test]
    fn parameters_parse_any_text(text in "(kolokol-key-params 1\n)?[a-z_ 0-9\n+-]{0,200}") {
        let _ = KeyParams::parse(&text);
    }
}
