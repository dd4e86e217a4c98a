//! A backup of a node restores into a new directory, numbering anew; an existing identity is
//! not overwritten by mistake.

use kolokol_protocol::backup::Contents;
use zeroize::Zeroizing;

use crate::backup::{SNAPSHOT_FILE, restore, snapshot};
use crate::data_dir::DataDir;
use crate::store::{ContactRow, OutboxBody, OutboxRow, Store};

#[test]
fn a_snapshot_restores_into_a_new_directory_with_new_numbering() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    let dir = DataDir::open(&old).unwrap();
    let identity = dir.load_or_create_identity().unwrap();
    let store = Store::open(&dir.path("kolokol.db")).unwrap();
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
        body: OutboxBody::Text("before the backup".into()),
        created_at_ms: 5,
        attempts: 0,
    };
    store.enqueue_numbered(&mut row, 111, 5).unwrap();
    let path = snapshot(&store, &old).unwrap();
    assert_eq!(path, old.join(SNAPSHOT_FILE));
    let contents = Contents {
        identity_file: Zeroizing::new(std::fs::read(dir.path("identity.key")).unwrap()),
        database: Zeroizing::new(std::fs::read(&path).unwrap()),
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
