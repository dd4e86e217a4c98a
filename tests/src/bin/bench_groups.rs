//! `kolokol-bench-groups`: what one group text costs its writer, and how long it takes to reach
//! every member, for groups of 10 to 1 000 members on 127.0.0.1 (docs/BENCHMARKS.md, "Groups").
//!
//! The writer is a real Kolokol node. Its members are either real nodes too (`real`: each with
//! its own data directory, SQLite database and libp2p swarm, listening on 127.0.0.1), or sinks
//! (`sink`: one bare libp2p endpoint per member, with the member's own identity, TCP listener,
//! Noise and yamux, that answers every `/kolokol/msg/1` envelope `Accepted` at once without
//! opening it), all in this one process. Either way each member is the writer's contact,
//! reachable at its address only, and the writer seals and sends every copy exactly as it would
//! to members on other machines; a sink leaves out only the member's own work (opening,
//! checking and storing the text), which a real member does on its own device in parallel with
//! the others, while here real members share this machine's two cores.
//!
//! The writer runs on a tokio runtime of its own whose threads (its one worker and its blocking
//! pool, where SQLite runs) are named `kk-writer`, so its CPU time is read apart from the
//! members' from `/proc/self/task/*/stat`; the members share a second runtime.
//!
//! For each text, the benchmark measures the writer's `group.send` call (the outbox commit of
//! one row per member, then the first attempt of every copy, each sealed in the writer's
//! conversation with that member and sent, at most 32 at once), the writer's CPU for that call
//! and until every copy was acknowledged, and, for every member, the time from the call to the
//! member having the text (a real node's `group_message` event; the envelope's arrival at a
//! sink).
//!
//! Run: `cargo build --release -p kolokol-tests --bin kolokol-bench-groups`, then
//! `RUST_LOG=error ./target/release/kolokol-bench-groups real|sink SIZES [TEXTS]`, for example
//! `real 10,100 10`: groups of 10 and of 100 members (the writer included), 10 timed texts each
//! after one untimed one (the first text to each member is a first-contact envelope).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kolokol_node::wire::delivery;
use kolokol_node::{Multiaddr, Node, Role, RunningNode};
use kolokol_protocol::control::{Event, MessageState};
use kolokol_protocol::identity::Identity;
use kolokol_protocol::invite::Invite;
use kolokol_tests::support::{Net, TIMEOUT};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux};
use tokio::runtime::Runtime;
use tokio::sync::{broadcast, mpsc};

/// The name of the writer's runtime threads, which `/proc` reports as the thread's `comm`.
const WRITER_THREADS: &str = "kk-writer";

/// How many members are added to the group per `group.invite` call while setting it up.
const INVITE_BATCH: usize = 64;

/// How many arrival times a sink holds until the benchmark reads them; more are dropped. A
/// member is sent the group's history and one copy of each later change while the group is set
/// up, then one envelope per timed text.
const SINK_QUEUE: usize = 256;

/// The length of each text, in bytes: a short chat line.
const TEXT_LEN: usize = 100;

fn main() {
    let kind = match std::env::args().nth(1).as_deref() {
        Some("real") => Kind::Real,
        Some("sink") => Kind::Sink,
        _ => {
            eprintln!("usage: kolokol-bench-groups real|sink SIZES [TEXTS], e.g. real 10,100 10");
            std::process::exit(2);
        }
    };
    let sizes: Vec<usize> = std::env::args()
        .nth(2)
        .map(|a| a.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100]);
    let texts: usize = std::env::args().nth(3).and_then(|a| a.parse().ok()).unwrap_or(10).max(1);
    let writer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(WRITER_THREADS)
        // Blocking threads that exit take their CPU time with them: keep them for the run.
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .expect("the writer's runtime");
    let members_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kk-members")
        .enable_all()
        .build()
        .expect("the members' runtime");
    println!(
        "kolokol-bench-groups: {kind:?} members, sizes {sizes:?}, {texts} timed texts of {TEXT_LEN} bytes each"
    );
    for size in sizes.into_iter().filter(|s| *s >= 2) {
        members_rt.block_on(group_of(&writer_rt, kind, size, texts));
    }
}

/// What the members are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Real Kolokol nodes: each opens, checks and stores the text, then acknowledges it.
    Real,
    /// Sinks: a bare libp2p endpoint per member (its own identity, TCP listener, Noise and
    /// yamux) that speaks `/kolokol/msg/1` and acknowledges every envelope without opening it.
    Sink,
}

/// One member, as the benchmark watches it.
enum Member {
    /// A real node and its event stream.
    Real(RunningNode, broadcast::Receiver<Event>),
    /// A sink: when each envelope arrived, and the task that drives its swarm.
    Sink(mpsc::Receiver<Instant>, tokio::task::JoinHandle<()>),
}

/// Sets up a group of `size` members (the writer included) and times `texts` texts from its
/// writer.
async fn group_of(writer_rt: &Runtime, kind: Kind, size: usize, texts: usize) {
    let net = Net::new();
    let started = Instant::now();
    let writer = {
        let config = listening(&net, "writer");
        writer_rt
            .spawn(async move { RunningNode::start(config).await.expect("the writer starts") })
            .await
            .expect("the writer's start")
    };
    let w = writer.node();
    w.wait_for_net(TIMEOUT, |s| !s.listen.is_empty()).await.expect("the writer listens");
    let w_addr = w.net_status().await.expect("status").listen[0].clone();
    let mut names = Vec::new();
    let mut members = Vec::new();
    for i in 1..size {
        let name = format!("m{i}");
        match kind {
            Kind::Real => {
                let member =
                    RunningNode::start(listening(&net, &name)).await.expect("a member starts");
                let node = member.node();
                node.wait_for_net(TIMEOUT, |s| !s.listen.is_empty())
                    .await
                    .expect("a member listens");
                let addr = node.net_status().await.expect("status").listen[0].clone();
                add(&w, &name, &net.identity(&name), addr).await;
                add(&node, "writer", &net.identity("writer"), w_addr.clone()).await;
                let events = node.subscribe();
                members.push(Member::Real(member, events));
            }
            Kind::Sink => {
                let identity = Identity::from_secrets(rand::random(), rand::random());
                let (addr, arrivals, task) = sink(&identity).await;
                add(&w, &name, &identity, addr).await;
                members.push(Member::Sink(arrivals, task));
            }
        }
        names.push(name);
    }
    let group = w.group_create("bench", Some("writer")).await.expect("create").id;
    for batch in names.chunks(INVITE_BATCH) {
        let w = w.clone();
        let (group, batch) = (group.clone(), batch.to_vec());
        writer_rt
            .spawn(async move { w.group_invite(&group, &batch, None, false).await })
            .await
            .expect("invite task")
            .expect("invite");
    }
    for member in &mut members {
        if let Member::Real(node, events) = member {
            let node = node.node();
            until(events, || {
                node.groups()
                    .expect("groups")
                    .iter()
                    .any(|g| g.id == group && g.status == "member" && g.members as usize == size)
            })
            .await;
        }
    }
    println!(
        "\ngroup of {size} members (the writer and {} {}): set up in {:.1} s",
        size - 1,
        match kind {
            Kind::Real => "real member nodes",
            Kind::Sink => "sink members",
        },
        started.elapsed().as_secs_f64()
    );

    let mut calls = Vec::new();
    let mut call_cpu = Duration::ZERO;
    let mut text_cpu = Duration::ZERO;
    let mut deliveries = Vec::new();
    let mut worst = Vec::new();
    for round in 0..=texts {
        let text = format!("{round:>4} {}", "k".repeat(TEXT_LEN - 5));
        // One waiter per member, each holding its member's stream until the text is there, so
        // every arrival is timed as it happens; what came before (the group's setup, the last
        // text's acknowledgements) is read away first.
        let mut waiters = tokio::task::JoinSet::new();
        for (i, mut member) in members.drain(..).enumerate() {
            member.drain();
            let text = text.clone();
            waiters.spawn(async move {
                let at = member.arrival(&text).await;
                (i, member, at)
            });
        }
        let mut w_events = w.subscribe();
        let cpu_before = writer_cpu();
        let start = Instant::now();
        let sent = {
            let (w, group, text) = (w.clone(), group.clone(), text.clone());
            writer_rt
                .spawn(async move { w.group_send(&group, &text).await })
                .await
                .expect("send task")
                .expect("group send")
        };
        let call = start.elapsed();
        let cpu_call = writer_cpu().saturating_sub(cpu_before);
        let mut arrived = Vec::with_capacity(size - 1);
        let mut back = Vec::with_capacity(size - 1);
        while let Some(waited) = waiters.join_next().await {
            let (i, member, at) = waited.expect("a waiter");
            arrived.push(at.saturating_duration_since(start));
            back.push((i, member));
        }
        back.sort_by_key(|(i, _)| *i);
        members.extend(back.into_iter().map(|(_, m)| m));
        // Every copy acknowledged: the writer's work for this text is over. Counted from the
        // events (the subscription predates the call), once per member; a large group's two
        // events per copy overrun the event buffer, so then, and whenever the events pause,
        // the writer's own count is read.
        let mut acknowledged: HashSet<String> = HashSet::new();
        let deadline = Instant::now() + TIMEOUT;
        while acknowledged.len() < size - 1 {
            assert!(
                Instant::now() < deadline,
                "text {round}: {} of {} copies acknowledged",
                acknowledged.len(),
                size - 1
            );
            match tokio::time::timeout(Duration::from_millis(200), w_events.recv()).await {
                Ok(Ok(Event::GroupDelivery(d)))
                    if d.id == sent.id && d.state == MessageState::Delivered =>
                {
                    acknowledged.insert(d.member_peer_id);
                }
                Ok(Ok(_)) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => panic!("the writer stopped"),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => {
                    let chat = w.group_messages(&group, 4).expect("the writer's texts");
                    if chat.messages.iter().any(|m| {
                        m.id == sent.id && m.delivered.is_some() && m.delivered == m.recipients
                    }) {
                        break;
                    }
                }
            }
        }
        let cpu_text = writer_cpu().saturating_sub(cpu_before);
        arrived.sort();
        if round == 0 {
            println!(
                "  untimed first text: call {:.1} ms, last member {:.1} ms",
                ms(call),
                ms(arrived[arrived.len() - 1])
            );
            continue;
        }
        calls.push(call);
        call_cpu += cpu_call;
        text_cpu += cpu_text;
        worst.push(arrived[arrived.len() - 1]);
        deliveries.extend(arrived);
    }
    calls.sort();
    deliveries.sort();
    worst.sort();
    let n = texts as u32;
    println!(
        "  writer, group.send call: p50 {:.1} ms, max {:.1} ms ({texts} texts)",
        ms(p(&calls, 50)),
        ms(calls[calls.len() - 1])
    );
    println!(
        "  writer CPU per text: {:.1} ms during the call, {:.1} ms until every copy was acknowledged ({:.2} ms per member; 10 ms clock ticks summed over {texts} texts)",
        ms(call_cpu / n),
        ms(text_cpu / n),
        ms(text_cpu / n) / (size - 1) as f64
    );
    println!(
        "  delivery, call to each member having it: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms ({} deliveries); the last member of each text: p50 {:.1} ms, max {:.1} ms",
        ms(p(&deliveries, 50)),
        ms(p(&deliveries, 90)),
        ms(deliveries[deliveries.len() - 1]),
        deliveries.len(),
        ms(p(&worst, 50)),
        ms(worst[worst.len() - 1])
    );
    for member in members {
        match member {
            Member::Real(node, _) => node.shutdown().await,
            Member::Sink(_, task) => task.abort(),
        }
    }
    writer_rt.spawn(async move { writer.shutdown().await }).await.expect("writer shutdown");
}

impl Member {
    /// Reads away what arrived so far.
    fn drain(&mut self) {
        match self {
            Member::Real(_, events) => {
                while matches!(
                    events.try_recv(),
                    Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_))
                ) {}
            }
            Member::Sink(arrivals, _) => while arrivals.try_recv().is_ok() {},
        }
    }

    /// When the text reached this member: a real node's `group_message` event for it (the text
    /// opened, checked and stored), or the next envelope at a sink (nothing else is sent to a
    /// member while a text is timed).
    async fn arrival(&mut self, text: &str) -> Instant {
        match self {
            Member::Real(_, events) => loop {
                match tokio::time::timeout(TIMEOUT, events.recv()).await {
                    Ok(Ok(Event::GroupMessage(m))) if m.text == text => return Instant::now(),
                    Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                    _ => panic!("a member never got the text"),
                }
            },
            Member::Sink(arrivals, _) => match tokio::time::timeout(TIMEOUT, arrivals.recv()).await
            {
                Ok(Some(at)) => at,
                _ => panic!("a sink never got the text"),
            },
        }
    }
}

/// Starts a sink for `identity` on 127.0.0.1: its address, the times envelopes arrive at it,
/// and the task driving it.
async fn sink(
    identity: &Identity,
) -> (Multiaddr, mpsc::Receiver<Instant>, tokio::task::JoinHandle<()>) {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity.keypair().clone())
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                delivery::Codec,
                [(delivery::PROTOCOL_NAME, ProtocolSupport::Inbound)],
                request_response::Config::default(),
            )
        })
        .expect("behaviour")
        // The writer's connection stays up between texts, as a member's node keeps it.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("valid")).expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let (tx, rx) = mpsc::channel(SINK_QUEUE);
    let task = tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            }) = swarm.select_next_some().await
            {
                // A full queue drops the time: the benchmark reads the queue before each
                // text, and nothing else arrives while a text is timed.
                let _ = tx.try_send(Instant::now());
                let _ = swarm.behaviour_mut().send_response(channel, delivery::Ack::Accepted);
            }
        }
    });
    (addr, rx, task)
}

/// The configuration of a node listening on 127.0.0.1 and bootstrapping from nobody: members
/// and writer know each other from invites only.
fn listening(net: &Net, name: &str) -> kolokol_node::Config {
    let mut config = net.config(name, Role::Node);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")];
    config
}

/// Adds the holder of `identity` as contact `name` of `node`, reachable at `address` only.
async fn add(node: &Node, name: &str, identity: &Identity, address: Multiaddr) {
    let now = kolokol_node::clock::unix_secs();
    let certificate = identity.certify(now - 60, now + 3600).expect("certificate");
    let invite = Invite { certificate, addresses: vec![address.to_vec()] };
    node.add_contact(name, &invite.to_text().expect("text")).await.expect("contact added");
}

/// Waits until `check` holds, looking again after each event of the member's stream.
async fn until(events: &mut broadcast::Receiver<Event>, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(TIMEOUT * 4, async {
        while !check() {
            match events.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("a member stopped"),
            }
        }
    })
    .await
    .expect("every member joined the group");
}

/// CPU time (user + system) of the writer's threads so far, from `/proc/self/task/*/stat`.
fn writer_cpu() -> Duration {
    // Clock ticks per second (USER_HZ): 100 on every Linux this runs on.
    const TICKS: u64 = 100;
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        if !head.ends_with(&format!("({WRITER_THREADS}")) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum::<u64>();
    }
    Duration::from_millis(ticks * 1000 / TICKS)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn p(sorted: &[Duration], pct: usize) -> Duration {
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}
