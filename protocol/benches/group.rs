//! What a group costs its writer under pairwise fan-out, for groups of 10, 100 and 1 000
//! members: sealing one text once per member (the CPU part of a send; each copy is then one
//! delivery or one mailbox deposit), and resolving the group's membership from its changes
//! (what every member does on each change). Members are simulated: certificates only.
//!
//! Run: `cargo bench -p kolokol-protocol --bench group -- --quick`.
//! `docs/BENCHMARKS.md` records the figures.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use kolokol_protocol::conversation::{Conversation, Randomness};
use kolokol_protocol::group::{self, Action, GroupBody, GroupLog, GroupMessage, GroupOp, Member};
use kolokol_protocol::identity::{DeviceCertificate, Identity};
use kolokol_protocol::message::{Body, Content};

const NOW: u64 = 1_800_000_000;

/// Group sizes measured.
const SIZES: [usize; 3] = [10, 100, 1000];

fn person(i: usize) -> Identity {
    let mut identity = [7u8; 32];
    let mut device = [8u8; 32];
    identity[..8].copy_from_slice(&(i as u64).to_be_bytes());
    device[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Identity::from_secrets(identity, device)
}

fn certificate(who: &Identity) -> DeviceCertificate {
    who.certify(NOW - 10, NOW + 100_000).expect("signs")
}

/// A group of `n` members: the creator, then one addition each, in one chain of changes.
fn group_of(n: usize, people: &[Identity]) -> GroupLog {
    let creator = &people[0];
    let create =
        group::create(creator, certificate(creator), "bench", "0", [1; 16]).expect("creates");
    let mut log = GroupLog::new(create.group().expect("id"));
    log.insert(create).expect("kept");
    for who in &people[1..n] {
        let state = log.resolve().expect("resolves");
        let member = Member { certificate: certificate(who), name: String::new(), admin: false };
        let body = state.next(*creator.identity_key(), Action::Add { member });
        log.insert(GroupOp::sign(creator, body).expect("signs")).expect("kept");
    }
    log
}

fn groups(c: &mut Criterion) {
    let people: Vec<Identity> = (0..SIZES[SIZES.len() - 1]).map(person).collect();
    let writer = &people[0];
    let writer_cert = certificate(writer);
    let text = Content {
        id: [3; 16],
        sent_at_ms: NOW * 1000,
        body: Body::Group(GroupMessage {
            group: [4; 16],
            body: GroupBody::Text {
                id: [5; 16],
                seq: 1,
                heads: vec![[6; 32]],
                text: "x".repeat(100),
            },
        }),
    };
    let mut send = c.benchmark_group("group_send");
    send.sample_size(10);
    for n in SIZES {
        // The writer's conversation with each other member; each iteration starts from fresh
        // ones (made outside the timing), since sealing changes a conversation.
        let certificates: Vec<DeviceCertificate> = people[1..n].iter().map(certificate).collect();
        send.bench_function(BenchmarkId::new("seal_per_member", n), |b| {
            b.iter_batched(
                || {
                    certificates
                        .iter()
                        .map(|c| Conversation::new(c.clone(), NOW).expect("valid"))
                        .collect::<Vec<_>>()
                },
                |mut conversations| {
                    for (i, conversation) in conversations.iter_mut().enumerate() {
                        let sealed = conversation
                            .seal(
                                writer.device(),
                                &writer_cert,
                                &text,
                                Randomness::from_bytes([i as u8; 128]),
                                NOW,
                            )
                            .expect("seals");
                        black_box(sealed);
                    }
                },
                BatchSize::PerIteration,
            )
        });
    }
    send.finish();
    let mut resolve = c.benchmark_group("group_resolve");
    resolve.sample_size(10);
    for n in SIZES {
        let log = group_of(n, &people);
        resolve.bench_function(BenchmarkId::new("members", n), |b| {
            b.iter(|| black_box(log.resolve().expect("resolves")))
        });
    }
    resolve.finish();
}

criterion_group!(benches, groups);
criterion_main!(benches);
