//! The `outbox_parts` table: the sealed envelopes of an outbox item (one, or one per chunk of a
//! long message), kept from the attempt that sealed them until the item is done, with the time
//! the recipient acknowledged each.
//!
//! This is what lets a retry send the same bytes again instead of sealing anew (the receiver
//! accepts a byte-identical envelope again, `docs/PROTOCOL.md` section 8.7, so retries burn no
//! receive keys) and send only the parts the recipient lacks. It knows nothing of what a part
//! carries: a chunk of a message, or any other sealed envelope that belongs to an item with an
//! id (`docs/ARCHITECTURE.md`, "Parts").

use rusqlite::params;

use super::{CachedStatements, ConversationWrite, Store};
use crate::error::Result;

/// One sealed envelope of an outbox item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedPart {
    /// Its place in the item, from 0.
    pub index: u32,
    /// The envelope, as sent.
    pub envelope: Vec<u8>,
    /// When it was sealed, Unix ms.
    pub sealed_at_ms: u64,
    /// Whether the recipient's node acknowledged it.
    pub acked: bool,
}

/// Relaxes the connection's secure delete from `ON` to `FAST` while it lives, for deleting
/// sealed parts: `ON` also overwrites every page a deletion frees with zeros, and a sealed text
/// (4 KiB or more, `envelope::TEXT_BUCKET`) spills into an overflow page that its
/// acknowledgement frees, one more page for the log on each text (about a twentieth of a
/// text's CPU one in flight, docs/BENCHMARKS.md). Nothing in a freed part needs erasing: it is
/// an envelope sealed to the recipient's key with an ephemeral key we no longer have, so the
/// device's keys cannot open it, and its text stays in the outbox anyway. `FAST` still zeroes
/// the deleted cells on the pages it writes. Dropping it sets `ON` again, before anything
/// else uses the connection, so every other deletion (secrets, receive keys, conversation
/// states) zeroes freed pages as before.
pub(super) struct PartsDeletion<'c> {
    conn: &'c rusqlite::Connection,
}

impl<'c> PartsDeletion<'c> {
    pub(super) fn begin(conn: &'c rusqlite::Connection) -> rusqlite::Result<Self> {
        // Not a cached statement: SQLite applies this pragma when it prepares it.
        conn.pragma_update(None, "secure_delete", "FAST")?;
        Ok(Self { conn })
    }
}

impl Drop for PartsDeletion<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.conn.pragma_update(None, "secure_delete", "ON") {
            tracing::error!(%e, "cannot set the store's secure delete back on");
        }
    }
}

impl Store {
    /// Stores sealed parts of item `id` (replacing any unacknowledged part of the same index),
    /// with the conversation state they were sealed with, in one transaction: the state that
    /// advertised a key is stored before the envelope that carries it can be sent.
    pub fn put_parts(
        &self,
        id: &[u8; 16],
        parts: &[(u32, Vec<u8>)],
        conversation: Option<&ConversationWrite<'_>>,
        now_ms: u64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        Self::insert_parts(&tx, id, parts, now_ms).map_err(|e| self.err(e))?;
        let erased = match conversation {
            Some(write) => Self::write_conversation(&tx, write, now_ms).map_err(|e| self.err(e))?,
            None => false,
        };
        tx.commit().map_err(|e| self.err(e))?;
        self.wrote_conversation(erased);
        Ok(())
    }

    pub(super) fn insert_parts(
        tx: &rusqlite::Transaction<'_>,
        id: &[u8; 16],
        parts: &[(u32, Vec<u8>)],
        now_ms: u64,
    ) -> rusqlite::Result<()> {
        for (index, envelope) in parts {
            tx.exec(
                "INSERT INTO outbox_parts (id, idx, envelope, sealed_at_ms, acked_at_ms)
                 VALUES (?1, ?2, ?3, ?4, NULL)
                 ON CONFLICT (id, idx) DO UPDATE SET envelope = excluded.envelope,
                    sealed_at_ms = excluded.sealed_at_ms
                 WHERE outbox_parts.acked_at_ms IS NULL",
                params![id.as_slice(), index, envelope, now_ms as i64],
            )?;
        }
        Ok(())
    }

    /// Every stored part of item `id`, in index order.
    pub fn parts(&self, id: &[u8; 16]) -> Result<Vec<SealedPart>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT idx, envelope, sealed_at_ms, acked_at_ms IS NOT NULL FROM outbox_parts
                 WHERE id = ?1 ORDER BY idx",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([id.as_slice()], |r| {
                Ok(SealedPart {
                    index: r.get(0)?,
                    envelope: r.get(1)?,
                    sealed_at_ms: r.get::<_, i64>(2)? as u64,
                    acked: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Records that the recipient acknowledged part `index` of item `id`.
    pub fn ack_part(&self, id: &[u8; 16], index: u32, now_ms: u64) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE outbox_parts SET acked_at_ms = ?3
                 WHERE id = ?1 AND idx = ?2 AND acked_at_ms IS NULL",
                params![id.as_slice(), index, now_ms as i64],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Forgets the parts of item `id` the recipient has not acknowledged, so the next attempt
    /// seals them anew (the recipient no longer takes them); returns how many went.
    pub fn drop_unacked_parts(&self, id: &[u8; 16]) -> Result<usize> {
        self.conn()
            .exec("DELETE FROM outbox_parts WHERE id = ?1 AND acked_at_ms IS NULL", [id.as_slice()])
            .map_err(|e| self.err(e))
    }

    /// Forgets every part of item `id`: it is delivered, or given up.
    pub fn drop_parts(&self, id: &[u8; 16]) -> Result<()> {
        self.conn()
            .exec("DELETE FROM outbox_parts WHERE id = ?1", [id.as_slice()])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Forgets the parts of items that are no longer waiting (a node stopped between an
    /// item's end and the deletion of its parts); returns how many went.
    pub fn purge_parts(&self) -> Result<usize> {
        self.conn()
            .exec(
                "DELETE FROM outbox_parts WHERE id NOT IN
                 (SELECT id FROM outbox WHERE state IN ('queued', 'stored'))",
                [],
            )
            .map_err(|e| self.err(e))
    }
}
