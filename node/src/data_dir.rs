//! The data directory: its layout, the lock that keeps one daemon per directory, the identity
//! key file, and the store inside it, plain or encrypted (`kolokol init --encrypt` and
//! `kolokol passphrase` are [`encrypt`] and [`change_key`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kolokol_protocol::identity::Identity;
use rand::RngCore;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store_key::{self, KEY_PARAMS_FILE, KeyParams, PENDING_KEY_PARAMS_FILE, Unlock};

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
                let identity = new_identity();
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

impl DataDir {
    /// Opens the directory's store and its identity, for a daemon. A plain store (or none yet)
    /// opens as always, with `identity.key`; an encrypted one needs `unlock`, and holds the
    /// identity itself (a new one is made in it on its first start).
    pub fn open_node_store(&self, unlock: Option<&Unlock>) -> Result<(Store, Identity)> {
        let store = self.open_store(unlock)?;
        if !store_key::is_encrypted(&self.path(DATABASE_FILE))? {
            return Ok((store, self.load_or_create_identity()?));
        }
        let identity = match store.secret(IDENTITY_SECRET)? {
            Some(bytes) => Identity::from_file_bytes(&bytes).map_err(|e| Error::Config {
                path: self.path(DATABASE_FILE),
                detail: format!("the identity stored in the encrypted store is unusable: {e}"),
            })?,
            // `encrypt` puts the identity in before the store takes its name, so this is a
            // store made otherwise: it takes over `identity.key` if there is one.
            None => {
                let identity = if self.path(IDENTITY_FILE).exists() {
                    self.load_or_create_identity()?
                } else {
                    let identity = new_identity();
                    tracing::info!(peer_id = %identity.peer_id(), "created a new identity in the encrypted store");
                    identity
                };
                store.keep_secret(IDENTITY_SECRET, &identity.to_file_bytes())?;
                identity
            }
        };
        // An `init --encrypt` interrupted after the encrypted store was put in place left the
        // plaintext identity file behind; the identity is in the store, so it goes.
        wipe(&self.path(IDENTITY_FILE))?;
        Ok((store, identity))
    }

    /// Opens the directory's store: a plain one (or none yet) as always, an encrypted one with
    /// `unlock`, refused without it. `unlock` given for a plain store is not used, with a
    /// warning.
    pub fn open_store(&self, unlock: Option<&Unlock>) -> Result<Store> {
        let store = self.open_store_as_it_is(unlock)?;
        // SQLite creates the database and its log under the umask; they hold the messages
        // (in plaintext, unless the store is encrypted), so they are the owner's alone, like
        // the identity key.
        for suffix in ["", "-wal", "-shm"] {
            self.restrict(&format!("{DATABASE_FILE}{suffix}"))?;
        }
        Ok(store)
    }

    fn open_store_as_it_is(&self, unlock: Option<&Unlock>) -> Result<Store> {
        let database = self.path(DATABASE_FILE);
        if !store_key::is_encrypted(&database)? {
            if unlock.is_some() {
                tracing::warn!(
                    path = %self.root.display(),
                    "the store is not encrypted, so the passphrase or key file given is not used (encrypt it with: kolokol init --encrypt)"
                );
            }
            return Store::open(&database);
        }
        if !self.path(KEY_PARAMS_FILE).exists() {
            return Err(missing_params(&database));
        }
        let unlock = unlock.ok_or_else(|| Error::Locked {
            path: self.root.clone(),
            detail: store_key::HOW_TO_UNLOCK.into(),
        })?;
        self.open_encrypted(unlock)
    }

    /// Opens the encrypted store with `unlock`. A passphrase change interrupted between
    /// re-encrypting and putting its new parameters in place left them in
    /// [`PENDING_KEY_PARAMS_FILE`]: the store is then under one of the two, and the pending
    /// ones are put in place once they open it.
    fn open_encrypted(&self, unlock: &Unlock) -> Result<Store> {
        let database = self.path(DATABASE_FILE);
        let params = KeyParams::load(&self.root, KEY_PARAMS_FILE)?
            .ok_or_else(|| missing_params(&database))?;
        let pending = KeyParams::load(&self.root, PENDING_KEY_PARAMS_FILE)?;
        let key = params.derive(unlock, &self.root)?;
        match Store::open_keyed(&database, Some(&key)) {
            Err(Error::WrongKey(_)) if pending.is_some() => {}
            opened => {
                if pending.is_some() {
                    remove_if_present(&self.path(PENDING_KEY_PARAMS_FILE))?;
                }
                return opened;
            }
        }
        let Some(pending) = pending else { return Err(Error::WrongKey(database)) };
        let store = Store::open_keyed(&database, Some(&pending.derive(unlock, &self.root)?))?;
        fs::rename(self.path(PENDING_KEY_PARAMS_FILE), self.path(KEY_PARAMS_FILE))
            .map_err(|e| Error::io("cannot rename into place", self.path(KEY_PARAMS_FILE), e))?;
        tracing::info!("finished an interrupted passphrase change");
        Ok(store)
    }
}

/// The error for a database that is not plain SQLite and has no key parameters beside it.
fn missing_params(database: &Path) -> Error {
    Error::Config {
        path: database.to_owned(),
        detail: format!(
            "it is not a plain SQLite database and {KEY_PARAMS_FILE} is not beside it: either it is damaged, or it is an encrypted store whose {KEY_PARAMS_FILE} was lost (put that file back from where you copied the data dir; without it the store cannot be opened)"
        ),
    }
}

/// The name of the identity (its `identity.key` bytes) in an encrypted store's `secrets` table.
pub const IDENTITY_SECRET: &str = "identity";

/// The encrypted copy `encrypt` writes before putting it in place of the plain database.
const ENCRYPTING_FILE: &str = "kolokol.db.encrypting";

/// What [`encrypt`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted {
    /// The node's peer id.
    pub peer_id: String,
    /// Whether an existing plain store was moved into the encrypted one (else it is new).
    pub migrated: bool,
}

/// `kolokol init --encrypt`: makes the data directory's store an encrypted one under
/// `unlock`, with the identity inside it. A new directory gets a new identity; an existing
/// plain store is copied page by page into an encrypted file (`sqlcipher_export`), which then
/// takes its place; the plain database and `identity.key` are overwritten with zeros and
/// removed. Refused while a daemon runs on the directory, and for a store encrypted already.
///
/// At every moment `kolokol.db` is whole, plain or encrypted: the encrypted copy is complete
/// and synced before one rename puts it in place, and the parameters file is written before
/// that rename (a plain store ignores it).
pub fn encrypt(root: &Path, unlock: &Unlock) -> Result<Encrypted> {
    store_key::check_new(unlock)?;
    let dir = DataDir::open(root)?;
    let database = dir.path(DATABASE_FILE);
    if store_key::is_encrypted(&database)? {
        return Err(Error::AlreadyEncrypted(root.to_owned()));
    }
    let params = KeyParams::for_unlock(unlock);
    let key = params.derive(unlock, root)?;
    let identity = match fs::read(dir.path(IDENTITY_FILE)) {
        Ok(_) => dir.load_or_create_identity()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => new_identity(),
        Err(e) => return Err(Error::io("cannot read", dir.path(IDENTITY_FILE), e)),
    };
    let copy = dir.path(ENCRYPTING_FILE);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        remove_if_present(&dir.path(&format!("{ENCRYPTING_FILE}{suffix}")))?;
    }
    let migrated = fs::metadata(&database).is_ok_and(|m| m.len() > 0);
    if migrated {
        let plain = Store::open(&database)?;
        plain.export_encrypted(&copy, &key)?;
        // Closed out of WAL mode, so the whole plain database is in its one file, which is
        // overwritten below.
        plain.close_into_one_file()?;
    }
    let encrypted = Store::open_keyed(&copy, Some(&key))?;
    encrypted.keep_secret(IDENTITY_SECRET, &identity.to_file_bytes())?;
    encrypted.close_into_one_file()?;
    fs::File::open(&copy)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("cannot sync", &copy, e))?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("cannot restrict", &copy, e))?;
    params.save(root, KEY_PARAMS_FILE)?;
    remove_if_present(&dir.path(PENDING_KEY_PARAMS_FILE))?;
    // The plain file stays open across the rename, so its blocks can be overwritten after the
    // encrypted one has taken its name.
    let old = if migrated {
        Some(
            OpenOptions::new()
                .write(true)
                .open(&database)
                .map_err(|e| Error::io("cannot open", &database, e))?,
        )
    } else {
        None
    };
    fs::rename(&copy, &database)
        .map_err(|e| Error::io("cannot rename into place", &database, e))?;
    sync_dir(root)?;
    if let Some(old) = old {
        overwrite(&old, &database)?;
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        wipe(&dir.path(&format!("{DATABASE_FILE}{suffix}")))?;
    }
    wipe(&dir.path(IDENTITY_FILE))?;
    sync_dir(root)?;
    Ok(Encrypted { peer_id: identity.peer_id().to_string(), migrated })
}

/// `kolokol passphrase`: re-encrypts the store of a stopped node under `new` (a new
/// passphrase, with a new salt, or a key file), after `old` opened it. The new parameters are
/// written aside first and put in place once the store opens with them (see
/// [`DataDir::open_store`] for an interrupted change).
pub fn change_key(root: &Path, old: &Unlock, new: &Unlock) -> Result<()> {
    store_key::check_new(new)?;
    let dir = DataDir::lock_existing(root)?;
    let database = dir.path(DATABASE_FILE);
    if !store_key::is_encrypted(&database)? {
        return Err(Error::NotEncrypted(root.to_owned()));
    }
    let store = dir.open_encrypted(old)?;
    let params = KeyParams::for_unlock(new);
    let key = params.derive(new, root)?;
    params.save(root, PENDING_KEY_PARAMS_FILE)?;
    store.rekey(&key)?;
    drop(store);
    // SQLCipher does not report a failed re-encryption: the store must open with the new key.
    drop(Store::open_keyed(&database, Some(&key))?);
    fs::rename(dir.path(PENDING_KEY_PARAMS_FILE), dir.path(KEY_PARAMS_FILE))
        .map_err(|e| Error::io("cannot rename into place", dir.path(KEY_PARAMS_FILE), e))?;
    sync_dir(root)
}

/// A new identity from the operating system's randomness.
fn new_identity() -> Identity {
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
    identity
}

/// Overwrites a file with zeros, synced, then removes it, if it exists: a plaintext file that
/// held secrets. (A filesystem that writes elsewhere, copy-on-write or a flash translation
/// layer, may still keep the old blocks; the store's encryption is what covers those.)
fn wipe(path: &Path) -> Result<()> {
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("cannot open", path, e)),
    };
    overwrite(&file, path)?;
    fs::remove_file(path).map_err(|e| Error::io("cannot remove", path, e))
}

/// Overwrites an open file's bytes with zeros and syncs it.
fn overwrite(mut file: &File, path: &Path) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let len = file.metadata().map_err(|e| Error::io("cannot read", path, e))?.len();
    let zeros = [0u8; 64 * 1024];
    let mut left = len;
    let result = file.seek(SeekFrom::Start(0)).and_then(|_| {
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    });
    result.map_err(|e| Error::io("cannot overwrite", path, e))
}

/// Removes a file if it exists.
fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

/// Syncs a directory, so the renames and removals in it are on disk.
fn sync_dir(root: &Path) -> Result<()> {
    File::open(root).and_then(|d| d.sync_all()).map_err(|e| Error::io("cannot sync", root, e))
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
