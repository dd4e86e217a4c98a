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

impl Store {
    /// Adds a contact; refuses a duplicate name or peer.
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
        let existing: Option<String> = tx
            .row(
                "SELECT name FROM contacts WHERE name = ?1 OR peer_id = ?2",
                params![c.name, c.peer_id.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(name) = existing {
            return Err(Error::ContactExists(if name == c.name {
                format!("a contact named {name:?} already exists (remove it first)")
            } else {
                format!("that peer is already your contact {name:?}")
            }));
        }
        tx.exec(
            "INSERT INTO contacts (name, peer_id, device_key, addresses, added_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                c.name,
                c.peer_id.to_string(),
                c.device_key.as_slice(),
                join_addresses(&c.addresses),
                c.added_at_ms as i64
            ],
        )
        .map_err(|e| self.err(e))?;
        if let Some(first) = first {
            Self::write_first_conversation(&tx, first, c.added_at_ms).map_err(|e| self.err(e))?;
        }
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
        })
    }

    /// The contact with this name.
    pub fn contact(&self, name: &str) -> Result<Option<ContactRow>> {
        self.conn()
            .row(
                "SELECT name, peer_id, device_key, addresses, added_at_ms FROM contacts WHERE name = ?1",
                [name],
                Self::contact_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
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

    /// All contacts, by name.
    pub fn contacts(&self) -> Result<Vec<ContactRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT name, peer_id, device_key, addresses, added_at_ms FROM contacts ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], Self::contact_from_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Removes a contact; messages to and from them stay.
    pub fn remove_contact(&self, name: &str) -> Result<Option<ContactRow>> {
        let Some(c) = self.contact(name)? else { return Ok(None) };
        self.conn()
            .exec("DELETE FROM contacts WHERE name = ?1", [name])
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
