//! Crate-level tests: golden byte vectors for every wire type, and every decoder fed a few
//! thousand pseudo-random and mutated inputs without panicking.
//!
//! The vectors live in `protocol/tests/vectors/*.hex` (lower-case hex, 64 bytes a line). A
//! format change makes this test fail; if the change is deliberate, regenerate them with
//! `KOLOKOL_UPDATE_VECTORS=1 cargo test -p kolokol-protocol golden` and say why in the commit.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use crate::bundle::{Bundle, BundlePeer};
use crate::codec;
use crate::conversation::Own;
use crate::conversation::{Conversation, Randomness};
use crate::envelope::{self, Advertisement, Payload, Sealed};
use crate::identity::{DeviceCertificate, Identity};
use crate::invite::{Invite, InviteKeys};
use crate::mailbox::{BlindedProof, Item, Operation, Request, RequestV2, Response};
use crate::mailbox_key::MailboxKey;
use crate::message::{Body, Content};
use crate::prekey::{HybridPrekey, HybridPrekeySecret, SignedPrekey};
use crate::presence::{ForContacts, PresenceRecord, record_key};

const NOW: u64 = 1_800_000_000;

fn alice() -> Identity {
    Identity::from_secrets([1; 32], [2; 32])
}

fn bob() -> Identity {
    Identity::from_secrets([3; 32], [4; 32])
}

fn certificate(identity: &Identity) -> DeviceCertificate {
    identity.certify(NOW - 10, NOW + 1000).unwrap()
}

fn content() -> Content {
    Content { id: [7; 16], sent_at_ms: NOW * 1000, body: Body::Text("hello, bob".into()) }
}

/// A read receipt naming two messages.
fn read_content() -> Content {
    Content { body: Body::Read { of: vec![[8; 16], [9; 16]] }, ..content() }
}

fn advertisement() -> Advertisement {
    Advertisement { seq: 3, public: *bob().device().public(), seed: [5; 32] }
}

fn payload() -> Payload {
    Payload::V1 {
        certificate: Some(certificate(&alice())),
        advertisement: Some(advertisement()),
        content: content(),
    }
}

fn invite() -> Invite {
    Invite {
        certificate: certificate(&alice()),
        addresses: vec![vec![4, 127, 0, 0, 1, 6, 0x0f, 0xa1]],
    }
}

/// Alice's and Bob's conversations after one deterministic round trip, and the envelopes.
fn exchange() -> (Conversation, Conversation, Vec<u8>, Vec<u8>) {
    let (a, b) = (alice(), bob());
    let (a_cert, b_cert) = (certificate(&a), certificate(&b));
    let mut alice_side = Conversation::new(b_cert.clone(), NOW).unwrap();
    let mut bob_side = Conversation::new(a_cert.clone(), NOW).unwrap();
    let first = alice_side
        .seal(a.device(), &a_cert, &content(), Randomness::from_bytes([11; 128]), NOW)
        .unwrap();
    bob_side.open(&b, &first, NOW).unwrap();
    let reply = bob_side
        .seal(b.device(), &b_cert, &content(), Randomness::from_bytes([12; 128]), NOW)
        .unwrap();
    alice_side.open(&a, &reply, NOW).unwrap();
    (alice_side, bob_side, first, reply)
}

/// The secrets of a hybrid prekey made from one byte.
fn hybrid_secret(seed: u8) -> HybridPrekeySecret {
    HybridPrekeySecret {
        x25519: zeroize::Zeroizing::new([seed; 32]),
        kem_seed: zeroize::Zeroizing::new([seed.wrapping_add(1); 64]),
    }
}

/// Bob's hybrid prekey (secrets from 42) and Alice's (from 45).
fn hybrid_prekey(identity: &Identity, seed: u8) -> HybridPrekey {
    HybridPrekey::sign(identity, &hybrid_secret(seed), NOW, NOW + 7 * 86_400).unwrap()
}

fn mailbox_key(seed: u8) -> MailboxKey {
    MailboxKey::from_secret(&[seed; 32])
}

/// Bob's version 2 invite: his certificate, hybrid prekey and mailbox address.
fn invite_v2() -> String {
    let b = bob();
    let invite = Invite {
        certificate: certificate(&b),
        addresses: vec![vec![4, 127, 0, 0, 1, 6, 0x0f, 0xa1]],
    };
    let keys = InviteKeys { prekey: hybrid_prekey(&b, 42), mailbox: *mailbox_key(44).address() };
    invite.to_text_v2(&keys).unwrap()
}

fn payload_v2() -> Payload {
    Payload::V2 {
        certificate: Some(certificate(&alice())),
        advertisement: Some(advertisement()),
        prekey: Some(hybrid_prekey(&alice(), 45)),
        mailbox: Some(*mailbox_key(47).address()),
        content: content(),
    }
}

/// A format 4 exchange from invites: Alice's hybrid first contact to Bob's invite prekey (her
/// randomness all 21s), Bob's conversation reply (all 22s); Alice's state after it.
fn exchange_4() -> (Conversation, Vec<u8>, Vec<u8>) {
    let (a, b) = (alice(), bob());
    let (a_cert, b_cert) = (certificate(&a), certificate(&b));
    let (a_prekey, b_prekey) = (hybrid_prekey(&a, 45), hybrid_prekey(&b, 42));
    let (a_mailbox, b_mailbox) = (mailbox_key(47), mailbox_key(44));
    let (invite, keys, _) = Invite::from_text_with_keys(&invite_v2(), NOW).unwrap();
    let mut alice_side = Conversation::from_invite(&invite, keys.as_ref(), NOW).unwrap();
    let a_keys = InviteKeys { prekey: a_prekey.clone(), mailbox: *a_mailbox.address() };
    let mut bob_side = Conversation::from_invite(
        &Invite { certificate: a_cert.clone(), addresses: vec![] },
        Some(&a_keys),
        NOW,
    )
    .unwrap();
    let own_a = Own {
        device: a.device(),
        certificate: &a_cert,
        prekey: Some(&a_prekey),
        mailbox: Some(a_mailbox.address()),
    };
    let first =
        alice_side.seal_with(&own_a, &content(), Randomness::from_bytes([21; 128]), NOW).unwrap();
    let opened = envelope::open_first_contact_4(
        &b_prekey,
        &hybrid_secret(42),
        b_mailbox.address(),
        b.identity_key(),
        &first,
        NOW,
    )
    .unwrap();
    bob_side.accept_first_contact(opened, NOW).unwrap();
    let own_b = Own {
        device: b.device(),
        certificate: &b_cert,
        prekey: Some(&b_prekey),
        mailbox: Some(b_mailbox.address()),
    };
    let reply =
        bob_side.seal_with(&own_b, &content(), Randomness::from_bytes([22; 128]), NOW).unwrap();
    alice_side.open(&a, &reply, NOW).unwrap();
    (alice_side, first, reply)
}

fn mailbox_fetch_v2() -> RequestV2 {
    let key = mailbox_key(44);
    let (mailbox_id, proof) =
        BlindedProof::sign(&key, crate::mailbox::period_of(NOW), Operation::Fetch, NOW, &[])
            .unwrap();
    RequestV2::Fetch { mailbox_id, proof }
}

fn prekey() -> SignedPrekey {
    SignedPrekey::sign(&alice(), &[42; 32], NOW, NOW + 7 * 86_400).unwrap()
}

fn presence() -> PresenceRecord {
    // `/ip4/127.0.0.1/tcp/4001` in binary.
    let address = vec![4, 127, 0, 0, 1, 6, 0x0f, 0xa1];
    let a = alice();
    let cert = certificate(&a);
    // A circuit through `/ip4/127.0.0.1/tcp/4001/p2p/<Bob>`, for contacts only.
    let mut circuit = address.clone();
    circuit.extend_from_slice(&multiaddr_p2p(&bob().peer_id()));
    circuit.extend_from_slice(&[0xa2, 0x02]);
    let part = ForContacts { addresses: vec![circuit], hybrid_prekey: Some(hybrid_prekey(&a, 43)) };
    let sealed = part.seal(mailbox_key(45).address(), &cert.identity_key, 7, [0x5c; 24]).unwrap();
    PresenceRecord::sign(&a, &cert, vec![address], 7, NOW + 3600, Some(prekey()), sealed).unwrap()
}

/// The `/p2p/<peer>` component of a binary multiaddr: code 0x01a5 as a varint, the length of
/// the multihash, the multihash.
fn multiaddr_p2p(peer: &libp2p_identity::PeerId) -> Vec<u8> {
    let hash = peer.to_bytes();
    let mut out = vec![0xa5, 0x03, hash.len() as u8];
    out.extend_from_slice(&hash);
    out
}

fn bundle() -> Bundle {
    let peers = vec![BundlePeer {
        peer_id: bob().peer_id().to_bytes(),
        addresses: vec![vec![4, 127, 0, 0, 1, 6, 0x0f, 0xa1]],
        relay: true,
    }];
    Bundle::sign(&alice(), peers, NOW).unwrap()
}

fn deposit() -> Request {
    Request::Deposit {
        mailbox_id: [5; 32],
        item_id: [6; 16],
        envelope: vec![7; 1024],
        expires_at: NOW + 86_400,
    }
}

fn items() -> Response {
    Response::Items { items: vec![Item { item_id: [6; 16], envelope: vec![7; 1024] }], more: true }
}

/// Every wire type, by the name of its vector file, computed from fixed secrets and ephemerals.
fn vectors() -> Vec<(&'static str, Vec<u8>)> {
    let (a, b) = (alice(), bob());
    let (alice_state, _, first, reply) = exchange();
    let (alice_state_4, first_4, reply_4) = exchange_4();
    vec![
        ("device_certificate", codec::encode(&certificate(&a)).unwrap()),
        ("identity_file", a.to_file_bytes().to_vec()),
        ("invite_text", invite().to_text().unwrap().into_bytes()),
        ("content_text", codec::encode(&content()).unwrap()),
        (
            "content_receipt",
            codec::encode(&Content { body: Body::Receipt { of: [8; 16] }, ..content() }).unwrap(),
        ),
        ("content_read", codec::encode(&read_content()).unwrap()),
        (
            "content_receipts",
            codec::encode(&Content {
                body: Body::Receipts { of: vec![[8; 16], [9; 16], [10; 16]] },
                ..content()
            })
            .unwrap(),
        ),
        (
            "content_chunk",
            codec::encode(&Content {
                body: Body::Chunk { index: 1, count: 3, body_len: 150_000, data: vec![0xc7; 8] },
                ..content()
            })
            .unwrap(),
        ),
        (
            "content_numbered_text",
            codec::encode(&Content {
                body: Body::NumberedText {
                    series: 0x1122_3344_5566_7788,
                    seq: 42,
                    text: "hello, bob".into(),
                },
                ..content()
            })
            .unwrap(),
        ),
        (
            "content_file_offer",
            codec::encode(&Content {
                body: Body::File(crate::file::FileMessage::Offer(crate::file::FileOffer {
                    name: "report.pdf".into(),
                    size: 150_000,
                    sha256: [0x5e; 32],
                })),
                ..content()
            })
            .unwrap(),
        ),
        (
            "content_file_chunk",
            codec::encode(&Content {
                body: Body::File(crate::file::FileMessage::Chunk { index: 2, data: vec![0xc7; 8] }),
                ..content()
            })
            .unwrap(),
        ),
        (
            "backup_file",
            crate::backup::seal_with(
                b"correct horse battery staple",
                &crate::backup::Contents {
                    identity_file: zeroize::Zeroizing::new(a.to_file_bytes().to_vec()),
                    database: zeroize::Zeroizing::new(b"SQLite format 3\0".to_vec()),
                },
                crate::backup::Header {
                    memory_kib: 64,
                    passes: 1,
                    lanes: 1,
                    salt: [0x5a; 16],
                    nonce: [0xa5; 24],
                },
            )
            .unwrap(),
        ),
        ("advertisement", codec::encode(&advertisement()).unwrap()),
        ("payload_v1", codec::encode(&payload()).unwrap()),
        (
            "sealed_v1",
            codec::encode(&Sealed { sender: certificate(&a), content: content() }).unwrap(),
        ),
        (
            "envelope_v1_first_contact",
            envelope::seal(&a, &certificate(&a), b.device().public(), &content(), [9; 32]).unwrap(),
        ),
        ("envelope_v3_first_contact", first),
        ("envelope_v3_conversation", reply),
        ("conversation_state", alice_state.to_bytes().unwrap().to_vec()),
        ("signed_prekey", codec::encode(&prekey()).unwrap()),
        ("presence_record", presence().to_bytes().unwrap()),
        ("bootstrap_bundle", bundle().to_text().unwrap().into_bytes()),
        ("mailbox_deposit", deposit().to_bytes().unwrap()),
        ("mailbox_items", items().to_bytes().unwrap()),
        ("hybrid_prekey", codec::encode(&hybrid_prekey(&b, 42)).unwrap()),
        ("invite_v2_text", invite_v2().into_bytes()),
        ("payload_v2", codec::encode(&payload_v2()).unwrap()),
        ("envelope_v4_first_contact", first_4),
        ("envelope_v4_conversation", reply_4),
        ("conversation_state_v3", alice_state_4.to_bytes().unwrap().to_vec()),
        ("mailbox_request_v2_fetch", mailbox_fetch_v2().to_bytes().unwrap()),
    ]
}

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(format!("{name}.hex"))
}

fn to_hex_lines(bytes: &[u8]) -> String {
    bytes.chunks(64).map(|line| crate::identity::hex(line) + "\n").collect()
}

fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn golden_vectors_match_and_decode() {
    let update = std::env::var_os("KOLOKOL_UPDATE_VECTORS").is_some();
    for (name, bytes) in vectors() {
        let path = vector_path(name);
        if update {
            std::fs::write(&path, to_hex_lines(&bytes)).unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with KOLOKOL_UPDATE_VECTORS=1)", path.display())
        });
        assert_eq!(to_hex_lines(&bytes), stored, "the encoding of {name} changed");
    }

    // The stored bytes also decode (and open) to the values they were made from.
    let read = |name: &str| from_hex(&std::fs::read_to_string(vector_path(name)).unwrap());
    let (a, b) = (alice(), bob());
    assert_eq!(
        codec::decode::<DeviceCertificate>("c", &read("device_certificate")).unwrap(),
        certificate(&a)
    );
    assert_eq!(Identity::from_file_bytes(&read("identity_file")).unwrap().peer_id(), a.peer_id());
    let text = String::from_utf8(read("invite_text")).unwrap();
    assert_eq!(Invite::from_text(&text, NOW).unwrap().0, invite());
    assert_eq!(codec::decode::<Content>("c", &read("content_text")).unwrap(), content());
    let restored =
        crate::backup::open(b"correct horse battery staple", &read("backup_file")).unwrap();
    assert_eq!(restored.identity_file.as_slice(), a.to_file_bytes().as_slice());
    let numbered = codec::decode::<Content>("c", &read("content_numbered_text")).unwrap();
    assert_eq!(numbered.body.text(), Some("hello, bob"));
    assert!(numbered.body.is_valid());
    let offer = codec::decode::<Content>("c", &read("content_file_offer")).unwrap();
    assert!(offer.body.is_valid());
    let chunk = codec::decode::<Content>("c", &read("content_file_chunk")).unwrap();
    // Eight bytes stand for the chunk's data in the vector; a real chunk carries 62 720.
    assert!(matches!(chunk.body, Body::File(crate::file::FileMessage::Chunk { index: 2, .. })));
    let receipt = codec::decode::<Content>("c", &read("content_read")).unwrap();
    assert_eq!(receipt, read_content());
    assert!(receipt.body.is_valid());
    assert_eq!(
        codec::decode::<Advertisement>("a", &read("advertisement")).unwrap(),
        advertisement()
    );
    assert_eq!(codec::decode::<Payload>("p", &read("payload_v1")).unwrap(), payload());
    let opened = envelope::open(b.device(), &read("envelope_v1_first_contact"), NOW).unwrap();
    assert_eq!(opened.content, content());
    let (mut alice_state, mut bob_state, _, _) = exchange();
    let mut fresh_bob = Conversation::new(certificate(&a), NOW).unwrap();
    assert_eq!(fresh_bob.open(&b, &read("envelope_v3_first_contact"), NOW).unwrap(), content());
    // Alice's stored state has already accepted the conversation envelope: a replay.
    let mut stored = Conversation::from_bytes(&read("conversation_state")).unwrap();
    assert_eq!(
        stored.open(&a, &read("envelope_v3_conversation"), NOW),
        Err(crate::Error::Replayed)
    );
    // And the exchange is reproducible end to end: a fresh seal matches byte for byte.
    let again = bob_state
        .seal(b.device(), &certificate(&b), &content(), Randomness::from_bytes([13; 128]), NOW)
        .unwrap();
    assert_eq!(alice_state.open(&a, &again, NOW).unwrap(), content());

    // A state stored by the previous version (2) still loads, and still knows its envelopes.
    let mut old = Conversation::from_bytes(&read("conversation_state_v2")).unwrap();
    assert_eq!(old.open(&a, &read("envelope_v3_conversation"), NOW), Err(crate::Error::Replayed));

    // Format 4: the stored vectors open, for the identities and keys they were made for.
    let first_4 = read("envelope_v4_first_contact");
    let opened = envelope::open_first_contact_4(
        &hybrid_prekey(&b, 42),
        &hybrid_secret(42),
        mailbox_key(44).address(),
        b.identity_key(),
        &first_4,
        NOW,
    )
    .unwrap();
    assert_eq!((opened.content, opened.sender), (content(), a.peer_id()));
    assert_eq!(opened.mailbox, Some(*mailbox_key(47).address()));
    let mut stored = Conversation::from_bytes(&read("conversation_state_v3")).unwrap();
    assert_eq!(
        stored.open(&a, &read("envelope_v4_conversation"), NOW),
        Err(crate::Error::Replayed)
    );
    let (invite, keys, peer) =
        Invite::from_text_with_keys(&String::from_utf8(read("invite_v2_text")).unwrap(), NOW)
            .unwrap();
    assert_eq!(peer, b.peer_id());
    assert_eq!(keys.unwrap().prekey, hybrid_prekey(&b, 42));
    assert_eq!(invite.certificate, certificate(&b));
    assert_eq!(codec::decode::<Payload>("p", &read("payload_v2")).unwrap(), payload_v2());
    assert_eq!(
        RequestV2::from_bytes(&read("mailbox_request_v2_fetch")).unwrap(),
        mailbox_fetch_v2()
    );
    let RequestV2::Fetch { mailbox_id, proof } = mailbox_fetch_v2() else { unreachable!() };
    proof.verify(&mailbox_id, Operation::Fetch, &[], NOW).unwrap();
}

#[test]
fn read_receipts_are_bounded() {
    let receipts = |n: usize| Body::Receipts { of: vec![[1; 16]; n] }.is_valid();
    assert!(!receipts(0) && receipts(1) && receipts(256) && !receipts(257));
    let read = |n: usize| Body::Read { of: vec![[1; 16]; n] }.is_valid();
    assert!(!read(0));
    assert!(read(1));
    assert!(read(crate::message::MAX_READ_IDS));
    assert!(!read(crate::message::MAX_READ_IDS + 1));
}

/// xorshift64*: enough pseudo-randomness to walk the decoders, and the same every run.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Random bytes, a random length, or a corrupted copy of a real encoding: flipped bytes,
    /// cut off, or grown. The corrupted copies get past the first checks of each decoder.
    fn input(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        match self.below(4) {
            0 => {
                let len = self.below(300);
                self.bytes(len)
            }
            1 => {
                let len = envelope::BUCKETS[self.below(2)];
                let mut bytes = self.bytes(len);
                bytes[0] = 1 + self.below(4) as u8;
                bytes[1] = 1 + self.below(2) as u8;
                bytes
            }
            _ => {
                let mut bytes = seeds[self.below(seeds.len())].clone();
                for _ in 0..1 + self.below(4) {
                    if bytes.is_empty() {
                        break;
                    }
                    let at = self.below(bytes.len());
                    match self.below(3) {
                        0 => bytes[at] ^= 1 << self.below(8),
                        1 => bytes[at] = self.next() as u8,
                        _ => bytes.truncate(at),
                    }
                }
                if self.below(8) == 0 {
                    let extra = self.below(16);
                    bytes.extend(self.bytes(extra));
                }
                bytes
            }
        }
    }
}

/// How many inputs each decoder gets.
const INPUTS_PER_DECODER: usize = 3000;

#[track_caller]
fn never_panics(name: &str, seeds: &[Vec<u8>], mut decoder: impl FnMut(&[u8])) {
    let mut rng = Xorshift(0x6b6f_6c6f_6b6f_6c31 ^ name.len() as u64);
    for _ in 0..INPUTS_PER_DECODER {
        let input = rng.input(seeds);
        if catch_unwind(AssertUnwindSafe(|| decoder(&input))).is_err() {
            panic!("{name} panicked on {}", crate::identity::hex(&input));
        }
    }
}

#[test]
fn no_decoder_panics_on_arbitrary_bytes() {
    let seeds: Vec<Vec<u8>> = vectors().into_iter().map(|(_, bytes)| bytes).collect();
    let (a, b) = (alice(), bob());
    let (mut alice_state, _, _, _) = exchange();
    let state = alice_state.to_bytes().unwrap().to_vec();
    never_panics("envelope::peek", &seeds, |x| drop(envelope::peek(x)));
    never_panics("envelope::open", &seeds, |x| drop(envelope::open(b.device(), x, NOW)));
    never_panics("envelope::open_first_contact", &seeds, |x| {
        drop(envelope::open_first_contact(b.device(), b.identity_key(), x, NOW))
    });
    never_panics("Conversation::open", &seeds, |x| {
        drop(alice_state.open(&a, x, NOW));
    });
    never_panics("Conversation::from_bytes", &[state], |x| drop(Conversation::from_bytes(x)));
    never_panics("Invite::from_text", &seeds, |x| {
        drop(Invite::from_text(&String::from_utf8_lossy(x), NOW))
    });
    never_panics("Identity::from_file_bytes", &seeds, |x| drop(Identity::from_file_bytes(x)));
    never_panics("DeviceCertificate", &seeds, |x| drop(codec::decode::<DeviceCertificate>("c", x)));
    never_panics("Content", &seeds, |x| drop(codec::decode::<Content>("c", x)));
    never_panics("chunk::join", &seeds, |x| {
        let mut data = x.to_vec();
        data.resize(crate::chunk::CHUNK_LEN, 0);
        let body_len = x.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        drop(crate::chunk::join([data.as_slice(), data.as_slice()], body_len))
    });
    never_panics("Sealed", &seeds, |x| drop(codec::decode::<Sealed>("s", x)));
    never_panics("Payload", &seeds, |x| drop(codec::decode::<Payload>("p", x)));
    never_panics("Advertisement", &seeds, |x| drop(codec::decode::<Advertisement>("a", x)));
    never_panics("Invite", &seeds, |x| drop(codec::decode::<Invite>("i", x)));
    let key = record_key(&a.peer_id());
    never_panics("PresenceRecord::from_dht", &seeds, |x| {
        drop(PresenceRecord::from_dht(&key, x, NOW))
    });
    never_panics("SignedPrekey", &seeds, |x| drop(codec::decode::<SignedPrekey>("p", x)));
    never_panics("Bundle::from_text", &seeds, |x| {
        drop(Bundle::from_text(&String::from_utf8_lossy(x)))
    });
    never_panics("mailbox::Request", &seeds, |x| drop(Request::from_bytes(x)));
    never_panics("mailbox::Response", &seeds, |x| drop(Response::from_bytes(x)));
    never_panics("mailbox::RequestV2", &seeds, |x| drop(RequestV2::from_bytes(x)));
    never_panics("HybridPrekey", &seeds, |x| drop(codec::decode::<HybridPrekey>("p", x)));
    never_panics("Invite::from_text_with_keys", &seeds, |x| {
        drop(Invite::from_text_with_keys(&String::from_utf8_lossy(x), NOW))
    });
    let (b_prekey, b_mailbox) = (hybrid_prekey(&b, 42), mailbox_key(44));
    never_panics("envelope::open_first_contact_4", &seeds, |x| {
        drop(envelope::open_first_contact_4(
            &b_prekey,
            &hybrid_secret(42),
            b_mailbox.address(),
            b.identity_key(),
            x,
            NOW,
        ))
    });
    let (mut alice_state_4, _, _) = exchange_4();
    never_panics("Conversation::open format 4", &seeds, |x| drop(alice_state_4.open(&a, x, NOW)));
}

/// The discovery and mailbox vectors decode back to what made them, through the decoders the
/// node uses.
#[test]
fn discovery_and_mailbox_vectors_decode() {
    let read = |name: &str| from_hex(&std::fs::read_to_string(vector_path(name)).unwrap());
    let a = alice();
    let (record, peer) =
        PresenceRecord::from_dht(&record_key(&a.peer_id()), &read("presence_record"), NOW).unwrap();
    assert_eq!((record.clone(), peer), (presence(), a.peer_id()));
    let part = record.open_for_contacts(mailbox_key(45).address(), NOW).unwrap().unwrap();
    assert_eq!(part.hybrid_prekey, Some(hybrid_prekey(&a, 43)));
    assert_eq!(part.addresses.len(), 1);
    let prekey: SignedPrekey = codec::decode("prekey", &read("signed_prekey")).unwrap();
    prekey.verify(a.identity_key(), NOW).unwrap();
    let text = String::from_utf8(read("bootstrap_bundle")).unwrap();
    assert_eq!(Bundle::from_text(&text).unwrap(), (bundle(), a.peer_id()));
    assert_eq!(Request::from_bytes(&read("mailbox_deposit")).unwrap(), deposit());
    assert_eq!(Response::from_bytes(&read("mailbox_items")).unwrap(), items());
}
