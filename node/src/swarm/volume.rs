//! The swarm task against a censor that freezes a connection once it has carried some
//! kilobytes toward us (T10: Russia's TSPU drops everything a foreign hosting address sends on a
//! connection past about 16 KB, with no reset).
//!
//! Two rules, both on the bytes each connection has received (`transport::meter`):
//! - **Stall**: a connection that has answered a ping receives something at least every
//!   [`PING_INTERVAL`] (our pings' answers, the peer's pings). One that has received nothing for
//!   [`STALL_TIMEOUT`] (or [`STALL_RTT_FACTOR`] times its last ping's round trip, if longer: a
//!   slow link queues the answers behind data) is closed, and what it carried goes over another.
//!   libp2p's ping alone would take two missed pings, 25 to 30 s.
//! - **Byte budget**: a stall after between [`MIN_FREEZE_BYTES`] and [`MAX_FREEZE_BYTES`] looks
//!   like a volume freeze, so from then on every connection we dial into the same address group
//!   (a /24, `dht::address_group`) is replaced once it has received three quarters of that
//!   count, before it freezes too, and every dial there comes from a new port (a dial from the
//!   port of a frozen connection is the same flow to the censor: QUIC reuses one socket). A relay's connection is replaced make-before-break: a second connection first,
//!   then the old one is closed and the reservation is made again on the new one (libp2p's relay
//!   client cannot move a reservation). Nothing is rotated on a network where no connection ever
//!   froze, so the default costs nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use crate::swarm::behaviour::PING_INTERVAL;
use crate::swarm::dht::address_group;
use crate::swarm::endpoints::{TransportKind, Verdict};
use crate::swarm::event_loop::{EventLoop, MAX_KNOWN_RELAYS};
use crate::transport::meter::{Group, Meter, Meters};

/// How long a connection that answers pings may receive nothing before it is taken for stalled:
/// a ping's interval and some slack for its answer.
pub const STALL_TIMEOUT: Duration = stall_timeout(PING_INTERVAL);

/// The slack a ping's answer has beyond the interval.
pub const STALL_SLACK: Duration = Duration::from_secs(3);

/// The stall timeout of a node that pings every `ping_interval` (`Config::ping_interval`).
pub const fn stall_timeout(ping_interval: Duration) -> Duration {
    ping_interval.saturating_add(STALL_SLACK)
}

/// On a slow link the stall timeout is at least this many of the connection's last ping round
/// trips.
pub const STALL_RTT_FACTOR: u32 = 4;

/// A stall of a connection that received less than this says nothing about volume. Below it a
/// budget would be under what setting up a connection costs (the relay's identify, the
/// reservation, a contact's circuit), and every connection would be replaced as soon as it is
/// up.
pub const MIN_FREEZE_BYTES: u64 = 4 * 1024;

/// A stall of a connection that received more than this is not taken for a volume freeze (the
/// known censors freeze at about 16 KB on the wire).
pub const MAX_FREEZE_BYTES: u64 = 64 * 1024;

/// The least a connection may receive before it is replaced, however early one froze.
pub const MIN_BYTE_BUDGET: u64 = 3 * 1024;

/// Address groups with a byte budget; past this the smallest budget is kept for all new ones.
pub const MAX_FROZEN_GROUPS: usize = 32;

/// The least a connection lives before it is replaced for its byte budget, so that a budget
/// below what setting up a connection costs does not replace connections in a loop (and spend
/// the relay's reservation rate limit).
pub const MIN_ROTATION_AGE: Duration = Duration::from_secs(3);

/// A resumable tunnel is taken for stalled after this many times the stall timeout: its own
/// watch (`transport::session::CARRIER_STALL`, from the moment our data waits for an
/// acknowledgement) must have its turn first.
pub const RESUMABLE_STALL_FACTOR: u32 = 2;

/// How long a replacement connection to a relay may take before the next tick tries again.
pub const ROTATION_TIMEOUT: Duration = Duration::from_secs(10);

/// What the swarm task knows of each connection's progress.
pub(super) struct Volume {
    /// [`STALL_TIMEOUT`], or what the node's own ping interval makes of it.
    stall_timeout: Duration,
    /// The counters the transport makes, claimed here per connection.
    pub(super) meters: Meters,
    /// Direct connections with a counter; bounded by the connection limits.
    watched: HashMap<ConnectionId, Progress>,
    /// Per address group and transport, the bytes a connection there may receive before it is
    /// replaced; at most [`MAX_FROZEN_GROUPS`]. Per transport, because each is counted its own
    /// way: TCP and the stealth transport on the socket, QUIC above the multiplexer.
    budgets: HashMap<(Group, TransportKind), u64>,
    /// Relays whose connection is being replaced: the old connection, and since when; at most
    /// one per known relay ([`MAX_KNOWN_RELAYS`]).
    rotating: HashMap<PeerId, (ConnectionId, Instant)>,
}

impl Volume {
    /// Nothing watched yet, for a node that pings every `ping_interval`.
    pub(super) fn new(ping_interval: Duration) -> Self {
        Self {
            stall_timeout: stall_timeout(ping_interval),
            meters: Meters::default(),
            watched: HashMap::new(),
            budgets: HashMap::new(),
            rotating: HashMap::new(),
        }
    }
}

struct Progress {
    meter: Meter,
    group: Group,
    kind: TransportKind,
    dialed: bool,
    opened: Instant,
    /// The count at the last tick, and when it last grew.
    seen: u64,
    since: Instant,
    /// Whether the peer answers our pings (a connection of a peer without the ping protocol
    /// may rightly stay silent), and the last round trip.
    answered: bool,
    rtt: Duration,
    /// Whether it is a resumable tunnel, which replaces its own carriers under the budget and
    /// after a stall (`transport::session`).
    resumable: bool,
}

impl Progress {
    fn stall_timeout(&self, base: Duration) -> Duration {
        let timeout = base.max(self.rtt * STALL_RTT_FACTOR);
        // A resumable tunnel finds a frozen carrier itself and opens another; the connection
        // is closed only if that fails too.
        if self.resumable { timeout * RESUMABLE_STALL_FACTOR } else { timeout }
    }
}

/// The byte budget a freeze after `received` bytes sets, or `None` if it does not look like a
/// volume freeze.
pub fn budget_after_freeze(received: u64) -> Option<u64> {
    (MIN_FREEZE_BYTES..=MAX_FREEZE_BYTES)
        .contains(&received)
        .then_some((received / 4 * 3).max(MIN_BYTE_BUDGET))
}

/// The budget of a connection into `group` over `kind`: the one a freeze over the same
/// transport set, else the smallest of the group's until one does.
fn budget_of(
    budgets: &HashMap<(Group, TransportKind), u64>,
    group: Group,
    kind: TransportKind,
) -> Option<u64> {
    budgets
        .get(&(group, kind))
        .copied()
        .or_else(|| budgets.iter().filter(|((g, _), _)| *g == group).map(|(_, b)| *b).min())
}

/// `ranked` with its stealth addresses into the `frozen` groups first and its QUIC addresses
/// there last, the order otherwise kept (`EventLoop::volume_order`).
pub fn freeze_order(frozen: &[Group], ranked: &mut [(Multiaddr, Verdict)]) {
    if frozen.is_empty() {
        return;
    }
    ranked.sort_by_key(|(address, _)| {
        if !frozen.contains(&address_group(address)) {
            return 1;
        }
        match TransportKind::of(address) {
            TransportKind::Stealth => 0,
            TransportKind::Quic => 2,
            _ => 1,
        }
    });
}

impl EventLoop {
    /// Watches a new direct connection, and ends the rotation it may finish.
    pub(super) fn volume_connected(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        endpoint: &ConnectedPoint,
    ) {
        if endpoint.is_relayed() {
            return;
        }
        if let Some(meter) = self.volume.meters.claim(peer, endpoint) {
            let address = crate::swarm::connection_address(endpoint);
            let kind = TransportKind::of(&address);
            // A session we dialed is marked by the transport; one a listener accepted is any
            // accepted stealth connection (one from a dialer without sessions only waits longer
            // for its close).
            let resumable = self.volume.meters.is_resumable(&meter)
                || (!endpoint.is_dialer() && kind == TransportKind::Stealth);
            self.volume.watched.insert(
                connection,
                Progress {
                    meter,
                    group: address_group(&address),
                    kind,
                    dialed: endpoint.is_dialer(),
                    opened: Instant::now(),
                    seen: 0,
                    since: Instant::now(),
                    answered: false,
                    rtt: Duration::ZERO,
                    resumable,
                },
            );
        }
        if let Some((old, _)) = self.volume.rotating.get(&peer).copied()
            && old != connection
        {
            // The new connection is up: the reservation moves to it when the old one is gone
            // (`volume_closed`).
            self.volume.rotating.remove(&peer);
            tracing::debug!(relay = %peer, "replacement connection up; closing the old one");
            self.close(old);
        }
    }

    /// Forgets a closed connection (`was_closing`: we had asked for it to close); a relay that
    /// lost the connection its reservation was on reserves again at once, on the connection
    /// that replaced it.
    pub(super) fn volume_closed(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        was_closing: bool,
    ) {
        let was_closing = self.volume.watched.remove(&connection).is_some() && was_closing;
        self.volume.rotating.retain(|_, (old, _)| *old != connection);
        if was_closing && self.relays.contains_key(&peer) {
            self.reserve();
        }
    }

    /// Notes a ping answer on a connection.
    pub(super) fn volume_pinged(&mut self, connection: ConnectionId, rtt: Duration) {
        if let Some(p) = self.volume.watched.get_mut(&connection) {
            p.answered = true;
            p.rtt = rtt;
        }
    }

    /// Once a tick: closes stalled connections and replaces those past their group's budget.
    pub(super) fn watch_volume(&mut self) {
        let now = Instant::now();
        let mut stalled = Vec::new();
        let mut spent = Vec::new();
        let base = self.volume.stall_timeout;
        for (id, p) in self.volume.watched.iter_mut() {
            if self.connections.get(id).is_some_and(|c| c.closing) {
                continue;
            }
            let count = p.meter.load(Ordering::Relaxed);
            if count != p.seen {
                p.seen = count;
                p.since = now;
            } else if p.answered && now.duration_since(p.since) >= p.stall_timeout(base) {
                stalled.push((*id, count, now.duration_since(p.since), p.dialed, p.resumable));
                continue;
            }
            if p.dialed
                && !p.resumable
                && now.duration_since(p.opened) >= MIN_ROTATION_AGE
                && budget_of(&self.volume.budgets, p.group, p.kind).is_some_and(|b| count >= b)
            {
                spent.push((*id, count));
            }
        }
        for (id, count, silent, dialed, resumable) in stalled {
            let Some(conn) = self.connections.get(&id).cloned() else { continue };
            tracing::warn!(
                peer = %conn.peer,
                address = %conn.address,
                received = count,
                silent_s = silent.as_secs(),
                "connection stalled: nothing received while the peer answers pings; closing it"
            );
            // A session's count runs over all its carriers: it says nothing of a freeze.
            let volume = if resumable { None } else { budget_after_freeze(count) };
            if let Some(budget) = volume {
                self.set_budget(&conn.address, count, budget);
            }
            self.close(id);
            if dialed && volume.is_none() {
                // A stall that is not the volume's is the endpoint's (a censor that lets a flow
                // start and then drops it): the endpoint goes behind the peer's others until it
                // works again, so the next dial moves to another transport or address. After a
                // volume freeze the endpoint is as good as any, and its budget keeps the next
                // connection there from freezing.
                self.note_outcome(conn.peer, &conn.address, false);
            }
        }
        self.volume.rotating.retain(|_, (_, since)| now.duration_since(*since) < ROTATION_TIMEOUT);
        for (id, count) in spent {
            let Some(conn) = self.connections.get(&id).cloned() else { continue };
            // A replacement goes over TCP or the stealth transport where the relay has one, for
            // the reason `volume_order` gives; over the address in use when it is one of them,
            // since that one is known to work from here.
            let relay_address =
                self.relays.get(&conn.peer).filter(|s| s.listener.is_some()).map(|s| {
                    let counted = |a: &&Multiaddr| TransportKind::of(a) != TransportKind::Quic;
                    if counted(&&s.address) {
                        return s.address.clone();
                    }
                    s.addresses.iter().find(counted).cloned().unwrap_or_else(|| s.address.clone())
                });
            match relay_address {
                Some(address) => {
                    if self.volume.rotating.contains_key(&conn.peer)
                        || self.volume.rotating.len() >= MAX_KNOWN_RELAYS
                    {
                        continue;
                    }
                    tracing::debug!(relay = %conn.peer, received = count, "byte budget spent; replacing the relay connection");
                    let dial = DialOpts::peer_id(conn.peer)
                        .condition(PeerCondition::Always)
                        .addresses(vec![address])
                        .allocate_new_port()
                        .build();
                    if let Err(e) = self.swarm.dial(dial) {
                        tracing::debug!(relay = %conn.peer, error = %crate::swarm::one_line(&e), "cannot dial a replacement; closing the old connection");
                        self.close(id);
                    } else {
                        self.volume.rotating.insert(conn.peer, (id, now));
                    }
                }
                None => {
                    tracing::debug!(peer = %conn.peer, received = count, "byte budget spent; closing the connection");
                    self.close(id);
                }
            }
        }
    }

    /// Closes a connection whose ping went unanswered, and takes its count for a volume freeze
    /// like a stall's; returns whether it closed it.
    pub(super) fn volume_unanswered(&mut self, connection: ConnectionId) -> bool {
        // A session's pings go unanswered while it moves to a new carrier (its listener's as
        // much as its dialer's); it ends itself if it cannot (`transport::session`), and its
        // stall timeout is the backstop.
        if self.volume.watched.get(&connection).is_some_and(|p| p.resumable) {
            return false;
        }
        let received =
            self.volume.watched.get(&connection).map(|p| p.meter.load(Ordering::Relaxed));
        let address = self.connections.get(&connection).map(|c| c.address.clone());
        if let (Some(received), Some(address)) = (received, address)
            && let Some(budget) = budget_after_freeze(received)
        {
            self.set_budget(&address, received, budget);
        }
        self.close(connection);
        true
    }

    /// Into address groups where a connection froze, puts stealth candidates first and QUIC
    /// ones last, keeping the order otherwise. A stealth connection is a resumable tunnel
    /// (`transport::session`): its carriers are replaced under the budget and the libp2p
    /// connection, its reservation and circuits stay. A QUIC connection is counted only above
    /// its multiplexer (`transport::meter`), so its budget is the least reliable: it kept
    /// freezing before it, and each freeze cost a stall.
    pub(super) fn volume_order(&self, ranked: &mut [(Multiaddr, Verdict)]) {
        let frozen: Vec<Group> = self.volume.budgets.keys().map(|(g, _)| *g).collect();
        freeze_order(&frozen, ranked);
    }

    fn set_budget(&mut self, address: &Multiaddr, received: u64, budget: u64) {
        let key = (address_group(address), TransportKind::of(address));
        let budgets = &mut self.volume.budgets;
        let budget = budgets.get(&key).map_or(budget, |b| budget.min(*b));
        if budgets.len() >= MAX_FROZEN_GROUPS && !budgets.contains_key(&key) {
            return;
        }
        self.volume.meters.use_fresh_ports(key.0);
        // A tunnel's carrier is counted on its socket like a dialed TCP or stealth connection,
        // so their freezes set its budget too (QUIC's count is another measure).
        if key.1 != TransportKind::Quic {
            self.volume.meters.set_carrier_budget(key.0, budget);
        }
        if budgets.insert(key, budget) != Some(budget) {
            tracing::warn!(
                %address,
                received,
                budget,
                "a connection froze after a few kilobytes (a censor's volume limit?): connections to \
                 this address group are replaced before they receive as much"
            );
        }
    }
}
