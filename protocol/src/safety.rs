//! Safety numbers: a number two contacts compare (read aloud, or side by side) to confirm that
//! each holds the other's real identity key, and not one swapped in by whoever passed the
//! invite along.
//!
//! The number is derived from both Ed25519 identity keys alone, sorted so that both sides
//! compute the same digits: BLAKE2b-512 over [`SAFETY_NUMBER_CONTEXT`] and the two keys, whose
//! first 60 bytes become 12 groups of 5 decimal digits (each group is a 5-byte big-endian
//! number modulo 100 000), as in Signal. Device keys are left out on purpose: a device key is
//! replaced on every new certificate, while the identity key is the person's for good, so the
//! number stays valid as long as neither side changes identity.

use blake2::{Blake2b512, Digest};
use libp2p_identity::{PeerId, PublicKey};

use crate::Error;

/// Domain-separation prefix of the safety-number hash, so the digits can never equal a hash
/// made for any other purpose over the same keys.
pub const SAFETY_NUMBER_CONTEXT: &[u8] = b"kolokol-safety-number:v1";

/// Number of 5-digit groups.
pub const SAFETY_NUMBER_GROUPS: usize = 12;

/// The safety number of two identity keys, as 12 space-separated groups of 5 digits; the same
/// whichever order the keys are given in.
pub fn safety_number(a: &[u8; 32], b: &[u8; 32]) -> String {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut hasher = Blake2b512::new();
    hasher.update(SAFETY_NUMBER_CONTEXT);
    hasher.update(first);
    hasher.update(second);
    let digest = hasher.finalize();
    digest
        .chunks_exact(5)
        .take(SAFETY_NUMBER_GROUPS)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
            format!("{:05}", value % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The safety number between two peers, from the identity keys their peer ids carry.
pub fn safety_number_of_peers(a: &PeerId, b: &PeerId) -> Result<String, Error> {
    Ok(safety_number(&identity_key(a)?, &identity_key(b)?))
}

/// The Ed25519 identity key inside a peer id. Kolokol peer ids embed the key itself (an
/// identity multihash of the protobuf-encoded key), so no lookup is needed; a peer id that
/// hashes its key instead, or holds another key type, is refused.
pub fn identity_key(peer: &PeerId) -> Result<[u8; 32], Error> {
    let invalid = |detail| Error::InvalidKey { what: "Ed25519 identity", detail };
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH_CODE {
        return Err(invalid("the peer id does not embed its key"));
    }
    let key = PublicKey::try_decode_protobuf(multihash.digest())
        .map_err(|_| invalid("the peer id holds an unreadable key"))?;
    let key = key.try_into_ed25519().map_err(|_| invalid("the peer id holds a non-Ed25519 key"))?;
    Ok(key.to_bytes())
}

/// The multihash code of the identity "hash" (the bytes themselves).
const IDENTITY_MULTIHASH_CODE: u64 = 0x00;

#[cfg(test)]
mod tests;
