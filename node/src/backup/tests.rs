//! A backup of a node restores into a new directory, numbering anew; an existing identity is
//! not overwritten by mistake.

use kolokol_protocol::backup::Contents;
use zeroize::Zeroizing;

use crate::backup::{SNAPSHOT_FILE, restore, snapshot};
use crate::data_dir::DataDir;
use crate::store::{ContactRow, OutboxBody, OutboxRow, Store};

/// Adds a contact "bob" (verified) and a text to him waiting in the outbox; returns its row.
fn bob_with_a_text(store: &Store, text: &str) -> OutboxRow {
    let peer = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    store
        .add_contact(&ContactRow {
            name: "bob".into(),
            peer_id: peer,
            device_key: [1; 32],
            addresses: vec![],
            added_at_ms: 1,
            verified_at_ms: Some(2),
            invite: None,
            rekeyed: None,
        })
        .unwrap();
    let mut row = OutboxRow {
        id: [7; 16],
        peer_id: peer,
        device_key: [1; 32],
        body: OutboxBody::Text(text.into()),
        created_at_ms: 5,
        attempts: 0,
    };
    store.enqueue_numbered(&mut row, 111, 5).unwrap();
    row
}

#[test]
fn a_snapshot_restores_into_a_new_directory_with_new_numbering() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    let dir = DataDir::open(&old).unwrap();
    let identity = dir.load_or_create_identity().unwrap();
    let store = Store::open(&dir.path("kolokol.db")).unwrap();
    let row = bob_with_a_text(&store, "before the backup");
    let taken = snapshot(&store, &old).unwrap();
    assert_eq!((&taken.path, taken.key.is_none()), (&old.join(SNAPSHOT_FILE), true));
    let copy = taken.read().unwrap();
    assert!(copy.secret.is_none(), "a plain store keeps its identity beside it");
    assert!(!old.join(SNAPSHOT_FILE).exists(), "read, the snapshot is gone");
    let contents = Contents {
        identity_file: Zeroizing::new(std::fs::read(dir.path("identity.key")).unwrap()),
        database: copy.database,
    };

    let new = tmp.path().join("new");
    let restored = restore(&new, &contents, false).unwrap();
    assert_eq!(restored.peer_id, identity.peer_id().to_string());
    assert_eq!((restored.contacts, restored.waiting), (1, 1));
    let store = Store::open(&new.join("kolokol.db")).unwrap();
    assert_eq!(store.contact("bob").unwrap().unwrap().verified_at_ms, Some(2));
    // The next text begins a new series: numbers given after the backup are not reused.
    let mut next = OutboxRow { id: [8; 16], ..row.clone() };
    next.body = OutboxBody::Text("after the restore".into());
    store.enqueue_numbered(&mut next, 222, 6).unwrap();
    assert!(matches!(next.body, OutboxBody::Numbered(n, _) if n.series == 222 && n.seq == 1));
    drop(store);

    // Restoring over a directory with an identity of its own is refused without --replace.
    let err = restore(&new, &contents, false).unwrap_err().to_string();
    assert!(err.contains("already has an identity"), "{err}");
    assert!(restore(&new, &contents, true).is_ok());
    // A running daemon's directory is refused.
    let err = restore(&old, &contents, true).unwrap_err().to_string();
    assert!(err.contains("already running"), "{err}");
}

#[test]
fn an_encrypted_store_is_not_restored_over_without_replace() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    let identity = {
        let dir = DataDir::open(&old).unwrap();
        let identity = dir.load_or_create_identity().unwrap();
        drop(Store::open(&dir.path("kolokol.db")).unwrap());
        identity
    };
    let contents = Contents {
        identity_file: Zeroizing::new(identity.to_file_bytes().to_vec()),
        database: Zeroizing::new(std::fs::read(old.join("kolokol.db")).unwrap()),
    };
    let encrypted = tmp.path().join("encrypted");
    let unlock =
        crate::store_key::Unlock::Passphrase(Zeroizing::new("correct horse battery".into()));
    crate::data_dir::encrypt(&encrypted, &unlock).unwrap();
    let before = std::fs::read(encrypted.join("kolokol.db")).unwrap();

    let err = restore(&encrypted, &contents, false).unwrap_err().to_string();
    assert!(err.contains("already has an identity"), "{err}");
    assert_eq!(std::fs::read(encrypted.join("kolokol.db")).unwrap(), before, "left as it was");

    let restored = restore(&encrypted, &contents, true).unwrap();
    assert_eq!(restored.peer_id, identity.peer_id().to_string());
    assert!(!encrypted.join(crate::store_key::KEY_PARAMS_FILE).exists());
    let (_, opened) = DataDir::open(&encrypted).unwrap().open_node_store(None).unwrap();
    assert_eq!(opened.peer_id(), identity.peer_id(), "a plain store with the backup's identity");
}

/// An encrypted store's snapshot is encrypted under a key made for it (no text of the store is
/// in the file), and reads in memory into a plain database and the identity, which restore
/// into a plain store holding every message; the copy keeps no identity of its own.
#[test]
fn an_encrypted_stores_snapshot_is_never_plaintext_on_disk_and_restores_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    let key_file = tmp.path().join("store.key");
    std::fs::write(&key_file, [9u8; crate::store_key::KEY_LEN]).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    let unlock = crate::store_key::Unlock::KeyFile(key_file);
    crate::data_dir::encrypt(&old, &unlock).unwrap();
    let (store, identity) = DataDir::open(&old).unwrap().open_node_store(Some(&unlock)).unwrap();
    let text = "a secret kept under the passphrase";
    bob_with_a_text(&store, text);

    let taken = snapshot(&store, &old).unwrap();
    assert!(taken.key.is_some(), "an encrypted store's snapshot has a key of its own");
    let on_disk = std::fs::read(&taken.path).unwrap();
    assert!(!on_disk.starts_with(b"SQLite format 3"), "the snapshot file is not plain SQLite");
    let secret = identity.to_file_bytes();
    for needle in [text.as_bytes(), &secret[..]] {
        assert!(!on_disk.windows(needle.len()).any(|w| w == needle), "plaintext in the snapshot");
    }
    // The wrong key opens nothing (and still deletes the file).
    let wrong = crate::backup::Snapshot {
        path: taken.path.clone(),
        key: Some(crate::store_key::StoreKey::from_bytes([1; 32])),
    };
    std::fs::copy(&taken.path, old.join("copy.db")).unwrap();
    assert!(wrong.read().is_err());
    std::fs::rename(old.join("copy.db"), &taken.path).unwrap();
    let crate::store::PlainCopy { database, secret: inside } = taken.read().unwrap();
    assert!(!old.join(SNAPSHOT_FILE).exists(), "read, the snapshot is gone");
    assert!(database.starts_with(b"SQLite format 3"), "decrypted in memory");
    assert_eq!(inside.as_deref().map(|i| i.as_slice()), Some(&secret[..]));
    assert!(
        !database.windows(secret.len()).any(|w| w == &secret[..]),
        "the copy keeps no identity of its own"
    );
    drop(store);

    let contents = Contents { identity_file: inside.unwrap(), database };
    let new = tmp.path().join("new");
    let restored = restore(&new, &contents, false).unwrap();
    assert_eq!(restored.peer_id, identity.peer_id().to_string());
    assert_eq!((restored.contacts, restored.waiting), (1, 1));
    let (store, opened) = DataDir::open(&new).unwrap().open_node_store(None).unwrap();
    assert_eq!(opened.peer_id(), identity.peer_id());
    assert!(store.contact("bob").unwrap().is_some());
}
