//! Tests of signed prekeys.

use crate::identity::Identity;
use crate::prekey::{MAX_PREKEY_LIFETIME_SECS, SignedPrekey};

const NOW: u64 = 1_800_000_000;

#[test]
fn a_signed_prekey_verifies_for_its_owner_only_and_only_while_valid() {
    let alice = Identity::from_secrets([1; 32], [2; 32]);
    let mallory = Identity::from_secrets([3; 32], [4; 32]);
    let p = SignedPrekey::sign(&alice, &[9; 32], NOW, NOW + 100).unwrap();
    p.verify(alice.identity_key(), NOW + 50).unwrap();
    assert!(p.verify(mallory.identity_key(), NOW).is_err(), "someone else's identity");
    assert!(p.verify(alice.identity_key(), NOW + 101).is_err(), "expired");
    let mut swapped = p.clone();
    swapped.public = [7; 32];
    assert!(swapped.verify(alice.identity_key(), NOW).is_err(), "another key under the signature");
    let long =
        SignedPrekey::sign(&alice, &[9; 32], NOW, NOW + MAX_PREKEY_LIFETIME_SECS + 1).unwrap();
    assert!(long.verify(alice.identity_key(), NOW).is_err(), "too long a life");
}

#[test]
fn a_hybrid_prekey_binds_both_keys_to_its_owner() {
    use crate::prekey::{HybridPrekey, HybridPrekeySecret};
    let alice = Identity::from_secrets([1; 32], [2; 32]);
    let secret = HybridPrekeySecret {
        x25519: zeroize::Zeroizing::new([9; 32]),
        kem_seed: zeroize::Zeroizing::new([8; 64]),
    };
    let p = HybridPrekey::sign(&alice, &secret, NOW, NOW + 100).unwrap();
    p.verify(alice.identity_key(), NOW).unwrap();
    let mut other_kem = p.clone();
    other_kem.kem_public = crate::kem::public_key(&[7; 64]);
    assert!(other_kem.verify(alice.identity_key(), NOW).is_err(), "another ML-KEM key");
    let mut other_x = p.clone();
    other_x.public = [7; 32];
    assert!(other_x.verify(alice.identity_key(), NOW).is_err(), "another X25519 key");
    assert!(p.verify(alice.identity_key(), NOW + 101).is_err(), "expired");
    let bob = Identity::from_secrets([3; 32], [4; 32]);
    assert!(p.verify(bob.identity_key(), NOW).is_err(), "someone else's identity");
}
