//! Tests of sealing and opening envelopes, including tampering and misdirection.

use crate::Error;
use crate::envelope::{BUCKETS, open, seal};
use crate::identity::Identity;
use crate::message::{Body, Content};

const NOW: u64 = 1_800_000_000;

struct Pair {
    alice: Identity,
    bob: Identity,
}

fn pair() -> Pair {
    Pair {
        alice: Identity::from_secrets([1; 32], [2; 32]),
        bob: Identity::from_secrets([3; 32], [4; 32]),
    }
}

fn text(len: usize) -> Content {
    Content { id: [7; 16], sent_at_ms: NOW * 1000, body: Body::Text("x".repeat(len)) }
}

fn sealed(p: &Pair, content: &Content, ephemeral: u8) -> Vec<u8> {
    let cert = p.alice.certify(NOW - 10, NOW + 10).unwrap();
    seal(&p.alice, &cert, p.bob.device().public(), content, [ephemeral; 32]).unwrap()
}

#[test]
fn open_of_seal_gives_the_content_and_sender_in_every_bucket() {
    let p = pair();
    for (len, bucket) in [(0, 1024), (700, 1024), (800, 4096), (16_000, 16_384), (60_000, 65_535)] {
        let content = text(len);
        let envelope = sealed(&p, &content, 9);
        assert_eq!(envelope.len(), bucket, "text of {len} bytes");
        assert!(BUCKETS.contains(&envelope.len()));
        let opened = open(p.bob.device(), &envelope, NOW).unwrap();
        assert_eq!(opened.content, content);
        assert_eq!(opened.sender, p.alice.peer_id());
    }
}

#[test]
fn the_plaintext_does_not_appear_on_the_wire() {
    let p = pair();
    let content =
        Content { id: [7; 16], sent_at_ms: 0, body: Body::Text("attack at dawn".repeat(20)) };
    let envelope = sealed(&p, &content, 9);
    assert!(!envelope.windows(14).any(|w| w == b"attack at dawn"));
    assert!(!envelope.windows(32).any(|w| w == p.alice.device().public()));
    assert!(!envelope.windows(32).any(|w| w == p.alice.identity_key()));
}

#[test]
fn flipping_any_byte_is_detected() {
    let p = pair();
    let envelope = sealed(&p, &text(10), 9);
    for i in 0..envelope.len() {
        let mut tampered = envelope.clone();
        tampered[i] ^= 0x01;
        assert!(open(p.bob.device(), &tampered, NOW).is_err(), "flip at byte {i} was accepted");
    }
}

#[test]
fn wrong_recipient_and_wrong_lengths_are_refused() {
    let p = pair();
    let envelope = sealed(&p, &text(10), 9);
    let eve = Identity::from_secrets([5; 32], [6; 32]);
    assert!(open(eve.device(), &envelope, NOW).is_err());
    assert!(open(p.bob.device(), &envelope[..1023], NOW).is_err());
    let mut longer = envelope.clone();
    longer.push(0);
    assert!(open(p.bob.device(), &longer, NOW).is_err());
    assert!(open(p.bob.device(), &[], NOW).is_err());
}

#[test]
fn expired_sender_certificate_is_refused() {
    let p = pair();
    let envelope = sealed(&p, &text(10), 9);
    assert!(matches!(
        open(p.bob.device(), &envelope, NOW + 11),
        Err(Error::CertificateNotValid { .. })
    ));
}

#[test]
fn a_certificate_for_another_device_key_is_refused() {
    let p = pair();
    // Mallory seals with her own device key but presents Alice's certificate.
    let mallory = Identity::from_secrets([8; 32], [9; 32]);
    let alice_cert = p.alice.certify(NOW - 10, NOW + 10).unwrap();
    let envelope = seal(&mallory, &alice_cert, p.bob.device().public(), &text(5), [1; 32]).unwrap();
    assert_eq!(
        open(p.bob.device(), &envelope, NOW),
        Err(Error::Envelope("sender certificate does not match the Noise static key"))
    );
}

#[test]
fn sealing_to_a_small_order_key_is_refused() {
    let p = pair();
    let cert = p.alice.certify(NOW - 10, NOW + 10).unwrap();
    assert!(seal(&p.alice, &cert, &[0; 32], &text(5), [1; 32]).is_err());
}

#[test]
fn too_long_a_text_is_refused_with_its_size() {
    let p = pair();
    let cert = p.alice.certify(NOW - 10, NOW + 10).unwrap();
    let result = seal(&p.alice, &cert, p.bob.device().public(), &text(70_000), [1; 32]);
    assert!(matches!(result, Err(Error::TooLarge { .. })));
}

#[test]
fn different_ephemerals_give_different_envelopes() {
    let p = pair();
    let content = text(10);
    assert_ne!(sealed(&p, &content, 1), sealed(&p, &content, 2));
}
