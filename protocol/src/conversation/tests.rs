//! Tests of the conversation key schedule: the normal flow, rotation and deletion, replay, and
//! the attacks `DESIGN.md` §6 asks for (tampering, replay, reordering, misdirection, forged
//! certificates, and key compromise before and after deletion).

use std::collections::HashMap;

use proptest::prelude::*;

use crate::Error;
use crate::conversation::{
    Conversation, MAX_RECEIVE_KEYS, MAX_SEEN_EPHEMERALS, MAX_SEEN_FIRST_CONTACTS, MAX_STATE_LEN,
    MAX_SUPERSEDED_SECS, RECEIVE_KEY_GRACE_SECS, Randomness,
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
            .map(|b| (b[32..64].try_into().unwrap(), b[64..].try_into().unwrap()))
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
        let receive =
            ReceiveSecret { secret: key.secret.get(), public: &key.public, seed: key.seed.get() };
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
    let bytes = c.to_bytes().unwrap();
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
