//! Issue 15, "at rest": the opt-in encrypted store. Someone who takes the device (or a copy of
//! its disk) finds in `kolokol.db` and its WAL neither a stored message nor the identity key;
//! a wrong passphrase is refused and changes nothing; a passphrase change re-encrypts the
//! store so only the new passphrase opens it; encrypting a plain data directory keeps every
//! message and removes the plaintext files.
//!
//! Real SQLCipher files in temporary directories, searched byte by byte. The passphrases are
//! stretched with Argon2id at its full cost (64 MiB), as the node does.

use std::path::Path;

use kolokol_node::data_dir::{self, DATABASE_FILE, DataDir, IDENTITY_FILE};
use kolokol_node::store::{InboxRow, Store};
use kolokol_node::store_key::{KEY_PARAMS_FILE, Unlock};
use kolokol_node::{Error, PeerId};
use zeroize::Zeroizing;

/// The files of the database at `db` (the database, its WAL, its shared-memory index and any
/// rollback journal) in which `needle` occurs.
fn occurrences(db: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = format!("{}{suffix}", db.display());
        let Ok(bytes) = std::fs::read(&path) else { continue };
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(path);
        }
    }
    found
}

/// The bytes of the database files, to show that something left them as they were.
fn contents(db: &Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal"]
        .iter()
        .filter_map(|suffix| {
            let path = format!("{}{suffix}", db.display());
            std::fs::read(&path).ok().map(|bytes| (path, bytes))
        })
        .collect()
}

fn passphrase(text: &str) -> Unlock {
    Unlock::Passphrase(Zeroizing::new(text.to_owned()))
}

/// A message whose text appears nowhere else.
fn message(n: u8, text: &str) -> InboxRow {
    InboxRow {
        id: [n; 16],
        peer_id: PeerId::random(),
        contact: None,
        text: text.to_owned(),
        sent_at_ms: 1_000 + u64::from(n),
        received_at_ms: 2_000 + u64::from(n),
        read_at_ms: None,
        number: None,
    }
}

/// The texts in the store's inbox, oldest first.
fn texts(store: &Store) -> Vec<String> {
    let mut rows = store.inbox(1_000).expect("inbox");
    rows.sort_by_key(|r| r.received_at_ms);
    rows.into_iter().map(|r| r.text).collect()
}

/// Opens the data dir's store as a daemon does.
fn open(root: &Path, unlock: Option<&Unlock>) -> kolokol_node::error::Result<Store> {
    DataDir::open(root)?.open_node_store(unlock).map(|(store, _)| store)
}

const TEXT: &str = "meet at the old bell tower at nine";
const RIGHT: &str = "correct horse battery staple";

#[test]
fn the_encrypted_files_hold_neither_a_message_nor_the_identity_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("alice");
    let created = data_dir::encrypt(&root, &passphrase(RIGHT)).expect("encrypted");
    assert!(!created.migrated);
    assert!(!root.join(IDENTITY_FILE).exists(), "no plaintext identity file");
    assert!(root.join(KEY_PARAMS_FILE).exists());
    let db = root.join(DATABASE_FILE);
    let (store, identity) = DataDir::open(&root)
        .expect("dir")
        .open_node_store(Some(&passphrase(RIGHT)))
        .expect("opens");
    assert_eq!(identity.peer_id().to_string(), created.peer_id, "the identity is in the store");
    assert!(store.receive(&message(1, TEXT), None, None).expect("stored"));
    let identity_file = identity.to_file_bytes();
    let identity_secret = &identity_file[identity_file.len() - 64..identity_file.len() - 32];

    // While the node runs, the message is in the WAL (no checkpoint has run yet)...
    assert!(std::fs::metadata(format!("{}-wal", db.display())).expect("a WAL").len() > 0);
    assert_eq!(occurrences(&db, TEXT.as_bytes()), Vec::<String>::new());
    assert_eq!(occurrences(&db, identity_secret), Vec::<String>::new());
    // ...and after a checkpoint and a close, in the database.
    store.checkpoint().expect("checkpoint");
    drop(store);
    assert_eq!(occurrences(&db, TEXT.as_bytes()), Vec::<String>::new());
    assert_eq!(occurrences(&db, identity_secret), Vec::<String>::new());
    assert_eq!(occurrences(&db, b"SQLite format 3"), Vec::<String>::new());

    // The search would find them: the same message in a plain store is there in clear.
    let plain = tmp.path().join("plain.db");
    let store = Store::open(&plain).expect("plain store");
    store.receive(&message(1, TEXT), None, None).expect("stored");
    assert!(!occurrences(&plain, TEXT.as_bytes()).is_empty(), "the search works");

    let store = open(&root, Some(&passphrase(RIGHT))).expect("opens again");
    assert_eq!(texts(&store), [TEXT]);
}

#[test]
fn a_wrong_passphrase_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("alice");
    data_dir::encrypt(&root, &passphrase(RIGHT)).expect("encrypted");
    let db = root.join(DATABASE_FILE);
    let store = open(&root, Some(&passphrase(RIGHT))).expect("opens");
    store.receive(&message(1, TEXT), None, None).expect("stored");
    // Left as a killed daemon leaves it: the last write only in the WAL.
    let before = {
        let wal = format!("{}-wal", db.display());
        let copy = tmp.path().join("copy");
        std::fs::create_dir(&copy).expect("dir");
        std::fs::copy(&db, copy.join(DATABASE_FILE)).expect("copied");
        std::fs::copy(&wal, copy.join(format!("{DATABASE_FILE}-wal"))).expect("copied");
        drop(store);
        // Closing checkpointed; put the killed daemon's files back.
        std::fs::copy(copy.join(DATABASE_FILE), &db).expect("restored");
        std::fs::copy(copy.join(format!("{DATABASE_FILE}-wal")), &wal).expect("restored");
        contents(&db)
    };
    assert_eq!(before.len(), 2, "a database and a WAL");

    let refused = open(&root, Some(&passphrase("incorrect horse battery"))).err();
    assert!(matches!(refused, Some(Error::WrongKey(_))), "{refused:?}");
    let text = refused.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.starts_with("wrong passphrase or key"), "{text}");
    assert!(
        contents(&db) == before,
        "a wrong passphrase left the database and its WAL as they were"
    );
    let locked = open(&root, None).err();
    assert!(matches!(locked, Some(Error::Locked { .. })), "{locked:?}");
    let plain = Store::open(&db).err();
    assert!(matches!(plain, Some(Error::Locked { .. })), "{plain:?}");
    assert!(contents(&db) == before, "no key left the database and its WAL as they were");

    let store = open(&root, Some(&passphrase(RIGHT))).expect("the right one opens it");
    assert_eq!(texts(&store), [TEXT], "the write that was only in the WAL is there");
}

#[test]
fn after_a_passphrase_change_only_the_new_one_opens_the_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("alice");
    let created = data_dir::encrypt(&root, &passphrase(RIGHT)).expect("encrypted");
    let store = open(&root, Some(&passphrase(RIGHT))).expect("opens");
    store.receive(&message(1, TEXT), None, None).expect("stored");
    drop(store);
    let old_params = std::fs::read(root.join(KEY_PARAMS_FILE)).expect("params");

    let short = data_dir::change_key(&root, &passphrase(RIGHT), &passphrase("short"));
    assert!(matches!(short, Err(Error::WeakPassphrase(_))), "{short:?}");
    let wrong = data_dir::change_key(&root, &passphrase("not the one"), &passphrase(RIGHT));
    assert!(matches!(wrong, Err(Error::WrongKey(_))), "{wrong:?}");
    let new = "a new passphrase for a new week";
    data_dir::change_key(&root, &passphrase(RIGHT), &passphrase(new)).expect("changed");
    assert_ne!(
        std::fs::read(root.join(KEY_PARAMS_FILE)).expect("params"),
        old_params,
        "a new salt"
    );

    let old = open(&root, Some(&passphrase(RIGHT))).err();
    assert!(matches!(old, Some(Error::WrongKey(_))), "{old:?}");
    let (store, identity) = DataDir::open(&root)
        .expect("dir")
        .open_node_store(Some(&passphrase(new)))
        .expect("the new one opens it");
    assert_eq!(texts(&store), [TEXT]);
    assert_eq!(identity.peer_id().to_string(), created.peer_id);
    drop(store);

    // To a key file, and back to a passphrase.
    let key_file = tmp.path().join("store.key");
    std::fs::write(&key_file, [9u8; 32]).expect("written");
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let by_file = Unlock::KeyFile(key_file);
    data_dir::change_key(&root, &passphrase(new), &by_file).expect("changed to a key file");
    let asked = open(&root, Some(&passphrase(new))).err();
    assert!(asked.is_some_and(|e| e.to_string().contains("--key-file")));
    assert_eq!(texts(&open(&root, Some(&by_file)).expect("the key file opens it")), [TEXT]);
}

#[test]
fn an_interrupted_passphrase_change_opens_with_either_passphrase() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("alice");
    data_dir::encrypt(&root, &passphrase(RIGHT)).expect("encrypted");
    let new = "a new passphrase for a new week";
    data_dir::change_key(&root, &passphrase(RIGHT), &passphrase(new)).expect("changed");
    // As if interrupted after the re-encryption, before its parameters were put in place:
    // the old parameters are back, the new ones wait aside.
    let pending = root.join(kolokol_node::store_key::PENDING_KEY_PARAMS_FILE);
    std::fs::rename(root.join(KEY_PARAMS_FILE), &pending).expect("aside");
    let params = kolokol_node::store_key::KeyParams::new_passphrase();
    std::fs::write(root.join(KEY_PARAMS_FILE), params.to_text()).expect("written");
    let refused = open(&root, Some(&passphrase(RIGHT))).err();
    assert!(matches!(refused, Some(Error::WrongKey(_))), "{refused:?}");
    drop(open(&root, Some(&passphrase(new))).expect("the new passphrase opens it"));
    assert!(!pending.exists(), "the new parameters are in place");
    drop(open(&root, Some(&passphrase(new))).expect("and again"));
}

#[test]
fn encrypting_a_plain_data_dir_keeps_every_message_and_removes_the_plaintext() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("alice");
    let db = root.join(DATABASE_FILE);
    let (peer_id, identity_file) = {
        let dir = DataDir::open(&root).expect("dir");
        let (store, identity) = dir.open_node_store(None).expect("a plain store");
        for n in 0..200u8 {
            store.receive(&message(n, &format!("{TEXT} #{n}")), None, None).expect("stored");
        }
        (identity.peer_id().to_string(), std::fs::read(root.join(IDENTITY_FILE)).expect("key"))
    };
    assert!(!occurrences(&db, TEXT.as_bytes()).is_empty(), "plain before");

    let running = DataDir::open(&root).expect("a daemon holds the dir");
    let busy = data_dir::encrypt(&root, &passphrase(RIGHT));
    assert!(matches!(busy, Err(Error::AlreadyRunning(_))), "{busy:?}");
    drop(running);
    let short = data_dir::encrypt(&root, &passphrase("short"));
    assert!(matches!(short, Err(Error::WeakPassphrase(_))), "{short:?}");
    assert!(!occurrences(&db, TEXT.as_bytes()).is_empty(), "a refusal changes nothing");

    let migrated = data_dir::encrypt(&root, &passphrase(RIGHT)).expect("encrypted");
    assert_eq!(migrated, data_dir::Encrypted { peer_id: peer_id.clone(), migrated: true });
    assert!(!root.join(IDENTITY_FILE).exists(), "identity.key is gone");
    assert_eq!(occurrences(&db, TEXT.as_bytes()), Vec::<String>::new());
    assert_eq!(occurrences(&db, &identity_file[identity_file.len() - 64..]), Vec::<String>::new());
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.starts_with("kolokol.db") && name != DATABASE_FILE)
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "no copy, log or journal left beside it");
    let again = data_dir::encrypt(&root, &passphrase(RIGHT));
    assert!(matches!(again, Err(Error::AlreadyEncrypted(_))), "{again:?}");

    let (store, identity) = DataDir::open(&root)
        .expect("dir")
        .open_node_store(Some(&passphrase(RIGHT)))
        .expect("opens");
    assert_eq!(identity.peer_id().to_string(), peer_id, "the same identity");
    let expected: Vec<String> = (0..200u8).map(|n| format!("{TEXT} #{n}")).collect();
    assert_eq!(texts(&store), expected, "every message");
}

#[test]
fn a_store_without_its_key_parameters_says_so_and_damaged_ones_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("alice");
    data_dir::encrypt(&root, &passphrase(RIGHT)).expect("encrypted");
    let params = std::fs::read(root.join(KEY_PARAMS_FILE)).expect("params");
    std::fs::remove_file(root.join(KEY_PARAMS_FILE)).expect("removed");
    for unlock in [None, Some(passphrase(RIGHT))] {
        let refused = open(&root, unlock.as_ref()).err().map(|e| e.to_string());
        assert!(refused.as_deref().is_some_and(|e| e.contains("was lost")), "{refused:?}");
    }
    std::fs::write(root.join(KEY_PARAMS_FILE), params).expect("put back");
    assert!(open(&root, Some(&passphrase(RIGHT))).is_ok(), "opens with the file back");

    // A damaged parameters file is refused with a line, never a panic.
    std::fs::write(root.join(KEY_PARAMS_FILE), "kolokol-key-params 1\nkdf argon2id\n")
        .expect("written");
    let refused = open(&root, Some(&passphrase(RIGHT))).err();
    assert!(matches!(refused, Some(Error::Config { .. })), "{refused:?}");
}
