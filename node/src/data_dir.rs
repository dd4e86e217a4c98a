//! The data directory: its layout, the lock that keeps one daemon per directory, and the
//! identity key file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kolokol_protocol::identity::Identity;
use rand::RngCore;

use crate::error::{Error, Result};

/// File names inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";
/// The SQLite database.
pub const DATABASE_FILE: &str = "kolokol.db";
/// The control socket.
pub const CONTROL_SOCKET: &str = "control.sock";
/// The lock file held by the running daemon.
pub const LOCK_FILE: &str = "kolokol.lock";

/// An opened data directory, locked for this process until dropped.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    /// Holds an exclusive lock on `kolokol.lock`; the OS releases it when this file is closed,
    /// including when the process is killed, so a crash never leaves a stale lock behind.
    _lock: File,
}

impl DataDir {
    /// Creates the directory (mode 0700) if needed, restricts an existing one to its owner,
    /// and takes its lock.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(|e| Error::io("cannot create data dir", root, e))?;
        }
        // A directory made by hand (or by `mkdir` under a lax umask) may let others in; the
        // database in it holds every message in plaintext, so it is closed before anything is
        // opened inside.
        let mode = fs::metadata(root)
            .map_err(|e| Error::io("cannot read data dir", root, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("cannot restrict data dir", root, e))?;
            tracing::warn!(
                path = %root.display(),
                old_mode = format!("{:o}", mode & 0o777),
                "the data dir was open to other users; restricted it to mode 700"
            );
        }
        Ok(Self { root: root.to_owned(), _lock: take_lock(root)? })
    }

    /// Takes the lock of an existing data directory without creating or changing anything:
    /// for reading its database while no daemon runs. Fails with [`Error::AlreadyRunning`]
    /// while a daemon holds it, and if the directory has no database.
    pub fn lock_existing(root: &Path) -> Result<Self> {
        let database = root.join(DATABASE_FILE);
        if !database.exists() {
            return Err(Error::io(
                "no kolokol database in the data dir",
                root,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        Ok(Self { root: root.to_owned(), _lock: take_lock(root)? })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a file inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Restricts a file inside the directory to its owner (mode 0600), if it exists. The
    /// store's files are created under the process umask; this closes them afterwards.
    pub fn restrict(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match fs::set_permissions(&path, fs::Permissions::from_mode(0o600)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("cannot restrict", &path, e)),
        }
    }

    /// Loads `identity.key`, or creates it (mode 0600, written atomically) on first start.
    pub fn load_or_create_identity(&self) -> Result<Identity> {
        let path = self.path(IDENTITY_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                let identity = Identity::from_file_bytes(&bytes).map_err(|e| Error::Config {
                    path: path.clone(),
                    detail: format!(
                        "{e}; it is not a kolokol identity file (restore it from a backup)"
                    ),
                })?;
                if let Ok(meta) = fs::metadata(&path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(path = %path.display(), "identity.key is readable by other users; run chmod 600 on it");
                }
                Ok(identity)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secrets = [0u8; 64];
                rand::rngs::OsRng.fill_bytes(&mut secrets);
                let mut identity_secret = [0u8; 32];
                let mut device_secret = [0u8; 32];
                identity_secret.copy_from_slice(&secrets[..32]);
                device_secret.copy_from_slice(&secrets[32..]);
                zeroize::Zeroize::zeroize(&mut secrets);
                let identity = Identity::from_secrets(identity_secret, device_secret);
                zeroize::Zeroize::zeroize(&mut identity_secret);
                zeroize::Zeroize::zeroize(&mut device_secret);
                write_private(&path, &self.path("identity.key.tmp"), &identity.to_file_bytes())?;
                // The rename is durable only once the directory entry is on disk.
                File::open(&self.root)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| Error::io("cannot sync", &self.root, e))?;
                tracing::info!(peer_id = %identity.peer_id(), "created a new identity");
                Ok(identity)
            }
            Err(e) => Err(Error::io("cannot read", &path, e)),
        }
    }
}

/// Opens `kolokol.lock` in `root` and takes its exclusive lock; [`Error::AlreadyRunning`] while
/// another process holds it.
fn take_lock(root: &Path) -> Result<File> {
    let lock_path = root.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| Error::io("cannot open lock file", &lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(Error::AlreadyRunning(root.to_owned())),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("cannot lock", &lock_path, e)),
    }
}

/// Writes `bytes` to `path` so that only its owner can read them: into `tmp` (mode 0600),
/// synced, then renamed into place, so that a crash leaves the old file or the new one.
pub(crate) fn write_private(path: &Path, tmp: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| Error::io("cannot create", tmp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("cannot write", tmp, e))?;
    fs::rename(tmp, path).map_err(|e| Error::io("cannot rename into place", path, e))
}

#[cfg(test)]
mod tests;
