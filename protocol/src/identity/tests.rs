//! Tests of identities and device certificates.

use crate::Error;
use crate::identity::{
    DeviceCertificate, Identity, MAX_VERIFIED_CERTIFICATES, VerifiedCertificates,
    check_x25519_public,
};

fn identity(seed: u8) -> Identity {
    Identity::from_secrets([seed; 32], [seed.wrapping_add(100); 32])
}

#[track_caller]
fn check(cert: &DeviceCertificate, now: u64, expected: Result<(), Error>) {
    assert_eq!(cert.verify(now).map(|_| ()), expected);
    // Through a list of verified certificates: the first time it is verified, the second it
    // may be found; the outcome is the same both times.
    let verified = VerifiedCertificates::default();
    for _ in 0..2 {
        assert_eq!(cert.verify_remembered(now, &verified).map(|_| ()), expected);
    }
}

#[test]
fn a_remembered_certificate_keeps_its_window_and_vouches_for_no_other_bytes() {
    let id = identity(6);
    let cert = id.certify(100, 200).unwrap();
    let verified = VerifiedCertificates::default();
    for _ in 0..2 {
        assert_eq!(cert.verify_remembered(150, &verified).unwrap(), id.peer_id());
    }
    assert_eq!(verified.len(), 1);
    assert_eq!(
        cert.verify_remembered(201, &verified),
        Err(Error::CertificateNotValid { now: 201, not_before: 100, not_after: 200 })
    );
    let mut extended = cert.clone();
    extended.not_after = 10_000;
    assert_eq!(extended.verify_remembered(150, &verified), Err(Error::BadCertificateSignature));
    let mut flipped = cert;
    flipped.signature[10] ^= 1;
    assert_eq!(flipped.verify_remembered(150, &verified), Err(Error::BadCertificateSignature));
    assert_eq!(verified.len(), 1, "a certificate that fails is not remembered");

    // Bounded: past the cap the oldest goes.
    for seed in 0..MAX_VERIFIED_CERTIFICATES as u8 {
        let other = identity(seed.wrapping_add(30)).certify(100, 200).unwrap();
        other.verify_remembered(150, &verified).unwrap();
    }
    assert_eq!(verified.len(), MAX_VERIFIED_CERTIFICATES);
}

#[test]
fn certificate_verifies_inside_its_window_and_names_the_peer() {
    let id = identity(1);
    let cert = id.certify(100, 200).unwrap();
    assert_eq!(cert.verify(150).unwrap(), id.peer_id());
    check(&cert, 100, Ok(()));
    check(&cert, 200, Ok(()));
}

#[test]
fn certificate_outside_its_window_is_refused() {
    let cert = identity(2).certify(100, 200).unwrap();
    let not_valid = |now| Err(Error::CertificateNotValid { now, not_before: 100, not_after: 200 });
    check(&cert, 99, not_valid(99));
    check(&cert, 201, not_valid(201));
}

#[test]
fn any_changed_field_breaks_the_signature() {
    let cert = identity(3).certify(100, 200).unwrap();
    let other = identity(4);
    let mut extended = cert.clone();
    extended.not_after = 10_000;
    check(&extended, 150, Err(Error::BadCertificateSignature));
    let mut swapped_device = cert.clone();
    swapped_device.device_key = *other.device().public();
    check(&swapped_device, 150, Err(Error::BadCertificateSignature));
    let mut swapped_identity = cert.clone();
    swapped_identity.identity_key = *other.identity_key();
    check(&swapped_identity, 150, Err(Error::BadCertificateSignature));
    let mut flipped = cert;
    flipped.signature[10] ^= 1;
    check(&flipped, 150, Err(Error::BadCertificateSignature));
}

#[test]
fn identity_file_round_trips_and_rejects_other_files() {
    let id = identity(5);
    let bytes = id.to_file_bytes();
    let back = Identity::from_file_bytes(&bytes).unwrap();
    assert_eq!(back.peer_id(), id.peer_id());
    assert_eq!(back.device().public(), id.device().public());
    assert!(Identity::from_file_bytes(&bytes[..bytes.len() - 1]).is_err());
    assert!(Identity::from_file_bytes(b"").is_err());
    let mut wrong_magic = bytes.to_vec();
    wrong_magic[0] ^= 0x20;
    assert!(Identity::from_file_bytes(&wrong_magic).is_err());
}

#[test]
fn small_order_keys_are_refused_with_or_without_the_top_bit() {
    assert!(check_x25519_public(&[0; 32]).is_err());
    let mut one = [0u8; 32];
    one[0] = 1;
    assert!(check_x25519_public(&one).is_err());
    one[31] |= 0x80;
    assert!(check_x25519_public(&one).is_err());
    assert!(check_x25519_public(identity(6).device().public()).is_ok());
}

/// A small-order ("weak") identity key: the encoding of the neutral point. With it, the
/// signature `R = neutral point, S = 0` satisfies the plain Ed25519 equation for every message,
/// so anyone can sign anything. The permissive verification libp2p exposes accepts that
/// forgery; ours refuses the key outright, for certificates and every other signed structure.
#[test]
fn a_small_order_identity_key_forges_nothing() {
    let mut weak = [0u8; 32];
    weak[0] = 1;
    let mut forged = [0u8; 64];
    forged[0] = 1;
    let cert = DeviceCertificate {
        identity_key: weak,
        device_key: *identity(3).device().public(),
        not_before: 100,
        not_after: 200,
        signature: forged,
    };
    let signed = DeviceCertificate::signed_bytes(&weak, &cert.device_key, 100, 200);
    let permissive = libp2p_identity::ed25519::PublicKey::try_from_bytes(&weak).unwrap();
    assert!(permissive.verify(&signed, &forged), "the permissive check takes the forgery");
    assert_eq!(
        cert.verify(150),
        Err(Error::InvalidKey { what: "Ed25519 identity", detail: "small-order point" })
    );
    assert!(crate::identity::verify_strict(&weak, b"anything", &forged).is_err());
    // The same forgery on a prekey, with the weak key as its owner.
    let prekey = crate::prekey::SignedPrekey {
        public: *identity(4).device().public(),
        created_at: 100,
        expires_at: 200,
        signature: forged,
    };
    assert!(prekey.verify(&weak, 150).is_err());
}
