//! The schema ladder: one step per version, each run in its own transaction, recorded in
//! `PRAGMA user_version`.

use rusqlite::Connection;

/// Schema version written to `PRAGMA user_version`; migrations run from the stored one up.
pub(super) const SCHEMA_VERSION: i64 = 15;

/// Brings the schema from `version` (as read from the database) up to [`SCHEMA_VERSION`].
pub(super) fn migrate(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    migrate_to(conn, version, SCHEMA_VERSION)
}

/// Brings the schema from `version` up to `target` (tests build older databases with it).
pub(super) fn migrate_to(conn: &Connection, version: i64, target: i64) -> rusqlite::Result<()> {
    for (step, sql) in STEPS.iter().enumerate() {
        let to = step as i64 + 1;
        if version < to && to <= target {
            conn.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {to}; COMMIT;"))?;
        }
    }
    Ok(())
}

/// The steps, in order: `STEPS[n]` takes the schema from version `n` to `n + 1`.
const STEPS: [&str; SCHEMA_VERSION as usize] = [
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8,
    SCHEMA_V9, SCHEMA_V10, SCHEMA_V11, SCHEMA_V12, SCHEMA_V13, SCHEMA_V14, SCHEMA_V15,
];

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

/// Version 8: private groups (`store/groups.rs`). A group's signed changes are kept as they
/// came (`group_ops`); its name, our status and its members are what they resolve to, rewritten
/// whenever they change, and `group_people` keeps the last name each member was listed under,
/// so texts of members who have gone still show a name. Our group messages travel as outbox rows of kind `receipt` (the kind
/// check of version 1 cannot change without rebuilding the table) whose `group_body` holds the
/// encoded group message, and `group_copies` says which member and which text each row is for.
const SCHEMA_V8: &str = "
CREATE TABLE groups (
    group_id      BLOB PRIMARY KEY,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    invited_by    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    next_seq      INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE group_ops (
    group_id       BLOB NOT NULL,
    op_id          BLOB NOT NULL,
    op             BLOB NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, op_id)
);
CREATE TABLE group_members (
    group_id   BLOB NOT NULL,
    peer_id    TEXT NOT NULL,
    device_key BLOB NOT NULL,
    name       TEXT NOT NULL,
    admin      INTEGER NOT NULL,
    PRIMARY KEY (group_id, peer_id)
);
CREATE INDEX group_members_peer ON group_members (peer_id);
CREATE TABLE group_people (
    group_id BLOB NOT NULL,
    peer_id  TEXT NOT NULL,
    name     TEXT NOT NULL,
    PRIMARY KEY (group_id, peer_id)
);
CREATE TABLE group_messages (
    group_id       BLOB NOT NULL,
    sender         TEXT NOT NULL,
    id             BLOB NOT NULL,
    seq            INTEGER NOT NULL,
    text           TEXT NOT NULL,
    sent_at_ms     INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    read_at_ms     INTEGER,
    PRIMARY KEY (group_id, sender, id)
);
CREATE TABLE group_pending (
    group_id       BLOB NOT NULL,
    sender         TEXT NOT NULL,
    id             BLOB NOT NULL,
    seq            INTEGER NOT NULL,
    text           TEXT NOT NULL,
    sent_at_ms     INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, sender, id)
);
CREATE TABLE group_copies (
    row_id   BLOB PRIMARY KEY,
    group_id BLOB NOT NULL,
    message  BLOB NOT NULL,
    member   TEXT NOT NULL
);
CREATE INDEX group_copies_message ON group_copies (group_id, message);
ALTER TABLE outbox ADD COLUMN group_body BLOB;
";

/// Version 9 (issue 15, phase 2): hybrid prekeys (X25519 + ML-KEM-768) with both secrets, keyed
/// by their format 4 key id (`envelope::prekey_id` of our mailbox address and the X25519
/// public key); the node's own secrets besides `identity.key` (the mailbox key); and per
/// contact the invite it was added from (so a conversation whose state is unreadable restarts
/// from it, never falling back to format 1) and the last re-key of the conversation, which
/// `kolokol contacts` shows.
const SCHEMA_V9: &str = "
CREATE TABLE hybrid_prekeys (
    key_id     BLOB PRIMARY KEY,
    x25519     BLOB NOT NULL,
    kem_seed   BLOB NOT NULL,
    prekey     BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
ALTER TABLE contacts ADD COLUMN invite TEXT;
ALTER TABLE contacts ADD COLUMN rekeyed_at_ms INTEGER;
ALTER TABLE contacts ADD COLUMN rekey_reason TEXT;
";

/// Version 10: what the node remembers of each address it dialed, per network (the racing
/// dialer's record of what works where), and the sealed envelopes of outbox items with the
/// ones the recipient acknowledged, so a retry sends the same bytes again and only what is
/// missing.
const SCHEMA_V10: &str = "
CREATE TABLE endpoints (
    network         BLOB NOT NULL,
    address         TEXT NOT NULL,
    peer_id         TEXT NOT NULL,
    successes       INTEGER NOT NULL,
    failures        INTEGER NOT NULL,
    last_success_ms INTEGER,
    last_failure_ms INTEGER,
    PRIMARY KEY (network, address)
);
CREATE TABLE outbox_parts (
    id           BLOB NOT NULL,
    idx          INTEGER NOT NULL,
    envelope     BLOB NOT NULL,
    sealed_at_ms INTEGER NOT NULL,
    acked_at_ms  INTEGER,
    PRIMARY KEY (id, idx)
);
";

/// Version 11: contact names are looked up regardless of case. `folded` is the name in lower
/// case (Unicode's full lower-casing, done by the store in Rust, since SQLite's `lower()` knows
/// only ASCII); rows of older versions get it when the store opens (`Store::fold_names`).
const SCHEMA_V11: &str = "
ALTER TABLE contacts ADD COLUMN folded TEXT NOT NULL DEFAULT '';
CREATE INDEX contacts_folded ON contacts (folded);
";

/// Version 12: conversations in the order they were written. Each text we send gets the next
/// number of our series for its recipient (`numbering`, one row per peer), and each numbered
/// text we receive keeps its sender's series and number; texts of older versions have none.
const SCHEMA_V12: &str = "
CREATE TABLE numbering (
    peer_id  TEXT PRIMARY KEY,
    series   INTEGER NOT NULL,
    next_seq INTEGER NOT NULL
);
ALTER TABLE outbox ADD COLUMN series INTEGER;
ALTER TABLE outbox ADD COLUMN seq INTEGER;
ALTER TABLE inbox ADD COLUMN series INTEGER;
ALTER TABLE inbox ADD COLUMN seq INTEGER;
CREATE INDEX inbox_peer ON inbox (peer_id, sent_at_ms);
CREATE INDEX outbox_peer ON outbox (peer_id, kind, created_at_ms);
";

/// Version 13: a contact can be marked verified (the safety numbers were compared), and
/// strangers can be blocked: their envelopes are taken and dropped.
const SCHEMA_V13: &str = "
ALTER TABLE contacts ADD COLUMN verified_at_ms INTEGER;
CREATE TABLE blocked (
    peer_id       TEXT PRIMARY KEY,
    blocked_at_ms INTEGER NOT NULL
);
";

/// Version 14: files. `file_sends` holds each file we send (its path, its offer, how many of its
/// chunks the recipient acknowledged, in order), `file_receives` each file we receive (its offer,
/// how far it got, where it was saved) and `file_chunks` which chunks of a file being received
/// are on disk (docs/PROTOCOL.md section 6.10).
const SCHEMA_V14: &str = "
CREATE TABLE file_sends (
    id              BLOB PRIMARY KEY,
    peer_id         TEXT NOT NULL,
    device_key      BLOB NOT NULL,
    path            TEXT NOT NULL,
    name            TEXT NOT NULL,
    size            INTEGER NOT NULL,
    sha256          BLOB NOT NULL,
    state           TEXT NOT NULL,
    detail          TEXT,
    offered         INTEGER NOT NULL,
    acked           INTEGER NOT NULL,
    chunks_sent     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL
);
CREATE INDEX file_sends_due ON file_sends (state, next_attempt_ms);
CREATE TABLE file_receives (
    peer_id       TEXT NOT NULL,
    id            BLOB NOT NULL,
    name          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        BLOB NOT NULL,
    state         TEXT NOT NULL,
    detail        TEXT,
    received      INTEGER NOT NULL,
    repeated      INTEGER NOT NULL,
    path          TEXT,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (peer_id, id)
);
CREATE TABLE file_chunks (
    peer_id TEXT NOT NULL,
    id      BLOB NOT NULL,
    idx     INTEGER NOT NULL,
    PRIMARY KEY (peer_id, id, idx)
);
";

/// Version 15: fewer pages written per message (each is a 4 KiB frame in the write-ahead log,
/// and the log's writes were a fifth of the sender's CPU per text).
/// - `outbox_due` holds only the items still to send: it was an index of every item ever sent
///   by state, so each state change moved an entry across it; the queries for due items name
///   the same states, so SQLite uses it as before.
/// - `message_states` is kept in the order of its key (the item's id and the state's number
///   for that item): one b-tree, where a table and an index on `id` were two written per
///   state. `n` numbers an item's states from 0 in the order they were entered.
const SCHEMA_V15: &str = "
DROP INDEX outbox_due;
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms) WHERE state IN ('queued', 'stored');
CREATE TABLE message_states_v15 (
    id     BLOB NOT NULL,
    n      INTEGER NOT NULL,
    state  TEXT NOT NULL,
    detail TEXT,
    at_ms  INTEGER NOT NULL,
    PRIMARY KEY (id, n)
) WITHOUT ROWID;
INSERT INTO message_states_v15 (id, n, state, detail, at_ms)
    SELECT id, ROW_NUMBER() OVER (PARTITION BY id ORDER BY rowid) - 1, state, detail, at_ms
    FROM message_states;
DROP TABLE message_states;
ALTER TABLE message_states_v15 RENAME TO message_states;
";
