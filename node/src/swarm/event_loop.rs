//! The swarm task: the one place that touches the `Swarm`. It takes commands from
//! [`Client`](crate::swarm::Client), answers them from the swarm's events, and tells the rest of
//! the node what happened through bounded channels. Its handling of the DHT, the local network,
//! relays and the request-response protocols is in the sibling modules `dht`, `lan`, `relays`
//! and `requests`; its bookkeeping of connections opening and closing is in `connections`; the
//! network state it publishes for others to watch is in `status`.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kolokol_protocol::presence::PresenceRecord;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, ping, relay};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::Policy;
use crate::config::{Config, Diversity, Role, peer_id_of};
use crate::error::Result;
use crate::quota::LogLimit;
use crate::repeats::Repeats;
use crate::swarm::admission::Admission;
use crate::swarm::behaviour::{
    BRIDGE_AGENT_VERSION, Behaviour, BehaviourEvent, IDENTIFY_PROTOCOL_VERSION, KAD_PROTOCOL,
};
use crate::swarm::dialer::{Race, Reach, Waiting, short_peer};
use crate::swarm::endpoints::Endpoints;
use crate::swarm::network::Network;
use crate::swarm::relay_server::CONTACT_RELAY_AGENT_VERSION;
use crate::swarm::{
    Command, ConnectedPeer, DeliveryFailure, EndpointsView, Inbound, Link, MailboxFailure,
    MailboxInbound, NetEvent, NetStatus, innermost, is_relayed, is_unspecified, one_line,
    without_peer,
};
use crate::wire::delivery::Ack;
use crate::wire::mailbox as mailbox_wire;

/// Outbound deliveries awaiting their ack. Past this, new deliveries fail at once as busy.
pub const MAX_PENDING_DELIVERIES: usize = 4096;

/// Presence lookups in flight at once; more wait for an answer of "not found".
pub const MAX_PENDING_LOOKUPS: usize = 256;

/// How often a peer kept out of the routing table by the diversity rule is logged, at most.
pub(super) const DIVERSITY_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How soon a presence publication that no DHT server accepted is tried again the first time;
/// each further failure in a row doubles the wait, up to [`PRESENCE_RETRY_MAX`].
pub(super) const PRESENCE_RETRY: Duration = Duration::from_secs(5);

/// The longest wait between two publications that no DHT server accepted. Retrying every
/// five seconds forever made a node whose DHT does not answer (a censor's block, or a network
/// too loaded to answer in time) run a walk of the DHT without pause, each adding to the load
/// that made the last one time out (in the 1 000-node simulation, docs/BENCHMARKS.md runs K
/// and K2, backing off helped a little; the rest of that load was the joining itself). A
/// minute is the mailbox fetch interval: a node that comes back is as quick to republish as
/// to fetch.
pub const PRESENCE_RETRY_MAX: Duration = Duration::from_secs(60);

/// How long a relayed connection to a peer stays open beside a direct one.
pub(super) const RELAYED_OVERLAP: Duration = Duration::from_secs(2);

/// The shortest time between two "connectivity is back" wake-ups of the outbox and the
/// mailbox fetcher: a flapping link must not make them retry everything in a loop.
pub const MIN_RECONNECT_WAKE_INTERVAL: Duration = Duration::from_secs(2);

/// LAN addresses a user node listens on at most (one per private interface address).
pub const MAX_LAN_LISTENERS: usize = 8;

/// Addresses remembered per relay, to race when its connection must be made again.
pub const MAX_RELAY_ADDRESSES: usize = 8;

/// Addresses remembered per bootstrap peer (configured ones, then those it announced).
pub const MAX_BOOTSTRAP_ADDRESSES: usize = 8;

/// A connection the swarm task keeps track of.
#[derive(Clone, Debug)]
pub(super) struct Conn {
    pub(super) peer: PeerId,
    pub(super) via: Link,
    /// The remote address: the one dialed, or the one the connection came from.
    pub(super) address: Multiaddr,
    /// Whether we dialed it, so that `address` is one the peer listens on.
    pub(super) dialed: bool,
    /// Whether we asked for it to be closed ([`EventLoop::close`]): it stays in the map until
    /// it is gone, but counts as open for no rule that closes another connection, the volume
    /// watch no longer judges it, and no reservation is made while one to the relay closes.
    pub(super) closing: bool,
}

/// A delivery waiting for its acknowledgement, and until when.
pub(super) struct PendingDelivery {
    pub(super) reply: oneshot::Sender<std::result::Result<(), DeliveryFailure>>,
    pub(super) deadline: Instant,
}

/// The swarm task.
pub(crate) struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    /// The node's wall clock, for checking records' expiry.
    pub(super) clock: Clock,
    pub(super) role: Role,
    /// Whether external addresses were configured; if not, a relay confirms its concrete
    /// listen addresses as external.
    pub(super) external_configured: bool,
    pub(super) commands: mpsc::Receiver<Command>,
    /// Envelopes from strangers, then from contacts, each queue bounded on its own.
    pub(super) inbound: [mpsc::Sender<Inbound>; 2],
    /// What peers may ask per window, and the contacts that is never asked of.
    pub(super) admission: Admission,
    /// The routing table's diversity rule, and one log line a minute for the peers it keeps out.
    pub(super) diversity: Diversity,
    pub(super) diversity_log: LogLimit,
    pub(super) events: mpsc::Sender<NetEvent>,
    /// Deliveries awaiting their ack; with those waiting for a race, at most
    /// [`MAX_PENDING_DELIVERIES`].
    pub(super) pending: HashMap<OutboundRequestId, PendingDelivery>,
    /// Which transports the node dials.
    pub(super) policy: Policy,
    /// Whether this relay is a bridge: unlisted, never announced, never a DHT server.
    pub(super) bridge: bool,
    /// The network the node is on and its interface addresses.
    pub(super) network: Network,
    /// What worked and what failed per network (`endpoints`).
    pub(super) endpoints: Endpoints,
    /// What the transports' cool-down shares with this task: the peers reachable through a
    /// relay (left to DCUtR) and the endpoints it just refused.
    pub(super) cooldown: crate::transport::cooldown::Shared,
    /// Races to connect, per peer; at most [`crate::swarm::dialer::MAX_RACES`].
    pub(super) races: HashMap<PeerId, Race>,
    /// Dials of races already won, and their addresses; at most
    /// [`crate::swarm::dialer::MAX_RACE_CANDIDATES`] per race.
    pub(super) losers: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    /// Peers every address of which failed in the last race: when, why, and which addresses
    /// were tried; at most [`crate::swarm::dialer::MAX_UNREACHABLE`].
    pub(super) unreachable: HashMap<PeerId, crate::swarm::dialer::Unreachable>,
    /// Fires when the next race step is due.
    pub(super) race_timer: Pin<Box<tokio::time::Sleep>>,
    /// Whether a user node listens on its LAN addresses (mDNS announces them).
    pub(super) listen_lan: bool,
    /// The LAN listeners, per interface address; at most [`MAX_LAN_LISTENERS`].
    pub(super) lan_listeners: HashMap<Ipv4Addr, ListenerId>,
    /// Relays that said they are bridges; bounded by [`MAX_KNOWN_RELAYS`].
    pub(super) bridges: HashSet<PeerId>,
    /// Contacts whose nodes said they relay for their contacts: relays for us, whose circuits
    /// are for our contacts only; bounded by [`MAX_KNOWN_RELAYS`].
    pub(super) contact_relays: HashSet<PeerId>,
    /// Connected peers that relay for their contacts and are not our contacts (yet), with the
    /// listen addresses they gave in identify; each leaves when its last connection closes or
    /// when the user adds it as a contact. Bounded by [`MAX_KNOWN_RELAYS`] peers of
    /// [`MAX_RELAY_ADDRESSES`] addresses.
    pub(super) relaying_strangers: HashMap<PeerId, Vec<Multiaddr>>,
    /// When the routing tables were last read.
    pub(super) network_checked: Instant,
    /// When the outbox was last woken because connectivity came back.
    pub(super) reconnect_woken: Option<Instant>,
    pub(super) relays: HashMap<PeerId, RelaySlot>,
    pub(super) bootstrap: Vec<BootstrapPeer>,
    /// The address we dialed for each connected peer, so a relay found by identify can be
    /// reserved on at the address that worked. Entries leave when the last connection closes,
    /// so connection limits bound it.
    pub(super) dialed: HashMap<PeerId, Multiaddr>,
    /// The latest network state, republished when addresses, reservations or connections
    /// change, so callers can wait for a state instead of polling for it.
    pub(super) status: watch::Sender<NetStatus>,
    /// Open connections and how each reaches its peer; bounded by the connection limits.
    pub(super) connections: HashMap<ConnectionId, Conn>,
    /// Peers with a direct connection, and since when, until their relayed connections are
    /// closed; bounded by the connection limits like `connections`.
    pub(super) direct_since: HashMap<PeerId, Instant>,
    /// Connections closed because another to the same peer was open, for [`NetStatus`].
    pub(super) duplicates_closed: u64,
    /// Presence lookups in flight, with the best record found so far and who waits for it.
    pub(super) lookups: HashMap<kad::QueryId, Lookup>,
    /// What the presence lookups that ended so far found and cost, for [`NetStatus`].
    pub(super) lookup_stats: crate::swarm::LookupStats,
    /// Outcome of the last presence publication.
    pub(super) presence: Option<Result<(), String>>,
    /// The query id of the last presence publication, to match its outcome, and the routing
    /// table size when it started.
    pub(super) presence_query: Option<(kad::QueryId, usize)>,
    /// Routing-table size at the last successful presence publication.
    pub(super) presence_routing_table: usize,
    /// Whether this relay has announced itself under [`RELAYS_KEY`].
    pub(super) providing: bool,
    /// Routing-table size at the last announcement. A relay that started alone announced to
    /// nobody (or to few); it announces again each time its table doubles, so relays that
    /// join later come to hold the announcement and users find it.
    pub(super) providing_routing_table: usize,
    /// Whether a user node looks for relays in the DHT (`Config::relay_discovery`).
    pub(super) relay_discovery: bool,
    /// When a user node next looks for relays in the DHT, and the wait after that.
    pub(super) next_relay_discovery: Instant,
    pub(super) relay_discovery_wait: Duration,
    /// When to publish the presence record again after a failed publication.
    pub(super) presence_retry_at: Option<Instant>,
    /// Publications that failed in a row since the last that succeeded, which sets the wait
    /// before the next ([`dht::presence_retry_delay`](super::dht::presence_retry_delay)).
    pub(super) presence_failures: u32,
    /// When to announce our addresses if they differ from those last announced: set
    /// [`ADDRESS_SETTLE`] after a change that took some away (`EventLoop::announce_change`).
    pub(super) announce_at: Option<Instant>,
    /// Our addresses and reservations as last announced, sorted.
    pub(super) announced: crate::swarm::relays::Announcement,
    /// Whether "no bootstrap peer is reachable" has been said since the last success.
    pub(super) warned_unreachable: bool,
    /// libp2p's own metrics, recorded when `--metrics` is on.
    pub(super) metrics: Option<libp2p::metrics::Metrics>,
    /// Where inbound mailbox requests go when this node is a replica.
    pub(super) mailbox_inbound: mpsc::Sender<MailboxInbound>,
    /// Our mailbox requests awaiting an answer; at most [`mailbox_wire::MAX_PENDING_REQUESTS`].
    pub(super) mailbox_pending: HashMap<(MailboxVersion, OutboundRequestId), MailboxReply>,
    /// Closest-peer queries in flight and who waits for each; at most [`MAX_PENDING_LOOKUPS`].
    pub(super) closest: HashMap<kad::QueryId, (Vec<u8>, ClosestReply)>,
    /// Failures that keep repeating (a relay that is down), collapsed in the log.
    pub(super) repeats: Repeats,
    /// Peers mDNS found on the local network, with their addresses there (without `/p2p/`),
    /// until mDNS reports them expired; at most [`MAX_LAN_PEERS`] of [`MAX_LAN_ADDRESSES`].
    pub(super) lan: HashMap<PeerId, Vec<Multiaddr>>,
    /// Bytes received per connection: stalls and byte budgets (`swarm::volume`).
    pub(super) volume: crate::swarm::volume::Volume,
}

type ClosestReply = oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>;

type MailboxReply =
    oneshot::Sender<std::result::Result<kolokol_protocol::mailbox::Response, MailboxFailure>>;

/// Which mailbox protocol a request went over: each is its own behaviour, whose request ids
/// may collide with the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum MailboxVersion {
    /// `/kolokol/mailbox/1`.
    V1,
    /// `/kolokol/mailbox/2`.
    V2,
}

/// A presence lookup in flight.
pub(super) struct Lookup {
    pub(super) peer: PeerId,
    pub(super) remote_only: bool,
    /// Valid records found on the network so far.
    pub(super) answers: usize,
    pub(super) best: Option<PresenceRecord>,
    pub(super) reply: oneshot::Sender<Option<PresenceRecord>>,
}

// Relays and bootstrap peers, as the task keeps them (`relays` does the work).

/// The log message of a lost relay reservation, also its name among [`Repeats`].
pub(super) const RESERVATION_LOST: &str = "relay reservation lost; will retry";

/// The log message of a failed dial of a bootstrap peer, also its name among [`Repeats`].
pub(super) const BOOTSTRAP_UNREACHABLE: &str = "cannot reach bootstrap peer; will retry";

/// How many relay reservations a user node tries to hold on community relays (and bridges).
pub const TARGET_RESERVATIONS: usize = 2;

/// How many relay reservations a user node tries to hold on its contacts' nodes, besides
/// [`TARGET_RESERVATIONS`]: a contact's node is usually in the same country, so a reservation
/// on it keeps the node reachable by its other contacts there when the border is cut and every
/// community relay abroad is gone; counted apart, so that it never pushes a community relay out.
pub const TARGET_CONTACT_RESERVATIONS: usize = 1;

/// Bootstrap peers the swarm task redials at most; an imported bundle beyond this only feeds
/// the peer cache, so importing bundle after bundle cannot grow the redial list without bound.
pub const MAX_BOOTSTRAP_PEERS: usize = 64;

/// How many relays a node remembers as candidates for reservations.
pub const MAX_KNOWN_RELAYS: usize = 32;

/// How often a user node looks for more relays in the DHT while it has fewer reservations
/// than it wants. The wait doubles after each look, up to [`RELAY_DISCOVERY_MAX_INTERVAL`],
/// and goes back to this when a look finds a relay the node did not know, since where one new
/// relay appeared others may follow.
pub(super) const RELAY_DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);

/// Longest wait between two looks for relays.
pub(super) const RELAY_DISCOVERY_MAX_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// How often the swarm task checks relays and bootstrap peers.
pub(super) const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// How long our addresses and reservations must stay as they are before a change that only
/// takes some away is announced (the presence record published again, our mailboxes fetched); a
/// new address or reservation is announced at once. A relay connection replaced for its byte
/// budget (T10, `swarm::volume`) loses and regains the same reservation within milliseconds:
/// announcing both changes spent the next connection's budget on DHT answers and a mailbox
/// fetch, so that it was replaced in turn every 4 s.
pub(super) const ADDRESS_SETTLE: Duration = Duration::from_secs(2);

/// Longest wait between two attempts to reach a relay or a bootstrap peer: while cut off,
/// each is dialed at most this often, and once the path is back it is found within this.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// A relay we may hold a reservation on.
pub(super) struct RelaySlot {
    /// The relay's address the reservation goes through (the one that connected last),
    /// ending in `/p2p/<relay>`.
    pub(super) address: Multiaddr,
    /// Every address known for the relay, without `/p2p/`, raced when it must be reached
    /// again; at most [`MAX_RELAY_ADDRESSES`].
    pub(super) addresses: Vec<Multiaddr>,
    /// The circuit listener while a reservation is wanted or held.
    pub(super) listener: Option<libp2p::core::transport::ListenerId>,
    /// The circuit address once the reservation is granted.
    pub(super) circuit: Option<Multiaddr>,
    pub(super) failures: u32,
    pub(super) next_attempt: Instant,
}

/// A configured bootstrap peer, redialled with backoff while not connected.
pub(super) struct BootstrapPeer {
    pub(super) peer: PeerId,
    /// Its addresses, each ending in `/p2p/<peer>`, raced together; at most
    /// [`MAX_BOOTSTRAP_ADDRESSES`].
    pub(super) addresses: Vec<Multiaddr>,
    pub(super) failures: u32,
    pub(super) next_attempt: Instant,
}

/// Exponential backoff from one second up to [`MAX_BACKOFF`].
pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF)
}

/// Longest wait before asking a contact's node for a reservation again after it refused one.
pub const CONTACT_RELAY_MAX_BACKOFF: Duration = Duration::from_secs(10 * 60);

/// Exponential backoff from two seconds up to [`CONTACT_RELAY_MAX_BACKOFF`], for a contact's
/// node that refused a reservation (it relays for its own contacts only, and we may not be one).
pub(super) fn contact_relay_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(10)).min(CONTACT_RELAY_MAX_BACKOFF)
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: &Config,
        commands: mpsc::Receiver<Command>,
        inbound: [mpsc::Sender<Inbound>; 2],
        events: mpsc::Sender<NetEvent>,
        status: watch::Sender<NetStatus>,
        mailbox_inbound: mpsc::Sender<MailboxInbound>,
    ) -> Result<Self> {
        let now = Instant::now();
        let mut bootstrap: Vec<BootstrapPeer> = Vec::new();
        for a in &config.bootstrap {
            let peer = peer_id_of(a)?;
            match bootstrap.iter().position(|b| b.peer == peer) {
                Some(i) => {
                    let b = &mut bootstrap[i];
                    if b.addresses.len() < MAX_BOOTSTRAP_ADDRESSES && !b.addresses.contains(a) {
                        b.addresses.push(a.clone());
                    }
                }
                None if bootstrap.len() < MAX_BOOTSTRAP_PEERS => bootstrap.push(BootstrapPeer {
                    peer,
                    addresses: vec![a.clone()],
                    failures: 0,
                    next_attempt: now,
                }),
                None => {}
            }
        }
        let network = Network::new();
        tracing::info!(network = %network.id, "on network");
        let mut this = Self {
            swarm,
            clock: config.clock.clone(),
            role: config.role,
            external_configured: !config.external_addresses.is_empty(),
            commands,
            inbound,
            admission: Admission::new(watch::channel(Arc::new(HashSet::new())).1),
            diversity: config.dht_diversity,
            diversity_log: LogLimit::default(),
            events,
            pending: HashMap::new(),
            policy: config.transport,
            bridge: config.bridge,
            network,
            endpoints: Endpoints::new(Vec::new()),
            cooldown: crate::transport::cooldown::Shared::default(),
            volume: crate::swarm::volume::Volume::new(config.ping_interval),
            races: HashMap::new(),
            losers: HashMap::new(),
            unreachable: HashMap::new(),
            race_timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            listen_lan: config.listen_lan,
            lan_listeners: HashMap::new(),
            bridges: HashSet::new(),
            contact_relays: HashSet::new(),
            relaying_strangers: HashMap::new(),
            network_checked: now,
            reconnect_woken: None,
            relays: HashMap::new(),
            bootstrap,
            dialed: HashMap::new(),
            status,
            connections: HashMap::new(),
            direct_since: HashMap::new(),
            duplicates_closed: 0,
            lookups: HashMap::new(),
            lookup_stats: Default::default(),
            presence: None,
            presence_query: None,
            presence_routing_table: 0,
            providing: false,
            providing_routing_table: 0,
            relay_discovery: config.relay_discovery,
            next_relay_discovery: now + RELAY_DISCOVERY_INTERVAL,
            relay_discovery_wait: RELAY_DISCOVERY_INTERVAL,
            presence_retry_at: None,
            presence_failures: 0,
            announce_at: None,
            announced: (Vec::new(), Vec::new()),
            warned_unreachable: false,
            metrics: None,
            mailbox_inbound,
            mailbox_pending: HashMap::new(),
            closest: HashMap::new(),
            lan: HashMap::new(),
            repeats: Repeats::default(),
        };
        // Configured bootstrap peers (and the peer cache) are the user's choice: they enter the
        // routing table whatever the diversity rule would say.
        for b in &this.bootstrap {
            for a in &b.addresses {
                this.swarm.behaviour_mut().kad.add_address(&b.peer, without_peer(a));
            }
        }
        if config.dht_diversity.exempt_loopback {
            tracing::warn!(
                "the routing table's diversity rule is relaxed for loopback addresses (a test configuration; never set by `kolokol node` or `kolokol relay`)"
            );
        }
        Ok(this)
    }

    /// Follows the user's contacts, whom no quota for strangers ever limits.
    pub(crate) fn watch_contacts(&mut self, contacts: watch::Receiver<Arc<HashSet<PeerId>>>) {
        self.admission = Admission::new(contacts);
    }

    /// Records libp2p's own metrics into the registry served at `/metrics`.
    pub(crate) fn record_metrics(&mut self, metrics: libp2p::metrics::Metrics) {
        self.metrics = Some(metrics);
    }

    /// Runs until `shutdown` flips to true or every command sender is gone.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut race_step = self.next_race_step();
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tick.tick() => self.maintain(),
                _ = &mut self.race_timer, if race_step.is_some() => self.step_races(),
                event = self.network.next_event() => self.on_interface(event),
                _ = shutdown.changed() => break,
            }
            // The timer is reset only when the next step moved, not at every event.
            let next = self.next_race_step();
            if next != race_step {
                race_step = next;
                if let Some(at) = next {
                    self.race_timer.as_mut().reset(at);
                }
            }
        }
        for (_, pending) in self.pending.drain() {
            let _ =
                pending.reply.send(Err(DeliveryFailure::temporary("the node is shutting down")));
        }
        for (_, race) in self.races.drain() {
            for waiting in race.waiting {
                match waiting {
                    Waiting::Delivery { reply, .. } => {
                        let _ = reply
                            .send(Err(DeliveryFailure::temporary("the node is shutting down")));
                    }
                    Waiting::Mailbox { reply, .. } => {
                        let _ = reply.send(Err(MailboxFailure::ShuttingDown));
                    }
                }
            }
        }
        for (_, reply) in self.mailbox_pending.drain() {
            let _ = reply.send(Err(MailboxFailure::ShuttingDown));
        }
        tracing::debug!("swarm task stopped");
    }

    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Deliver { peer, addresses, envelope, timeout, reply } => {
                if self.pending.len() + self.waiting_count().0 >= MAX_PENDING_DELIVERIES {
                    let _ = reply
                        .send(Err(DeliveryFailure::temporary("too many deliveries in flight")));
                    return;
                }
                match self.reach(peer, addresses) {
                    Reach::Connected => self.send_delivery(peer, envelope, timeout, reply),
                    Reach::Racing => {
                        let waiting = Waiting::Delivery { envelope, timeout, reply };
                        if let Some(Waiting::Delivery { reply, .. }) =
                            self.queue_for_race(peer, waiting)
                        {
                            let _ = reply.send(Err(DeliveryFailure::temporary(format!(
                                "cannot reach {}",
                                short_peer(&peer)
                            ))));
                        }
                    }
                    Reach::Unreachable(why) => {
                        let _ = reply.send(Err(DeliveryFailure::temporary(format!(
                            "cannot reach {}: {why}",
                            short_peer(&peer)
                        ))));
                    }
                }
            }
            Command::Respond { peer, channel, ack } => {
                if ack == Ack::Rejected {
                    self.admission.junk(&peer);
                }
                // The peer may have gone meanwhile; then there is nobody to answer.
                let _ = self.swarm.behaviour_mut().delivery.send_response(channel, ack);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::PublishPresence { record, ttl } => self.publish_presence(record, ttl),
            Command::Resolve { peer, remote_only, reply } => {
                if self.lookups.len() >= MAX_PENDING_LOOKUPS {
                    let _ = reply.send(None);
                    return;
                }
                let key = kad::RecordKey::new(&kolokol_protocol::presence::record_key(&peer));
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.lookups
                    .insert(id, Lookup { peer, remote_only, answers: 0, best: None, reply });
            }
            Command::Peers { reply } => {
                let mut peers: Vec<ConnectedPeer> = self
                    .connections
                    .values()
                    .map(|c| ConnectedPeer { peer: c.peer, via: c.via, address: c.address.clone() })
                    .collect();
                peers.sort_by_key(|p| (p.peer, p.via));
                let _ = reply.send(peers);
            }
            Command::AddBootstrap { address } => {
                if let Ok(peer) = peer_id_of(&address) {
                    self.add_bootstrap(peer, address);
                }
            }
            Command::Mailbox { peer, addresses, request, reply } => {
                if self.mailbox_pending.len() + self.waiting_count().1
                    >= mailbox_wire::MAX_PENDING_REQUESTS
                {
                    let _ = reply.send(Err(MailboxFailure::TooManyInFlight));
                    return;
                }
                match self.reach(peer, addresses) {
                    Reach::Connected => self.send_mailbox(peer, request, reply),
                    Reach::Racing => {
                        if let Some(Waiting::Mailbox { reply, .. }) =
                            self.queue_for_race(peer, Waiting::Mailbox { request, reply })
                        {
                            let _ = reply.send(Err(MailboxFailure::Unreachable {
                                peer,
                                reason: "no connection".into(),
                            }));
                        }
                    }
                    Reach::Unreachable(reason) => {
                        let _ = reply.send(Err(MailboxFailure::Unreachable { peer, reason }));
                    }
                }
            }
            Command::Endpoints { reply } => {
                let _ = reply.send(self.endpoints_view());
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

    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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
            self.publish_status();
        }
    }

    pub(super) fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Delivery(e)) => self.on_delivery(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mailbox(e)) => {
                self.on_mailbox(MailboxVersion::V1, e, mailbox_wire::MailboxRequest::V1)
            }
            SwarmEvent::Behaviour(BehaviourEvent::MailboxV2(e)) => {
                self.on_mailbox(MailboxVersion::V2, e, mailbox_wire::MailboxRequest::V2)
            }
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
                        entry.via = Link::HolePunched;
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
                self.repeats.clear(RESERVATION_LOST, &relay_peer_id.to_string());
                tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
                if !renewal {
                    self.reconnected("a relay reservation was made");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(e),
            })) if ping_unanswered(&e) => {
                // A connection that does not answer a ping is dead or stalled (a censor
                // dropping its packets): close it, so that what is sent to the peer goes over
                // its other connections, or a new one, instead of into the void. Any other
                // failure is not a silence: a peer without the ping protocol (a plain libp2p
                // client asking the mailbox) fails negotiation, as `Unsupported` or, with
                // lazy negotiation, as `Other`, and keeps its connection (`ping_unanswered`).
                let via = self.connections.get(&connection).map(|c| c.via);
                if self.volume_unanswered(connection) {
                    tracing::warn!(%peer, ?via, error = %one_line(&e), "no answer on a connection; closing it");
                } else {
                    tracing::debug!(%peer, ?via, "no answer on a tunnel session; it moves to a new connection");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                connection,
                result: Ok(rtt),
                ..
            })) => {
                self.volume_pinged(connection, rtt);
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                // A circuit through a bridge or a contact's node is for contacts only: as an
                // external address it would go to every peer in identify.
                if relay_of_circuit(&address)
                    .is_some_and(|r| self.bridges.contains(&r) || self.contact_relays.contains(&r))
                {
                    self.swarm.remove_external_address(&address);
                }
                self.update_kad_mode();
                self.reconnected("an external address was confirmed");
            }
            SwarmEvent::ExternalAddrExpired { .. } => {
                self.update_kad_mode();
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, .. } => {
                self.on_connection_established(peer_id, endpoint, connection_id)
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                connection_id,
                endpoint,
                ..
            } => self.on_connection_closed(peer_id, num_established, connection_id, endpoint),
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
                    self.reconnected("reachable through a relay");
                } else {
                    tracing::info!(%address, "listening");
                    if !is_unspecified(&address) {
                        self.reconnected("a listen address appeared");
                    }
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
                    // A reservation that worked is made again at once (through another of the
                    // relay's addresses if this one is blocked now); one that keeps failing
                    // backs off.
                    if slot.circuit.take().is_some() {
                        slot.failures = 0;
                        slot.next_attempt = Instant::now();
                    } else {
                        slot.failures += 1;
                        // A contact's node that refuses us has not added us as its contact
                        // (yet): asking every few seconds would not change its mind.
                        let wait = if self.contact_relays.contains(peer) && reason.is_err() {
                            contact_relay_backoff(slot.failures)
                        } else {
                            backoff(slot.failures)
                        };
                        slot.next_attempt = Instant::now() + wait;
                    }
                    let reason = match &reason {
                        Ok(()) => "the relay closed the connection".to_owned(),
                        Err(e) => innermost(e),
                    };
                    if self.repeats.note(
                        RESERVATION_LOST,
                        peer.to_string(),
                        reason.clone(),
                        Instant::now(),
                    ) {
                        tracing::warn!(relay = %peer, %reason, "{RESERVATION_LOST}");
                    }
                    // A reservation lost with its connection is made again on the relay's other
                    // connection at once (the one that replaced it, `swarm::volume`), not a
                    // maintenance tick later.
                    self.reserve();
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, connection_id } => {
                self.race_dial_failed(peer_id, connection_id, &error);
            }
            _ => {}
        }
    }

    pub(super) fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocols.contains(&KAD_PROTOCOL) {
            for addr in info.listen_addrs.iter().filter(|a| !is_relayed(a)) {
                self.add_to_routing_table(peer, addr.clone());
            }
            // What mDNS saw may differ from what the peer lists (mDNS puts in the source
            // address of its answer), and it is the address that works on this LAN.
            for addr in self.lan.get(&peer).cloned().unwrap_or_default() {
                self.add_to_routing_table(peer, addr);
            }
        }
        let mut is_relay = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
        if is_relay
            && info.agent_version == BRIDGE_AGENT_VERSION
            && self.bridges.len() < MAX_KNOWN_RELAYS
        {
            self.bridges.insert(peer);
        }
        // A user node relaying for its contacts (`swarm::relay_server`) is a relay for us only
        // if it is our contact (whether we are its contact too, its answer to our reservation
        // tells); to anyone else it is a user node, never asked for a reservation, cached or
        // exported as a relay. One that is not our contact yet is remembered while it is
        // connected, so that it becomes our relay as soon as the user adds it
        // (`EventLoop::promote_contact_relays`).
        if is_relay && info.agent_version == CONTACT_RELAY_AGENT_VERSION {
            if self.role == Role::Node
                && self.admission.is_contact(&peer)
                && (self.contact_relays.contains(&peer)
                    || self.contact_relays.len() < MAX_KNOWN_RELAYS)
            {
                self.contact_relays.insert(peer);
            } else {
                is_relay = false;
                if self.role == Role::Node
                    && (self.relaying_strangers.contains_key(&peer)
                        || self.relaying_strangers.len() < MAX_KNOWN_RELAYS)
                {
                    let addresses =
                        info.listen_addrs.iter().take(MAX_RELAY_ADDRESSES).cloned().collect();
                    self.relaying_strangers.insert(peer, addresses);
                }
            }
        }
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
            let others = crate::transport::other_addresses(address, &info.listen_addrs);
            if is_relay && !self.contact_relays.contains(&peer) {
                for other in &others {
                    let _ = self.events.try_send(NetEvent::PeerSeen {
                        peer,
                        address: other.clone(),
                        relay: true,
                    });
                }
            }
            // What it announced is raced with what we had when it must be reached again.
            if let Some(slot) = self.relays.get_mut(&peer) {
                for other in &others {
                    if slot.addresses.len() < MAX_RELAY_ADDRESSES && !slot.addresses.contains(other)
                    {
                        slot.addresses.push(other.clone());
                    }
                }
            }
            if let Some(b) = self.bootstrap.iter_mut().find(|b| b.peer == peer) {
                for other in &others {
                    let full = other.clone().with(Protocol::P2p(peer));
                    if b.addresses.len() < MAX_BOOTSTRAP_ADDRESSES && !b.addresses.contains(&full) {
                        b.addresses.push(full);
                    }
                }
            }
            let _ = self.events.try_send(NetEvent::PeerSeen {
                peer,
                address: address.clone(),
                relay: is_relay && !self.contact_relays.contains(&peer),
            });
        }
        if is_relay {
            self.consider_relay(peer, &info.listen_addrs);
        }
    }

    /// Connectivity came back (a reservation, a listen address, the first connection, a
    /// network change): the outbox retries at once instead of waiting out its backoff, and the
    /// mailboxes are fetched. At most once per [`MIN_RECONNECT_WAKE_INTERVAL`].
    pub(super) fn reconnected(&mut self, why: &str) {
        if self.reconnect_woken.is_some_and(|t| t.elapsed() < MIN_RECONNECT_WAKE_INTERVAL) {
            return;
        }
        self.reconnect_woken = Some(Instant::now());
        tracing::debug!(why, "connectivity is back; retrying what waits");
        self.forget_unreachable();
        let _ = self.events.try_send(NetEvent::Reconnected);
    }

    /// A bootstrap address, added to its peer's (or a new peer, while there are fewer than
    /// [`MAX_BOOTSTRAP_PEERS`]).
    pub(super) fn add_bootstrap(&mut self, peer: PeerId, address: Multiaddr) {
        match self.bootstrap.iter().position(|b| b.peer == peer) {
            Some(i) => {
                let b = &self.bootstrap[i];
                if b.addresses.len() < MAX_BOOTSTRAP_ADDRESSES && !b.addresses.contains(&address) {
                    self.add_to_routing_table(peer, without_peer(&address));
                    self.bootstrap[i].addresses.push(address);
                }
            }
            None if self.bootstrap.len() < MAX_BOOTSTRAP_PEERS => {
                self.add_to_routing_table(peer, without_peer(&address));
                self.bootstrap.push(BootstrapPeer {
                    peer,
                    addresses: vec![address],
                    failures: 0,
                    next_attempt: Instant::now(),
                });
            }
            None => {}
        }
    }

    /// An interface address came or went: a user node that listens on its LAN follows its
    /// private addresses, and the network may be another one now.
    pub(super) fn on_interface(&mut self, event: if_watch::IfEvent) {
        self.network.apply(event);
        if self.listen_lan {
            self.follow_lan();
        }
        self.check_network();
    }

    /// Listens on each private LAN address of the interfaces (a random port each, TCP), and
    /// stops listening on those that went away.
    fn follow_lan(&mut self) {
        let up = self.network.lan_addresses();
        let gone: Vec<Ipv4Addr> =
            self.lan_listeners.keys().filter(|ip| !up.contains(ip)).copied().collect();
        for ip in gone {
            if let Some(id) = self.lan_listeners.remove(&ip) {
                self.swarm.remove_listener(id);
            }
        }
        for ip in up {
            if self.lan_listeners.contains_key(&ip) || self.lan_listeners.len() >= MAX_LAN_LISTENERS
            {
                continue;
            }
            let address = Multiaddr::empty().with(Protocol::Ip4(ip)).with(Protocol::Tcp(0));
            match self.swarm.listen_on(address.clone()) {
                Ok(id) => {
                    self.lan_listeners.insert(ip, id);
                }
                Err(e) => {
                    tracing::debug!(%address, error = %one_line(&e), "cannot listen on a LAN address")
                }
            }
        }
    }

    /// Reads the routing tables; a new network forgets which peers were unreachable and wakes
    /// what waits.
    pub(super) fn check_network(&mut self) {
        self.network_checked = Instant::now();
        if let Some(id) = self.network.check() {
            tracing::info!(network = %id, "the network changed");
            self.reconnected("the network changed");
        }
    }

    /// What `doctor` shows of the transports: the network and every endpoint dialed on it.
    pub(super) fn endpoints_view(&self) -> EndpointsView {
        EndpointsView {
            network: self.network.id.to_hex(),
            records: self.endpoints.on_network(self.network.id),
            policy: self.policy,
            lan_listen: self.listen_lan,
            bridges: self.bridges.iter().copied().collect(),
        }
    }
}

/// The relay of a circuit address.
fn relay_of_circuit(address: &Multiaddr) -> Option<PeerId> {
    crate::swarm::dialer::relay_of(address)
}

/// Whether a ping failed because nothing answered: its timeout, or a stream that could not even
/// be opened in time (a dead link whose stream credit is used up reports that as `Other`).
fn ping_unanswered(failure: &ping::Failure) -> bool {
    match failure {
        ping::Failure::Timeout => true,
        ping::Failure::Other { error } => error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
        _ => false,
    }
}
