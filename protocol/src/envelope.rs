//! End-to-end envelopes: one complete one-way Noise handshake message per message, padded to a
//! fixed size bucket.
//!
//! An envelope is `header (2 bytes) || Noise_X message`, where the header is the format version
//! and the envelope kind, and is also the tail of the Noise prologue, so changing it breaks the
//! decryption. The Noise payload is `u32 length || bincode(Sealed) || zero padding`, sized so the
//! whole envelope is exactly one of [`BUCKETS`]. Each envelope stands alone: loss, reordering and
//! duplication by relays and mailboxes cannot desynchronise anything, and no Noise state is ever
//! kept between messages. `docs/PROTOCOL.md` is the normative description.

use std::sync::LazyLock;

use bincode::{Decode, Encode};
use constant_time::ct_eq;
use libp2p_identity::PeerId;
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

use crate::Error;
use crate::codec;
use crate::identity::{DeviceCertificate, DeviceKey, Identity, check_x25519_public};
use crate::message::Content;

/// The only sizes an envelope has on the wire, in bytes. A relay or mailbox learns which of
/// four size classes a message falls in, and nothing finer.
pub const BUCKETS: [usize; 4] = [1024, 4096, 16_384, 65_535];

/// The largest envelope, in bytes.
pub const MAX_ENVELOPE_LEN: usize = BUCKETS[3];

/// Version of the envelope format, the first header byte.
pub const ENVELOPE_VERSION: u8 = 1;

/// Envelope kind: first contact, `Noise_X` to the recipient's device key.
pub const KIND_FIRST_CONTACT: u8 = 1;

/// Header length: version and kind.
pub const HEADER_LEN: usize = 2;

/// Noise overhead of one `X` message: ephemeral key, encrypted static key with its tag, and
/// the payload's tag.
pub const NOISE_X_OVERHEAD: usize = 32 + 48 + 16;

/// Length of the plaintext length prefix inside the payload.
const LENGTH_PREFIX: usize = 4;

/// Prefix of the Noise prologue; the header bytes follow it.
const PROLOGUE_CONTEXT: &[u8] = b"kolokol-envelope";

static NOISE_X: LazyLock<NoiseParams> = LazyLock::new(|| {
    "Noise_X_25519_ChaChaPoly_BLAKE2s".parse().expect("a valid, supported Noise protocol name")
});

/// What the sender encrypts: its certificate (which binds its Noise static key to its identity)
/// and the content.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Sealed {
    /// The sender's device certificate. Its device key must equal the Noise static key.
    pub sender: DeviceCertificate,
    /// The message.
    pub content: Content,
}

/// An opened envelope: who sent it, as proven by the handshake and the certificate, and what
/// it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The sender's peer id, derived from the verified certificate.
    pub sender: PeerId,
    /// The sender's certificate, so the recipient can answer (receipts) without a lookup.
    pub certificate: DeviceCertificate,
    /// The message.
    pub content: Content,
}

/// The smallest bucket that holds `plaintext_len` bytes of sealed content, or `None` if even
/// the largest does not.
pub fn bucket_for(plaintext_len: usize) -> Option<usize> {
    let needed = HEADER_LEN + NOISE_X_OVERHEAD + LENGTH_PREFIX + plaintext_len;
    BUCKETS.into_iter().find(|b| *b >= needed)
}

/// Seals `content` from `sender` (with its current `certificate`) to the recipient's X25519
/// device key. `ephemeral` must be 32 fresh random bytes: it becomes the Noise ephemeral key.
pub fn seal(
    sender: &Identity,
    certificate: &DeviceCertificate,
    recipient_device_key: &[u8; 32],
    content: &Content,
    ephemeral: [u8; 32],
) -> Result<Vec<u8>, Error> {
    check_x25519_public(recipient_device_key)?;
    let body = codec::encode(&Sealed { sender: certificate.clone(), content: content.clone() })?;
    let bucket = bucket_for(body.len()).ok_or(Error::TooLarge {
        what: "sealed message",
        len: body.len(),
        max: MAX_ENVELOPE_LEN - HEADER_LEN - NOISE_X_OVERHEAD - LENGTH_PREFIX,
    })?;
    let header = [ENVELOPE_VERSION, KIND_FIRST_CONTACT];
    let prologue = prologue(&header);
    let resolver = EnvelopeResolver::new(sender.device(), Some(ephemeral));
    let mut handshake = snow::Builder::with_resolver(NOISE_X.clone(), Box::new(resolver))
        .local_private_key(sender.device().secret())
        .and_then(|b| b.remote_public_key(recipient_device_key))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_initiator())
        .map_err(|e| noise("build", e))?;

    let mut plaintext = vec![0u8; bucket - HEADER_LEN - NOISE_X_OVERHEAD];
    let body_len = u32::try_from(body.len()).map_err(|_| Error::TooLarge {
        what: "sealed message",
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    plaintext[..LENGTH_PREFIX].copy_from_slice(&body_len.to_be_bytes());
    plaintext[LENGTH_PREFIX..LENGTH_PREFIX + body.len()].copy_from_slice(&body);

    let mut out = vec![0u8; bucket];
    out[..HEADER_LEN].copy_from_slice(&header);
    let written = handshake
        .write_message(&plaintext, &mut out[HEADER_LEN..])
        .map_err(|e| noise("write", e))?;
    if HEADER_LEN + written != bucket {
        return Err(Error::Envelope("sealed length does not match its bucket"));
    }
    Ok(out)
}

/// Opens an envelope addressed to `recipient`, checking the sender's certificate at `now`
/// (Unix seconds). Any change to any byte makes this fail.
pub fn open(recipient: &DeviceKey, envelope: &[u8], now: u64) -> Result<Opened, Error> {
    if !BUCKETS.contains(&envelope.len()) {
        return Err(Error::Envelope("length is not one of the envelope buckets"));
    }
    let (header, message) = envelope.split_at(HEADER_LEN);
    if header[0] != ENVELOPE_VERSION {
        return Err(Error::Envelope("unsupported envelope version"));
    }
    if header[1] != KIND_FIRST_CONTACT {
        return Err(Error::Envelope("unsupported envelope kind"));
    }
    let mut ephemeral = [0u8; 32];
    ephemeral.copy_from_slice(&message[..32]);
    check_x25519_public(&ephemeral)?;

    let prologue = prologue(&[header[0], header[1]]);
    let resolver = EnvelopeResolver::new(recipient, None);
    let mut handshake = snow::Builder::with_resolver(NOISE_X.clone(), Box::new(resolver))
        .local_private_key(recipient.secret())
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(|e| noise("build", e))?;
    let mut plaintext = vec![0u8; message.len()];
    let read = handshake
        .read_message(message, &mut plaintext)
        .map_err(|_| Error::Envelope("decryption failed: not for this recipient, or tampered"))?;
    let plaintext = &plaintext[..read];
    let remote_static: [u8; 32] = handshake
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(Error::Envelope("handshake did not yield the sender's static key"))?;

    if plaintext.len() < LENGTH_PREFIX {
        return Err(Error::Envelope("payload shorter than its length prefix"));
    }
    let (prefix, rest) = plaintext.split_at(LENGTH_PREFIX);
    let body_len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if body_len > rest.len() {
        return Err(Error::Envelope("length prefix exceeds the payload"));
    }
    let (body, padding) = rest.split_at(body_len);
    if padding.iter().any(|b| *b != 0) {
        return Err(Error::Envelope("padding is not zero"));
    }
    let sealed: Sealed = codec::decode("sealed message", body)?;
    if !ct_eq(&sealed.sender.device_key, &remote_static) {
        return Err(Error::Envelope("sender certificate does not match the Noise static key"));
    }
    let sender = sealed.sender.verify(now)?;
    Ok(Opened { sender, certificate: sealed.sender, content: sealed.content })
}

fn prologue(header: &[u8; HEADER_LEN]) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_CONTEXT.len() + HEADER_LEN);
    p.extend_from_slice(PROLOGUE_CONTEXT);
    p.extend_from_slice(header);
    p
}

fn noise(step: &'static str, e: snow::Error) -> Error {
    Error::Noise { step, detail: e.to_string() }
}

/// A snow resolver that takes its randomness from the caller and knows our device key pair.
///
/// Two jobs: it keeps this crate free of a random number generator of its own (the ephemeral key
/// comes in as bytes), and it hands snow the device public key we already know, because snow's
/// default X25519 re-derives the public key from the private one on every build, a fixed-base
/// multiplication (about 39 µs here) per envelope for nothing.
struct EnvelopeResolver {
    known_secret: [u8; 32],
    known_public: [u8; 32],
    ephemeral: Option<[u8; 32]>,
}

impl EnvelopeResolver {
    fn new(device: &DeviceKey, ephemeral: Option<[u8; 32]>) -> Self {
        Self { known_secret: *device.secret(), known_public: *device.public(), ephemeral }
    }
}

impl Drop for EnvelopeResolver {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.known_secret);
        if let Some(e) = self.ephemeral.as_mut() {
            zeroize::Zeroize::zeroize(e);
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
                known_secret: self.known_secret,
                known_public: self.known_public,
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
struct GivenBytes {
    bytes: Option<[u8; 32]>,
}

impl Drop for GivenBytes {
    fn drop(&mut self) {
        if let Some(b) = self.bytes.as_mut() {
            zeroize::Zeroize::zeroize(b);
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

/// X25519 for snow, with the device public key supplied instead of recomputed, and an all-zero
/// shared secret (a small-order peer key) treated as an error.
struct X25519 {
    secret: [u8; 32],
    public: [u8; 32],
    known_secret: [u8; 32],
    known_public: [u8; 32],
}

impl Drop for X25519 {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
        zeroize::Zeroize::zeroize(&mut self.known_secret);
    }
}

impl X25519 {
    fn set_secret(&mut self, secret: [u8; 32]) {
        self.secret = secret;
        self.public = if ct_eq(&secret, &self.known_secret) {
            self.known_public
        } else {
            x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES)
        };
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
        zeroize::Zeroize::zeroize(&mut secret);
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut secret = [0u8; 32];
        rng.try_fill_bytes(&mut secret)?;
        self.set_secret(secret);
        zeroize::Zeroize::zeroize(&mut secret);
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
        let shared = x25519_dalek::x25519(self.secret, peer);
        if shared == [0u8; 32] {
            return Err(snow::Error::Dh);
        }
        out.get_mut(..32).ok_or(snow::Error::Dh)?.copy_from_slice(&shared);
        Ok(())
    }
}

/// Constant-time comparison of two 32-byte values, without a dependency for one loop.
mod constant_time {
    /// True if `a == b`, in time independent of where they differ.
    pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
        let mut diff = 0u8;
        for (x, y) in a.iter().zip(b) {
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }
}

#[cfg(test)]
mod tests;
