//! The `chunks` table: chunks of long messages kept until the whole message has arrived.

use libp2p::PeerId;
use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, Store, peer_text};
use crate::error::Result;

/// Messages whose chunks are still arriving, from one contact (only contacts may send chunks);
/// a chunk of a further message is answered "busy" until one completes or expires, so no
/// contact can fill the disk with halves.
pub const MAX_PARTIAL_MESSAGES_PER_PEER: u64 = 16;

/// Messages whose chunks are still arriving, from all contacts together (at most 64 MiB).
pub const MAX_PARTIAL_MESSAGES: u64 = 64;

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

impl Store {
    /// Keeps one received chunk of the message `id` from `peer` (a repeat changes nothing)
    /// and says whether the message is now complete. A chunk of a message not yet started is
    /// refused with [`ChunkOutcome::Full`] past [`MAX_PARTIAL_MESSAGES_PER_PEER`] or
    /// [`MAX_PARTIAL_MESSAGES`].
    #[allow(clippy::too_many_arguments)]
    pub fn add_chunk(
        &self,
        peer: &PeerId,
        id: &[u8; 16],
        index: u32,
        count: u32,
        body_len: u32,
        sent_at_ms: u64,
        data: &[u8],
        now_ms: u64,
    ) -> Result<ChunkOutcome> {
        let peer_id = peer_text(peer);
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
                        [&peer_id],
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
    pub fn delete_chunks(&self, peer: &PeerId, id: &[u8; 16]) -> Result<()> {
        self.conn()
            .exec(
                "DELETE FROM chunks WHERE peer_id = ?1 AND id = ?2",
                params![peer_text(peer), id.as_slice()],
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
}
