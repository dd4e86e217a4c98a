//! The swarm task's racing dialer: every address known for a peer (its transports and ports,
//! the circuits through each address of its relays), ranked by what worked on this network
//! (`endpoints`), dialed Happy-Eyeballs style, one address after the other with a short head
//! start each ([`RACE_STAGGER`]; longer, [`PROVEN_HEAD_START`], for an address that worked
//! last time), a failed one making way for the next at once. The first connection wins; what
//! waited for it (deliveries, mailbox requests, a relay reservation) goes out on it, and the
//! other dials still under way are closed when they connect.
//!
//! A race that every address lost makes the peer *unreachable* for [`MIN_REDIAL_INTERVAL`]: a
//! delivery in that time fails at once instead of dialing again, so a node cut off from the
//! world dials each peer at most once per that interval, however much it has to send. An
//! address the lost race did not try (one the peer's presence record just named) is dialed at
//! once all the same: it is news, not a retry.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use kolokol_protocol::mailbox::Response;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::Policy;
use crate::swarm::endpoints::{TransportKind, Verdict, endpoint_of};
use crate::swarm::event_loop::{
    BOOTSTRAP_UNREACHABLE, EventLoop, MailboxVersion, PendingDelivery, backoff,
};
use crate::swarm::{
    DeliveryFailure, Link, MailboxFailure, NetEvent, brief_dial_error, is_relayed, one_line,
    without_peer,
};
use crate::wire::mailbox::MailboxRequest;

pub(super) mod failure;

pub(crate) use failure::{Reason, short_peer};

/// The head start each address of a race gets before the next one is dialed too, unless it
/// fails sooner (RFC 8305 suggests 250 ms for a TCP handshake; a libp2p connection needs a
/// few round trips more: TLS for stealth, Noise).
pub const RACE_STAGGER: Duration = Duration::from_millis(500);

/// The head start of an address that worked the last time on this network: it is expected to
/// work again, so the others wait longer before they are dialed (and reveal themselves to a
/// censor that watches for them).
pub const PROVEN_HEAD_START: Duration = Duration::from_secs(2);

/// The most addresses one race dials.
pub const MAX_RACE_CANDIDATES: usize = 16;

/// Addresses remembered of a lost race, to tell a new one from a retry; a peer with more is
/// never dialed again within [`MIN_REDIAL_INTERVAL`].
pub(super) const MAX_CONSIDERED: usize = 64;

/// Races at once; a dial beyond them fails at once as busy.
pub const MAX_RACES: usize = 256;

/// How long after a race that every address lost the peer is not dialed again.
pub const MIN_REDIAL_INTERVAL: Duration = Duration::from_secs(10);

/// Peers remembered as unreachable; the map is emptied when it reaches this.
pub const MAX_UNREACHABLE: usize = 1024;

type DeliveryReply = oneshot::Sender<std::result::Result<(), DeliveryFailure>>;
type MailboxReply = oneshot::Sender<std::result::Result<Response, MailboxFailure>>;

/// What waits for a race to connect.
pub(super) enum Waiting {
    /// An envelope to deliver once connected.
    Delivery { envelope: Vec<u8>, timeout: Duration, reply: DeliveryReply },
    /// A mailbox request to send once connected.
    Mailbox { request: MailboxRequest, reply: MailboxReply },
}

/// One race to connect to a peer.
pub(super) struct Race {
    /// Addresses not dialed yet, best first.
    queue: VecDeque<(Multiaddr, Verdict)>,
    /// Dials under way, and the address of each.
    dialing: HashMap<ConnectionId, Multiaddr>,
    /// When the next address is dialed if none has connected or failed by then.
    next_start: Instant,
    /// What waits for the connection.
    pub(super) waiting: Vec<Waiting>,
    /// Why addresses failed, as libp2p said it, for the debug log when all have.
    errors: Vec<String>,
    /// Why addresses failed, for the user: whether each was a circuit, and its reason.
    reasons: Vec<(bool, Reason)>,
    /// The addresses known for the peer when the race started.
    considered: Considered,
}

/// A peer whose last race every address lost.
pub(super) struct Unreachable {
    at: Instant,
    why: String,
    /// The addresses known for the peer when that race started.
    considered: Considered,
}

/// The addresses a race had to choose from; at most [`MAX_CONSIDERED`].
#[derive(Clone, Default)]
struct Considered {
    addresses: Vec<Multiaddr>,
    /// Whether every address fit: only then can an address be told to be new.
    complete: bool,
}

impl Considered {
    fn of(addresses: &[Multiaddr]) -> Self {
        Self::default().merged(addresses)
    }

    fn merged(&self, more: &[Multiaddr]) -> Self {
        let mut addresses = self.addresses.clone();
        let mut complete = self.complete || self.addresses.is_empty();
        for a in more {
            if addresses.contains(a) {
                continue;
            }
            if addresses.len() >= MAX_CONSIDERED {
                complete = false;
                break;
            }
            addresses.push(a.clone());
        }
        Self { addresses, complete }
    }
}

/// Where a peer stands for a new dial.
pub(super) enum Reach {
    /// Connected already.
    Connected,
    /// A race is under way (started now or before).
    Racing,
    /// Not dialed now, with the reason.
    Unreachable(String),
}

/// The relay a circuit address goes through, if it is one.
pub(super) fn relay_of(address: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for p in address.iter() {
        match p {
            Protocol::P2p(peer) => relay = Some(peer),
            Protocol::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

/// Whether `policy` lets the node dial `address`: with the stealth policy only addresses whose
/// endpoint is a stealth address.
pub(super) fn allowed(policy: Policy, address: &Multiaddr) -> bool {
    policy == Policy::Any || TransportKind::of(&endpoint_of(address)) == TransportKind::Stealth
}

impl EventLoop {
    /// Every address worth dialing `peer` at, without ranking: those it announced on the local
    /// network, `given`, what the node knows of it as a relay or bootstrap peer, and the
    /// endpoints that worked for it; each circuit also through the other known addresses of
    /// its relay. Without `/p2p/<peer>`, which the dial adds.
    fn candidates(&self, peer: &PeerId, given: Vec<Multiaddr>) -> Vec<Multiaddr> {
        let mut all: Vec<Multiaddr> = self.lan.get(peer).cloned().unwrap_or_default();
        all.extend(given.iter().map(without_peer));
        all.extend(self.known_addresses(peer));
        let mut out: Vec<Multiaddr> = Vec::new();
        for address in all {
            if let Some(relay) = relay_of(&address) {
                // A circuit through our own node (a contact's reservation on our relay for
                // contacts) leads back to us: while it is valid the contact is connected to us
                // anyway, and a dial of it cannot work.
                if relay == *self.swarm.local_peer_id() {
                    continue;
                }
                // The same circuit through each address of its relay that the node knows.
                let relay_addresses = self.known_addresses(&relay);
                let through = endpoint_of(&address);
                for base in std::iter::once(through).chain(relay_addresses) {
                    let circuit = base.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
                    if !out.contains(&circuit) {
                        out.push(circuit);
                    }
                }
            } else if !out.contains(&address) {
                out.push(address);
            }
        }
        out.retain(|a| allowed(self.policy, a));
        out
    }

    /// The direct addresses the node knows for `peer` besides those it is given: as a relay,
    /// as a bootstrap peer, and the endpoints that worked for it on this network.
    pub(super) fn known_addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        if let Some(slot) = self.relays.get(peer) {
            out.extend(slot.addresses.iter().cloned());
        }
        if let Some(b) = self.bootstrap.iter().find(|b| b.peer == *peer) {
            out.extend(b.addresses.iter().map(without_peer));
        }
        out.extend(self.endpoints.working_addresses(self.network.id, peer));
        let mut unique = Vec::with_capacity(out.len());
        for a in out {
            if !unique.contains(&a) {
                unique.push(a);
            }
        }
        unique
    }

    /// Makes sure the node is connected to `peer` or racing to, dialing `given` and every
    /// other address it knows for the peer.
    pub(super) fn reach(&mut self, peer: PeerId, given: Vec<Multiaddr>) -> Reach {
        if self.swarm.is_connected(&peer) {
            return Reach::Connected;
        }
        if self.races.contains_key(&peer) {
            return Reach::Racing;
        }
        let candidates = self.candidates(&peer, given);
        let mut considered = Considered::of(&candidates);
        let mut to_dial = candidates;
        if let Some(u) = self.unreachable.get(&peer)
            && u.at.elapsed() < MIN_REDIAL_INTERVAL
        {
            // Within the interval only news is dialed: addresses the lost race did not
            // consider, and only if it considered every address it had (so that a long list
            // cannot look new each time).
            let new: Vec<Multiaddr> = to_dial
                .into_iter()
                .filter(|a| u.considered.complete && !u.considered.addresses.contains(a))
                .collect();
            if new.is_empty() {
                let wait = MIN_REDIAL_INTERVAL.saturating_sub(u.at.elapsed()).as_secs().max(1);
                return Reach::Unreachable(format!(
                    "{} (tried {} s ago; trying again in {wait} s)",
                    u.why,
                    u.at.elapsed().as_secs()
                ));
            }
            considered = u.considered.merged(&new);
            to_dial = new;
        }
        if self.races.len() >= MAX_RACES {
            return Reach::Unreachable("too many dials in flight".into());
        }
        let mut ranked = self.endpoints.rank(self.network.id, to_dial, self.clock.now_ms());
        self.volume_order(&mut ranked);
        ranked.truncate(MAX_RACE_CANDIDATES);
        if ranked.is_empty() {
            return Reach::Unreachable(Reason::NoAddress.text().to_owned());
        }
        tracing::debug!(%peer, candidates = ranked.len(), first = %ranked[0].0, "racing to connect");
        self.races.insert(
            peer,
            Race {
                queue: ranked.into(),
                dialing: HashMap::new(),
                next_start: Instant::now(),
                waiting: Vec::new(),
                errors: Vec::new(),
                reasons: Vec::new(),
                considered,
            },
        );
        self.step_race(peer);
        Reach::Racing
    }

    /// Dials the next address of `peer`'s race if its time has come, and ends the race when
    /// nothing is left to dial and nothing is under way.
    fn step_race(&mut self, peer: PeerId) {
        let now = Instant::now();
        let mut started = false;
        loop {
            let Some(race) = self.races.get_mut(&peer) else { return };
            if race.next_start > now && !race.dialing.is_empty() {
                break;
            }
            let Some((address, verdict)) = race.queue.pop_front() else { break };
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![address.clone()])
                .condition(PeerCondition::Always)
                .build();
            let id = opts.connection_id();
            race.next_start =
                now + if verdict == Verdict::Works { PROVEN_HEAD_START } else { RACE_STAGGER };
            match self.swarm.dial(opts) {
                Ok(()) => {
                    started = true;
                    tracing::debug!(%peer, %address, ?verdict, "dialing");
                    if let Some(race) = self.races.get_mut(&peer) {
                        race.dialing.insert(id, address);
                    }
                }
                Err(e) => {
                    tracing::debug!(%peer, %address, error = %one_line(&e), "cannot dial");
                    if let Some(race) = self.races.get_mut(&peer) {
                        race.errors.push(format!("{address}: {}", one_line(&e)));
                        race.reasons.push((is_relayed(&address), failure::of_dial(&e)));
                    }
                }
            }
        }
        let exhausted =
            self.races.get(&peer).is_some_and(|r| r.queue.is_empty() && r.dialing.is_empty());
        if exhausted {
            self.finish_race(peer, false);
        }
        // The dials under way are part of the network state.
        if started || exhausted {
            self.publish_status();
        }
    }

    /// Steps every race whose next dial is due.
    pub(super) fn step_races(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .races
            .iter()
            .filter(|(_, r)| r.next_start <= now && !r.queue.is_empty())
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.step_race(peer);
        }
    }

    /// Dials under way in every race.
    pub(super) fn dials_in_flight(&self) -> usize {
        self.races.values().map(|r| r.dialing.len()).sum()
    }

    /// When the next race step is due, if any race waits for one.
    pub(super) fn next_race_step(&self) -> Option<Instant> {
        self.races.values().filter(|r| !r.queue.is_empty()).map(|r| r.next_start).min()
    }

    /// Ends `peer`'s race: what waited goes out (connected) or fails with what the dials said.
    fn finish_race(&mut self, peer: PeerId, connected: bool) {
        let Some(race) = self.races.remove(&peer) else { return };
        // Dials still under way lose; if they connect, they are closed.
        for (id, address) in race.dialing {
            self.losers.insert(id, (peer, address));
        }
        if connected {
            self.unreachable.remove(&peer);
            for waiting in race.waiting {
                match waiting {
                    Waiting::Delivery { envelope, timeout, reply } => {
                        self.send_delivery(peer, envelope, timeout, reply)
                    }
                    Waiting::Mailbox { request, reply } => self.send_mailbox(peer, request, reply),
                }
            }
            return;
        }
        // The user hears what the addresses ran into in a few words; the log keeps libp2p's.
        let why = failure::summary(&race.reasons);
        tracing::debug!(%peer, %why, errors = %race.errors.join("; "), "could not connect");
        if self.unreachable.len() >= MAX_UNREACHABLE {
            self.unreachable.clear();
        }
        self.unreachable.insert(
            peer,
            Unreachable { at: Instant::now(), why: why.clone(), considered: race.considered },
        );
        for waiting in race.waiting {
            let reason = format!("cannot reach {}: {why}", short_peer(&peer));
            match waiting {
                Waiting::Delivery { reply, .. } => {
                    let _ = reply.send(Err(DeliveryFailure::temporary(reason)));
                }
                Waiting::Mailbox { reply, .. } => {
                    let _ =
                        reply.send(Err(MailboxFailure::Unreachable { peer, reason: why.clone() }));
                }
            }
        }
        self.race_lost(peer);
    }

    /// A race to a relay or a bootstrap peer was lost: back off before the next.
    fn race_lost(&mut self, peer: PeerId) {
        let now = Instant::now();
        if let Some(slot) = self.relays.get_mut(&peer) {
            slot.failures += 1;
            slot.next_attempt = now + backoff(slot.failures);
        }
        if let Some(b) = self.bootstrap.iter_mut().find(|b| b.peer == peer) {
            b.failures += 1;
            b.next_attempt = now + backoff(b.failures);
            tracing::debug!(%peer, failures = b.failures, "cannot reach a bootstrap peer; will retry");
        }
    }

    /// Records the outcome of a dial of `address` to `peer` in the endpoint book, and has the
    /// store keep it. A circuit's failure is not held against its relay's endpoint (the peer
    /// behind it may simply be offline); its success counts for it.
    pub(super) fn note_outcome(&mut self, peer: PeerId, address: &Multiaddr, success: bool) {
        let owner = match relay_of(address) {
            Some(relay) if success => relay,
            Some(_) => return,
            None => peer,
        };
        let record =
            self.endpoints.record(self.network.id, owner, address, success, self.clock.now_ms());
        // A full queue loses only the persistence of this outcome; the book has it.
        let _ = self.events.try_send(NetEvent::Endpoint(record));
    }

    /// A connection to `peer` was established: the race to it, if any, is won, whoever made
    /// the connection.
    pub(super) fn race_connected(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some((_, address)) = self.losers.remove(&id) {
            self.note_outcome(peer, &address, true);
            // A direct connection that lost to a relayed one is the better one: keep it, and
            // the relayed one is closed as a duplicate. A relayed one is closed when a direct
            // one is open. Otherwise the race was lost to a connection as good. When it was
            // the peer's own dial to us at the same moment, both ends see the other's
            // connection win and their own come late, and if each closed its own, both would
            // go with whatever was sent over them: only the end with the higher peer id closes
            // its own then, so the lower one's dial survives whatever each end saw first. When
            // another of our own dials is open, ours is closed whatever the peer ids: the peer
            // never closes a connection we dialed for coming late, so the other one stays
            // (unless the peer refuses it, which we learn only when it goes).
            // Kept, such late dials piled up (seven relayed connections to one peer in the
            // lab's T10, each taking its share of the requests, one of them silent).
            // A connection already closing (as a duplicate, as stalled) is not one that stays.
            let others = || {
                self.connections
                    .iter()
                    .filter(move |(c, conn)| **c != id && conn.peer == peer && !conn.closing)
            };
            let direct_open = others().any(|(_, conn)| conn.via != Link::Relayed);
            let own_open = others().any(|(_, conn)| conn.dialed);
            let relayed = is_relayed(&address);
            let higher = self.swarm.local_peer_id() > &peer;
            if (relayed && direct_open) || ((relayed || direct_open) && (higher || own_open)) {
                self.duplicates_closed += 1;
                self.close(id);
            }
            return;
        }
        if !self.races.contains_key(&peer) {
            return;
        }
        if let Some(address) = self.races.get_mut(&peer).and_then(|r| r.dialing.remove(&id)) {
            tracing::debug!(%peer, %address, "connected");
            self.note_outcome(peer, &address, true);
        }
        self.finish_race(peer, true);
    }

    /// A dial failed; if it was a race's, the next address goes at once.
    pub(super) fn race_dial_failed(
        &mut self,
        peer: Option<PeerId>,
        id: ConnectionId,
        error: &DialError,
    ) {
        // Only what says something about the path counts against it: a refusal by our own
        // limits or by the cool-down (which counted the silence once already), or an aborted
        // dial, does not.
        let counts = match error {
            DialError::Transport(errors) => {
                !errors.iter().all(|(a, _)| self.cooldown.refused_recently(a))
            }
            DialError::WrongPeerId { .. } => true,
            _ => false,
        };
        if let Some((peer, address)) = self.losers.remove(&id) {
            if counts {
                self.note_outcome(peer, &address, false);
            }
            return;
        }
        let Some(peer) = peer else { return };
        // A bootstrap peer that cannot be reached is worth a warning, once for as long as it
        // fails the same way (`Repeats`), not one per dial.
        if self.bootstrap.iter().any(|b| b.peer == peer) {
            let error = brief_dial_error(error);
            if self.repeats.note(
                BOOTSTRAP_UNREACHABLE,
                peer.to_string(),
                error.clone(),
                Instant::now(),
            ) {
                tracing::warn!(%peer, %error, "{BOOTSTRAP_UNREACHABLE}");
            }
        }
        let Some(address) = self.races.get_mut(&peer).and_then(|r| r.dialing.remove(&id)) else {
            return;
        };
        if counts {
            self.note_outcome(peer, &address, false);
        }
        tracing::debug!(%peer, %address, error = %one_line(error), "dial failed");
        if let Some(race) = self.races.get_mut(&peer) {
            race.errors.push(format!("{address}: {}", one_line(error)));
            race.reasons.push((is_relayed(&address), failure::of_dial(error)));
            race.next_start = Instant::now();
        }
        self.step_race(peer);
    }

    /// Sends a delivery over the connection to `peer`.
    pub(super) fn send_delivery(
        &mut self,
        peer: PeerId,
        envelope: Vec<u8>,
        timeout: Duration,
        reply: DeliveryReply,
    ) {
        let id = self.swarm.behaviour_mut().delivery.send_request(&peer, envelope);
        self.pending.insert(id, PendingDelivery { reply, deadline: Instant::now() + timeout });
    }

    /// Sends a mailbox request over the connection to `peer`.
    pub(super) fn send_mailbox(
        &mut self,
        peer: PeerId,
        request: MailboxRequest,
        reply: MailboxReply,
    ) {
        // Each version is its own behaviour, with its own request ids.
        let id = match request {
            MailboxRequest::V1(request) => (
                MailboxVersion::V1,
                self.swarm.behaviour_mut().mailbox.send_request(&peer, request),
            ),
            MailboxRequest::V2(request) => (
                MailboxVersion::V2,
                self.swarm.behaviour_mut().mailbox_v2.send_request(&peer, request),
            ),
        };
        self.mailbox_pending.insert(id, reply);
    }

    /// Queues `waiting` on `peer`'s race; returns it if there is no race.
    pub(super) fn queue_for_race(&mut self, peer: PeerId, waiting: Waiting) -> Option<Waiting> {
        match self.races.get_mut(&peer) {
            Some(race) => {
                race.waiting.push(waiting);
                None
            }
            None => Some(waiting),
        }
    }

    /// Deliveries and mailbox requests waiting for races, in all.
    pub(super) fn waiting_count(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for w in self.races.values().flat_map(|r| &r.waiting) {
            match w {
                Waiting::Delivery { .. } => counts.0 += 1,
                Waiting::Mailbox { .. } => counts.1 += 1,
            }
        }
        counts
    }

    /// Deliveries whose time is up fail: the recipient's node, connected, did not answer in
    /// the time the envelope's size allows (the outbox sets it from the goodput it measured).
    pub(super) fn expire_deliveries(&mut self) {
        let now = Instant::now();
        let expired: Vec<_> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                let _ = p.reply.send(Err(DeliveryFailure {
                    reason: "the recipient's node did not answer in time".into(),
                    permanent: false,
                    refused: false,
                    slow: true,
                    interrupted: false,
                }));
            }
        }
    }

    /// Forgets which peers could not be reached: the network changed, or came back.
    pub(super) fn forget_unreachable(&mut self) {
        self.unreachable.clear();
    }
}

#[cfg(test)]
mod tests;
