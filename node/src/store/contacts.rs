//! The `contacts` table: the people the user added, with their device key and known addresses.

use libp2p::{Multiaddr, PeerId};
use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, Store, addresses_column, join_addresses, peer_column, peer_text};
use crate::error::{Error, Result};

/// A stored contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactRow {
    /// Local name.
    pub name: String,
    /// Their peer id.
    pub peer_id: PeerId,
    /// X25519 device key.
    pub device_key: [u8; 32],
    /// Known addresses.
    pub addresses: Vec<Multiaddr>,
    /// When added, Unix ms.
    pub added_at_ms: u64,
    /// The invite they were added from, without whitespace (none for contacts added before
    /// version 9 of the schema): a conversation whose state cannot be read restarts from it.
    pub invite: Option<String>,
    /// When the conversation was last re-keyed (Unix ms), and why, in the user's words.
    pub rekeyed: Option<(u64, String)>,
    /// When the user marked the contact verified (compared safety numbers), Unix ms; `None`
    /// while not verified.
    pub verified_at_ms: Option<u64>,
}

/// A contact name as it is looked up: lower case, so `Bob`, `bob` and `BOB` are one name.
/// The name is kept as typed for display.
pub(crate) fn fold_name(name: &str) -> String {
    name.to_lowercase()
}

/// The one of `rows` (each with its contact's name, all of one folded name) that `name` means:
/// the exact spelling wins over another contact's name in another case, and a name that only
/// differs in case from two contacts is an error rather than a guess. Contacts are few and
/// folded names rarely collide, so every row with the folded name is read and none is sorted.
fn named<T>(name: &str, rows: Vec<(String, T)>) -> Result<Option<T>> {
    let count = rows.len();
    let mut rows = rows.into_iter();
    match count {
        0 => Ok(None),
        1 => Ok(rows.next().map(|(_, row)| row)),
        _ => match rows.find(|(spelled, _)| spelled == name) {
            Some((_, row)) => Ok(Some(row)),
            None => Err(Error::ContactExists(format!(
                "two contacts are named {name:?} in different case; rename one (kolokol contacts rename)"
            ))),
        },
    }
}

/// The columns [`Store::contact_from_row`] reads, in its order.
const CONTACT_COLUMNS: &str = "name, peer_id, device_key, addresses, added_at_ms, invite, \
     rekeyed_at_ms, rekey_reason, verified_at_ms";

impl Store {
    /// Fills `folded` for contacts stored before names were looked up regardless of case.
    pub(super) fn fold_names(&self) -> Result<()> {
        let conn = self.conn();
        let names: Vec<String> = {
            let mut stmt = conn
                .prepare_cached("SELECT name FROM contacts WHERE folded = ''")
                .map_err(|e| self.err(e))?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
            rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))?
        };
        for name in names {
            conn.exec(
                "UPDATE contacts SET folded = ?2 WHERE name = ?1",
                params![name, fold_name(&name)],
            )
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Adds a contact; refuses a name that another contact has in any case, and a duplicate
    /// peer.
    pub fn add_contact(&self, c: &ContactRow) -> Result<()> {
        self.add_contact_with(c, None)
    }

    /// Adds a contact and, in the same transaction, the conversation state to start with,
    /// unless a conversation with that peer exists already (the peer wrote first, and its state
    /// holds the peer's receive key): a contact never ends up without one.
    pub fn add_contact_with(
        &self,
        c: &ContactRow,
        first: Option<&super::ConversationWrite<'_>>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let existing: Option<(String, String)> = tx
            .row(
                "SELECT name, peer_id FROM contacts WHERE folded = ?1 OR peer_id = ?2",
                params![fold_name(&c.name), peer_text(&c.peer_id)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some((name, _)) = existing {
            return Err(Error::ContactExists(if fold_name(&name) == fold_name(&c.name) {
                format!(
                    "a contact named {name:?} already exists (names ignore case; remove it or pick another)"
                )
            } else {
                format!("that peer is already your contact {name:?}")
            }));
        }
        tx.exec(
            "INSERT INTO contacts (name, peer_id, device_key, addresses, added_at_ms, invite,
                                   folded, verified_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                c.name,
                peer_text(&c.peer_id),
                c.device_key.as_slice(),
                join_addresses(&c.addresses),
                c.added_at_ms as i64,
                c.invite,
                fold_name(&c.name),
                c.verified_at_ms.map(|t| t as i64)
            ],
        )
        .map_err(|e| self.err(e))?;
        if let Some(first) = first {
            Self::write_first_conversation(&tx, first, c.added_at_ms).map_err(|e| self.err(e))?;
        }
        // A peer made a contact is no longer blocked.
        tx.exec("DELETE FROM blocked WHERE peer_id = ?1", [peer_text(&c.peer_id)])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn contact_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContactRow> {
        let key: Vec<u8> = r.get(2)?;
        Ok(ContactRow {
            name: r.get(0)?,
            peer_id: peer_column(r, 1)?,
            device_key: key.try_into().unwrap_or([0; 32]),
            addresses: addresses_column(r, 3)?,
            added_at_ms: r.get::<_, i64>(4)? as u64,
            invite: r.get(5)?,
            rekeyed: match (r.get::<_, Option<i64>>(6)?, r.get::<_, Option<String>>(7)?) {
                (Some(at), Some(reason)) => Some((at as u64, reason)),
                _ => None,
            },
            verified_at_ms: r.get::<_, Option<i64>>(8)?.map(|t| t as u64),
        })
    }

    /// Records that the conversation with this contact was re-keyed (nothing happens for a
    /// peer who is not a contact).
    pub fn set_rekeyed(&self, peer: &PeerId, at_ms: u64, reason: &str) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE contacts SET rekeyed_at_ms = ?2, rekey_reason = ?3 WHERE peer_id = ?1",
                params![peer_text(peer), at_ms as i64, reason],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The contact with this name, in any case. Two contacts whose names differ only in case
    /// (possible only in a database from before names ignored case) are an error that asks to
    /// rename one.
    pub fn contact(&self, name: &str) -> Result<Option<ContactRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE folded = ?1"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([fold_name(name)], Self::contact_from_row)
            .map_err(|e| self.err(e))?
            .map(|row| row.map(|c| (c.name.clone(), c)))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        named(name, rows)
    }

    /// The peer id and device key of the contact with this name, found as [`Store::contact`]
    /// finds it: all that sending a text needs, without reading the rest of the row (its
    /// addresses and invite are parsed for nothing on every `send` otherwise).
    pub fn recipient(&self, name: &str) -> Result<Option<(PeerId, [u8; 32])>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT name, peer_id, device_key FROM contacts WHERE folded = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([fold_name(name)], |r| {
                let key: Vec<u8> = r.get(2)?;
                Ok((r.get(0)?, (peer_column(r, 1)?, key.try_into().unwrap_or([0; 32]))))
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        named(name, rows)
    }

    /// The contact with this peer id.
    pub fn contact_by_peer(&self, peer: &PeerId) -> Result<Option<ContactRow>> {
        self.conn()
            .row(
                &format!("SELECT {CONTACT_COLUMNS} FROM contacts WHERE peer_id = ?1"),
                [peer_text(peer)],
                Self::contact_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The name of the contact with this peer id, if it is one. For the paths every message
    /// takes (is the sender a contact, what name goes in an event): it reads one column, where
    /// [`Store::contact_by_peer`] also parses the contact's peer id and every address it has.
    pub fn contact_name(&self, peer: &PeerId) -> Result<Option<String>> {
        self.conn()
            .row("SELECT name FROM contacts WHERE peer_id = ?1", [peer_text(peer)], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// All contacts, by name (regardless of case).
    pub fn contacts(&self) -> Result<Vec<ContactRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {CONTACT_COLUMNS} FROM contacts ORDER BY folded, name"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], Self::contact_from_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Removes a contact (named in any case); messages to and from them stay.
    pub fn remove_contact(&self, name: &str) -> Result<Option<ContactRow>> {
        let Some(c) = self.contact(name)? else { return Ok(None) };
        self.conn()
            .exec("DELETE FROM contacts WHERE peer_id = ?1", [peer_text(&c.peer_id)])
            .map_err(|e| self.err(e))?;
        Ok(Some(c))
    }

    /// Renames a contact (named in any case); refuses a new name that another contact has in
    /// any case. Returns the contact as renamed, or `None` if there is none named `name`.
    pub fn rename_contact(&self, name: &str, new_name: &str) -> Result<Option<ContactRow>> {
        let Some(c) = self.contact(name)? else { return Ok(None) };
        if let Some(other) = self.contact(new_name)?
            && other.peer_id != c.peer_id
        {
            return Err(Error::ContactExists(format!(
                "a contact named {:?} already exists (names ignore case)",
                other.name
            )));
        }
        self.conn()
            .exec(
                "UPDATE contacts SET name = ?2, folded = ?3 WHERE peer_id = ?1",
                params![peer_text(&c.peer_id), new_name, fold_name(new_name)],
            )
            .map_err(|e| self.err(e))?;
        Ok(Some(ContactRow { name: new_name.to_owned(), ..c }))
    }

    /// Marks a contact verified at `at_ms`, or not verified with `None`. Returns the contact.
    pub fn set_verified(&self, name: &str, at_ms: Option<u64>) -> Result<Option<ContactRow>> {
        let Some(c) = self.contact(name)? else { return Ok(None) };
        self.conn()
            .exec(
                "UPDATE contacts SET verified_at_ms = ?2 WHERE peer_id = ?1",
                params![peer_text(&c.peer_id), at_ms.map(|t| t as i64)],
            )
            .map_err(|e| self.err(e))?;
        Ok(Some(ContactRow { verified_at_ms: at_ms, ..c }))
    }

    /// Puts `new` (a new peer and key, not verified) in place of the contact named `name`, in
    /// one transaction; refuses a peer that is another contact already. Returns the replaced
    /// contact, or `None` if there is none named `name`.
    pub fn replace_contact(
        &self,
        name: &str,
        new: &ContactRow,
        first: &super::ConversationWrite<'_>,
    ) -> Result<Option<ContactRow>> {
        let Some(old) = self.contact(name)? else { return Ok(None) };
        if let Some(other) = self.contact_by_peer(&new.peer_id)?
            && other.peer_id != old.peer_id
        {
            return Err(Error::ContactExists(format!(
                "that peer is already your contact {:?}",
                other.name
            )));
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.exec("DELETE FROM contacts WHERE peer_id = ?1", [peer_text(&old.peer_id)])
            .map_err(|e| self.err(e))?;
        tx.exec(
            "INSERT INTO contacts (name, peer_id, device_key, addresses, added_at_ms, folded,
                                   invite, verified_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
            params![
                old.name,
                peer_text(&new.peer_id),
                new.device_key.as_slice(),
                join_addresses(&new.addresses),
                new.added_at_ms as i64,
                fold_name(&old.name),
                new.invite
            ],
        )
        .map_err(|e| self.err(e))?;
        tx.exec("DELETE FROM blocked WHERE peer_id = ?1", [peer_text(&new.peer_id)])
            .map_err(|e| self.err(e))?;
        Self::write_first_conversation(&tx, first, new.added_at_ms).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(Some(old))
    }

    /// Blocks a peer at `now_ms` and deletes the messages it sent; returns how many. The
    /// caller makes sure it is not a contact.
    pub fn block(&self, peer: &PeerId, now_ms: u64) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.exec(
            "INSERT INTO blocked (peer_id, blocked_at_ms) VALUES (?1, ?2)
             ON CONFLICT (peer_id) DO NOTHING",
            params![peer_text(peer), now_ms as i64],
        )
        .map_err(|e| self.err(e))?;
        let removed = tx
            .exec("DELETE FROM inbox WHERE peer_id = ?1", [peer_text(peer)])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(removed as u64)
    }

    /// Unblocks a peer; returns whether it was blocked.
    pub fn unblock(&self, peer: &PeerId) -> Result<bool> {
        let n = self
            .conn()
            .exec("DELETE FROM blocked WHERE peer_id = ?1", [peer_text(peer)])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Whether the peer is blocked.
    pub fn is_blocked(&self, peer: &PeerId) -> Result<bool> {
        self.conn()
            .row("SELECT COUNT(*) FROM blocked WHERE peer_id = ?1", [peer_text(peer)], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// The blocked peers, with when each was blocked, oldest first.
    pub fn blocked(&self) -> Result<Vec<(PeerId, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT peer_id, blocked_at_ms FROM blocked ORDER BY blocked_at_ms")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((peer_column(r, 0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Replaces a contact's known addresses (from a fresher presence record).
    pub fn set_contact_addresses(&self, peer: &PeerId, addresses: &[Multiaddr]) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE contacts SET addresses = ?2 WHERE peer_id = ?1",
                params![peer_text(peer), join_addresses(addresses)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
