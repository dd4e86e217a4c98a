//! The `mailbox_items` table: envelopes this node holds for others as a mailbox replica.

use libp2p::PeerId;
use rusqlite::params;

use super::{CachedStatements, Store};
use crate::error::Result;

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
    /// The depositing peer.
    pub depositor: PeerId,
    /// The sealed envelope.
    pub envelope: Vec<u8>,
    /// When the replica may drop it, Unix seconds.
    pub expires_at: u64,
}

/// A stored mailbox item: its id and envelope.
pub type MailboxItem = ([u8; 16], Vec<u8>);

/// An item another replica hands over: its id, its expiry (Unix seconds) and its envelope.
pub type HandedItem<'a> = ([u8; 16], u64, &'a [u8]);

/// A stored mailbox item as a replica hands it on: its position in the store (items are handed
/// in that order, and the position says how far a handover got), id, expiry and envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldItem {
    /// Its position in the store, increasing with each item stored.
    pub position: i64,
    /// The item id.
    pub item_id: [u8; 16],
    /// When the replica may drop it, Unix seconds.
    pub expires_at: u64,
    /// The sealed envelope.
    pub envelope: Vec<u8>,
}

impl Store {
    /// Stores a deposit for a mailbox's owner unless a quota is reached; returns `Ok(None)`
    /// when stored (or already stored under this id), `Ok(Some(reason))` when refused. Other
    /// items are never touched.
    pub fn mailbox_deposit(
        &self,
        d: &MailboxDeposit,
        quotas: &MailboxQuotas,
        now_ms: u64,
    ) -> Result<Option<String>> {
        let depositor = d.depositor.to_string();
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
                params![d.mailbox_id.as_slice(), depositor],
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
                depositor,
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

    /// Stores items another replica hands over for a mailbox, except those already held; the
    /// new ones are kept under `from`'s name. All or none: `Ok(Some(reason))` if the mailbox's
    /// or the replica's capacity would be passed (the per-depositor quota does not apply: the
    /// items come from many depositors). Nothing stored is touched.
    pub fn mailbox_take_over(
        &self,
        mailbox_id: &[u8; 32],
        items: &[HandedItem<'_>],
        from: &PeerId,
        quotas: &MailboxQuotas,
        now_ms: u64,
    ) -> Result<Option<String>> {
        let from = from.to_string();
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let mut new = Vec::new();
        for (item_id, expires_at, envelope) in items {
            let exists: i64 = tx
                .row(
                    "SELECT COUNT(*) FROM mailbox_items WHERE mailbox_id = ?1 AND item_id = ?2",
                    params![mailbox_id.as_slice(), item_id.as_slice()],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            if exists == 0 && !new.iter().any(|(id, _, _)| id == item_id) {
                new.push((*item_id, *expires_at, *envelope));
            }
        }
        let (held, bytes, total): (i64, i64, i64) = tx
            .row(
                "SELECT
                    (SELECT COUNT(*) FROM mailbox_items WHERE mailbox_id = ?1),
                    (SELECT COALESCE(SUM(LENGTH(envelope)), 0) FROM mailbox_items WHERE mailbox_id = ?1),
                    (SELECT COALESCE(SUM(LENGTH(envelope)), 0) FROM mailbox_items)",
                params![mailbox_id.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(|e| self.err(e))?;
        let len: u64 = new.iter().map(|(_, _, e)| e.len() as u64).sum();
        if held as u64 + new.len() as u64 > quotas.items_per_mailbox {
            return Ok(Some(format!("the mailbox is full ({} items)", quotas.items_per_mailbox)));
        }
        if bytes as u64 + len > quotas.bytes_per_mailbox {
            return Ok(Some(format!("the mailbox is full ({} bytes)", quotas.bytes_per_mailbox)));
        }
        if total as u64 + len > quotas.total_bytes {
            return Ok(Some("this replica holds all the mailbox data it will take".into()));
        }
        for (item_id, expires_at, envelope) in new {
            tx.exec(
                "INSERT INTO mailbox_items (mailbox_id, item_id, depositor, envelope, stored_at_ms, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    mailbox_id.as_slice(),
                    item_id.as_slice(),
                    from,
                    envelope,
                    now_ms as i64,
                    expires_at as i64
                ],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(None)
    }

    /// Up to `limit` of the mailbox ids this replica holds items for.
    pub fn mailbox_ids(&self, limit: usize) -> Result<Vec<[u8; 32]>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT mailbox_id FROM mailbox_items LIMIT ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(id.try_into().unwrap_or([0; 32]))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// The unexpired items of a mailbox stored after `after` (a position), in store order, at
    /// most `max_items` and `max_bytes` of envelopes (at least one item if any remain).
    pub fn mailbox_held_after(
        &self,
        mailbox_id: &[u8; 32],
        after: i64,
        now_secs: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<HeldItem>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT rowid, item_id, expires_at, envelope FROM mailbox_items
                 WHERE mailbox_id = ?1 AND rowid > ?2 AND expires_at >= ?3 ORDER BY rowid LIMIT ?4",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![mailbox_id.as_slice(), after, now_secs as i64, max_items as i64],
                |r| {
                    let id: Vec<u8> = r.get(1)?;
                    Ok(HeldItem {
                        position: r.get(0)?,
                        item_id: id.try_into().unwrap_or([0; 16]),
                        expires_at: r.get::<_, i64>(2)? as u64,
                        envelope: r.get(3)?,
                    })
                },
            )
            .map_err(|e| self.err(e))?;
        let mut items = Vec::new();
        let mut bytes = 0;
        for row in rows {
            let item = row.map_err(|e| self.err(e))?;
            if !items.is_empty() && bytes + item.envelope.len() > max_bytes {
                break;
            }
            bytes += item.envelope.len();
            items.push(item);
        }
        Ok(items)
    }

    /// The position of the newest item of a mailbox, or 0 if it holds none.
    pub fn mailbox_newest(&self, mailbox_id: &[u8; 32]) -> Result<i64> {
        self.conn()
            .row(
                "SELECT COALESCE(MAX(rowid), 0) FROM mailbox_items WHERE mailbox_id = ?1",
                [mailbox_id.as_slice()],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Deletes the items of a mailbox stored up to position `through`; returns how many.
    pub fn mailbox_delete_through(&self, mailbox_id: &[u8; 32], through: i64) -> Result<usize> {
        self.conn()
            .exec(
                "DELETE FROM mailbox_items WHERE mailbox_id = ?1 AND rowid <= ?2",
                params![mailbox_id.as_slice(), through],
            )
            .map_err(|e| self.err(e))
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
}
