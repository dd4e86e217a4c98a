//! The scale simulation: many real Kolokol nodes in one process, on libp2p's in-memory
//! transport (`Config::in_memory`), each with its own data directory, SQLite store, swarm,
//! Kademlia and every task `RunningNode::start` spawns. They bootstrap off a few seeds and are
//! left to fill their routing tables and publish their presence records as they do on a real
//! network; then random nodes look up random others' presence records (`Node::resolve`, the
//! lookup the outbox makes), and random pairs become contacts and send each other a message
//! through `Node::send`, the path `kolokol send` takes.
//!
//! Every node is a DHT server: it has an external address (its `/memory/` listen address), as a
//! node with a public address has. What a lookup costs is read from the node's own counters
//! (`NetStatus::lookups`, Kademlia's `QueryStats` for each presence lookup): the number of DHT
//! peers asked until the lookup ended, which bounds the length of any path it followed.
//!
//! Choices (who looks up whom, who writes to whom) come from a seeded generator, so a run is
//! the same run again; the nodes' identity keys are fresh each time, so the DHT's shape is not.
//! `kolokol-scale` (src/bin/scale.rs) runs it for the figures of docs/BENCHMARKS.md; the test
//! below runs a small one and checks that every lookup finds its record and every message
//! arrives.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kolokol_node::{Config, Multiaddr, Node, Role, RunningNode};
use kolokol_protocol::control::Event;

use crate::support::introduce;
use crate::sybil::Rng;

/// How long the whole network may take to settle: every node's presence record published and
/// its routing table holding [`SETTLED_TABLE`] peers (or all the others, in a smaller network).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The routing-table size a node must reach before the network counts as settled: Kademlia's
/// bucket size, enough that every lookup starts from peers spread over the key space.
pub const SETTLED_TABLE: usize = 20;

/// How long one lookup or one message may take before it counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the binary hears how far the network has settled.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// Lookups, and messages, under way at once (each from a different node for lookups).
pub const IN_FLIGHT: usize = 16;

/// The first in-memory port handed out; each run takes the next block of ports, so runs one
/// after the other in one process (or next to other tests) never share an address.
const FIRST_PORT: u64 = 40_000;

static NEXT_PORT: AtomicU64 = AtomicU64::new(FIRST_PORT);

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes in the network.
    pub nodes: usize,
    /// Of those, how many are seeds: the first starts alone, the others bootstrap off it, and
    /// every later node bootstraps off all of them.
    pub seeds: usize,
    /// Lookups of a random node's presence record from another random node.
    pub lookups: usize,
    /// Messages, each between a random pair of distinct nodes that become contacts first.
    pub messages: usize,
    /// The seed of the generator behind every random choice.
    pub seed: u64,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Nodes started.
    pub nodes: usize,
    /// From the first start to the last node started.
    pub start: Duration,
    /// From the last node started until every node had published its presence and filled its
    /// routing table; `None` if that did not happen within [`SETTLE_TIMEOUT`].
    pub settle: Option<Duration>,
    /// Each node's routing-table size once settled (or at the timeout).
    pub tables: Vec<usize>,
    /// Per lookup: whether it found the record, DHT peers asked, of them answering, time taken.
    pub lookups: Vec<Lookup>,
    /// Messages sent and how many arrived.
    pub sent: usize,
    /// Messages the recipient had (its `message` event) within [`STEP_TIMEOUT`].
    pub delivered: usize,
    /// Per delivered message: from the send call to the recipient's event, first contact
    /// included (each pair's first message is a first-contact envelope).
    pub delivery_times: Vec<Duration>,
    /// The process's resident memory before the first node, after the last one settled, and
    /// after the messages, in bytes.
    pub rss_before: u64,
    /// See `rss_before`.
    pub rss_settled: u64,
    /// See `rss_before`.
    pub rss_end: u64,
}

/// One lookup's outcome.
#[derive(Clone, Copy, Debug)]
pub struct Lookup {
    /// Whether it found a valid record of the peer looked up.
    pub found: bool,
    /// DHT peers it asked (`QueryStats::num_requests`).
    pub requests: u64,
    /// Of those, the ones that had answered (`QueryStats::num_successes`) when the lookup
    /// ended; libp2p takes the statistics for a found record before it counts that answer, so
    /// the peer that gave the record is not among them.
    pub successes: u64,
    /// From the call to its answer.
    pub time: Duration,
}

/// The process's resident set size in bytes, from `/proc/self/status` (0 where unreadable).
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The in-memory address of the node listening on `port`.
fn memory_address(port: u64) -> Multiaddr {
    Multiaddr::empty().with(libp2p::multiaddr::Protocol::Memory(port))
}

/// Runs one simulation. `progress` hears a line at each stage (the binary prints them).
pub async fn run(options: &Options, mut progress: impl FnMut(&str)) -> Report {
    let n = options.nodes;
    let seeds = options.seeds.clamp(1, n.max(1));
    let mut report = Report { nodes: n, rss_before: rss(), ..Report::default() };
    let dir = tempfile::tempdir().expect("a temporary directory can be created");
    let first_port = NEXT_PORT.fetch_add(n as u64, Ordering::Relaxed);

    let began = Instant::now();
    let mut running: Vec<RunningNode> = Vec::with_capacity(n);
    let mut seed_addresses: Vec<Multiaddr> = Vec::with_capacity(seeds);
    for i in 0..n {
        let address = memory_address(first_port + i as u64);
        let mut config = Config::new(dir.path().join(format!("n{i}")), Role::Node);
        config.mdns = false;
        config.in_memory = true;
        config.listen = vec![address.clone()];
        config.external_addresses = vec![address.clone()];
        config.bootstrap = seed_addresses.clone();
        let node = RunningNode::start(config).await.expect("a simulated node starts");
        if i < seeds {
            seed_addresses
                .push(address.with(libp2p::multiaddr::Protocol::P2p(node.node().peer_id())));
        }
        running.push(node);
        if (i + 1) % 100 == 0 {
            progress(&format!("{} nodes started, {:.1} s", i + 1, began.elapsed().as_secs_f64()));
        }
    }
    report.start = began.elapsed();
    let nodes: Vec<Node> = running.iter().map(RunningNode::node).collect();

    // Settled: every node's record is out and its table holds a bucket's worth of peers. Each
    // node's network state is a watch the swarm task updates, so this waits on events.
    let settling = Instant::now();
    let table = SETTLED_TABLE.min(n.saturating_sub(1));
    let waits = nodes.iter().map(|node| {
        node.wait_for_net(SETTLE_TIMEOUT, move |s| {
            s.presence == Some(Ok(())) && s.routing_table >= table
        })
    });
    let mut waits: futures::stream::FuturesUnordered<_> = waits.collect();
    let mut settled = Vec::with_capacity(n);
    // Every few seconds, a line on how far the network is: read from each node's watched
    // state, which costs its swarm task nothing.
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.tick().await;
    while settled.len() < n {
        tokio::select! {
            outcome = waits.next() => match outcome {
                Some(outcome) => settled.push(outcome),
                None => break,
            },
            _ = tick.tick() => {
                let mut published = 0;
                let mut tables = Vec::with_capacity(n);
                let mut failure = None;
                for node in &nodes {
                    if let Some(s) = node.wait_for_net(Duration::ZERO, |_| true).await {
                        published += usize::from(s.presence == Some(Ok(())));
                        tables.push(s.routing_table);
                        if let Some(Err(e)) = s.presence {
                            failure = Some(e);
                        }
                    }
                }
                tables.sort_unstable();
                progress(&format!(
                    "settling, {:.0} s: {} settled, {published} published, routing tables min {} / median {} / max {}; a failed publication: {:?}",
                    settling.elapsed().as_secs_f64(),
                    settled.len(),
                    tables.first().copied().unwrap_or(0),
                    tables.get(tables.len() / 2).copied().unwrap_or(0),
                    tables.last().copied().unwrap_or(0),
                    failure,
                ));
            }
        }
    }
    if settled.iter().all(Option::is_some) {
        report.settle = Some(settling.elapsed());
    }
    for node in &nodes {
        report.tables.push(node.net_status().await.map_or(0, |s| s.routing_table));
    }
    report.rss_settled = rss();
    progress(&format!(
        "settled: {} of {n} nodes in {:.1} s",
        settled.iter().filter(|s| s.is_some()).count(),
        settling.elapsed().as_secs_f64()
    ));

    let mut rng = Rng::new(options.seed);
    let pick_pair = |rng: &mut Rng| {
        let a = rng.below(n);
        let b = (a + 1 + rng.below(n - 1)) % n;
        (a, b)
    };

    // Lookups: each node makes its own one after another, so that its counters move for one
    // lookup at a time; up to IN_FLIGHT nodes look up at once.
    let pairs: Vec<(usize, usize)> = (0..options.lookups).map(|_| pick_pair(&mut rng)).collect();
    let mut by_node: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, to) in &pairs {
        by_node[*from].push(*to);
    }
    let nodes_ref = &nodes;
    let lookups: Vec<Vec<Lookup>> = futures::stream::iter(by_node.into_iter().enumerate())
        .map(|(from, targets)| async move {
            let mut out = Vec::with_capacity(targets.len());
            for to in targets {
                out.push(lookup(&nodes_ref[from], nodes_ref[to].peer_id()).await);
            }
            out
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    report.lookups = lookups.into_iter().flatten().collect();
    progress(&format!(
        "lookups: {} of {} found",
        report.lookups.iter().filter(|l| l.found).count(),
        report.lookups.len()
    ));

    // Messages: each pair drawn becomes contacts first (once), then every message is sent,
    // up to IN_FLIGHT at once.
    let pairs: Vec<(usize, usize)> = (0..options.messages).map(|_| pick_pair(&mut rng)).collect();
    let mut introduced = HashSet::new();
    for &(from, to) in &pairs {
        if introduced.insert((from.min(to), from.max(to))) {
            introduce(&nodes[from], &format!("n{from}"), &nodes[to], &format!("n{to}")).await;
        }
    }
    let outcomes: Vec<Option<Duration>> = futures::stream::iter(pairs.into_iter().enumerate())
        .map(|(m, (from, to))| async move {
            let (sender, recipient) = (&nodes_ref[from], &nodes_ref[to]);
            let mut events = recipient.subscribe();
            let started = Instant::now();
            let text = format!("message {m} from n{from} to n{to}");
            let sent = sender.send(&format!("n{to}"), &text).await.ok()?;
            let arrived = tokio::time::timeout(
                STEP_TIMEOUT,
                wait_for_message(recipient, &mut events, &sent.id),
            )
            .await;
            arrived.is_ok_and(|body| body == text).then(|| started.elapsed())
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    report.sent = outcomes.len();
    report.delivery_times = outcomes.into_iter().flatten().collect();
    report.delivered = report.delivery_times.len();
    report.rss_end = rss();
    progress(&format!("messages: {} of {} delivered", report.delivered, report.sent));

    futures::future::join_all(running.into_iter().map(RunningNode::shutdown)).await;
    report
}

/// The text of the message with this id once `node` has it (it may have arrived before
/// `events` was subscribed to: the inbox is read first). The caller bounds the wait.
async fn wait_for_message(
    node: &Node,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    id: &str,
) -> String {
    use tokio::sync::broadcast::error::RecvError;
    let in_inbox =
        || node.inbox(10_000).ok().and_then(|i| i.into_iter().find(|m| m.id == id)).map(|m| m.text);
    if let Some(text) = in_inbox() {
        return text;
    }
    loop {
        match events.recv().await {
            Ok(Event::Message(m)) if m.id == id => return m.text,
            Ok(_) => {}
            // Events were dropped while this waited: ours may have been among them.
            Err(RecvError::Lagged(_)) => {
                if let Some(text) = in_inbox() {
                    return text;
                }
            }
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// One presence lookup from `node`, with what it cost from the node's counters.
async fn lookup(node: &Node, peer: libp2p::PeerId) -> Lookup {
    let before = node.net_status().await.map(|s| s.lookups).unwrap_or_default();
    let started = Instant::now();
    let found = tokio::time::timeout(STEP_TIMEOUT, node.resolve(peer)).await;
    let time = started.elapsed();
    let after = node.net_status().await.map(|s| s.lookups).unwrap_or_default();
    Lookup {
        // The node's lookup keeps only records that verify under the peer looked up.
        found: matches!(found, Ok(Ok(Some(_)))),
        requests: after.requests - before.requests,
        successes: after.successes - before.successes,
        time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest simulation: 30 real nodes in one process. Every lookup of a node's presence
    /// record finds it, and every message arrives. Nothing here is timed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thirty_nodes_find_each_other_and_deliver_every_message() {
        let options = Options { nodes: 30, seeds: 3, lookups: 30, messages: 15, seed: 17 };
        let report = run(&options, |_| {}).await;
        assert!(report.settle.is_some(), "the network did not settle: tables {:?}", report.tables);
        let found = report.lookups.iter().filter(|l| l.found).count();
        assert_eq!(found, options.lookups, "lookups: {:?}", report.lookups);
        assert!(report.lookups.iter().all(|l| l.requests > 0), "{:?}", report.lookups);
        assert_eq!(report.delivered, options.messages);
    }
}
