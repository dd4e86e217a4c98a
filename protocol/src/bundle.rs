//! Bootstrap bundles: a signed list of peers and their addresses that one user can pass to
//! another out of band (a file, a chat message, a QR code), so a node with no working bootstrap
//! address can still join.
//!
//! The text form is `kolokolpeers1` followed by base58 of `bincode(Bundle)`. The exporting
//! node signs the bundle so the importer can see who vouches for it and that it was not altered
//! on the way; the addresses inside remain hints, never trust: a node dials them and believes only
//! what the peers it reaches can prove.

use bincode::{Decode, Encode};
use libp2p_identity::{PeerId, ed25519};

use crate::Error;
use crate::codec;
use crate::identity::Identity;

/// Every bundle's text starts with this.
pub const BUNDLE_PREFIX: &str = "kolokolpeers1";

/// Version of the bundle format.
pub const BUNDLE_VERSION: u8 = 1;

/// Most peers one bundle may list.
pub const MAX_BUNDLE_PEERS: usize = 256;

/// Most addresses per peer.
pub const MAX_BUNDLE_ADDRESSES: usize = 8;

/// Longest address, in bytes of its binary multiaddr form.
pub const MAX_BUNDLE_ADDRESS_LEN: usize = 256;

/// Longest bundle text accepted, in bytes, once whitespace is removed: room for the prefix and
/// base58 of the largest bundle that decodes ([`codec::MAX_DECODE_LEN`] bytes make about
/// 89 500 base58 characters).
pub const MAX_BUNDLE_TEXT_LEN: usize = 96 * 1024;

const BUNDLE_CONTEXT: &[u8] = b"kolokol-bootstrap-bundle:v1";

/// One peer in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct BundlePeer {
    /// The peer id, in its binary form.
    pub peer_id: Vec<u8>,
    /// Binary multiaddrs (without the `/p2p/` suffix).
    pub addresses: Vec<Vec<u8>>,
    /// Whether the exporter saw this peer serve as a relay.
    pub relay: bool,
}

/// The signed part of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct BundleBody {
    /// [`BUNDLE_VERSION`].
    pub version: u8,
    /// The exporter's Ed25519 identity key.
    pub exporter: [u8; 32],
    /// When it was exported, Unix seconds.
    pub created_at: u64,
    /// The peers.
    pub peers: Vec<BundlePeer>,
}

/// A bootstrap bundle.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Bundle {
    /// What is signed.
    pub body: BundleBody,
    /// Ed25519 signature by `body.exporter` over the context string and the encoded body.
    pub signature: [u8; 64],
}

fn signed_bytes(body: &BundleBody) -> Result<Vec<u8>, Error> {
    let mut m = BUNDLE_CONTEXT.to_vec();
    m.extend_from_slice(&codec::encode(body)?);
    Ok(m)
}

impl Bundle {
    /// Signs a bundle of `peers` as `identity`, at `now` (Unix seconds).
    pub fn sign(identity: &Identity, peers: Vec<BundlePeer>, now: u64) -> Result<Self, Error> {
        let body = BundleBody {
            version: BUNDLE_VERSION,
            exporter: *identity.identity_key(),
            created_at: now,
            peers,
        };
        check_limits(&body)?;
        let signature = identity.sign(&signed_bytes(&body)?)?;
        Ok(Self { body, signature })
    }

    /// The text form.
    pub fn to_text(&self) -> Result<String, Error> {
        Ok(format!("{BUNDLE_PREFIX}{}", bs58::encode(codec::encode(self)?).into_string()))
    }

    /// Reads and verifies the text form; returns the bundle and the exporter's peer id.
    /// Whitespace anywhere is ignored (base58 has none), since mail and chat apps wrap long
    /// text.
    pub fn from_text(text: &str) -> Result<(Self, PeerId), Error> {
        let text = crate::invite::without_whitespace(text);
        if text.len() > MAX_BUNDLE_TEXT_LEN {
            return Err(Error::Bundle(format!("is longer than {MAX_BUNDLE_TEXT_LEN} bytes")));
        }
        let encoded = text
            .strip_prefix(BUNDLE_PREFIX)
            .ok_or_else(|| Error::Bundle(format!("does not start with {BUNDLE_PREFIX:?}")))?;
        let bytes = bs58::decode(encoded)
            .into_vec()
            .map_err(|e| Error::Bundle(format!("is not valid base58: {e}")))?;
        // bincode's own words (`UnexpectedEnd { additional: 30 }`) mean nothing to a user.
        let bundle: Bundle = codec::decode("bootstrap bundle", &bytes).map_err(|e| match e {
            Error::TooLarge { len, max, .. } => {
                Error::Bundle(format!("is {len} bytes once decoded, over the limit of {max}"))
            }
            _ => Error::Bundle("is corrupted or cut short".into()),
        })?;
        if bundle.body.version != BUNDLE_VERSION {
            return Err(Error::Bundle(format!(
                "has version {}, this kolokol reads version {BUNDLE_VERSION}",
                bundle.body.version
            )));
        }
        check_limits(&bundle.body)?;
        let key = ed25519::PublicKey::try_from_bytes(&bundle.body.exporter)
            .map_err(|_| Error::Bundle("names an exporter key that is not a key".into()))?;
        let verified = crate::identity::verify_strict(
            &bundle.body.exporter,
            &signed_bytes(&bundle.body)?,
            &bundle.signature,
        )
        .map_err(|e| Error::Bundle(format!("names an unusable exporter key: {e}")))?;
        if !verified {
            return Err(Error::Bundle(
                "signature does not verify: it was altered after export".into(),
            ));
        }
        let exporter = PeerId::from_public_key(&libp2p_identity::PublicKey::from(key));
        Ok((bundle, exporter))
    }
}

fn check_limits(body: &BundleBody) -> Result<(), Error> {
    if body.peers.len() > MAX_BUNDLE_PEERS {
        return Err(Error::Bundle(format!("lists more than {MAX_BUNDLE_PEERS} peers")));
    }
    for p in &body.peers {
        if p.addresses.len() > MAX_BUNDLE_ADDRESSES
            || p.addresses.iter().any(|a| a.len() > MAX_BUNDLE_ADDRESS_LEN)
            || p.peer_id.len() > 64
        {
            return Err(Error::Bundle("lists a peer with too many or too long addresses".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
