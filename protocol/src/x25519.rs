//! X25519 (RFC 7748) for every key agreement and key derivation in this crate, computed by
//! AWS-LC, whose verified assembly (s2n-bignum, with the ADX and BMI2 instructions where the CPU
//! has them) runs a Diffie-Hellman twice as fast as curve25519-dalek's portable Montgomery
//! ladder: 20 against 42 µs (docs/BENCHMARKS.md, "X25519 by AWS-LC").
//!
//! Every envelope costs its sender a key generation and two Diffie-Hellmans and its recipient
//! two, which made X25519 the largest single cost of a text in the daemons' profile. AWS-LC is
//! already in every build of the node (rustls and QUIC use it), so it costs no new library.
//! curve25519-dalek stays as the fallback if AWS-LC ever refuses a key (it never should: every
//! 32-byte string is a valid X25519 private key and a valid u-coordinate), so no input can make
//! these functions panic or give a different answer than RFC 7748 does.

use std::sync::Mutex;

use aws_lc_rs::agreement;

/// The public key of `secret` (the scalar multiplication of the base point by the clamped
/// secret).
pub(crate) fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    KeyPair::new(secret).public
}

/// A private key loaded into AWS-LC with its public half. Loading computes the public key, so a
/// caller that needs both (an ephemeral key) pays for one base-point multiplication, not two,
/// and a key loaded once and kept (the device key, [`KeyPair::remembering`]) pays none again.
pub(crate) struct KeyPair {
    secret: [u8; 32],
    loaded: Option<agreement::PrivateKey>,
    /// The public key of `secret`.
    pub(crate) public: [u8; 32],
    /// For a long-lived key, the last peer key it agreed with and the result.
    last: Option<Mutex<Option<Agreed>>>,
}

/// A shared secret with the peer key it came from.
struct Agreed {
    peer: [u8; 32],
    shared: [u8; 32],
}

impl Drop for Agreed {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.shared);
    }
}

impl KeyPair {
    /// Loads `secret`.
    pub(crate) fn new(secret: &[u8; 32]) -> Self {
        let loaded = agreement::PrivateKey::from_private_key(&agreement::X25519, secret).ok();
        let public = loaded
            .as_ref()
            .and_then(|key| key.compute_public_key().ok())
            .and_then(|public| <[u8; 32]>::try_from(public.as_ref()).ok())
            .unwrap_or_else(|| portable_public_key(secret));
        Self { secret: *secret, loaded, public, last: None }
    }

    /// Loads a key that is kept for many envelopes (the device key, a conversation's receive
    /// key) and remembers its last static-static shared secret
    /// ([`KeyPair::diffie_hellman_remembered`]): every conversation envelope between one device
    /// key and one receive key (all of a one-way conversation's until the recipient's answer
    /// brings a newer key, at most [`crate::conversation::ANSWER_AFTER_ENVELOPES`] apart) has the
    /// same static-static Diffie-Hellman, which is then computed once on each side. What is
    /// remembered is as secret as this key itself, which computes it again from the peer's
    /// public key, lives no longer than the key pair, and is wiped when replaced or dropped;
    /// agreements with ephemeral keys are never remembered.
    pub(crate) fn remembering(secret: &[u8; 32]) -> Self {
        let mut pair = Self::new(secret);
        pair.last = Some(Mutex::new(None));
        pair
    }

    /// The secret this pair was loaded from.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The raw X25519 output with the peer's `public` key, zeros included: the caller refuses
    /// an all-zero secret (the peer's key is of small order, so the "secret" is public knowledge;
    /// RFC 7748 section 6.1 allows refusing it and Noise implementations do).
    pub(crate) fn diffie_hellman(&self, public: &[u8; 32]) -> [u8; 32] {
        let fast = self.loaded.as_ref().and_then(|key| {
            agreement::agree(
                key,
                agreement::UnparsedPublicKey::new(&agreement::X25519, public),
                (),
                |shared| <[u8; 32]>::try_from(shared).map_err(|_| ()),
            )
            .ok()
        });
        // AWS-LC refuses a small-order peer key (an all-zero result); the portable ladder gives
        // the zeros, which every caller here refuses in turn.
        fast.unwrap_or_else(|| x25519_dalek::x25519(self.secret, *public))
    }

    /// [`KeyPair::diffie_hellman`] with a peer's static key, answered from memory when it is
    /// the peer of the last call and this pair remembers ([`KeyPair::remembering`]).
    pub(crate) fn diffie_hellman_remembered(&self, public: &[u8; 32]) -> [u8; 32] {
        let Some(last) = &self.last else { return self.diffie_hellman(public) };
        // Peer keys are public, so comparing them need not be constant-time. The lock is not
        // held while computing, so envelopes sealed at once on several threads do not queue.
        if let Some(agreed) = last.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && agreed.peer == *public
        {
            return agreed.shared;
        }
        let shared = self.diffie_hellman(public);
        *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Agreed { peer: *public, shared });
        shared
    }

    /// The peer key of the shared secret remembered, if any.
    #[cfg(test)]
    pub(crate) fn remembered_peer(&self) -> Option<[u8; 32]> {
        let last = self.last.as_ref()?.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().map(|agreed| agreed.peer)
    }
}

impl Drop for KeyPair {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

fn portable_public_key(secret: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(*secret, x25519_dalek::X25519_BASEPOINT_BYTES)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// AWS-LC and curve25519-dalek agree on every key and every shared secret, so moving to
        /// AWS-LC changed no envelope byte (the golden vectors check that too).
        #[test]
        fn aws_lc_and_dalek_agree(secret in any::<[u8; 32]>(), peer in any::<[u8; 32]>()) {
            prop_assert_eq!(public_key(&secret), portable_public_key(&secret));
            prop_assert_eq!(
                KeyPair::new(&secret).diffie_hellman(&peer),
                x25519_dalek::x25519(secret, peer)
            );
        }
    }

    proptest! {
        /// A key pair that remembers its last agreement answers every peer key, repeated,
        /// alternating or new, as a fresh computation does.
        #[test]
        fn remembering_changes_no_answer(
            secret in any::<[u8; 32]>(),
            peers in proptest::collection::vec(any::<[u8; 32]>(), 1..4),
            order in proptest::collection::vec(0usize..4, 1..12),
        ) {
            let remembering = KeyPair::remembering(&secret);
            prop_assert_eq!(remembering.public, public_key(&secret));
            for i in order {
                let peer = peers[i % peers.len()];
                prop_assert_eq!(
                    remembering.diffie_hellman_remembered(&peer),
                    x25519_dalek::x25519(secret, peer)
                );
            }
        }
    }

    #[test]
    fn a_small_order_peer_key_gives_no_secret() {
        // The identity-like point u = 0 and u = 1 are of small order: every secret maps them to 0.
        for point in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert_eq!(KeyPair::new(&[7; 32]).diffie_hellman(&point), [0; 32]);
        }
        assert_ne!(KeyPair::new(&[7; 32]).diffie_hellman(&public_key(&[9; 32])), [0; 32]);
    }

    #[test]
    fn the_rfc_7748_vector() {
        // RFC 7748 section 6.1: Alice's and Bob's keys and their shared secret.
        let hex = |s: &str| -> [u8; 32] {
            let mut out = [0u8; 32];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex");
            }
            out
        };
        let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob_public = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        assert_eq!(
            public_key(&alice),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            KeyPair::new(&alice).diffie_hellman(&bob_public),
            hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
    }
}
