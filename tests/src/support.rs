//! The harness: spawns Kolokol relays, bridges and users, a plain libp2p relay that Kolokol did
//! not write, and a pausable TCP proxy that cuts a path to a node and restores it; and waits for
//! events with a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use kolokol_node::{Config, Multiaddr, Node, Role, RunningNode};
use kolokol_protocol::control::{Event, InboxMessage};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, kad, noise, relay, tcp, yamux};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};

/// How long any single expected event may take before a test fails. Generous, because CI
/// machines are slow and shared; tests never assert on timing.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A temporary directory for a test's nodes, removed at the end.
pub struct Net {
    dir: tempfile::TempDir,
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Net {
    /// A fresh temporary directory.
    pub fn new() -> Self {
        // A rare failure is diagnosed from the nodes' logs: `KOLOKOL_TEST_LOG=kolokol_node=debug`.
        if let Ok(filter) = std::env::var("KOLOKOL_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        Self { dir: tempfile::tempdir().expect("a temporary directory can be created") }
    }

    /// The data directory for the node called `name`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The configuration of the node called `name`, with mDNS off and the DHT diversity rule
    /// relaxed for loopback. Every node a test starts
    /// is built from this: mDNS would multicast on every non-loopback interface of the machine
    /// running the tests, and test traffic stays on 127.0.0.1 (docs/ARCHITECTURE.md, Testing).
    /// The one test of mDNS (`cli/tests/lab.rs`) runs its nodes in network namespaces of its
    /// own.
    ///
    /// Relays get no memory ceiling either: it measures the whole process, and here one process
    /// runs every node of every test at once (the 50-node test alone passes a relay's default).
    /// `relay_limits.rs` sets it on purpose.
    pub fn config(&self, name: &str, role: Role) -> Config {
        let mut config = Config::new(self.data_dir(name), role);
        config.mdns = false;
        config.max_memory = None;
        // Every test node is on 127.0.0.1, one address group: the routing table's diversity
        // rule would let only three of them in. Relaxed here, for loopback only, and logged.
        config.dht_diversity.exempt_loopback = true;
        config
    }

    /// Starts a Kolokol relay on 127.0.0.1 and returns it with its full address.
    pub async fn relay(&self, name: &str) -> (RunningNode, Multiaddr) {
        self.start_relay(self.config(name, Role::Relay)).await
    }

    /// Starts a bridge, an unlisted relay, on 127.0.0.1 and returns it with its full address.
    /// It is never a DHT server, so a node connected to it alone cannot reach the DHT.
    pub async fn bridge(&self, name: &str) -> (RunningNode, Multiaddr) {
        let mut config = self.config(name, Role::Relay);
        config.bridge = true;
        self.start_relay(config).await
    }

    /// Starts a relay with `config` listening on 127.0.0.1, and returns it with its full address
    /// once it confirms that address.
    async fn start_relay(&self, mut config: Config) -> (RunningNode, Multiaddr) {
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
        let relay = RunningNode::start(config).await.expect("the relay starts");
        let net = relay
            .node()
            .wait_for_net(TIMEOUT, |s| !s.external.is_empty())
            .await
            .expect("the relay confirms its listen address");
        let addr = format!("{}/p2p/{}", net.external[0], relay.node().peer_id())
            .parse()
            .expect("valid multiaddr");
        (relay, addr)
    }

    /// The setup most scenarios start from: a relay called "relay", and users "alice" and
    /// "bob" who hold reservations on it and are each other's contacts. Returns the relay, its
    /// address, Alice and Bob.
    pub async fn pair(&self) -> (RunningNode, Multiaddr, RunningNode, RunningNode) {
        let (relay, relay_addr) = self.relay("relay").await;
        let alice = self.user("alice", std::slice::from_ref(&relay_addr)).await;
        let bob = self.user("bob", std::slice::from_ref(&relay_addr)).await;
        introduce(&alice.node(), "alice", &bob.node(), "bob").await;
        (relay, relay_addr, alice, bob)
    }

    /// Starts a user node that bootstraps from `relays` and waits for a reservation.
    pub async fn user(&self, name: &str, relays: &[Multiaddr]) -> RunningNode {
        let user = self.start(name, Role::Node, relays).await;
        user.node()
            .wait_for_net(TIMEOUT, |s| !s.reservations.is_empty())
            .await
            .unwrap_or_else(|| panic!("{name} got no relay reservation"));
        user
    }

    /// Starts a node of `role` that bootstraps from `bootstrap`, without waiting for anything;
    /// a relay listens on 127.0.0.1.
    pub async fn start(&self, name: &str, role: Role, bootstrap: &[Multiaddr]) -> RunningNode {
        let mut config = self.config(name, role);
        config.bootstrap = bootstrap.to_vec();
        if role == Role::Relay {
            config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
        }
        RunningNode::start(config).await.expect("the node starts")
    }

    /// The identity of a node, read from its data directory as an attacker who stole the
    /// device would.
    pub fn identity(&self, name: &str) -> kolokol_protocol::identity::Identity {
        let bytes = std::fs::read(self.data_dir(name).join(kolokol_node::data_dir::IDENTITY_FILE))
            .expect("identity.key exists");
        kolokol_protocol::identity::Identity::from_file_bytes(&bytes).expect("a valid identity")
    }

    /// The database of a stopped node, opened as someone holding its disk would.
    pub fn database(&self, name: &str) -> rusqlite::Connection {
        let path = self.data_dir(name).join(kolokol_node::data_dir::DATABASE_FILE);
        rusqlite::Connection::open(path).expect("the database opens")
    }

    /// The mailbox key of a stopped node, read from its database as an attacker who stole the
    /// device would.
    pub fn mailbox_key(&self, name: &str) -> kolokol_protocol::mailbox_key::MailboxKey {
        let secret: Vec<u8> = self
            .database(name)
            .query_row("SELECT value FROM secrets WHERE name = 'mailbox'", [], |r| r.get(0))
            .expect("the mailbox key is stored");
        let secret: [u8; 32] = secret.try_into().expect("32 bytes");
        kolokol_protocol::mailbox_key::MailboxKey::from_secret(&secret)
    }
}

/// The mailbox address a running node gives its contacts, read from its invite.
pub async fn mailbox_address(node: &Node) -> [u8; 32] {
    let invite = node.invite().await.expect("invite").invite;
    let now = kolokol_node::clock::unix_secs();
    let (_, keys, _) = kolokol_protocol::invite::Invite::from_text_with_keys(&invite, now)
        .expect("a valid invite");
    keys.expect("a version 2 invite").mailbox
}

/// Has `node` fetch its mailboxes until `replica` holds no item of mailbox `id`. The node runs
/// fetch passes of its own too (on start, on reconnecting, every minute), so which pass takes
/// an item is not fixed, and a test must not count on its own call taking it.
pub async fn fetch_until_taken(node: &Node, replica: &Node, id: &[u8; 32]) {
    let mut changes = replica.mailbox_changes();
    tokio::time::timeout(TIMEOUT, async {
        node.fetch_mailboxes().await;
        while replica.mailbox_items_held(id).expect("count") > 0 {
            changes.changed().await.expect("the replica runs");
        }
    })
    .await
    .unwrap_or_else(|_| {
        let held = replica.mailbox_items_held(id).expect("count");
        panic!("the replica still holds {held} items of the mailbox")
    });
}

/// Makes `a` and `b` contacts of each other under the given names, through invites.
pub async fn introduce(a: &Node, a_name: &str, b: &Node, b_name: &str) {
    let a_invite = a.invite().await.expect("invite").invite;
    let b_invite = b.invite().await.expect("invite").invite;
    b.add_contact(a_name, &a_invite).await.expect("add contact");
    a.add_contact(b_name, &b_invite).await.expect("add contact");
}

/// Waits for an event that `pick` accepts.
pub async fn wait_event<T>(
    events: &mut broadcast::Receiver<Event>,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(v) = pick(&e) {
                        return v;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("the node stopped"),
            }
        }
    })
    .await
    .expect("the expected event arrived in time")
}

/// Checks the history of a message `sender` sent while its recipient was away: it was stored,
/// then delivered, and may have been sent directly in between (a retry can reach the recipient
/// before its mailbox does); either way its states only moved forward.
pub fn assert_stored_then_delivered(sender: &Node, id: &str) {
    let id = kolokol_protocol::message::parse_id(id).expect("id");
    let states: Vec<&str> =
        sender.history(&id).expect("history").into_iter().map(|h| h.0.as_str()).collect();
    assert!(
        states == ["queued", "stored", "delivered"]
            || states == ["queued", "stored", "sent", "delivered"],
        "{states:?}"
    );
}

/// Waits for the message with this id to arrive.
pub async fn wait_message(events: &mut broadcast::Receiver<Event>, id: &str) -> InboxMessage {
    wait_event(events, |e| match e {
        Event::Message(m) if m.id == id => Some(m.clone()),
        _ => None,
    })
    .await
}

/// Waits for the message with this id to reach `state`.
pub async fn wait_state(events: &mut broadcast::Receiver<Event>, id: &str, state: &str) {
    wait_event(events, |e| match e {
        Event::State(s) if s.id == id && s.state == state => Some(()),
        _ => None,
    })
    .await
}

/// Waits for the message with this id at `node`, which may have arrived before `events` was
/// subscribed (a node fetches its mailbox as soon as it is up): subscribe first, then call this,
/// and nothing falls between the look at the inbox and the wait.
pub async fn wait_message_at(
    node: &Node,
    events: &mut broadcast::Receiver<Event>,
    id: &str,
) -> InboxMessage {
    if let Some(m) = node.inbox(10_000).expect("inbox").into_iter().find(|m| m.id == id) {
        return m;
    }
    wait_message(events, id).await
}

/// Waits for `node`'s message with this id to reach `state`, which it may have reached before
/// `events` was subscribed; subscribe first, then call this.
pub async fn wait_state_at(
    node: &Node,
    events: &mut broadcast::Receiver<Event>,
    id: &str,
    state: &str,
) {
    if node.message(id).is_ok_and(|m| m.message.state == state) {
        return;
    }
    wait_state(events, id, state).await
}

/// A relay built from libp2p alone: circuit relay v2, identify, and Kademlia under Kolokol's
/// protocol name. Nothing of Kolokol's code is in it, so a test through it shows that live
/// delivery needs nothing Kolokol-specific from the relay.
#[derive(NetworkBehaviour)]
struct PlainRelay {
    relay: relay::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// Spawns a [`PlainRelay`] on 127.0.0.1 and returns its full address and the task running it.
pub async fn spawn_plain_relay() -> (Multiaddr, tokio::task::JoinHandle<()>) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                peer,
                kad::store::MemoryStore::new(peer),
                kad::Config::new(libp2p::StreamProtocol::new("/kolokol/kad/1.0.0")),
            );
            kad.set_mode(Some(kad::Mode::Server));
            PlainRelay {
                relay: relay::Behaviour::new(peer, relay::Config::default()),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/ipfs/id/1.0.0".into(),
                    key.public(),
                )),
                kad,
            }
        })
        .expect("behaviour")
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("valid")).expect("listen");
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } =
            tokio::time::timeout(TIMEOUT, swarm.select_next_some()).await.expect("listening")
        {
            break address;
        }
    };
    swarm.add_external_address(addr.clone());
    let full = format!("{addr}/p2p/{}", swarm.local_peer_id()).parse().expect("valid");
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (full, task)
}

/// A bare Kademlia client that Kolokol did not write, used to push records into the DHT the
/// way a hostile peer would.
#[derive(NetworkBehaviour)]
struct RawKad {
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// Connects a bare Kademlia client to `server` and stores `records` (key, value) on it
/// directly, bypassing every check a Kolokol node makes before publishing. Returns once each
/// store request has been answered (whether the server kept the record or not).
pub async fn push_raw_records(server: &Multiaddr, records: Vec<(Vec<u8>, Vec<u8>)>) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                peer,
                kad::store::MemoryStore::new(peer),
                kad::Config::new(libp2p::StreamProtocol::new("/kolokol/kad/1.0.0")),
            );
            kad.set_mode(Some(kad::Mode::Client));
            RawKad { kad }
        })
        .expect("behaviour")
        .build();
    let server_peer = match server.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("server address has no peer id"),
    };
    let base: Multiaddr =
        server.iter().filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_))).collect();
    swarm.behaviour_mut().kad.add_address(&server_peer, base);
    let mut pending = std::collections::HashSet::new();
    for (key, value) in records {
        let record = kad::Record::new(kad::RecordKey::new(&key), value);
        let id = swarm.behaviour_mut().kad.put_record_to(
            record,
            std::iter::once(server_peer),
            kad::Quorum::One,
        );
        pending.insert(id);
    }
    tokio::time::timeout(TIMEOUT, async {
        while !pending.is_empty() {
            if let SwarmEvent::Behaviour(RawKadEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::PutRecord(_),
                ..
            })) = swarm.select_next_some().await
            {
                pending.remove(&id);
            }
        }
    })
    .await
    .expect("the server answered every store request");
}

/// Sends `requests` over `/kolokol/mailbox/1` to the mailbox replica at `server` from one new
/// identity, a window of them at a time, and returns the answers in the same order: a depositor
/// or an attacker that Kolokol's own node code does not police.
pub async fn raw_mailbox_requests(
    server: &Multiaddr,
    requests: Vec<kolokol_protocol::mailbox::Request>,
) -> Vec<kolokol_protocol::mailbox::Response> {
    raw_requests(server, kolokol_node::wire::mailbox::PROTOCOL_NAME, requests).await
}

/// As [`raw_mailbox_requests`], over `/kolokol/mailbox/2`.
pub async fn raw_mailbox_requests_v2(
    server: &Multiaddr,
    requests: Vec<kolokol_protocol::mailbox::RequestV2>,
) -> Vec<kolokol_protocol::mailbox::Response> {
    raw_requests(server, kolokol_node::wire::mailbox::PROTOCOL_NAME_V2, requests).await
}

/// A bare request-response client of one mailbox protocol version, with a fresh identity.
async fn raw_requests<R: kolokol_node::wire::mailbox::Frame>(
    server: &Multiaddr,
    protocol: libp2p::StreamProtocol,
    requests: Vec<R>,
) -> Vec<kolokol_protocol::mailbox::Response> {
    use libp2p::request_response;
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|_| {
            request_response::Behaviour::<kolokol_node::wire::mailbox::Codec<R>>::new(
                [(protocol, request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(TIMEOUT),
            )
        })
        .expect("behaviour")
        .build();
    let server_peer = match server.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(p)) => p,
        _ => panic!("server address has no peer id"),
    };
    // A few requests at a time, within the stream limit of one connection.
    const IN_FLIGHT: usize = 64;
    let total = requests.len();
    let mut queue = requests.into_iter();
    let mut ids = Vec::with_capacity(total);
    let mut answers = std::collections::HashMap::new();
    tokio::time::timeout(TIMEOUT, async {
        while answers.len() < total {
            while ids.len() < total && ids.len() - answers.len() < IN_FLIGHT {
                let r = queue.next().expect("a request is left");
                ids.push(swarm.behaviour_mut().send_request_with_addresses(
                    &server_peer,
                    r,
                    vec![server.clone()],
                ));
            }
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                }) => {
                    answers.insert(request_id, response);
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => panic!("a mailbox request failed: {error}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the replica answered every request");
    ids.iter().map(|id| answers.remove(id).expect("answered")).collect()
}

/// The control socket of a data directory.
pub fn control_socket(data_dir: &Path) -> PathBuf {
    data_dir.join(kolokol_node::data_dir::CONTROL_SOCKET)
}

/// What pausing a [`Proxy`] does to the traffic it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// What the target sends through the first connection the proxy forwards waits while the
    /// proxy is paused; the other direction and every later connection go on. A relay then
    /// cannot reach a user over the connection the user's reservation is on.
    FirstConnection,
    /// A connection the proxy accepts while paused is closed at once, as a closed port refuses a
    /// dial: a dial through it fails fast (and leaves no cool-down, which only a dial that went
    /// unanswered does), so the target is out of reach, and in reach again as soon as the proxy
    /// resumes. Connections already open go on.
    NewConnections,
}

/// A TCP proxy on 127.0.0.1 in front of a node, through which a test cuts the path to that node
/// and restores it while both ends run ([`Pause`] says how).
pub struct Proxy {
    /// The target's full address through the proxy: the proxy's port, the target's peer id.
    pub address: Multiaddr,
    paused: watch::Sender<bool>,
}

impl Proxy {
    /// Starts a proxy, not paused, in front of the node at `target` (a full
    /// `/ip4/…/tcp/…/p2p/…` address); it runs as long as the test's runtime.
    pub async fn to(target: &Multiaddr, pause: Pause) -> Self {
        let socket = socket_of(target);
        let peer = kolokol_node::config::peer_id_of(target).expect("a target peer id");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the proxy binds");
        let port = listener.local_addr().expect("bound").port();
        let paused = watch::channel(false).0;
        let watched = paused.clone();
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((inbound, _)) = listener.accept().await {
                if pause == Pause::NewConnections && *watched.borrow() {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(socket).await else { continue };
                let (from_client, to_client) = inbound.into_split();
                let (from_target, to_target) = outbound.into_split();
                let held = (pause == Pause::FirstConnection && first).then(|| watched.subscribe());
                first = false;
                tokio::spawn(pump(from_client, to_target, None));
                tokio::spawn(pump(from_target, to_client, held));
            }
        });
        let address = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}").parse().expect("valid");
        Self { address, paused }
    }

    /// Pauses the proxy.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Lets everything through again, what waited included.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

/// Copies `from` to `to`, each read waiting while `paused` says so.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut paused: Option<watch::Receiver<bool>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(p) = paused.as_mut()
            && p.wait_for(|p| !*p).await.is_err()
        {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The TCP socket address of an `/ip4/…/tcp/…` address.
pub fn socket_of(address: &Multiaddr) -> std::net::SocketAddr {
    let mut ip = None;
    let mut port = None;
    for p in address.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(a),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    (ip.expect("an IPv4 address"), port.expect("a TCP port")).into()
}
