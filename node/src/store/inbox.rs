//! The `inbox` table: received messages, each stored once per sender and id, with when the user
//! read it.

use libp2p::PeerId;
use rusqlite::{OptionalExtension, params};

use kolokol_protocol::message::MAX_READ_IDS;

use super::{
    CachedStatements, ConversationWrite, Number, OutboxBody, OutboxRow, Store, peer_column,
    peer_text,
};
use crate::error::Result;

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxRow {
    /// Message id.
    pub id: [u8; 16],
    /// The sender.
    pub peer_id: PeerId,
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
    /// Its place in the sender's conversation, if the sender numbered it.
    pub number: Option<Number>,
}

/// Someone there is a conversation with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatPeer {
    /// The peer.
    pub peer_id: PeerId,
    /// Its contact name, if it is a contact.
    pub contact: Option<String>,
    /// How many of its messages are unread.
    pub unread: u32,
    /// When the newest message either way arrived or was written, Unix ms; 0 for none.
    pub last_at_ms: u64,
}

impl Store {
    /// Stores a received message unless this sender already sent a message with this id, and
    /// queues `receipt` if given (even for a repeat: a repeat fetched from a mailbox means the
    /// sender may not know it arrived), and stores the conversation state the message was opened
    /// with, in one transaction; returns whether the message is new.
    pub fn receive(
        &self,
        row: &InboxRow,
        receipt: Option<&OutboxRow>,
        conversation: Option<&ConversationWrite<'_>>,
    ) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let erased = match conversation {
            Some(write) => {
                Self::write_conversation(&tx, write, row.received_at_ms).map_err(|e| self.err(e))?
            }
            None => false,
        };
        let inserted = tx
            .exec(
                "INSERT OR IGNORE INTO inbox (peer_id, id, text, sent_at_ms, received_at_ms,
                                              series, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    peer_text(&row.peer_id),
                    row.id.as_slice(),
                    row.text,
                    row.sent_at_ms as i64,
                    row.received_at_ms as i64,
                    row.number.map(|n| n.series as i64),
                    row.number.map(|n| n.seq as i64)
                ],
            )
            .map_err(|e| self.err(e))?;
        if let Some(receipt) = receipt {
            Self::insert_outbox(&tx, receipt, receipt.created_at_ms).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.wrote_conversation(erased);
        Ok(inserted == 1)
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
        let mut by_sender: Vec<(PeerId, Vec<[u8; 16]>)> = Vec::new();
        for id in ids {
            let senders: Vec<PeerId> = {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE inbox SET read_at_ms = ?2 WHERE id = ?1 AND read_at_ms IS NULL
                         RETURNING peer_id",
                    )
                    .map_err(|e| self.err(e))?;
                let rows = stmt
                    .query_map(params![id.as_slice(), now_ms as i64], |r| peer_column(r, 0))
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
                    .row(
                        "SELECT device_key FROM contacts WHERE peer_id = ?1",
                        [peer_text(&peer_id)],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| self.err(e))?;
                let Some(device_key) = device_key.and_then(|k| <[u8; 32]>::try_from(k).ok()) else {
                    continue;
                };
                for chunk in read.chunks(MAX_READ_IDS) {
                    let row = OutboxRow {
                        id: new_id(),
                        peer_id,
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

    /// How many messages received after `since_ms` came from `peer`, and from all senders
    /// who are not contacts.
    pub fn stranger_messages(&self, peer: &PeerId, since_ms: u64) -> Result<(u64, u64)> {
        self.conn()
            .row(
                "SELECT
                    (SELECT COUNT(*) FROM inbox WHERE peer_id = ?1 AND received_at_ms > ?2),
                    (SELECT COUNT(*) FROM inbox WHERE received_at_ms > ?2
                        AND peer_id NOT IN (SELECT peer_id FROM contacts))",
                params![peer_text(peer), since_ms as i64],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` received messages (by arrival), in the order their senders wrote
    /// them (by the sender's send time, then arrival), with the sender's contact name. Arrival
    /// order is not the order of writing: a sender that restarts with messages queued and in
    /// its recipient's mailbox delivers them in whatever order its retries and the mailbox
    /// fetch happen to take.
    pub fn inbox(&self, limit: u32) -> Result<Vec<InboxRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT * FROM (
                    SELECT i.id, i.peer_id, c.name, i.text, i.sent_at_ms, i.received_at_ms,
                           i.read_at_ms, i.series, i.seq, i.rowid AS r
                    FROM inbox i LEFT JOIN contacts c ON c.peer_id = i.peer_id
                    ORDER BY i.received_at_ms DESC, i.rowid DESC LIMIT ?1
                 ) ORDER BY sent_at_ms, received_at_ms, r",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([limit], inbox_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// The ids of received messages whose upper-case hex form starts with `prefix`, at most
    /// `limit` of them (an id two senders used counts once).
    pub fn incoming_ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<[u8; 16]>> {
        self.ids_with_prefix(
            "SELECT DISTINCT id FROM inbox WHERE hex(id) LIKE ?1 || '%' LIMIT ?2",
            prefix,
            limit,
        )
    }

    /// Runs a query of ids by hex prefix (`?1` the prefix, `?2` the limit).
    pub(super) fn ids_with_prefix(
        &self,
        sql: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<[u8; 16]>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![prefix, limit], |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(id.try_into().unwrap_or([0; 16]))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// The newest `limit` messages from `peer` by their send time, newest first.
    pub fn chat_incoming(&self, peer: &PeerId, limit: u32) -> Result<Vec<InboxRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT i.id, i.peer_id, c.name, i.text, i.sent_at_ms, i.received_at_ms,
                        i.read_at_ms, i.series, i.seq
                 FROM inbox i LEFT JOIN contacts c ON c.peer_id = i.peer_id
                 WHERE i.peer_id = ?1 ORDER BY i.sent_at_ms DESC, i.rowid DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows =
            stmt.query_map(params![peer_text(peer), limit], inbox_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// The number and receive time of every numbered message from `peer`: what the gaps in a
    /// conversation are found from.
    pub fn incoming_numbers(&self, peer: &PeerId) -> Result<Vec<(Number, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT series, seq, received_at_ms FROM inbox
                 WHERE peer_id = ?1 AND series IS NOT NULL AND seq IS NOT NULL",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([peer_text(peer)], |r| {
                Ok((
                    Number { series: r.get::<_, i64>(0)? as u64, seq: r.get::<_, i64>(1)? as u64 },
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Everyone there is a conversation with (a message either way, or a contact), at most
    /// `limit`, the most recent first.
    pub fn chat_peers(&self, limit: u32) -> Result<Vec<ChatPeer>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT p.peer_id, c.name,
                    (SELECT COUNT(*) FROM inbox i WHERE i.peer_id = p.peer_id AND i.read_at_ms IS NULL),
                    MAX(COALESCE((SELECT MAX(received_at_ms) FROM inbox i WHERE i.peer_id = p.peer_id), 0),
                        COALESCE((SELECT MAX(created_at_ms) FROM outbox o
                                  WHERE o.peer_id = p.peer_id AND o.kind = 'text'), 0)) AS last
                 FROM (SELECT peer_id FROM inbox UNION SELECT peer_id FROM outbox WHERE kind = 'text'
                       UNION SELECT peer_id FROM contacts) p
                 LEFT JOIN contacts c ON c.peer_id = p.peer_id
                 ORDER BY last DESC, c.folded LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok(ChatPeer {
                    peer_id: peer_column(r, 0)?,
                    contact: r.get(1)?,
                    unread: r.get::<_, i64>(2)? as u32,
                    last_at_ms: r.get::<_, i64>(3)? as u64,
                })
            })
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
}

/// Reads an inbox row from the columns `id, peer_id, name, text, sent_at_ms, received_at_ms,
/// read_at_ms, series, seq`.
pub(super) fn inbox_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InboxRow> {
    let id: Vec<u8> = r.get(0)?;
    Ok(InboxRow {
        id: id.try_into().unwrap_or([0; 16]),
        peer_id: peer_column(r, 1)?,
        contact: r.get(2)?,
        text: r.get(3)?,
        sent_at_ms: r.get::<_, i64>(4)? as u64,
        received_at_ms: r.get::<_, i64>(5)? as u64,
        read_at_ms: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
        number: match (r.get::<_, Option<i64>>(7)?, r.get::<_, Option<i64>>(8)?) {
            (Some(series), Some(seq)) => Some(Number { series: series as u64, seq: seq as u64 }),
            _ => None,
        },
    })
}
