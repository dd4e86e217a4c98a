//! The swarm task as the auto-relay libp2p lacks: a user node holds reservations on up to
//! [`TARGET_RESERVATIONS`] relays, found through identify and the DHT, and on up to
//! [`TARGET_CONTACT_RESERVATIONS`] of its contacts' nodes that relay for their contacts, and
//! re-listens with backoff when one is lost; bootstrap peers are redialled with backoff while
//! not connected.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, kad};
use tokio::time::Instant;

use crate::config::Role;
use crate::swarm::dialer::Reach;
use crate::swarm::event_loop::{
    ADDRESS_SETTLE, EventLoop, MAX_KNOWN_RELAYS, MAX_RELAY_ADDRESSES, RELAY_DISCOVERY_MAX_INTERVAL,
    RelaySlot, TARGET_CONTACT_RESERVATIONS, TARGET_RESERVATIONS, backoff,
};
use crate::swarm::network::NETWORK_CHECK_INTERVAL;
use crate::swarm::{NetEvent, RELAYS_KEY, is_relayed, one_line, without_peer};

impl EventLoop {
    /// Asks for reservations until [`TARGET_RESERVATIONS`] listeners on community relays and
    /// [`TARGET_CONTACT_RESERVATIONS`] on contacts' nodes (none while the node has a direct
    /// external address of its own) are up (or racing to be): through the
    /// connection to a relay when there is one, else after a race to every address known for
    /// it. Relays connected now go first: they answered a moment ago.
    pub(super) fn reserve(&mut self) {
        if self.role != Role::Node {
            return;
        }
        self.reserve_among(false, TARGET_RESERVATIONS);
        // A node others reach directly needs no contact to relay for it.
        let public = self.swarm.external_addresses().any(|a| !is_relayed(a));
        self.reserve_among(true, if public { 0 } else { TARGET_CONTACT_RESERVATIONS });
    }

    /// Our addresses or reservations changed: a new one is announced at once, a change that
    /// only takes some away once they have settled (`event_loop::ADDRESS_SETTLE`), so that a
    /// reservation lost and made again on the same relay announces nothing.
    pub(super) fn announce_change(&mut self, now: Instant) {
        let held = self.held_announcement();
        if adds_to(&self.announced, &held) {
            self.announce(held);
        } else {
            self.announce_at = Some(now + ADDRESS_SETTLE);
        }
    }

    /// Announces our addresses once they have settled, if they are not those last announced.
    pub(super) fn announce_settled(&mut self, now: Instant) {
        if self.announce_at.is_none_or(|t| t > now) {
            return;
        }
        let held = self.held_announcement();
        if self.announced != held {
            self.announce(held);
        }
        self.announce_at = None;
    }

    fn held_announcement(&self) -> Announcement {
        let status = self.status.borrow();
        announcement(&status.external, &status.reservations)
    }

    fn announce(&mut self, held: Announcement) {
        self.announced = held;
        self.announce_at = None;
        // A full queue is fine: the daemon republishes on its timer too.
        let _ = self.events.try_send(NetEvent::AddressesChanged);
    }

    /// [`EventLoop::reserve`] for one kind of relay: contacts' nodes or the others.
    fn reserve_among(&mut self, contacts: bool, target: usize) {
        let now = Instant::now();
        let of_kind = |p: &PeerId| self.contact_relays.contains(p) == contacts;
        let mut active = self
            .relays
            .iter()
            .filter(|(p, s)| of_kind(p) && (s.listener.is_some() || self.races.contains_key(p)))
            .count();
        let mut candidates: Vec<(bool, u32, PeerId)> = self
            .relays
            .iter()
            .filter(|(p, s)| {
                of_kind(p)
                    && s.listener.is_none()
                    && s.next_attempt <= now
                    && !self.races.contains_key(p)
            })
            .map(|(p, s)| (!self.swarm.is_connected(p), s.failures, *p))
            .collect();
        candidates.sort();
        for (_, _, peer) in candidates {
            if active >= target {
                break;
            }
            if !self.swarm.is_connected(&peer) {
                let addresses =
                    self.relays.get(&peer).map(|s| s.addresses.clone()).unwrap_or_default();
                match self.reach(peer, addresses) {
                    Reach::Racing => active += 1,
                    Reach::Connected => {}
                    Reach::Unreachable(why) => {
                        if let Some(slot) = self.relays.get_mut(&peer) {
                            slot.failures += 1;
                            slot.next_attempt = now + backoff(slot.failures);
                        }
                        tracing::debug!(relay = %peer, %why, "cannot reach a relay now");
                    }
                }
                if !self.swarm.is_connected(&peer) {
                    continue;
                }
            }
            // The relay client puts a reservation on the relay's oldest connection, which may be
            // one closing on our request; the reservation waits until it is gone.
            if self.closing_to(&peer) {
                continue;
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

    pub(super) fn maintain(&mut self) {
        let now = Instant::now();
        for s in self.repeats.due(now) {
            tracing::warn!(
                subject = %s.subject,
                last = %s.last,
                "{} (repeated {} more times in the last {} s)",
                s.kind,
                s.count,
                crate::repeats::REPEAT_SUMMARY_INTERVAL.as_secs()
            );
        }
        self.close_relayed_duplicates();
        self.watch_volume();
        self.expire_deliveries();
        if now.duration_since(self.network_checked) >= NETWORK_CHECK_INTERVAL {
            self.check_network();
        }
        if self.role == Role::Node {
            self.reserve();
            self.forget_former_contacts();
            self.promote_contact_relays();
            let reserved = self
                .relays
                .iter()
                .filter(|(p, s)| s.circuit.is_some() && !self.contact_relays.contains(p))
                .count();
            if self.relay_discovery
                && reserved < TARGET_RESERVATIONS
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
            // Only the record goes out again: a retry is no sign of having come online, and
            // a fetch pass (a DHT walk per mailbox id) at each retry would add to the load
            // that made the publication time out.
            let _ = self.events.try_send(NetEvent::Republish);
        }
        self.announce_settled(now);
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
        let due: Vec<(PeerId, Vec<libp2p::Multiaddr>)> = self
            .bootstrap
            .iter_mut()
            .filter(|b| b.next_attempt <= now)
            .map(|b| {
                // The next try waits for this race's outcome, which sets it again.
                b.next_attempt = now + backoff(b.failures + 1);
                (b.peer, b.addresses.clone())
            })
            .collect();
        for (peer, addresses) in due {
            if self.swarm.is_connected(&peer) || self.races.contains_key(&peer) {
                continue;
            }
            if let Reach::Unreachable(why) = self.reach(peer, addresses) {
                tracing::debug!(%peer, %why, "bootstrap dial not started");
            }
        }
    }

    /// Stops relaying through the nodes of peers who are no longer contacts: their circuits
    /// would go on naming them to our contacts, and their nodes refuse the next renewal anyway.
    fn forget_former_contacts(&mut self) {
        let gone: Vec<PeerId> =
            self.contact_relays.iter().filter(|p| !self.admission.is_contact(p)).copied().collect();
        for peer in gone {
            self.contact_relays.remove(&peer);
            if let Some(slot) = self.relays.remove(&peer)
                && let Some(listener) = slot.listener
            {
                self.swarm.remove_listener(listener);
            }
            tracing::debug!(%peer, "no longer a contact; not relaying through its node");
        }
    }

    /// Makes the connected nodes that relay for their contacts and have become our contacts
    /// since they identified themselves candidates for a reservation: the user added a
    /// contact whose node was already connected (found on the LAN, given as a bootstrap peer).
    fn promote_contact_relays(&mut self) {
        let added: Vec<PeerId> = self
            .relaying_strangers
            .keys()
            .filter(|p| self.admission.is_contact(p))
            .copied()
            .collect();
        for peer in added {
            let Some(listen_addrs) = self.relaying_strangers.remove(&peer) else { continue };
            if self.contact_relays.len() >= MAX_KNOWN_RELAYS {
                continue;
            }
            self.contact_relays.insert(peer);
            self.consider_relay(peer, &listen_addrs);
        }
    }

    /// Makes `peer`, a relay that listens on `listen_addrs` by its own account, a candidate
    /// for a reservation (a user node only, while it knows fewer than [`MAX_KNOWN_RELAYS`]).
    pub(super) fn consider_relay(&mut self, peer: PeerId, listen_addrs: &[Multiaddr]) {
        if self.role == Role::Node
            && !self.relays.contains_key(&peer)
            && self.relays.len() < MAX_KNOWN_RELAYS
        {
            let base = self
                .dialed
                .get(&peer)
                .cloned()
                .or_else(|| listen_addrs.iter().find(|a| !is_relayed(a)).cloned());
            if let Some(base) = base {
                tracing::debug!(relay = %peer, %base, "found a relay");
                let mut addresses = vec![without_peer(&base)];
                for other in crate::transport::other_addresses(&base, listen_addrs) {
                    if addresses.len() < MAX_RELAY_ADDRESSES && !addresses.contains(&other) {
                        addresses.push(other);
                    }
                }
                if let Some(b) = self.bootstrap.iter().find(|b| b.peer == peer) {
                    for a in b.addresses.iter().map(without_peer) {
                        if addresses.len() < MAX_RELAY_ADDRESSES && !addresses.contains(&a) {
                            addresses.push(a);
                        }
                    }
                }
                self.relays.insert(
                    peer,
                    RelaySlot {
                        address: without_peer(&base).with(Protocol::P2p(peer)),
                        addresses,
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
}

/// What an announcement of our addresses says: our external addresses and reservations.
pub(super) type Announcement = (Vec<Multiaddr>, Vec<(PeerId, Multiaddr)>);

/// The announcement of `external` and `reservations`, sorted, so that the same ones held in
/// another order are the same announcement.
pub(super) fn announcement(
    external: &[Multiaddr],
    reservations: &[(PeerId, Multiaddr)],
) -> Announcement {
    let mut external = external.to_vec();
    let mut reservations = reservations.to_vec();
    external.sort();
    reservations.sort();
    (external, reservations)
}

/// Whether `held` has an address or a reservation `announced` has not.
pub(super) fn adds_to(announced: &Announcement, held: &Announcement) -> bool {
    held.0.iter().any(|a| !announced.0.contains(a))
        || held.1.iter().any(|r| !announced.1.contains(r))
}
