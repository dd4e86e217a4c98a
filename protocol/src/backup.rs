//! Backup files: a node's identity file and a snapshot of its database, sealed with a
//! passphrase (Argon2id, then XChaCha20-Poly1305), in one file a user can carry to a new
//! machine. `docs/PROTOCOL.md` section 15 is the normative description.
//!
//! The layout: the magic line, the Argon2id parameters and salt, the nonce, then the
//! ciphertext of the contents (the identity file and the database, each with its length).
//! The header is the AEAD's associated data, so no parameter can be changed without the
//! passphrase. Like the rest of this crate, it takes randomness (salt and nonce) as arguments
//! and does no I/O; [`parse`] reads the header without any key work, so a damaged file is
//! refused before the slow key derivation.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::Error;

/// The first bytes of every backup file, with its version.
pub const MAGIC: &[u8; 18] = b"kolokol-backup-v1\n";

/// Argon2id memory cost of new backups, in KiB (64 MiB): well above OWASP's minimum of 19 MiB,
/// and a fraction of a second on a phone-class CPU.
pub const MEMORY_KIB: u32 = 64 * 1024;

/// Argon2id passes of new backups.
pub const PASSES: u32 = 3;

/// The most memory a backup may ask for, in KiB (1 GiB): a damaged or hostile file cannot make
/// the reader allocate more.
pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;

/// The most passes a backup may ask for.
pub const MAX_PASSES: u32 = 64;

/// The largest contents a backup may hold, in bytes (4 GiB less one): the length fields are
/// `u64`, and a length past the file's end is refused anyway.
pub const MAX_CONTENTS_LEN: u64 = u32::MAX as u64;

/// Bytes of the header: magic, memory (u32 BE), passes (u32 BE), lanes (u32 BE), salt, nonce.
pub const HEADER_LEN: usize = MAGIC.len() + 12 + 16 + 24;

/// What a backup holds.
#[derive(Clone, PartialEq, Eq)]
pub struct Contents {
    /// The `identity.key` file, as it is on disk.
    pub identity_file: Zeroizing<Vec<u8>>,
    /// A consistent snapshot of `kolokol.db`.
    pub database: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Contents {{ identity_file: {} bytes, database: {} bytes }}",
            self.identity_file.len(),
            self.database.len()
        )
    }
}

impl Contents {
    /// The plaintext: each part as its length (u64 BE) and its bytes.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out =
            Zeroizing::new(Vec::with_capacity(16 + self.identity_file.len() + self.database.len()));
        for part in [&self.identity_file, &self.database] {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Reads the plaintext back; refuses lengths past its end and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let mut rest = bytes;
        let mut parts = Vec::with_capacity(2);
        for _ in 0..2 {
            let (len, tail) = rest
                .split_first_chunk::<8>()
                .ok_or(Error::Malformed { what: "backup contents", detail: "cut short".into() })?;
            let len = u64::from_be_bytes(*len);
            if len > tail.len() as u64 {
                return Err(Error::Malformed {
                    what: "backup contents",
                    detail: "a part is longer than what follows".into(),
                });
            }
            let (part, tail) = tail.split_at(len as usize);
            parts.push(Zeroizing::new(part.to_vec()));
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(Error::Malformed {
                what: "backup contents",
                detail: format!("{} trailing bytes", rest.len()),
            });
        }
        let database = parts.pop().unwrap_or_default();
        let identity_file = parts.pop().unwrap_or_default();
        Ok(Self { identity_file, database })
    }
}

/// A backup file's header, read without the passphrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Argon2id memory cost, KiB.
    pub memory_kib: u32,
    /// Argon2id passes.
    pub passes: u32,
    /// Argon2id lanes.
    pub lanes: u32,
    /// Argon2id salt.
    pub salt: [u8; 16],
    /// XChaCha20-Poly1305 nonce.
    pub nonce: [u8; 24],
}

impl Header {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.memory_kib.to_be_bytes());
        out.extend_from_slice(&self.passes.to_be_bytes());
        out.extend_from_slice(&self.lanes.to_be_bytes());
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.nonce);
        out
    }

    /// The key for this header's parameters and salt.
    fn key(&self, passphrase: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        let params = Params::new(self.memory_kib, self.passes, self.lanes, Some(32))
            .map_err(|e| Error::Malformed { what: "backup parameters", detail: e.to_string() })?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, &self.salt, key.as_mut())
            .map_err(|e| Error::Malformed { what: "backup key", detail: e.to_string() })?;
        Ok(key)
    }
}

/// Splits a backup file into its header and ciphertext, checking the magic and that the
/// parameters are within bounds; no key work.
pub fn parse(file: &[u8]) -> Result<(Header, &[u8]), Error> {
    let not_one = || Error::Malformed {
        what: "backup file",
        detail: "not a kolokol backup (it does not start with kolokol-backup-v1)".into(),
    };
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err(not_one());
    }
    if file.len() < HEADER_LEN + 16 {
        return Err(Error::Malformed { what: "backup file", detail: "cut short".into() });
    }
    let word = |at: usize| u32::from_be_bytes([file[at], file[at + 1], file[at + 2], file[at + 3]]);
    let at = MAGIC.len();
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&file[at + 12..at + 28]);
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&file[at + 28..at + 52]);
    let header =
        Header { memory_kib: word(at), passes: word(at + 4), lanes: word(at + 8), salt, nonce };
    if header.memory_kib > MAX_MEMORY_KIB
        || !(1..=MAX_PASSES).contains(&header.passes)
        || !(1..=16).contains(&header.lanes)
    {
        return Err(Error::Malformed {
            what: "backup file",
            detail: "its key parameters are out of bounds".into(),
        });
    }
    if (file.len() - HEADER_LEN - 16) as u64 > MAX_CONTENTS_LEN {
        return Err(Error::TooLarge {
            what: "backup file",
            len: file.len(),
            max: MAX_CONTENTS_LEN as usize,
        });
    }
    Ok((header, &file[HEADER_LEN..]))
}

/// Seals `contents` with `passphrase`, using the caller's fresh random `salt` and `nonce`,
/// with the parameters of new backups ([`MEMORY_KIB`], [`PASSES`], one lane).
pub fn seal(
    passphrase: &[u8],
    contents: &Contents,
    salt: [u8; 16],
    nonce: [u8; 24],
) -> Result<Vec<u8>, Error> {
    seal_with(
        passphrase,
        contents,
        Header { memory_kib: MEMORY_KIB, passes: PASSES, lanes: 1, salt, nonce },
    )
}

/// [`seal`] with given parameters (tests and vectors use small ones).
pub fn seal_with(passphrase: &[u8], contents: &Contents, header: Header) -> Result<Vec<u8>, Error> {
    let key = header.key(passphrase)?;
    let head = header.to_bytes();
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let sealed = cipher
        .encrypt(XNonce::from_slice(&header.nonce), Payload { msg: &contents.encode(), aad: &head })
        .map_err(|_| Error::Malformed { what: "backup", detail: "cannot encrypt".into() })?;
    let mut out = head;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a backup file with `passphrase`. A wrong passphrase and a file changed after it was
/// written look the same (the tag does not verify), and are said so.
pub fn open(passphrase: &[u8], file: &[u8]) -> Result<Contents, Error> {
    let (header, sealed) = parse(file)?;
    let key = header.key(passphrase)?;
    let cipher = XChaCha20Poly1305::new(key.as_ref().into());
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(&header.nonce),
                Payload { msg: sealed, aad: &file[..HEADER_LEN] },
            )
            .map_err(|_| Error::Malformed {
                what: "backup file",
                detail: "wrong passphrase, or the file was changed or damaged".into(),
            })?,
    );
    Contents::decode(&plain)
}

#[cfg(test)]
mod tests;
