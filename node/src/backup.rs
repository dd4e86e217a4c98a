//! Backups of a node: a consistent snapshot of its database taken while it runs (or while it is
//! stopped), sealed with the identity file under a passphrase into one file
//! (`kolokol_protocol::backup`); and restoring such a file into a new data directory.
//!
//! A restored node is the node as it was at the backup, with one change: its numbering of
//! conversations begins new series ([`Store::renumber_all`]), since texts it sent after the
//! backup used numbers the restored state would give again. What it cannot restore is the
//! key schedule that moved on after the backup: receive keys rotated since are gone, so
//! envelopes sealed to them do not open, and peers may have deleted the keys the restored
//! state would seal to (see docs/USAGE.md, `kolokol restore`).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kolokol_protocol::backup::{self, Contents};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::data_dir::{DATABASE_FILE, DataDir, IDENTITY_FILE, IDENTITY_SECRET, write_private};
use crate::error::{Error, Result};
use crate::store::{PlainCopy, Store};
use crate::store_key::{KEY_PARAMS_FILE, PENDING_KEY_PARAMS_FILE, StoreKey};

/// The snapshot file the daemon writes in its data directory for `backup`, read and deleted by
/// the CLI at once.
pub const SNAPSHOT_FILE: &str = "backup-snapshot.db";

/// A snapshot of the database for a backup: the file, and for an encrypted store the key made
/// for it alone.
#[derive(Debug)]
pub struct Snapshot {
    /// The snapshot file, in the data directory (mode 0600); its reader deletes it.
    pub path: PathBuf,
    /// The snapshot's own key, if the store is encrypted (then so is the snapshot).
    pub key: Option<StoreKey>,
}

impl Snapshot {
    /// Reads the snapshot for sealing into a backup: the database as a plain SQLite file, and
    /// the identity file bytes the database held (an encrypted store keeps its identity
    /// inside; it is taken out of the copy, since a backup carries the identity beside the
    /// database, as a plain store keeps it). The file is deleted whatever happens. The
    /// plaintext of an encrypted store's snapshot exists only in memory.
    pub fn read(self) -> Result<PlainCopy> {
        let read = match &self.key {
            None => fs::read(&self.path)
                .map(|bytes| PlainCopy { database: Zeroizing::new(bytes), secret: None })
                .map_err(|e| Error::io("cannot read", &self.path, e)),
            Some(key) => Store::decrypt_copy(&self.path, key, IDENTITY_SECRET),
        };
        let _ = fs::remove_file(&self.path);
        read
    }
}

/// Writes a consistent copy of the database to [`SNAPSHOT_FILE`] in `data_dir` (mode 0600),
/// replacing a stale one. A plain store's copy is plain (`VACUUM INTO`); an encrypted store's
/// is encrypted under a fresh key of its own (`sqlcipher_export`; SQLCipher's `VACUUM INTO`
/// would write the copy under no key or the store's, neither of which the caller should get),
/// which is returned with it.
pub(crate) fn snapshot(store: &Store, data_dir: &Path) -> Result<Snapshot> {
    let path = data_dir.join(SNAPSHOT_FILE);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("cannot remove a stale snapshot", &path, e)),
    }
    // Created empty with the owner's mode first: SQLite would create it under the umask.
    OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io("cannot create", &path, e))?;
    fs::remove_file(&path).map_err(|e| Error::io("cannot prepare", &path, e))?;
    let key = if store.is_encrypted()? {
        let key = StoreKey::random();
        store.export_encrypted(&path, &key)?;
        Some(key)
    } else {
        store.snapshot_into(&path)?;
        None
    };
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| Error::io("cannot restrict", &path, e))?;
    Ok(Snapshot { path, key })
}

/// Seals a backup file from the identity file and a database snapshot, with fresh randomness.
pub fn seal(
    passphrase: &[u8],
    identity_file: Zeroizing<Vec<u8>>,
    database: Zeroizing<Vec<u8>>,
) -> Result<Vec<u8>> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let contents = Contents { identity_file, database };
    Ok(backup::seal(passphrase, &contents, salt, nonce)?)
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The restored node's peer id.
    pub peer_id: String,
    /// How many contacts it has.
    pub contacts: usize,
    /// How many of its sent messages wait for delivery (they go out when it starts).
    pub waiting: u64,
}

/// Restores a backup into `data_dir`: refuses a directory that a daemon holds, and one with an
/// identity of its own (in `identity.key` or inside an encrypted store) unless `replace` (that
/// identity would be lost); writes the identity file
/// and the database (mode 0600), brings the database's schema up to date, and renumbers.
pub fn restore(data_dir: &Path, contents: &Contents, replace: bool) -> Result<Restored> {
    let identity = kolokol_protocol::identity::Identity::from_file_bytes(&contents.identity_file)
        .map_err(|e| Error::Config {
        path: data_dir.join(IDENTITY_FILE),
        detail: format!("the backup's identity file is unusable: {e}"),
    })?;
    let dir = DataDir::open(data_dir)?;
    let key = dir.path(IDENTITY_FILE);
    // An encrypted store holds its identity inside, with no identity.key beside it.
    let encrypted = crate::store_key::is_encrypted(&dir.path(DATABASE_FILE))?;
    if (key.exists() || encrypted) && !replace {
        return Err(Error::ContactExists(format!(
            "{} already has an identity of its own, which restoring would replace for good; restore into a new --data-dir, or give --replace",
            data_dir.display()
        )));
    }
    write_private(&key, &key.with_extension("restore-tmp"), &contents.identity_file)?;
    let database = dir.path(DATABASE_FILE);
    for suffix in ["-wal", "-shm"] {
        let stale = dir.path(&format!("{DATABASE_FILE}{suffix}"));
        match fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove", &stale, e)),
        }
    }
    write_private(&database, &database.with_extension("restore-tmp"), &contents.database)?;
    // The restored store is plain: the key parameters of an encrypted store it replaced are
    // of no use any more.
    for name in [KEY_PARAMS_FILE, PENDING_KEY_PARAMS_FILE] {
        match fs::remove_file(dir.path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove", dir.path(name), e)),
        }
    }
    let store = Store::open(&database)?;
    store.renumber_all()?;
    let (queued, stored) = store.waiting_counts()?;
    Ok(Restored {
        peer_id: identity.peer_id().to_string(),
        contacts: store.contacts()?.len(),
        waiting: queued + stored,
    })
}

#[cfg(test)]
mod tests;
