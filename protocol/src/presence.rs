//! Presence records: a node's signed statement of where it can be reached, published in the
//! DHT under `/kolokol/presence/<peer id>`.
//!
//! A record carries the node's device certificate, its addresses (relay circuits and direct),
//! a sequence number and an expiry, all signed by the identity key. Every record is verified
//! before it is stored or used: a forged signature, a certificate that does not verify, a key
//! that does not match the peer id it is stored under, an expired record, or one that claims to
//! live longer than [`MAX_PRESENCE_LIFETIME_SECS`] is refused; an older sequence number never
//! replaces a newer record. DHT peers are untrusted storage: the signature is what counts.

use bincode::{Decode, Encode};
use libp2p_identity::PeerId;

use crate::Error;
use crate::codec;
use crate::identity::{DeviceCertificate, Identity, verify_strict};
use crate::prekey::SignedPrekey;

/// Domain-separation prefix of the presence signature.
pub const PRESENCE_CONTEXT: &[u8] = b"kolokol-presence:v1";

/// Version of the record format.
pub const PRESENCE_VERSION: u8 = 2;

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
    pub fn sign(
        identity: &Identity,
        certificate: &DeviceCertificate,
        addresses: Vec<Vec<u8>>,
        seq: u64,
        expires_at: u64,
        prekey: Option<SignedPrekey>,
    ) -> Result<Self, Error> {
        let body = PresenceBody {
            version: PRESENCE_VERSION,
            certificate: certificate.clone(),
            addresses,
            seq,
            expires_at,
            prekey,
        };
        check_limits(&body)?;
        let signature = identity.sign(&signed_bytes(&body)?)?;
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
        check_limits(body)?;
        if body.expires_at < now {
            return Err(Error::Presence("has expired"));
        }
        if body.expires_at > now.saturating_add(MAX_PRESENCE_LIFETIME_SECS) {
            return Err(Error::Presence("claims a lifetime longer than allowed"));
        }
        let peer = body.certificate.verify(now)?;
        if !verify_strict(&body.certificate.identity_key, &signed_bytes(body)?, &self.signature)? {
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
}

fn check_limits(body: &PresenceBody) -> Result<(), Error> {
    if body.addresses.len() > MAX_PRESENCE_ADDRESSES {
        return Err(Error::Presence("carries too many addresses"));
    }
    if body.addresses.iter().any(|a| a.len() > MAX_PRESENCE_ADDRESS_LEN) {
        return Err(Error::Presence("carries an address that is too long"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
