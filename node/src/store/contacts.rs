//! The `contacts` table: the people the user added, with their device key and known addresses.

use libp2p::{Multiaddr, PeerId};
use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, Store, addresses_column, join_addresses, peer_column};
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
}

/// A contact name as it is looked up: lower case, so `Bob`, `bob` and `BOB` are one name.
/// The name is kept as typed for display.
pub(crate) fn fold_name(name: &str) -> String {
    name.to_lowercase()
}

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
        let conn = self.conn();
        let existing: Option<(String, String)> = conn
            .row(
                "SELECT name, peer_id FROM contacts WHERE folded = ?1 OR peer_id = ?2",
                params![fold_name(&c.name), c.peer_id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some((name, peer)) = existing {
            return Err(Error::ContactExists(if peer != c.peer_id.to_string() {
                format!(
                    "a contact named {name:?} already exists (names ignore case; remove it or pick another)"
                )
            } else {
                format!("that peer is already your contact {name:?}")
            }));
        }
        conn.exec(
            "INSERT INTO contacts (name, peer_id, device_key, addresses, added_at_ms, folded)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                c.name,
                c.peer_id.to_string(),
                c.device_key.as_slice(),
                join_addresses(&c.addresses),
                c.added_at_ms as i64,
                fold_name(&c.name)
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn contact_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ContactRow> {
        let key: Vec<u8> = r.get(2)?;
        Ok(ContactRow {
            name: r.get(0)?,
            peer_id: peer_column(r, 1)?,
            device_key: key.try_into().unwrap_or([0; 32]),
            addresses: addresses_column(r, 3)?,
            added_at_ms: r.get::<_, i64>(4)? as u64,
        })
    }

    /// The contact with this name, in any case. Two contacts whose names differ only in case
    /// (possible only in a database from before names ignored case) are an error that asks to
    /// rename one.
    pub fn contact(&self, name: &str) -> Result<Option<ContactRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, peer_id, device_key, addresses, added_at_ms FROM contacts
                 WHERE folded = ?1 ORDER BY name = ?2 DESC LIMIT 2",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<ContactRow> = stmt
            .query_map(params![fold_name(name), name], Self::contact_from_row)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| self.err(e))?;
        match rows.as_slice() {
            [] => Ok(None),
            // The exact spelling wins over another contact's name in another case.
            [first, ..] if first.name == name || rows.len() == 1 => Ok(rows.into_iter().next()),
            _ => Err(Error::ContactExists(format!(
                "two contacts are named {name:?} in different case; rename one (kolokol contacts rename)"
            ))),
        }
    }

    /// The contact with this peer id.
    pub fn contact_by_peer(&self, peer: &PeerId) -> Result<Option<ContactRow>> {
        self.conn()
            .row(
                "SELECT name, peer_id, device_key, addresses, added_at_ms FROM contacts WHERE peer_id = ?1",
                [peer.to_string()],
                Self::contact_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// All contacts, by name (regardless of case).
    pub fn contacts(&self) -> Result<Vec<ContactRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, peer_id, device_key, addresses, added_at_ms FROM contacts ORDER BY folded, name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], Self::contact_from_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Removes a contact (named in any case); messages to and from them stay.
    pub fn remove_contact(&self, name: &str) -> Result<Option<ContactRow>> {
        let Some(c) = self.contact(name)? else { return Ok(None) };
        self.conn()
            .exec("DELETE FROM contacts WHERE peer_id = ?1", [c.peer_id.to_string()])
            .map_err(|e| self.err(e))?;
        Ok(Some(c))
    }

    /// Replaces a contact's known addresses (from a fresher presence record).
    pub fn set_contact_addresses(&self, peer: &PeerId, addresses: &[Multiaddr]) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE contacts SET addresses = ?2 WHERE peer_id = ?1",
                params![peer.to_string(), join_addresses(addresses)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
