//! Presence records: a node's signed statement of where it can be reached, published in the
//! DHT under `/kolokol/presence/<peer id>`.
//!
//! A record carries the node's device certificate, its addresses (relay circuits and direct),
//! a sequence number and an expiry, all signed by the identity key. Every record is verified
//! before it is stored or used: a forged signature, a certificate that does not verify, a key
//! that does not match the peer id it is stored under, an expired record, or one that claims to
//! live longer than [`MAX_PRESENCE_LIFETIME_SECS`] is refused; an older sequence number never
//! replaces a newer record. DHT peers are untrusted storage: the signature is what counts.
//!
//! Since version 3 a record has two parts. What anyone may read: the certificate, the signed
//! prekey, the direct addresses and the circuits through listed relays. What only contacts may
//! read ([`ForContacts`]): the circuits through bridges and the hybrid prekey, padded to one
//! length and sealed with XChaCha20-Poly1305 under a key derived from the node's mailbox
//! address, the secret its invites and first contacts give its contacts (`docs/PROTOCOL.md`
//! section 10.1.1). A censor crawling the DHT so learns no bridge from user records; a DHT
//! server still verifies the whole record, sealed part included, through the signature.

use bincode::{Decode, Encode};
use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use libp2p_identity::PeerId;
use zeroize::Zeroizing;

use crate::Error;
use crate::codec;
use crate::identity::{DeviceCertificate, Identity, verify_strict};
use crate::mailbox_key::MailboxAddress;
use crate::prekey::{HybridPrekey, SignedPrekey};

/// Domain-separation prefix of the presence signature.
pub const PRESENCE_CONTEXT: &[u8] = b"kolokol-presence:v1";

/// Version of the record format.
pub const PRESENCE_VERSION: u8 = 3;

/// Domain-separation prefix of the key that seals the part for contacts.
pub const FOR_CONTACTS_KEY_CONTEXT: &[u8] = b"kolokol-presence-contacts:v1";

/// Length of the XChaCha20-Poly1305 nonce in front of the sealed part.
pub const FOR_CONTACTS_NONCE_LEN: usize = 24;

/// The sealed plaintext is padded to this many bytes (or the next multiple of
/// [`FOR_CONTACTS_PAD_STEP`] above it): room for 8 circuits of 256 bytes and a hybrid prekey,
/// so the length of a record's part says nothing of how many bridges, or which, carry its
/// owner (a node publishes at most 8 addresses).
pub const FOR_CONTACTS_PADDED_LEN: usize = 3584;

/// The step the padding grows in past [`FOR_CONTACTS_PADDED_LEN`].
pub const FOR_CONTACTS_PAD_STEP: usize = 512;

/// Longest sealed part, in bytes: nonce, the padded plaintext of 16 addresses of 256 bytes
/// and a hybrid prekey (5 531 bytes, padded to 5 632), and the tag.
pub const MAX_FOR_CONTACTS_LEN: usize = FOR_CONTACTS_NONCE_LEN + 5632 + 16;

/// Longest encoded record: one byte under what a Kolokol DHT server stores
/// (`MAX_DHT_RECORD_BYTES` in the node, which refuses a value of 8 192 bytes or more), so a
/// record its writer signs is one the DHT can hold.
pub const MAX_PRESENCE_RECORD_LEN: usize = 8191;

/// The DHT key namespace of presence records (`/kolokol/<kind>/<id>`, the libp2p convention).
pub const PRESENCE_NAMESPACE: &str = "/kolokol/presence/";

/// Most addresses one record may carry.
pub const MAX_PRESENCE_ADDRESSES: usize = 16;

/// Longest address, in bytes of its binary multiaddr form.
pub const MAX_PRESENCE_ADDRESS_LEN: usize = 256;

/// Longest validity a record may claim, in seconds. It bounds how long a stale address can be
/// served after a node moves, even if the node never publishes again.
pub const MAX_PRESENCE_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// The signed part of a presence record.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PresenceBody {
    /// [`PRESENCE_VERSION`].
    pub version: u8,
    /// The node's device certificate (identity key, device key, validity).
    pub certificate: DeviceCertificate,
    /// Binary multiaddrs the node can be reached at, relay circuits first.
    pub addresses: Vec<Vec<u8>>,
    /// Increases with every record the node publishes; the highest wins.
    pub seq: u64,
    /// Unix seconds after which nobody may use or store the record.
    pub expires_at: u64,
    /// The node's current signed prekey: a first contact goes to it rather than to the
    /// long-term device key.
    pub prekey: Option<SignedPrekey>,
    /// [`ForContacts`] sealed to the node's mailbox address (nonce, then ciphertext and tag),
    /// or empty when there is nothing for contacts only.
    pub for_contacts: Vec<u8>,
}

/// The part of a presence record only the node's contacts can read.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ForContacts {
    /// Binary multiaddrs of the circuits the node holds through bridges (without its own
    /// `/p2p/`).
    pub addresses: Vec<Vec<u8>>,
    /// The node's current hybrid prekey, so a contact whose copy expired can re-key.
    pub hybrid_prekey: Option<HybridPrekey>,
}

/// The key that seals the part for contacts of a node whose mailbox address is `mailbox`.
fn for_contacts_key(mailbox: &MailboxAddress) -> Zeroizing<[u8; 32]> {
    let mut hasher = Blake2s256::new();
    hasher.update(FOR_CONTACTS_KEY_CONTEXT);
    hasher.update(mailbox);
    Zeroizing::new(hasher.finalize().into())
}

/// The associated data of the sealed part: it belongs to this identity's record of this
/// sequence number, and cannot be moved into another.
fn for_contacts_aad(identity_key: &[u8; 32], seq: u64) -> [u8; 40] {
    let mut aad = [0u8; 40];
    aad[..32].copy_from_slice(identity_key);
    aad[32..].copy_from_slice(&seq.to_be_bytes());
    aad
}

impl ForContacts {
    /// Seals this part for the record of `identity_key` numbered `seq`, under the node's own
    /// `mailbox` address, with a fresh random `nonce`.
    pub fn seal(
        &self,
        mailbox: &MailboxAddress,
        identity_key: &[u8; 32],
        seq: u64,
        nonce: [u8; FOR_CONTACTS_NONCE_LEN],
    ) -> Result<Vec<u8>, Error> {
        check_addresses(&self.addresses)?;
        let plain = Zeroizing::new(pad(&codec::encode(self)?)?);
        let cipher = XChaCha20Poly1305::new(for_contacts_key(mailbox).as_ref().into());
        let aad = for_contacts_aad(identity_key, seq);
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plain, aad: &aad })
            .map_err(|_| Error::Presence("part for contacts cannot be sealed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        if out.len() > MAX_FOR_CONTACTS_LEN {
            return Err(Error::Presence("part for contacts is too long"));
        }
        Ok(out)
    }
}

/// A presence record: the body and the identity key's signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct PresenceRecord {
    /// What is signed.
    pub body: PresenceBody,
    /// Ed25519 signature by `body.certificate.identity_key` over [`PRESENCE_CONTEXT`] and the
    /// encoded body.
    pub signature: [u8; 64],
}

/// The DHT key of `peer`'s presence record.
pub fn record_key(peer: &PeerId) -> Vec<u8> {
    format!("{PRESENCE_NAMESPACE}{peer}").into_bytes()
}

/// The peer a DHT key names, if it is a presence key.
pub fn peer_of_key(key: &[u8]) -> Option<PeerId> {
    std::str::from_utf8(key).ok()?.strip_prefix(PRESENCE_NAMESPACE)?.parse().ok()
}

fn signed_bytes(body: &PresenceBody) -> Result<Vec<u8>, Error> {
    let mut m = PRESENCE_CONTEXT.to_vec();
    m.extend_from_slice(&codec::encode(body)?);
    Ok(m)
}

impl PresenceRecord {
    /// Signs a record for `identity` with its current `certificate`.
    /// `for_contacts` is a part sealed with [`ForContacts::seal`] for this record's `seq`, or
    /// empty.
    pub fn sign(
        identity: &Identity,
        certificate: &DeviceCertificate,
        addresses: Vec<Vec<u8>>,
        seq: u64,
        expires_at: u64,
        prekey: Option<SignedPrekey>,
        for_contacts: Vec<u8>,
    ) -> Result<Self, Error> {
        let body = PresenceBody {
            version: PRESENCE_VERSION,
            certificate: certificate.clone(),
            addresses,
            seq,
            expires_at,
            prekey,
            for_contacts,
        };
        let signature = identity.sign(&checked_signed_bytes(&body)?)?;
        Ok(Self { body, signature })
    }

    /// The record's bytes as stored in the DHT.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        codec::encode(self)
    }

    /// Decodes a record stored under `key` and verifies it at `now` (Unix seconds); returns it
    /// with the peer it belongs to.
    pub fn from_dht(key: &[u8], bytes: &[u8], now: u64) -> Result<(Self, PeerId), Error> {
        let record: PresenceRecord = codec::decode("presence record", bytes)?;
        let peer = record.verify(now)?;
        if peer_of_key(key) != Some(peer) {
            return Err(Error::Presence("is stored under another peer's key"));
        }
        Ok((record, peer))
    }

    /// Verifies the signature, the certificate and the validity at `now`; returns the peer id.
    pub fn verify(&self, now: u64) -> Result<PeerId, Error> {
        let body = &self.body;
        if body.version != PRESENCE_VERSION {
            return Err(Error::Presence("has an unsupported version"));
        }
        let signed = checked_signed_bytes(body)?;
        if body.expires_at < now {
            return Err(Error::Presence("has expired"));
        }
        if body.expires_at > now.saturating_add(MAX_PRESENCE_LIFETIME_SECS) {
            return Err(Error::Presence("claims a lifetime longer than allowed"));
        }
        let peer = body.certificate.verify(now)?;
        if !verify_strict(&body.certificate.identity_key, &signed, &self.signature)? {
            return Err(Error::Presence("signature does not verify"));
        }
        if let Some(prekey) = &body.prekey {
            prekey
                .verify(&body.certificate.identity_key, now)
                .map_err(|_| Error::Presence("carries a signed prekey that does not verify"))?;
        }
        Ok(peer)
    }

    /// True if this record should replace `other` (same peer, both verified).
    pub fn supersedes(&self, other: &PresenceRecord) -> bool {
        self.body.seq > other.body.seq
    }

    /// Opens the part for contacts of a record verified at `now`, with the owner's `mailbox`
    /// address (which only its contacts hold): `None` if the record has none. A part that does
    /// not open under that address (it is another's, or was changed), breaks the address
    /// limits or carries a hybrid prekey that does not verify at `now` is refused.
    pub fn open_for_contacts(
        &self,
        mailbox: &MailboxAddress,
        now: u64,
    ) -> Result<Option<ForContacts>, Error> {
        let sealed = &self.body.for_contacts;
        if sealed.is_empty() {
            return Ok(None);
        }
        if sealed.len() < FOR_CONTACTS_NONCE_LEN {
            return Err(Error::Presence("part for contacts is too short"));
        }
        let (nonce, ciphertext) = sealed.split_at(FOR_CONTACTS_NONCE_LEN);
        let identity_key = &self.body.certificate.identity_key;
        let cipher = XChaCha20Poly1305::new(for_contacts_key(mailbox).as_ref().into());
        let aad = for_contacts_aad(identity_key, self.body.seq);
        let plain = Zeroizing::new(
            cipher
                .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
                .map_err(|_| {
                    Error::Presence("part for contacts does not open with this mailbox address")
                })?,
        );
        let mut part: ForContacts = codec::decode("presence part for contacts", unpad(&plain)?)?;
        check_addresses(&part.addresses)?;
        // A prekey that does not verify now (expired, or a clock apart) is dropped alone: the
        // circuits are what a contact needs most to reach the owner.
        if part.hybrid_prekey.as_ref().is_some_and(|p| p.verify(identity_key, now).is_err()) {
            part.hybrid_prekey = None;
        }
        Ok(Some(part))
    }
}

/// `encoded` behind its length (two bytes, big-endian), padded with zeros to
/// [`FOR_CONTACTS_PADDED_LEN`] or the next [`FOR_CONTACTS_PAD_STEP`] above.
fn pad(encoded: &[u8]) -> Result<Vec<u8>, Error> {
    let len = u16::try_from(encoded.len())
        .map_err(|_| Error::Presence("part for contacts is too long"))?;
    let wanted = (2 + encoded.len()).max(FOR_CONTACTS_PADDED_LEN).div_ceil(FOR_CONTACTS_PAD_STEP)
        * FOR_CONTACTS_PAD_STEP;
    let mut out = Vec::with_capacity(wanted);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(encoded);
    out.resize(wanted, 0);
    Ok(out)
}

/// The encoded part inside padded plaintext.
fn unpad(plain: &[u8]) -> Result<&[u8], Error> {
    let bad = || Error::Presence("part for contacts has a bad length");
    let (head, rest) = plain.split_first_chunk::<2>().ok_or_else(bad)?;
    rest.get(..usize::from(u16::from_be_bytes(*head))).ok_or_else(bad)
}

/// Checks the record's limits and returns the bytes its signature covers (encoded once, for
/// both the size limit and the signature).
fn checked_signed_bytes(body: &PresenceBody) -> Result<Vec<u8>, Error> {
    check_addresses(&body.addresses)?;
    if body.for_contacts.len() > MAX_FOR_CONTACTS_LEN {
        return Err(Error::Presence("part for contacts is too long"));
    }
    let signed = signed_bytes(body)?;
    // On the wire: the encoded body (the signed bytes without the context), then the
    // 64-byte signature.
    if signed.len() - PRESENCE_CONTEXT.len() + 64 > MAX_PRESENCE_RECORD_LEN {
        return Err(Error::Presence("is longer than a DHT server stores"));
    }
    Ok(signed)
}

fn check_addresses(addresses: &[Vec<u8>]) -> Result<(), Error> {
    if addresses.len() > MAX_PRESENCE_ADDRESSES {
        return Err(Error::Presence("carries too many addresses"));
    }
    if addresses.iter().any(|a| a.len() > MAX_PRESENCE_ADDRESS_LEN) {
        return Err(Error::Presence("carries an address that is too long"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
