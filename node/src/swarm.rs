//! The one task that owns the libp2p `Swarm`, and the typed [`Client`] the rest of the node
//! talks to it through.
//!
//! Everything else sends it commands (one async method of [`Client`] per command) over a bounded
//! channel and hears from it through the bounded [`Inbound`], [`MailboxInbound`] and [`NetEvent`]
//! channels; nothing else ever touches the swarm. Heavy work never runs on the swarm task:
//! envelopes arriving over `/kolokol/msg/1` are handed, with their response channel, to opener
//! workers, whose answer comes back through [`Client::respond`].
//!
//! The rooms: [`behaviour`] builds the swarm and holds libp2p's limits; `event_loop` runs the
//! task; [`courier`] runs the short-lived swarms under fresh identities that carry version 2
//! mailbox requests; `dht`, `lan` and `relays` are its Kademlia side, its mDNS side and the auto-relay that
//! libp2p lacks; [`relay_server`] is the relay server, public on a relay and for contacts only on
//! a user node; `dialer` races every address of a peer,
//! [`endpoints`] remembers per [`network`] what worked.

pub mod admission;
pub mod behaviour;
mod connections;
pub mod courier;
pub(crate) mod dht;
mod dialer;
pub mod endpoints;
mod event_loop;
mod lan;
pub mod network;
pub mod relay_server;
mod relays;
mod requests;
mod status;
pub mod volume;

use std::time::Duration;

use kolokol_protocol::presence::PresenceRecord;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::wire::delivery::Ack;
use crate::wire::mailbox as mailbox_wire;

pub use dht::{FRESH_RECORD, RECORD_ANSWERS};
pub use dialer::failure::{MAX_OTHER_CHARS, MAX_REASONS, SHORT_PEER_CHARS};
pub use dialer::{
    MAX_RACE_CANDIDATES, MAX_RACES, MAX_UNREACHABLE, MIN_REDIAL_INTERVAL, PROVEN_HEAD_START,
    RACE_STAGGER,
};
pub use endpoints::{EndpointRecord, TransportKind};
pub(crate) use event_loop::EventLoop;
pub use event_loop::{
    CONTACT_RELAY_MAX_BACKOFF, MAX_BOOTSTRAP_ADDRESSES, MAX_BOOTSTRAP_PEERS, MAX_KNOWN_RELAYS,
    MAX_LAN_LISTENERS, MAX_PENDING_DELIVERIES, MAX_PENDING_LOOKUPS, MAX_RELAY_ADDRESSES,
    MIN_RECONNECT_WAKE_INTERVAL, PRESENCE_RETRY_MAX, TARGET_CONTACT_RESERVATIONS,
    TARGET_RESERVATIONS,
};
pub use lan::{MAX_LAN_ADDRESSES, MAX_LAN_PEERS};

/// Commands waiting for the swarm task. Callers wait when it is full, which slows senders down
/// instead of growing memory.
pub const COMMAND_QUEUE_LEN: usize = 1024;

/// Envelopes received and waiting for an opener worker. When full, new envelopes are answered
/// [`Ack::Busy`] at once and the sender retries later.
pub const INBOUND_QUEUE_LEN: usize = 512;

/// Network events (peer connected, addresses changed) waiting for the daemon. They are hints:
/// when the queue is full the newest is dropped, and the outbox's timer covers for it.
pub const NET_EVENT_QUEUE_LEN: usize = 256;

/// The DHT key relays announce themselves under (as providers), so users can find more relays
/// than the ones they were given.
pub const RELAYS_KEY: &str = "/kolokol/relays/1";

/// What other tasks ask of the swarm task.
pub(crate) enum Command {
    /// Send one envelope to `peer`, racing `addresses` (and every other address known for it)
    /// if not connected; the reply says whether the peer accepted it within `timeout` of the
    /// envelope going out.
    Deliver {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        envelope: Vec<u8>,
        timeout: Duration,
        reply: oneshot::Sender<std::result::Result<(), DeliveryFailure>>,
    },
    /// What the node knows of the transports and addresses on this network.
    Endpoints { reply: oneshot::Sender<EndpointsView> },
    /// Answer an inbound envelope from `peer` (whose refused envelopes count as junk).
    Respond { peer: PeerId, channel: ResponseChannel<Ack>, ack: Ack },
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
        request: mailbox_wire::MailboxRequest,
        reply: oneshot::Sender<
            std::result::Result<kolokol_protocol::mailbox::Response, MailboxFailure>,
        >,
    },
    /// Answer an inbound mailbox request.
    MailboxRespond {
        channel: ResponseChannel<kolokol_protocol::mailbox::Response>,
        response: kolokol_protocol::mailbox::Response,
    },
    /// Find the DHT servers closest to `key`, nearest first, with their addresses.
    ClosestPeers { key: Vec<u8>, reply: oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>> },
}

/// A mailbox request a peer sent us as a replica, waiting for the daemon's store.
pub(crate) struct MailboxInbound {
    /// The requesting peer, authenticated by the connection.
    pub peer: PeerId,
    /// The address range (IPv4 /24, IPv6 /48) the request came from, when its connection has
    /// an IP address: what the replica meters when peer ids are throwaway (couriers).
    pub source: Option<[u8; 7]>,
    pub request: mailbox_wire::MailboxRequest,
    pub channel: ResponseChannel<kolokol_protocol::mailbox::Response>,
}

/// A connected peer and how it is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectedPeer {
    /// The peer.
    pub peer: PeerId,
    /// How the connection reaches it.
    pub via: Link,
    /// The remote address of that connection.
    pub address: Multiaddr,
}

/// How a connection reaches its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    /// A direct connection we dialed or accepted.
    Direct,
    /// Through a relay circuit.
    Relayed,
    /// Direct, upgraded from a relayed connection by DCUtR.
    HolePunched,
}

impl Link {
    /// The name shown by `kolokol peers`.
    pub fn as_str(self) -> &'static str {
        match self {
            Link::Direct => "direct",
            Link::Relayed => "relayed",
            Link::HolePunched => "hole-punched",
        }
    }
}

/// Why a mailbox request got no answer from the replica.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MailboxFailure {
    /// Our own limit on requests in flight was reached; the outbox tries again later.
    #[error("too many mailbox requests in flight")]
    TooManyInFlight,
    /// The replica could not be reached or did not answer in time.
    #[error("cannot reach replica {}: {reason}", dialer::short_peer(peer))]
    Unreachable {
        /// The replica.
        peer: PeerId,
        /// Why, in a few words (`dialer::failure`).
        reason: String,
    },
    /// The node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// Why a delivery did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeliveryFailure {
    /// One line for the user.
    pub reason: String,
    /// True when retrying cannot help: the recipient's node opened the stream and refused the
    /// envelope, so it is not for that node's current key.
    pub permanent: bool,
    /// True when the recipient's node answered `Rejected`. Its one-byte answer does not say
    /// why, so the outbox, which knows what it sent, words the reason (`outbox::refusal`).
    pub refused: bool,
    /// True when the recipient's node was connected but did not answer within the time the
    /// envelope's size allowed: the path is slow, not cut, so the envelope is sent again soon
    /// rather than left in a mailbox.
    pub slow: bool,
    /// True when the connection carrying the envelope closed before the answer came (a
    /// duplicate connection closed by either side, a peer's restart): the path may well be
    /// there still, so one more attempt goes at once, before the mailbox.
    pub interrupted: bool,
}

impl DeliveryFailure {
    pub(crate) fn temporary(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            permanent: false,
            refused: false,
            slow: false,
            interrupted: false,
        }
    }

    /// Retrying cannot help: what we would send cannot be made (sealed, read, chunked).
    pub(crate) fn permanent(reason: impl Into<String>) -> Self {
        Self { permanent: true, ..Self::temporary(reason) }
    }

    /// The connection the envelope went over closed before the recipient's answer.
    pub(crate) fn interrupted(reason: impl Into<String>) -> Self {
        Self { interrupted: true, ..Self::temporary(reason) }
    }

    /// The recipient's node answered `Rejected`.
    pub(crate) fn refused() -> Self {
        Self {
            reason: "the recipient's node refused it".into(),
            permanent: true,
            refused: true,
            slow: false,
            interrupted: false,
        }
    }
}

/// What the node knows of the transports and addresses on the network it is on, for
/// `doctor`.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointsView {
    /// The network's identity, in hex.
    pub network: String,
    /// Every endpoint dialed on this network, most recently used first.
    pub records: Vec<EndpointRecord>,
    /// The transports the node may dial.
    pub policy: crate::config::Policy,
    /// Whether the node listens on its LAN addresses.
    pub lan_listen: bool,
    /// Relays that said they are bridges.
    pub bridges: Vec<PeerId>,
}

/// An envelope a peer sent, waiting for an opener.
pub(crate) struct Inbound {
    /// The peer at the other end of the connection it came over.
    pub peer: PeerId,
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
    /// Our reservations or external addresses changed: publish a new presence record, and
    /// look in our mailboxes (we may have just come online).
    AddressesChanged,
    /// Publish the presence record again though our addresses did not change: the last
    /// publication failed, or the routing table doubled since it went out. Nothing came
    /// online, so the mailboxes wait for their next fetch.
    Republish,
    /// A publication of the presence record succeeded after one failed: the DHT answers
    /// again, so look in the mailboxes now instead of at the next fetch.
    DhtBack,
    /// Connectivity came back (a reservation, a listen address, a first connection, a new
    /// network): retry everything that waits, now.
    Reconnected,
    /// A dial's outcome changed what the node knows of an endpoint: keep it in the store.
    Endpoint(EndpointRecord),
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
    /// Connections open now: more than `connected` while a peer has several (a relayed one
    /// until a direct one replaces it).
    pub connections: usize,
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
    /// Peers with a relayed connection open (closed soon after a direct one opens).
    pub relayed: Vec<PeerId>,
    /// Routing-table size when the last presence publication succeeded: a record placed while
    /// the node knew few peers may sit far from where lookups will search.
    pub presence_routing_table: usize,
    /// Whether mDNS runs: the node looks for peers on the local network and announces itself.
    pub mdns: bool,
    /// Peers found on the local network by mDNS and not expired, with the addresses they
    /// announced there (without `/p2p/`), sorted by peer id.
    pub lan: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Relays holding a reservation for us that said they are bridges: their circuits are for
    /// contacts only, never in the public presence record.
    pub bridges: Vec<PeerId>,
    /// Contacts' nodes holding a reservation for us (`swarm::relay_server`): like bridges,
    /// their circuits are for contacts only.
    pub contact_relays: Vec<PeerId>,
    /// The presence lookups that ended since the node started, and what they cost.
    pub lookups: LookupStats,
    /// Connections closed since the node started because another one to the same peer was
    /// open: a dial that connected after its race was won, a relayed connection once a direct
    /// one is up. Only grows.
    pub duplicates_closed: u64,
    /// Dials under way in races to connect to peers (`swarm::dialer`).
    pub dialing: usize,
}

/// Counts over the presence lookups a node made (`Node::resolve`, and the outbox's own
/// lookups), from Kademlia's per-query statistics (`kad::QueryStats`) taken when each lookup
/// ended: at the first fresh record, the second valid one, or the end of the query. Counters
/// only grow; a caller that wants one lookup's figures takes the difference around it. The
/// scale simulation (`kolokol-scale`) reads them for its hop counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Lookups that ended with a valid record.
    pub found: u64,
    /// Lookups that ended without one.
    pub not_found: u64,
    /// Requests the lookups sent to DHT peers (`QueryStats::num_requests`): every peer asked,
    /// answered or not.
    pub requests: u64,
    /// Of those, the ones that were answered (`QueryStats::num_successes`).
    pub successes: u64,
}

/// An error's text on one line. libp2p's dial errors list every address tried on a line of
/// its own, which breaks a log line (and a JSON log consumer's idea of one) into several.
pub(crate) fn one_line(e: &(impl std::fmt::Display + ?Sized)) -> String {
    let text = e.to_string();
    text.split(['\n', '\r']).map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The address `kolokol peers` shows for a connection: where the peer is reached. For a
/// relayed connection the peer opened to us, libp2p's remote address is only `/p2p/<peer>`
/// (the circuit has no address of the peer's own), so it is our circuit address through the
/// relay, `<relay address>/p2p-circuit`, which says which relay carries it.
pub(crate) fn connection_address(endpoint: &libp2p::core::ConnectedPoint) -> Multiaddr {
    use libp2p::core::ConnectedPoint;
    match endpoint {
        ConnectedPoint::Listener { local_addr, send_back_addr }
            if is_relayed(local_addr) && without_peer(send_back_addr).is_empty() =>
        {
            local_addr.clone()
        }
        other => other.get_remote_address().clone(),
    }
}

/// A dial error in a few words: for each address tried, the innermost cause ("Connection
/// refused (os error 111)") rather than libp2p's nested chain of every layer that passed it
/// on, which made one failed dial a line of about 330 characters.
pub(crate) fn brief_dial_error(e: &libp2p::swarm::DialError) -> String {
    match e {
        libp2p::swarm::DialError::Transport(errors) if !errors.is_empty() => errors
            .iter()
            .map(|(address, error)| format!("{address}: {}", innermost(error)))
            .collect::<Vec<_>>()
            .join("; "),
        other => one_line(other),
    }
}

/// The innermost cause of an error, on one line.
pub(crate) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    one_line(&cause)
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

/// The channels on which the swarm task tells the rest of the node what arrived.
pub(crate) struct Channels {
    /// Envelopes peers who are not contacts sent us, for the opener workers.
    pub inbound: mpsc::Receiver<Inbound>,
    /// Envelopes contacts sent us, in a queue of their own that strangers cannot fill.
    pub inbound_contacts: mpsc::Receiver<Inbound>,
    /// Connections, peers seen, address changes.
    pub net_events: mpsc::Receiver<NetEvent>,
    /// Mailbox requests peers sent us as a replica.
    pub mailbox_requests: mpsc::Receiver<MailboxInbound>,
}

/// Builds the swarm for `config` and the task that will own it, with the client to talk to it
/// and the channels it reports on. Nothing runs until the caller spawns [`EventLoop::run`].
/// `contacts` follows the contact book: contacts skip the quotas meant for strangers, may
/// reserve on this node's relay for contacts, and are the only user nodes it reserves on.
pub(crate) fn new(
    keypair: &libp2p::identity::Keypair,
    config: &Config,
    endpoints: Vec<EndpointRecord>,
    contacts: watch::Receiver<std::sync::Arc<std::collections::HashSet<PeerId>>>,
) -> Result<(Client, EventLoop, Channels)> {
    let hole_punch = crate::transport::cooldown::Shared::default();
    let meters = crate::transport::meter::Meters::default();
    let swarm = behaviour::build(keypair, config, hole_punch.clone(), meters.clone(), &contacts)?;
    let (command_tx, command_rx) = mpsc::channel(COMMAND_QUEUE_LEN);
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE_LEN);
    let (contacts_tx, inbound_contacts) = mpsc::channel(admission::CONTACT_INBOUND_QUEUE_LEN);
    let (net_tx, net_events) = mpsc::channel(NET_EVENT_QUEUE_LEN);
    let (mailbox_tx, mailbox_requests) = mpsc::channel(mailbox_wire::INBOUND_QUEUE_LEN);
    let (status_tx, status_rx) = watch::channel(NetStatus::default());
    let mut event_loop = EventLoop::new(
        swarm,
        config,
        command_rx,
        [inbound_tx, contacts_tx],
        net_tx,
        status_tx,
        mailbox_tx,
    )?;
    // What worked on which network, from earlier runs: the racing dialer starts from it.
    event_loop.watch_contacts(contacts);
    event_loop.endpoints = endpoints::Endpoints::new(endpoints);
    event_loop.cooldown = hole_punch;
    event_loop.volume.meters = meters;
    let route = courier::Route { policy: config.transport, in_memory: config.in_memory };
    let client = Client { commands: command_tx, status: status_rx, route };
    Ok((client, event_loop, Channels { inbound, inbound_contacts, net_events, mailbox_requests }))
}

/// A handle to the swarm task: one async method per command. Clones share the task.
#[derive(Clone)]
pub(crate) struct Client {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<NetStatus>,
    /// How couriers (`courier::Courier`) reach replicas: as this swarm does.
    route: courier::Route,
}

impl Client {
    /// A client with no swarm behind it, for unit tests of rooms that never reach the network:
    /// every command fails with `ShuttingDown`.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        let (commands, _) = mpsc::channel(1);
        let (_, status) = watch::channel(NetStatus::default());
        let route = courier::Route { policy: crate::config::Policy::default(), in_memory: true };
        Self { commands, status, route }
    }

    /// Starts a courier: a swarm of its own under a fresh identity, for version 2 mailbox
    /// requests that must not name this node.
    pub(crate) fn courier(&self) -> Result<courier::Courier> {
        courier::Courier::start(self.route)
    }

    /// Sends a command that carries a reply channel, and waits for the reply.
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)
    }

    /// Sends a command that needs no reply.
    async fn tell(&self, command: Command) {
        // A swarm task that is gone is shutting down; there is nobody left to tell.
        let _ = self.commands.send(command).await;
    }

    /// Delivers one envelope to `peer` (racing `addresses` and the others known for it if not
    /// connected) and waits for its acknowledgement, for at most `timeout` once it went out.
    pub(crate) async fn deliver(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        envelope: Vec<u8>,
        timeout: Duration,
    ) -> std::result::Result<(), DeliveryFailure> {
        self.ask(|reply| Command::Deliver { peer, addresses, envelope, timeout, reply })
            .await
            .unwrap_or_else(|_| Err(DeliveryFailure::temporary("the node is shutting down")))
    }

    /// What the node knows of the transports and addresses on this network.
    pub(crate) async fn endpoints(&self) -> Result<EndpointsView> {
        self.ask(|reply| Command::Endpoints { reply }).await
    }

    /// Answers an envelope `peer` sent.
    pub(crate) async fn respond(&self, peer: PeerId, channel: ResponseChannel<Ack>, ack: Ack) {
        self.tell(Command::Respond { peer, channel, ack }).await;
    }

    /// The network state now.
    pub(crate) async fn status(&self) -> Result<NetStatus> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Waits until the network state satisfies `ready`, for at most `timeout`; returns the
    /// state that satisfied it, or `None` on timeout.
    pub(crate) async fn wait_for(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&NetStatus) -> bool,
    ) -> Option<NetStatus> {
        let mut rx = self.status.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|s| ready(s))).await {
            Ok(Ok(status)) => Some(status.clone()),
            _ => None,
        }
    }

    /// Stores our presence record locally and on the DHT servers closest to its key.
    pub(crate) async fn publish_presence(&self, record: Vec<u8>, ttl: Duration) -> Result<()> {
        self.commands
            .send(Command::PublishPresence { record, ttl })
            .await
            .map_err(|_| Error::ShuttingDown)
    }

    /// Looks up a peer's presence record, waiting at most `timeout`; `None` if nobody has a
    /// valid one. With `remote_only`, our own copy does not count.
    pub(crate) async fn resolve(
        &self,
        peer: PeerId,
        remote_only: bool,
        timeout: Duration,
    ) -> Result<Option<PresenceRecord>> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Resolve { peer, remote_only, reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(tokio::time::timeout(timeout, answer).await.ok().and_then(|r| r.ok()).flatten())
    }

    /// Connected peers and how each is reached.
    pub(crate) async fn peers(&self) -> Result<Vec<ConnectedPeer>> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Dials a peer (from an imported bundle) as a bootstrap hint.
    pub(crate) async fn add_bootstrap(&self, address: Multiaddr) {
        self.tell(Command::AddBootstrap { address }).await;
    }

    /// Sends one mailbox request to a replica and waits for its answer.
    pub(crate) async fn mailbox(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: mailbox_wire::MailboxRequest,
    ) -> std::result::Result<kolokol_protocol::mailbox::Response, MailboxFailure> {
        self.ask(|reply| Command::Mailbox { peer, addresses, request, reply })
            .await
            .unwrap_or(Err(MailboxFailure::ShuttingDown))
    }

    /// Answers a mailbox request a peer sent us as a replica.
    pub(crate) async fn mailbox_respond(
        &self,
        channel: ResponseChannel<kolokol_protocol::mailbox::Response>,
        response: kolokol_protocol::mailbox::Response,
    ) {
        self.tell(Command::MailboxRespond { channel, response }).await;
    }

    /// The DHT servers closest to `key`, nearest first, with their addresses; waits at most
    /// `timeout` and answers empty on timeout or shutdown.
    pub(crate) async fn closest_peers(
        &self,
        key: Vec<u8>,
        timeout: Duration,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::ClosestPeers { key, reply }).await.is_err() {
            return Vec::new();
        }
        tokio::time::timeout(timeout, answer).await.ok().and_then(|r| r.ok()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
