//! The one task that owns the libp2p `Swarm`, and the behaviours it is built from.
//!
//! Everything else talks to it through [`Command`]s on a bounded channel and hears from it
//! through the bounded [`Inbound`] and [`NetEvent`] channels; nothing else ever touches the
//! swarm. Heavy work never runs here: envelopes arriving over `/kolokol/msg/1` are handed, with
//! their response channel, to opener workers, whose answer comes back as [`Command::Respond`].
//!
//! This task is also the auto-relay that libp2p lacks: a user node holds reservations on up to
//! [`TARGET_RESERVATIONS`] relays, discovered from identify (any peer that speaks the circuit
//! relay v2 hop protocol), and re-listens with backoff whenever a reservation is lost.
//!
//! With mDNS on, it also finds Kolokol nodes on the local network: their addresses go to the
//! swarm (so a delivery to their peer id can dial them) and, for DHT servers, to Kademlia, and
//! the peers found are remembered in memory for `kolokol peers` until mDNS says they expired.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use kolokol_protocol::presence::PresenceRecord;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::ConnectionId;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, autonat, connection_limits, dcutr,
    identify, kad, mdns, memory_connection_limits, noise, ping, relay, yamux,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::config::{Config, Role, peer_id_of};
use crate::delivery::{self, Ack};
use crate::error::{Error, Result};
use crate::mailbox;

/// The Kademlia protocol id: Kolokol's own DHT, never the IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/kolokol/kad/1.0.0");

/// The identify protocol version string; also all that peers learn of our software.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/kolokol/1";

/// Commands waiting for the swarm task. Callers wait when it is full, which slows senders down
/// instead of growing memory.
pub const COMMAND_QUEUE_LEN: usize = 1024;

/// Envelopes received and waiting for an opener worker. When full, new envelopes are answered
/// [`Ack::Busy`] at once and the sender retries later.
pub const INBOUND_QUEUE_LEN: usize = 512;

/// Network events (peer connected, addresses changed) waiting for the daemon. They are hints:
/// when the queue is full the newest is dropped, and the outbox's timer covers for it.
pub const NET_EVENT_QUEUE_LEN: usize = 256;

/// Outbound deliveries awaiting their ack. Past this, new deliveries fail at once as busy.
pub const MAX_PENDING_DELIVERIES: usize = 4096;

/// How many relay reservations a user node tries to hold.
pub const TARGET_RESERVATIONS: usize = 2;

/// Bootstrap peers the swarm task redials at most; an imported bundle beyond this only feeds
/// the peer cache, so importing bundle after bundle cannot grow the redial list without bound.
pub const MAX_BOOTSTRAP_PEERS: usize = 64;

/// How many relays a node remembers as candidates for reservations.
pub const MAX_KNOWN_RELAYS: usize = 32;

/// Established connections the node accepts in total; relays carry many users.
pub const MAX_CONNECTIONS: u32 = 1024;

/// Established connections to one peer; more than a few means a misbehaving peer.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 8;

/// Concurrent `/kolokol/msg/1` streams per connection, each holding at most one envelope.
pub const MAX_DELIVERY_STREAMS: usize = 256;

/// Peers found on the local network by mDNS that the node remembers at once. libp2p's own list
/// has no bound, and anyone on the LAN can announce as many peer ids as they like; past this,
/// a newly announced peer is neither remembered nor dialed.
pub const MAX_LAN_PEERS: usize = 64;

/// Addresses remembered per peer found on the local network; a host has few interfaces.
pub const MAX_LAN_ADDRESSES: usize = 8;

/// How long a Kademlia query may run.
pub const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections being negotiated at once, inbound.
pub const MAX_PENDING_INCOMING: u32 = 128;

/// A connection with no streams is closed after this long. Longer than libp2p's 10 s so a
/// conversation does not re-dial (and re-punch) between every pair of messages.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one delivery (stream open, envelope out, ack in) may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The DHT key relays announce themselves under (as providers), so users can find more relays
/// than the ones they were given.
pub const RELAYS_KEY: &str = "/kolokol/relays/1";

/// Presence lookups in flight at once; more wait for an answer of "not found".
pub const MAX_PENDING_LOOKUPS: usize = 256;

/// Records a DHT server stores for others. Only presence records are accepted, each verified.
pub const MAX_DHT_RECORDS: usize = 8192;

/// Largest DHT record value accepted, in bytes (a presence record with every address at its
/// longest is under 4.5 KiB).
pub const MAX_DHT_RECORD_BYTES: usize = 8192;

/// How often a user node looks for more relays in the DHT while it has fewer reservations
/// than it wants. The wait doubles after each look, up to [`RELAY_DISCOVERY_MAX_INTERVAL`],
/// and goes back to this when a look finds a relay the node did not know, since where one new
/// relay appeared others may follow.
const RELAY_DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

/// Longest wait between two looks for relays.
const RELAY_DISCOVERY_MAX_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// How soon a presence publication that no DHT server accepted is tried again.
const PRESENCE_RETRY: Duration = Duration::from_secs(5);

/// How often the swarm task checks relays and bootstrap peers.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait between two attempts to reach a relay or a bootstrap peer.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Relay server limits, raised from libp2p's defaults (2 minutes and 128 KiB per circuit),
/// which would cut a conversation off after about a hundred messages.
pub mod relay_limits {
    use std::time::Duration;

    /// Reservations held at once.
    pub const MAX_RESERVATIONS: usize = 1024;
    /// Circuits relayed at once.
    pub const MAX_CIRCUITS: usize = 512;
    /// Circuits at once per peer.
    pub const MAX_CIRCUITS_PER_PEER: usize = 16;
    /// Longest life of one circuit; the client re-opens one after.
    pub const MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(60 * 60);
    /// Most bytes relayed by one circuit, both directions (64 MiB, about 16 000 small messages).
    pub const MAX_CIRCUIT_BYTES: u64 = 64 * 1024 * 1024;
    /// How long a reservation lasts before the client must renew it (it renews on its own).
    pub const RESERVATION_DURATION: Duration = Duration::from_secs(60 * 60);
}

/// The composed behaviour.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    relay_client: relay::client::Behaviour,
    relay_server: Toggle<relay::Behaviour>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    dcutr: dcutr::Behaviour,
    autonat_client: Toggle<autonat::v2::client::Behaviour>,
    autonat_server: Toggle<autonat::v2::server::Behaviour>,
    delivery: request_response::Behaviour<delivery::codec::Codec>,
    mailbox: request_response::Behaviour<mailbox::codec::Codec>,
    /// Off unless the config asks for it: multicast on the LAN tells everyone there that this
    /// machine runs a libp2p node.
    mdns: Toggle<mdns::tokio::Behaviour>,
    limits: connection_limits::Behaviour,
    /// Refuses new connections while the process uses more memory than the config allows
    /// (relays, by default), so a flood of peers cannot push a small server into swapping or
    /// the OOM killer; connections already made go on.
    memory: Toggle<memory_connection_limits::Behaviour>,
}

/// What other tasks ask of the swarm task.
pub(crate) enum Command {
    /// Send one envelope to `peer`, dialing `addresses` if not connected; the reply says whether
    /// the peer accepted it.
    Deliver {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        envelope: Vec<u8>,
        reply: oneshot::Sender<std::result::Result<(), DeliveryFailure>>,
    },
    /// Answer an inbound envelope.
    Respond { channel: ResponseChannel<Ack>, ack: Ack },
    /// Report the network state.
    Status { reply: oneshot::Sender<NetStatus> },
    /// Store our presence record locally and on the DHT servers closest to its key.
    PublishPresence { record: Vec<u8>, ttl: Duration },
    /// Look up a peer's presence record; the reply is the newest valid one found. With
    /// `remote_only`, a copy in our own store does not count (doctor asks whether others can
    /// find us).
    Resolve { peer: PeerId, remote_only: bool, reply: oneshot::Sender<Option<PresenceRecord>> },
    /// List connected peers and how each is reached.
    Peers { reply: oneshot::Sender<Vec<ConnectedPeer>> },
    /// Dial a peer (from an imported bundle) as a bootstrap hint.
    AddBootstrap { address: Multiaddr },
    /// Send one mailbox request (deposit, fetch or delete) to a replica, dialing `addresses` if
    /// not connected; the reply is the replica's answer or why there is none.
    Mailbox {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: kolokol_protocol::mailbox::Request,
        reply: oneshot::Sender<std::result::Result<kolokol_protocol::mailbox::Response, String>>,
    },
    /// Answer an inbound mailbox request.
    MailboxRespond {
        channel: ResponseChannel<kolokol_protocol::mailbox::Response>,
        response: kolokol_protocol::mailbox::Response,
    },
    /// Find the DHT servers closest to `key`, nearest first, with their addresses.
    ClosestPeers { key: Vec<u8>, reply: ClosestReply },
}

/// A mailbox request a peer sent us as a replica, waiting for the daemon's store.
pub(crate) struct MailboxInbound {
    /// The requesting peer, authenticated by the connection.
    pub peer: PeerId,
    pub request: kolokol_protocol::mailbox::Request,
    pub channel: ResponseChannel<kolokol_protocol::mailbox::Response>,
}

/// A connected peer and how it is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectedPeer {
    /// The peer.
    pub peer: PeerId,
    /// `direct`, `relayed` or `hole-punched` (direct, upgraded from a relayed connection).
    pub via: &'static str,
    /// The remote address of that connection.
    pub address: Multiaddr,
}

/// Why a delivery did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeliveryFailure {
    /// One line for the user.
    pub reason: String,
    /// True when retrying cannot help: the recipient's node opened the stream and refused the
    /// envelope, so it is not for that node's current key.
    pub permanent: bool,
}

impl DeliveryFailure {
    fn temporary(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), permanent: false }
    }
}

/// An envelope a peer sent, waiting for an opener.
pub(crate) struct Inbound {
    pub envelope: Vec<u8>,
    pub channel: ResponseChannel<Ack>,
}

/// Things the daemon wants to hear about.
#[derive(Debug)]
pub(crate) enum NetEvent {
    /// A connection to this peer was established: retry what waits for it.
    PeerConnected(PeerId),
    /// We dialed this peer at this address and it identified itself: remember it.
    PeerSeen { peer: PeerId, address: Multiaddr, relay: bool },
    /// Our reservations or external addresses changed: publish a new presence record.
    AddressesChanged,
}

/// A snapshot of the network state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetStatus {
    /// Listen addresses, relay circuits included.
    pub listen: Vec<Multiaddr>,
    /// Confirmed external addresses.
    pub external: Vec<Multiaddr>,
    /// Relays holding a reservation for us, with the circuit address through each.
    pub reservations: Vec<(PeerId, Multiaddr)>,
    /// Peers connected now.
    pub connected: usize,
    /// Peers in the routing table.
    pub routing_table: usize,
    /// Relays known as candidates for reservations.
    pub known_relays: usize,
    /// Bootstrap peers configured or found, and how many of them are connected.
    pub bootstrap_peers: usize,
    /// Bootstrap peers connected now.
    pub bootstrap_connected: usize,
    /// Whether a direct (non-relayed) external address is confirmed: reachable without relays.
    pub public: bool,
    /// Outcome of the last presence publication: `None` before the first.
    pub presence: Option<Result<(), String>>,
    /// Peers reached over a connection that DCUtR upgraded from relayed to direct.
    pub hole_punched: Vec<PeerId>,
    /// Routing-table size when the last presence publication succeeded: a record placed while
    /// the node knew few peers may sit far from where lookups will search.
    pub presence_routing_table: usize,
    /// Whether mDNS runs: the node looks for peers on the local network and announces itself.
    pub mdns: bool,
    /// Peers found on the local network by mDNS and not expired, with the addresses they
    /// announced there (without `/p2p/`), sorted by peer id.
    pub lan: Vec<(PeerId, Vec<Multiaddr>)>,
}

/// A relay we may hold a reservation on.
struct RelaySlot {
    /// The relay's own address, ending in `/p2p/<relay>`.
    address: Multiaddr,
    /// The circuit listener while a reservation is wanted or held.
    listener: Option<libp2p::core::transport::ListenerId>,
    /// The circuit address once the reservation is granted.
    circuit: Option<Multiaddr>,
    failures: u32,
    next_attempt: Instant,
}

/// A configured bootstrap peer, redialled with backoff while not connected.
struct BootstrapPeer {
    peer: PeerId,
    address: Multiaddr,
    failures: u32,
    next_attempt: Instant,
}

/// Builds the swarm for `config`, listening on its addresses.
pub(crate) fn build(
    keypair: &libp2p::identity::Keypair,
    config: &Config,
) -> Result<Swarm<Behaviour>> {
    let net = |e: &dyn std::fmt::Display| Error::Network(e.to_string());
    let role = config.role;
    let listening = !config.listen.is_empty();
    // A machine without multicast (or a sandbox without netlink) still runs a useful node, so
    // mDNS failing to start is a warning, not a failed start; `status` then shows it off.
    let mdns = if config.mdns {
        match mdns::tokio::Behaviour::new(mdns::Config::default(), keypair.public().to_peer_id()) {
            Ok(behaviour) => Some(behaviour),
            Err(e) => {
                tracing::warn!(error = %one_line(&e), "cannot start mDNS; peers on the local network will not be found");
                None
            }
        }
    } else {
        None
    };
    // The stealth listener's secrets and certificate are loaded before anything else starts,
    // so that a mistake in them is one error line (transport.rs).
    let stealth = crate::transport::prepare(config, crate::daemon::unix_secs())?;
    let mut swarm = SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_other_transport(|key| crate::transport::build(key, config.transport, stealth.clone()))
        .map_err(|e| net(&e))?
        .with_dns()
        .map_err(|e| net(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| net(&e))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            let relay_server = (role == Role::Relay).then(|| {
                let cfg = relay::Config {
                    max_reservations: relay_limits::MAX_RESERVATIONS,
                    reservation_duration: relay_limits::RESERVATION_DURATION,
                    max_circuits: relay_limits::MAX_CIRCUITS,
                    max_circuits_per_peer: relay_limits::MAX_CIRCUITS_PER_PEER,
                    max_circuit_duration: relay_limits::MAX_CIRCUIT_DURATION,
                    max_circuit_bytes: relay_limits::MAX_CIRCUIT_BYTES,
                    ..Default::default()
                };
                relay::Behaviour::new(peer_id, cfg)
            });
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config
                .set_query_timeout(KAD_QUERY_TIMEOUT)
                .disjoint_query_paths(true)
                // Every record and provider a peer sends is handed to us to check before it is
                // stored: the DHT holds only presence records whose signatures verify.
                .set_record_filtering(kad::StoreInserts::FilterBoth);
            let kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::with_config(
                    peer_id,
                    kad::store::MemoryStoreConfig {
                        max_records: MAX_DHT_RECORDS,
                        max_value_bytes: MAX_DHT_RECORD_BYTES,
                        ..Default::default()
                    },
                ),
                kad_config,
            );
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), key.public())
                    .with_agent_version(IDENTIFY_PROTOCOL_VERSION.to_owned())
                    .with_push_listen_addr_updates(true),
            );
            let delivery = request_response::Behaviour::new(
                [(delivery::PROTOCOL_NAME, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(DELIVERY_TIMEOUT)
                    .with_max_concurrent_streams(MAX_DELIVERY_STREAMS),
            );
            // Every node speaks the protocol both ways; whether it serves as a replica is
            // decided per request, by its DHT mode at that moment.
            let mailbox = request_response::Behaviour::new(
                [(mailbox::PROTOCOL_NAME, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(mailbox::REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(mailbox::MAX_STREAMS),
            );
            let limits = connection_limits::Behaviour::new(
                connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(MAX_CONNECTIONS))
                    .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER)),
            );
            Behaviour {
                relay_client,
                relay_server: relay_server.into(),
                identify,
                ping: ping::Behaviour::default(),
                kad,
                dcutr: dcutr::Behaviour::new(peer_id),
                // AutoNAT v2 needs something to test: a node with no listen address has no
                // address anyone could dial back, so only listening nodes run the client.
                autonat_client: (role == Role::Node && listening)
                    .then(autonat::v2::client::Behaviour::default)
                    .into(),
                autonat_server: (role == Role::Relay)
                    .then(autonat::v2::server::Behaviour::default)
                    .into(),
                delivery,
                mailbox,
                mdns: mdns.into(),
                limits,
                memory: config
                    .max_memory
                    .map(|bytes| {
                        memory_connection_limits::Behaviour::with_max_bytes(bytes as usize)
                    })
                    .into(),
            }
        })
        .map_err(|e| net(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
        .build();

    // A relay must serve the DHT and be reachable; a user node with a configured external
    // address can serve too. Everyone else stays a DHT client: a node reachable only through
    // relay circuits would make a poor DHT server (see notes/libp2p-0.57.md §2.3).
    let server = role == Role::Relay || !config.external_addresses.is_empty();
    swarm.behaviour_mut().kad.set_mode(Some(if server {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    }));
    if let Some(relay) = swarm.behaviour_mut().relay_server.as_mut() {
        relay.set_status(Some(relay::Status::Enable));
    }
    for addr in &config.listen {
        probe_port(addr)?;
        swarm
            .listen_on(addr.clone())
            .map_err(|e| Error::Network(format!("cannot listen on {addr}: {}", one_line(&e))))?;
    }
    for addr in
        config.external_addresses.iter().filter(|a| crate::transport::is_dialable_listen_address(a))
    {
        swarm.add_external_address(addr.clone());
    }
    if let Some(stealth) = &stealth {
        for addr in crate::transport::stealth_external_addresses(
            &config.external_addresses,
            &config.listen,
            stealth,
        ) {
            swarm.add_external_address(addr);
        }
    }
    Ok(swarm)
}

/// Fails if the TCP port of a listen address is already taken.
///
/// libp2p-tcp binds with `SO_REUSEPORT`, so a second kolokol (or anything else that sets it)
/// could share the port and the kernel would split incoming connections between the two. A
/// plain bind, without that option, fails on a port in use; the probe is closed again before
/// libp2p binds. Port 0 (any free port) and non-TCP addresses need no probe.
fn probe_port(addr: &Multiaddr) -> Result<()> {
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let Some(Protocol::Tcp(port)) = parts.next() else { return Ok(()) };
    if port == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind((ip, port)) {
        Ok(probe) => {
            drop(probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::Network(format!(
            "cannot listen on {addr}: address already in use (is another kolokol running?)"
        ))),
        // Anything else (an address this host does not have, a privileged port) is for
        // libp2p's own bind to report.
        Err(_) => Ok(()),
    }
}

/// The swarm task.
pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    role: Role,
    /// Whether external addresses were configured; if not, a relay confirms its concrete
    /// listen addresses as external.
    external_configured: bool,
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Sender<Inbound>,
    events: mpsc::Sender<NetEvent>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<std::result::Result<(), DeliveryFailure>>>,
    relays: HashMap<PeerId, RelaySlot>,
    bootstrap: Vec<BootstrapPeer>,
    /// The address we dialed for each connected peer, so a relay found by identify can be
    /// reserved on at the address that worked. Entries leave when the last connection closes,
    /// so connection limits bound it.
    dialed: HashMap<PeerId, Multiaddr>,
    /// The latest network state, republished when addresses, reservations or connections
    /// change, so callers can wait for a state instead of polling for it.
    status: watch::Sender<NetStatus>,
    /// Open connections and how each reaches its peer; bounded by the connection limits.
    connections: HashMap<ConnectionId, (PeerId, &'static str, Multiaddr)>,
    /// Presence lookups in flight, with the best record found so far and who waits for it.
    lookups: HashMap<kad::QueryId, Lookup>,
    /// Outcome of the last presence publication.
    presence: Option<Result<(), String>>,
    /// The query id of the last presence publication, to match its outcome, and the routing
    /// table size when it started.
    presence_query: Option<(kad::QueryId, usize)>,
    /// Routing-table size at the last successful presence publication.
    presence_routing_table: usize,
    /// Whether this relay has announced itself under [`RELAYS_KEY`].
    providing: bool,
    /// Routing-table size at the last announcement. A relay that started alone announced to
    /// nobody (or to few); it announces again each time its table doubles, so relays that
    /// join later come to hold the announcement and users find it.
    providing_routing_table: usize,
    /// When a user node next looks for relays in the DHT, and the wait after that.
    next_relay_discovery: Instant,
    relay_discovery_wait: Duration,
    /// When to publish the presence record again after a failed publication.
    presence_retry_at: Option<Instant>,
    /// Whether "no bootstrap peer is reachable" has been said since the last success.
    warned_unreachable: bool,
    /// libp2p's own metrics, recorded when `--metrics` is on.
    pub(crate) metrics: Option<libp2p::metrics::Metrics>,
    /// Where inbound mailbox requests go when this node is a replica.
    mailbox_inbound: mpsc::Sender<MailboxInbound>,
    /// Our mailbox requests awaiting an answer; at most [`mailbox::MAX_PENDING_REQUESTS`].
    mailbox_pending: HashMap<OutboundRequestId, MailboxReply>,
    /// Closest-peer queries in flight and who waits for each; at most [`MAX_PENDING_LOOKUPS`].
    closest: HashMap<kad::QueryId, (Vec<u8>, ClosestReply)>,
    /// Peers mDNS found on the local network, with their addresses there (without `/p2p/`),
    /// until mDNS reports them expired; at most [`MAX_LAN_PEERS`] of [`MAX_LAN_ADDRESSES`].
    lan: HashMap<PeerId, Vec<Multiaddr>>,
}

type ClosestReply = oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>;

type MailboxReply =
    oneshot::Sender<std::result::Result<kolokol_protocol::mailbox::Response, String>>;

/// A presence lookup in flight.
struct Lookup {
    peer: PeerId,
    remote_only: bool,
    best: Option<PresenceRecord>,
    reply: oneshot::Sender<Option<PresenceRecord>>,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: &Config,
        commands: mpsc::Receiver<Command>,
        inbound: mpsc::Sender<Inbound>,
        events: mpsc::Sender<NetEvent>,
        status: watch::Sender<NetStatus>,
        mailbox_inbound: mpsc::Sender<MailboxInbound>,
    ) -> Result<Self> {
        let now = Instant::now();
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|a| {
                Ok(BootstrapPeer {
                    peer: peer_id_of(a)?,
                    address: a.clone(),
                    failures: 0,
                    next_attempt: now,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut this = Self {
            swarm,
            role: config.role,
            external_configured: !config.external_addresses.is_empty(),
            commands,
            inbound,
            events,
            pending: HashMap::new(),
            relays: HashMap::new(),
            bootstrap,
            dialed: HashMap::new(),
            status,
            connections: HashMap::new(),
            lookups: HashMap::new(),
            presence: None,
            presence_query: None,
            presence_routing_table: 0,
            providing: false,
            providing_routing_table: 0,
            next_relay_discovery: now + RELAY_DISCOVERY_INTERVAL,
            relay_discovery_wait: RELAY_DISCOVERY_INTERVAL,
            presence_retry_at: None,
            warned_unreachable: false,
            metrics: None,
            mailbox_inbound,
            mailbox_pending: HashMap::new(),
            closest: HashMap::new(),
            lan: HashMap::new(),
        };
        for b in &this.bootstrap {
            let base = without_peer(&b.address);
            this.swarm.behaviour_mut().kad.add_address(&b.peer, base);
        }
        Ok(this)
    }

    /// Runs until `shutdown` flips to true or every command sender is gone.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tick.tick() => self.maintain(),
                _ = shutdown.changed() => break,
            }
        }
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(DeliveryFailure::temporary("the node is shutting down")));
        }
        for (_, reply) in self.mailbox_pending.drain() {
            let _ = reply.send(Err("the node is shutting down".into()));
        }
        tracing::debug!("swarm task stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Deliver { peer, addresses, envelope, reply } => {
                if self.pending.len() >= MAX_PENDING_DELIVERIES {
                    let _ = reply
                        .send(Err(DeliveryFailure::temporary("too many deliveries in flight")));
                    return;
                }
                let addresses = self.with_lan_addresses(&peer, addresses);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .delivery
                    .send_request_with_addresses(&peer, envelope, addresses);
                self.pending.insert(id, reply);
            }
            Command::Respond { channel, ack } => {
                // The peer may have gone meanwhile; then there is nobody to answer.
                let _ = self.swarm.behaviour_mut().delivery.send_response(channel, ack);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::PublishPresence { record, ttl } => {
                let key = kad::RecordKey::new(&kolokol_protocol::presence::record_key(
                    self.swarm.local_peer_id(),
                ));
                let mut record = kad::Record::new(key, record);
                record.expires = Some(std::time::Instant::now() + ttl);
                let table = self.routing_table_size();
                match self.swarm.behaviour_mut().kad.put_record(record, kad::Quorum::One) {
                    Ok(id) => self.presence_query = Some((id, table)),
                    Err(e) => self.presence = Some(Err(format!("cannot store it locally: {e}"))),
                }
            }
            Command::Resolve { peer, remote_only, reply } => {
                if self.lookups.len() >= MAX_PENDING_LOOKUPS {
                    let _ = reply.send(None);
                    return;
                }
                let key = kad::RecordKey::new(&kolokol_protocol::presence::record_key(&peer));
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.lookups.insert(id, Lookup { peer, remote_only, best: None, reply });
            }
            Command::Peers { reply } => {
                let mut peers: Vec<ConnectedPeer> = self
                    .connections
                    .values()
                    .map(|(peer, via, address)| ConnectedPeer {
                        peer: *peer,
                        via,
                        address: address.clone(),
                    })
                    .collect();
                peers.sort_by_key(|p| (p.peer, p.via));
                let _ = reply.send(peers);
            }
            Command::AddBootstrap { address } => match peer_id_of(&address) {
                Ok(peer)
                    if self.bootstrap.len() < MAX_BOOTSTRAP_PEERS
                        && !self.bootstrap.iter().any(|b| b.peer == peer) =>
                {
                    self.swarm.behaviour_mut().kad.add_address(&peer, without_peer(&address));
                    self.bootstrap.push(BootstrapPeer {
                        peer,
                        address,
                        failures: 0,
                        next_attempt: Instant::now(),
                    });
                }
                _ => {}
            },
            Command::Mailbox { peer, addresses, request, reply } => {
                if self.mailbox_pending.len() >= mailbox::MAX_PENDING_REQUESTS {
                    let _ = reply.send(Err("too many mailbox requests in flight".into()));
                    return;
                }
                let addresses = self.with_lan_addresses(&peer, addresses);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .mailbox
                    .send_request_with_addresses(&peer, request, addresses);
                self.mailbox_pending.insert(id, reply);
            }
            Command::MailboxRespond { channel, response } => {
                let _ = self.swarm.behaviour_mut().mailbox.send_response(channel, response);
            }
            Command::ClosestPeers { key, reply } => {
                if self.closest.len() >= MAX_PENDING_LOOKUPS {
                    let _ = reply.send(Vec::new());
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(key.clone());
                self.closest.insert(id, (key, reply));
            }
        }
    }

    fn on_mailbox(
        &mut self,
        event: request_response::Event<
            kolokol_protocol::mailbox::Request,
            kolokol_protocol::mailbox::Response,
        >,
    ) {
        use kolokol_protocol::mailbox::Response;
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    // Only DHT servers are replicas: a depositor found us as one of the servers
                    // closest to the mailbox id, and a client would not be found again.
                    if self.swarm.behaviour_mut().kad.mode() != kad::Mode::Server {
                        let refused = Response::Refused { reason: "not a mailbox replica".into() };
                        let _ = self.swarm.behaviour_mut().mailbox.send_response(channel, refused);
                        return;
                    }
                    if let Err(
                        mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i),
                    ) = self.mailbox_inbound.try_send(MailboxInbound { peer, request, channel })
                    {
                        let busy = Response::Refused { reason: "the replica is busy".into() };
                        let _ = self.swarm.behaviour_mut().mailbox.send_response(i.channel, busy);
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.mailbox_pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                if let Some(reply) = self.mailbox_pending.remove(&request_id) {
                    let _ = reply.send(Err(format!("cannot reach replica {peer}: {error}")));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound mailbox request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Checks a record a peer asks us to store. Only presence records are stored, only if they
    /// verify and are not older than the one we hold.
    fn on_put_record(&mut self, source: PeerId, mut record: kad::Record) {
        let now = crate::daemon::unix_secs();
        let presence = match PresenceRecord::from_dht(record.key.as_ref(), &record.value, now) {
            Ok((presence, _)) => presence,
            Err(e) => {
                tracing::debug!(%source, %e, "refused a DHT record");
                return;
            }
        };
        let store = self.swarm.behaviour_mut().kad.store_mut();
        if let Some(held) = kad::store::RecordStore::get(store, &record.key)
            && let Ok((old, _)) = PresenceRecord::from_dht(held.key.as_ref(), &held.value, now)
            && !presence.supersedes(&old)
            && presence != old
        {
            tracing::debug!(%source, "refused an older presence record");
            return;
        }
        let ttl = Duration::from_secs(presence.body.expires_at.saturating_sub(now));
        record.expires = Some(std::time::Instant::now() + ttl);
        if let Err(e) = kad::store::RecordStore::put(store, record) {
            tracing::debug!(%source, %e, "cannot store a presence record");
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request: kad::InboundRequest::PutRecord { source, record: Some(record), .. },
            } => self.on_put_record(source, record),
            // Only relay announcements are kept; they are hints, checked by identify when a
            // user dials the relay.
            kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { record: Some(record) },
            } if record.key.as_ref() == RELAYS_KEY.as_bytes() => {
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let _ = kad::store::RecordStore::add_provider(store, record);
            }
            kad::Event::OutboundQueryProgressed { id, result, step, .. } => match result {
                kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                    let now = crate::daemon::unix_secs();
                    let mut found_valid = false;
                    if let Some(lookup) = self.lookups.get_mut(&id)
                        && let Ok((record, peer)) = PresenceRecord::from_dht(
                            found.record.key.as_ref(),
                            &found.record.value,
                            now,
                        )
                        && peer == lookup.peer
                        && (found.peer.is_some() || !lookup.remote_only)
                        && lookup.best.as_ref().is_none_or(|b| record.supersedes(b))
                    {
                        lookup.best = Some(record);
                        // A record found on the network (not our own copy) is an answer; a
                        // node republishes every few minutes, so waiting for every replica
                        // to answer buys little freshness for much latency.
                        found_valid = found.peer.is_some();
                    }
                    if step.last || found_valid {
                        self.finish_lookup(id);
                    }
                }
                kad::QueryResult::GetRecord(_) => self.finish_lookup(id),
                kad::QueryResult::GetClosestPeers(result) => {
                    let peers = match result {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    if let Some((key, reply)) = self.closest.remove(&id) {
                        let target = kad::KBucketKey::new(key);
                        let mut peers: Vec<(PeerId, Vec<Multiaddr>)> =
                            peers.into_iter().map(|p| (p.peer_id, p.addrs)).collect();
                        peers.sort_by_key(|(p, _)| kad::KBucketKey::from(*p).distance(&target));
                        let _ = reply.send(peers);
                    }
                }
                kad::QueryResult::PutRecord(result)
                    if self.presence_query.is_some_and(|(q, _)| q == id) =>
                {
                    self.presence = Some(match result {
                        Ok(_) => {
                            self.presence_routing_table =
                                self.presence_query.map(|(_, t)| t).unwrap_or(0);
                            Ok(())
                        }
                        Err(e) => {
                            self.presence_retry_at = Some(Instant::now() + PRESENCE_RETRY);
                            // libp2p's own wording ("the quorum failed; needed 1
                            // peers") says nothing to a user; a failed store has one cause
                            // they can act on: no other DHT server took it.
                            Err(match e {
                                kad::PutRecordError::QuorumFailed { .. } => "no other DHT server took it yet (it is retried; a lone relay has none to give it to)".to_owned(),
                                other => format!("no DHT server took it yet: {other}"),
                            })
                        }
                    });
                }
                kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) => {
                    let local = *self.swarm.local_peer_id();
                    if providers.iter().any(|p| *p != local && !self.relays.contains_key(p)) {
                        self.relay_discovery_wait = RELAY_DISCOVERY_INTERVAL;
                        self.next_relay_discovery = self
                            .next_relay_discovery
                            .min(Instant::now() + RELAY_DISCOVERY_INTERVAL);
                    }
                    for peer in providers {
                        if peer != local
                            && !self.relays.contains_key(&peer)
                            && self.relays.len() < MAX_KNOWN_RELAYS
                            && !self.swarm.is_connected(&peer)
                        {
                            tracing::debug!(relay = %peer, "found a relay in the DHT");
                            let _ = self.swarm.dial(peer);
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn finish_lookup(&mut self, id: kad::QueryId) {
        if let Some(lookup) = self.lookups.remove(&id) {
            let _ = lookup.reply.send(lookup.best);
        }
        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            query.finish();
        }
    }

    /// A user node is a DHT server only while it has a direct external address; a relay always.
    fn update_kad_mode(&mut self) {
        let public = self.swarm.external_addresses().any(|a| !is_relayed(a));
        let mode =
            if self.role == Role::Relay || public { kad::Mode::Server } else { kad::Mode::Client };
        if self.swarm.behaviour_mut().kad.mode() != mode {
            tracing::info!(?mode, "DHT mode changed");
            self.swarm.behaviour_mut().kad.set_mode(Some(mode));
        }
        if self.role == Role::Relay
            && !self.providing
            && self.swarm.external_addresses().next().is_some()
        {
            self.announce_relay();
        }
    }

    /// Announces this relay under [`RELAYS_KEY`] (again), remembering the routing-table size.
    fn announce_relay(&mut self) {
        let table = self.routing_table_size();
        let key = kad::RecordKey::new(&RELAYS_KEY);
        if self.swarm.behaviour_mut().kad.start_providing(key).is_ok() {
            self.providing = true;
            self.providing_routing_table = table;
        }
    }

    /// The distinct peers among the bootstrap addresses.
    fn bootstrap_peers(&self) -> std::collections::HashSet<PeerId> {
        self.bootstrap.iter().map(|b| b.peer).collect()
    }

    fn routing_table_size(&mut self) -> usize {
        self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum()
    }

    fn status(&mut self) -> NetStatus {
        let routing_table = self.routing_table_size();
        NetStatus {
            listen: self.swarm.listeners().cloned().collect(),
            external: self.swarm.external_addresses().cloned().collect(),
            reservations: self
                .relays
                .iter()
                .filter_map(|(p, s)| s.circuit.clone().map(|c| (*p, c)))
                .collect(),
            connected: self.swarm.connected_peers().count(),
            routing_table,
            known_relays: self.relays.len(),
            // A peer may be listed at several addresses; it is one bootstrap peer.
            bootstrap_peers: self.bootstrap_peers().len(),
            bootstrap_connected: self
                .bootstrap_peers()
                .iter()
                .filter(|p| self.swarm.is_connected(p))
                .count(),
            public: self.swarm.external_addresses().any(|a| !is_relayed(a)),
            presence: self.presence.clone(),
            presence_routing_table: self.presence_routing_table,
            mdns: self.swarm.behaviour().mdns.is_enabled(),
            lan: {
                let mut lan: Vec<(PeerId, Vec<Multiaddr>)> =
                    self.lan.iter().map(|(p, a)| (*p, a.clone())).collect();
                lan.sort();
                lan
            },
            hole_punched: {
                let mut peers: Vec<PeerId> = self
                    .connections
                    .values()
                    .filter(|(_, via, _)| *via == "hole-punched")
                    .map(|(p, _, _)| *p)
                    .collect();
                peers.sort();
                peers.dedup();
                peers
            },
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.metrics {
            libp2p::metrics::Recorder::record(m, &event);
            if let SwarmEvent::Behaviour(BehaviourEvent::RelayServer(e)) = &event {
                libp2p::metrics::Recorder::record(m, e);
            }
        }
        let publish = matches!(
            event,
            SwarmEvent::ConnectionEstablished { .. }
                | SwarmEvent::ConnectionClosed { .. }
                | SwarmEvent::NewListenAddr { .. }
                | SwarmEvent::ExpiredListenAddr { .. }
                | SwarmEvent::ListenerClosed { .. }
                | SwarmEvent::ExternalAddrConfirmed { .. }
                | SwarmEvent::ExternalAddrExpired { .. }
                | SwarmEvent::Behaviour(BehaviourEvent::Kad(_))
                | SwarmEvent::Behaviour(BehaviourEvent::Identify(_))
                | SwarmEvent::Behaviour(BehaviourEvent::Dcutr(_))
                | SwarmEvent::Behaviour(BehaviourEvent::Mdns(_))
        );
        self.handle_swarm_event(event);
        if publish {
            let status = self.status();
            let mut addresses_changed = false;
            self.status.send_if_modified(|old| {
                addresses_changed =
                    old.external != status.external || old.reservations != status.reservations;
                let changed = *old != status;
                *old = status;
                changed
            });
            // The record is also republished each time the routing table doubles, so that it
            // moves to the peers now closest to its key as the network around us fills in.
            let table = self.status.borrow().routing_table;
            let grown = self.presence.is_some()
                && self.presence_query.is_some_and(|(_, t)| table >= 2 * t.max(1));
            if addresses_changed || grown {
                if grown {
                    self.presence_query = self.presence_query.map(|(q, _)| (q, table));
                }
                // A full queue is fine: the daemon republishes on its timer too.
                let _ = self.events.try_send(NetEvent::AddressesChanged);
            }
            // The relay announcement moves the same way, for the same reason.
            if self.providing && table >= 2 * self.providing_routing_table.max(1) {
                tracing::debug!(table, "routing table doubled; announcing the relay again");
                self.announce_relay();
            }
        }
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Delivery(e)) => self.on_delivery(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mailbox(e)) => self.on_mailbox(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identified(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(e)) => self.on_mdns(e),
            SwarmEvent::Behaviour(BehaviourEvent::AutonatClient(e)) => match e.result {
                Ok(()) => {
                    tracing::info!(address = %e.tested_addr, "reachable from outside (AutoNAT)")
                }
                Err(err) => {
                    let err = one_line(&err);
                    tracing::debug!(address = %e.tested_addr, %err, "AutoNAT test failed")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => match e.result {
                Ok(connection) => {
                    if let Some(entry) = self.connections.get_mut(&connection) {
                        entry.1 = "hole-punched";
                    }
                    tracing::info!(peer = %e.remote_peer_id, "hole punch succeeded: direct connection")
                }
                Err(err) => {
                    let err = one_line(&err);
                    tracing::debug!(peer = %e.remote_peer_id, %err, "hole punch failed; staying relayed")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. },
            )) => {
                tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
            }
            SwarmEvent::ExternalAddrConfirmed { .. } | SwarmEvent::ExternalAddrExpired { .. } => {
                self.update_kad_mode();
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, .. } => {
                let address = endpoint.get_remote_address().clone();
                let via = if endpoint.is_relayed() { "relayed" } else { "direct" };
                self.connections.insert(connection_id, (peer_id, via, address));
                if let ConnectedPoint::Dialer { address, .. } = &endpoint
                    && !is_relayed(address)
                {
                    self.dialed.insert(peer_id, without_peer(address));
                }
                if let Some(b) = self.bootstrap.iter_mut().find(|b| b.peer == peer_id) {
                    b.failures = 0;
                }
                // A full queue only delays the retry until the outbox's next timer.
                let _ = self.events.try_send(NetEvent::PeerConnected(peer_id));
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, connection_id, .. } => {
                self.connections.remove(&connection_id);
                if num_established == 0 {
                    self.dialed.remove(&peer_id);
                }
            }
            SwarmEvent::NewListenAddr { listener_id, address } => {
                if let Some(slot) =
                    self.relays.values_mut().find(|s| s.listener == Some(listener_id))
                {
                    tracing::info!(%address, "reachable through relay");
                    // The relay reports a circuit through each of its addresses; the one
                    // through the address we reached it at is known to work from here (over
                    // the stealth transport, for a node that uses nothing else), so it is the
                    // one invites and presence records carry.
                    let through_dialed = address.to_string().starts_with(&slot.address.to_string());
                    if slot.circuit.is_none() || through_dialed {
                        slot.circuit = Some(address);
                    }
                    slot.failures = 0;
                } else {
                    tracing::info!(%address, "listening");
                    if self.role == Role::Relay
                        && !self.external_configured
                        && !is_unspecified(&address)
                        && crate::transport::is_dialable_listen_address(&address)
                    {
                        self.swarm.add_external_address(address);
                    }
                }
            }
            SwarmEvent::ExpiredListenAddr { listener_id, .. } => {
                if let Some(slot) =
                    self.relays.values_mut().find(|s| s.listener == Some(listener_id))
                {
                    slot.circuit = None;
                }
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                if let Some((peer, slot)) =
                    self.relays.iter_mut().find(|(_, s)| s.listener == Some(listener_id))
                {
                    slot.listener = None;
                    slot.circuit = None;
                    slot.failures += 1;
                    slot.next_attempt = Instant::now() + backoff(slot.failures);
                    let reason = match &reason {
                        Ok(()) => "the relay closed the connection".to_owned(),
                        Err(e) => one_line(e),
                    };
                    tracing::warn!(relay = %peer, %reason, "relay reservation lost; will retry");
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                if let Some(b) = self.bootstrap.iter_mut().find(|b| b.peer == peer) {
                    b.failures += 1;
                    b.next_attempt = Instant::now() + backoff(b.failures);
                    let error = one_line(&error);
                    tracing::warn!(%peer, %error, "cannot reach bootstrap peer; will retry");
                }
            }
            _ => {}
        }
    }

    fn on_delivery(&mut self, event: request_response::Event<Vec<u8>, Ack>) {
        match event {
            request_response::Event::Message { message, peer, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    match self.inbound.try_send(Inbound { envelope: request, channel }) {
                        Ok(()) => {}
                        Err(
                            mpsc::error::TrySendError::Full(i)
                            | mpsc::error::TrySendError::Closed(i),
                        ) => {
                            tracing::debug!(%peer, "inbound queue full; answering busy");
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .delivery
                                .send_response(i.channel, Ack::Busy);
                        }
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(match response {
                            Ack::Accepted => Ok(()),
                            Ack::Rejected => Err(DeliveryFailure {
                                reason:
                                    "the recipient's node refused it: their key has changed, or \
                                         they take no more messages from strangers (ask them for a \
                                         new invite)"
                                        .into(),
                                permanent: true,
                            }),
                            Ack::Busy => {
                                Err(DeliveryFailure::temporary("the recipient's node is busy"))
                            }
                        });
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(DeliveryFailure::temporary(format!(
                        "cannot reach {peer}: {}",
                        one_line(&error)
                    ))));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound delivery failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocols.contains(&KAD_PROTOCOL) {
            for addr in info.listen_addrs.iter().filter(|a| !is_relayed(a)) {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            }
            // What mDNS saw may differ from what the peer lists (mDNS puts in the source
            // address of its answer), and it is the address that works on this LAN.
            for addr in self.lan.get(&peer).cloned().unwrap_or_default() {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
        }
        let is_relay = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
        // mDNS finds every libp2p node on the LAN, IPFS nodes and the like included. One that
        // is not a Kolokol node and serves neither as a relay nor in our DHT is of no use, so
        // it is forgotten instead of being listed and cached: a cached peer is dialed at every
        // start and goes into every bundle this node exports.
        if self.lan.contains_key(&peer)
            && info.protocol_version != IDENTIFY_PROTOCOL_VERSION
            && !is_relay
            && !info.protocols.contains(&KAD_PROTOCOL)
        {
            tracing::debug!(%peer, version = %info.protocol_version, "a peer on the local network is not a Kolokol node; forgetting it");
            self.lan.remove(&peer);
            return;
        }
        if let Some(address) = self.dialed.get(&peer) {
            // A relay's other addresses (TCP, QUIC, stealth) go into the peer cache too, and
            // so into the bundles this node exports, so that whoever imports one can still
            // reach the relay when one of its transports is blocked. The address that worked
            // is remembered last, so it stays first in the cache.
            if is_relay {
                for other in crate::transport::other_addresses(address, &info.listen_addrs) {
                    let _ = self.events.try_send(NetEvent::PeerSeen {
                        peer,
                        address: other,
                        relay: true,
                    });
                }
            }
            let _ = self.events.try_send(NetEvent::PeerSeen {
                peer,
                address: address.clone(),
                relay: is_relay,
            });
        }
        if self.role == Role::Node
            && is_relay
            && !self.relays.contains_key(&peer)
            && self.relays.len() < MAX_KNOWN_RELAYS
        {
            let base = self
                .dialed
                .get(&peer)
                .cloned()
                .or_else(|| info.listen_addrs.iter().find(|a| !is_relayed(a)).cloned());
            if let Some(base) = base {
                tracing::debug!(relay = %peer, %base, "found a relay");
                self.relays.insert(
                    peer,
                    RelaySlot {
                        address: base.with(Protocol::P2p(peer)),
                        listener: None,
                        circuit: None,
                        failures: 0,
                        next_attempt: Instant::now(),
                    },
                );
                self.reserve();
            }
        }
    }

    /// Peers found or gone on the local network.
    ///
    /// A found peer's addresses go to the swarm, so that dialing its peer id (a delivery, a
    /// mailbox request) tries them, and the peer is dialed once as a bootstrap source. Kademlia
    /// gets them only for a peer already in its routing table; any other peer is fed to it, as
    /// every peer is, by identify once connected, and only if it serves the DHT: a DHT client
    /// on the LAN would only fail every query sent to it.
    fn on_mdns(&mut self, event: mdns::Event) {
        match event {
            mdns::Event::Discovered(found) => {
                let mut new_peers = Vec::new();
                for (peer, addr) in found {
                    let addr = without_peer(&addr);
                    if !self.lan.contains_key(&peer) {
                        if self.lan.len() >= MAX_LAN_PEERS {
                            tracing::debug!(%peer, "too many peers on the local network; ignoring one");
                            continue;
                        }
                        new_peers.push(peer);
                    }
                    let known = self.lan.entry(peer).or_default();
                    if known.contains(&addr) || known.len() >= MAX_LAN_ADDRESSES {
                        continue;
                    }
                    known.push(addr.clone());
                    tracing::info!(%peer, address = %addr, "found a peer on the local network (mDNS)");
                    self.swarm.add_peer_address(peer, addr.clone());
                    if self.in_routing_table(&peer) {
                        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    }
                }
                for peer in new_peers {
                    if !self.swarm.is_connected(&peer)
                        && let Err(e) = self.swarm.dial(peer)
                    {
                        let e = one_line(&e);
                        tracing::debug!(%peer, %e, "cannot dial a peer found on the local network");
                    }
                }
            }
            mdns::Event::Expired(gone) => {
                for (peer, addr) in gone {
                    let addr = without_peer(&addr);
                    if let Some(known) = self.lan.get_mut(&peer) {
                        known.retain(|a| *a != addr);
                        if known.is_empty() {
                            self.lan.remove(&peer);
                            tracing::debug!(%peer, "a peer on the local network expired (mDNS)");
                        }
                    }
                }
            }
        }
    }

    /// Whether Kademlia's routing table holds `peer`, which it does only for DHT servers.
    fn in_routing_table(&mut self, peer: &PeerId) -> bool {
        self.swarm
            .behaviour_mut()
            .kad
            .kbucket(*peer)
            .is_some_and(|bucket| bucket.iter().any(|e| e.node.key.preimage() == peer))
    }

    /// The addresses to dial `peer` at: those it announced on the local network first (the
    /// shortest path, when it is there), then `addresses`.
    fn with_lan_addresses(&self, peer: &PeerId, addresses: Vec<Multiaddr>) -> Vec<Multiaddr> {
        match self.lan.get(peer) {
            Some(lan) => lan.iter().cloned().chain(addresses).collect(),
            None => addresses,
        }
    }

    /// Asks for reservations until [`TARGET_RESERVATIONS`] listeners are up.
    fn reserve(&mut self) {
        let now = Instant::now();
        let mut active = self.relays.values().filter(|s| s.listener.is_some()).count();
        let candidates: Vec<PeerId> = self
            .relays
            .iter()
            .filter(|(_, s)| s.listener.is_none() && s.next_attempt <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in candidates {
            if active >= TARGET_RESERVATIONS {
                break;
            }
            let Some(slot) = self.relays.get_mut(&peer) else { continue };
            let circuit = slot.address.clone().with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    slot.listener = Some(id);
                    active += 1;
                }
                Err(e) => {
                    slot.failures += 1;
                    slot.next_attempt = now + backoff(slot.failures);
                    let e = one_line(&e);
                    tracing::warn!(%circuit, %e, "cannot listen through relay");
                }
            }
        }
    }

    fn maintain(&mut self) {
        let now = Instant::now();
        if self.role == Role::Node {
            self.reserve();
            let reserved = self.relays.values().filter(|s| s.circuit.is_some()).count();
            if reserved < TARGET_RESERVATIONS
                && now >= self.next_relay_discovery
                && self.swarm.connected_peers().next().is_some()
            {
                self.next_relay_discovery = now + self.relay_discovery_wait;
                self.relay_discovery_wait =
                    (self.relay_discovery_wait * 2).min(RELAY_DISCOVERY_MAX_INTERVAL);
                self.swarm.behaviour_mut().kad.get_providers(kad::RecordKey::new(&RELAYS_KEY));
            }
        }
        if self.presence_retry_at.is_some_and(|t| t <= now) {
            self.presence_retry_at = None;
            let _ = self.events.try_send(NetEvent::AddressesChanged);
        }
        if !self.bootstrap.is_empty() {
            let connected = self.bootstrap.iter().any(|b| self.swarm.is_connected(&b.peer));
            let all_failed = self.bootstrap.iter().all(|b| b.failures > 0);
            if connected {
                self.warned_unreachable = false;
            } else if all_failed && !self.warned_unreachable {
                self.warned_unreachable = true;
                tracing::warn!(
                    tried = self.bootstrap.len(),
                    "cannot reach any bootstrap peer (peer cache, --bootstrap, invites, bundles); \
                     check the addresses, or import a bootstrap bundle with `kolokol peers import`"
                );
            }
        }
        for b in &mut self.bootstrap {
            if b.next_attempt <= now && !self.swarm.is_connected(&b.peer) {
                b.next_attempt = now + backoff(b.failures + 1);
                if let Err(e) = self.swarm.dial(b.address.clone()) {
                    let e = one_line(&e);
                    tracing::debug!(peer = %b.peer, %e, "bootstrap dial not started");
                }
            }
        }
    }
}

/// An error's text on one line. libp2p's dial errors list every address tried on a line of
/// its own, which breaks a log line (and a JSON log consumer's idea of one) into several.
pub(crate) fn one_line(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    text.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Exponential backoff from one second up to [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF)
}

/// True if the address goes through a relay circuit.
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// The address without a trailing `/p2p/<peer id>`.
pub(crate) fn without_peer(addr: &Multiaddr) -> Multiaddr {
    let mut a = addr.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

#[cfg(test)]
mod tests;
