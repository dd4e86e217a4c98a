//! Mailbox keys (mailbox protocol version 2): mailbox ids that only contacts can compute, and
//! ownership proofs that do not name the owner.
//!
//! The owner makes a *mailbox key*, an Ed25519 key pair unrelated to its identity, and gives
//! its public half, the *mailbox address* `A`, only to contacts: in its invites (version 2) and
//! inside the first-contact envelopes it sends. For each period `t` (a day) everyone who knows
//! `A` derives the *blinded key* `A_t = h_t · A`, with `h_t = SHA-512("kolokol-mailbox-blind:v1"
//! || A || t) mod ℓ`, and the mailbox id `BLAKE2s-256("kolokol-mailbox:v2" || A_t)`. This is the
//! key blinding of Tor's version 3 onion services: without `A`, the ids and blinded keys of two
//! periods cannot be linked to each other or to anyone, and future ids cannot be predicted. The
//! owner alone holds the blinded secret `h_t · a` and signs fetch and delete requests with it;
//! a replica checks that `A_t` hashes to the mailbox id and that the signature verifies under
//! `A_t` (strictly), and so learns no identity key. `docs/PROTOCOL.md`, section 11, is normative.

use blake2::{Blake2s256, Digest};
use curve25519_dalek::Scalar;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use sha2::Sha512;
use zeroize::Zeroizing;

use crate::Error;
use crate::mailbox::MailboxId;

/// Domain-separation prefix of the blinding factor.
pub const BLIND_CONTEXT: &[u8] = b"kolokol-mailbox-blind:v1";

/// Domain-separation prefix of the blinded signing nonce prefix.
const BLIND_PREFIX_CONTEXT: &[u8] = b"kolokol-mailbox-blind-prefix:v1";

/// Domain-separation prefix of version 2 mailbox ids.
pub const MAILBOX_ID_CONTEXT_V2: &[u8] = b"kolokol-mailbox:v2";

/// The public half of a mailbox key, given only to contacts.
pub type MailboxAddress = [u8; 32];

/// The blinding factor of `address` for `period`.
fn blinding(address: &MailboxAddress, period: u64) -> Result<Scalar, Error> {
    let mut hasher = <Sha512 as sha2::Digest>::new();
    sha2::Digest::update(&mut hasher, BLIND_CONTEXT);
    sha2::Digest::update(&mut hasher, address);
    sha2::Digest::update(&mut hasher, period.to_be_bytes());
    let wide: [u8; 64] = sha2::Digest::finalize(hasher).into();
    let h = Scalar::from_bytes_mod_order_wide(&wide);
    if h == Scalar::ZERO {
        return Err(Error::Mailbox("blinding factor is zero"));
    }
    Ok(h)
}

/// The blinded key `A_t` of a mailbox address for a period: what the replica sees in proofs.
/// Refuses an address that is not a point, or is of small order (it would blind to a key
/// anyone can sign for).
pub fn blinded_key(address: &MailboxAddress, period: u64) -> Result<[u8; 32], Error> {
    let point = CompressedEdwardsY(*address)
        .decompress()
        .filter(|p| !p.is_small_order())
        .ok_or(Error::InvalidKey { what: "mailbox address", detail: "not a usable point" })?;
    Ok((blinding(address, period)? * point).compress().to_bytes())
}

/// The mailbox id for a blinded key: `BLAKE2s-256("kolokol-mailbox:v2" || A_t)`.
pub fn mailbox_id_of_blinded(blinded: &[u8; 32]) -> MailboxId {
    let mut hasher = Blake2s256::new();
    hasher.update(MAILBOX_ID_CONTEXT_V2);
    hasher.update(blinded);
    hasher.finalize().into()
}

/// The mailbox id of `address` for `period`: what a depositor computes.
pub fn mailbox_id(address: &MailboxAddress, period: u64) -> Result<MailboxId, Error> {
    Ok(mailbox_id_of_blinded(&blinded_key(address, period)?))
}

/// The owner's mailbox key: 32 secret bytes, expanded as an Ed25519 secret key is.
pub struct MailboxKey {
    expanded: ExpandedSecretKey,
    address: MailboxAddress,
}

impl std::fmt::Debug for MailboxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxKey")
            .field("address", &crate::identity::hex(&self.address))
            .finish_non_exhaustive()
    }
}

impl MailboxKey {
    /// The key made from 32 secret bytes (fresh random bytes, kept in the node's store).
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let digest = Zeroizing::new(<[u8; 64]>::from(<Sha512 as sha2::Digest>::digest(secret)));
        let expanded = ExpandedSecretKey::from_bytes(&digest);
        let address = VerifyingKey::from(&expanded).to_bytes();
        Self { expanded, address }
    }

    /// The mailbox address, for invites and first contacts.
    pub fn address(&self) -> &MailboxAddress {
        &self.address
    }

    /// The mailbox id for `period`.
    pub fn mailbox_id(&self, period: u64) -> Result<MailboxId, Error> {
        mailbox_id(&self.address, period)
    }

    /// Signs `message` with the blinded key of `period`; returns the blinded public key and the
    /// signature, which verifies under it with standard (strict) Ed25519.
    pub fn sign_blinded(&self, period: u64, message: &[u8]) -> Result<([u8; 32], [u8; 64]), Error> {
        let h = blinding(&self.address, period)?;
        let mut prefix_hasher = <Sha512 as sha2::Digest>::new();
        sha2::Digest::update(&mut prefix_hasher, BLIND_PREFIX_CONTEXT);
        sha2::Digest::update(&mut prefix_hasher, self.expanded.hash_prefix);
        sha2::Digest::update(&mut prefix_hasher, h.as_bytes());
        let prefix = Zeroizing::new(<[u8; 64]>::from(sha2::Digest::finalize(prefix_hasher)));
        let mut hash_prefix = [0u8; 32];
        hash_prefix.copy_from_slice(&prefix[..32]);
        let blinded = ExpandedSecretKey { scalar: h * self.expanded.scalar, hash_prefix };
        let public = VerifyingKey::from(&blinded);
        let signature = raw_sign::<Sha512>(&blinded, message, &public);
        Ok((public.to_bytes(), signature.to_bytes()))
    }
}

#[cfg(test)]
mod tests;
