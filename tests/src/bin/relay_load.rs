//! `kolokol-relay-load`: what one Kolokol relay serves. The relay runs in a process of its own
//! (this binary, `--relay DIR`: a `RunningNode` configured as `kolokol relay --listen
//! /ip4/127.0.0.1/tcp/0` configures it, with its memory ceiling and every relay limit), and
//! this process adds clients in steps: each a bare libp2p endpoint (TCP, Noise, Yamux, the
//! circuit-relay-v2 client, ping) with its own identity that takes a reservation on the relay;
//! at each step half of them open a circuit through the relay to the other half, and every
//! connection pings every second. The round-trip times of the pings over the circuits, p50 and
//! p99 over a window, are the latency through the relay at that load; the steps go on until
//! the relay refuses what is asked of it (a limit) or the steps run out; the first step whose
//! p50 is twice the first step's is named.
//!
//! Run: `cargo run --release -p kolokol-tests --bin kolokol-relay-load [-- 10,50,100,200,500,1000
//! [WINDOW_SECONDS]]`. Network on 127.0.0.0/8 only: client `i` binds its TCP socket to an
//! address of its own, 127.1.x.y, before it connects (`SourceBound`: libp2p's TCP transport
//! cannot choose a source address, and its port reuse binds the unspecified address), so each
//! client reaches the relay from its own IP address, as users behind different public
//! addresses do, and the relay's limits per IP address (libp2p's 60 reservations a minute, the
//! admission's connections per address) apply to each client alone (docs/BENCHMARKS.md).

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kolokol_node::swarm::behaviour::{MAX_CONNECTIONS, relay_limits};
use kolokol_node::{Config, Multiaddr, PeerId, Role, RunningNode};
use libp2p::core::Transport as _;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, ping, relay, yamux};
use tokio::sync::mpsc;

/// How often every connection pings: once a second, five times as often as a Kolokol node
/// (`PING_INTERVAL`), so each step's window holds enough samples.
const PING_EVERY: Duration = Duration::from_secs(1);

/// How long a step may take to get its reservations and circuits before what is missing counts
/// as refused.
const STEP_PATIENCE: Duration = Duration::from_secs(120);

/// New clients started at once: below the relay's `MAX_PENDING_INCOMING` (128) handshakes.
const CLIENTS_PER_WAVE: usize = 100;

/// Reports from the clients to the collector; bounded, and a client that finds it full drops
/// its sample rather than wait.
const REPORT_QUEUE_LEN: usize = 65_536;

#[derive(NetworkBehaviour)]
struct Client {
    relay: relay::client::Behaviour,
    ping: ping::Behaviour,
}

/// What a client tells the collector.
enum Report {
    Reserved,
    ReservationRefused(String),
    CircuitUp,
    CircuitFailed(String),
    /// A ping over the circuit this client dialed.
    Rtt(Duration),
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("--relay") {
        let dir = args.next().expect("--relay DIR");
        return relay_process(dir.into());
    }
    let steps: Vec<usize> = first
        .unwrap_or_else(|| "10,50,100,200,500,1000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("reservation counts are numbers, comma-separated"))
        .collect();
    let window = Duration::from_secs(args.next().and_then(|a| a.parse().ok()).unwrap_or(10u64));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(load(steps, window));
}

/// The relay: a Kolokol relay on 127.0.0.1 in this process, which prints its address and runs
/// until its standard input closes.
fn relay_process(dir: std::path::PathBuf) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("rt");
    runtime.block_on(async move {
        let mut config = Config::new(dir, Role::Relay);
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")];
        let relay = RunningNode::start(config).await.expect("the relay starts");
        let net = relay
            .node()
            .wait_for_net(Duration::from_secs(30), |s| !s.external.is_empty())
            .await
            .expect("the relay confirms its address");
        println!("{}/p2p/{}", net.external[0], relay.node().peer_id());
        std::io::stdout().flush().expect("stdout");
        // The parent closes our standard input when it is done (or dies).
        tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        })
        .await
        .expect("stdin reader");
        relay.shutdown().await;
    });
}

async fn load(steps: Vec<usize>, window: Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--relay")
        .arg(dir.path().join("relay"))
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the relay process starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the relay prints its address");
    let relay_addr: Multiaddr = line.trim().parse().expect("the relay's address");
    let pid = child.id();
    println!("relay {relay_addr} (pid {pid})");
    println!(
        "relay limits: MAX_RESERVATIONS {}, MAX_CIRCUITS {}, MAX_CIRCUITS_PER_PEER {}, MAX_CONNECTIONS {}, memory ceiling {} MiB",
        relay_limits::MAX_RESERVATIONS,
        relay_limits::MAX_CIRCUITS,
        relay_limits::MAX_CIRCUITS_PER_PEER,
        MAX_CONNECTIONS,
        kolokol_node::config::RELAY_MAX_MEMORY / (1024 * 1024)
    );

    let (tx, mut rx) = mpsc::channel::<Report>(REPORT_QUEUE_LEN);
    // Each client is a task; `dialers` holds, by client index, the channel that tells it whom to dial.
    let mut dialers: Vec<mpsc::Sender<Multiaddr>> = Vec::new();
    let mut peers: Vec<PeerId> = Vec::new();
    let mut rows = Vec::new();
    let mut first_p50: Option<Duration> = None;
    let mut circuits = 0usize;
    let mut held = 0usize;
    let mut doubled_at: Option<usize> = None;
    for &target in &steps {
        let step_began = Instant::now();
        // Reservations: new clients up to `target`.
        let mut reserved = 0;
        let mut refused = Vec::new();
        let new = target.saturating_sub(peers.len());
        let deadline = tokio::time::Instant::now() + STEP_PATIENCE;
        // In waves below the relay's MAX_PENDING_INCOMING, each answered before the next, so
        // that what is measured is how many the relay holds, not how many handshakes it takes
        // at once (a flood defence that refuses the excess).
        let mut added = 0;
        while added < new {
            let wave = (new - added).min(CLIENTS_PER_WAVE);
            for _ in 0..wave {
                let source = client_address(peers.len());
                let (peer, dial) = spawn_client(relay_addr.clone(), source, tx.clone());
                peers.push(peer);
                dialers.push(dial);
            }
            added += wave;
            while reserved + refused.len() < added {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(Report::Reserved)) => reserved += 1,
                    Ok(Some(Report::ReservationRefused(why))) => refused.push(why),
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let mut rtts = Vec::new();
        // Circuits: client 2j dials client 2j + 1 through the relay, for the new pairs.
        let want = peers.len() / 2;
        let mut up = 0;
        let mut failed = Vec::new();
        for j in circuits..want {
            let addr =
                relay_addr.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(peers[2 * j + 1]));
            let _ = dialers[2 * j].send(addr).await;
        }
        let asked = want - circuits;
        while up + failed.len() < asked {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Report::CircuitUp)) => up += 1,
                Ok(Some(Report::CircuitFailed(why))) => failed.push(why),
                Ok(Some(Report::Reserved)) => reserved += 1,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        circuits += up;
        held += reserved;
        // The window: every ping over a circuit in it.
        let (cpu_before, _) = relay_usage(pid);
        let window_end = tokio::time::Instant::now() + window;
        while let Ok(Some(report)) = tokio::time::timeout_at(window_end, rx.recv()).await {
            if let Report::Rtt(rtt) = report {
                rtts.push(rtt);
            }
        }
        let (cpu_after, rss) = relay_usage(pid);
        rtts.sort();
        let p50 = pick(&rtts, 50);
        let p99 = pick(&rtts, 99);
        let first = *first_p50.get_or_insert(p50);
        let ratio = p50.as_secs_f64() / first.as_secs_f64().max(1e-9);
        let row = format!(
            "| {} | {} | {} | {:.2} / {:.2} ms | {:.1}× | {:.0}% | {:.1} MB |",
            held,
            circuits,
            rtts.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            ratio,
            (cpu_after - cpu_before) / window.as_secs_f64() * 100.0,
            rss as f64 / 1e6,
        );
        println!(
            "step {target}: {row} reservations new {new} (accepted {reserved}, refused {}), circuits asked {asked} (up {up}, failed {}), {:.1} s",
            refused.len(),
            failed.len(),
            step_began.elapsed().as_secs_f64()
        );
        for why in refused.iter().take(3) {
            println!("  reservation refused: {why}");
        }
        for why in failed.iter().take(3) {
            println!("  circuit failed: {why}");
        }
        rows.push(row);
        // A doubled p50 is noted, not a reason to stop: the clients share this machine's two
        // cores with the relay, so the relay's CPU column says whether the relay caused it.
        if ratio >= 2.0 && doubled_at.is_none() {
            doubled_at = Some(held);
            println!("the p50 doubled from the first step's at {held} reservations");
        }
        if !refused.is_empty() || !failed.is_empty() {
            println!("the relay refused what was asked (a limit): stopping");
            break;
        }
    }
    println!(
        "| reservations held | circuits | pings in the window | RTT over a circuit p50 / p99 | p50 / first step's | relay CPU | relay RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    match doubled_at {
        Some(at) => println!("p50 first doubled at {at} reservations"),
        None => println!("p50 never doubled"),
    }
    // Closing its standard input stops the relay.
    drop(child.stdin.take());
    let _ = child.wait();
}

/// The relay process's CPU time so far (user + system, seconds) and resident memory (bytes),
/// from `/proc`.
fn relay_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name; 100 ticks a second.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    (cpu, rss)
}

/// The address client `i` listens on and dials from: 127.1.x.y, never the relay's 127.0.0.1.
fn client_address(i: usize) -> std::net::Ipv4Addr {
    let i = u16::try_from(i).expect("at most 65 535 clients");
    let [x, y] = i.to_be_bytes();
    std::net::Ipv4Addr::new(127, 1, x, y)
}

/// Starts a client that takes a reservation on the relay from its own source address; it dials
/// (through the relay) every circuit address sent on the returned channel and reports pings
/// over those circuits.
fn spawn_client(
    relay_addr: Multiaddr,
    source: std::net::Ipv4Addr,
    reports: mpsc::Sender<Report>,
) -> (PeerId, mpsc::Sender<Multiaddr>) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            let noise = noise::Config::new(key)?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                SourceBound(source)
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(yamux::Config::default())
                    .boxed(),
            )
        })
        .expect("tcp")
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .expect("relay client")
        .with_behaviour(|_, relay| Client {
            relay,
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_EVERY)),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    let peer = *swarm.local_peer_id();
    let relay_peer = match relay_addr.iter().last() {
        Some(Protocol::P2p(p)) => p,
        _ => panic!("the relay address ends in its peer id"),
    };
    swarm.listen_on(relay_addr.with(Protocol::P2pCircuit)).expect("listen on a circuit");
    let (dial_tx, mut dial_rx) = mpsc::channel::<Multiaddr>(1);
    tokio::spawn(async move {
        // The peers this client dialed through the relay, whose pings are the samples.
        let mut targets: HashMap<PeerId, bool> = HashMap::new();
        loop {
            tokio::select! {
                Some(addr) = dial_rx.recv() => {
                    if let Some(Protocol::P2p(target)) = addr.iter().last() {
                        targets.insert(target, false);
                    }
                    if let Err(e) = swarm.dial(addr) {
                        let _ = reports.try_send(Report::CircuitFailed(e.to_string()));
                    }
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(ClientEvent::Relay(
                        relay::client::Event::ReservationReqAccepted { renewal: false, .. },
                    )) => {
                        let _ = reports.send(Report::Reserved).await;
                    }
                    SwarmEvent::ListenerClosed { reason, .. } => {
                        let why = match reason {
                            Ok(()) => "listener closed".to_owned(),
                            Err(e) => e.to_string(),
                        };
                        let _ = reports.send(Report::ReservationRefused(why)).await;
                    }
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        if let Some(up) = targets.get_mut(&peer_id) && !*up {
                            *up = true;
                            let _ = reports.send(Report::CircuitUp).await;
                        }
                    }
                    SwarmEvent::OutgoingConnectionError { peer_id: Some(p), error, .. }
                        if p != relay_peer && targets.get(&p) == Some(&false) =>
                    {
                        targets.remove(&p);
                        let _ = reports.send(Report::CircuitFailed(error.to_string())).await;
                    }
                    SwarmEvent::Behaviour(ClientEvent::Ping(ping::Event {
                        peer, result: Ok(rtt), ..
                    })) if targets.contains_key(&peer) => {
                        let _ = reports.try_send(Report::Rtt(rtt));
                    }
                    _ => {}
                },
            }
        }
    });
    (peer, dial_tx)
}

/// TCP that connects from a given source address, dial only (a client listens on circuits).
struct SourceBound(std::net::Ipv4Addr);

impl libp2p::core::Transport for SourceBound {
    type Output = tokio_util::compat::Compat<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type ListenerUpgrade = futures::future::Ready<Result<Self::Output, Self::Error>>;
    type Dial = futures::future::BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn listen_on(
        &mut self,
        _id: libp2p::core::transport::ListenerId,
        addr: Multiaddr,
    ) -> Result<(), libp2p::core::transport::TransportError<Self::Error>> {
        Err(libp2p::core::transport::TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _id: libp2p::core::transport::ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: libp2p::core::transport::DialOpts,
    ) -> Result<Self::Dial, libp2p::core::transport::TransportError<Self::Error>> {
        let mut parts = addr.iter();
        let target = match (parts.next(), parts.next(), parts.next()) {
            (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port)), None | Some(Protocol::P2p(_))) => {
                std::net::SocketAddr::from((ip, port))
            }
            _ => return Err(libp2p::core::transport::TransportError::MultiaddrNotSupported(addr)),
        };
        let source = std::net::SocketAddr::from((self.0, 0));
        Ok(Box::pin(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(source)?;
            let stream = socket.connect(target).await?;
            stream.set_nodelay(true)?;
            Ok(tokio_util::compat::TokioAsyncReadCompatExt::compat(stream))
        }))
    }

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<libp2p::core::transport::TransportEvent<Self::ListenerUpgrade, Self::Error>>
    {
        std::task::Poll::Pending
    }
}

/// The `p`-th percentile of sorted values (nearest rank); zero when there are none.
fn pick(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() * p).div_ceil(100)).clamp(1, sorted.len()) - 1]
}
