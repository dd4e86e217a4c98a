//! `kolokol-flood`: the hostile peer of the flood test (`tests/tests/floods.rs`), and the node it
//! floods, each run as a process of its own so the flood comes over loopback from outside.
//!
//! ```text
//! kolokol-flood relay <data dir>            a Kolokol relay on 127.0.0.1; prints its address,
//!                                           runs until its standard input closes
//! kolokol-flood <mode> <address> <seconds>  floods the node at <address> (ending in /p2p/<id>)
//! ```
//!
//! Modes: `churn` (TCP connections opened and dropped, and libp2p connections from a new
//! identity each, as fast as they go), `junk` (random envelopes of every bucket size over
//! `/kolokol/msg/1`, from a new identity every 64), `oversize` (delivery and mailbox frames
//! whose length prefix is far over the limit, then bytes), `deposits` (mailbox deposits into a
//! few mailboxes, from a new identity every 16), `slow` (TCP connections that send a byte a
//! second and never finish a handshake, 64 at a time). Each stops after <seconds> and prints
//! what it did on one line.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use kolokol_node::{Config, Multiaddr, PeerId, Role, RunningNode};
use kolokol_protocol::mailbox::{Request, Response};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{StreamProtocol, Swarm, noise, tcp, yamux};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["relay", dir] => runtime.block_on(relay(dir)),
        [mode, address, seconds] => match (address.parse::<Multiaddr>(), seconds.parse::<u64>()) {
            (Ok(address), Ok(seconds)) => {
                let until = Instant::now() + Duration::from_secs(seconds);
                runtime.block_on(flood(mode, address, until))
            }
            _ => usage("the address must be a multiaddr and the seconds a number"),
        },
        _ => usage("expected `relay <data dir>` or `<mode> <address> <seconds>`"),
    };
    std::process::exit(code);
}

fn usage(why: &str) -> i32 {
    eprintln!("kolokol-flood: {why} (modes: churn, junk, oversize, deposits, slow)");
    2
}

/// Runs a relay until standard input closes (the test holds the pipe and drops it to stop it).
async fn relay(dir: &str) -> i32 {
    let mut config = Config::new(dir, Role::Relay);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    config.mdns = false;
    let node = match RunningNode::start(config).await {
        Ok(node) => node,
        Err(e) => {
            eprintln!("kolokol-flood: the relay does not start: {e}");
            return 1;
        }
    };
    let Some(status) =
        node.node().wait_for_net(Duration::from_secs(30), |s| !s.external.is_empty()).await
    else {
        eprintln!("kolokol-flood: the relay confirmed no address");
        return 1;
    };
    println!("{}/p2p/{}", status.external[0], node.node().peer_id());
    let _ = std::io::stdout().flush();
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await;
    node.shutdown().await;
    0
}

async fn flood(mode: &str, address: Multiaddr, until: Instant) -> i32 {
    let Some(libp2p::multiaddr::Protocol::P2p(peer)) = address.iter().last() else {
        return usage("the address must end in /p2p/<peer id>");
    };
    let Some(socket) = socket_of(&address) else {
        return usage("the address must be /ip4/<ip>/tcp/<port>/p2p/<id>");
    };
    let done = match mode {
        "churn" => churn(&address, peer, socket, until).await,
        "junk" => junk(&address, peer, until).await,
        "oversize" => oversize(&address, peer, until).await,
        "deposits" => deposits(&address, peer, until).await,
        "slow" => slow(socket, until).await,
        _ => return usage("unknown mode"),
    };
    println!("{mode}: {done}");
    0
}

fn socket_of(address: &Multiaddr) -> Option<std::net::SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for p in address.iter() {
        match p {
            libp2p::multiaddr::Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            libp2p::multiaddr::Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    Some(std::net::SocketAddr::new(ip?, port?))
}

/// Raw bytes both ways, over either protocol id: the flooder writes whatever length prefix it
/// likes, which the real codecs refuse to.
#[derive(Clone, Default)]
struct Raw;

impl request_response::Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(1024).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(1 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()> {
        io.write_all(&res).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct Hostile {
    raw: request_response::Behaviour<Raw>,
    mailbox: request_response::Behaviour<kolokol_node::wire::mailbox::Codec>,
}

fn hostile() -> Swarm<Hostile> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|_| Hostile {
            raw: request_response::Behaviour::with_codec(
                Raw,
                [
                    (kolokol_node::wire::delivery::PROTOCOL_NAME, ProtocolSupport::Outbound),
                    (kolokol_node::wire::mailbox::PROTOCOL_NAME, ProtocolSupport::Outbound),
                ],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            ),
            mailbox: request_response::Behaviour::new(
                [(kolokol_node::wire::mailbox::PROTOCOL_NAME, ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
            ),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(1)))
        .build()
}

/// What the node answered a flooder's raw requests.
#[derive(Default)]
struct Tally {
    /// `Rejected` (the envelope did not open).
    rejected: usize,
    /// `Busy` (refused before opening: a quota, or a full queue).
    busy: usize,
    /// The stream closed without an answer (a frame refused by its length).
    closed: usize,
    /// No answer in time, or the connection failed.
    failed: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rejected, {} refused busy, {} closed unanswered, {} failed",
            self.rejected, self.busy, self.closed, self.failed
        )
    }
}

/// Drives `swarm` until `n` raw requests have an outcome or `until`, counting the outcomes.
async fn settle(swarm: &mut Swarm<Hostile>, mut n: usize, until: Instant, tally: &mut Tally) {
    while n > 0 && Instant::now() < until {
        let next = tokio::time::timeout(Duration::from_secs(1), swarm.select_next_some()).await;
        match next {
            Ok(SwarmEvent::Behaviour(HostileEvent::Raw(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }))) => {
                n -= 1;
                match response[..] {
                    [1] => tally.rejected += 1,
                    [2] => tally.busy += 1,
                    [] => tally.closed += 1,
                    _ => tally.failed += 1,
                }
            }
            Ok(SwarmEvent::Behaviour(HostileEvent::Raw(
                request_response::Event::OutboundFailure { .. },
            ))) => {
                n -= 1;
                tally.failed += 1;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// Connections opened and dropped: raw TCP that sends a byte and leaves, and libp2p
/// connections, each from a new identity, that do the whole handshake and leave.
async fn churn(
    address: &Multiaddr,
    peer: PeerId,
    socket: std::net::SocketAddr,
    until: Instant,
) -> String {
    let (mut raw, mut dialed) = (0, 0);
    while Instant::now() < until {
        for _ in 0..16 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(socket).await {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut s, b"\x13").await;
                raw += 1;
            }
        }
        let mut swarm = hostile();
        let dial = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
            .addresses(vec![address.clone()])
            .build();
        if swarm.dial(dial).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline.min(until) {
                match tokio::time::timeout(Duration::from_millis(500), swarm.select_next_some())
                    .await
                {
                    Ok(SwarmEvent::ConnectionEstablished { .. }) => {
                        dialed += 1;
                        break;
                    }
                    Ok(SwarmEvent::OutgoingConnectionError { .. }) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
    format!("{raw} raw TCP connections, {dialed} libp2p connections from new identities")
}

/// Random envelopes of every bucket size, 64 per identity.
async fn junk(address: &Multiaddr, peer: PeerId, until: Instant) -> String {
    let (mut sent, mut tally) = (0, Tally::default());
    let mut seed = 0x1234_5678_u64;
    while Instant::now() < until {
        let mut swarm = hostile();
        for i in 0..64 {
            let len = kolokol_protocol::envelope::BUCKETS[i % 4];
            let mut request = Vec::with_capacity(4 + len);
            request.extend_from_slice(&(len as u32).to_be_bytes());
            request.extend((0..len).map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            }));
            swarm.behaviour_mut().raw.send_request_with_addresses(
                &peer,
                request,
                vec![address.clone()],
            );
            sent += 1;
        }
        settle(&mut swarm, 64, until, &mut tally).await;
    }
    format!("{sent} junk envelopes: {tally}")
}

/// Frames whose length prefix is far over the limit, followed by bytes, on both protocols.
async fn oversize(address: &Multiaddr, peer: PeerId, until: Instant) -> String {
    let (mut sent, mut tally) = (0, Tally::default());
    while Instant::now() < until {
        let mut swarm = hostile();
        for len in [u32::MAX, 1 << 30, 65_536, 2_000_000] {
            let mut request = Vec::with_capacity(4 + 65_536);
            request.extend_from_slice(&len.to_be_bytes());
            request.resize(4 + 65_536, 0xee);
            swarm.behaviour_mut().raw.send_request_with_addresses(
                &peer,
                request,
                vec![address.clone()],
            );
            sent += 1;
        }
        settle(&mut swarm, 4, until, &mut tally).await;
    }
    format!("{sent} oversized frames: {tally}")
}

/// Mailbox deposits into a few mailboxes, 16 per identity.
async fn deposits(address: &Multiaddr, peer: PeerId, until: Instant) -> String {
    let (mut sent, mut stored, mut refused) = (0u64, 0u64, 0u64);
    let now = kolokol_node::clock::unix_secs();
    while Instant::now() < until {
        let mut swarm = hostile();
        for i in 0..16u64 {
            let mut item_id = [0u8; 16];
            item_id[..8].copy_from_slice(&sent.to_be_bytes());
            let request = Request::Deposit {
                mailbox_id: [(i % 4) as u8; 32],
                item_id,
                envelope: vec![0x5a; 1024],
                expires_at: now + 3600,
            };
            swarm.behaviour_mut().mailbox.send_request_with_addresses(
                &peer,
                request,
                vec![address.clone()],
            );
            sent += 1;
        }
        let mut left = 16;
        let deadline = Instant::now() + Duration::from_secs(5);
        while left > 0 && Instant::now() < deadline.min(until) {
            match tokio::time::timeout(Duration::from_secs(1), swarm.select_next_some()).await {
                Ok(SwarmEvent::Behaviour(HostileEvent::Mailbox(
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    },
                ))) => {
                    left -= 1;
                    if response == Response::Stored {
                        stored += 1;
                    } else {
                        refused += 1;
                    }
                }
                Ok(SwarmEvent::Behaviour(HostileEvent::Mailbox(
                    request_response::Event::OutboundFailure { .. },
                ))) => left -= 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    format!("{sent} deposits from new identities, {stored} stored, {refused} refused")
}

/// TCP connections that send one byte a second and never finish a handshake, 64 at a time.
async fn slow(socket: std::net::SocketAddr, until: Instant) -> String {
    let mut held = Vec::new();
    let mut opened = 0;
    while Instant::now() < until {
        while held.len() < 64 {
            match tokio::net::TcpStream::connect(socket).await {
                Ok(s) => {
                    held.push(s);
                    opened += 1;
                }
                Err(_) => break,
            }
        }
        let mut alive = Vec::new();
        for mut s in held.drain(..) {
            if tokio::io::AsyncWriteExt::write_all(&mut s, b"/").await.is_ok() {
                alive.push(s);
            }
        }
        held = alive;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    format!("{opened} slow connections opened, {} still open at the end", held.len())
}
