//! The key of an encrypted store (issue 15, "at rest"): how a user unlocks it (a passphrase or
//! a key file), the plaintext file beside the database that says which and holds the Argon2id
//! salt and parameters (`kolokol.key-params`), and the 32-byte key SQLCipher is given.
//!
//! Whether a store is encrypted is read from the database file itself: a plain SQLite file
//! starts with `SQLite format 3`, an SQLCipher one with a random salt. So a crash between
//! writing the parameters and putting the encrypted file in place leaves a plain store that
//! still opens as one. The key and the passphrase live in `Zeroizing` buffers, wiped when
//! dropped; SQLCipher wipes its own copies (`cipher_memory_security`).

use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The plaintext file beside an encrypted database: how its key is made.
pub const KEY_PARAMS_FILE: &str = "kolokol.key-params";

/// The parameters a passphrase change writes before it re-encrypts, put in place of
/// [`KEY_PARAMS_FILE`] once the database is re-encrypted: if the change is interrupted, the
/// database opens with whichever of the two its pages are encrypted under.
pub const PENDING_KEY_PARAMS_FILE: &str = "kolokol.key-params.new";

/// The shortest passphrase a store is encrypted with: Argon2id slows guessing down, it does
/// not make a short passphrase strong.
pub const MIN_PASSPHRASE_CHARS: usize = 10;

/// Argon2id memory cost of new stores, in KiB (64 MiB, as for backups): a fraction of a
/// second at each start, and 64 MiB per guess for whoever tries passphrases on a stolen copy.
pub const MEMORY_KIB: u32 = 64 * 1024;

/// Argon2id passes of new stores.
pub const PASSES: u32 = 3;

/// The most memory a parameters file may ask for, in KiB (1 GiB): a damaged file cannot make
/// the node allocate more.
pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;

/// The most passes a parameters file may ask for.
pub const MAX_PASSES: u32 = 64;

/// The length of a key file, and of the key SQLCipher is given.
pub const KEY_LEN: usize = 32;

/// What an encrypted store opened without a key asks for.
pub const HOW_TO_UNLOCK: &str = "give its passphrase (at the terminal, or in the file KOLOKOL_PASSPHRASE_FILE names) or its --key-file";

/// The first line of a parameters file, with its version.
const MAGIC_LINE: &str = "kolokol-key-params 1";

/// The first bytes of a plain SQLite database.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// How a user unlocks an encrypted store.
#[derive(Clone)]
pub enum Unlock {
    /// A passphrase, stretched with the Argon2id parameters of [`KEY_PARAMS_FILE`].
    Passphrase(Zeroizing<String>),
    /// A file of exactly [`KEY_LEN`] random bytes, readable by its owner alone.
    KeyFile(PathBuf),
}

impl std::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("Unlock::Passphrase(..)"),
            Self::KeyFile(path) => write!(f, "Unlock::KeyFile({})", path.display()),
        }
    }
}

/// The 32-byte key of an encrypted store.
pub struct StoreKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random key, for a copy encrypted once (a backup snapshot).
    pub fn random() -> Self {
        let mut key = Self(Zeroizing::new([0u8; KEY_LEN]));
        rand::rngs::OsRng.fill_bytes(&mut key.0[..]);
        key
    }

    /// The key as 64 lowercase hex digits, as `backup.snapshot` hands it over.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(2 * KEY_LEN));
        for byte in self.0.iter() {
            // Writing to a String cannot fail.
            let _ = write!(text, "{byte:02x}");
        }
        text
    }

    /// Reads [`StoreKey::to_hex`]'s text; `None` unless it is exactly 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let digits = text.as_bytes();
        // `from_str_radix` alone would take a sign ("+f").
        if digits.len() != 2 * KEY_LEN || !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut key = Self(Zeroizing::new([0u8; KEY_LEN]));
        for (byte, pair) in key.0.iter_mut().zip(digits.chunks(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(key)
    }

    /// Reads a key file: exactly [`KEY_LEN`] bytes, closed to other users (a key others can
    /// read protects nothing, so such a file is refused rather than warned about).
    pub fn from_key_file(path: &Path) -> Result<Self> {
        let refuse = |detail: String| Error::Config { path: path.to_owned(), detail };
        let mut file = std::fs::File::open(path).map_err(|e| Error::io("cannot open", path, e))?;
        let mode =
            file.metadata().map_err(|e| Error::io("cannot read", path, e))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(refuse(format!(
                "the key file is open to other users (mode {:o}); run chmod 600 on it",
                mode & 0o777
            )));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN + 1));
        (&mut file)
            .take(KEY_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("cannot read", path, e))?;
        let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            refuse(format!(
                "a key file holds exactly {KEY_LEN} random bytes (make one with: head -c {KEY_LEN} /dev/urandom > FILE; chmod 600 FILE)"
            ))
        })?;
        Ok(Self::from_bytes(key))
    }

    /// The key as SQLCipher's `PRAGMA key` and `PRAGMA rekey` take a raw key: `"x'<hex>'"`.
    pub(crate) fn pragma_value(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(2 * KEY_LEN + 5));
        text.push_str("\"x'");
        for byte in self.0.iter() {
            // Writing to a String cannot fail.
            let _ = write!(text, "{byte:02x}");
        }
        text.push_str("'\"");
        text
    }
}

/// How a store's key is made, as its [`KEY_PARAMS_FILE`] says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyParams {
    /// From a passphrase through Argon2id with these parameters and salt.
    Argon2id {
        /// Memory cost in KiB.
        memory_kib: u32,
        /// Passes.
        passes: u32,
        /// Lanes.
        lanes: u32,
        /// Random salt, new at every passphrase change.
        salt: [u8; 16],
    },
    /// Read from a key file given at each start (`--key-file`).
    KeyFile,
}

impl KeyParams {
    /// Parameters for a new passphrase: today's costs and a fresh salt.
    pub fn new_passphrase() -> Self {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self::Argon2id { memory_kib: MEMORY_KIB, passes: PASSES, lanes: 1, salt }
    }

    /// The parameters for a way of unlocking: a fresh salt for a passphrase.
    pub fn for_unlock(unlock: &Unlock) -> Self {
        match unlock {
            Unlock::Passphrase(_) => Self::new_passphrase(),
            Unlock::KeyFile(_) => Self::KeyFile,
        }
    }

    /// The file's text: the magic line, then one `name value` line each.
    pub fn to_text(&self) -> String {
        match self {
            Self::Argon2id { memory_kib, passes, lanes, salt } => {
                let salt: String = salt.iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "{MAGIC_LINE}\nkdf argon2id\nmemory_kib {memory_kib}\npasses {passes}\nlanes {lanes}\nsalt {salt}\n"
                )
            }
            Self::KeyFile => format!("{MAGIC_LINE}\nkdf key-file\n"),
        }
    }

    /// Reads the file's text, refusing anything this version did not write or costs past the
    /// bounds ([`MAX_MEMORY_KIB`], [`MAX_PASSES`]).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(MAGIC_LINE) {
            return Err(format!("it does not start with {MAGIC_LINE:?}"));
        }
        let mut fields = std::collections::BTreeMap::new();
        for line in lines {
            let (name, value) =
                line.split_once(' ').ok_or_else(|| format!("line {line:?} has no value"))?;
            if fields.insert(name, value.trim()).is_some() {
                return Err(format!("{name} is given twice"));
            }
        }
        let number = |name: &str, max: u32| -> std::result::Result<u32, String> {
            let value = fields.get(name).ok_or_else(|| format!("{name} is missing"))?;
            match value.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(format!("{name} {value:?} is not a number from 1 to {max}")),
            }
        };
        match fields.get("kdf").copied() {
            Some("key-file") if fields.len() == 1 => Ok(Self::KeyFile),
            Some("argon2id") if fields.len() == 5 => {
                let hex = fields.get("salt").ok_or("salt is missing")?;
                let salt = decode_salt(hex).ok_or("salt is not 32 hex digits")?;
                Ok(Self::Argon2id {
                    memory_kib: number("memory_kib", MAX_MEMORY_KIB)?,
                    passes: number("passes", MAX_PASSES)?,
                    lanes: number("lanes", 16)?,
                    salt,
                })
            }
            Some("key-file" | "argon2id") => Err("unknown or missing fields".into()),
            Some(other) => Err(format!("unknown kdf {other:?}")),
            None => Err("kdf is missing".into()),
        }
    }

    /// Reads `name` in the data directory; `None` if there is no such file.
    pub fn load(data_dir: &Path, name: &str) -> Result<Option<Self>> {
        let path = data_dir.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("cannot read", &path, e)),
        };
        Self::parse(&text).map(Some).map_err(|detail| Error::Config {
            path,
            detail: format!("{detail}; it is not a kolokol key parameters file"),
        })
    }

    /// Writes the parameters to `name` in the data directory, atomically and for its owner
    /// alone.
    pub(crate) fn save(&self, data_dir: &Path, name: &str) -> Result<()> {
        let path = data_dir.join(name);
        crate::data_dir::write_private(
            &path,
            &data_dir.join(format!("{name}.tmp")),
            self.to_text().as_bytes(),
        )
    }

    /// The key these parameters make from `unlock`. A way of unlocking that is not the one the
    /// store was encrypted with (a passphrase for a key-file store) is refused with a line
    /// saying which one it wants.
    pub fn derive(&self, unlock: &Unlock, data_dir: &Path) -> Result<StoreKey> {
        match (self, unlock) {
            (Self::Argon2id { memory_kib, passes, lanes, salt }, Unlock::Passphrase(text)) => {
                let params = Params::new(*memory_kib, *passes, *lanes, Some(KEY_LEN))
                    .map_err(|e| self.bad(data_dir, e.to_string()))?;
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password_into(text.as_bytes(), salt, key.as_mut())
                    .map_err(|e| self.bad(data_dir, e.to_string()))?;
                Ok(StoreKey(key))
            }
            (Self::KeyFile, Unlock::KeyFile(path)) => StoreKey::from_key_file(path),
            (Self::KeyFile, Unlock::Passphrase(_)) => Err(Error::Locked {
                path: data_dir.to_owned(),
                detail: "its key is in a key file: give it with --key-file FILE".into(),
            }),
            (Self::Argon2id { .. }, Unlock::KeyFile(_)) => Err(Error::Locked {
                path: data_dir.to_owned(),
                detail: "it is encrypted with a passphrase, not a key file: drop --key-file and give the passphrase".into(),
            }),
        }
    }

    fn bad(&self, data_dir: &Path, detail: String) -> Error {
        Error::Config { path: data_dir.join(KEY_PARAMS_FILE), detail }
    }
}

/// Whether the database at `path` is encrypted: it exists, is not empty, and does not start
/// with SQLite's header. A missing or empty file is a store not created yet, so not encrypted.
pub fn is_encrypted(path: &Path) -> Result<bool> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        // No database yet, or no data directory yet (whoever creates it reports why it
        // cannot).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(Error::io("cannot open", path, e)),
    };
    let mut head = Vec::with_capacity(SQLITE_HEADER.len());
    (&mut file)
        .take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("cannot read", path, e))?;
    Ok(!head.is_empty() && head != SQLITE_HEADER)
}

/// Checks a new passphrase's length.
pub fn check_new(unlock: &Unlock) -> Result<()> {
    match unlock {
        Unlock::Passphrase(text) if text.chars().count() < MIN_PASSPHRASE_CHARS => {
            Err(Error::WeakPassphrase(MIN_PASSPHRASE_CHARS))
        }
        _ => Ok(()),
    }
}

/// The salt of a parameters file: exactly 32 hex digits.
fn decode_salt(hex: &str) -> Option<[u8; 16]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut salt = [0u8; 16];
    if !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        salt[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(salt)
}

#[cfg(test)]
mod tests;
