//! Identities: the Ed25519 identity key (the libp2p `PeerId`), the separate X25519 device key
//! used for end-to-end envelopes, and the certificate by which the first vouches for the second.
//!
//! The device key is never derived from the Ed25519 key: converting between the two curves
//! would tie the signing key and the Diffie-Hellman key together, so one compromise would be
//! both. Instead the identity key signs the device key under a domain-separation string.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bincode::{Decode, Encode};
use libp2p_identity::{Keypair, PeerId, PublicKey, ed25519};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;
use crate::x25519::KeyPair;

/// Domain-separation prefix of the device certificate signature, so a signature made for any
/// other purpose (libp2p's own, a presence record) can never pass as a device certificate.
pub const CERTIFICATE_CONTEXT: &[u8] = b"kolokol-device-certificate:v1";

/// The first line of `identity.key`; a version bump changes this line.
const IDENTITY_FILE_MAGIC: &[u8] = b"kolokol-identity-v1\n";

/// Length of `identity.key`: magic, Ed25519 secret, X25519 device secret.
pub const IDENTITY_FILE_LEN: usize = IDENTITY_FILE_MAGIC.len() + 32 + 32;

/// X25519 public keys of small order (and their non-canonical twins), from libsodium's
/// blacklist. A Diffie-Hellman with any of them has an output the attacker knows, so such keys
/// are refused wherever a peer supplies one, before snow sees them.
const SMALL_ORDER_POINTS: [[u8; 32]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Refuses X25519 public keys of small order, which would make a Diffie-Hellman output
/// predictable. X25519 ignores the top bit, so it is cleared before the comparison.
pub fn check_x25519_public(key: &[u8; 32]) -> Result<(), Error> {
    let mut masked = *key;
    masked[31] &= 0x7f;
    if SMALL_ORDER_POINTS.contains(&masked) {
        return Err(Error::InvalidKey { what: "X25519", detail: "small-order point" });
    }
    Ok(())
}

/// Verifies an Ed25519 signature strictly (ed25519-dalek's `verify_strict`): besides the
/// signature equation, it refuses a small-order ("weak") public key, a small-order `R`, and a
/// non-canonical `S`, so nobody can make a key for which forgeries are free. Every Kolokol
/// signature goes through here. `Ok(false)` means the signature does not verify;
/// `Err` means the key is not a usable Ed25519 point.
pub fn verify_strict(
    public: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<bool, Error> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(public)
        .map_err(|_| Error::InvalidKey { what: "Ed25519 identity", detail: "not a point" })?;
    if key.is_weak() {
        return Err(Error::InvalidKey { what: "Ed25519 identity", detail: "small-order point" });
    }
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    Ok(key.verify_strict(message, &signature).is_ok())
}

/// The X25519 key pair a device decrypts envelopes with.
pub struct DeviceKey {
    /// The secret loaded once for every envelope the device seals or opens with it, with its
    /// public half; the secret is wiped when the last holder drops it.
    pair: Arc<KeyPair>,
}

impl DeviceKey {
    /// Builds the key pair from 32 secret bytes (clamped by X25519 on use).
    pub fn from_secret(mut secret: [u8; 32]) -> Self {
        let pair = KeyPair::remembering(&secret);
        secret.zeroize();
        Self { pair: Arc::new(pair) }
    }

    /// The key pair loaded for Diffie-Hellman; only the envelope code needs it.
    pub(crate) fn pair(&self) -> &Arc<KeyPair> {
        &self.pair
    }

    /// The public half, as it appears in certificates and invites.
    pub fn public(&self) -> &[u8; 32] {
        &self.pair.public
    }

    /// The secret half; only the envelope code needs it.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        self.pair.secret()
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey").field("public", &hex(self.public())).finish_non_exhaustive()
    }
}

/// A statement, signed by an Ed25519 identity key, that an X25519 device key belongs to it
/// between two instants.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct DeviceCertificate {
    /// The Ed25519 public key of the identity (the `PeerId` is derived from it).
    pub identity_key: [u8; 32],
    /// The certified X25519 device public key.
    pub device_key: [u8; 32],
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// Ed25519 signature over [`DeviceCertificate::signed_bytes`].
    pub signature: [u8; 64],
}

impl DeviceCertificate {
    /// The bytes the identity key signs: the context string, both keys and the validity window.
    pub fn signed_bytes(
        identity_key: &[u8; 32],
        device_key: &[u8; 32],
        not_before: u64,
        not_after: u64,
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(CERTIFICATE_CONTEXT.len() + 80);
        m.extend_from_slice(CERTIFICATE_CONTEXT);
        m.extend_from_slice(identity_key);
        m.extend_from_slice(device_key);
        m.extend_from_slice(&not_before.to_be_bytes());
        m.extend_from_slice(&not_after.to_be_bytes());
        m
    }

    /// Checks the signature, the device key and the validity window at `now` (Unix seconds),
    /// and returns the certified identity's `PeerId`.
    pub fn verify(&self, now: u64) -> Result<PeerId, Error> {
        let public = ed25519::PublicKey::try_from_bytes(&self.identity_key)
            .map_err(|_| Error::InvalidKey { what: "Ed25519 identity", detail: "not a point" })?;
        check_x25519_public(&self.device_key)?;
        let message = Self::signed_bytes(
            &self.identity_key,
            &self.device_key,
            self.not_before,
            self.not_after,
        );
        if !verify_strict(&self.identity_key, &message, &self.signature)? {
            return Err(Error::BadCertificateSignature);
        }
        if now < self.not_before || now > self.not_after {
            return Err(Error::CertificateNotValid {
                now,
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        Ok(PeerId::from_public_key(&PublicKey::from(public)))
    }

    /// As [`DeviceCertificate::verify`], but a certificate byte for byte equal to one that
    /// `verified` remembers skips the signature and key checks, which depend on nothing but
    /// those bytes; the validity window is checked at `now` every time. A sender's first
    /// contacts carry the same certificate until its conversation starts, and its Ed25519
    /// verification was about a tenth of a receiving daemon's CPU per message.
    pub fn verify_remembered(
        &self,
        now: u64,
        verified: &VerifiedCertificates,
    ) -> Result<PeerId, Error> {
        let Some(peer) = verified.get(self) else {
            let peer = self.verify(now)?;
            verified.remember(self, peer);
            return Ok(peer);
        };
        if now < self.not_before || now > self.not_after {
            return Err(Error::CertificateNotValid {
                now,
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        Ok(peer)
    }

    /// The `PeerId` named by the certificate, without checking anything.
    pub fn claimed_peer_id(&self) -> Result<PeerId, Error> {
        let public = ed25519::PublicKey::try_from_bytes(&self.identity_key)
            .map_err(|_| Error::InvalidKey { what: "Ed25519 identity", detail: "not a point" })?;
        Ok(PeerId::from_public_key(&PublicKey::from(public)))
    }
}

/// How many verified certificates [`VerifiedCertificates`] remembers: about the number of
/// peers that write to a node before their conversations start; past it the oldest is
/// forgotten and costs one verification more when it comes again.
pub const MAX_VERIFIED_CERTIFICATES: usize = 64;

/// Device certificates whose signature and keys checked out, with the `PeerId` each names; a
/// cloneable handle to one shared list. Only a certificate equal in every byte (both keys,
/// the window and the signature) is found in it, so it never vouches for a certificate that
/// was not verified.
#[derive(Clone, Default)]
pub struct VerifiedCertificates(Arc<Mutex<VecDeque<(DeviceCertificate, PeerId)>>>);

impl VerifiedCertificates {
    /// How many certificates it remembers.
    pub fn len(&self) -> usize {
        self.list().len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.list().is_empty()
    }

    fn get(&self, certificate: &DeviceCertificate) -> Option<PeerId> {
        self.list().iter().find(|(c, _)| c == certificate).map(|(_, peer)| *peer)
    }

    fn remember(&self, certificate: &DeviceCertificate, peer: PeerId) {
        let mut list = self.list();
        if list.len() >= MAX_VERIFIED_CERTIFICATES {
            list.pop_front();
        }
        list.push_back((certificate.clone(), peer));
    }

    fn list(&self) -> std::sync::MutexGuard<'_, VecDeque<(DeviceCertificate, PeerId)>> {
        // A panic while holding the lock cannot leave the list half-changed (each change is
        // one push or pop), so a poisoned lock is used as it is.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A node's long-term identity: its Ed25519 key pair and its X25519 device key.
pub struct Identity {
    keypair: Keypair,
    identity_key: [u8; 32],
    device: DeviceKey,
}

impl Identity {
    /// Builds an identity from two 32-byte secrets, typically fresh random bytes.
    pub fn from_secrets(identity_secret: [u8; 32], device_secret: [u8; 32]) -> Self {
        let mut secret = identity_secret;
        let signing = ed25519::SecretKey::try_from_bytes(&mut secret)
            .expect("any 32 bytes are a valid Ed25519 secret key");
        secret.zeroize();
        let ed = ed25519::Keypair::from(signing);
        let identity_key = ed.public().to_bytes();
        Self {
            keypair: Keypair::from(ed),
            identity_key,
            device: DeviceKey::from_secret(device_secret),
        }
    }

    /// The node's libp2p key pair.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    /// The Ed25519 public key bytes.
    pub fn identity_key(&self) -> &[u8; 32] {
        &self.identity_key
    }

    /// The X25519 device key pair.
    pub fn device(&self) -> &DeviceKey {
        &self.device
    }

    /// Signs a certificate for the device key, valid from `not_before` to `not_after`.
    pub fn certify(&self, not_before: u64, not_after: u64) -> Result<DeviceCertificate, Error> {
        let message = DeviceCertificate::signed_bytes(
            &self.identity_key,
            self.device.public(),
            not_before,
            not_after,
        );
        let signature = self.sign(&message)?;
        Ok(DeviceCertificate {
            identity_key: self.identity_key,
            device_key: *self.device.public(),
            not_before,
            not_after,
            signature,
        })
    }

    /// Signs `message` with the Ed25519 identity key. Every signed Kolokol structure (device
    /// certificates, presence records, prekeys, bundles, mailbox proofs) puts its own
    /// domain-separation string at the front of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        self.keypair
            .sign(message)
            .map_err(|e| Error::Signing(e.to_string()))?
            .try_into()
            .map_err(|_| Error::Signing("Ed25519 signature is not 64 bytes".into()))
    }

    /// The contents of `identity.key`: a magic line and both secrets. The caller writes it with
    /// mode 0600; the returned buffer is wiped when dropped.
    pub fn to_file_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(IDENTITY_FILE_LEN));
        out.extend_from_slice(IDENTITY_FILE_MAGIC);
        let ed = self.keypair.clone().try_into_ed25519().expect("identity keys are Ed25519");
        out.extend_from_slice(ed.secret().as_ref());
        out.extend_from_slice(self.device.secret());
        out
    }

    /// Reads the contents of `identity.key`.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != IDENTITY_FILE_LEN || !bytes.starts_with(IDENTITY_FILE_MAGIC) {
            return Err(Error::Malformed {
                what: "identity file",
                detail: format!(
                    "expected {IDENTITY_FILE_LEN} bytes starting with {:?}, found {} bytes",
                    String::from_utf8_lossy(IDENTITY_FILE_MAGIC).trim_end(),
                    bytes.len()
                ),
            });
        }
        let rest = &bytes[IDENTITY_FILE_MAGIC.len()..];
        let mut identity_secret = Zeroizing::new([0u8; 32]);
        identity_secret.copy_from_slice(&rest[..32]);
        let mut device_secret = Zeroizing::new([0u8; 32]);
        device_secret.copy_from_slice(&rest[32..]);
        Ok(Self::from_secrets(*identity_secret, *device_secret))
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("peer_id", &self.peer_id()).finish_non_exhaustive()
    }
}

/// Lower-case hex, for keys in debug output and the safety-number display.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
