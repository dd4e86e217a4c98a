//! Tests of sealing and opening envelopes of both formats and kinds, including tampering and
//! misdirection. The conversation-level attacks are in `conversation/tests.rs`.

use proptest::prelude::*;

use crate::Error;
use crate::envelope::{
    Advertisement, BUCKETS, ENVELOPE_VERSION, ENVELOPE_VERSION_3, HEADER_LEN_3, Header, KEY_ID_LEN,
    KIND_CONVERSATION, KIND_FIRST_CONTACT, Payload, ReceiveSecret, TEXT_BUCKET, key_id, open,
    open_conversation, open_first_contact, peek, seal, seal_conversation, seal_conversation_4,
    seal_first_contact,
};
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

/// A first contact from Alice to Bob's device key, meant for the identity `recipient`.
fn first_contact_to_bobs_key(p: &Pair, recipient: &[u8; 32], payload: &Payload) -> Vec<u8> {
    seal_first_contact(p.alice.device(), p.bob.device().public(), recipient, payload, [5; 32])
        .unwrap()
}

fn text(len: usize) -> Content {
    Content { id: [7; 16], sent_at_ms: NOW * 1000, body: Body::Text("x".repeat(len)) }
}

/// Content of about `len` bytes that is not a text, so it goes in the smallest bucket that
/// holds it (a text never goes below [`TEXT_BUCKET`]): what the bucket edges are tested with.
fn filler(len: usize) -> Content {
    filler_of(vec![b'x'; len])
}

fn filler_of(data: Vec<u8>) -> Content {
    let body = Body::File(crate::file::FileMessage::Chunk { index: 0, data });
    Content { id: [7; 16], sent_at_ms: NOW * 1000, body }
}

fn sealed(p: &Pair, content: &Content, ephemeral: u8) -> Vec<u8> {
    let cert = p.alice.certify(NOW - 10, NOW + 10).unwrap();
    seal(&p.alice, &cert, p.bob.device().public(), content, [ephemeral; 32]).unwrap()
}

#[test]
fn open_of_seal_gives_the_content_and_sender_in_every_bucket() {
    let p = pair();
    for (len, bucket) in [(0, 1024), (700, 1024), (800, 4096), (16_000, 16_384), (60_000, 65_535)] {
        let content = filler(len);
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

/// Format 3: a first-contact or a conversation envelope of `text_len` bytes of text, sealed and
/// opened with the low-level functions, returning the envelope's length.
#[track_caller]
fn check_round_trip_3(conversation: bool, text_len: usize, seed: u8) -> usize {
    let p = pair();
    let data: Vec<u8> =
        (0..text_len).map(|i| b'a' + ((i * 7 + seed as usize) % 26) as u8).collect();
    let content = Content { id: [seed; 16], sent_at_ms: u64::from(seed) << 20, ..filler_of(data) };
    let advertisement = Advertisement {
        seq: u32::from(seed),
        public: *p.alice.device().public(),
        seed: [seed; 32],
    };
    let receive = Identity::from_secrets([40; 32], [41; 32]);
    let receive_seed = [seed.wrapping_add(1); 32];
    let envelope = if conversation {
        let payload = Payload::V1 {
            certificate: None,
            advertisement: Some(advertisement.clone()),
            content: content.clone(),
        };
        let sealed = seal_conversation(
            p.alice.device(),
            receive.device().public(),
            &receive_seed,
            receive.identity_key(),
            &payload,
            [seed | 1; 32],
        )
        .unwrap();
        // The key given loaded, as a conversation keeps its receive keys.
        let secret = ReceiveSecret {
            secret: receive.device().secret(),
            public: receive.device().public(),
            seed: &receive_seed,
            pair: Some(receive.device().pair().clone()),
        };
        let opened =
            open_conversation(&secret, p.alice.device().public(), receive.identity_key(), &sealed)
                .unwrap();
        assert_eq!(opened, payload);
        sealed
    } else {
        let cert = p.alice.certify(NOW - 10, NOW + 10).unwrap();
        let payload = Payload::V1 {
            certificate: Some(cert.clone()),
            advertisement: Some(advertisement.clone()),
            content: content.clone(),
        };
        let sealed = seal_first_contact(
            p.alice.device(),
            p.bob.device().public(),
            p.bob.identity_key(),
            &payload,
            [seed | 1; 32],
        )
        .unwrap();
        let opened =
            open_first_contact(p.bob.device(), p.bob.identity_key(), &sealed, NOW).unwrap();
        assert_eq!(opened.content, content);
        assert_eq!(opened.certificate, cert);
        assert_eq!(opened.advertisement, Some(advertisement));
        assert_eq!(opened.sender, p.alice.peer_id());
        assert_eq!(&opened.ephemeral, &sealed[HEADER_LEN_3..HEADER_LEN_3 + 32]);
        sealed
    };
    let header = peek(&envelope).unwrap();
    let kind = if conversation { KIND_CONVERSATION } else { KIND_FIRST_CONTACT };
    assert_eq!(
        header,
        Header { version: ENVELOPE_VERSION_3, kind, key_id: header.key_id, tag: None }
    );
    envelope.len()
}

/// Text lengths that land in each bucket for both kinds, with room for the certificate and
/// the advertisement.
const TEXT_RANGES: [(usize, usize); 4] = [(0, 600), (1000, 3600), (4200, 16_000), (16_500, 60_000)];

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// open(seal(m)) = m in every bucket, for both kinds, and the envelope is exactly the
    /// bucket's size.
    #[test]
    fn open_of_seal_is_the_identity_in_every_bucket_for_both_kinds(
        bucket in 0..BUCKETS.len(),
        position in 0.0..=1.0f64,
        conversation in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let (low, high) = TEXT_RANGES[bucket];
        let len = low + ((high - low) as f64 * position) as usize;
        prop_assert_eq!(check_round_trip_3(conversation, len, seed), BUCKETS[bucket]);
    }
}

#[test]
fn every_bucket_edge_holds_for_both_kinds() {
    for conversation in [false, true] {
        for (bucket, (low, high)) in TEXT_RANGES.into_iter().enumerate() {
            assert_eq!(check_round_trip_3(conversation, low, 3), BUCKETS[bucket]);
            assert_eq!(check_round_trip_3(conversation, high, 4), BUCKETS[bucket]);
        }
    }
}

/// Every text, one-to-one or to a group, goes in [`TEXT_BUCKET`] or larger in every format, so
/// its size on the wire does not tell a short text from a long one; a receipt still goes in
/// the smallest bucket.
#[test]
fn a_text_is_never_sealed_below_the_text_bucket_in_any_format() {
    let p = pair();
    let cert = p.alice.certify(NOW - 10, NOW + 10).unwrap();
    let receipt = Content { body: Body::Receipt { of: [8; 16] }, ..text(0) };
    let group = Content {
        body: Body::Group(crate::group::GroupMessage {
            group: [3; 16],
            body: crate::group::GroupBody::Text {
                id: [4; 16],
                seq: 1,
                heads: Vec::new(),
                text: "hi".into(),
            },
        }),
        ..text(0)
    };
    let numbered =
        Content { body: Body::NumberedText { series: 1, seq: 1, text: "hi".into() }, ..text(0) };
    let seed = [6; 32];
    for (content, bucket) in [
        (text(1), TEXT_BUCKET),
        (numbered, TEXT_BUCKET),
        (group, TEXT_BUCKET),
        (receipt, BUCKETS[0]),
    ] {
        let v1 = seal(&p.alice, &cert, p.bob.device().public(), &content, [9; 32]).unwrap();
        let payload_1 =
            Payload::V1 { certificate: None, advertisement: None, content: content.clone() };
        let first_3 = seal_first_contact(
            p.alice.device(),
            p.bob.device().public(),
            p.bob.identity_key(),
            &Payload::V1 {
                certificate: Some(cert.clone()),
                advertisement: None,
                content: content.clone(),
            },
            [9; 32],
        )
        .unwrap();
        let conversation_3 = seal_conversation(
            p.alice.device(),
            p.bob.device().public(),
            &seed,
            p.bob.identity_key(),
            &payload_1,
            [9; 32],
        )
        .unwrap();
        let payload_2 = Payload::V2 {
            certificate: None,
            advertisement: None,
            prekey: None,
            mailbox: None,
            content: content.clone(),
        };
        let conversation_4 = seal_conversation_4(
            p.alice.device(),
            p.bob.device().public(),
            &seed,
            p.bob.identity_key(),
            &payload_2,
            [9; 32],
        )
        .unwrap();
        for (format, envelope) in
            [("1", v1), ("3 first", first_3), ("3", conversation_3), ("4", conversation_4)]
        {
            assert_eq!(envelope.len(), bucket, "format {format}, {:?}", content.body);
        }
    }
}

#[test]
fn peek_names_the_format_kind_and_key() {
    let p = pair();
    let legacy = sealed(&p, &text(10), 9);
    assert_eq!(
        peek(&legacy).unwrap(),
        Header { version: ENVELOPE_VERSION, kind: KIND_FIRST_CONTACT, key_id: None, tag: None }
    );
    let mut unknown_kind = legacy.clone();
    unknown_kind[1] = 7;
    assert_eq!(peek(&unknown_kind), Err(Error::Envelope("unsupported envelope kind")));
    let mut unknown_version = legacy.clone();
    unknown_version[0] = 9;
    assert_eq!(peek(&unknown_version), Err(Error::Envelope("unsupported envelope version")));
    assert!(peek(&legacy[..100]).is_err());
    // The format 3 opener refuses format 1.
    assert!(open_first_contact(p.bob.device(), p.bob.identity_key(), &legacy, NOW).is_err());
}

#[test]
fn a_first_contact_to_another_key_is_refused_before_decryption() {
    let p = pair();
    let cert = p.alice.certify(NOW - 10, NOW + 10).unwrap();
    let payload = Payload::V1 { certificate: Some(cert), advertisement: None, content: text(3) };
    let sealed = first_contact_to_bobs_key(&p, p.bob.identity_key(), &payload);
    let eve = Identity::from_secrets([5; 32], [6; 32]);
    assert_eq!(
        open_first_contact(eve.device(), eve.identity_key(), &sealed, NOW),
        Err(Error::Envelope("not for this device key"))
    );
    let without_certificate =
        Payload::V1 { certificate: None, advertisement: None, content: text(3) };
    let sealed = first_contact_to_bobs_key(&p, p.bob.identity_key(), &without_certificate);
    assert_eq!(
        open_first_contact(p.bob.device(), p.bob.identity_key(), &sealed, NOW),
        Err(Error::Envelope("first contact without the sender's certificate"))
    );
}

#[test]
fn key_ids_are_domain_separated_hashes() {
    let p = pair();
    let id = key_id(p.bob.device().public());
    assert_eq!(id.len(), KEY_ID_LEN);
    assert_ne!(id, key_id(p.alice.device().public()));
    assert_ne!(&id[..], &p.bob.device().public()[..KEY_ID_LEN]);
}

/// The unknown-key-share of an unbound envelope: Mallory certifies Bob's device key under her
/// own identity (a certificate needs no proof of the device secret), and Alice, who believes
/// she writes to Mallory, seals to Bob's key. The recipient identity in the prologue makes Bob
/// refuse what was meant for Mallory, for both kinds, so he never takes it as written to him.
#[test]
fn an_envelope_meant_for_another_identity_does_not_open_even_with_the_right_key() {
    let p = pair();
    let mallory = Identity::from_secrets([9; 32], [10; 32]);
    let cert = p.alice.certify(NOW - 10, NOW + 10).unwrap();
    let payload = Payload::V1 { certificate: Some(cert), advertisement: None, content: text(3) };
    let refused = Err(Error::Envelope("decryption failed: not for this recipient, or tampered"));

    let for_mallory = first_contact_to_bobs_key(&p, mallory.identity_key(), &payload);
    assert_eq!(
        open_first_contact(p.bob.device(), p.bob.identity_key(), &for_mallory, NOW).map(|_| ()),
        refused
    );
    let for_bob = first_contact_to_bobs_key(&p, p.bob.identity_key(), &payload);
    assert!(open_first_contact(p.bob.device(), p.bob.identity_key(), &for_bob, NOW).is_ok());

    let receive = Identity::from_secrets([40; 32], [41; 32]);
    let seed = [8; 32];
    let secret = ReceiveSecret {
        secret: receive.device().secret(),
        public: receive.device().public(),
        seed: &seed,
        pair: None,
    };
    let for_mallory = seal_conversation(
        p.alice.device(),
        receive.device().public(),
        &seed,
        mallory.identity_key(),
        &payload,
        [6; 32],
    )
    .unwrap();
    assert_eq!(
        open_conversation(&secret, p.alice.device().public(), p.bob.identity_key(), &for_mallory)
            .map(|_| ()),
        refused
    );
}

/// The format 4 text capacities `docs/PROTOCOL.md` (section 6.4) states: a conversation
/// envelope of 1 KiB holds a text of up to 842 bytes (852 in format 3: the tag costs 8, the
/// two empty options of payload 2 cost 2); a hybrid first contact, with its certificate,
/// advertisement, prekey and mailbox address, is never under 4 KiB and holds up to 1 306 there.
#[test]
fn format_4_capacities_per_bucket() {
    use crate::envelope::bucket_for_kind_4;
    use crate::mailbox_key::MailboxKey;
    use crate::prekey::{HybridPrekey, HybridPrekeySecret};
    let p = pair();
    let secret = HybridPrekeySecret {
        x25519: zeroize::Zeroizing::new([9; 32]),
        kem_seed: zeroize::Zeroizing::new([9; 64]),
    };
    let prekey = HybridPrekey::sign(&p.alice, &secret, NOW, NOW + 10).unwrap();
    let advertisement = Advertisement { seq: 0, public: [9; 32], seed: [9; 32] };
    let largest = |kind: u8, bucket: usize| {
        (0..65_535)
            .take_while(|n| {
                let payload = Payload::V2 {
                    certificate: (kind == KIND_FIRST_CONTACT)
                        .then(|| p.alice.certify(NOW, NOW + 10).unwrap()),
                    advertisement: Some(advertisement.clone()),
                    prekey: (kind == KIND_FIRST_CONTACT).then(|| prekey.clone()),
                    mailbox: (kind == KIND_FIRST_CONTACT)
                        .then(|| *MailboxKey::from_secret(&[1; 32]).address()),
                    content: text(*n),
                };
                let len = crate::codec::encode(&payload).unwrap().len();
                bucket_for_kind_4(kind, len).is_some_and(|b| b <= bucket)
            })
            .last()
    };
    assert_eq!(largest(KIND_CONVERSATION, 1024), Some(842));
    assert_eq!(largest(KIND_FIRST_CONTACT, 1024), None);
    assert_eq!(largest(KIND_FIRST_CONTACT, 4096), Some(1306));
}

/// A resolver given a loaded key pair whose secret is not the one snow sets uses it for
/// nothing: the key is loaded from the secret snow set, and its public half and every
/// Diffie-Hellman, remembered or not, are that secret's.
#[test]
fn a_loaded_pair_of_another_secret_is_never_used() {
    use std::sync::Arc;

    use snow::params::DHChoice;
    use snow::resolvers::CryptoResolver as _;

    use crate::x25519::{KeyPair, public_key};

    let (ours, other) = ([3u8; 32], [5u8; 32]);
    let peer = public_key(&[9u8; 32]);
    let loaded = Arc::new(KeyPair::remembering(&other));
    // The other pair remembers its agreement with this very peer.
    let _ = loaded.diffie_hellman_remembered(&peer);
    for remembering in [false, true] {
        let mut resolver = super::resolver::EnvelopeResolver::new(&ours, &public_key(&ours), None)
            .with_static_pair(Some(loaded.clone()))
            .with_ephemeral_pair(loaded.clone());
        if remembering {
            resolver = resolver.remembering(&peer);
        }
        let mut dh = resolver.resolve_dh(&DHChoice::Curve25519).expect("X25519");
        dh.set(&ours);
        assert_eq!(dh.pubkey(), public_key(&ours));
        let mut shared = [0u8; 32];
        dh.dh(&peer, &mut shared).expect("a shared secret");
        assert_eq!(shared, x25519_dalek::x25519(ours, peer));
    }
    // Given as the ephemeral, the pair is what snow's key generation takes, secret and all.
    let resolver = super::resolver::EnvelopeResolver::new(&ours, &public_key(&ours), None)
        .with_ephemeral_pair(loaded.clone());
    let mut rng = resolver.resolve_rng().expect("the given bytes");
    let mut dh = resolver.resolve_dh(&DHChoice::Curve25519).expect("X25519");
    dh.generate(&mut *rng).expect("the ephemeral");
    assert_eq!(dh.pubkey(), public_key(&other));
    let mut shared = [0u8; 32];
    dh.dh(&peer, &mut shared).expect("a shared secret");
    assert_eq!(shared, x25519_dalek::x25519(other, peer));
}
