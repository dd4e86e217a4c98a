//! The file tables: `file_sends` (files we send: where the file is, what the recipient
//! acknowledged), `file_receives` (files we receive: what the offer said, how far it got, where
//! it was saved) and `file_chunks` (which chunks of a file being received are on disk).
//!
//! A file we send is acknowledged chunk by chunk in order, so one number (`acked`, the chunks
//! the recipient holds) says where to go on after a drop or a restart of either side. A file we
//! receive may get its chunks in any order and more than once; `file_chunks` makes a repeat
//! change nothing, and counts it (`repeated`), which is how a test sees that only missing
//! chunks were sent again.

use libp2p::PeerId;
use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, Store, peer_text};
use crate::error::Result;

/// Files being received at once from one contact; an offer past it is answered busy, so one
/// contact cannot hold partial files without bound.
pub const MAX_PARTIAL_FILES_PER_PEER: u64 = 4;

/// Files being received at once from everyone together.
pub const MAX_PARTIAL_FILES: u64 = 16;

/// Offers from people who are not contacts that are kept for the user to see (they wait,
/// answered busy, until the sender is accepted as a contact); past it, further offers from
/// strangers are answered busy and not recorded.
pub const MAX_FILE_REQUESTS: u64 = 64;

/// A file we send, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSendRow {
    /// The transfer's id: the offer's content id.
    pub id: [u8; 16],
    /// The recipient.
    pub peer_id: PeerId,
    /// The recipient's device key, for first contacts.
    pub device_key: [u8; 32],
    /// The file on disk, absolute.
    pub path: String,
    /// The name the offer carries.
    pub name: String,
    /// The file's length in bytes.
    pub size: u64,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// `queued`, `delivered` or `failed`.
    pub state: String,
    /// Why the last attempt failed, or why it was given up.
    pub detail: Option<String>,
    /// Whether the recipient accepted the offer.
    pub offered: bool,
    /// Chunks the recipient acknowledged, all of them before the first one it lacks.
    pub acked: u32,
    /// Chunk deliveries made, repeats included.
    pub chunks_sent: u32,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the transfer was asked for, Unix ms.
    pub created_at_ms: u64,
    /// When its state last changed, Unix ms.
    pub updated_at_ms: u64,
}

/// A file we receive, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReceiveRow {
    /// The transfer's id.
    pub id: [u8; 16],
    /// The sender.
    pub peer_id: PeerId,
    /// The name the offer carried, as the sender gave it.
    pub name: String,
    /// The file's length in bytes.
    pub size: u64,
    /// Its SHA-256 as the offer said.
    pub sha256: [u8; 32],
    /// `request` (from someone not a contact, waiting), `receiving`, `received` or `failed`.
    pub state: String,
    /// Why it failed, or what it waits for.
    pub detail: Option<String>,
    /// Chunks on disk.
    pub received: u32,
    /// Chunks that arrived again once on disk.
    pub repeated: u32,
    /// Where it was saved, once received.
    pub path: Option<String>,
    /// When the offer arrived, Unix ms.
    pub created_at_ms: u64,
    /// When its state last changed, Unix ms.
    pub updated_at_ms: u64,
}

/// What became of one received chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum FileChunkOutcome {
    /// Recorded; this many chunks are now on disk.
    Kept(u32),
    /// It was on disk already; nothing changed but the count of repeats.
    Repeated,
}

const SEND_COLUMNS: &str = "id, peer_id, device_key, path, name, size, sha256, state, detail,
     offered, acked, chunks_sent, attempts, created_at_ms, updated_at_ms";

const RECEIVE_COLUMNS: &str = "id, peer_id, name, size, sha256, state, detail, received, repeated,
     path, created_at_ms, updated_at_ms";

fn send_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileSendRow> {
    Ok(FileSendRow {
        id: r.get(0)?,
        peer_id: super::peer_column(r, 1)?,
        device_key: r.get(2)?,
        path: r.get(3)?,
        name: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        sha256: r.get(6)?,
        state: r.get(7)?,
        detail: r.get(8)?,
        offered: r.get(9)?,
        acked: r.get(10)?,
        chunks_sent: r.get(11)?,
        attempts: r.get(12)?,
        created_at_ms: r.get::<_, i64>(13)? as u64,
        updated_at_ms: r.get::<_, i64>(14)? as u64,
    })
}

fn receive_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileReceiveRow> {
    Ok(FileReceiveRow {
        id: r.get(0)?,
        peer_id: super::peer_column(r, 1)?,
        name: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        sha256: r.get(4)?,
        state: r.get(5)?,
        detail: r.get(6)?,
        received: r.get(7)?,
        repeated: r.get(8)?,
        path: r.get(9)?,
        created_at_ms: r.get::<_, i64>(10)? as u64,
        updated_at_ms: r.get::<_, i64>(11)? as u64,
    })
}

impl Store {
    /// Records a file to send, due at once.
    pub fn add_file_send(&self, row: &FileSendRow) -> Result<()> {
        self.conn()
            .exec(
                "INSERT INTO file_sends (id, peer_id, device_key, path, name, size, sha256, state,
                    detail, offered, acked, chunks_sent, attempts, created_at_ms, updated_at_ms,
                    next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', NULL, 0, 0, 0, 0, ?8, ?8, ?8)",
                params![
                    row.id.as_slice(),
                    peer_text(&row.peer_id),
                    row.device_key.as_slice(),
                    row.path,
                    row.name,
                    row.size as i64,
                    row.sha256.as_slice(),
                    row.created_at_ms as i64
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// One file we send.
    pub fn file_send(&self, id: &[u8; 16]) -> Result<Option<FileSendRow>> {
        self.conn()
            .row(
                &format!("SELECT {SEND_COLUMNS} FROM file_sends WHERE id = ?1"),
                [id.as_slice()],
                send_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Queued files due at `now_ms`, oldest first, at most `limit`; each is claimed until
    /// `claim_until_ms` in the same transaction, so no pass takes one twice (the node makes
    /// every queued file due again when it starts).
    pub fn due_file_sends(
        &self,
        now_ms: u64,
        claim_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<FileSendRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let rows: Vec<FileSendRow> = {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {SEND_COLUMNS} FROM file_sends
                     WHERE state = 'queued' AND next_attempt_ms <= ?1
                     ORDER BY created_at_ms LIMIT ?2"
                ))
                .map_err(|e| self.err(e))?;
            stmt.query_map(params![now_ms as i64, limit as i64], send_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
                .map_err(|e| self.err(e))?
        };
        for row in &rows {
            tx.exec(
                "UPDATE file_sends SET next_attempt_ms = ?2 WHERE id = ?1",
                params![row.id.as_slice(), claim_until_ms as i64],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// How many files we send are not delivered yet (`queued`: offered, being sent, or waiting
    /// for the recipient to take them).
    pub fn files_waiting(&self) -> Result<u64> {
        self.conn()
            .row("SELECT COUNT(*) FROM file_sends WHERE state = 'queued'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// The earliest time a queued file is due, if any is.
    pub fn next_file_due(&self) -> Result<Option<u64>> {
        self.conn()
            .row("SELECT MIN(next_attempt_ms) FROM file_sends WHERE state = 'queued'", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| self.err(e))
    }

    /// Makes queued files due at `now_ms`: those to `peer`, or all.
    pub fn wake_file_sends(&self, peer: Option<&PeerId>, now_ms: u64) -> Result<usize> {
        self.conn()
            .exec(
                "UPDATE file_sends SET next_attempt_ms = ?2
                 WHERE state = 'queued' AND next_attempt_ms > ?2 AND (?1 IS NULL OR peer_id = ?1)",
                params![peer.map(|p| p.to_string()), now_ms as i64],
            )
            .map_err(|e| self.err(e))
    }

    /// Records that the recipient accepted the offer.
    pub fn file_offered(&self, id: &[u8; 16], now_ms: u64) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE file_sends SET offered = 1, updated_at_ms = ?2 WHERE id = ?1",
                params![id.as_slice(), now_ms as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records one chunk delivery: `acked` chunks are now held by the recipient; the attempt
    /// keeps its claim on the file until `claim_until_ms`.
    pub fn file_chunk_acked(
        &self,
        id: &[u8; 16],
        acked: u32,
        claim_until_ms: u64,
        now_ms: u64,
    ) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE file_sends SET acked = MAX(acked, ?2), chunks_sent = chunks_sent + 1,
                    next_attempt_ms = MAX(next_attempt_ms, ?3), detail = NULL, updated_at_ms = ?4
                 WHERE id = ?1",
                params![id.as_slice(), acked, claim_until_ms as i64, now_ms as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records a chunk delivery that failed (it was sent, perhaps received, not acknowledged).
    pub fn file_chunk_unacked(&self, id: &[u8; 16]) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE file_sends SET chunks_sent = chunks_sent + 1 WHERE id = ?1",
                [id.as_slice()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Ends a file we send: `delivered` or `failed`, with the reason.
    pub fn end_file_send(
        &self,
        id: &[u8; 16],
        state: &str,
        detail: Option<&str>,
        now_ms: u64,
    ) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE file_sends SET state = ?2, detail = ?3, updated_at_ms = ?4 WHERE id = ?1",
                params![id.as_slice(), state, detail, now_ms as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Schedules the next attempt of a file we send, with why this one failed.
    pub fn reschedule_file_send(
        &self,
        id: &[u8; 16],
        attempts: u32,
        at_ms: u64,
        detail: &str,
        now_ms: u64,
    ) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE file_sends SET attempts = ?2, next_attempt_ms = ?3, detail = ?4,
                    updated_at_ms = ?5 WHERE id = ?1 AND state = 'queued'",
                params![id.as_slice(), attempts, at_ms as i64, detail, now_ms as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Files we send, the newest first, at most `limit`.
    pub fn file_sends(&self, limit: u32) -> Result<Vec<FileSendRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {SEND_COLUMNS} FROM file_sends ORDER BY created_at_ms DESC LIMIT ?1"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([limit], send_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
            .map_err(|e| self.err(e))
    }

    /// One file we receive.
    pub fn file_receive(&self, peer: &PeerId, id: &[u8; 16]) -> Result<Option<FileReceiveRow>> {
        self.conn()
            .row(
                &format!(
                    "SELECT {RECEIVE_COLUMNS} FROM file_receives WHERE peer_id = ?1 AND id = ?2"
                ),
                params![peer_text(peer), id.as_slice()],
                receive_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records an offer in state `state` (`receiving`, or `request` from a stranger), unless
    /// one with its id from that peer is known; returns `false` without recording when the
    /// limits of partial files ([`MAX_PARTIAL_FILES_PER_PEER`], [`MAX_PARTIAL_FILES`]) or of
    /// requests ([`MAX_FILE_REQUESTS`]) are reached.
    pub fn add_file_receive(&self, row: &FileReceiveRow) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let peer_id = peer_text(&row.peer_id);
        let room = (|| {
            let (from_peer, from_all, requests): (u64, u64, u64) = tx.row(
                "SELECT COALESCE(SUM(state = 'receiving' AND peer_id = ?1), 0),
                        COALESCE(SUM(state = 'receiving'), 0),
                        COALESCE(SUM(state = 'request'), 0)
                 FROM file_receives",
                [&peer_id],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                },
            )?;
            let room = if row.state == "request" {
                requests < MAX_FILE_REQUESTS
            } else {
                from_peer < MAX_PARTIAL_FILES_PER_PEER && from_all < MAX_PARTIAL_FILES
            };
            if room {
                tx.exec(
                    "INSERT OR IGNORE INTO file_receives (peer_id, id, name, size, sha256, state,
                        detail, received, repeated, path, created_at_ms, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, NULL, ?8, ?8)",
                    params![
                        peer_id,
                        row.id.as_slice(),
                        row.name,
                        row.size as i64,
                        row.sha256.as_slice(),
                        row.state,
                        row.detail,
                        row.created_at_ms as i64
                    ],
                )?;
            }
            Ok(room)
        })()
        .map_err(|e: rusqlite::Error| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(room)
    }

    /// Moves a stranger's offer that waited to `receiving` (its sender is a contact now);
    /// `false` when the limits of partial files are reached.
    pub fn accept_file_request(&self, peer: &PeerId, id: &[u8; 16], now_ms: u64) -> Result<bool> {
        let peer_id = peer_text(peer);
        let conn = self.conn();
        let (from_peer, from_all): (u64, u64) = conn
            .row(
                "SELECT COALESCE(SUM(state = 'receiving' AND peer_id = ?1), 0),
                        COALESCE(SUM(state = 'receiving'), 0) FROM file_receives",
                [&peer_id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))?;
        if from_peer >= MAX_PARTIAL_FILES_PER_PEER || from_all >= MAX_PARTIAL_FILES {
            return Ok(false);
        }
        conn.exec(
            "UPDATE file_receives SET state = 'receiving', detail = NULL, updated_at_ms = ?3
             WHERE peer_id = ?1 AND id = ?2 AND state = 'request'",
            params![peer_id, id.as_slice(), now_ms as i64],
        )
        .map(drop)
        .map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Records chunk `index` of a file being received as on disk (the caller wrote it first),
    /// or counts a repeat.
    pub fn add_file_chunk(
        &self,
        peer: &PeerId,
        id: &[u8; 16],
        index: u32,
        now_ms: u64,
    ) -> Result<FileChunkOutcome> {
        let peer_id = peer_text(peer);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let outcome = (|| {
            let new = tx.exec(
                "INSERT OR IGNORE INTO file_chunks (peer_id, id, idx) VALUES (?1, ?2, ?3)",
                params![peer_id, id.as_slice(), index],
            )? == 1;
            if !new {
                tx.exec(
                    "UPDATE file_receives SET repeated = repeated + 1 WHERE peer_id = ?1 AND id = ?2",
                    params![peer_id, id.as_slice()],
                )?;
                return Ok(FileChunkOutcome::Repeated);
            }
            tx.exec(
                "UPDATE file_receives SET received = received + 1, updated_at_ms = ?3
                 WHERE peer_id = ?1 AND id = ?2",
                params![peer_id, id.as_slice(), now_ms as i64],
            )?;
            let received: u32 = tx.row(
                "SELECT received FROM file_receives WHERE peer_id = ?1 AND id = ?2",
                params![peer_id, id.as_slice()],
                |r| r.get(0),
            )?;
            Ok(FileChunkOutcome::Kept(received))
        })()
        .map_err(|e: rusqlite::Error| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(outcome)
    }

    /// Whether chunk `index` of a file being received is on disk.
    pub fn has_file_chunk(&self, peer: &PeerId, id: &[u8; 16], index: u32) -> Result<bool> {
        self.conn()
            .row(
                "SELECT 1 FROM file_chunks WHERE peer_id = ?1 AND id = ?2 AND idx = ?3",
                params![peer_text(peer), id.as_slice(), index],
                |_| Ok(()),
            )
            .optional()
            .map(|v| v.is_some())
            .map_err(|e| self.err(e))
    }

    /// Ends a file we receive (`received` with where it was saved, or `failed` with why) and
    /// forgets its chunk list.
    pub fn end_file_receive(
        &self,
        peer: &PeerId,
        id: &[u8; 16],
        state: &str,
        detail: Option<&str>,
        path: Option<&str>,
        now_ms: u64,
    ) -> Result<()> {
        let peer_id = peer_text(peer);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.exec(
            "UPDATE file_receives SET state = ?3, detail = ?4, path = ?5, updated_at_ms = ?6
             WHERE peer_id = ?1 AND id = ?2",
            params![peer_id, id.as_slice(), state, detail, path, now_ms as i64],
        )
        .map_err(|e| self.err(e))?;
        tx.exec(
            "DELETE FROM file_chunks WHERE peer_id = ?1 AND id = ?2",
            params![peer_id, id.as_slice()],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Sets the detail of a file being received (why a chunk could not be written).
    pub fn file_receive_detail(
        &self,
        peer: &PeerId,
        id: &[u8; 16],
        detail: Option<&str>,
    ) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE file_receives SET detail = ?3 WHERE peer_id = ?1 AND id = ?2",
                params![peer_text(peer), id.as_slice(), detail],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Files still arriving or waiting as requests that nothing happened to since `before_ms`:
    /// their senders gave up. At most `limit`.
    pub fn stale_file_receives(&self, before_ms: u64, limit: u32) -> Result<Vec<FileReceiveRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {RECEIVE_COLUMNS} FROM file_receives
                 WHERE state IN ('receiving', 'request') AND updated_at_ms < ?1 LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map(params![before_ms as i64, limit], receive_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
            .map_err(|e| self.err(e))
    }

    /// Files we receive, the newest first, at most `limit`.
    pub fn file_receives(&self, limit: u32) -> Result<Vec<FileReceiveRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {RECEIVE_COLUMNS} FROM file_receives ORDER BY created_at_ms DESC LIMIT ?1"
            ))
            .map_err(|e| self.err(e))?;
        stmt.query_map([limit], receive_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
            .map_err(|e| self.err(e))
    }
}
