//! Seal and open, per envelope kind and per bucket, through the API the node calls.
//!
//! Run: `cargo bench -p kolokol-protocol --bench envelope` (add `-- --quick` for a short run).
//! `x25519` is curve25519-dalek's ladder, kept as the reference for AWS-LC's, which the envelopes use.
//! `docs/BENCHMARKS.md` records the figures against the targets of `DESIGN.md` §9.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use kolokol_protocol::conversation::{Conversation, Own, Randomness};
use kolokol_protocol::envelope::{self, BUCKETS};
use kolokol_protocol::identity::{DeviceCertificate, Identity};
use kolokol_protocol::invite::{Invite, InviteKeys};
use kolokol_protocol::mailbox_key::MailboxKey;
use kolokol_protocol::message::{Body, Content};
use kolokol_protocol::prekey::{HybridPrekey, HybridPrekeySecret};

const NOW: u64 = 1_800_000_000;

/// Text lengths that land in each bucket, for every kind.
const TEXT_LENS: [usize; 4] = [100, 1000, 4200, 16_500];

struct Fixture {
    alice: Identity,
    bob: Identity,
    alice_cert: DeviceCertificate,
    /// Alice's conversation before Bob has answered: it seals first-contact envelopes.
    fresh: Conversation,
    /// Alice's and Bob's stored conversations after one round trip: they seal `Kpsk1`
    /// envelopes. Each iteration starts from these bytes, because sealing counts envelopes per
    /// peer key (after 512 it falls back to first contact) and opening fills the replay cache.
    alice_side: Vec<u8>,
    bob_side: Vec<u8>,
}

fn fixture() -> Fixture {
    let alice = Identity::from_secrets([1; 32], [2; 32]);
    let bob = Identity::from_secrets([3; 32], [4; 32]);
    let alice_cert = alice.certify(NOW - 10, NOW + 1000).expect("signs");
    let bob_cert = bob.certify(NOW - 10, NOW + 1000).expect("signs");
    let fresh = Conversation::new(bob_cert.clone(), NOW).expect("valid certificate");
    let mut alice_side = Conversation::new(bob_cert.clone(), NOW).expect("valid certificate");
    let mut bob_side = Conversation::new(alice_cert.clone(), NOW).expect("valid certificate");
    let hello = text(10);
    let first = alice_side
        .seal(alice.device(), &alice_cert, &hello, Randomness::from_bytes([11; 128]), NOW)
        .expect("seals");
    bob_side.open(&bob, &first, NOW).expect("opens");
    let reply = bob_side
        .seal(bob.device(), &bob_cert, &hello, Randomness::from_bytes([12; 128]), NOW)
        .expect("seals");
    alice_side.open(&alice, &reply, NOW).expect("opens");
    // Alice's next seal rotates her receive key (Bob has used key 0); do it once here, so the
    // benchmark measures the steady state of a burst, not the rotation.
    alice_side
        .seal(alice.device(), &alice_cert, &hello, Randomness::from_bytes([13; 128]), NOW)
        .expect("seals");
    let alice_side = alice_side.to_bytes().expect("encodes").to_vec();
    let bob_side = bob_side.to_bytes().expect("encodes").to_vec();
    Fixture { alice, bob, alice_cert, fresh, alice_side, bob_side }
}

fn text(len: usize) -> Content {
    Content { id: [7; 16], sent_at_ms: NOW * 1000, body: Body::Text("x".repeat(len)) }
}

fn envelopes(c: &mut Criterion) {
    // The floor under every figure: one X25519 Diffie-Hellman (a variable-base scalar
    // multiplication). Opening either kind does two, sealing does two plus a key generation,
    // so this calibrates the envelope figures against the load on the machine.
    c.bench_function("x25519", |b| {
        b.iter(|| x25519_dalek::x25519(black_box([5; 32]), black_box([9; 32])))
    });
    // The same through AWS-LC, as the envelopes compute it: a private key loaded (which computes
    // its public half, a base-point multiplication) and one Diffie-Hellman.
    let peer = x25519_dalek::x25519([9; 32], x25519_dalek::X25519_BASEPOINT_BYTES);
    c.bench_function("x25519_aws_lc_load", |b| {
        b.iter(|| {
            aws_lc_rs::agreement::PrivateKey::from_private_key(
                &aws_lc_rs::agreement::X25519,
                black_box(&[5; 32]),
            )
            .expect("loads")
        })
    });
    let loaded =
        aws_lc_rs::agreement::PrivateKey::from_private_key(&aws_lc_rs::agreement::X25519, &[5; 32])
            .expect("loads");
    c.bench_function("x25519_aws_lc_agree", |b| {
        b.iter(|| {
            aws_lc_rs::agreement::agree(
                &loaded,
                aws_lc_rs::agreement::UnparsedPublicKey::new(
                    &aws_lc_rs::agreement::X25519,
                    black_box(&peer),
                ),
                (),
                |s| Ok(s[0]),
            )
            .expect("agrees")
        })
    });
    let mut f = fixture();
    let mut seal = c.benchmark_group("seal");
    for (bucket, len) in BUCKETS.into_iter().zip(TEXT_LENS) {
        let content = text(len);
        seal.bench_function(BenchmarkId::new("first_contact", bucket), |b| {
            b.iter(|| {
                let sealed = f
                    .fresh
                    .seal(
                        f.alice.device(),
                        &f.alice_cert,
                        black_box(&content),
                        Randomness::from_bytes([21; 128]),
                        NOW,
                    )
                    .expect("seals");
                assert_eq!(sealed.len(), bucket);
                sealed
            })
        });
        seal.bench_function(BenchmarkId::new("conversation", bucket), |b| {
            b.iter_batched(
                || Conversation::from_bytes(&f.alice_side).expect("decodes"),
                |mut alice| {
                    let sealed = alice
                        .seal(
                            f.alice.device(),
                            &f.alice_cert,
                            black_box(&content),
                            Randomness::from_bytes([22; 128]),
                            NOW,
                        )
                        .expect("seals");
                    assert_eq!(sealed.len(), bucket);
                    assert_eq!(sealed[1], envelope::KIND_CONVERSATION);
                    sealed
                },
                BatchSize::SmallInput,
            )
        });
        seal.bench_function(BenchmarkId::new("format_1", bucket), |b| {
            b.iter(|| {
                envelope::seal(&f.alice, &f.alice_cert, f.bob.device().public(), &content, [23; 32])
                    .expect("seals")
            })
        });
    }
    seal.finish();

    let mut open = c.benchmark_group("open");
    for (bucket, len) in BUCKETS.into_iter().zip(TEXT_LENS) {
        let content = text(len);
        let first_contact = f
            .fresh
            .seal(f.alice.device(), &f.alice_cert, &content, Randomness::from_bytes([31; 128]), NOW)
            .expect("seals");
        open.bench_function(BenchmarkId::new("first_contact", bucket), |b| {
            b.iter(|| {
                envelope::open_first_contact(
                    f.bob.device(),
                    f.bob.identity_key(),
                    black_box(&first_contact),
                    NOW,
                )
                .expect("opens")
            })
        });
        let conversation = Conversation::from_bytes(&f.alice_side)
            .expect("decodes")
            .seal(f.alice.device(), &f.alice_cert, &content, Randomness::from_bytes([32; 128]), NOW)
            .expect("seals");
        assert_eq!(conversation[1], envelope::KIND_CONVERSATION);
        // Opening records the envelope in the replay cache, so every iteration gets Bob's state
        // fresh from its bytes; that set-up is not timed.
        open.bench_function(BenchmarkId::new("conversation", bucket), |b| {
            b.iter_batched(
                || Conversation::from_bytes(&f.bob_side).expect("decodes"),
                |mut bob| bob.open(&f.bob, black_box(&conversation), NOW).expect("opens"),
                BatchSize::SmallInput,
            )
        });
        let format_1 =
            envelope::seal(&f.alice, &f.alice_cert, f.bob.device().public(), &content, [33; 32])
                .expect("seals");
        open.bench_function(BenchmarkId::new("format_1", bucket), |b| {
            b.iter(|| envelope::open(f.bob.device(), black_box(&format_1), NOW).expect("opens"))
        });
    }
    open.finish();
}

/// Format 4: the hybrid first contact (ML-KEM-768 encapsulation and decapsulation on top of
/// `Noise_Xpsk0`) and the tagged conversation envelope, per bucket.
fn envelopes_4(c: &mut Criterion) {
    let alice = Identity::from_secrets([1; 32], [2; 32]);
    let bob = Identity::from_secrets([3; 32], [4; 32]);
    let alice_cert = alice.certify(NOW - 10, NOW + 1000).expect("signs");
    let bob_cert = bob.certify(NOW - 10, NOW + 1000).expect("signs");
    let secret = |seed: u8| HybridPrekeySecret {
        x25519: zeroize::Zeroizing::new([seed; 32]),
        kem_seed: zeroize::Zeroizing::new([seed; 64]),
    };
    let (a_secret, b_secret) = (secret(45), secret(42));
    let a_prekey = HybridPrekey::sign(&alice, &a_secret, NOW, NOW + 86_400).expect("signs");
    let b_prekey = HybridPrekey::sign(&bob, &b_secret, NOW, NOW + 86_400).expect("signs");
    let (a_mailbox, b_mailbox) =
        (MailboxKey::from_secret(&[47; 32]), MailboxKey::from_secret(&[44; 32]));
    let b_keys = InviteKeys { prekey: b_prekey.clone(), mailbox: *b_mailbox.address() };
    let a_keys = InviteKeys { prekey: a_prekey.clone(), mailbox: *a_mailbox.address() };
    let to_bob = Invite { certificate: bob_cert.clone(), addresses: vec![] };
    let to_alice = Invite { certificate: alice_cert.clone(), addresses: vec![] };
    let fresh = Conversation::from_invite(&to_bob, Some(&b_keys), NOW)
        .expect("invite")
        .to_bytes()
        .expect("encodes")
        .to_vec();
    let own_a = Own {
        device: alice.device(),
        certificate: &alice_cert,
        prekey: Some(&a_prekey),
        mailbox: Some(a_mailbox.address()),
    };
    let own_b = Own {
        device: bob.device(),
        certificate: &bob_cert,
        prekey: Some(&b_prekey),
        mailbox: Some(b_mailbox.address()),
    };
    let mut alice_side = Conversation::from_invite(&to_bob, Some(&b_keys), NOW).expect("invite");
    let mut bob_side = Conversation::from_invite(&to_alice, Some(&a_keys), NOW).expect("invite");
    let hello = text(10);
    let first = alice_side
        .seal_with(&own_a, &hello, Randomness::from_bytes([11; 128]), NOW)
        .expect("seals");
    let opened = envelope::open_first_contact_4(
        &b_prekey,
        &b_secret,
        b_mailbox.address(),
        bob.identity_key(),
        &first,
        NOW,
    )
    .expect("opens");
    bob_side.accept_first_contact(opened, NOW).expect("accepts");
    let reply =
        bob_side.seal_with(&own_b, &hello, Randomness::from_bytes([12; 128]), NOW).expect("seals");
    alice_side.open(&alice, &reply, NOW).expect("opens");
    alice_side.seal_with(&own_a, &hello, Randomness::from_bytes([13; 128]), NOW).expect("seals");
    let alice_bytes = alice_side.to_bytes().expect("encodes").to_vec();
    let bob_bytes = bob_side.to_bytes().expect("encodes").to_vec();

    let mut group = c.benchmark_group("format_4");
    // A hybrid first contact is never under 4 KiB: the two shortest texts share a bucket, so
    // only the first of them is measured.
    let mut first_buckets = Vec::new();
    for (bucket, len) in BUCKETS.into_iter().zip(TEXT_LENS) {
        let content = text(len);
        let sealed_first = Conversation::from_bytes(&fresh)
            .expect("decodes")
            .seal_with(&own_a, &content, Randomness::from_bytes([21; 128]), NOW)
            .expect("seals");
        let first_bucket = sealed_first.len();
        let measured = first_buckets.contains(&first_bucket);
        first_buckets.push(first_bucket);
        if !measured {
            group.bench_function(BenchmarkId::new("seal_first_contact", first_bucket), |b| {
                b.iter_batched(
                    || Conversation::from_bytes(&fresh).expect("decodes"),
                    |mut c| {
                        c.seal_with(&own_a, &content, Randomness::from_bytes([21; 128]), NOW)
                            .expect("seals")
                    },
                    BatchSize::SmallInput,
                )
            });
            group.bench_function(BenchmarkId::new("open_first_contact", first_bucket), |b| {
                b.iter(|| {
                    envelope::open_first_contact_4(
                        &b_prekey,
                        &b_secret,
                        b_mailbox.address(),
                        bob.identity_key(),
                        black_box(&sealed_first),
                        NOW,
                    )
                    .expect("opens")
                })
            });
        }
        let conversation = Conversation::from_bytes(&alice_bytes)
            .expect("decodes")
            .seal_with(&own_a, &content, Randomness::from_bytes([32; 128]), NOW)
            .expect("seals");
        assert_eq!(conversation.len(), bucket);
        group.bench_function(BenchmarkId::new("seal_conversation", bucket), |b| {
            b.iter_batched(
                || Conversation::from_bytes(&alice_bytes).expect("decodes"),
                |mut a| {
                    a.seal_with(&own_a, &content, Randomness::from_bytes([32; 128]), NOW)
                        .expect("seals")
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("open_conversation", bucket), |b| {
            b.iter_batched(
                || Conversation::from_bytes(&bob_bytes).expect("decodes"),
                |mut bob_state| bob_state.open(&bob, black_box(&conversation), NOW).expect("opens"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, envelopes, envelopes_4);
criterion_main!(benches);
