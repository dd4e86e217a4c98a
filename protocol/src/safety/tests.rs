//! Tests of safety numbers: the golden value pins the derivation, so that two versions of
//! Kolokol always show their users the same digits.

use crate::identity::Identity;
use crate::safety::{identity_key, safety_number, safety_number_of_peers};

fn identity(seed: u8) -> Identity {
    Identity::from_secrets([seed; 32], [seed.wrapping_add(100); 32])
}

#[track_caller]
fn check(a: u8, b: u8, expected: &str) {
    let (a, b) = (identity(a).peer_id(), identity(b).peer_id());
    assert_eq!(safety_number_of_peers(&a, &b).unwrap(), expected);
    assert_eq!(safety_number_of_peers(&b, &a).unwrap(), expected, "the same on both sides");
}

#[test]
fn golden_safety_numbers() {
    check(1, 2, "84313 76317 02572 69920 06497 94967 84416 90374 16342 57301 35613 79802");
    check(1, 3, "50842 38416 52705 59408 73389 24731 15425 84188 57663 83811 70526 20675");
}

/// This value was also computed outside Rust, with Python's `hashlib.blake2b` over the context
/// string and the two keys, so it checks the derivation and not only its stability.
#[test]
fn raw_keys_golden() {
    assert_eq!(
        safety_number(&[0; 32], &[0xff; 32]),
        "24801 93077 60035 64811 05119 73680 27160 25245 13673 94348 59173 88388"
    );
}

#[test]
fn the_key_comes_out_of_the_peer_id() {
    let id = identity(7);
    let key = identity_key(&id.peer_id()).unwrap();
    let expected = id.keypair().public().try_into_ed25519().unwrap().to_bytes();
    assert_eq!(key, expected);
    // A SHA-256 multihash: a peer id for a key too long to embed, which Kolokol never makes.
    let mut bytes = vec![0x12, 0x20];
    bytes.extend_from_slice(&[7; 32]);
    let hashed = libp2p_identity::PeerId::from_bytes(&bytes).unwrap();
    assert!(identity_key(&hashed).is_err());
}
