//! Finding 1 of issue 15: a key the node "deletes" must leave no trace in `kolokol.db`, its WAL
//! or its free pages, or whoever takes the device recovers it and forward secrecy is undone at
//! rest.
//!
//! The first test shows the flaw on today's `Store`: a prekey secret deleted by
//! `delete_prekeys_expired_before` is still in the database files. The second shows the remedy
//! phase 2 puts into `Store` (`docs/CRYPTO_PHASE2.md`, finding 1): with `secure_delete = ON`
//! SQLite overwrites deleted and rewritten content with zeros, and a `wal_checkpoint(TRUNCATE)`
//! after the deletion empties the WAL, which still holds the pages as they were when the secret
//! was written. When `Store` gets the remedy, the first test must be turned around to assert
//! absence, like the second.

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
fn today_a_deleted_prekey_secret_survives_in_the_database_files() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("kolokol.db");
    let identity = kolokol_protocol::identity::Identity::from_secrets([1; 32], [2; 32]);
    let prekey = kolokol_protocol::prekey::SignedPrekey::sign(&identity, &SECRET, 1_000, 2_000)
        .expect("signs");
    {
        let store = Store::open(&db).expect("store");
        store.save_prekey(&[7; 8], &SECRET, &prekey).expect("saved");
        assert_eq!(store.delete_prekeys_expired_before(u64::MAX / 2).expect("deleted"), 1);
        assert_eq!(store.prekey_secret(&[7; 8]).expect("reads"), None, "deleted for the API");
        let left = occurrences(&db, &SECRET);
        assert!(!left.is_empty(), "finding 1 is fixed in Store: turn this test around");
    }
    // Closing the database (the node stopping) does not erase it either.
    assert!(!occurrences(&db, &SECRET).is_empty());
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
