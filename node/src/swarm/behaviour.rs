//! The composed libp2p behaviour and the swarm built from it: transports, protocol ids, and
//! every limit libp2p enforces for us (connections, streams, relay circuits, DHT records).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, autonat, connection_limits, dcutr,
    identify, kad, mdns, memory_connection_limits, noise, ping, relay,
};
use tokio::sync::watch;

use crate::config::{Config, Role};
use crate::error::{Error, Result};
use crate::swarm::one_line;
use crate::swarm::relay_server::{CONTACT_RELAY_AGENT_VERSION, RelayServer, Serve};
use crate::wire;

/// The Kademlia protocol id: Kolokol's own DHT, never the IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/kolokol/kad/1.0.0");

/// The identify protocol version string; also all that peers learn of our software.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/kolokol/1";

/// The agent version a bridge (an unlisted relay) sends in identify, so its users keep its
/// circuits out of their public presence records. Only peers that connect to it see it, and
/// they hold its address already.
pub const BRIDGE_AGENT_VERSION: &str = "/kolokol/1/bridge";

/// How often each end pings every connection (`Config::ping_interval`, which only the scale
/// simulation changes).
pub const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How long a ping waits for its answer. A connection whose ping goes unanswered this long is
/// closed (`swarm::event_loop`): a censor that silently drops a flow's packets, or a link that
/// died without a reset, leaves a connection that TCP would hold open for many minutes, and
/// requests sent on it (libp2p spreads them over a peer's connections) would wait for nothing.
/// A live connection answers within this even on a throttled link.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Established connections the node accepts in total; relays carry many users.
pub const MAX_CONNECTIONS: u32 = 1024;

/// Established connections to one peer; more than a few means a misbehaving peer.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 8;

/// Concurrent `/kolokol/msg/1` streams per connection, each holding at most one envelope.
pub const MAX_DELIVERY_STREAMS: usize = 256;

/// How long a Kademlia query may run.
pub const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often Kademlia refreshes the routing table on its own: a walk to our own key, then one
/// to a random key in each bucket farther than our nearest neighbour's (about log2 N walks,
/// each some 40 requests with disjoint paths). libp2p does it every 5 minutes by default;
/// go-libp2p-kad-dht and the libp2p Kademlia spec refresh every 10. The table also learns from
/// every lookup the node makes and every peer that connects, so the refresh only has to catch
/// what those miss; each one costs a device connections to some hundred peers, and in the
/// scale simulation every node's refresh on the same two cores (docs/BENCHMARKS.md).
pub const KAD_BOOTSTRAP_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Connections being negotiated at once, inbound.
pub const MAX_PENDING_INCOMING: u32 = 128;

/// A connection with no streams is closed after this long. Longer than libp2p's 10 s so a
/// conversation does not re-dial (and re-punch) between every pair of messages
/// (`Config::idle_connection_timeout`, which only the scale simulation changes).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one delivery (stream open, envelope out, ack in) may take at least: the outbox
/// gives a large envelope more, from its size and the goodput it measured to the peer
/// (`outbox::transfer`), and the swarm task holds each delivery to its own time.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest any delivery may take: libp2p's own limit on a `/kolokol/msg/1` exchange,
/// above every time the outbox gives one.
pub const MAX_DELIVERY_TIMEOUT: Duration = Duration::from_secs(300);

/// Records a DHT server stores for others. Only presence records are accepted, each verified.
pub const MAX_DHT_RECORDS: usize = 8192;

/// Largest DHT record value accepted, in bytes (a presence record with every address at its
/// longest is under 4.5 KiB).
pub const MAX_DHT_RECORD_BYTES: usize = 8192;

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
    pub(super) relay_client: relay::client::Behaviour,
    pub(super) relay_server: Toggle<RelayServer>,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(super) dcutr: dcutr::Behaviour,
    pub(super) autonat_client: Toggle<autonat::v2::client::Behaviour>,
    pub(super) autonat_server: Toggle<autonat::v2::server::Behaviour>,
    pub(super) delivery: request_response::Behaviour<wire::delivery::Codec>,
    pub(super) mailbox: request_response::Behaviour<wire::mailbox::Codec>,
    /// `/kolokol/mailbox/2`, beside version 1: a depositor picks the version per request (by
    /// whether it knows the recipient's mailbox address), so the two are separate behaviours.
    pub(super) mailbox_v2:
        request_response::Behaviour<wire::mailbox::Codec<kolokol_protocol::mailbox::RequestV2>>,
    /// Off unless the config asks for it: multicast on the LAN tells everyone there that this
    /// machine runs a libp2p node.
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) limits: connection_limits::Behaviour,
    /// Refuses new connections while the process uses more memory than the config allows
    /// (relays, by default), so a flood of peers cannot push a small server into swapping or
    /// the OOM killer; connections already made go on.
    pub(super) memory: Toggle<memory_connection_limits::Behaviour>,
}

/// Builds the swarm for `config`, listening on its addresses.
pub(crate) fn build(
    keypair: &libp2p::identity::Keypair,
    config: &Config,
    hole_punch: crate::transport::cooldown::Shared,
    meters: crate::transport::meter::Meters,
    contacts: &watch::Receiver<Arc<HashSet<PeerId>>>,
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
    let stealth = crate::transport::prepare(config, config.clock.now_secs())?;
    let mut swarm = SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_other_transport(|key| {
            if config.in_memory {
                return crate::transport::memory(key, hole_punch.clone(), meters.clone());
            }
            crate::transport::build(
                key,
                config.transport,
                stealth.clone(),
                hole_punch.clone(),
                meters.clone(),
            )
        })
        .map_err(|e| net(&e))?
        .with_dns()
        .map_err(|e| net(&e))?
        .with_relay_client(noise::Config::new, crate::transport::batch::BatchedYamux::default)
        .map_err(|e| net(&e))?
        .with_behaviour(|key, relay_client| {
            let peer_id = key.public().to_peer_id();
            // A community relay serves anyone; a user node that listens somewhere serves its
            // contacts (`swarm::relay_server`), unless told not to.
            let relay_server = match role {
                Role::Relay => Some(RelayServer::new(peer_id, Serve::Public)),
                Role::Node if config.relay_for_contacts && (listening || config.listen_lan) => {
                    Some(RelayServer::new(peer_id, Serve::Contacts(contacts.clone())))
                }
                Role::Node => None,
            };
            let mut kad_config = kad::Config::new(KAD_PROTOCOL);
            kad_config
                .set_query_timeout(KAD_QUERY_TIMEOUT)
                .set_periodic_bootstrap_interval(Some(KAD_BOOTSTRAP_INTERVAL))
                .disjoint_query_paths(true)
                .set_kbucket_inserts(kad::BucketInserts::Manual)
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
            // A user node tells the peers it connects to only its confirmed external addresses,
            // not what it listens on: its LAN addresses are for its neighbours, who learn them
            // by mDNS, and circuits through bridges are for its contacts.
            let agent = if config.bridge {
                BRIDGE_AGENT_VERSION
            } else if role == Role::Node && relay_server.is_some() {
                CONTACT_RELAY_AGENT_VERSION
            } else {
                IDENTIFY_PROTOCOL_VERSION
            };
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), key.public())
                    .with_agent_version(agent.to_owned())
                    .with_push_listen_addr_updates(true)
                    .with_hide_listen_addrs(role == Role::Node),
            );
            let delivery = request_response::Behaviour::new(
                [(wire::delivery::PROTOCOL_NAME, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(MAX_DELIVERY_TIMEOUT)
                    .with_max_concurrent_streams(MAX_DELIVERY_STREAMS),
            );
            // Every node speaks the protocol both ways; whether it serves as a replica is
            // decided per request, by its DHT mode at that moment.
            let mailbox = request_response::Behaviour::new(
                [(wire::mailbox::PROTOCOL_NAME, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(wire::mailbox::REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(wire::mailbox::MAX_STREAMS),
            );
            let mailbox_v2 = request_response::Behaviour::new(
                [(wire::mailbox::PROTOCOL_NAME_V2, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(wire::mailbox::REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(wire::mailbox::MAX_STREAMS),
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
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(config.ping_interval)
                        .with_timeout(PING_TIMEOUT),
                ),
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
                mailbox_v2,
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
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(config.idle_connection_timeout)
                // The opener of a stream sends its protocol id and its first bytes together,
                // instead of waiting a round trip for the other side to confirm the protocol:
                // an envelope goes out at once. Every stream Kolokol opens is to a peer that
                // said (through identify) or was configured to speak that protocol; if it does
                // not, the stream fails as a refused negotiation would.
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        // libp2p's default (10 s from the moment a dial is asked for) would cut a dial that
        // waited for its turn at the cool-down; that one keeps its own timeout.
        .with_connection_timeout(crate::transport::DIAL_BACKSTOP)
        .build();

    // A relay must serve the DHT and be reachable; a user node with a configured external
    // address can serve too. Everyone else stays a DHT client: a node reachable only through
    // relay circuits would make a poor DHT server (see notes/libp2p-0.57.md §2.3).
    let server = !config.bridge && (role == Role::Relay || !config.external_addresses.is_empty());
    swarm.behaviour_mut().kad.set_mode(Some(if server {
        kad::Mode::Server
    } else {
        kad::Mode::Client
    }));
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
