//! The SQLite store (`kolokol.db`): one file per group of tables, each an `impl Store` block.
//!
//! Every write is its own transaction, committed before the caller acts on it: a message is in
//! the outbox before any byte of it is sent, and in the inbox before the sender's node is told it
//! arrived. The database runs in WAL mode with `synchronous=NORMAL`: a killed process loses no
//! committed transaction (the WAL is in the kernel's page cache), a power cut may lose the last
//! few. Calls are short and synchronous; the connection sits behind a mutex and is never held
//! across an `.await`. The store knows SQL and rows; it decides nothing about delivery, keys or
//! the network.

mod chunks;
mod contacts;
mod conversations;
mod endpoints;
mod files;
mod groups;
mod inbox;
mod mailbox;
mod numbering;
mod outbox;
mod parts;
mod peers;
mod prekeys;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use kolokol_protocol::prekey::HybridPrekey;
use libp2p::{Multiaddr, PeerId};
use rusqlite::{Connection, OptionalExtension};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::store_key::StoreKey;

pub use chunks::{ChunkOutcome, MAX_PARTIAL_MESSAGES, MAX_PARTIAL_MESSAGES_PER_PEER};
pub use contacts::ContactRow;
pub(crate) use contacts::fold_name;
pub use conversations::ConversationWrite;
pub use endpoints::{EndpointRow, MAX_ENDPOINT_ROWS};
pub use files::{
    FileChunkOutcome, FileReceiveRow, FileSendRow, MAX_FILE_REQUESTS, MAX_PARTIAL_FILES,
    MAX_PARTIAL_FILES_PER_PEER,
};
pub use groups::{
    GroupMemberRow, GroupRow, GroupStatus, GroupTextRow, GroupUpdate, MAX_GROUPS,
    MAX_PENDING_GROUPS, MAX_PENDING_TEXTS,
};
pub use inbox::{ChatPeer, InboxRow};
pub use mailbox::{HandedItem, HeldItem, MailboxDeposit, MailboxItem, MailboxQuotas};
pub use numbering::Number;
pub use outbox::{
    DepositRecord, OUTBOX_BATCH, OutboxBody, OutboxRow, OutboxView, attempt_envelopes,
};
pub use parts::SealedPart;
pub use peers::{CachedPeer, MAX_CACHED_ADDRESSES, MAX_CACHED_PEERS, PeerSource};

/// The WAL size past which the node checkpoints even while busy: a burst longer than this
/// (some thousands of messages) pays one stall rather than letting the file grow without end.
pub const MAX_WAL_BYTES: u64 = 64 * 1024 * 1024;

/// The WAL size past which the node checkpoints once the store is idle.
pub const IDLE_CHECKPOINT_BYTES: u64 = 1024 * 1024;

/// How long the store must have been unused before an idle checkpoint.
pub const IDLE_BEFORE_CHECKPOINT: std::time::Duration = std::time::Duration::from_millis(200);

/// Prepared statements kept per connection, so no statement is parsed twice; the store uses
/// fewer distinct statements than this.
const STATEMENT_CACHE: usize = 128;

/// Runs statements through the connection's cache of prepared statements: parsing SQL was a
/// sixth of a message's CPU time before.
trait CachedStatements {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl CachedStatements for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: rusqlite::Params, F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// A handle to the store; clones share one connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// When the connection was last used, for [`Store::idle_for`].
    last_use: Arc<Mutex<tokio::time::Instant>>,
    /// A write deleted key material whose old bytes the write-ahead log may still hold: the
    /// next truncating checkpoint ([`Store::checkpoint`]) erases them (issue 15, finding 1).
    erasure_pending: Arc<AtomicBool>,
    /// Our newest hybrid prekey as last read (`None` until read, and again after every write
    /// to its table): every envelope we seal carries it, and it changes about weekly. Read and
    /// cleared only while the connection is held, so it never outlives a write.
    newest_hybrid: Arc<Mutex<Option<Option<HybridPrekey>>>>,
}

impl Store {
    /// Opens (creating if needed) the plain database at `path` and brings its schema up to
    /// date.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_keyed(path, None)
    }

    /// Opens (creating if needed) the database at `path`, encrypted under `key` if one is
    /// given, and brings its schema up to date. A key that does not open an existing database
    /// is refused with [`Error::WrongKey`] before anything is written: it is tried on a
    /// read-only connection first, which never writes the database nor checkpoints its log.
    pub fn open_keyed(path: &Path, key: Option<&StoreKey>) -> Result<Self> {
        let err = |source| Error::Store { path: path.to_owned(), source };
        // An encrypted file is never opened without its key: SQLite would fail to read it, and
        // closing could still checkpoint its log into it.
        if key.is_none() && crate::store_key::is_encrypted(path)? {
            return Err(locked(path));
        }
        if let Some(key) = key
            && std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
        {
            let probe =
                Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .map_err(err)?;
            apply_key(&probe, key).map_err(err)?;
            readable(&probe, path, true)?;
        }
        let conn = Connection::open(path).map_err(err)?;
        if let Some(key) = key {
            apply_key(&conn, key).map_err(err)?;
        }
        readable(&conn, path, key.is_some())?;
        // One process owns the database (the data dir's lock file sees to that), so it keeps
        // SQLite's locks for good instead of taking them with fcntl at every transaction.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        // A checkpoint (copying the WAL into the database, with an fsync) stalls whatever
        // transaction triggers it, so SQLite never starts one on its own: the node calls
        // `Store::checkpoint` when the store has been idle a moment, or when the WAL has grown
        // past `MAX_WAL_BYTES` (run.rs, `upkeep`).
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        // A deleted row's bytes, and the old content of a rewritten one (a conversation state
        // without a receive key `Conversation::expire` deleted), are overwritten with zeros
        // rather than left in free space, where whoever takes the device would find them. The
        // write-ahead log still holds the frames written while the key was live: a truncating
        // checkpoint erases those (`Store::checkpoint`, run by the upkeep when
        // `Store::erasure_pending`).
        conn.pragma_update(None, "secure_delete", "ON").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let version: i64 =
            conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        if version > schema::SCHEMA_VERSION {
            return Err(Error::Store {
                path: path.to_owned(),
                source: rusqlite::Error::InvalidParameterName(format!(
                    "schema version {version} is newer than this kolokol understands ({}); upgrade kolokol",
                    schema::SCHEMA_VERSION
                )),
            });
        }
        schema::migrate(&conn, version).map_err(err)?;
        let store = Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_owned(),
            last_use: Arc::new(Mutex::new(tokio::time::Instant::now())),
            erasure_pending: Arc::new(AtomicBool::new(false)),
            newest_hybrid: Arc::new(Mutex::new(None)),
        };
        store.fold_names()?;
        Ok(store)
    }

    /// Writes an encrypted copy of this plain database to `path` (a new file) under `key`:
    /// `sqlcipher_export` into an attached database, which copies the schema, every row and
    /// the schema version. Nothing of the copy is ever on disk in plaintext.
    pub fn export_encrypted(&self, path: &Path, key: &StoreKey) -> Result<()> {
        let target = utf8_path(path)?;
        let conn = self.conn();
        let mut attach = Zeroizing::new(String::from("ATTACH DATABASE ?1 AS encrypted KEY "));
        attach.push_str(&key.pragma_value());
        conn.execute(&attach, [target]).map_err(|e| self.err(e))?;
        let exported =
            conn.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(())).and_then(|()| {
                let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
                conn.pragma_update(Some("encrypted"), "user_version", version)
            });
        let detached = conn.execute("DETACH DATABASE encrypted", []);
        exported.and(detached.map(|_| ())).map_err(|e| self.err(e))
    }

    /// Whether this store is encrypted (SQLCipher with a key), as its file says.
    pub fn is_encrypted(&self) -> Result<bool> {
        crate::store_key::is_encrypted(&self.path)
    }

    /// Reads an encrypted copy written by [`Store::export_encrypted`] (a backup snapshot of an
    /// encrypted store) into a plain SQLite database in memory and returns that database's
    /// bytes, with the secret named `take` taken out of it and returned beside it. The
    /// plaintext exists only in this process's memory (an attached `:memory:` database,
    /// serialized), never in a file.
    pub fn decrypt_copy(path: &Path, key: &StoreKey, take: &str) -> Result<PlainCopy> {
        let err = |source| Error::Store { path: path.to_owned(), source };
        let conn = Connection::open(path).map_err(err)?;
        apply_key(&conn, key).map_err(err)?;
        readable(&conn, path, true)?;
        conn.execute_batch("ATTACH DATABASE ':memory:' AS plain KEY ''").map_err(err)?;
        conn.query_row("SELECT sqlcipher_export('plain')", [], |_| Ok(())).map_err(err)?;
        let version: i64 =
            conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        conn.pragma_update(Some("plain"), "user_version", version).map_err(err)?;
        let secret: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM plain.secrets WHERE name = ?1", [take], |r| r.get(0))
            .optional()
            .map_err(err)?;
        conn.execute("DELETE FROM plain.secrets WHERE name = ?1", [take]).map_err(err)?;
        // `secure_delete` is per database: the deleted secret's bytes must not stay in a free
        // page of the image either.
        conn.execute_batch("VACUUM plain").map_err(err)?;
        let image = conn.serialize("plain").map_err(err)?;
        Ok(PlainCopy {
            database: Zeroizing::new(image.to_vec()),
            secret: secret.map(Zeroizing::new),
        })
    }

    /// Re-encrypts every page of this encrypted database under `key` (`PRAGMA rekey`), then
    /// empties the write-ahead log into the database so no page under the old key is left in
    /// it. SQLCipher does not report a failed re-encryption, so the caller opens the database
    /// with the new key afterwards to know it worked.
    pub fn rekey(&self, key: &StoreKey) -> Result<()> {
        {
            let conn = self.conn();
            let mut rekey = Zeroizing::new(String::from("PRAGMA rekey = "));
            rekey.push_str(&key.pragma_value());
            conn.execute_batch(&rekey).map_err(|e| self.err(e))?;
        }
        self.checkpoint().map(|_| ())
    }

    /// Switches the database out of WAL mode, so that closing it leaves one file and no log:
    /// before a file is renamed into place.
    pub(crate) fn close_into_one_file(self) -> Result<()> {
        self.checkpoint()?;
        self.conn().pragma_update(None, "journal_mode", "DELETE").map_err(|e| self.err(e))
    }

    /// Writes a consistent copy of the whole database to `path` (`VACUUM INTO`), which must
    /// not exist: a backup taken while the node runs.
    pub fn snapshot_into(&self, path: &Path) -> Result<()> {
        let target = utf8_path(path)?;
        self.conn().execute("VACUUM INTO ?1", [target]).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Whether a write deleted key material that only a checkpoint erases from the log.
    pub fn erasure_pending(&self) -> bool {
        self.erasure_pending.load(Ordering::Relaxed)
    }

    /// Records that a write deleted key material (a prekey secret, a receive key).
    fn deleted_keys(&self) {
        self.erasure_pending.store(true, Ordering::Relaxed);
    }

    /// The connection itself, for tests that must make one statement fail (a temporary
    /// trigger lives on its connection).
    #[cfg(test)]
    pub(crate) fn connection_for_tests(&self) -> MutexGuard<'_, Connection> {
        self.conn()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (each statement is
        // atomic), so a poisoned lock is safe to reuse.
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        *self.last_use.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        conn
    }

    /// How long since the store was last used.
    pub fn idle_for(&self) -> std::time::Duration {
        self.last_use.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    /// The size of the write-ahead log on disk, in bytes.
    pub fn wal_bytes(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    }

    /// Copies the write-ahead log into the database and empties it (`wal_checkpoint(TRUNCATE)`):
    /// the one stall of the store, with an fsync, which the node runs while nothing else waits.
    /// It also erases the log's copies of deleted keys, so it clears
    /// [`Store::erasure_pending`] when it completed. Returns how many WAL pages were copied.
    pub fn checkpoint(&self) -> Result<u64> {
        let conn = self.conn();
        // Cleared before, so a key deleted while the checkpoint runs is not forgotten.
        let pending = self.erasure_pending.swap(false, Ordering::Relaxed);
        let result = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(2)?))
            })
            .map_err(|e| self.err(e));
        match result {
            // With `locking_mode=EXCLUSIVE` there is no other reader to block it, so busy is 0;
            // if it ever is not, the log was not emptied and the erasure waits for the next one.
            Ok((0, pages)) => Ok(pages.max(0) as u64),
            Ok((_, pages)) => {
                if pending {
                    self.deleted_keys();
                }
                tracing::warn!("the checkpoint could not empty the log; trying again later");
                Ok(pages.max(0) as u64)
            }
            Err(e) => {
                if pending {
                    self.deleted_keys();
                }
                Err(e)
            }
        }
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Store { path: self.path.clone(), source }
    }
}

/// A database as the bytes of a plain SQLite file, with a secret taken out of it (a backup's
/// snapshot: the identity, which a backup carries beside the database).
pub struct PlainCopy {
    /// The plain SQLite file.
    pub database: Zeroizing<Vec<u8>>,
    /// The secret taken out, if the database held it.
    pub secret: Option<Zeroizing<Vec<u8>>>,
}

/// Gives a connection its key, before any other statement, and has SQLCipher wipe the memory it
/// frees (page buffers, the key's copies).
fn apply_key(conn: &Connection, key: &StoreKey) -> rusqlite::Result<()> {
    let mut pragma = Zeroizing::new(String::from("PRAGMA key = "));
    pragma.push_str(&key.pragma_value());
    conn.execute_batch(&pragma)?;
    // SQLCipher writes its own log lines to stderr by default ("hmac check failed" for a wrong
    // key); the node reports through its errors and `tracing`, so they are turned off. The
    // level is global, and the key above is what starts SQLCipher's logging, so it goes here.
    conn.execute_batch("PRAGMA cipher_log_level = NONE; PRAGMA cipher_memory_security = ON")
}

/// Reads the schema, the first read of a database: SQLCipher decrypts page 1 here, and a wrong
/// key (or none, for an encrypted file) fails with "file is not a database".
fn readable(conn: &Connection, path: &Path, keyed: bool) -> Result<()> {
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Err(if keyed { Error::WrongKey(path.to_owned()) } else { locked(path) })
        }
        Err(source) => Err(Error::Store { path: path.to_owned(), source }),
    }
}

/// The error for an encrypted database opened without a key.
fn locked(path: &Path) -> Error {
    Error::Locked {
        path: path.parent().unwrap_or(path).to_owned(),
        detail: crate::store_key::HOW_TO_UNLOCK.into(),
    }
}

/// A path as SQL text; SQLite takes file names as UTF-8.
fn utf8_path(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::Io {
        action: "cannot use a path that is not UTF-8:",
        path: path.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// Peer ids whose text [`peer_text`] remembers, per thread.
const PEER_TEXTS_REMEMBERED: usize = 4;

/// A thread's last peer ids and their texts, and the slot the next one takes.
struct PeerTexts {
    next: usize,
    recent: [Option<(PeerId, String)>; PEER_TEXTS_REMEMBERED],
}

/// A peer id as the store writes it (Base58). Most tables name rows by peer, so one text
/// spelled its recipient's id in Base58 five or six times (about 2 µs each); a thread's last
/// few are remembered, the same few peers a burst of messages names.
pub(crate) fn peer_text(peer: &PeerId) -> String {
    thread_local! {
        static RECENT: std::cell::RefCell<PeerTexts> = const {
            std::cell::RefCell::new(PeerTexts { next: 0, recent: [const { None }; PEER_TEXTS_REMEMBERED] })
        };
    }
    RECENT.with_borrow_mut(|texts| {
        if let Some((_, text)) = texts.recent.iter().flatten().find(|(p, _)| p == peer) {
            return text.clone();
        }
        let text = peer.to_base58();
        texts.recent[texts.next] = Some((*peer, text.clone()));
        texts.next = (texts.next + 1) % PEER_TEXTS_REMEMBERED;
        text
    })
}

/// Reads a peer id column. Every peer id in the store was written from a `PeerId`, so one that
/// does not parse is a damaged row, reported as an error rather than a panic.
fn peer_column(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<PeerId> {
    let text: String = r.get(idx)?;
    text.parse().map_err(|e: libp2p::identity::ParseError| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Reads a column of addresses, one multiaddr per line; a line that does not parse (nothing
/// this version writes) is skipped, since one bad address must not hide the good ones.
fn addresses_column(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Vec<Multiaddr>> {
    let text: String = r.get(idx)?;
    Ok(text.lines().filter_map(|line| line.parse().ok()).collect())
}

/// Text without any ASCII whitespace, as invites are stored (copy and paste adds some).
pub(crate) fn without_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

/// Addresses as an address column holds them: one per line.
fn join_addresses(addresses: &[Multiaddr]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests;
