//! Tests of the conversation key schedule: the normal flow, rotation and deletion, replay, and
//! the attacks `DESIGN.md` §6 asks for (tampering, replay, reordering, misdirection, forged
//! certificates, and key compromise before and after deletion).

use std::collections::HashMap;

use proptest::prelude::*;

use crate::Error;
use crate::conversation::{
    ANSWER_AFTER_ENVELOPES, ANSWER_AFTER_SECS, ANSWER_AGAIN_SECS, Conversation, MAX_RECEIVE_KEYS,
    MAX_SEEN_EPHEMERALS, MAX_SEEN_FIRST_CONTACTS, MAX_STATE_LEN, MAX_SUPERSEDED_SECS,
    RECEIVE_KEY_GRACE_SECS, Randomness,
};
use crate::envelope::{
    self, Advertisement, KIND_CONVERSATION, KIND_FIRST_CONTACT, Payload, ReceiveSecret, key_id,
    peek,
};
use crate::identity::{DeviceCertificate, Identity};
use crate::message::{Body, Content, MessageId};

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 24 * 3600;

/// A deterministic stand-in for the caller's CSPRNG (xorshift64*), which also remembers every
/// block it handed out, so a test can name the secrets a key was made from.
struct Rng {
    state: u64,
    handed_out: Vec<[u8; Randomness::LEN]>,
}

impl Rng {
    fn new(seed: u64) -> Self {
        Self { state: seed | 1, handed_out: Vec::new() }
    }

    fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn block(&mut self) -> [u8; Randomness::LEN] {
        let mut bytes = [0u8; Randomness::LEN];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        self.handed_out.push(bytes);
        bytes
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One device: its identity, its certificate, and its conversation with the other side.
struct Side {
    identity: Identity,
    certificate: DeviceCertificate,
    conversation: Conversation,
    rng: Rng,
}

impl Side {
    fn seal(&mut self, id: u8, now: u64) -> Vec<u8> {
        let randomness = Randomness::from_bytes(self.rng.block());
        self.conversation
            .seal(self.identity.device(), &self.certificate, &content(id, now), randomness, now)
            .unwrap()
    }

    fn open(&mut self, sealed: &[u8], now: u64) -> Result<Content, Error> {
        self.conversation.open(&self.identity, sealed, now)
    }

    /// The receive secrets this side made, in order: each seal that rotated used its block's
    /// bytes 32..96. Returns (secret, seed) of every block, used or not.
    fn made_secrets(&self) -> Vec<([u8; 32], [u8; 32])> {
        self.rng
            .handed_out
            .iter()
            .map(|b| (b[32..64].try_into().unwrap(), b[64..96].try_into().unwrap()))
            .collect()
    }
}

fn identity(seed: u8) -> Identity {
    Identity::from_secrets([seed; 32], [seed.wrapping_add(1); 32])
}

fn certificate(identity: &Identity) -> DeviceCertificate {
    identity.certify(NOW - 10, NOW + 365 * DAY).unwrap()
}

/// Alice and Bob, each knowing the other's certificate (as after exchanging invites).
fn pair() -> (Side, Side) {
    let alice = identity(1);
    let bob = identity(3);
    let alice_cert = certificate(&alice);
    let bob_cert = certificate(&bob);
    let a = Side {
        conversation: Conversation::new(bob_cert.clone(), NOW).unwrap(),
        identity: alice,
        certificate: alice_cert.clone(),
        rng: Rng::new(11),
    };
    let b = Side {
        conversation: Conversation::new(alice_cert, NOW).unwrap(),
        identity: bob,
        certificate: bob_cert,
        rng: Rng::new(22),
    };
    (a, b)
}

/// Alice and Bob after one round trip: Alice's first contact, Bob's conversation reply.
fn established() -> (Side, Side) {
    let (mut a, mut b) = pair();
    let first = a.seal(1, NOW);
    b.open(&first, NOW).unwrap();
    let reply = b.seal(2, NOW);
    assert_eq!(peek(&reply).unwrap().kind, KIND_CONVERSATION);
    a.open(&reply, NOW).unwrap();
    (a, b)
}

fn content(id: u8, now: u64) -> Content {
    Content { id: [id; 16], sent_at_ms: now * 1000, body: Body::Text(format!("message {id}")) }
}

fn kind(sealed: &[u8]) -> u8 {
    peek(sealed).unwrap().kind
}

fn key_id_of(sealed: &[u8]) -> [u8; 8] {
    peek(sealed).unwrap().key_id.unwrap()
}

#[test]
fn first_contact_then_conversation_envelopes_both_ways() {
    let (mut a, mut b) = pair();
    let first = a.seal(1, NOW);
    assert_eq!(kind(&first), KIND_FIRST_CONTACT);
    assert_eq!(key_id_of(&first), key_id(b.identity.device().public()));
    assert_eq!(b.open(&first, NOW).unwrap(), content(1, NOW));
    assert!(b.conversation.has_peer_receive_key());

    let reply = b.seal(2, NOW);
    assert_eq!(kind(&reply), KIND_CONVERSATION);
    assert_eq!(key_id_of(&reply), a.conversation.receive_key_ids()[0]);
    assert_eq!(a.open(&reply, NOW).unwrap(), content(2, NOW));

    let next = a.seal(3, NOW);
    assert_eq!(kind(&next), KIND_CONVERSATION);
    assert_eq!(key_id_of(&next), b.conversation.receive_key_ids()[0]);
    assert_eq!(b.open(&next, NOW).unwrap(), content(3, NOW));
    assert_eq!(b.conversation.peer_id().unwrap(), a.identity.peer_id());
}

#[test]
fn receive_keys_rotate_once_per_round_trip() {
    let (mut a, mut b) = pair();
    // Three messages before any answer all advertise Alice's first key.
    for id in 1..=3 {
        let sealed = a.seal(id, NOW);
        b.open(&sealed, NOW).unwrap();
    }
    assert_eq!(a.conversation.receive_key_ids().len(), 1);
    // Bob answers twice on Alice's key 0; Alice has not answered, so Bob's key 0 stays.
    let r1 = b.seal(10, NOW);
    let r2 = b.seal(11, NOW);
    assert_eq!(b.conversation.receive_key_ids().len(), 1);
    assert_eq!(key_id_of(&r1), a.conversation.receive_key_ids()[0]);
    a.open(&r1, NOW).unwrap();
    a.open(&r2, NOW).unwrap();
    // Bob has used Alice's key 0, so her next envelope brings key 1.
    let next = a.seal(4, NOW + 1);
    assert_eq!(a.conversation.receive_key_ids().len(), 2);
    b.open(&next, NOW + 1).unwrap();
    let answer = b.seal(12, NOW + 1);
    assert_eq!(key_id_of(&answer), a.conversation.receive_key_ids()[1]);
    a.open(&answer, NOW + 1).unwrap();
}

#[test]
fn a_delayed_envelope_cannot_roll_the_peer_key_back() {
    let (mut a, mut b) = established();
    // Bob has used Alice's key 0, so these two advertise her key 1.
    let on_key_1 = a.seal(3, NOW);
    let also_on_key_1 = a.seal(4, NOW);
    b.open(&on_key_1, NOW).unwrap();
    let reply = b.seal(5, NOW);
    a.open(&reply, NOW).unwrap();
    // Bob has used key 1 now: this one advertises key 2.
    let on_key_2 = a.seal(6, NOW);
    assert_eq!(a.conversation.receive_key_ids().len(), 3);
    // Delivered newest first: the older advertisement must not replace the newer one.
    b.open(&on_key_2, NOW).unwrap();
    b.open(&also_on_key_1, NOW).unwrap();
    let to_alice = b.seal(7, NOW);
    assert_eq!(key_id_of(&to_alice), a.conversation.receive_key_ids()[2]);
}

#[test]
fn flipping_any_byte_of_either_kind_is_rejected_and_changes_nothing() {
    for conversation_kind in [false, true] {
        let (mut a, mut b) = if conversation_kind { established() } else { pair() };
        let sealed = a.seal(9, NOW);
        assert_eq!(kind(&sealed) == KIND_CONVERSATION, conversation_kind);
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert!(b.open(&tampered, NOW).is_err(), "flip at byte {i} was accepted");
        }
        // The rejected forgeries left no trace: the real envelope still opens, once.
        assert_eq!(b.open(&sealed, NOW).unwrap(), content(9, NOW));
        assert_eq!(b.open(&sealed, NOW), Err(Error::Replayed));
    }
}

#[test]
fn replaying_an_envelope_of_either_kind_is_rejected() {
    let (mut a, mut b) = pair();
    let first = a.seal(1, NOW);
    b.open(&first, NOW).unwrap();
    assert_eq!(b.open(&first, NOW), Err(Error::Replayed));
    let reply = b.seal(2, NOW);
    a.open(&reply, NOW).unwrap();
    assert_eq!(a.open(&reply, NOW + 100), Err(Error::Replayed));
    // The replay cache survives a restart.
    let mut restored = Conversation::from_bytes(&a.conversation.to_bytes().unwrap()).unwrap();
    assert_eq!(restored.open(&a.identity, &reply, NOW + 200), Err(Error::Replayed));
}

#[test]
fn a_first_contact_envelope_older_than_the_replay_window_is_rejected() {
    let (mut a, mut b) = pair();
    let first = a.seal(1, NOW);
    let late = NOW + crate::conversation::MAX_FIRST_CONTACT_AGE_SECS + 1;
    assert_eq!(
        b.open(&first, late),
        Err(Error::Envelope("first contact older than the replay window"))
    );
}

#[test]
fn reordered_and_duplicated_hundred_envelopes_are_each_accepted_exactly_once() {
    let (mut a, mut b) = pair();
    let mut sealed = Vec::new();
    // Ten first-contact envelopes before Alice hears from Bob...
    for id in 0..10 {
        sealed.push(a.seal(id, NOW));
    }
    // ...then Bob's first contact reaches her, and ninety conversation envelopes follow.
    let hello = b.seal(200, NOW);
    a.open(&hello, NOW).unwrap();
    for id in 10..100 {
        sealed.push(a.seal(id, NOW));
    }
    assert_eq!(sealed.iter().filter(|s| kind(s) == KIND_FIRST_CONTACT).count(), 10);
    let mut wire: Vec<Vec<u8>> = sealed.iter().chain(sealed.iter()).cloned().collect();
    let mut rng = Rng::new(99);
    for i in (1..wire.len()).rev() {
        let j = rng.below(i + 1);
        wire.swap(i, j);
    }
    let mut accepted: HashMap<MessageId, usize> = HashMap::new();
    for envelope in &wire {
        match b.open(envelope, NOW + 60) {
            Ok(c) => *accepted.entry(c.id).or_default() += 1,
            Err(e) => assert_eq!(e, Error::Replayed),
        }
    }
    assert_eq!(accepted.len(), 100);
    assert!(accepted.values().all(|n| *n == 1));
}

#[test]
fn an_envelope_for_someone_else_is_rejected() {
    let (mut a, mut b) = established();
    // Carol also talks to Alice, and gets hold of what Alice sent Bob.
    let carol = identity(5);
    let mut c = Side {
        conversation: Conversation::new(a.certificate.clone(), NOW).unwrap(),
        certificate: certificate(&carol),
        identity: carol,
        rng: Rng::new(33),
    };
    // Carol has a receive key of her own (her first envelope to Alice advertised it); and
    // Alice's conversation with Bob refuses Carol's first contact: it is not from Bob.
    let to_alice = c.seal(50, NOW);
    assert_eq!(a.open(&to_alice, NOW), Err(Error::Envelope("first contact from another identity")));
    let (_, hello) = Conversation::from_first_contact(
        envelope::open_first_contact(
            a.identity.device(),
            a.identity.identity_key(),
            &to_alice,
            NOW,
        )
        .unwrap(),
        NOW,
    )
    .unwrap();
    assert_eq!(hello, content(50, NOW));
    let to_bob = a.seal(3, NOW);
    assert!(c.open(&to_bob, NOW).is_err());
    let first_contact_to_bob = pair().0.seal(4, NOW);
    assert_eq!(c.open(&first_contact_to_bob, NOW), Err(Error::Envelope("not for this device key")));
    // And Bob still reads his.
    b.open(&to_bob, NOW).unwrap();
}

#[test]
fn only_the_peer_can_write_to_a_receive_key_even_knowing_its_seed() {
    let (a, mut b) = established();
    let bob_key = b.conversation.receive_keys.last().unwrap();
    let (public, seed) = (bob_key.public, *bob_key.seed.get());
    let payload = Payload::V1 { certificate: None, advertisement: None, content: content(7, NOW) };
    let bob_identity = *b.identity.identity_key();
    let to_bob = |sender: &Identity, seed: &[u8; 32]| {
        envelope::seal_conversation(
            sender.device(),
            &public,
            seed,
            &bob_identity,
            &payload,
            [9; 32],
        )
        .unwrap()
    };
    // Mallory knows Bob's receive key and its seed, but not Alice's device key.
    let mallory = identity(7);
    assert!(b.open(&to_bob(&mallory, &seed), NOW).is_err());
    // Alice's device key with the wrong seed is refused too: the PSK binds the conversation.
    assert!(b.open(&to_bob(&a.identity, &[0; 32]), NOW).is_err());
    let right = to_bob(&a.identity, &seed);
    assert_eq!(b.open(&right, NOW).unwrap(), content(7, NOW));
}

#[test]
fn forged_or_expired_certificates_are_rejected() {
    let (mut a, mut b) = pair();
    // Expired: Alice's certificate ends before Bob opens.
    a.certificate = a.identity.certify(NOW - 10, NOW + 5).unwrap();
    let first = a.seal(1, NOW);
    assert!(matches!(b.open(&first, NOW + 6), Err(Error::CertificateNotValid { .. })));
    assert!(matches!(
        Conversation::new(a.certificate.clone(), NOW + 6),
        Err(Error::CertificateNotValid { .. })
    ));
    // Each attack is a first contact to Bob from `sender`'s device key carrying `certificate`.
    let (bob_device, bob_identity) = (*b.identity.device().public(), *b.identity.identity_key());
    let first_contact = |sender: &Identity, certificate: DeviceCertificate, n: u8| {
        let payload = Payload::V1 {
            certificate: Some(certificate),
            advertisement: None,
            content: content(n, NOW),
        };
        envelope::seal_first_contact(
            sender.device(),
            &bob_device,
            &bob_identity,
            &payload,
            [n + 1; 32],
        )
        .unwrap()
    };
    // Forged: Alice's certificate with a stretched validity and the old signature.
    let mut forged = a.certificate.clone();
    forged.not_after = NOW + 1000 * DAY;
    let sealed = first_contact(&a.identity, forged, 2);
    assert_eq!(b.open(&sealed, NOW), Err(Error::BadCertificateSignature));
    // Mallory's device key under Alice's certificate: the Noise static key gives it away.
    let mallory = identity(7);
    let sealed = first_contact(&mallory, certificate(&a.identity), 3);
    assert_eq!(
        b.open(&sealed, NOW),
        Err(Error::Envelope("sender certificate does not match the Noise static key"))
    );
    // A valid certificate of another identity is not this conversation's peer.
    let sealed = first_contact(&mallory, certificate(&mallory), 4);
    assert_eq!(b.open(&sealed, NOW), Err(Error::Envelope("first contact from another identity")));
}

#[test]
fn a_certificate_inside_a_conversation_envelope_must_be_a_valid_renewal() {
    let (a, mut b) = established();
    let bob_key = b.conversation.receive_keys.last().unwrap();
    let (public, seed) = (bob_key.public, *bob_key.seed.get());
    let bob_identity = *b.identity.identity_key();
    let seal = |certificate: DeviceCertificate, e: u8| {
        let payload = Payload::V1 {
            certificate: Some(certificate),
            advertisement: None,
            content: content(e, NOW),
        };
        envelope::seal_conversation(
            a.identity.device(),
            &public,
            &seed,
            &bob_identity,
            &payload,
            [e; 32],
        )
        .unwrap()
    };
    let expired = a.identity.certify(NOW - 10, NOW - 5).unwrap();
    assert!(matches!(b.open(&seal(expired, 1), NOW), Err(Error::CertificateNotValid { .. })));
    let other = certificate(&identity(7));
    assert_eq!(
        b.open(&seal(other, 2), NOW),
        Err(Error::Envelope("certificate in a conversation is not a renewal"))
    );
    let renewed = a.identity.certify(NOW, NOW + 700 * DAY).unwrap();
    b.open(&seal(renewed.clone(), 3), NOW).unwrap();
    assert_eq!(b.conversation.peer_certificate(), &renewed);
}

#[test]
fn superseded_keys_are_deleted_after_the_grace_period_and_at_most_five_are_kept() {
    let (mut a, mut b) = established();
    // Alice's key 0 was used by Bob; one round trip makes key 1, which Bob then uses.
    let m = a.seal(3, NOW);
    b.open(&m, NOW).unwrap();
    let r = b.seal(4, NOW);
    a.open(&r, NOW).unwrap();
    assert_eq!(a.conversation.receive_key_ids().len(), 2);
    a.conversation.expire(NOW + RECEIVE_KEY_GRACE_SECS - 1);
    assert_eq!(a.conversation.receive_key_ids().len(), 2);
    a.conversation.expire(NOW + RECEIVE_KEY_GRACE_SECS);
    assert_eq!(a.conversation.receive_key_ids().len(), 1);

    // Many quick round trips: never more than five keys, and the newest always survives.
    for round in 0..10u8 {
        let m = a.seal(10 + round, NOW + 1);
        b.open(&m, NOW + 1).unwrap();
        let r = b.seal(100 + round, NOW + 1);
        a.open(&r, NOW + 1).unwrap();
        assert!(a.conversation.receive_key_ids().len() <= MAX_RECEIVE_KEYS);
    }
    let newest = *a.conversation.receive_key_ids().last().unwrap();
    a.conversation.expire(NOW + 10 * MAX_SUPERSEDED_SECS);
    assert_eq!(a.conversation.receive_key_ids(), vec![newest]);
}

/// The public keys of the receive keys a conversation holds loaded in memory.
fn loaded_keys(c: &Conversation) -> Vec<[u8; 32]> {
    c.loaded.0.iter().map(|(public, _)| *public).collect()
}

#[test]
fn a_loaded_receive_key_is_dropped_with_its_key_and_never_stored() {
    let (mut a, mut b) = established();
    // Alice's key 0 opened Bob's envelope of the set-up; her text advertises key 1, which opens
    // Bob's answer: each is loaded for the envelopes it opened.
    let m = a.seal(3, NOW);
    b.open(&m, NOW).unwrap();
    let r = b.seal(4, NOW);
    a.open(&r, NOW).unwrap();
    let keys = a.conversation.receive_keys.iter().map(|k| k.public).collect::<Vec<_>>();
    assert_eq!(keys.len(), 2);
    assert_eq!(loaded_keys(&a.conversation), keys);
    // A second envelope to the same key loads nothing more.
    let r = b.seal(5, NOW);
    a.open(&r, NOW).unwrap();
    assert_eq!(loaded_keys(&a.conversation), keys);
    // What each loaded key remembers is its agreement with Bob's device key, never one with
    // an envelope's ephemeral key (which snow asks for first).
    for (_, pair) in &a.conversation.loaded.0 {
        assert_eq!(pair.remembered_peer(), Some(*b.identity.device().public()));
    }
    // What is stored holds no loaded key: read back, the state has none.
    let stored = Conversation::from_bytes(&a.conversation.to_bytes().unwrap()).unwrap();
    assert!(loaded_keys(&stored).is_empty());
    // The grace period over, key 0 goes, and its loaded pair with it.
    a.conversation.expire(NOW + RECEIVE_KEY_GRACE_SECS);
    assert_eq!(a.conversation.receive_key_ids().len(), 1);
    assert_eq!(loaded_keys(&a.conversation), vec![keys[1]]);
}

#[test]
fn a_superseded_key_the_peer_never_used_dies_after_thirty_days() {
    let (mut a, mut b) = established();
    // Alice rotates (Bob used key 0) but Bob never sends on key 1, and never on key 0 again.
    let m = a.seal(3, NOW);
    b.open(&m, NOW).unwrap();
    assert_eq!(a.conversation.receive_key_ids().len(), 2);
    a.conversation.expire(NOW + MAX_SUPERSEDED_SECS - 1);
    assert_eq!(a.conversation.receive_key_ids().len(), 2);
    a.conversation.expire(NOW + MAX_SUPERSEDED_SECS);
    assert_eq!(a.conversation.receive_key_ids().len(), 1);
}

#[test]
fn a_receive_key_stolen_after_its_deletion_opens_nothing() {
    let (mut a, mut b) = established();
    // Alice sends five envelopes to Bob's key 0. Bob reads three; two sit in a mailbox.
    let old: Vec<Vec<u8>> = (10..15).map(|id| a.seal(id, NOW)).collect();
    let old_key = key_id_of(&old[0]);
    for sealed in &old[..3] {
        b.open(sealed, NOW).unwrap();
    }
    // A round trip moves Alice to Bob's key 1; the grace period passes.
    let r = b.seal(20, NOW + 10);
    a.open(&r, NOW + 10).unwrap();
    let m = a.seal(21, NOW + 20);
    assert_ne!(key_id_of(&m), old_key);
    b.open(&m, NOW + 20).unwrap();
    let later = NOW + 20 + RECEIVE_KEY_GRACE_SECS;
    b.conversation.expire(later);

    // The attacker now takes everything Bob stores for this conversation.
    let stolen_bytes = b.conversation.to_bytes().unwrap();
    let mut stolen = Conversation::from_bytes(&stolen_bytes).unwrap();
    // Bob's key 0 is gone: neither its id, its secret nor its seed is in the state.
    assert!(!stolen.receive_key_ids().contains(&old_key));
    let (secret_0, seed_0) = b.made_secrets()[0];
    assert!(!stolen_bytes.windows(32).any(|w| w == secret_0 || w == seed_0));
    for sealed in &old {
        // Not through the conversation...
        assert_eq!(
            stolen.open(&b.identity, sealed, later),
            Err(Error::Envelope("no receive key with this id: deleted, or never ours"))
        );
        // ...and not by trying every remaining key, ignoring the key id.
        for key in &stolen.receive_keys {
            let receive = ReceiveSecret {
                secret: key.secret.get(),
                public: &key.public,
                seed: key.seed.get(),
                pair: None,
            };
            assert!(
                envelope::open_conversation(
                    &receive,
                    a.identity.device().public(),
                    b.identity.identity_key(),
                    sealed
                )
                .is_err()
            );
        }
    }
}

#[test]
fn a_current_key_stolen_is_useless_after_one_round_trip() {
    let (mut a, mut b) = established();
    let before = a.seal(3, NOW);
    b.open(&before, NOW).unwrap();
    // The attacker copies Bob's whole state now, with his current receive key.
    let mut stolen = Conversation::from_bytes(&b.conversation.to_bytes().unwrap()).unwrap();
    // The theft is real: what Alice sends to that key now, the attacker reads.
    let exposed = a.seal(4, NOW);
    assert_eq!(stolen.open(&b.identity, &exposed, NOW).unwrap(), content(4, NOW));
    b.open(&exposed, NOW).unwrap();

    // One round trip: Bob answers with a fresh key (made after the theft), Alice adopts it.
    let reply = b.seal(5, NOW + 1);
    a.open(&reply, NOW + 1).unwrap();
    let after = a.seal(6, NOW + 2);
    assert!(stolen.open(&b.identity, &after, NOW + 2).is_err());
    for key in &stolen.receive_keys {
        let receive = ReceiveSecret {
            secret: key.secret.get(),
            public: &key.public,
            seed: key.seed.get(),
            pair: None,
        };
        assert!(
            envelope::open_conversation(
                &receive,
                a.identity.device().public(),
                b.identity.identity_key(),
                &after
            )
            .is_err()
        );
    }
    assert_eq!(b.open(&after, NOW + 2).unwrap(), content(6, NOW + 2));
}

#[test]
fn a_peer_key_used_for_its_most_envelopes_falls_back_to_first_contact() {
    let (mut a, mut b) = established();
    a.conversation.peer_key.as_mut().unwrap().sent = (MAX_SEEN_EPHEMERALS - 1) as u32;
    let last = a.seal(3, NOW);
    assert_eq!(kind(&last), KIND_CONVERSATION);
    let fallback = a.seal(4, NOW);
    assert_eq!(kind(&fallback), KIND_FIRST_CONTACT);
    b.open(&last, NOW).unwrap();
    b.open(&fallback, NOW).unwrap();
}

#[test]
fn a_full_state_round_trips_within_its_bound() {
    let (mut a, mut b) = established();
    for round in 0..MAX_RECEIVE_KEYS as u8 {
        let m = a.seal(10 + round, NOW);
        b.open(&m, NOW).unwrap();
        let r = b.seal(100 + round, NOW);
        a.open(&r, NOW).unwrap();
    }
    let c = &mut a.conversation;
    assert_eq!(c.receive_keys.len(), MAX_RECEIVE_KEYS);
    for key in &mut c.receive_keys {
        key.seen = (0..MAX_SEEN_EPHEMERALS).map(|i| [i as u8; 16]).collect();
    }
    c.first_contact_seen = (0..MAX_SEEN_FIRST_CONTACTS).map(|i| [i as u8; 16]).collect();
    // And every format 4 field at its largest.
    let prekey = crate::prekey::HybridPrekey::sign(
        &identity(1),
        &crate::prekey::HybridPrekeySecret {
            x25519: zeroize::Zeroizing::new([5; 32]),
            kem_seed: zeroize::Zeroizing::new([6; 64]),
        },
        NOW,
        NOW + DAY,
    )
    .unwrap();
    c.peer_hybrid_prekey = Some(prekey);
    c.peer_mailbox = Some([7; 32]);
    c.peer_starts = vec![[8; 32]; crate::conversation::MAX_PEER_STARTS];
    c.rekeyed = Some(1);
    c.peer_prekey =
        Some(crate::prekey::SignedPrekey::sign(&identity(1), &[4; 32], NOW, NOW + DAY).unwrap());
    let bytes = c.to_bytes().unwrap();
    assert_eq!(MAX_STATE_LEN, 51_647, "docs/PROTOCOL.md section 8.6 states it");
    assert!(bytes.len() <= MAX_STATE_LEN, "{} > {MAX_STATE_LEN}", bytes.len());
    let back = Conversation::from_bytes(&bytes).unwrap();
    assert_eq!(*back.to_bytes().unwrap(), *bytes);
}

#[test]
fn a_corrupt_state_is_refused() {
    let (a, _) = established();
    let bytes = a.conversation.to_bytes().unwrap();
    assert!(Conversation::from_bytes(&[]).is_err());
    let mut wrong_version = bytes.to_vec();
    wrong_version[0] = 9;
    assert!(Conversation::from_bytes(&wrong_version).is_err());
    assert!(Conversation::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    let mut too_far = Conversation::from_bytes(&bytes).unwrap();
    too_far.next_seq = 0;
    assert!(Conversation::from_bytes(&too_far.to_bytes().unwrap()).is_err());
}

#[test]
fn advertisements_of_small_order_keys_are_refused() {
    let (a, mut b) = established();
    let bob_key = b.conversation.receive_keys.last().unwrap();
    let (public, seed) = (bob_key.public, *bob_key.seed.get());
    let payload = Payload::V1 {
        certificate: None,
        advertisement: Some(Advertisement { seq: 9, public: [0; 32], seed: [1; 32] }),
        content: content(7, NOW),
    };
    let sealed = envelope::seal_conversation(
        a.identity.device(),
        &public,
        &seed,
        b.identity.identity_key(),
        &payload,
        [9; 32],
    )
    .unwrap();
    assert!(matches!(b.open(&sealed, NOW), Err(Error::InvalidKey { .. })));
}

/// One step of a random schedule: who seals, or which envelope in flight is delivered (and
/// whether it stays in flight to be delivered again).
#[derive(Clone, Debug)]
enum Step {
    Seal { alice: bool },
    Deliver { pick: usize, again: bool },
    Restart { alice: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any::<bool>().prop_map(|alice| Step::Seal { alice }),
        (any::<usize>(), any::<bool>()).prop_map(|(pick, again)| Step::Deliver { pick, again }),
        any::<bool>().prop_map(|alice| Step::Restart { alice }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Under any schedule of sends, deliveries (reordered, duplicated) and restarts from the
    /// stored bytes, every message is accepted at most once, every envelope delivered within
    /// the grace period is accepted once, and nothing else goes wrong.
    #[test]
    fn any_schedule_accepts_each_message_exactly_once(steps in prop::collection::vec(step(), 1..40)) {
        let (mut a, mut b) = pair();
        let mut in_flight: Vec<(bool, u8, Vec<u8>)> = Vec::new();
        let mut accepted: HashMap<u8, usize> = HashMap::new();
        let mut next_id = 0u8;
        for step in steps {
            match step {
                Step::Seal { alice } => {
                    let side = if alice { &mut a } else { &mut b };
                    in_flight.push((!alice, next_id, side.seal(next_id, NOW)));
                    next_id += 1;
                }
                Step::Deliver { pick, again } if !in_flight.is_empty() => {
                    let index = pick % in_flight.len();
                    let (to_alice, id, sealed) = in_flight[index].clone();
                    if !again {
                        in_flight.remove(index);
                    }
                    let side = if to_alice { &mut a } else { &mut b };
                    match side.open(&sealed, NOW) {
                        Ok(c) => {
                            prop_assert_eq!(c.id, [id; 16]);
                            *accepted.entry(id).or_default() += 1;
                        }
                        Err(Error::Replayed) => prop_assert!(accepted.contains_key(&id)),
                        Err(e) => {
                            // Only a key dropped by the five-key limit may refuse an envelope.
                            prop_assert_eq!(
                                e,
                                Error::Envelope("no receive key with this id: deleted, or never ours")
                            );
                        }
                    }
                }
                Step::Deliver { .. } => {}
                Step::Restart { alice } => {
                    let side = if alice { &mut a } else { &mut b };
                    side.conversation =
                        Conversation::from_bytes(&side.conversation.to_bytes().unwrap()).unwrap();
                }
            }
        }
        prop_assert!(accepted.values().all(|n| *n == 1));
    }
}

#[test]
fn a_first_contact_goes_to_the_peers_signed_prekey_and_only_it_opens_it() {
    let (mut a, mut b) = pair();
    let prekey_secret = [42u8; 32];
    let prekey =
        crate::prekey::SignedPrekey::sign(&b.identity, &prekey_secret, NOW, NOW + 7 * DAY).unwrap();
    assert!(a.conversation.wants_prekey(NOW));
    // Only a prekey signed by the peer's own identity is taken.
    let mallorys =
        crate::prekey::SignedPrekey::sign(&identity(9), &[5; 32], NOW, NOW + DAY).unwrap();
    assert!(a.conversation.set_peer_prekey(mallorys, NOW).is_err());
    assert!(a.conversation.set_peer_prekey(prekey.clone(), NOW).unwrap());
    assert!(!a.conversation.wants_prekey(NOW));

    let first = a.seal(1, NOW);
    assert_eq!(kind(&first), KIND_FIRST_CONTACT);
    assert_eq!(key_id_of(&first), key_id(&prekey.public));
    assert!(b.open(&first, NOW).is_err(), "the device key cannot open it");
    let prekey_device = crate::identity::DeviceKey::from_secret(prekey_secret);
    let opened =
        envelope::open_first_contact(&prekey_device, b.identity.identity_key(), &first, NOW)
            .unwrap();
    assert_eq!(b.conversation.accept_first_contact(opened, NOW).unwrap(), content(1, NOW));

    // Once the peer has answered, envelopes go to its receive keys, not the prekey.
    let reply = b.seal(2, NOW);
    a.open(&reply, NOW).unwrap();
    assert_eq!(kind(&a.seal(3, NOW)), KIND_CONVERSATION);
}

#[test]
fn a_refused_prekey_is_dropped_so_the_retry_goes_to_the_device_key() {
    let (mut a, b) = pair();
    let prekey = crate::prekey::SignedPrekey::sign(&b.identity, &[42; 32], NOW, NOW + DAY).unwrap();
    a.conversation.set_peer_prekey(prekey, NOW).unwrap();
    assert!(a.conversation.drop_prekey_for_first_contact());
    let retry = a.seal(1, NOW);
    assert_eq!(key_id_of(&retry), key_id(b.identity.device().public()));
    // An expired prekey is not used either.
    let (mut a, b) = pair();
    let old =
        crate::prekey::SignedPrekey::sign(&b.identity, &[42; 32], NOW - 2 * DAY, NOW - DAY + 1)
            .unwrap();
    a.conversation.set_peer_prekey(old, NOW - DAY).unwrap();
    assert_eq!(key_id_of(&a.seal(1, NOW)), key_id(b.identity.device().public()));
}

#[test]
fn an_envelope_taken_back_out_of_the_replay_cache_opens_again_once() {
    for conversation_kind in [false, true] {
        let (mut a, mut b) = if conversation_kind { established() } else { pair() };
        let sealed = a.seal(9, NOW);
        assert_eq!(b.open(&sealed, NOW).unwrap(), content(9, NOW));
        assert_eq!(b.open(&sealed, NOW), Err(Error::Replayed));
        // The node could not act on it: it forgets having seen it, and the mailbox's next
        // delivery of the same bytes is taken, once.
        let ephemeral = envelope::ephemeral_key(&sealed).unwrap();
        assert!(b.conversation.unsee(&ephemeral));
        assert!(!b.conversation.unsee(&ephemeral));
        assert_eq!(b.open(&sealed, NOW).unwrap(), content(9, NOW));
        assert_eq!(b.open(&sealed, NOW), Err(Error::Replayed));
        assert!(!b.conversation.unsee(&[9; 32]), "an unknown key names no envelope");
    }
}

#[test]
fn an_accepted_envelope_reopens_unchanged_and_nothing_else_does() {
    let (mut a, mut b) = established();
    let sealed = a.seal(7, NOW);
    // Not accepted yet: nothing to reopen.
    assert!(b.conversation.reopen(&b.identity, &sealed).is_err());
    assert_eq!(b.open(&sealed, NOW).unwrap(), content(7, NOW));
    let state = b.conversation.to_bytes().unwrap();
    assert_eq!(b.conversation.reopen(&b.identity, &sealed).unwrap(), content(7, NOW));
    assert_eq!(b.conversation.to_bytes().unwrap(), state, "reopening changes nothing");
    assert_eq!(b.open(&sealed, NOW), Err(Error::Replayed), "and it is still a replay");
    // A tampered copy, or the envelope opened as someone else, does not reopen.
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(b.conversation.reopen(&b.identity, &tampered).is_err());
    assert!(b.conversation.reopen(&a.identity, &sealed).is_err());
}

// ---------------------------------------------------------------------------------------------
// Format 4: hybrid first contacts from invites, forged advertisements, re-keying and restarts.

use crate::conversation::{MAX_SENT_AT_FUTURE_SECS, Own, Rekeyed};
use crate::invite::{Invite, InviteKeys};
use crate::mailbox_key::MailboxKey;
use crate::prekey::{HybridPrekey, HybridPrekeySecret};

/// A device of format 4: a [`Side`] with a hybrid prekey and a mailbox key.
struct Side4 {
    side: Side,
    prekey: HybridPrekey,
    prekey_secret: HybridPrekeySecret,
    mailbox: MailboxKey,
}

fn prekey_secret(seed: u8) -> HybridPrekeySecret {
    HybridPrekeySecret {
        x25519: zeroize::Zeroizing::new([seed; 32]),
        kem_seed: zeroize::Zeroizing::new([seed.wrapping_add(1); 64]),
    }
}

impl Side4 {
    fn new(seed: u8, prekey_until: u64) -> Self {
        let identity = identity(seed);
        let prekey_secret = prekey_secret(seed.wrapping_add(50));
        let prekey = HybridPrekey::sign(&identity, &prekey_secret, NOW - 10, prekey_until).unwrap();
        let certificate = certificate(&identity);
        let conversation = Conversation::new(certificate.clone(), NOW).unwrap();
        let side = Side { identity, certificate, conversation, rng: Rng::new(u64::from(seed)) };
        Self { side, prekey, prekey_secret, mailbox: MailboxKey::from_secret(&[seed; 32]) }
    }

    /// The invite text this device gives out.
    fn invite(&self) -> String {
        let invite = Invite { certificate: self.side.certificate.clone(), addresses: vec![] };
        let keys = InviteKeys { prekey: self.prekey.clone(), mailbox: *self.mailbox.address() };
        invite.to_text_v2(&keys).unwrap()
    }

    /// Starts the conversation from the peer's invite text, as a node does with `contacts add`.
    fn add(&mut self, invite_text: &str, now: u64) {
        let (invite, keys, _) = Invite::from_text_with_keys(invite_text, now).unwrap();
        self.side.conversation = Conversation::from_invite(&invite, keys.as_ref(), now).unwrap();
    }

    fn try_seal(&mut self, id: u8, now: u64) -> Result<Vec<u8>, Error> {
        let randomness = Randomness::from_bytes(self.side.rng.block());
        let own = Own {
            device: self.side.identity.device(),
            certificate: &self.side.certificate,
            prekey: Some(&self.prekey),
            mailbox: Some(self.mailbox.address()),
        };
        self.side.conversation.seal_with(&own, &content(id, now), randomness, now)
    }

    fn seal(&mut self, id: u8, now: u64) -> Vec<u8> {
        self.try_seal(id, now).unwrap()
    }

    /// Opens as the node does: format 4 first contacts with our prekey, the rest through the
    /// conversation.
    fn open(&mut self, sealed: &[u8], now: u64) -> Result<Content, Error> {
        let header = peek(sealed)?;
        if header.version == envelope::ENVELOPE_VERSION_4 && header.kind == KIND_FIRST_CONTACT {
            let opened = envelope::open_first_contact_4(
                &self.prekey,
                &self.prekey_secret,
                self.mailbox.address(),
                self.side.identity.identity_key(),
                sealed,
                now,
            )?;
            return self.side.conversation.accept_first_contact(opened, now);
        }
        self.side.open(sealed, now)
    }
}

/// Alice and Bob, each holding the other's version 2 invite, after one round trip.
fn established_4() -> (Side4, Side4) {
    let (mut a, mut b) = (Side4::new(1, NOW + 14 * DAY), Side4::new(3, NOW + 14 * DAY));
    let (a_invite, b_invite) = (a.invite(), b.invite());
    a.add(&b_invite, NOW);
    b.add(&a_invite, NOW);
    let first = a.seal(1, NOW);
    assert_eq!((peek(&first).unwrap().version, kind(&first)), (4, KIND_FIRST_CONTACT));
    b.open(&first, NOW).unwrap();
    let reply = b.seal(2, NOW);
    assert_eq!((peek(&reply).unwrap().version, kind(&reply)), (4, KIND_CONVERSATION));
    a.open(&reply, NOW).unwrap();
    (a, b)
}

/// Finding 4: with only the invite (no DHT, no presence record), the first contact goes to the
/// invite's hybrid prekey, not to the device key; a stale one is refused with a reason and
/// makes the node look a current one up, never falling back to the device key.
#[test]
fn a_first_contact_from_an_invite_needs_no_dht_and_a_stale_prekey_is_never_bypassed() {
    let (mut a, mut b) = (Side4::new(1, NOW + 14 * DAY), Side4::new(3, NOW + 14 * DAY));
    a.add(&b.invite(), NOW);
    b.add(&a.invite(), NOW);
    assert!(!a.side.conversation.wants_prekey(NOW), "the invite's prekey is enough");
    let first = a.seal(1, NOW);
    assert_eq!(key_id_of(&first), envelope::prekey_id(b.mailbox.address(), &b.prekey.public));
    assert!(first.len() >= 4096, "a hybrid first contact is at least 4 KiB");
    assert_eq!(b.open(&first, NOW).unwrap(), content(1, NOW));
    // The device key cannot open it, and nor can the prekey without the mailbox address's id.
    assert!(
        envelope::open_first_contact(
            b.side.identity.device(),
            b.side.identity.identity_key(),
            &first,
            NOW
        )
        .is_err()
    );

    // An invite whose prekey has expired: adding the contact works, sealing does not.
    let stale = Side4::new(5, NOW + DAY);
    let mut c = Side4::new(6, NOW + 14 * DAY);
    c.add(&stale.invite(), NOW + 2 * DAY);
    assert!(c.side.conversation.wants_prekey(NOW + 2 * DAY));
    assert_eq!(
        c.try_seal(1, NOW + 2 * DAY),
        Err(Error::Envelope("the peer's hybrid prekey has expired: a current one is needed"))
    );
    // A current prekey from the peer's presence record unblocks it.
    let fresh =
        HybridPrekey::sign(&stale.side.identity, &prekey_secret(77), NOW + DAY, NOW + 15 * DAY)
            .unwrap();
    assert!(c.side.conversation.set_peer_hybrid_prekey(fresh.clone(), NOW + 2 * DAY).unwrap());
    let sealed = c.seal(1, NOW + 2 * DAY);
    assert_eq!(key_id_of(&sealed), envelope::prekey_id(stale.mailbox.address(), &fresh.public));
}

/// What a thief of Bob's stored state (his receive keys and seeds, not his identity file)
/// does: forges an envelope "from Alice" on Bob's newest receive key (key-compromise
/// impersonation) that advertises a key of the thief's with sequence `seq`.
fn forge_advertisement(
    stolen: &Conversation,
    alice: &Identity,
    bob: &Identity,
    seq: u32,
    format_4: bool,
    thief_key: &[u8; 32],
) -> Vec<u8> {
    let newest = stolen.receive_keys.last().unwrap();
    let advertisement =
        Advertisement { seq, public: envelope::public_key(thief_key), seed: [0xee; 32] };
    let content =
        Content { id: [0xf0; 16], sent_at_ms: NOW * 1000, body: Body::Text("forged".into()) };
    let payload = if format_4 {
        Payload::V2 {
            certificate: None,
            advertisement: Some(advertisement),
            prekey: None,
            mailbox: None,
            content,
        }
    } else {
        Payload::V1 { certificate: None, advertisement: Some(advertisement), content }
    };
    envelope::forge_conversation_kci(
        newest.secret.get(),
        alice.device().public(),
        newest.seed.get(),
        bob.identity_key(),
        &payload,
        [0x31; 32],
    )
    .unwrap()
}

/// Whether the thief, who knows its own key's secret and seed, reads `sealed`.
fn thief_reads(sealed: &[u8], thief_key: &[u8; 32], alice: &Identity, bob: &Identity) -> bool {
    let public = envelope::public_key(thief_key);
    let receive =
        ReceiveSecret { secret: thief_key, public: &public, seed: &[0xee; 32], pair: None };
    envelope::open_conversation_any(&receive, bob.device().public(), alice.identity_key(), sealed)
        .is_ok()
}

/// Finding 2, the attack: before this fix, a forged advertisement with sequence 0xFFFFFFFF was
/// adopted (it was "newer"), and every later envelope from Bob went to the thief's key, the
/// honest ones from Alice never displacing it. Now a jump is a conflict: Bob re-keys through
/// Alice's prekey at once, so not one envelope of his reaches the thief's key, and both go on.
/// Run for format 3 (legacy conversations, re-keyed through the device key) and format 4.
#[test]
fn a_forged_advertisement_far_ahead_pins_nothing() {
    let (alice, bob) = established();
    far_ahead_attack(alice, bob, false);
    let (alice, bob) = established_4();
    far_ahead_attack(alice, bob, true);
}

/// A device as the attack tests drive it, of either format.
trait Device {
    fn side(&mut self) -> &mut Side;
    fn seal_content(&mut self, id: u8, now: u64) -> Vec<u8>;
    fn open_envelope(&mut self, sealed: &[u8], now: u64) -> Result<Content, Error>;
}

impl Device for Side {
    fn side(&mut self) -> &mut Side {
        self
    }
    fn seal_content(&mut self, id: u8, now: u64) -> Vec<u8> {
        self.seal(id, now)
    }
    fn open_envelope(&mut self, sealed: &[u8], now: u64) -> Result<Content, Error> {
        self.open(sealed, now)
    }
}

impl Device for Side4 {
    fn side(&mut self) -> &mut Side {
        &mut self.side
    }
    fn seal_content(&mut self, id: u8, now: u64) -> Vec<u8> {
        self.seal(id, now)
    }
    fn open_envelope(&mut self, sealed: &[u8], now: u64) -> Result<Content, Error> {
        self.open(sealed, now)
    }
}

fn far_ahead_attack(mut alice: impl Device, mut bob: impl Device, format_4: bool) {
    let thief_key = [0x77; 32];
    let stolen = Conversation::from_bytes(&bob.side().conversation.to_bytes().unwrap()).unwrap();
    let alice_identity = Identity::from_file_bytes(&alice.side().identity.to_file_bytes()).unwrap();
    let bob_identity = Identity::from_file_bytes(&bob.side().identity.to_file_bytes()).unwrap();
    let forged = forge_advertisement(
        &stolen,
        &alice_identity,
        &bob_identity,
        u32::MAX,
        format_4,
        &thief_key,
    );
    // The forgery opens (the thief holds the key it was sealed to) ...
    assert_eq!(
        bob.open_envelope(&forged, NOW).map(|c| c.id),
        Ok([0xf0; 16]),
        "format 4: {format_4}"
    );
    // ... but Bob's next envelopes, and all after them, do not go to the thief's key.
    for id in 40..43 {
        let next = bob.seal_content(id, NOW);
        assert!(
            !thief_reads(&next, &thief_key, &alice_identity, &bob_identity),
            "format 4: {format_4}"
        );
        assert_eq!(alice.open_envelope(&next, NOW).unwrap(), content(id, NOW));
    }
    let answer = alice.seal_content(50, NOW);
    assert_eq!(bob.open_envelope(&answer, NOW).unwrap(), content(50, NOW));
    let again = bob.seal_content(51, NOW);
    assert_eq!(kind(&again), KIND_CONVERSATION);
    assert!(!thief_reads(&again, &thief_key, &alice_identity, &bob_identity));
    assert_eq!(alice.open_envelope(&again, NOW).unwrap(), content(51, NOW));
}

/// Finding 2, the strongest forgery the bound still lets through: one step ahead, right after
/// Bob used Alice's key. Bob takes it, and the thief reads what Bob sends until Alice's next
/// honest envelope arrives; that one contradicts the forgery (two keys for one position), Bob
/// re-keys through Alice's prekey, and from his next envelope on the thief reads nothing.
/// Recovery within one round trip of honest traffic.
#[test]
fn a_forged_advertisement_one_step_ahead_is_displaced_by_the_next_honest_envelope() {
    let (a, b) = established_4();
    let (mut alice, mut bob) = (a.side, b.side);
    // Bob uses Alice's key: Alice will rotate when she gets it.
    let to_alice = bob.seal(10, NOW);
    let thief_key = [0x78; 32];
    let stolen = Conversation::from_bytes(&bob.conversation.to_bytes().unwrap()).unwrap();
    let held = bob.conversation.peer_key.as_ref().unwrap().seq;
    let forged =
        forge_advertisement(&stolen, &alice.identity, &bob.identity, held + 1, true, &thief_key);
    bob.open(&forged, NOW).unwrap();
    assert_eq!(bob.conversation.take_rekeyed(), None, "one honest-looking step is taken");
    let exposed = bob.seal(11, NOW);
    assert!(
        thief_reads(&exposed, &thief_key, &alice.identity, &bob.identity),
        "the window the bound leaves"
    );

    // One round trip of honest traffic: Alice gets Bob's envelope, answers with her real next key.
    alice.open(&to_alice, NOW).unwrap();
    let honest = alice.seal(12, NOW);
    assert_eq!(bob.open(&honest, NOW).unwrap(), content(12, NOW));
    assert_eq!(bob.conversation.take_rekeyed(), Some(Rekeyed::Conflict));
    let after = bob.seal(13, NOW);
    assert_eq!(kind(&after), KIND_FIRST_CONTACT, "re-keyed through Alice's prekey");
    assert!(!thief_reads(&after, &thief_key, &alice.identity, &bob.identity));
}

/// Finding 3: Alice restores a week-old copy of her state. Bob has deleted the keys it names,
/// and Alice has lost the ones Bob writes to. Each side's refusal makes the other re-key; both
/// recover by themselves, are told so, and the messages queued meanwhile arrive.
#[test]
fn a_side_that_restores_an_old_state_and_its_peer_both_go_on_talking() {
    let (mut a, mut b) = established_4();
    let backup = a.side.conversation.to_bytes().unwrap();
    let mut now = NOW;
    for round in 0..4u8 {
        now += DAY;
        let m = a.seal(100 + round, now);
        b.open(&m, now).unwrap();
        let r = b.seal(110 + round, now);
        a.open(&r, now).unwrap();
    }
    now += 4 * DAY;
    b.side.conversation.expire(now);
    a.side.conversation = Conversation::from_bytes(&backup).unwrap();

    // Alice writes with her old view: Bob no longer has that key and refuses (the node answers
    // `Rejected`). Alice's node tells her conversation, which re-keys, and seals the message again.
    let queued = a.seal(120, now);
    assert!(b.open(&queued, now).is_err());
    assert!(a.side.conversation.peer_rejected());
    assert_eq!(a.side.conversation.take_rekeyed(), Some(Rekeyed::PeerRefused));
    let resealed = a.seal(120, now);
    assert_eq!(kind(&resealed), KIND_FIRST_CONTACT);
    // Meanwhile Bob wrote to a key Alice lost with the restore: she refuses it, Bob re-keys too.
    let bobs = b.seal(121, now);
    assert!(a.open(&bobs, now).is_err());
    assert!(b.side.conversation.peer_rejected());
    let bobs_again = b.seal(121, now);
    assert_eq!(kind(&bobs_again), KIND_FIRST_CONTACT);

    // Both restarts cross in flight; each side takes the other's and the queued messages arrive.
    assert_eq!(b.open(&resealed, now).unwrap(), content(120, now));
    assert_eq!(a.open(&bobs_again, now).unwrap(), content(121, now));
    for round in 0..3u8 {
        let m = a.seal(130 + round, now);
        assert_eq!(kind(&m), KIND_CONVERSATION);
        assert_eq!(b.open(&m, now).unwrap(), content(130 + round, now));
        let r = b.seal(140 + round, now);
        assert_eq!(kind(&r), KIND_CONVERSATION);
        assert_eq!(a.open(&r, now).unwrap(), content(140 + round, now));
    }
}

/// Finding 3, the other case: Alice loses her state entirely and starts over from Bob's
/// invite. Her first contact (sequence 0) restarts Bob's side; Bob is told, and they talk.
#[test]
fn a_side_that_lost_its_state_restarts_the_conversation_visibly() {
    let (mut a, mut b) = established_4();
    for round in 0..3u8 {
        let m = a.seal(10 + round, NOW);
        b.open(&m, NOW).unwrap();
        let r = b.seal(20 + round, NOW);
        a.open(&r, NOW).unwrap();
    }
    let b_invite = b.invite();
    a.add(&b_invite, NOW + 60);
    let hello = a.seal(30, NOW + 60);
    assert_eq!(b.open(&hello, NOW + 60).unwrap(), content(30, NOW + 60));
    assert_eq!(b.side.conversation.take_rekeyed(), Some(Rekeyed::PeerRestarted));
    let r = b.seal(31, NOW + 60);
    assert_eq!(a.open(&r, NOW + 60).unwrap(), content(31, NOW + 60));
    let m = a.seal(32, NOW + 60);
    assert_eq!(kind(&m), KIND_CONVERSATION);
    assert_eq!(b.open(&m, NOW + 60).unwrap(), content(32, NOW + 60));
}

/// Finding 6: a `sent_at_ms` more than a day ahead or 30 days behind the receiver's clock is
/// refused, for both kinds, and refusing it changes nothing.
#[test]
fn an_absurd_sent_at_is_refused() {
    let (mut a, mut b) = established_4();
    let future = a.seal(9, NOW + MAX_SENT_AT_FUTURE_SECS + 1);
    assert_eq!(
        b.open(&future, NOW),
        Err(Error::Envelope("message claims to be sent more than a day from now"))
    );
    let ahead_ok = a.seal(10, NOW + MAX_SENT_AT_FUTURE_SECS);
    assert!(b.open(&ahead_ok, NOW).is_ok());
}

/// The header tag lets junk with a copied key id be refused before any X25519 operation: it
/// fails `check_tag`, which is all `Conversation::open` runs for it besides the id lookup.
#[test]
fn junk_with_a_real_key_id_fails_the_tag_check() {
    let (mut a, mut b) = established_4();
    let real = a.seal(5, NOW);
    let mut junk = real.clone();
    for byte in &mut junk[envelope::HEADER_LEN_4..] {
        *byte ^= 0x5a;
    }
    let seed = *b.side.conversation.receive_keys.last().unwrap().seed.get();
    assert!(envelope::check_tag(&real, &seed).is_ok());
    assert_eq!(
        envelope::check_tag(&junk, &seed),
        Err(Error::Envelope("header tag does not match: junk, or not for this key"))
    );
    assert_eq!(
        b.open(&junk, NOW),
        Err(Error::Envelope("header tag does not match: junk, or not for this key"))
    );
    assert_eq!(b.open(&real, NOW).unwrap(), content(5, NOW));
}

/// First contacts Alice sent before Bob answered, delivered after the conversation moved on
/// (a mailbox hands them over late), are old news: they restart nothing and re-key nothing.
#[test]
fn delayed_first_contacts_from_before_the_answer_restart_nothing() {
    let (mut a, mut b) = (Side4::new(1, NOW + 14 * DAY), Side4::new(3, NOW + 14 * DAY));
    let (a_invite, b_invite) = (a.invite(), b.invite());
    a.add(&b_invite, NOW);
    b.add(&a_invite, NOW);
    let early: Vec<Vec<u8>> = (1..=3).map(|id| a.seal(id, NOW)).collect();
    assert!(early.iter().all(|e| kind(e) == KIND_FIRST_CONTACT));
    b.open(&early[0], NOW).unwrap();
    for round in 0..3u8 {
        let r = b.seal(10 + round, NOW);
        a.open(&r, NOW).unwrap();
        let m = a.seal(20 + round, NOW);
        b.open(&m, NOW).unwrap();
    }
    for late in &early[1..] {
        assert!(b.open(late, NOW).is_ok());
    }
    assert_eq!(b.side.conversation.take_rekeyed(), None);
    let r = b.seal(30, NOW);
    assert_eq!(kind(&r), KIND_CONVERSATION);
    assert_eq!(a.open(&r, NOW).unwrap(), content(30, NOW));
    assert_eq!(a.side.conversation.take_rekeyed(), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Format 4 under any honest schedule of sends, reordered and duplicated deliveries and
    /// restarts from the stored bytes: every message is accepted at most once, and the
    /// advertisement rules never see a conflict or a restart where there is none.
    #[test]
    fn any_honest_schedule_of_format_4_re_keys_nothing(steps in prop::collection::vec(step(), 1..40)) {
        let (mut a, mut b) = (Side4::new(1, NOW + 14 * DAY), Side4::new(3, NOW + 14 * DAY));
        let (a_invite, b_invite) = (a.invite(), b.invite());
        a.add(&b_invite, NOW);
        b.add(&a_invite, NOW);
        let mut in_flight: Vec<(bool, u8, Vec<u8>)> = Vec::new();
        let mut accepted: HashMap<u8, usize> = HashMap::new();
        let mut next_id = 0u8;
        for step in steps {
            match step {
                Step::Seal { alice } => {
                    let side = if alice { &mut a } else { &mut b };
                    in_flight.push((!alice, next_id, side.seal(next_id, NOW)));
                    next_id += 1;
                }
                Step::Deliver { pick, again } if !in_flight.is_empty() => {
                    let index = pick % in_flight.len();
                    let (to_alice, id, sealed) = in_flight[index].clone();
                    if !again {
                        in_flight.remove(index);
                    }
                    let side = if to_alice { &mut a } else { &mut b };
                    match side.open(&sealed, NOW) {
                        Ok(c) => {
                            prop_assert_eq!(c.id, [id; 16]);
                            *accepted.entry(id).or_default() += 1;
                        }
                        Err(Error::Replayed) => prop_assert!(accepted.contains_key(&id)),
                        Err(e) => prop_assert_eq!(
                            e,
                            Error::Envelope("no receive key with this id: deleted, or never ours")
                        ),
                    }
                }
                Step::Deliver { .. } => {}
                Step::Restart { alice } => {
                    let side = if alice { &mut a } else { &mut b };
                    side.side.conversation = Conversation::from_bytes(
                        &side.side.conversation.to_bytes().unwrap(),
                    )
                    .unwrap();
                }
            }
            prop_assert_eq!(a.side.conversation.take_rekeyed(), None);
            prop_assert_eq!(b.side.conversation.take_rekeyed(), None);
        }
        prop_assert!(accepted.values().all(|n| *n == 1));
    }
}

/// Section 8.11: a peer that only sends is answered, so it leaves first contact for conversation
/// envelopes, and its envelopes move to a new key of ours every [`ANSWER_AFTER_ENVELOPES`]
/// envelopes, or after a day for slow traffic; without an answer it stays on first contacts.
#[test]
fn a_one_way_sender_is_answered_so_it_leaves_first_contact_and_moves_keys() {
    let (mut a, mut b) = (Side4::new(1, NOW + 14 * DAY), Side4::new(3, NOW + 14 * DAY));
    let (a_invite, b_invite) = (a.invite(), b.invite());
    a.add(&b_invite, NOW);
    b.add(&a_invite, NOW);
    let first = a.seal(1, NOW);
    assert_eq!(kind(&first), KIND_FIRST_CONTACT);
    b.open(&first, NOW).unwrap();
    assert!(b.side.conversation.answer_due(NOW), "Alice holds no key of Bob's");
    let second = a.seal(2, NOW);
    assert_eq!(kind(&second), KIND_FIRST_CONTACT, "unanswered, Alice stays on first contacts");
    b.open(&second, NOW).unwrap();

    // Bob answers (his node seals a receipt): Alice takes his key and leaves first contact.
    let answer = b.seal(3, NOW);
    assert_eq!(kind(&answer), KIND_CONVERSATION);
    a.open(&answer, NOW).unwrap();
    assert!(!b.side.conversation.answer_due(NOW), "answered");
    let third = a.seal(4, NOW);
    assert_eq!(kind(&third), KIND_CONVERSATION);
    b.open(&third, NOW).unwrap();
    assert!(!b.side.conversation.answer_due(NOW));
    for n in 1..ANSWER_AFTER_ENVELOPES - 1 {
        let sealed = a.seal(10 + n as u8, NOW);
        b.open(&sealed, NOW).unwrap();
        assert!(!b.side.conversation.answer_due(NOW), "{} envelopes on one key", n + 1);
    }
    let last = a.seal(100, NOW);
    b.open(&last, NOW).unwrap();
    assert!(b.side.conversation.answer_due(NOW), "{ANSWER_AFTER_ENVELOPES} envelopes on one key");

    // The answer rotates Bob's key, and Alice's next envelope goes to the new one.
    let before = b.side.conversation.receive_key_ids();
    let answer = b.seal(101, NOW);
    a.open(&answer, NOW).unwrap();
    let newest = *b.side.conversation.receive_key_ids().last().unwrap();
    assert_ne!(Some(&newest), before.last(), "the answer brought a fresh key");
    assert!(!b.side.conversation.answer_due(NOW));
    let next = a.seal(102, NOW);
    assert_eq!(peek(&next).unwrap().key_id, Some(newest));
    b.open(&next, NOW).unwrap();
    assert!(!b.side.conversation.answer_due(NOW + ANSWER_AFTER_SECS - 1));
    assert!(b.side.conversation.answer_due(NOW + ANSWER_AFTER_SECS), "a day on one key");
}

/// Section 8.11: an answer that never reached the peer (lost, or waiting in a mailbox) is sent
/// again once an hour has passed with the peer still writing to an older key.
#[test]
fn an_answer_that_never_arrived_is_sent_again_after_an_hour() {
    let (mut a, mut b) = established_4();
    let to_b0 = a.seal(5, NOW);
    b.open(&to_b0, NOW).unwrap();
    // Bob's next envelope rotates to a fresh key; it is lost.
    let _lost = b.seal(6, NOW);
    let again = a.seal(7, NOW + 60);
    b.open(&again, NOW + 60).unwrap();
    assert!(!b.side.conversation.answer_due(NOW + 60), "the answer may still be on its way");
    let later = a.seal(8, NOW + ANSWER_AGAIN_SECS);
    b.open(&later, NOW + ANSWER_AGAIN_SECS).unwrap();
    assert!(b.side.conversation.answer_due(NOW + ANSWER_AGAIN_SECS), "an hour unused");
    let answer = b.seal(9, NOW + ANSWER_AGAIN_SECS);
    a.open(&answer, NOW + ANSWER_AGAIN_SECS).unwrap();
    let next = a.seal(10, NOW + ANSWER_AGAIN_SECS);
    assert_eq!(peek(&next).unwrap().key_id, b.side.conversation.receive_key_ids().last().copied());
}
