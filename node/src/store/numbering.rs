//! The `numbering` table: our series and next number for each peer we write to, so that every
//! text we send knows its place in the conversation (docs/PROTOCOL.md section 6.9).

use libp2p::PeerId;
use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, Store, peer_text};
use crate::error::Result;

/// A text's place in its sender's conversation: the `seq`-th text of series `series`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Number {
    /// The sender's series for the conversation.
    pub series: u64,
    /// From 1, one more for each text.
    pub seq: u64,
}

impl Store {
    /// Takes the next number of our series for `peer`, beginning series `new_series` at 1 if
    /// there is none yet; within the caller's transaction.
    pub(super) fn next_number(
        tx: &rusqlite::Transaction<'_>,
        peer: &PeerId,
        new_series: u64,
    ) -> rusqlite::Result<Number> {
        let peer = peer_text(peer);
        let current: Option<(i64, i64)> = tx
            .row("SELECT series, next_seq FROM numbering WHERE peer_id = ?1", [&peer], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let (series, seq) = current.unwrap_or((new_series as i64, 1));
        tx.exec(
            "INSERT INTO numbering (peer_id, series, next_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (peer_id) DO UPDATE SET next_seq = excluded.next_seq",
            params![peer, series, seq + 1],
        )?;
        Ok(Number { series: series as u64, seq: seq as u64 })
    }

    /// The number the next text to `peer` will take, without taking it: series `new_series`
    /// at 1 if there is none yet. [`Store::enqueue_sealed`] takes it with the text.
    pub fn peek_number(&self, peer: &PeerId, new_series: u64) -> Result<Number> {
        let current: Option<(i64, i64)> = self
            .conn()
            .row(
                "SELECT series, next_seq FROM numbering WHERE peer_id = ?1",
                [peer_text(peer)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let (series, seq) = current.unwrap_or((new_series as i64, 1));
        Ok(Number { series: series as u64, seq: seq as u64 })
    }

    /// Records, within the caller's transaction, that `number` was given to a text to `peer`:
    /// the next one follows it.
    pub(super) fn take_number(
        tx: &rusqlite::Transaction<'_>,
        peer: &PeerId,
        number: Number,
    ) -> rusqlite::Result<()> {
        tx.exec(
            "INSERT INTO numbering (peer_id, series, next_seq) VALUES (?1, ?2, ?3)
             ON CONFLICT (peer_id) DO UPDATE SET series = excluded.series,
                                                 next_seq = excluded.next_seq",
            params![peer_text(peer), number.series as i64, number.seq as i64 + 1],
        )?;
        Ok(())
    }

    /// Forgets every series of ours, so the next text to each peer begins a new one. Called
    /// after a restore: the restored numbering may be behind texts already sent after the
    /// backup, and reusing their numbers would make the recipient take them for repeats.
    pub fn renumber_all(&self) -> Result<()> {
        self.conn().exec("DELETE FROM numbering", []).map_err(|e| self.err(e))?;
        Ok(())
    }
}
