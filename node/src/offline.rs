//! Reading a data directory while no daemon runs: the contacts, the inbox and the outbox
//! straight from `kolokol.db`, so a stopped node's messages can still be looked at.
//!
//! The daemon holds the database for itself (SQLite's `locking_mode=EXCLUSIVE`, and the data
//! directory's lock), so this works only while it is stopped: [`Offline::open`] takes the data
//! directory's lock, which fails while a daemon runs, and holds it until dropped, so no daemon
//! starts on the directory meanwhile (one that tries says another is running). Nothing here
//! writes: nothing is marked read and no receipt is queued; that needs the daemon.

use std::path::Path;

use kolokol_protocol::control;

use crate::chats::Chats;
use crate::clock::Clock;
use crate::contacts::contact_view;
use crate::data_dir::DataDir;
use crate::error::{Error, Result};
use crate::ids::id_prefix;
use crate::inbox::inbox_view;
use crate::outbox::outbox_view;
use crate::store::Store;
use crate::store_key::Unlock;

/// A stopped node's data directory, locked and opened for reading.
pub struct Offline {
    store: Store,
    chats: Chats,
    _lock: DataDir,
}

impl Offline {
    /// Locks the data directory (refused while a daemon runs on it) and opens its database,
    /// with `unlock` if it is encrypted.
    pub fn open(data_dir: &Path, unlock: Option<&Unlock>) -> Result<Self> {
        let lock = DataDir::lock_existing(data_dir)?;
        let store = lock.open_store(unlock)?;
        let chats = Chats { store: store.clone(), clock: Clock::system() };
        Ok(Self { store, chats, _lock: lock })
    }

    /// The answer `contacts.list` would give.
    pub fn contacts(&self) -> Result<Vec<control::Contact>> {
        Ok(self.store.contacts()?.into_iter().map(contact_view).collect())
    }

    /// The answer `inbox` would give.
    pub fn inbox(&self, limit: u32) -> Result<Vec<control::InboxMessage>> {
        Ok(self.store.inbox(limit)?.into_iter().map(inbox_view).collect())
    }

    /// The answer `outbox` would give.
    pub fn outbox(&self, limit: u32) -> Result<Vec<control::OutboxMessage>> {
        Ok(self.store.outbox(limit)?.into_iter().map(outbox_view).collect())
    }

    /// The answer `chats` would give.
    pub fn chats(&self) -> Result<Vec<control::ChatSummary>> {
        self.chats.list()
    }

    /// The answer `chat` would give.
    pub fn chat(&self, with: &str, limit: u32) -> Result<control::Chat> {
        let peer = self.chats.peer(with)?;
        self.chats.chat(&peer, limit)
    }

    /// Writes a consistent snapshot of the database into the data directory, as
    /// `backup.snapshot` does.
    pub fn snapshot(&self) -> Result<crate::backup::Snapshot> {
        crate::backup::snapshot(&self.store, self._lock.root())
    }

    /// The answer `message` would give.
    pub fn message(&self, id: &str) -> Result<control::MessageStatus> {
        let unknown = || Error::UnknownMessage(id.to_owned());
        let prefix = id_prefix(id).ok_or_else(unknown)?;
        let raw = match self.store.outgoing_ids_with_prefix(&prefix, 2)?[..] {
            [one] => one,
            [] => return Err(unknown()),
            _ => return Err(Error::AmbiguousId(id.to_owned())),
        };
        let message = self.store.outgoing(&raw)?.ok_or_else(unknown)?;
        let history = self
            .store
            .history(&raw)?
            .into_iter()
            .map(|(state, detail, at_ms)| control::StateEntry { state, detail, at_ms })
            .collect();
        Ok(control::MessageStatus { message: outbox_view(message), history })
    }
}

#[cfg(test)]
mod tests;
