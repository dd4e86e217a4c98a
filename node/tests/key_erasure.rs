//! Finding 1 of issue 15: a key the node "deletes" must leave no trace in `kolokol.db`, its WAL
//! or its free pages, or whoever takes the device recovers it and forward secrecy is undone at
//! rest.
//!
//! `Store` opens the database with `secure_delete = ON`, so SQLite overwrites deleted and
//! rewritten content with zeros, and a truncating checkpoint after a key was deleted empties the
//! WAL, which still holds the pages as they were when the key was written: at once for a prekey
//! (`delete_prekeys_expired_before`, weekly), at the next idle moment for a receive key (the
//! node's upkeep runs `Store::checkpoint` while `Store::erasure_pending`). Before that, the first
//! test found the prekey secret in the files after its deletion.

use std::path::Path;

use kolokol_node::store::Store;

/// The files of the database at `db` (the database, its WAL and shared-memory index) in which
/// `needle` occurs, with the offsets.
fn occurrences(db: &Path, needle: &[u8]) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = format!("{}{suffix}", db.display());
        let Ok(bytes) = std::fs::read(&path) else { continue };
        for (offset, window) in bytes.windows(needle.len()).enumerate() {
            if window == needle {
                found.push((path.clone(), offset));
            }
        }
    }
    found
}

/// A secret no other byte string in the database is likely to contain.
const SECRET: [u8; 32] = *b"finding-1: this must be erased!!";

#[test]
fn a_deleted_prekey_secret_leaves_no_trace_in_the_database_files() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("kolokol.db");
    let identity = kolokol_protocol::identity::Identity::from_secrets([1; 32], [2; 32]);
    let prekey = kolokol_protocol::prekey::SignedPrekey::sign(&identity, &SECRET, 1_000, 2_000)
        .expect("signs");
    {
        let store = Store::open(&db).expect("store");
        store.save_prekey(&[7; 8], &SECRET, &prekey).expect("saved");
        assert!(!occurrences(&db, &SECRET).is_empty(), "the secret is on disk while it is live");
        assert_eq!(store.delete_prekeys_expired_before(u64::MAX / 2).expect("deleted"), 1);
        assert_eq!(store.prekey_secret(&[7; 8]).expect("reads"), None, "deleted for the API");
        assert_eq!(
            occurrences(&db, &SECRET),
            vec![],
            "no trace in the database, WAL or free pages"
        );
    }
    assert_eq!(occurrences(&db, &SECRET), vec![], "nor after closing");
}

const NOW: u64 = 1_800_000_000;

/// 128 bytes of "randomness" for one seal, with a recognisable receive secret and seed.
fn randomness(fill: u8) -> kolokol_protocol::conversation::Randomness {
    let mut bytes = [fill; kolokol_protocol::conversation::Randomness::LEN];
    bytes[32..64].copy_from_slice(b"receive secret that must vanish!");
    bytes[64..96].copy_from_slice(b"receive seed, gone with its key.");
    kolokol_protocol::conversation::Randomness::from_bytes(bytes)
}

#[test]
fn a_deleted_receive_key_leaves_no_trace_in_the_database_files() {
    use kolokol_node::store::ConversationWrite;
    use kolokol_protocol::conversation::{Conversation, Randomness};
    use kolokol_protocol::message::{Body, Content};

    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("kolokol.db");
    let store = Store::open(&db).expect("store");
    let alice = kolokol_protocol::identity::Identity::from_secrets([1; 32], [2; 32]);
    let bob = kolokol_protocol::identity::Identity::from_secrets([3; 32], [4; 32]);
    let alice_cert = alice.certify(NOW - 10, NOW + 86_400 * 365).expect("certifies");
    let bob_cert = bob.certify(NOW - 10, NOW + 86_400 * 365).expect("certifies");
    let text = |id: u8, at: u64| Content {
        id: [id; 16],
        sent_at_ms: at * 1000,
        body: Body::Text("hello".into()),
    };
    let save = |c: &Conversation, at: u64| {
        let bytes = c.to_bytes().expect("encodes");
        let ids = c.receive_key_ids();
        let write = ConversationWrite {
            peer: &bob.peer_id(),
            state: &bytes,
            key_ids: Some(&ids),
            rekeyed: None,
        };
        store.save_conversation(&write, at * 1000).expect("saved");
    };

    // Alice's first contact makes her first receive key, from the recognisable bytes.
    let mut a = Conversation::new(bob_cert, NOW).expect("conversation");
    let first =
        a.seal(alice.device(), &alice_cert, &text(1, NOW), randomness(0x11), NOW).expect("sealed");
    save(&a, NOW);
    let secret = b"receive secret that must vanish!";
    let seed = b"receive seed, gone with its key.";
    assert!(!occurrences(&db, secret).is_empty(), "the key is on disk while it is live");

    // Bob answers on that key; Alice's next envelope makes a new one, superseding the first.
    let opened = kolokol_protocol::envelope::open_first_contact(
        bob.device(),
        bob.identity_key(),
        &first,
        NOW,
    )
    .expect("opens");
    let (mut b, _) = Conversation::from_first_contact(opened, NOW).expect("accepted");
    let reply = b
        .seal(
            bob.device(),
            &bob.certify(NOW - 10, NOW + 86_400).expect("c"),
            &text(2, NOW),
            Randomness::from_bytes([0x33; 128]),
            NOW,
        )
        .expect("sealed");
    a.open(&alice, &reply, NOW).expect("opens");
    a.seal(alice.device(), &alice_cert, &text(3, NOW), Randomness::from_bytes([0x44; 128]), NOW)
        .expect("sealed");
    save(&a, NOW);
    assert!(!store.erasure_pending(), "nothing was deleted yet");

    // A month on, the superseded key's time is up: the state is saved without it.
    let later = NOW + kolokol_protocol::conversation::MAX_SUPERSEDED_SECS;
    a.expire(later);
    assert_eq!(a.receive_key_ids().len(), 1, "the first key is deleted");
    save(&a, later);
    assert!(store.erasure_pending(), "the store knows the log still holds the deleted key");
    // What the node's upkeep does at the next idle moment.
    store.checkpoint().expect("checkpoint");
    assert!(!store.erasure_pending());
    assert_eq!(occurrences(&db, secret), vec![], "no trace of the secret");
    assert_eq!(occurrences(&db, seed), vec![], "no trace of the seed");
}

#[test]
fn with_secure_delete_and_a_truncating_checkpoint_nothing_is_left() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("kolokol.db");
    let conn = rusqlite::Connection::open(&db).expect("opens");
    // The pragmas `Store::open` sets today, and the one it must add.
    for (name, value) in [
        ("locking_mode", "EXCLUSIVE"),
        ("journal_mode", "WAL"),
        ("synchronous", "NORMAL"),
        ("wal_autocheckpoint", "8192"),
        ("secure_delete", "ON"),
    ] {
        conn.pragma_update(None, name, value).expect("pragma");
    }
    conn.execute_batch(
        "CREATE TABLE prekeys (key_id BLOB PRIMARY KEY, secret BLOB NOT NULL);
         CREATE TABLE conversations (peer_id TEXT PRIMARY KEY, state BLOB NOT NULL);",
    )
    .expect("schema");
    let mut state = vec![0x11u8; 900];
    state[300..332].copy_from_slice(&SECRET);
    conn.execute("INSERT INTO prekeys VALUES (?1, ?2)", (&[7u8; 8][..], &SECRET[..]))
        .expect("insert");
    conn.execute("INSERT INTO conversations VALUES ('peer', ?1)", [&state[..]]).expect("insert");
    assert!(!occurrences(&db, &SECRET).is_empty(), "the secret is on disk while it is live");

    // The prekey is deleted, and the conversation state is rewritten without the key (a
    // receive key deleted by `Conversation::expire`).
    conn.execute("DELETE FROM prekeys WHERE key_id = ?1", [&[7u8; 8][..]]).expect("delete");
    conn.execute(
        "UPDATE conversations SET state = ?1 WHERE peer_id = 'peer'",
        [&vec![0x22u8; 900][..]],
    )
    .expect("update");
    // The WAL still holds the frames written when the secret was live: only a checkpoint that
    // truncates it removes them.
    assert!(!occurrences(&db, &SECRET).is_empty(), "before the checkpoint, the WAL has it");
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("checkpoint");
    assert_eq!(busy, 0, "the checkpoint completed");
    assert_eq!(occurrences(&db, &SECRET), vec![], "no trace in the database, WAL or free pages");
    // Free pages too: after a deletion that frees whole pages, secure_delete zeroes them.
    conn.execute_batch("DROP TABLE conversations; PRAGMA wal_checkpoint(TRUNCATE);").expect("drop");
    assert_eq!(occurrences(&db, &SECRET), vec![]);
}
