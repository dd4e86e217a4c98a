//! Signed prekeys: medium-term X25519 keys a node publishes in its presence record, signed by
//! its identity, so that a stranger's (or a new contact's) first message goes to a key that
//! rotates and is deleted, not to the long-term device key.
//!
//! A first contact sealed to the device key stays readable by anyone who later steals that key;
//! one sealed to a prekey stays readable only until the prekey's secret is deleted (the node
//! rotates prekeys weekly and deletes each secret a fixed time after it stops being published).

use bincode::{Decode, Encode};

use crate::Error;
use crate::identity::{check_x25519_public, verify_strict};

/// Domain-separation prefix of the prekey signature.
pub const PREKEY_CONTEXT: &[u8] = b"kolokol-signed-prekey:v1";

/// Longest validity a prekey may claim, in seconds; a signature cannot make a prekey live
/// longer than this past its creation.
pub const MAX_PREKEY_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// An X25519 prekey, signed by an identity key for a validity window.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SignedPrekey {
    /// The X25519 public key.
    pub public: [u8; 32],
    /// Unix seconds when it was made.
    pub created_at: u64,
    /// Unix seconds after which no one may seal to it.
    pub expires_at: u64,
    /// Ed25519 signature by the owner's identity key over [`SignedPrekey::signed_bytes`].
    pub signature: [u8; 64],
}

impl SignedPrekey {
    /// The bytes the identity signs: context, identity key, prekey and validity.
    pub fn signed_bytes(
        identity_key: &[u8; 32],
        public: &[u8; 32],
        created_at: u64,
        expires_at: u64,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(PREKEY_CONTEXT.len() + 80);
        m.extend_from_slice(PREKEY_CONTEXT);
        m.extend_from_slice(identity_key);
        m.extend_from_slice(public);
        m.extend_from_slice(&created_at.to_be_bytes());
        m.extend_from_slice(&expires_at.to_be_bytes());
        m
    }

    /// Signs the prekey whose secret is `secret` (its public half is derived here) for
    /// `identity`, valid from `created_at` to `expires_at`.
    pub fn sign(
        identity: &crate::identity::Identity,
        secret: &[u8; 32],
        created_at: u64,
        expires_at: u64,
    ) -> Result<Self, Error> {
        let public = crate::x25519::public_key(secret);
        let message = Self::signed_bytes(identity.identity_key(), &public, created_at, expires_at);
        let signature = identity.sign(&message)?;
        Ok(Self { public, created_at, expires_at, signature })
    }

    /// Checks the prekey against its owner's identity key at `now`: the signature, a usable
    /// X25519 key, and the validity window.
    pub fn verify(&self, identity_key: &[u8; 32], now: u64) -> Result<(), Error> {
        check_x25519_public(&self.public)?;
        let message =
            Self::signed_bytes(identity_key, &self.public, self.created_at, self.expires_at);
        if !verify_strict(identity_key, &message, &self.signature)? {
            return Err(Error::Envelope("signed prekey signature does not verify"));
        }
        if self.expires_at < now || self.created_at > now.saturating_add(24 * 3600) {
            return Err(Error::Envelope("signed prekey is not valid now"));
        }
        if self.expires_at.saturating_sub(self.created_at) > MAX_PREKEY_LIFETIME_SECS {
            return Err(Error::Envelope("signed prekey claims too long a life"));
        }
        Ok(())
    }
}

/// Domain-separation prefix of the hybrid prekey signature.
pub const HYBRID_PREKEY_CONTEXT: &[u8] = b"kolokol-hybrid-prekey:v1";

/// A hybrid prekey: an X25519 key and an ML-KEM-768 encapsulation key, signed together by an
/// identity key for a validity window. A format 4 first contact needs both: the X25519 key for
/// the Noise `X` handshake, the ML-KEM key for the pre-shared key mixed into it, so that
/// breaking either alone reveals nothing (`docs/PROTOCOL.md`, section 7.5). It is what invites
/// (version 2) carry, so a first contact needs no DHT lookup while the invite's prekey is valid.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct HybridPrekey {
    /// The X25519 public key.
    pub public: [u8; 32],
    /// The ML-KEM-768 encapsulation key.
    pub kem_public: crate::kem::PublicKey,
    /// Unix seconds when it was made.
    pub created_at: u64,
    /// Unix seconds after which no one may seal to it (the owner keeps the secrets longer, see
    /// section 7.3, for envelopes already on their way).
    pub expires_at: u64,
    /// Ed25519 signature by the owner's identity key over [`HybridPrekey::signed_bytes`].
    pub signature: [u8; 64],
}

impl std::fmt::Debug for HybridPrekey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HybridPrekey")
            .field("public", &crate::identity::hex(&self.public))
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The secrets of one of our hybrid prekeys: the X25519 secret and the ML-KEM seed.
pub struct HybridPrekeySecret {
    /// The X25519 secret (clamped on use).
    pub x25519: zeroize::Zeroizing<[u8; 32]>,
    /// The 64-byte ML-KEM-768 seed `d || z`.
    pub kem_seed: zeroize::Zeroizing<[u8; crate::kem::SEED_LEN]>,
}

impl HybridPrekey {
    /// The bytes the identity signs: context, identity key, both public keys and validity.
    pub fn signed_bytes(
        identity_key: &[u8; 32],
        public: &[u8; 32],
        kem_public: &crate::kem::PublicKey,
        created_at: u64,
        expires_at: u64,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(HYBRID_PREKEY_CONTEXT.len() + 80 + kem_public.len());
        m.extend_from_slice(HYBRID_PREKEY_CONTEXT);
        m.extend_from_slice(identity_key);
        m.extend_from_slice(public);
        m.extend_from_slice(kem_public);
        m.extend_from_slice(&created_at.to_be_bytes());
        m.extend_from_slice(&expires_at.to_be_bytes());
        m
    }

    /// Signs the prekey made from `secret` for `identity`, valid from `created_at` to
    /// `expires_at`; the public halves are derived here.
    pub fn sign(
        identity: &crate::identity::Identity,
        secret: &HybridPrekeySecret,
        created_at: u64,
        expires_at: u64,
    ) -> Result<Self, Error> {
        let public = crate::x25519::public_key(&secret.x25519);
        let kem_public = crate::kem::public_key(&secret.kem_seed);
        let message = Self::signed_bytes(
            identity.identity_key(),
            &public,
            &kem_public,
            created_at,
            expires_at,
        );
        let signature = identity.sign(&message)?;
        Ok(Self { public, kem_public, created_at, expires_at, signature })
    }

    /// Checks the prekey against its owner's identity key at `now`, as [`SignedPrekey::verify`]
    /// does, and the ML-KEM key's modulus check besides.
    pub fn verify(&self, identity_key: &[u8; 32], now: u64) -> Result<(), Error> {
        check_x25519_public(&self.public)?;
        crate::kem::check_public(&self.kem_public)?;
        let message = Self::signed_bytes(
            identity_key,
            &self.public,
            &self.kem_public,
            self.created_at,
            self.expires_at,
        );
        if !verify_strict(identity_key, &message, &self.signature)? {
            return Err(Error::Envelope("hybrid prekey signature does not verify"));
        }
        self.check_window(now)
    }

    /// The validity checks alone: not expired at `now`, not from the future (a day of clock
    /// skew allowed), and no longer-lived than [`MAX_PREKEY_LIFETIME_SECS`].
    pub fn check_window(&self, now: u64) -> Result<(), Error> {
        if self.expires_at < now || self.created_at > now.saturating_add(24 * 3600) {
            return Err(Error::Envelope("hybrid prekey is not valid now"));
        }
        if self.expires_at.saturating_sub(self.created_at) > MAX_PREKEY_LIFETIME_SECS {
            return Err(Error::Envelope("hybrid prekey claims too long a life"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
