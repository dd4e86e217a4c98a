//! `kolokol-bench`: measures the delivery figures of DESIGN.md §9 on 127.0.0.1, in one process:
//! direct and relayed latency (send call → recipient's message event, outbox commit, sealing,
//! opening and the recipient's commit included), raw TCP carrying the same 4 KiB in the same run
//! for the ratio, and sustained throughput with many messages in flight.
//!
//! Run: `cargo run --release -p kolokol-tests --bin kolokol-bench [-- N]`. Prints one line per
//! figure; docs/BENCHMARKS.md records them with the machine they came from.

use std::time::{Duration, Instant};

use kolokol_node::{Multiaddr, Node, Role, RunningNode};
use kolokol_protocol::control::Event;
use kolokol_protocol::invite::Invite;
use kolokol_tests::support::{Net, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

/// A text that seals into exactly one 4 KiB envelope, the size of every short text
/// (`envelope::TEXT_BUCKET`).
const TEXT_LEN: usize = 700;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let warmup = n / 10;
    let text = "k".repeat(TEXT_LEN);
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;

    // Direct: Alice knows Bob only by his listen address.
    let alice = listening(&net, "alice").await;
    let bob = listening(&net, "bob").await;
    let bob_addr = bob.node().net_status().await.expect("status").listen[0].clone();
    add(&net, &alice.node(), "bob", "bob", bob_addr).await;
    let alice_addr = alice.node().net_status().await.expect("status").listen[0].clone();
    add(&net, &bob.node(), "alice", "alice", alice_addr).await;
    let direct = latency(&alice.node(), &bob.node(), "bob", &text, n, warmup).await;
    report("direct delivery, 1 in flight", &direct);

    // Relayed: Carol knows Dave only by his circuit through the relay.
    let carol = net.user("carol", std::slice::from_ref(&relay_addr)).await;
    let dave = net.user("dave", std::slice::from_ref(&relay_addr)).await;
    let circuit: Multiaddr = format!("{relay_addr}/p2p-circuit").parse().expect("valid");
    add(&net, &carol.node(), "dave", "dave", circuit.clone()).await;
    add(&net, &dave.node(), "carol", "carol", circuit).await;
    let relayed = latency(&carol.node(), &dave.node(), "dave", &text, n, warmup).await;
    report("relayed delivery, 1 in flight", &relayed);

    let tcp = raw_tcp(n, warmup).await;
    report("raw TCP, same 4 KiB + 1-byte ack, 1 in flight", &tcp);
    println!(
        "ratio direct/raw TCP p50: {:.1}x, relayed/raw TCP p50: {:.1}x",
        p(&direct, 50).as_secs_f64() / p(&tcp, 50).as_secs_f64(),
        p(&relayed, 50).as_secs_f64() / p(&tcp, 50).as_secs_f64()
    );

    let (count, elapsed) = throughput(&alice.node(), &bob.node(), "bob", &text, n * 2, 64).await;
    println!(
        "throughput direct, 64 in flight: {count} messages in {:.2} s = {:.0} msg/s",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );

    // The longest message: 1 000 000 bytes, 16 chunks of 65 535-byte envelopes, delivered
    // directly one after the other, then joined and stored by the recipient.
    let longest = "k".repeat(kolokol_protocol::message::MAX_TEXT_LEN);
    let rounds = (n / 100).max(5);
    let long = latency(&alice.node(), &bob.node(), "bob", &longest, rounds, 1).await;
    report("direct delivery of a 1 000 000-byte message, 1 in flight", &long);
    for node in [alice, bob, carol, dave, relay] {
        node.shutdown().await;
    }
}

async fn listening(net: &Net, name: &str) -> RunningNode {
    let mut config = net.config(name, Role::Node);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")];
    let node = RunningNode::start(config).await.expect("starts");
    node.node().wait_for_net(TIMEOUT, |s| !s.listen.is_empty()).await.expect("listening");
    node
}

/// Adds `whose` as contact `name` of `node`, reachable at `address` only.
async fn add(net: &Net, node: &Node, name: &str, whose: &str, address: Multiaddr) {
    let now = kolokol_node::clock::unix_secs();
    let certificate = net.identity(whose).certify(now - 60, now + 3600).expect("certificate");
    let invite = Invite { certificate, addresses: vec![address.to_vec()] };
    node.add_contact(name, &invite.to_text().expect("text")).await.expect("contact added");
}

async fn latency(
    from: &Node,
    to: &Node,
    name: &str,
    text: &str,
    n: usize,
    warmup: usize,
) -> Vec<Duration> {
    let mut events = to.subscribe();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + warmup {
        let start = Instant::now();
        let sent = from.send(name, text).await.expect("send");
        if sent.state != "delivered" {
            panic!("message {i} not sent: {:?}", sent.detail);
        }
        wait_for(&mut events, &sent.id).await;
        if i >= warmup {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    samples
}

async fn wait_for(events: &mut broadcast::Receiver<Event>, id: &str) {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(Event::Message(m)) if m.id == id => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("node stopped"),
            }
        }
    })
    .await
    .expect("message arrived");
}

async fn throughput(
    from: &Node,
    to: &Node,
    name: &str,
    text: &str,
    n: usize,
    in_flight: usize,
) -> (usize, Duration) {
    let mut events = to.subscribe();
    let start = Instant::now();
    let sender = {
        let from = from.clone();
        let (name, text) = (name.to_owned(), text.to_owned());
        tokio::spawn(async move {
            let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
            let mut sends = tokio::task::JoinSet::new();
            for _ in 0..n {
                let permit = slots.clone().acquire_owned().await.expect("semaphore");
                let (from, name, text) = (from.clone(), name.clone(), text.clone());
                sends.spawn(async move {
                    from.send(&name, &text).await.expect("send");
                    drop(permit);
                });
            }
            while sends.join_next().await.is_some() {}
        })
    };
    let mut received = 0;
    while received < n {
        match tokio::time::timeout(TIMEOUT, events.recv()).await.expect("progress") {
            Ok(Event::Message(_)) => received += 1,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(k)) => received += k as usize,
            Err(broadcast::error::RecvError::Closed) => panic!("node stopped"),
        }
    }
    let elapsed = start.elapsed();
    sender.await.expect("sender");
    (received, elapsed)
}

/// The floor: a 4 KiB frame (a text's envelope) over a plain loopback TCP connection, answered
/// by one byte.
async fn raw_tcp(n: usize, warmup: usize) -> Vec<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; kolokol_protocol::envelope::TEXT_BUCKET];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&[0]).await.is_err() {
                break;
            }
        }
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let frame = vec![7u8; kolokol_protocol::envelope::TEXT_BUCKET];
    let mut ack = [0u8; 1];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + warmup {
        let start = Instant::now();
        c.write_all(&frame).await.expect("write");
        c.read_exact(&mut ack).await.expect("read");
        if i >= warmup {
            samples.push(start.elapsed());
        }
    }
    drop(c);
    let _ = server.await;
    samples.sort();
    samples
}

fn p(sorted: &[Duration], pct: usize) -> Duration {
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}

fn report(what: &str, samples: &[Duration]) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what}: n={} p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs",
        samples.len(),
        us(p(samples, 50)),
        us(p(samples, 90)),
        us(p(samples, 99))
    );
}
