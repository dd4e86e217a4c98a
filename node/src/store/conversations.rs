//! The `conversations` and `receive_keys` tables: each peer's end-to-end conversation state, and
//! the index from our receive-key ids to the peer each was given to.

use libp2p::PeerId;
use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, Store, peer_column, peer_text};
use crate::error::Result;

/// A conversation state to store: the peer's, its encoding (it holds secret keys), and its
/// receive-key ids when they changed (`None`: the index stays as it is).
#[derive(Clone, Copy, Debug)]
pub struct ConversationWrite<'a> {
    /// Whose conversation.
    pub peer: &'a PeerId,
    /// The encoded state.
    pub state: &'a [u8],
    /// Our receive-key ids in it, if they changed.
    pub key_ids: Option<&'a [[u8; 8]]>,
    /// Why the conversation was re-keyed, if it just was: recorded with the contact, on the
    /// history of every text waiting for the peer, whose next attempt becomes due at once (it
    /// is sealed again under the new keys).
    pub rekeyed: Option<&'a str>,
}

impl Store {
    /// The stored conversation state with `peer`, if any. The bytes hold secret keys: the
    /// caller wipes them (the buffer is `Zeroizing`).
    pub fn conversation(&self, peer: &PeerId) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>> {
        self.conn()
            .row("SELECT state FROM conversations WHERE peer_id = ?1", [peer_text(peer)], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .optional()
            .map(|v| v.map(zeroize::Zeroizing::new))
            .map_err(|e| self.err(e))
    }

    /// Replaces a conversation state and, when its key ids changed, the index of its
    /// receive-key ids, in one transaction: a key id never points at a state that does not hold
    /// its key.
    pub fn save_conversation(&self, write: &ConversationWrite<'_>, now_ms: u64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let erased = Self::write_conversation(&tx, write, now_ms).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        self.wrote_conversation(erased);
        Ok(())
    }

    /// After a transaction with a conversation write committed: if it deleted a receive key,
    /// the log's copies of it wait for the next checkpoint.
    pub(super) fn wrote_conversation(&self, erased: bool) {
        if erased {
            self.deleted_keys();
        }
    }

    /// Stores a conversation's first state, in its own transaction, unless the peer has one.
    pub fn save_first_conversation(
        &self,
        write: &ConversationWrite<'_>,
        now_ms: u64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        Self::write_first_conversation(&tx, write, now_ms).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Writes a conversation state inside the caller's transaction if there is none for the peer
    /// yet: a state that exists is newer than a fresh one.
    pub(super) fn write_first_conversation(
        tx: &rusqlite::Transaction<'_>,
        write: &ConversationWrite<'_>,
        now_ms: u64,
    ) -> rusqlite::Result<()> {
        let exists = tx
            .row("SELECT 1 FROM conversations WHERE peer_id = ?1", [peer_text(write.peer)], |_| {
                Ok(())
            })
            .optional()?
            .is_some();
        // A fresh state replaces no receive key, so nothing waits to be erased.
        if exists { Ok(()) } else { Self::write_conversation(tx, write, now_ms).map(drop) }
    }

    /// Writes a conversation state inside the caller's transaction, so it commits together with
    /// what was sealed or opened with it (an outbox row, an inbox row). Returns whether a
    /// receive key was deleted (an id left the index): the caller then calls
    /// [`Store::wrote_conversation`] once the transaction committed.
    pub(super) fn write_conversation(
        tx: &rusqlite::Transaction<'_>,
        write: &ConversationWrite<'_>,
        now_ms: u64,
    ) -> rusqlite::Result<bool> {
        let peer = peer_text(write.peer);
        tx.exec(
            "INSERT INTO conversations (peer_id, state, updated_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (peer_id) DO UPDATE SET state = excluded.state, updated_at_ms = excluded.updated_at_ms",
            params![peer, write.state, now_ms as i64],
        )?;
        if let Some(reason) = write.rekeyed {
            tx.exec(
                "UPDATE contacts SET rekeyed_at_ms = ?2, rekey_reason = ?3 WHERE peer_id = ?1",
                params![peer, now_ms as i64, reason],
            )?;
            tx.exec(
                "INSERT INTO message_states (id, n, state, detail, at_ms)
                 SELECT id,
                        (SELECT COALESCE(MAX(n) + 1, 0) FROM message_states m WHERE m.id = outbox.id),
                        state, ?2, ?3
                 FROM outbox
                 WHERE peer_id = ?1 AND kind = 'text' AND state IN ('queued', 'stored')",
                params![
                    peer,
                    format!("conversation re-keyed ({reason}): sealed again under new keys"),
                    now_ms as i64
                ],
            )?;
            tx.exec(
                "UPDATE outbox SET next_attempt_ms = ?2
                 WHERE peer_id = ?1 AND state IN ('queued', 'stored') AND next_attempt_ms > ?2",
                params![peer, now_ms as i64],
            )?;
        }
        let Some(key_ids) = write.key_ids else { return Ok(false) };
        let before: Vec<Vec<u8>> = {
            let mut stmt =
                tx.prepare_cached("SELECT key_id FROM receive_keys WHERE peer_id = ?1")?;
            stmt.query_map([&peer], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
        };
        let erased = before.iter().any(|old| !key_ids.iter().any(|id| id.as_slice() == old));
        tx.exec("DELETE FROM receive_keys WHERE peer_id = ?1", [&peer])?;
        for id in key_ids {
            tx.exec(
                "INSERT OR REPLACE INTO receive_keys (key_id, peer_id) VALUES (?1, ?2)",
                params![id.as_slice(), peer],
            )?;
        }
        Ok(erased)
    }

    /// The peer one of our receive keys was given to.
    pub fn peer_for_key(&self, key_id: &[u8; 8]) -> Result<Option<PeerId>> {
        self.conn()
            .row("SELECT peer_id FROM receive_keys WHERE key_id = ?1", [key_id.as_slice()], |r| {
                peer_column(r, 0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The ids of our receive keys given to `peer`.
    pub fn receive_key_ids(&self, peer: &PeerId) -> Result<Vec<[u8; 8]>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT key_id FROM receive_keys WHERE peer_id = ?1 ORDER BY key_id")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([peer_text(peer)], |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(id.try_into().unwrap_or([0; 8]))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Every peer we hold a conversation with.
    pub fn conversation_peers(&self) -> Result<Vec<PeerId>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT peer_id FROM conversations").map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| peer_column(r, 0)).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// How many conversations with peers who are neither contacts nor members of a group we
    /// know were active (stored) after `since_ms`.
    pub fn stranger_conversations(&self, since_ms: u64) -> Result<u64> {
        self.conn()
            .row(
                "SELECT COUNT(*) FROM conversations
                 WHERE updated_at_ms > ?1 AND peer_id NOT IN (SELECT peer_id FROM contacts)
                   AND peer_id NOT IN (SELECT peer_id FROM group_members)",
                [since_ms as i64],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
}
