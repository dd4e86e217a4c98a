//! The group tables: each group this node knows (`groups`), the signed changes it holds for it
//! (`group_ops`), the members those resolve to (`group_members`, rewritten whenever the changes
//! do), the texts written to it (`group_messages`), texts from writers not yet known to be
//! members (`group_pending`), and which outbox rows carry our group messages to which member
//! (`group_copies`). The store keeps rows; what the changes mean is `kolokol_protocol::group`'s
//! and the room `groups`'s to decide.

use kolokol_protocol::control::MessageState;
use libp2p::PeerId;
use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, ConversationWrite, OutboxRow, Store, peer_column, peer_text};
use crate::error::Result;

/// Groups a node keeps, whatever their status; an invitation past it is refused.
pub const MAX_GROUPS: u64 = 256;

/// Groups whose history is still arriving (status `pending`): an invitation from a stranger
/// is kept only while fewer than this many are incomplete, so nobody can fill the disk with
/// half-histories of groups that never complete.
pub const MAX_PENDING_GROUPS: u64 = 16;

/// Texts kept from writers whose membership is not known yet, per group; past it such a text
/// is answered "busy" and comes again later.
pub const MAX_PENDING_TEXTS: u64 = 256;

/// Where this node stands in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupStatus {
    /// Its history is arriving; it does not resolve to a group we are in yet.
    Pending,
    /// We are a member.
    Member,
    /// We left.
    Left,
    /// An admin removed us.
    Removed,
}

impl GroupStatus {
    /// The lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStatus::Pending => "pending",
            GroupStatus::Member => "member",
            GroupStatus::Left => "left",
            GroupStatus::Removed => "removed",
        }
    }

    fn parse(name: &str) -> Self {
        match name {
            "member" => GroupStatus::Member,
            "left" => GroupStatus::Left,
            "removed" => GroupStatus::Removed,
            _ => GroupStatus::Pending,
        }
    }
}

/// A group as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRow {
    /// The group id.
    pub id: [u8; 16],
    /// Its name, as its changes resolve.
    pub name: String,
    /// Where we stand in it.
    pub status: GroupStatus,
    /// Who brought us in (the sender of its first changes), or ourselves for a group we made.
    pub invited_by: PeerId,
    /// When we first heard of it, Unix ms.
    pub created_at_ms: u64,
    /// The number our next text to it gets.
    pub next_seq: u64,
}

/// A member as the resolved changes list them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMemberRow {
    /// Their peer id.
    pub peer_id: PeerId,
    /// Their X25519 device key, from the certificate in the change that added them.
    pub device_key: [u8; 32],
    /// The name the change lists them under.
    pub name: String,
    /// Whether they are an admin.
    pub admin: bool,
    /// Our contact name for them, if they are one of our contacts (filled by reads).
    pub contact: Option<String>,
}

/// A text written to a group, ours or a member's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTextRow {
    /// The group.
    pub group: [u8; 16],
    /// The writer.
    pub sender: PeerId,
    /// The text's id.
    pub id: [u8; 16],
    /// Its number among its writer's texts to the group.
    pub seq: u64,
    /// What it says.
    pub text: String,
    /// When its writer sent it, Unix ms by the writer's clock.
    pub sent_at_ms: u64,
    /// When this node stored it, Unix ms.
    pub received_at_ms: u64,
    /// When the user first read it (received texts only).
    pub read_at_ms: Option<u64>,
    /// How many texts its writer numbered between the previous one we hold and this one that
    /// we do not hold (filled by reads).
    pub missing_before: u64,
}

/// What a batch of changes did to a group, to store in one transaction.
#[derive(Clone, Debug)]
pub struct GroupUpdate<'a> {
    /// The group.
    pub group: [u8; 16],
    /// Changes to keep: id and encoding.
    pub new_ops: &'a [([u8; 32], Vec<u8>)],
    /// Its name now.
    pub name: &'a str,
    /// Where we stand now.
    pub status: GroupStatus,
    /// Its members now (replacing the stored list).
    pub members: &'a [GroupMemberRow],
    /// Who sent these changes, for a group not stored yet.
    pub invited_by: &'a PeerId,
}

impl Store {
    /// The group with this id.
    pub fn group(&self, id: &[u8; 16]) -> Result<Option<GroupRow>> {
        self.conn()
            .row(
                "SELECT group_id, name, status, invited_by, created_at_ms, next_seq FROM groups WHERE group_id = ?1",
                [id.as_slice()],
                group_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every group, the most recently active first.
    pub fn groups(&self) -> Result<Vec<GroupRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT group_id, name, status, invited_by, created_at_ms, next_seq FROM groups
                 ORDER BY updated_at_ms DESC, name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], group_from_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// How many groups are stored, and how many of them are pending.
    pub fn group_counts(&self) -> Result<(u64, u64)> {
        self.conn()
            .row("SELECT COUNT(*), COALESCE(SUM(status = 'pending'), 0) FROM groups", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.err(e))
    }

    /// The encodings of every change held for a group.
    pub fn group_ops(&self, group: &[u8; 16]) -> Result<Vec<Vec<u8>>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT op FROM group_ops WHERE group_id = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([group.as_slice()], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Stores what a batch of changes did to a group (creating its row if needed), and, in the
    /// same transaction, the receipt and conversation state of the envelope that brought them.
    /// Texts kept pending from writers who are members now become the group's texts; those
    /// are returned, to be announced.
    pub fn group_update(
        &self,
        update: &GroupUpdate<'_>,
        receipt: Option<&OutboxRow>,
        conversation: Option<&ConversationWrite<'_>>,
        now_ms: u64,
    ) -> Result<Vec<GroupTextRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let promoted = (|| {
            let g = update.group.as_slice();
            tx.exec(
                "INSERT INTO groups (group_id, name, status, invited_by, created_at_ms, next_seq, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?5)
                 ON CONFLICT (group_id) DO UPDATE SET name = excluded.name, status = excluded.status,
                     updated_at_ms = excluded.updated_at_ms",
                params![g, update.name, update.status.as_str(), update.invited_by.to_string(), now_ms as i64],
            )?;
            for (id, op) in update.new_ops {
                tx.exec(
                    "INSERT OR IGNORE INTO group_ops (group_id, op_id, op, received_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![g, id.as_slice(), op, now_ms as i64],
                )?;
            }
            tx.exec("DELETE FROM group_members WHERE group_id = ?1", [g])?;
            for m in update.members {
                tx.exec(
                    "INSERT INTO group_members (group_id, peer_id, device_key, name, admin)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![g, peer_text(&m.peer_id), m.device_key.as_slice(), m.name, m.admin],
                )?;
                tx.exec(
                    "INSERT INTO group_people (group_id, peer_id, name) VALUES (?1, ?2, ?3)
                     ON CONFLICT (group_id, peer_id) DO UPDATE SET name = excluded.name",
                    params![g, peer_text(&m.peer_id), m.name],
                )?;
            }
            let promoted: Vec<GroupTextRow> = {
                let mut stmt = tx.prepare_cached(
                    "DELETE FROM group_pending WHERE group_id = ?1
                       AND sender IN (SELECT peer_id FROM group_members WHERE group_id = ?1)
                     RETURNING group_id, sender, id, seq, text, sent_at_ms, received_at_ms",
                )?;
                let rows = stmt.query_map([g], text_from_row)?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for text in &promoted {
                Self::insert_group_text(&tx, text)?;
            }
            if let Some(receipt) = receipt {
                Self::insert_outbox(&tx, receipt, receipt.created_at_ms)?;
            }
            if let Some(write) = conversation {
                Self::write_conversation(&tx, write, now_ms)?;
            }
            Ok(promoted)
        })()
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        // A conversation write may have deleted a receive key; the log's copy goes at the next
        // checkpoint (erasing once too often costs a checkpoint, never a key).
        self.wrote_conversation(conversation.is_some());
        Ok(promoted)
    }

    /// Stores a text written to a group (a member's, or ours) unless its writer already wrote
    /// one with this id, or keeps it pending while its writer's membership is not known, with
    /// the receipt and conversation state of the envelope that brought it, in one transaction.
    /// Returns whether it is new. A pending text is refused (`Ok(None)`) past
    /// [`MAX_PENDING_TEXTS`].
    pub fn group_text(
        &self,
        text: &GroupTextRow,
        pending: bool,
        receipt: Option<&OutboxRow>,
        conversation: Option<&ConversationWrite<'_>>,
    ) -> Result<Option<bool>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let new = (|| {
            let new = if pending {
                let held: i64 = tx.row(
                    "SELECT COUNT(*) FROM group_pending WHERE group_id = ?1",
                    [text.group.as_slice()],
                    |r| r.get(0),
                )?;
                if held as u64 >= MAX_PENDING_TEXTS {
                    return Ok(None);
                }
                tx.exec(
                    "INSERT OR IGNORE INTO group_pending (group_id, sender, id, seq, text, sent_at_ms, received_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        text.group.as_slice(),
                        text.sender.to_string(),
                        text.id.as_slice(),
                        text.seq as i64,
                        text.text,
                        text.sent_at_ms as i64,
                        text.received_at_ms as i64
                    ],
                )? == 1
            } else {
                Self::insert_group_text(&tx, text)?
            };
            if let Some(receipt) = receipt {
                Self::insert_outbox(&tx, receipt, receipt.created_at_ms)?;
            }
            if let Some(write) = conversation {
                Self::write_conversation(&tx, write, text.received_at_ms)?;
            }
            Ok(Some(new))
        })()
        .map_err(|e| self.err(e))?;
        if new.is_some() {
            tx.commit().map_err(|e| self.err(e))?;
            self.wrote_conversation(conversation.is_some());
        }
        Ok(new)
    }

    fn insert_group_text(
        tx: &rusqlite::Transaction<'_>,
        text: &GroupTextRow,
    ) -> rusqlite::Result<bool> {
        let g = text.group.as_slice();
        let new = tx.exec(
            "INSERT OR IGNORE INTO group_messages (group_id, sender, id, seq, text, sent_at_ms, received_at_ms, read_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                g,
                text.sender.to_string(),
                text.id.as_slice(),
                text.seq as i64,
                text.text,
                text.sent_at_ms as i64,
                text.received_at_ms as i64,
                text.read_at_ms.map(|t| t as i64)
            ],
        )? == 1;
        if new {
            tx.exec(
                "UPDATE groups SET updated_at_ms = MAX(updated_at_ms, ?2) WHERE group_id = ?1",
                params![g, text.received_at_ms as i64],
            )?;
        }
        Ok(new)
    }

    /// Stores only the receipt and conversation state of an envelope whose group message asks
    /// for nothing to be kept (a request, changes already held).
    pub fn group_ack(
        &self,
        receipt: Option<&OutboxRow>,
        conversation: Option<&ConversationWrite<'_>>,
        now_ms: u64,
    ) -> Result<()> {
        if receipt.is_none() && conversation.is_none() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        if let Some(receipt) = receipt {
            Self::insert_outbox(&tx, receipt, receipt.created_at_ms).map_err(|e| self.err(e))?;
        }
        let erased = match conversation {
            Some(write) => Self::write_conversation(&tx, write, now_ms).map_err(|e| self.err(e))?,
            None => false,
        };
        tx.commit().map_err(|e| self.err(e))?;
        self.wrote_conversation(erased);
        Ok(())
    }

    /// Our own text to a group and its copies for each member, in one transaction: the text
    /// (numbered `text.seq`, which the caller took from [`GroupRow::next_seq`] under its lock)
    /// is stored, the group's next number moves past it, and each copy goes into the outbox,
    /// claimed until `claim_until_ms` (the caller makes their first attempts).
    pub fn group_send(
        &self,
        text: &GroupTextRow,
        copies: &[OutboxRow],
        claim_until_ms: u64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        (|| {
            tx.exec(
                "UPDATE groups SET next_seq = MAX(next_seq, ?2 + 1) WHERE group_id = ?1",
                params![text.group.as_slice(), text.seq as i64],
            )?;
            Self::insert_group_text(&tx, text)?;
            Self::insert_copies(&tx, &text.group, copies, &text.id, claim_until_ms)
        })()
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Puts copies of a group message that is not a text (changes, a request) in the outbox,
    /// due at `next_attempt_ms`.
    pub fn group_enqueue(
        &self,
        group: &[u8; 16],
        copies: &[OutboxRow],
        next_attempt_ms: u64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        Self::insert_copies(&tx, group, copies, &[0; 16], next_attempt_ms)
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn insert_copies(
        tx: &rusqlite::Transaction<'_>,
        group: &[u8; 16],
        copies: &[OutboxRow],
        message: &[u8; 16],
        next_attempt_ms: u64,
    ) -> rusqlite::Result<()> {
        for copy in copies {
            Self::insert_outbox(tx, copy, next_attempt_ms)?;
            tx.exec(
                "INSERT INTO group_copies (row_id, group_id, message, member) VALUES (?1, ?2, ?3, ?4)",
                params![copy.id.as_slice(), group.as_slice(), message.as_slice(), peer_text(&copy.peer_id)],
            )?;
        }
        Ok(())
    }

    /// The group and group text an outbox row is a copy of, if it is a copy; the text is all
    /// zeros for the copies of changes and requests, which are plumbing.
    pub fn group_copy(&self, row: &[u8; 16]) -> Result<Option<([u8; 16], [u8; 16])>> {
        self.conn()
            .row(
                "SELECT group_id, message FROM group_copies WHERE row_id = ?1",
                [row.as_slice()],
                |r| Ok((blob16(r, 0)?, blob16(r, 1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Where each copy of one of our group texts is: each member and the state of their copy.
    pub fn group_copy_states(
        &self,
        group: &[u8; 16],
        message: &[u8; 16],
    ) -> Result<Vec<(PeerId, MessageState)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT c.member, o.state FROM group_copies c JOIN outbox o ON o.id = c.row_id
                 WHERE c.group_id = ?1 AND c.message = ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![group.as_slice(), message.as_slice()], |r| {
                let state: String = r.get(1)?;
                Ok((
                    peer_column(r, 0)?,
                    MessageState::parse(&state).unwrap_or(MessageState::Queued),
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// A group's members as last resolved, with our contact name for each who is a contact.
    pub fn group_members(&self, group: &[u8; 16]) -> Result<Vec<GroupMemberRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT m.peer_id, m.device_key, m.name, m.admin, c.name FROM group_members m
                 LEFT JOIN contacts c ON c.peer_id = m.peer_id WHERE m.group_id = ?1
                 ORDER BY m.admin DESC, COALESCE(c.name, m.name), m.peer_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([group.as_slice()], |r| {
                let key: Vec<u8> = r.get(1)?;
                Ok(GroupMemberRow {
                    peer_id: peer_column(r, 0)?,
                    device_key: key.try_into().unwrap_or([0; 32]),
                    name: r.get(2)?,
                    admin: r.get(3)?,
                    contact: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// The name each person was last listed under in a group, members gone included.
    pub fn group_people(&self, group: &[u8; 16]) -> Result<Vec<(PeerId, String)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT peer_id, name FROM group_people WHERE group_id = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([group.as_slice()], |r| Ok((peer_column(r, 0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Whether the peer is a member of any group we know: such a peer is no stranger.
    pub fn is_group_member(&self, peer: &PeerId) -> Result<bool> {
        self.conn()
            .row(
                "SELECT EXISTS (SELECT 1 FROM group_members WHERE peer_id = ?1)",
                [peer_text(peer)],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` texts of a group, in the order they were written: each writer's in
    /// their own numbering, and writers interleaved by the time they say they wrote (never
    /// earlier than a text they numbered before), with the gaps in each writer's numbering.
    /// `me` is our own peer id: see `texts_query` for where a gap is counted from.
    pub fn group_texts(
        &self,
        group: &[u8; 16],
        limit: u32,
        me: &PeerId,
    ) -> Result<Vec<GroupTextRow>> {
        self.texts_query("WHERE group_id = ?1", params![group.as_slice(), limit, peer_text(me)])
    }

    /// The newest `limit` texts of every group we are in, oldest first, for the inbox.
    pub fn group_inbox(&self, limit: u32, me: &PeerId) -> Result<Vec<GroupTextRow>> {
        self.texts_query("WHERE received_at_ms >= ?1", params![0, limit, peer_text(me)])
    }

    /// `args` are the filter's `?1`, the limit (`?2`) and our peer id (`?3`).
    fn texts_query(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<GroupTextRow>> {
        let conn = self.conn();
        // `shown_at` is the running largest send time of each writer's texts in their own
        // order, so sorting by it never puts a writer's text before one they numbered earlier.
        // A gap is counted from a writer's number 1 only in a group we created: every other
        // member was invited, and a writer who was there before them wrote their first texts
        // to members they did not include; those are not missing, they were never theirs
        // (PROTOCOL 14: a new member gets none of the group's earlier texts). So in a group we
        // were invited to, a gap counts from the first text of each writer that we have. A
        // writer who joined after us and whose first texts were lost shows no gap before the
        // first we got: rarer, and they still arrive from the mailboxes.
        let sql = format!(
            "SELECT group_id, sender, id, seq, text, sent_at_ms, received_at_ms, read_at_ms, gap FROM (
                SELECT *, MAX(sent_at_ms) OVER w AS shown_at,
                       seq - COALESCE(LAG(seq) OVER w, CASE
                           WHEN (SELECT g.invited_by FROM groups g WHERE g.group_id = group_messages.group_id) = ?3
                           THEN 0 ELSE seq - 1 END) - 1 AS gap
                FROM group_messages {filter}
                WINDOW w AS (PARTITION BY group_id, sender ORDER BY seq ROWS UNBOUNDED PRECEDING)
                ORDER BY shown_at DESC, sender DESC, seq DESC LIMIT ?2
             ) ORDER BY shown_at, sender, seq"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(args, |r| {
                let mut text = text_from_row(r)?;
                text.read_at_ms = r.get::<_, Option<i64>>(7)?.map(|t| t as u64);
                text.missing_before = r.get::<_, i64>(8)?.max(0) as u64;
                Ok(text)
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// How many texts of a group from others are unread, and the newest text's time.
    pub fn group_unread(&self, group: &[u8; 16], me: &PeerId) -> Result<(u64, Option<u64>)> {
        self.conn()
            .row(
                "SELECT COALESCE(SUM(read_at_ms IS NULL AND sender != ?2), 0), MAX(sent_at_ms)
                 FROM group_messages WHERE group_id = ?1",
                params![group.as_slice(), me.to_string()],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Option<i64>>(1)?.map(|t| t as u64))),
            )
            .map_err(|e| self.err(e))
    }

    /// Marks every unread text of a group read; returns how many were unread. Group texts get
    /// no read receipts: who read what in a group is nobody else's business.
    pub fn group_mark_read(&self, group: &[u8; 16], now_ms: u64) -> Result<u64> {
        self.conn()
            .exec(
                "UPDATE group_messages SET read_at_ms = ?2 WHERE group_id = ?1 AND read_at_ms IS NULL",
                params![group.as_slice(), now_ms as i64],
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
}

fn blob16(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<[u8; 16]> {
    let bytes: Vec<u8> = r.get(idx)?;
    bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Blob,
            "an id column that is not 16 bytes".into(),
        )
    })
}

fn group_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GroupRow> {
    let status: String = r.get(2)?;
    Ok(GroupRow {
        id: blob16(r, 0)?,
        name: r.get(1)?,
        status: GroupStatus::parse(&status),
        invited_by: peer_column(r, 3)?,
        created_at_ms: r.get::<_, i64>(4)? as u64,
        next_seq: r.get::<_, i64>(5)? as u64,
    })
}

fn text_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GroupTextRow> {
    Ok(GroupTextRow {
        group: blob16(r, 0)?,
        sender: peer_column(r, 1)?,
        id: blob16(r, 2)?,
        seq: r.get::<_, i64>(3)? as u64,
        text: r.get(4)?,
        sent_at_ms: r.get::<_, i64>(5)? as u64,
        received_at_ms: r.get::<_, i64>(6)? as u64,
        read_at_ms: None,
        missing_before: 0,
    })
}
