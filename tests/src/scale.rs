//! The scale simulation: many real Kolokol nodes in one process, on libp2p's in-memory
//! transport (`Config::in_memory`), each with its own data directory, SQLite store, swarm,
//! Kademlia and every task `RunningNode::start` spawns. They bootstrap off a few seeds and are
//! left to fill their routing tables and publish their presence records as they do on a real
//! network; then random nodes look up random others' presence records (`Node::resolve`, the
//! lookup the outbox makes), and random pairs become contacts and send each other a message
//! through `Node::send`, the path `kolokol send` takes.
//!
//! Nodes join in waves of [`Options::wave`], as users join a network over time rather than all
//! in one instant: each wave starts, then the simulation waits until every node of it has
//! published its presence and filled its routing table before the next wave starts. Each node
//! bootstraps off a few earlier nodes drawn at random (as a user bootstraps off the relays and
//! contacts of an invite or bundle), not all off the same seeds, which would otherwise hold a
//! connection from every node of the network.
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

/// How long one wave of joining nodes may take to settle before the next wave starts anyway
/// (the final wait, [`SETTLE_TIMEOUT`], then decides whether the network settled).
pub const WAVE_TIMEOUT: Duration = Duration::from_secs(180);

/// Nodes that join at once unless [`Options::wave`] says otherwise.
pub const JOIN_WAVE: usize = 50;

/// How often the simulated nodes ping each connection. A real node pings every 5 s
/// (`PING_INTERVAL`) to find a connection a censor froze within seconds; that cost is per
/// connection and the same on every device however large the network, but here every node's
/// connections ping on the same two cores, so at hundreds of nodes the pings alone would take
/// much of the machine (the profile in docs/BENCHMARKS.md). The simulation measures the DHT and
/// delivery, which no ping is part of. Idle connections are still closed after a real node's
/// minute (`IDLE_CONNECTION_TIMEOUT`): without pings an open connection costs nearly nothing,
/// and closing it sooner would cost a new Noise handshake when a lookup needs it again.
pub const SIM_PING_INTERVAL: Duration = Duration::from_secs(60);

/// How long a simulated node keeps an idle connection: a real node's minute.
pub const SIM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the simulated nodes fetch their mailboxes unprompted, instead of a real node's
/// minute (`mailbox::FETCH_INTERVAL`). Every pass looks up the replicas of four mailbox ids
/// (this period's and the last one's, of both versions), each a Kademlia walk of some 40
/// requests, and fetches from each replica, half of it through a courier's fresh connection.
/// A device pays that alone however large the network, but here every node pays it on the same
/// two cores: at 200 nodes, 800 walks and some 28 000 Kademlia requests a minute, most of what
/// a settled network does, and what keeps each node connected to nearly every other one (the
/// measurements in docs/BENCHMARKS.md). The simulation's nodes are all online and reached
/// directly, so no mailbox ever holds anything; they still fetch on start and whenever their
/// addresses change, as a real node does.
pub const SIM_FETCH_INTERVAL: Duration = Duration::from_secs(10 * 60);

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
    /// How many earlier nodes each node bootstraps off (drawn at random; the first node starts
    /// alone, the next ones bootstrap off all the nodes before them).
    pub seeds: usize,
    /// Nodes that join at once; the next wave starts once this one has settled.
    pub wave: usize,
    /// How often each node pings each connection ([`SIM_PING_INTERVAL`], or a real node's
    /// 5 s to measure what that costs).
    pub ping_interval: Duration,
    /// How long each node keeps a connection with no streams open (a real node's minute,
    /// `IDLE_CONNECTION_TIMEOUT`, unless a run asks for less).
    pub idle_timeout: Duration,
    /// How often each node fetches its mailboxes unprompted ([`SIM_FETCH_INTERVAL`], or a real
    /// node's minute to measure what that costs).
    pub fetch_interval: Duration,
    /// Lookups of a random node's presence record from another random node.
    pub lookups: usize,
    /// Messages, each between a random pair of distinct nodes that become contacts first.
    pub messages: usize,
    /// The seed of the generator behind every random choice.
    pub seed: u64,
    /// How long to leave the settled network alone before the lookups (zero unless a run asks
    /// for it, to see what an idle network costs).
    pub quiet: Duration,
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Nodes started.
    pub nodes: usize,
    /// From the first start to the last node started, the waits for each wave included.
    pub start: Duration,
    /// Per wave: from its first node's start until all its nodes had settled (`None` if that
    /// did not happen within [`WAVE_TIMEOUT`]).
    pub waves: Vec<Option<Duration>>,
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
    /// How a lookup that found nothing ended: `None` when it found the record.
    pub missed: Option<Missed>,
}

/// How a lookup that found no record ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missed {
    /// The node answered that no valid record was found (Kademlia's query ended, or timed out
    /// at `KAD_QUERY_TIMEOUT`, without one).
    NotFound,
    /// The node answered with an error.
    Failed,
    /// No answer within [`STEP_TIMEOUT`].
    TimedOut,
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
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    let mut addresses: Vec<Multiaddr> = Vec::with_capacity(n);
    // Who bootstraps off whom comes from its own generator, so that the lookups and messages
    // drawn later are the same whatever the wave size.
    let mut joins = Rng::new(options.seed.wrapping_add(1));
    let wave = options.wave.max(1);
    for first in (0..n).step_by(wave) {
        let wave_began = Instant::now();
        for i in first..(first + wave).min(n) {
            let address = memory_address(first_port + i as u64);
            let mut config = Config::new(dir.path().join(format!("n{i}")), Role::Node);
            config.mdns = false;
            config.in_memory = true;
            config.ping_interval = options.ping_interval;
            config.idle_connection_timeout = options.idle_timeout;
            config.mailbox_fetch_interval = options.fetch_interval;
            // No node here is a relay, so a search for relays finds none and is made again
            // and again, a DHT walk each time; on a network with relays the first one finds
            // them (`Config::relay_discovery`).
            config.relay_discovery = false;
            config.listen = vec![address.clone()];
            config.external_addresses = vec![address.clone()];
            config.bootstrap = bootstrap_for(i, seeds, &addresses, &mut joins);
            let node = RunningNode::start(config).await.expect("a simulated node starts");
            addresses.push(address.with(libp2p::multiaddr::Protocol::P2p(node.node().peer_id())));
            nodes.push(node.node());
            running.push(node);
        }
        // A wave has settled when each of its nodes has published its record and knows a
        // bucket's worth of the nodes started so far.
        let table = SETTLED_TABLE.min(nodes.len().saturating_sub(1));
        let settled = settle(&nodes[first..], table, WAVE_TIMEOUT, &mut progress).await;
        let took = wave_began.elapsed();
        report.waves.push((settled == nodes.len() - first).then_some(took));
        let line = state(&nodes).await;
        progress(&format!(
            "{} nodes started; wave {}: {settled} of {} settled in {:.1} s ({:.1} s in all); {line}",
            nodes.len(),
            first / wave + 1,
            nodes.len() - first,
            took.as_secs_f64(),
            began.elapsed().as_secs_f64()
        ));
    }
    report.start = began.elapsed();

    // Settled: every node's record is out and its table holds a bucket's worth of peers.
    // Earlier waves settled before later ones joined; a republication on a grown routing table
    // may have failed since, and is retried, so every node is waited for again.
    let settling = Instant::now();
    let table = SETTLED_TABLE.min(n.saturating_sub(1));
    let settled = settle(&nodes, table, SETTLE_TIMEOUT, &mut progress).await;
    if settled == n {
        report.settle = Some(settling.elapsed());
    }
    // From each node's watched state, which a busy swarm task need not answer.
    for node in &nodes {
        let status = node.wait_for_net(Duration::ZERO, |_| true).await;
        report.tables.push(status.map_or(0, |s| s.routing_table));
    }
    report.rss_settled = rss();
    progress(&format!(
        "settled: {settled} of {n} nodes in {:.1} s",
        settling.elapsed().as_secs_f64()
    ));

    // A settled network left alone for a while, to see what it does when nothing is asked of
    // it (only when a run asks for it).
    let quiet_began = Instant::now();
    while quiet_began.elapsed() < options.quiet {
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        let line = state(&nodes).await;
        progress(&format!("quiet, {:.0} s: {line}", quiet_began.elapsed().as_secs_f64()));
    }

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

/// The bootstrap addresses of node `i`: every earlier node while there are at most `seeds` of
/// them, then `seeds` distinct earlier nodes drawn at random.
fn bootstrap_for(i: usize, seeds: usize, earlier: &[Multiaddr], rng: &mut Rng) -> Vec<Multiaddr> {
    if i <= seeds {
        return earlier.to_vec();
    }
    let mut picked: Vec<usize> = Vec::with_capacity(seeds);
    while picked.len() < seeds {
        let j = rng.below(i);
        if !picked.contains(&j) {
            picked.push(j);
        }
    }
    picked.into_iter().map(|j| earlier[j].clone()).collect()
}

/// Waits until every node in `nodes` has published its presence record and holds `table`
/// peers in its routing table, or until `timeout`; returns how many had.
/// Each node's network state is a watch the swarm task updates, so this waits on events;
/// `progress` hears a line every [`PROGRESS_INTERVAL`] on how far the nodes are.
async fn settle(
    nodes: &[Node],
    table: usize,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> usize {
    let began = Instant::now();
    let waits = nodes.iter().map(|node| {
        node.wait_for_net(timeout, move |s| s.presence == Some(Ok(())) && s.routing_table >= table)
    });
    let mut waits: futures::stream::FuturesUnordered<_> = waits.collect();
    let mut settled = 0;
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.tick().await;
    loop {
        tokio::select! {
            outcome = waits.next() => match outcome {
                Some(outcome) => settled += usize::from(outcome.is_some()),
                None => break,
            },
            _ = tick.tick() => {
                let line = state(nodes).await;
                progress(&format!(
                    "settling, {:.0} s: {settled} settled, {line}",
                    began.elapsed().as_secs_f64(),
                ));
            }
        }
    }
    settled
}

/// One line on the state of `nodes`: publications, routing tables, connected peers, and the
/// process's CPU time so far.
async fn state(nodes: &[Node]) -> String {
    let mut published = 0;
    let mut tables = Vec::with_capacity(nodes.len());
    let mut connected = Vec::with_capacity(nodes.len());
    let mut failure = None;
    for node in nodes {
        // Reading the watched state costs the node's swarm task nothing.
        if let Some(s) = node.wait_for_net(Duration::ZERO, |_| true).await {
            published += usize::from(s.presence == Some(Ok(())));
            tables.push(s.routing_table);
            connected.push(s.connected);
            if let Some(Err(e)) = s.presence {
                failure = Some(e);
            }
        }
    }
    tables.sort_unstable();
    connected.sort_unstable();
    let spread = |v: &[usize]| {
        format!(
            "min {} / median {} / max {} / sum {}",
            v.first().copied().unwrap_or(0),
            v.get(v.len() / 2).copied().unwrap_or(0),
            v.last().copied().unwrap_or(0),
            v.iter().sum::<usize>()
        )
    };
    format!(
        "{published} published, routing tables {}, connected peers {}, CPU {:.1} s; a failed publication: {failure:?}",
        spread(&tables),
        spread(&connected),
        cpu_seconds(),
    )
}

/// The CPU time the process has used so far (user and system), from `/proc/self/stat`.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are the 14th and 15th fields, the 12th and 13th after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
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
    // The node's lookup keeps only records that verify under the peer looked up.
    let missed = match found {
        Ok(Ok(Some(_))) => None,
        Ok(Ok(None)) => Some(Missed::NotFound),
        Ok(Err(_)) => Some(Missed::Failed),
        Err(_) => Some(Missed::TimedOut),
    };
    Lookup {
        found: missed.is_none(),
        missed,
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
        let options = Options {
            nodes: 30,
            seeds: 3,
            wave: JOIN_WAVE,
            ping_interval: SIM_PING_INTERVAL,
            idle_timeout: SIM_IDLE_TIMEOUT,
            fetch_interval: SIM_FETCH_INTERVAL,
            lookups: 30,
            messages: 15,
            seed: 17,
            quiet: Duration::ZERO,
        };
        let report = run(&options, |_| {}).await;
        assert!(report.settle.is_some(), "the network did not settle: tables {:?}", report.tables);
        let found = report.lookups.iter().filter(|l| l.found).count();
        assert_eq!(found, options.lookups, "lookups: {:?}", report.lookups);
        assert!(report.lookups.iter().all(|l| l.requests > 0), "{:?}", report.lookups);
        assert_eq!(report.delivered, options.messages);
    }
}
