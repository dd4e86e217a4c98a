//! The format 4 golden vectors opened, and sealed again byte for byte, by implementations that
//! share no code with the ones Kolokol uses: sopium's `noise-protocol` (with its RustCrypto and
//! dalek primitives) instead of `snow`, and RustCrypto's `ml-kem` instead of `libcrux-ml-kem`.
//! Only the spec of `docs/PROTOCOL.md` (sections 6 and 7.5) is followed here: header and
//! ciphertext layout, prologue, PSK derivation and padding are written out from it, so a
//! difference between the spec and the code fails this test.
//!
//! The secrets are the ones `protocol/src/tests.rs` made the vectors from: Alice's device key
//! is 32 bytes of 2, Bob's 4; Bob's hybrid prekey has X25519 secret 42s and ML-KEM seed 43s;
//! Bob's mailbox key is made from 44s; Alice's first contact used 21s for every random byte
//! (ephemeral, receive key, seed, ML-KEM randomness) and Bob's reply 22s.

use blake2::{Blake2s256, Digest};
use kolokol_protocol::codec;
use kolokol_protocol::envelope::Payload;
use kolokol_protocol::identity::Identity;
use kolokol_protocol::mailbox_key::MailboxKey;
use ml_kem::kem::Decapsulate;
use ml_kem::{DecapsulationKey, EncapsulationKey, KeyExport, MlKem768};
use noise_protocol::patterns::{HandshakePattern, Token};
use noise_protocol::{DH, HandshakeState, U8Array};
use noise_rust_crypto::sensitive::Sensitive;
use noise_rust_crypto::{Blake2s, ChaCha20Poly1305, X25519};

type Noise = HandshakeState<X25519, ChaCha20Poly1305, Blake2s>;

fn read(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/vectors/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("vector file");
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("hex"), 16).expect("hex"))
        .collect()
}

fn blake2s(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn key(bytes: [u8; 32]) -> Sensitive<[u8; 32]> {
    Sensitive::from_slice(&bytes)
}

/// `Noise_Xpsk0`: `<- s ... -> psk, e, es, s, ss`.
fn xpsk0() -> HandshakePattern {
    use Token::*;
    HandshakePattern::new(&[], &[S], &[&[PSK, E, ES, S, SS]], "Xpsk0")
}

/// `Noise_Kpsk1`: `-> s <- s ... -> e, es, ss, psk`.
fn kpsk1() -> HandshakePattern {
    use Token::*;
    HandshakePattern::new(&[S], &[S], &[&[E, ES, SS, PSK]], "Kpsk1")
}

/// The payload inside a padded plaintext: `u32 length || body || zero bytes`.
fn unpad(plaintext: &[u8]) -> Payload {
    let len = u32::from_be_bytes(plaintext[..4].try_into().expect("prefix")) as usize;
    assert!(plaintext[4 + len..].iter().all(|b| *b == 0), "padding is zero");
    codec::decode("payload", &plaintext[4..4 + len]).expect("payload 2")
}

#[test]
fn format_4_vectors_open_and_reseal_with_independent_noise_and_ml_kem() {
    let alice = Identity::from_secrets([1; 32], [2; 32]);
    let bob = Identity::from_secrets([3; 32], [4; 32]);
    let bob_mailbox = *MailboxKey::from_secret(&[44; 32]).address();

    // --- The first contact: header 18 || ML-KEM ciphertext 1088 || Noise_Xpsk0 message.
    let first = read("envelope_v4_first_contact");
    let (header, rest) = first.split_at(18);
    let (ciphertext, message) = rest.split_at(1088);
    assert_eq!(&header[..2], &[4, 1]);
    let prekey_public = x25519_dalek::x25519([42; 32], x25519_dalek::X25519_BASEPOINT_BYTES);
    let prekey_id = blake2s(&[b"kolokol-prekey-id:v4", &bob_mailbox, &prekey_public]);
    assert_eq!(&header[2..10], &prekey_id[..8], "key id");
    let tag = blake2s(&[b"kolokol-envelope-tag:v4", &bob_mailbox, &header[..10], &message[..32]]);
    assert_eq!(&header[10..18], &tag[..8], "tag");

    // ML-KEM by RustCrypto: decapsulate with the prekey's seed; and encapsulate again with the
    // sender's randomness (21s) to the same ciphertext.
    let dk = DecapsulationKey::<MlKem768>::from_seed([43u8; 64].into());
    let shared = dk.decapsulate(ciphertext.try_into().expect("1088 bytes"));
    let ek = EncapsulationKey::<MlKem768>::new(&dk.encapsulation_key().to_bytes()).expect("key");
    let (again, shared_again) = ek.encapsulate_deterministic(&[21u8; 32].into());
    assert_eq!(again.as_slice(), ciphertext, "ML-KEM ciphertext resealed byte for byte");
    assert_eq!(shared, shared_again);
    let psk = blake2s(&[b"kolokol-hybrid-psk:v1", shared.as_slice(), ciphertext]);

    let mut prologue = b"kolokol-envelope".to_vec();
    prologue.extend_from_slice(header);
    prologue.extend_from_slice(bob.identity_key());
    prologue.extend_from_slice(ciphertext);
    let mut responder =
        Noise::new(xpsk0(), false, &prologue, Some(key([42; 32])), None, None, None);
    responder.push_psk(&psk);
    let plaintext = responder.read_message_vec(message).expect("Xpsk0 opens");
    assert_eq!(responder.get_rs(), Some(*alice.device().public()), "sender's static key");
    let Payload::V2 { certificate, advertisement, content, .. } = unpad(&plaintext) else {
        panic!("payload layout 2")
    };
    assert_eq!(certificate.expect("certificate").device_key, *alice.device().public());
    assert_eq!(content.body, kolokol_protocol::message::Body::Text("hello, bob".into()));
    let advertisement = advertisement.expect("advertisement");
    assert_eq!(advertisement.seq, 0, "a first contact starts at sequence 0");

    let mut initiator = Noise::new(
        xpsk0(),
        true,
        &prologue,
        Some(key([2; 32])),
        Some(key([21; 32])),
        Some(prekey_public),
        None,
    );
    initiator.push_psk(&psk);
    let resealed = initiator.write_message_vec(&plaintext).expect("Xpsk0 seals");
    assert_eq!(resealed, message, "first contact resealed byte for byte");

    // --- The reply: header 18 || Noise_Kpsk1 message, to Alice's receive key (21s), PSK = its
    // seed (21s), from Bob's device key.
    let reply = read("envelope_v4_conversation");
    let (header, message) = reply.split_at(18);
    assert_eq!(&header[..2], &[4, 2]);
    let receive_public = X25519::pubkey(&key([21; 32]));
    assert_eq!(receive_public, advertisement.public);
    let key_id = blake2s(&[b"kolokol-key-id", &receive_public]);
    assert_eq!(&header[2..10], &key_id[..8]);
    let tag = blake2s(&[b"kolokol-envelope-tag:v4", &[21; 32], &header[..10], &message[..32]]);
    assert_eq!(&header[10..18], &tag[..8]);
    let mut prologue = b"kolokol-envelope".to_vec();
    prologue.extend_from_slice(header);
    prologue.extend_from_slice(alice.identity_key());
    let bob_device = *bob.device().public();
    let mut responder =
        Noise::new(kpsk1(), false, &prologue, Some(key([21; 32])), None, Some(bob_device), None);
    responder.push_psk(&advertisement.seed);
    let plaintext = responder.read_message_vec(message).expect("Kpsk1 opens");
    assert_eq!(unpad(&plaintext).content().body, content.body);
    let mut initiator = Noise::new(
        kpsk1(),
        true,
        &prologue,
        Some(key([4; 32])),
        Some(key([22; 32])),
        Some(receive_public),
        None,
    );
    initiator.push_psk(&advertisement.seed);
    assert_eq!(initiator.write_message_vec(&plaintext).expect("seals"), message);
}
