//! The SQLite store (`kolokol.db`): contacts, the outbox, each message's state history, the
//! inbox, and (on DHT servers) the mailbox items held for others.
//!
//! Every write is its own transaction, committed before the caller acts on it: a message is in
//! the outbox before any byte of it is sent, and in the inbox before the sender's node is told it
//! arrived. The database runs in WAL mode with `synchronous=NORMAL`: a killed process loses no
//! committed transaction (the WAL is in the kernel's page cache), a power cut may lose the last
//! few. Calls are short and synchronous; the connection sits behind a mutex and is never held
//! across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};

use kolokol_protocol::message::MAX_READ_IDS;

use crate::error::{Error, Result};

/// Schema version written to `PRAGMA user_version`; migrations run from the stored one up.
const SCHEMA_VERSION: i64 = 7;

/// Conversations with peers who are not contacts; past this, first contacts from strangers
/// are refused, so nobody can fill the disk with conversation state.
pub const MAX_STRANGER_CONVERSATIONS: u64 = 1000;

/// Messages whose chunks are still arriving, from one contact (only contacts may send chunks);
/// a chunk of a further message is answered "busy" until one completes or expires, so no
/// contact can fill the disk with halves.
pub const MAX_PARTIAL_MESSAGES_PER_PEER: u64 = 16;

/// Messages whose chunks are still arriving, from all contacts together (at most 64 MiB).
pub const MAX_PARTIAL_MESSAGES: u64 = 64;

/// Peers remembered in the peer cache; past this, the ones heard from longest ago are dropped.
pub const MAX_CACHED_PEERS: usize = 512;

/// Addresses remembered per cached peer.
pub const MAX_CACHED_ADDRESSES: usize = 8;

/// The most outbox rows handed to one retry pass, so a huge backlog is worked through in slices
/// instead of loaded at once.
pub const OUTBOX_BATCH: usize = 64;

/// WAL pages between two automatic checkpoints (4 KiB each, so the WAL file grows to 32 MiB).
const WAL_CHECKPOINT_PAGES: i64 = 8192;

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

const SCHEMA_V1: &str = "
CREATE TABLE contacts (
    name         TEXT PRIMARY KEY,
    peer_id      TEXT NOT NULL UNIQUE,
    device_key   BLOB NOT NULL,
    addresses    TEXT NOT NULL,
    added_at_ms  INTEGER NOT NULL
);
CREATE TABLE outbox (
    id              BLOB PRIMARY KEY,
    peer_id         TEXT NOT NULL,
    device_key      BLOB NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('text', 'receipt')),
    text            TEXT,
    receipt_of      BLOB,
    state           TEXT NOT NULL,
    detail          TEXT,
    created_at_ms   INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);
CREATE TABLE message_states (
    id     BLOB NOT NULL,
    state  TEXT NOT NULL,
    detail TEXT,
    at_ms  INTEGER NOT NULL
);
CREATE INDEX message_states_id ON message_states (id);
CREATE TABLE inbox (
    peer_id         TEXT NOT NULL,
    id              BLOB NOT NULL,
    text            TEXT NOT NULL,
    sent_at_ms      INTEGER NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (peer_id, id)
);
CREATE INDEX inbox_received ON inbox (received_at_ms);
";

/// Version 2: the peer cache, the first bootstrap source (every peer seen, with its last
/// successful contact).
const SCHEMA_V2: &str = "
CREATE TABLE peers (
    peer_id         TEXT PRIMARY KEY,
    addresses       TEXT NOT NULL,
    relay           INTEGER NOT NULL DEFAULT 0,
    source          TEXT NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    last_success_ms INTEGER
);
CREATE INDEX peers_recent ON peers (relay DESC, last_success_ms DESC);
";

/// Version 3: the end-to-end key schedule. One row per peer holds its whole conversation state
/// (our receive keys with their replay caches, the peer's newest receive key), and an index maps
/// each of our receive-key ids to the peer it was given to, so a conversation envelope finds its
/// state by the key id in its header.
const SCHEMA_V3: &str = "
CREATE TABLE conversations (
    peer_id       TEXT PRIMARY KEY,
    state         BLOB NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE receive_keys (
    key_id  BLOB PRIMARY KEY,
    peer_id TEXT NOT NULL
);
CREATE INDEX receive_keys_peer ON receive_keys (peer_id);
";

/// Version 4: our signed prekeys, the current one published in the presence record and older
/// ones kept (secret included) until first contacts sealed to them can no longer arrive.
const SCHEMA_V4: &str = "
CREATE TABLE prekeys (
    key_id     BLOB PRIMARY KEY,
    secret     BLOB NOT NULL,
    public     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    signature  BLOB NOT NULL
);
";

/// Version 5: mailbox items held for others as a replica, and, per outbox item, the mailbox
/// replicas it was deposited on (so a later attempt re-deposits when they change).
const SCHEMA_V5: &str = "
CREATE TABLE mailbox_items (
    mailbox_id   BLOB NOT NULL,
    item_id      BLOB NOT NULL,
    depositor    TEXT NOT NULL,
    envelope     BLOB NOT NULL,
    stored_at_ms INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, item_id)
);
CREATE INDEX mailbox_items_expiry ON mailbox_items (expires_at);
CREATE INDEX mailbox_items_depositor ON mailbox_items (mailbox_id, depositor);
ALTER TABLE outbox ADD COLUMN deposited TEXT NOT NULL DEFAULT '';
";

/// Version 6: read receipts. Each received message records when the user first read it, and a
/// read receipt in the outbox is a `receipt` row whose `read_of` holds the ids it names (16
/// bytes each) instead of `receipt_of`; the `kind` check of version 1 stays as it is, because
/// SQLite can only change it by rebuilding the table.
const SCHEMA_V6: &str = "
ALTER TABLE inbox ADD COLUMN read_at_ms INTEGER;
ALTER TABLE outbox ADD COLUMN read_of BLOB;
";

const SCHEMA_V7: &str = "
CREATE TABLE chunks (
    peer_id         TEXT NOT NULL,
    id              BLOB NOT NULL,
    idx             INTEGER NOT NULL,
    count           INTEGER NOT NULL,
    body_len        INTEGER NOT NULL,
    sent_at_ms      INTEGER NOT NULL,
    data            BLOB NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (peer_id, id, idx)
);
";

/// About how many envelopes an attempt of this body sends: one, or one per chunk of a long
/// text. The outbox claims a row for that many attempt periods.
pub fn attempt_envelopes(body: &OutboxBody) -> u64 {
    match body {
        OutboxBody::Text(t) => 1 + (t.len() / kolokol_protocol::chunk::CHUNK_LEN) as u64,
        OutboxBody::Receipt(_) | OutboxBody::Read(_) => 1,
    }
}

/// What became of one received chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Kept; more chunks of its message are missing.
    Kept,
    /// This chunk completed its message: the data of every chunk, in order. They stay stored
    /// until [`Store::delete_chunks`], so a crash before the message is stored loses nothing.
    Complete(Vec<Vec<u8>>),
    /// Its count, body length or time differ from the chunks of the same message already kept.
    Inconsistent,
    /// Too many partial messages from this peer or in all; try again later.
    Full,
    /// The inbox already holds the whole message; nothing was kept.
    AlreadyReceived,
}

/// The limits a replica enforces on deposits. A deposit past any of them is refused with the
/// reason; nothing already stored is ever evicted to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxQuotas {
    /// Items in one mailbox.
    pub items_per_mailbox: u64,
    /// Envelope bytes in one mailbox.
    pub bytes_per_mailbox: u64,
    /// Items one depositor may have in one mailbox.
    pub items_per_depositor: u64,
    /// Envelope bytes in all mailboxes together.
    pub total_bytes: u64,
}

/// An envelope deposited for a mailbox's owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxDeposit {
    /// The mailbox id.
    pub mailbox_id: [u8; 32],
    /// The item id.
    pub item_id: [u8; 16],
    /// The depositing peer, base58.
    pub depositor: String,
    /// The sealed envelope.
    pub envelope: Vec<u8>,
    /// When the replica may drop it, Unix seconds.
    pub expires_at: u64,
}

/// A stored mailbox item: its id and envelope.
pub type MailboxItem = ([u8; 16], Vec<u8>);

/// A peer in the peer cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPeer {
    /// Peer id, base58.
    pub peer_id: String,
    /// Dialable addresses, multiaddr text without `/p2p/`.
    pub addresses: Vec<String>,
    /// Whether it served as (or advertised) a relay.
    pub relay: bool,
    /// Where we learned of it: `connection`, `bundle`.
    pub source: String,
    /// When last seen or imported, Unix ms.
    pub last_seen_ms: u64,
    /// When we last had a working connection to it, Unix ms.
    pub last_success_ms: Option<u64>,
}

/// A handle to the store; clones share one connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

/// A stored contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactRow {
    /// Local name.
    pub name: String,
    /// Peer id, base58.
    pub peer_id: String,
    /// X25519 device key.
    pub device_key: [u8; 32],
    /// Known addresses, multiaddr text.
    pub addresses: Vec<String>,
    /// When added, Unix ms.
    pub added_at_ms: u64,
}

/// What an outbox row carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxBody {
    /// A text message.
    Text(String),
    /// A delivery receipt for the received message with this id.
    Receipt([u8; 16]),
    /// A read receipt for the received messages with these ids, all from the row's peer; at
    /// most [`kolokol_protocol::message::MAX_READ_IDS`] of them.
    Read(Vec<[u8; 16]>),
}

/// An outgoing item waiting for (or past) delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Message id.
    pub id: [u8; 16],
    /// Recipient peer id, base58.
    pub peer_id: String,
    /// Recipient's X25519 device key.
    pub device_key: [u8; 32],
    /// What it carries.
    pub body: OutboxBody,
    /// When it was created, Unix ms; also the `sent_at_ms` inside the envelope.
    pub created_at_ms: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// An outgoing text message as the user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxView {
    /// Message id.
    pub id: [u8; 16],
    /// Recipient peer id, base58.
    pub peer_id: String,
    /// The recipient's contact name, if still a contact.
    pub contact: Option<String>,
    /// The text.
    pub text: String,
    /// Current state.
    pub state: String,
    /// Reason for the last failure or for giving up.
    pub detail: Option<String>,
    /// Attempts so far.
    pub attempts: u32,
    /// When created, Unix ms.
    pub created_at_ms: u64,
}

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxRow {
    /// Message id.
    pub id: [u8; 16],
    /// Sender peer id, base58.
    pub peer_id: String,
    /// The sender's contact name, if the sender is a contact.
    pub contact: Option<String>,
    /// The text.
    pub text: String,
    /// Sender's timestamp, Unix ms.
    pub sent_at_ms: u64,
    /// Local receive time, Unix ms.
    pub received_at_ms: u64,
    /// When the user first read it, Unix ms; `None` while unread.
    pub read_at_ms: Option<u64>,
}

/// Message states as stored and shown.
pub mod state {
    /// In the outbox, not yet acknowledged by the recipient's node.
    pub const QUEUED: &str = "queued";
    /// The recipient's node acknowledged it over a direct or relayed connection.
    pub const SENT: &str = "sent";
    /// Not acknowledged directly, but held by enough mailbox replicas; direct delivery is still
    /// retried.
    pub const STORED: &str = "stored";
    /// The recipient's end-to-end receipt arrived.
    pub const DELIVERED: &str = "delivered";
    /// The recipient's end-to-end read receipt arrived: their user has seen it.
    pub const READ: &str = "read";
    /// Given up; the detail says why.
    pub const FAILED: &str = "failed";
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |source| Error::Store { path: path.to_owned(), source };
        let conn = Connection::open(path).map_err(err)?;
        // One process owns the database (the data dir's lock file sees to that), so it keeps
        // SQLite's locks for good instead of taking them with fcntl at every transaction.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        // A checkpoint (copying the WAL into the database, with an fsync) stalls whatever
        // transaction triggers it; SQLite's default of every 1 000 pages put one in about every
        // hundred messages, which made the p99 of delivery. Every 8 192 pages (32 MiB of WAL on
        // disk) is eight times rarer.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES).map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let version: i64 =
            conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(Error::Store {
                path: path.to_owned(),
                source: rusqlite::Error::InvalidParameterName(format!(
                    "schema version {version} is newer than this kolokol understands ({SCHEMA_VERSION}); upgrade kolokol"
                )),
            });
        }
        if version < 1 {
            conn.execute_batch(&format!("BEGIN; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;"))
                .map_err(err)?;
        }
        if version < 2 {
            conn.execute_batch(&format!("BEGIN; {SCHEMA_V2} PRAGMA user_version = 2; COMMIT;"))
                .map_err(err)?;
        }
        if version < 3 {
            conn.execute_batch(&format!("BEGIN; {SCHEMA_V3} PRAGMA user_version = 3; COMMIT;"))
                .map_err(err)?;
        }
        if version < 4 {
            conn.execute_batch(&format!("BEGIN; {SCHEMA_V4} PRAGMA user_version = 4; COMMIT;"))
                .map_err(err)?;
        }
        if version < 5 {
            conn.execute_batch(&format!("BEGIN; {SCHEMA_V5} PRAGMA user_version = 5; COMMIT;"))
                .map_err(err)?;
        }
        if version < 6 {
            conn.execute_batch(&format!("BEGIN; {SCHEMA_V6} PRAGMA user_version = 6; COMMIT;"))
                .map_err(err)?;
        }
        if version < 7 {
            conn.execute_batch(&format!("BEGIN; {SCHEMA_V7} PRAGMA user_version = 7; COMMIT;"))
                .map_err(err)?;
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)), path: path.to_owned() })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (each statement is
        // atomic), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::Store { path: self.path.clone(), source }
    }

    /// Adds a contact; refuses a duplicate name or peer.
    pub fn add_contact(&self, c: &ContactRow) -> Result<()> {
        let conn = self.conn();
        let existing: Option<String> = conn
            .row(
                "SELECT name FROM contacts WHERE name = ?1 OR peer_id = ?2",
                params![c.name, c.peer_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(name) = existing {
            return Err(Error::ContactExists(if name == c.name {
                format!("a contact named {name:?} already exists (remove it first)")
            } else {
                format!("that peer is already your contact {name:?}")
            }));
        }
        conn.exec(
            "INSERT INTO contacts (name, peer_id, device_key, addresses, added_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                c.name,
                c.peer_id,
                c.device_key.as_slice(),
                c.addresses.join("\n"),
                c.added_at_ms as i64
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn contact_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContactRow> {
        let key: Vec<u8> = r.get(2)?;
        let addresses: String = r.get(3)?;
        Ok(ContactRow {
            name: r.get(0)?,
            peer_id: r.get(1)?,
            device_key: key.try_into().unwrap_or([0; 32]),
            addresses: addresses.lines().map(str::to_owned).collect(),
            added_at_ms: r.get::<_, i64>(4)? as u64,
        })
    }

    /// The contact with this name.
    pub fn contact(&self, name: &str) -> Result<Option<ContactRow>> {
        self.conn()
            .row(
                "SELECT name, peer_id, device_key, addresses, added_at_ms FROM contacts WHERE name = ?1",
                [name],
                Self::contact_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The contact with this peer id.
    pub fn contact_by_peer(&self, peer_id: &str) -> Result<Option<ContactRow>> {
        self.conn()
            .row(
                "SELECT name, peer_id, device_key, addresses, added_at_ms FROM contacts WHERE peer_id = ?1",
                [peer_id],
                Self::contact_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// All contacts, by name.
    pub fn contacts(&self) -> Result<Vec<ContactRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT name, peer_id, device_key, addresses, added_at_ms FROM contacts ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], Self::contact_from_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Removes a contact; messages to and from them stay.
    pub fn remove_contact(&self, name: &str) -> Result<Option<ContactRow>> {
        let Some(c) = self.contact(name)? else { return Ok(None) };
        self.conn()
            .exec("DELETE FROM contacts WHERE name = ?1", [name])
            .map_err(|e| self.err(e))?;
        Ok(Some(c))
    }

    /// Puts an item in the outbox as `queued`, first due at `next_attempt_ms`, and records the
    /// state.
    pub fn enqueue(&self, row: &OutboxRow, next_attempt_ms: u64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        Self::insert_outbox(&tx, row, next_attempt_ms).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn insert_outbox(
        tx: &rusqlite::Transaction<'_>,
        row: &OutboxRow,
        next_attempt_ms: u64,
    ) -> rusqlite::Result<()> {
        let read_of: Option<Vec<u8>> = match &row.body {
            OutboxBody::Read(ids) => Some(ids.concat()),
            OutboxBody::Text(_) | OutboxBody::Receipt(_) => None,
        };
        let (kind, text, receipt_of) = match &row.body {
            OutboxBody::Text(t) => ("text", Some(t.as_str()), None),
            OutboxBody::Receipt(of) => ("receipt", None, Some(of.as_slice())),
            OutboxBody::Read(_) => ("receipt", None, None),
        };
        tx.exec(
            "INSERT INTO outbox (id, peer_id, device_key, kind, text, receipt_of, state,
                                 created_at_ms, attempts, next_attempt_ms, read_of)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10)",
            params![
                row.id.as_slice(),
                row.peer_id,
                row.device_key.as_slice(),
                kind,
                text,
                receipt_of,
                state::QUEUED,
                row.created_at_ms as i64,
                next_attempt_ms as i64,
                read_of
            ],
        )?;
        tx.exec(
            "INSERT INTO message_states (id, state, detail, at_ms) VALUES (?1, ?2, NULL, ?3)",
            params![row.id.as_slice(), state::QUEUED, row.created_at_ms as i64],
        )?;
        Ok(())
    }

    /// Moves an outbox item to `new_state` (recording the change), unless it is already in the
    /// same or a later state; returns whether it changed. States only move forward, in the
    /// order `queued → stored → sent → delivered → read`, or to `failed`: a `stored` message may
    /// become `sent`, but a late deposit ack never moves a `sent` one back. A `delivered` message
    /// may still become `read` (never `failed`), and `read` may follow any state before it,
    /// since the read receipt can overtake a lost or late delivery receipt; `read` and `failed`
    /// are final. A `stored` message is recorded as `stored` again when its detail changes (it was
    /// re-deposited on other replicas), so the history says where it is now.
    pub fn set_state(
        &self,
        id: &[u8; 16],
        new_state: &str,
        detail: Option<&str>,
        now_ms: u64,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let changed = tx
            .exec(
                "UPDATE outbox SET state = ?2, detail = ?3
                 WHERE id = ?1
                   AND ((CASE state WHEN 'queued' THEN 0 WHEN 'stored' THEN 1 WHEN 'sent' THEN 2
                         WHEN 'delivered' THEN 3 ELSE 9 END)
                      < (CASE ?2 WHEN 'stored' THEN 1 WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3
                         WHEN 'failed' THEN 3 WHEN 'read' THEN 4 ELSE 0 END)
                     OR (state = 'stored' AND ?2 = 'stored' AND COALESCE(detail, '') != COALESCE(?3, '')))",
                params![id.as_slice(), new_state, detail],
            )
            .map_err(|e| self.err(e))?;
        if changed > 0 {
            tx.exec(
                "INSERT INTO message_states (id, state, detail, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id.as_slice(), new_state, detail, now_ms as i64],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(changed > 0)
    }

    /// Marks the receipts with these ids sent, in one transaction, as [`Store::set_state`] would
    /// one by one.
    pub fn set_sent(&self, ids: &[[u8; 16]], now_ms: u64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        for id in ids {
            let changed = tx
                .exec(
                    "UPDATE outbox SET state = 'sent', detail = NULL
                     WHERE id = ?1 AND state IN ('queued', 'stored')",
                    [id.as_slice()],
                )
                .map_err(|e| self.err(e))?;
            if changed > 0 {
                tx.exec(
                    "INSERT INTO message_states (id, state, detail, at_ms) VALUES (?1, 'sent', NULL, ?2)",
                    params![id.as_slice(), now_ms as i64],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records a failed attempt and when to try again; the item stays `queued` (or `stored`,
    /// whose detail, the replica count, is kept).
    pub fn reschedule(
        &self,
        id: &[u8; 16],
        attempts: u32,
        next_attempt_ms: u64,
        detail: &str,
    ) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3,
                    detail = CASE WHEN state = 'stored' THEN detail ELSE ?4 END WHERE id = ?1",
                params![id.as_slice(), attempts, next_attempt_ms as i64, detail],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Makes every queued or stored item for `peer_id` due now (the peer just became
    /// reachable).
    pub fn wake_peer(&self, peer_id: &str, now_ms: u64) -> Result<usize> {
        self.conn()
            .exec(
                "UPDATE outbox SET next_attempt_ms = ?2 WHERE peer_id = ?1 AND state IN ('queued', 'stored') AND next_attempt_ms > ?2",
                params![peer_id, now_ms as i64],
            )
            .map_err(|e| self.err(e))
    }

    /// Queued and stored items due at `now_ms`, oldest first, at most [`OUTBOX_BATCH`]; each is claimed
    /// until `claim_until_ms` (not due again before then) in the same transaction, so two
    /// retry passes never take the same item.
    pub fn due(&self, now_ms: u64, claim_until_ms: u64) -> Result<Vec<OutboxRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let rows: Vec<OutboxRow> = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT id, peer_id, device_key, kind, text, receipt_of, created_at_ms, attempts,
                            read_of
                     FROM outbox WHERE state IN ('queued', 'stored') AND next_attempt_ms <= ?1
                     ORDER BY created_at_ms, rowid LIMIT ?2",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params![now_ms as i64, OUTBOX_BATCH as i64], |r| {
                    let id: Vec<u8> = r.get(0)?;
                    let key: Vec<u8> = r.get(2)?;
                    let kind: String = r.get(3)?;
                    let read_of: Option<Vec<u8>> = r.get(8)?;
                    let body = if let Some(ids) = read_of {
                        OutboxBody::Read(
                            ids.chunks_exact(16)
                                .map(|id| id.try_into().unwrap_or([0; 16]))
                                .collect(),
                        )
                    } else if kind == "receipt" {
                        let of: Vec<u8> = r.get(5)?;
                        OutboxBody::Receipt(of.try_into().unwrap_or([0; 16]))
                    } else {
                        OutboxBody::Text(r.get::<_, Option<String>>(4)?.unwrap_or_default())
                    };
                    Ok(OutboxRow {
                        id: id.try_into().unwrap_or([0; 16]),
                        peer_id: r.get(1)?,
                        device_key: key.try_into().unwrap_or([0; 32]),
                        body,
                        created_at_ms: r.get::<_, i64>(6)? as u64,
                        attempts: r.get(7)?,
                    })
                })
                .map_err(|e| self.err(e))?;
            rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))?
        };
        let claim = claim_until_ms.saturating_sub(now_ms);
        for row in &rows {
            // A long text goes as one envelope per chunk, delivered one after the other, so its
            // attempt may take longer: the claim grows with the chunks.
            let until = now_ms.saturating_add(claim.saturating_mul(attempt_envelopes(&row.body)));
            tx.exec(
                "UPDATE outbox SET next_attempt_ms = ?2 WHERE id = ?1",
                params![row.id.as_slice(), until as i64],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Makes every queued or stored item due now; called at start, since no attempt survives a
    /// restart.
    pub fn wake_all(&self, now_ms: u64) -> Result<usize> {
        self.conn()
            .exec(
                "UPDATE outbox SET next_attempt_ms = ?1 WHERE state IN ('queued', 'stored')",
                params![now_ms as i64],
            )
            .map_err(|e| self.err(e))
    }

    /// The earliest time any queued or stored item is due, if any is.
    pub fn next_due(&self) -> Result<Option<u64>> {
        self.conn()
            .row(
                "SELECT MIN(next_attempt_ms) FROM outbox WHERE state IN ('queued', 'stored')",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| self.err(e))
    }

    /// How many text messages the user sent are still queued (receipts are not counted).
    pub fn queued_count(&self) -> Result<u64> {
        self.conn()
            .row("SELECT COUNT(*) FROM outbox WHERE state = 'queued' AND kind = 'text'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// How many text messages the user sent are in each state (receipts are not counted).
    pub fn message_counts(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM outbox WHERE kind = 'text' GROUP BY state")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// How many messages the inbox holds.
    pub fn inbox_count(&self) -> Result<u64> {
        self.conn()
            .row("SELECT COUNT(*) FROM inbox", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// The outbox item's recipient peer id, if the id names one of our text messages.
    pub fn outgoing_text_peer(&self, id: &[u8; 16]) -> Result<Option<String>> {
        self.conn()
            .row(
                "SELECT peer_id FROM outbox WHERE id = ?1 AND kind = 'text'",
                [id.as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Stores a received message, and queues the receipt that answers it, in one transaction,
    /// unless this sender already sent a message with this id; returns whether it is new.
    pub fn receive(&self, row: &InboxRow, receipt: &OutboxRow) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let inserted = tx
            .exec(
                "INSERT OR IGNORE INTO inbox (peer_id, id, text, sent_at_ms, received_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    row.peer_id,
                    row.id.as_slice(),
                    row.text,
                    row.sent_at_ms as i64,
                    row.received_at_ms as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        if inserted == 1 {
            Self::insert_outbox(&tx, receipt, receipt.created_at_ms).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(inserted == 1)
    }

    /// Keeps one received chunk of the message `id` from `peer_id` (a repeat changes nothing)
    /// and says whether the message is now complete. A chunk of a message not yet started is
    /// refused with [`ChunkOutcome::Full`] past [`MAX_PARTIAL_MESSAGES_PER_PEER`] or
    /// [`MAX_PARTIAL_MESSAGES`].
    #[allow(clippy::too_many_arguments)]
    pub fn add_chunk(
        &self,
        peer_id: &str,
        id: &[u8; 16],
        index: u32,
        count: u32,
        body_len: u32,
        sent_at_ms: u64,
        data: &[u8],
        now_ms: u64,
    ) -> Result<ChunkOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let outcome = (|| {
            // Checked in the same transaction as the insert, so a repeat of a chunk racing the
            // message's completion cannot leave a stray chunk behind.
            let received = tx
                .row(
                    "SELECT 1 FROM inbox WHERE peer_id = ?1 AND id = ?2",
                    params![peer_id, id.as_slice()],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if received {
                return Ok(ChunkOutcome::AlreadyReceived);
            }
            let known: Option<(i64, i64, i64)> = tx
                .row(
                    "SELECT count, body_len, sent_at_ms FROM chunks
                     WHERE peer_id = ?1 AND id = ?2 LIMIT 1",
                    params![peer_id, id.as_slice()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            match known {
                Some(fields) if fields != (count as i64, body_len as i64, sent_at_ms as i64) => {
                    return Ok(ChunkOutcome::Inconsistent);
                }
                Some(_) => {}
                None => {
                    let (from_peer, from_all): (u64, u64) = tx.row(
                        "SELECT COUNT(DISTINCT CASE WHEN peer_id = ?1 THEN id END),
                                COUNT(DISTINCT peer_id || x'00' || hex(id))
                         FROM chunks",
                        [peer_id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    if from_peer >= MAX_PARTIAL_MESSAGES_PER_PEER
                        || from_all >= MAX_PARTIAL_MESSAGES
                    {
                        return Ok(ChunkOutcome::Full);
                    }
                }
            }
            tx.exec(
                "INSERT OR IGNORE INTO chunks
                 (peer_id, id, idx, count, body_len, sent_at_ms, data, received_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    peer_id,
                    id.as_slice(),
                    index,
                    count,
                    body_len,
                    sent_at_ms as i64,
                    data,
                    now_ms as i64
                ],
            )?;
            // Counted first: the data is read only once, when the message is complete.
            let kept: i64 = tx.row(
                "SELECT COUNT(*) FROM chunks WHERE peer_id = ?1 AND id = ?2",
                params![peer_id, id.as_slice()],
                |r| r.get(0),
            )?;
            if kept != i64::from(count) {
                return Ok(ChunkOutcome::Kept);
            }
            let mut statement = tx.prepare_cached(
                "SELECT data FROM chunks WHERE peer_id = ?1 AND id = ?2 ORDER BY idx",
            )?;
            let all: Vec<Vec<u8>> = statement
                .query_map(params![peer_id, id.as_slice()], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(ChunkOutcome::Complete(all))
        })()
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(outcome)
    }

    /// Forgets the chunks of one message, once it is stored or found unusable.
    pub fn delete_chunks(&self, peer_id: &str, id: &[u8; 16]) -> Result<()> {
        self.conn()
            .exec(
                "DELETE FROM chunks WHERE peer_id = ?1 AND id = ?2",
                params![peer_id, id.as_slice()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Forgets the chunks of messages whose first chunk arrived before `before_ms`: the sender
    /// stopped trying long ago. Returns how many chunks went.
    pub fn purge_chunks(&self, before_ms: u64) -> Result<usize> {
        self.conn()
            .exec(
                "DELETE FROM chunks WHERE (peer_id, id) IN
                 (SELECT peer_id, id FROM chunks GROUP BY peer_id, id
                  HAVING MIN(received_at_ms) < ?1)",
                [before_ms as i64],
            )
            .map_err(|e| self.err(e))
    }

    /// Marks the received messages with these ids read at `now_ms`, each only the first time,
    /// and, when `receipts` is set, queues read receipts for them in the same transaction: one
    /// per sender (one per [`MAX_READ_IDS`] of its messages), ids named by `new_id`, addressed
    /// to the device key the sender has as a contact. Senders who are not contacts get none:
    /// a stranger learns that its message arrived, never whether or when it was read. Returns
    /// how many messages were unread until now, and the receipts queued.
    pub fn mark_read(
        &self,
        ids: &[[u8; 16]],
        now_ms: u64,
        receipts: bool,
        mut new_id: impl FnMut() -> [u8; 16],
    ) -> Result<(u32, Vec<OutboxRow>)> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut marked = 0u32;
        // Senders in the order first met, each with its newly read ids in the order given.
        let mut by_sender: Vec<(String, Vec<[u8; 16]>)> = Vec::new();
        for id in ids {
            let senders: Vec<String> = {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE inbox SET read_at_ms = ?2 WHERE id = ?1 AND read_at_ms IS NULL
                         RETURNING peer_id",
                    )
                    .map_err(|e| self.err(e))?;
                let rows = stmt
                    .query_map(params![id.as_slice(), now_ms as i64], |r| r.get(0))
                    .map_err(|e| self.err(e))?;
                rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))?
            };
            for sender in senders {
                marked += 1;
                match by_sender.iter_mut().find(|(peer, _)| *peer == sender) {
                    Some((_, read)) => read.push(*id),
                    None => by_sender.push((sender, vec![*id])),
                }
            }
        }
        let mut queued = Vec::new();
        if receipts {
            for (peer_id, read) in by_sender {
                let device_key: Option<Vec<u8>> = tx
                    .row("SELECT device_key FROM contacts WHERE peer_id = ?1", [&peer_id], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(|e| self.err(e))?;
                let Some(device_key) = device_key.and_then(|k| <[u8; 32]>::try_from(k).ok()) else {
                    continue;
                };
                for chunk in read.chunks(MAX_READ_IDS) {
                    let row = OutboxRow {
                        id: new_id(),
                        peer_id: peer_id.clone(),
                        device_key,
                        body: OutboxBody::Read(chunk.to_vec()),
                        created_at_ms: now_ms,
                        attempts: 0,
                    };
                    Self::insert_outbox(&tx, &row, now_ms).map_err(|e| self.err(e))?;
                    queued.push(row);
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok((marked, queued))
    }

    /// How many stored messages came from `peer_id`, and from all senders who are not contacts.
    pub fn stranger_messages(&self, peer_id: &str) -> Result<(u64, u64)> {
        self.conn()
            .row(
                "SELECT
                    (SELECT COUNT(*) FROM inbox WHERE peer_id = ?1),
                    (SELECT COUNT(*) FROM inbox WHERE peer_id NOT IN (SELECT peer_id FROM contacts))",
                [peer_id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` received messages, oldest first, with the sender's contact name.
    pub fn inbox(&self, limit: u32) -> Result<Vec<InboxRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT * FROM (
                    SELECT i.id, i.peer_id, c.name, i.text, i.sent_at_ms, i.received_at_ms,
                           i.read_at_ms, i.rowid AS r
                    FROM inbox i LEFT JOIN contacts c ON c.peer_id = i.peer_id
                    ORDER BY i.received_at_ms DESC, i.rowid DESC LIMIT ?1
                 ) ORDER BY received_at_ms, r",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit], |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(InboxRow {
                    id: id.try_into().unwrap_or([0; 16]),
                    peer_id: r.get(1)?,
                    contact: r.get(2)?,
                    text: r.get(3)?,
                    sent_at_ms: r.get::<_, i64>(4)? as u64,
                    received_at_ms: r.get::<_, i64>(5)? as u64,
                    read_at_ms: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// The newest `limit` outgoing text messages, oldest first, with the recipient's contact
    /// name where they still are a contact.
    pub fn outbox(&self, limit: u32) -> Result<Vec<OutboxView>> {
        self.outbox_query("ORDER BY o.created_at_ms DESC, o.rowid DESC LIMIT ?1", params![limit])
            .map(|mut v| {
                v.reverse();
                v
            })
    }

    /// One outgoing text message.
    pub fn outgoing(&self, id: &[u8; 16]) -> Result<Option<OutboxView>> {
        Ok(self.outbox_query("AND o.id = ?1", params![id.as_slice()])?.pop())
    }

    fn outbox_query(&self, tail: &str, args: impl rusqlite::Params) -> Result<Vec<OutboxView>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT o.id, o.peer_id, c.name, o.text, o.state, o.detail, o.attempts, o.created_at_ms
             FROM outbox o LEFT JOIN contacts c ON c.peer_id = o.peer_id
             WHERE o.kind = 'text' {tail}"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(args, |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(OutboxView {
                    id: id.try_into().unwrap_or([0; 16]),
                    peer_id: r.get(1)?,
                    contact: r.get(2)?,
                    text: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    state: r.get(4)?,
                    detail: r.get(5)?,
                    attempts: r.get(6)?,
                    created_at_ms: r.get::<_, i64>(7)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Records a working connection to `peer_id` at `address` (merged into its known addresses,
    /// newest first), then trims the cache to [`MAX_CACHED_PEERS`].
    pub fn peer_seen(&self, peer_id: &str, address: &str, relay: bool, now_ms: u64) -> Result<()> {
        self.upsert_peer(peer_id, &[address.to_owned()], relay, "connection", now_ms, true)
    }

    /// Adds peers from an imported bundle, without claiming a successful contact.
    pub fn peer_imported(
        &self,
        peer_id: &str,
        addresses: &[String],
        relay: bool,
        now_ms: u64,
    ) -> Result<()> {
        self.upsert_peer(peer_id, addresses, relay, "bundle", now_ms, false)
    }

    fn upsert_peer(
        &self,
        peer_id: &str,
        addresses: &[String],
        relay: bool,
        source: &str,
        now_ms: u64,
        success: bool,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let old: Option<(String, bool, String)> = tx
            .row("SELECT addresses, relay, source FROM peers WHERE peer_id = ?1", [peer_id], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let mut merged: Vec<String> = addresses.to_vec();
        let mut old_source = None;
        let mut was_relay = false;
        if let Some((old_addresses, old_relay, src)) = old {
            merged.extend(
                old_addresses.lines().map(str::to_owned).filter(|a| !addresses.contains(a)),
            );
            was_relay = old_relay;
            old_source = Some(src);
        }
        merged.truncate(MAX_CACHED_ADDRESSES);
        let source = if success {
            source.to_owned()
        } else {
            old_source.unwrap_or_else(|| source.to_owned())
        };
        tx.exec(
            "INSERT INTO peers (peer_id, addresses, relay, source, last_seen_ms, last_success_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (peer_id) DO UPDATE SET
                addresses = excluded.addresses, relay = excluded.relay, source = excluded.source,
                last_seen_ms = excluded.last_seen_ms,
                last_success_ms = COALESCE(excluded.last_success_ms, peers.last_success_ms)",
            params![
                peer_id,
                merged.join("\n"),
                relay || was_relay,
                source,
                now_ms as i64,
                success.then_some(now_ms as i64)
            ],
        )
        .map_err(|e| self.err(e))?;
        // An imported peer was never reached, but it counts as recent at its import time:
        // ordering by success alone would evict every import the moment the cache is full.
        tx.exec(
            "DELETE FROM peers WHERE peer_id NOT IN (
                SELECT peer_id FROM peers
                ORDER BY COALESCE(last_success_ms, last_seen_ms) DESC, last_seen_ms DESC LIMIT ?1)",
            [MAX_CACHED_PEERS as i64],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Cached peers, relays first, then most recently successful first, at most `limit`.
    pub fn cached_peers(&self, limit: usize) -> Result<Vec<CachedPeer>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT peer_id, addresses, relay, source, last_seen_ms, last_success_ms FROM peers
                 ORDER BY relay DESC, COALESCE(last_success_ms, 0) DESC, last_seen_ms DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let addresses: String = r.get(1)?;
                Ok(CachedPeer {
                    peer_id: r.get(0)?,
                    addresses: addresses.lines().map(str::to_owned).collect(),
                    relay: r.get::<_, i64>(2)? != 0,
                    source: r.get(3)?,
                    last_seen_ms: r.get::<_, i64>(4)? as u64,
                    last_success_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Replaces a contact's known addresses (from a fresher presence record).
    pub fn set_contact_addresses(&self, peer_id: &str, addresses: &[String]) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE contacts SET addresses = ?2 WHERE peer_id = ?1",
                params![peer_id, addresses.join("\n")],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The stored conversation state with `peer_id`, if any. The bytes hold secret keys: the
    /// caller wipes them (the buffer is `Zeroizing`).
    pub fn conversation(&self, peer_id: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        self.conn()
            .row("SELECT state FROM conversations WHERE peer_id = ?1", [peer_id], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()
            .map(|v| v.map(zeroize::Zeroizing::new))
            .map_err(|e| self.err(e))
    }

    /// Replaces the conversation state with `peer_id` and, when `key_ids` is given (they
    /// changed), the index of its receive-key ids, in one transaction: a key id never points at
    /// a state that does not hold its key.
    pub fn save_conversation(
        &self,
        peer_id: &str,
        state: &[u8],
        key_ids: Option<&[[u8; 8]]>,
        now_ms: u64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.exec(
            "INSERT INTO conversations (peer_id, state, updated_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (peer_id) DO UPDATE SET state = excluded.state, updated_at_ms = excluded.updated_at_ms",
            params![peer_id, state, now_ms as i64],
        )
        .map_err(|e| self.err(e))?;
        let Some(key_ids) = key_ids else {
            return tx.commit().map_err(|e| self.err(e));
        };
        tx.exec("DELETE FROM receive_keys WHERE peer_id = ?1", [peer_id])
            .map_err(|e| self.err(e))?;
        for id in key_ids {
            tx.exec(
                "INSERT OR REPLACE INTO receive_keys (key_id, peer_id) VALUES (?1, ?2)",
                params![id.as_slice(), peer_id],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The peer one of our receive keys was given to.
    pub fn peer_for_key(&self, key_id: &[u8; 8]) -> Result<Option<String>> {
        self.conn()
            .row("SELECT peer_id FROM receive_keys WHERE key_id = ?1", [key_id.as_slice()], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The ids of our receive keys given to `peer_id`.
    pub fn receive_key_ids(&self, peer_id: &str) -> Result<Vec<[u8; 8]>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key_id FROM receive_keys WHERE peer_id = ?1 ORDER BY key_id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([peer_id], |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(id.try_into().unwrap_or([0; 8]))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Stores a new signed prekey with its secret.
    pub fn save_prekey(
        &self,
        key_id: &[u8; 8],
        secret: &[u8; 32],
        prekey: &kolokol_protocol::prekey::SignedPrekey,
    ) -> Result<()> {
        self.conn()
            .exec(
                "INSERT OR REPLACE INTO prekeys (key_id, secret, public, created_at, expires_at, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    key_id.as_slice(),
                    secret.as_slice(),
                    prekey.public.as_slice(),
                    prekey.created_at as i64,
                    prekey.expires_at as i64,
                    prekey.signature.as_slice()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest signed prekey.
    pub fn newest_prekey(&self) -> Result<Option<kolokol_protocol::prekey::SignedPrekey>> {
        self.conn()
            .row(
                "SELECT public, created_at, expires_at, signature FROM prekeys
                 ORDER BY created_at DESC LIMIT 1",
                [],
                |r| {
                    let public: Vec<u8> = r.get(0)?;
                    let signature: Vec<u8> = r.get(3)?;
                    Ok(kolokol_protocol::prekey::SignedPrekey {
                        public: public.try_into().unwrap_or([0; 32]),
                        created_at: r.get::<_, i64>(1)? as u64,
                        expires_at: r.get::<_, i64>(2)? as u64,
                        signature: signature.try_into().unwrap_or([0; 64]),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The secret of the prekey with this id, if we still hold it.
    pub fn prekey_secret(&self, key_id: &[u8; 8]) -> Result<Option<zeroize::Zeroizing<[u8; 32]>>> {
        self.conn()
            .row("SELECT secret FROM prekeys WHERE key_id = ?1", [key_id.as_slice()], |r| {
                let secret: Vec<u8> = r.get(0)?;
                Ok(zeroize::Zeroizing::new(secret.try_into().unwrap_or([0; 32])))
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Deletes prekeys (secrets included) that expired before `before`; returns how many.
    pub fn delete_prekeys_expired_before(&self, before: u64) -> Result<usize> {
        self.conn()
            .exec("DELETE FROM prekeys WHERE expires_at < ?1", [before as i64])
            .map_err(|e| self.err(e))
    }

    /// Every peer we hold a conversation with.
    pub fn conversation_peers(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT peer_id FROM conversations").map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// How many conversations are with peers who are not contacts.
    pub fn stranger_conversations(&self) -> Result<u64> {
        self.conn()
            .row(
                "SELECT COUNT(*) FROM conversations WHERE peer_id NOT IN (SELECT peer_id FROM contacts)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Where an outbox item was last deposited: the mailbox id (hex) and the replicas' peer ids,
    /// space-separated; empty if never.
    pub fn deposited(&self, id: &[u8; 16]) -> Result<String> {
        self.conn()
            .row("SELECT deposited FROM outbox WHERE id = ?1", [id.as_slice()], |r| r.get(0))
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|e| self.err(e))
    }

    /// Records where an outbox item is deposited (see [`Store::deposited`]).
    pub fn set_deposited(&self, id: &[u8; 16], deposited: &str) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE outbox SET deposited = ?2 WHERE id = ?1",
                params![id.as_slice(), deposited],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Stores a deposit for a mailbox's owner unless a quota is reached; returns `Ok(None)`
    /// when stored (or already stored under this id), `Ok(Some(reason))` when refused. Other
    /// items are never touched.
    pub fn mailbox_deposit(
        &self,
        d: &MailboxDeposit,
        quotas: &MailboxQuotas,
        now_ms: u64,
    ) -> Result<Option<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let exists: bool = tx
            .row(
                "SELECT COUNT(*) FROM mailbox_items WHERE mailbox_id = ?1 AND item_id = ?2",
                params![d.mailbox_id.as_slice(), d.item_id.as_slice()],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| self.err(e))?
            > 0;
        if exists {
            return Ok(None);
        }
        let (items, bytes, from_depositor, total): (i64, i64, i64, i64) = tx
            .row(
                "SELECT
                    (SELECT COUNT(*) FROM mailbox_items WHERE mailbox_id = ?1),
                    (SELECT COALESCE(SUM(LENGTH(envelope)), 0) FROM mailbox_items WHERE mailbox_id = ?1),
                    (SELECT COUNT(*) FROM mailbox_items WHERE mailbox_id = ?1 AND depositor = ?2),
                    (SELECT COALESCE(SUM(LENGTH(envelope)), 0) FROM mailbox_items)",
                params![d.mailbox_id.as_slice(), d.depositor],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(|e| self.err(e))?;
        let len = d.envelope.len() as u64;
        let refused = if items as u64 >= quotas.items_per_mailbox {
            Some(format!("the mailbox is full ({} items)", quotas.items_per_mailbox))
        } else if bytes as u64 + len > quotas.bytes_per_mailbox {
            Some(format!("the mailbox is full ({} bytes)", quotas.bytes_per_mailbox))
        } else if from_depositor as u64 >= quotas.items_per_depositor {
            Some(format!(
                "you already have {} items in this mailbox, the most one sender may",
                quotas.items_per_depositor
            ))
        } else if total as u64 + len > quotas.total_bytes {
            Some("this replica holds all the mailbox data it will take".into())
        } else {
            None
        };
        if refused.is_some() {
            return Ok(refused);
        }
        tx.exec(
            "INSERT INTO mailbox_items (mailbox_id, item_id, depositor, envelope, stored_at_ms, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                d.mailbox_id.as_slice(),
                d.item_id.as_slice(),
                d.depositor,
                d.envelope,
                now_ms as i64,
                d.expires_at as i64
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(None)
    }

    /// The unexpired items of a mailbox at `now_secs`, oldest first, at most `max_items` and
    /// `max_bytes` of envelopes (at least one item if any); and whether more remain.
    pub fn mailbox_items(
        &self,
        mailbox_id: &[u8; 32],
        now_secs: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<(Vec<MailboxItem>, bool)> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT item_id, envelope FROM mailbox_items
                 WHERE mailbox_id = ?1 AND expires_at >= ?2 ORDER BY stored_at_ms, rowid LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![mailbox_id.as_slice(), now_secs as i64, max_items as i64 + 1], |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok((id.try_into().unwrap_or([0; 16]), r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for row in rows {
            let (id, envelope) = row.map_err(|e| self.err(e))?;
            if items.len() == max_items || (!items.is_empty() && bytes + envelope.len() > max_bytes)
            {
                more = true;
                break;
            }
            bytes += envelope.len();
            items.push((id, envelope));
        }
        Ok((items, more))
    }

    /// Deletes the named items of a mailbox; returns how many were there.
    pub fn mailbox_delete(&self, mailbox_id: &[u8; 32], item_ids: &[[u8; 16]]) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut count = 0;
        for id in item_ids {
            count += tx
                .exec(
                    "DELETE FROM mailbox_items WHERE mailbox_id = ?1 AND item_id = ?2",
                    params![mailbox_id.as_slice(), id.as_slice()],
                )
                .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(count)
    }

    /// Drops every mailbox item expired at `now_secs`; returns how many.
    pub fn mailbox_purge(&self, now_secs: u64) -> Result<usize> {
        self.conn()
            .exec("DELETE FROM mailbox_items WHERE expires_at < ?1", [now_secs as i64])
            .map_err(|e| self.err(e))
    }

    /// How many items this node holds as a replica, in all mailboxes.
    pub fn mailbox_items_total(&self) -> Result<u64> {
        self.conn()
            .row("SELECT COUNT(*) FROM mailbox_items", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// How many items a mailbox holds, expired ones included.
    pub fn mailbox_count(&self, mailbox_id: &[u8; 32]) -> Result<u64> {
        self.conn()
            .row(
                "SELECT COUNT(*) FROM mailbox_items WHERE mailbox_id = ?1",
                [mailbox_id.as_slice()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// The state history of one message, oldest first.
    pub fn history(&self, id: &[u8; 16]) -> Result<Vec<(String, Option<String>, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT state, detail, at_ms FROM message_states WHERE id = ?1 ORDER BY at_ms, rowid")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([id.as_slice()], |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests;
