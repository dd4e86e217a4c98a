//! The primitives snow runs the envelopes' Noise handshakes on: a resolver that takes its
//! randomness from the caller (the protocol crate has no generator of its own) and X25519 that
//! knows our static public key instead of deriving it again for every envelope.

use std::sync::{Arc, OnceLock};

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroize;

use super::constant_time::ct_eq;
use crate::identity::DeviceKey;
use crate::x25519::KeyPair;

/// A snow resolver that takes its randomness from the caller and knows our static key pair
/// (the device key, or a receive key).
///
/// Two jobs: it keeps this crate free of a random number generator of its own (the ephemeral key
/// comes in as bytes), and it hands snow the static public key we already know, because snow's
/// default X25519 re-derives the public key from the private one on every build, a fixed-base
/// multiplication (about 39 µs here) per envelope for nothing.
pub(super) struct EnvelopeResolver {
    known_secret: [u8; 32],
    known_public: [u8; 32],
    /// The static key already loaded (the device key, loaded once for every envelope).
    known_pair: Option<Arc<KeyPair>>,
    ephemeral: Option<[u8; 32]>,
    /// The ephemeral key already loaded by a caller that needed its public half first (a
    /// format 4 tag), so that snow's key generation does not compute it again.
    ephemeral_pair: Option<Arc<KeyPair>>,
    /// The peer's static key, whose Diffie-Hellman with our static key a loaded pair may
    /// remember ([`KeyPair::remembering`]); agreements with ephemeral keys are never remembered.
    remember: Option<[u8; 32]>,
}

impl EnvelopeResolver {
    pub(super) fn new(secret: &[u8; 32], public: &[u8; 32], ephemeral: Option<[u8; 32]>) -> Self {
        Self {
            known_secret: *secret,
            known_public: *public,
            known_pair: None,
            ephemeral,
            ephemeral_pair: None,
            remember: None,
        }
    }

    /// With the device key as the static key: loaded once, and remembering its last
    /// Diffie-Hellman ([`KeyPair::remembering`]).
    pub(super) fn device(device: &DeviceKey, ephemeral: Option<[u8; 32]>) -> Self {
        Self::new(device.secret(), device.public(), ephemeral)
            .with_static_pair(Some(device.pair().clone()))
    }

    /// With the static key already loaded by the caller (a conversation's receive key), if it
    /// is; `pair` must be the pair of the secret given to [`EnvelopeResolver::new`] (a pair of
    /// another secret is never used: the secrets are compared).
    pub(super) fn with_static_pair(mut self, pair: Option<Arc<KeyPair>>) -> Self {
        self.known_pair = pair;
        self
    }

    /// With the peer's static key, the same for every envelope between the two keys: the
    /// static-static Diffie-Hellman with it is the one a loaded pair remembers.
    pub(super) fn remembering(mut self, peer_static: &[u8; 32]) -> Self {
        self.remember = Some(*peer_static);
        self
    }

    /// With the ephemeral key loaded by the caller (`ephemeral` is its secret).
    pub(super) fn with_ephemeral_pair(mut self, pair: Arc<KeyPair>) -> Self {
        self.ephemeral = Some(*pair.secret());
        self.ephemeral_pair = Some(pair);
        self
    }
}

impl Drop for EnvelopeResolver {
    fn drop(&mut self) {
        Zeroize::zeroize(&mut self.known_secret);
        if let Some(e) = self.ephemeral.as_mut() {
            Zeroize::zeroize(e);
        }
    }
}

impl CryptoResolver for EnvelopeResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(GivenBytes { bytes: self.ephemeral }))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                secret: [0; 32],
                public: [0; 32],
                loaded: OnceLock::new(),
                known_secret: self.known_secret,
                known_public: self.known_public,
                known_pair: self.known_pair.clone(),
                ephemeral_pair: self.ephemeral_pair.clone(),
                remember: self.remember,
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// The "random number generator" snow gets: it yields the caller's 32 ephemeral bytes once and
/// then refuses, so no key can silently come from anywhere else.
pub(super) struct GivenBytes {
    pub(super) bytes: Option<[u8; 32]>,
}

impl Drop for GivenBytes {
    fn drop(&mut self) {
        if let Some(b) = self.bytes.as_mut() {
            Zeroize::zeroize(b);
        }
    }
}

impl Random for GivenBytes {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match self.bytes.take() {
            Some(bytes) if dest.len() == bytes.len() => {
                dest.copy_from_slice(&bytes);
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

/// X25519 for snow (computed by [`crate::x25519`]), with the device public key supplied instead
/// of recomputed, and an all-zero shared secret (a small-order peer key) treated as an error.
pub(super) struct X25519 {
    pub(super) secret: [u8; 32],
    pub(super) public: [u8; 32],
    /// `secret` loaded for Diffie-Hellman: at once for a generated key, whose public half the
    /// loading computes; on the first Diffie-Hellman for the known static key, whose public half
    /// is given; never for a key the resolver was given loaded.
    pub(super) loaded: OnceLock<Arc<KeyPair>>,
    pub(super) known_secret: [u8; 32],
    pub(super) known_public: [u8; 32],
    pub(super) known_pair: Option<Arc<KeyPair>>,
    pub(super) ephemeral_pair: Option<Arc<KeyPair>>,
    pub(super) remember: Option<[u8; 32]>,
}

impl Drop for X25519 {
    fn drop(&mut self) {
        Zeroize::zeroize(&mut self.secret);
        Zeroize::zeroize(&mut self.known_secret);
    }
}

impl X25519 {
    fn set_secret(&mut self, secret: [u8; 32]) {
        self.secret = secret;
        self.loaded = OnceLock::new();
        let given = [&self.known_pair, &self.ephemeral_pair]
            .into_iter()
            .flatten()
            .find(|pair| ct_eq(&secret, pair.secret()))
            .cloned();
        if let Some(pair) = given {
            self.public = pair.public;
            self.loaded = OnceLock::from(pair);
        } else if ct_eq(&secret, &self.known_secret) {
            self.public = self.known_public;
        } else {
            let pair = KeyPair::new(&secret);
            self.public = pair.public;
            self.loaded = OnceLock::from(Arc::new(pair));
        }
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        let mut secret = [0u8; 32];
        let n = privkey.len().min(32);
        secret[..n].copy_from_slice(&privkey[..n]);
        self.set_secret(secret);
        Zeroize::zeroize(&mut secret);
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut secret = [0u8; 32];
        rng.try_fill_bytes(&mut secret)?;
        self.set_secret(secret);
        Zeroize::zeroize(&mut secret);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.secret
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let peer: [u8; 32] =
            pubkey.get(..32).and_then(|k| k.try_into().ok()).ok_or(snow::Error::Dh)?;
        let pair = self.loaded.get_or_init(|| Arc::new(KeyPair::new(&self.secret)));
        let shared = if self.remember == Some(peer) {
            pair.diffie_hellman_remembered(&peer)
        } else {
            pair.diffie_hellman(&peer)
        };
        if shared == [0u8; 32] {
            return Err(snow::Error::Dh);
        }
        out.get_mut(..32).ok_or(snow::Error::Dh)?.copy_from_slice(&shared);
        Ok(())
    }
}
