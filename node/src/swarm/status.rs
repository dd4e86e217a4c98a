//! The swarm task's network state as the rest of the node watches it: the snapshot
//! ([`NetStatus`]) built from the swarm and the task's own bookkeeping, its publication on the
//! watch channel so callers can wait for a state instead of polling for it, and the
//! republications a change of it triggers (our addresses announced again, the presence record
//! and the relay announcement moved as the routing table grows).

use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use crate::swarm::event_loop::EventLoop;
use crate::swarm::{Link, NetEvent, NetStatus, is_relayed};

impl EventLoop {
    pub(super) fn status(&mut self) -> NetStatus {
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
            connections: self.connections.len(),
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
            lookups: self.lookup_stats,
            duplicates_closed: self.duplicates_closed,
            dialing: self.dials_in_flight(),
            hole_punched: self.peers_via(Link::HolePunched),
            relayed: self.peers_via(Link::Relayed),
            bridges: {
                let mut bridges: Vec<PeerId> = self
                    .relays
                    .iter()
                    .filter(|(p, s)| s.circuit.is_some() && self.bridges.contains(p))
                    .map(|(p, _)| *p)
                    .collect();
                bridges.sort();
                bridges
            },
            contact_relays: {
                let mut contact_relays: Vec<PeerId> = self
                    .relays
                    .iter()
                    .filter(|(p, s)| s.circuit.is_some() && self.contact_relays.contains(p))
                    .map(|(p, _)| *p)
                    .collect();
                contact_relays.sort();
                contact_relays
            },
        }
    }

    /// Publishes the network state to those who watch it, and acts on what changed in it.
    pub(super) fn publish_status(&mut self) {
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
        // moves to the peers now closest to its key as the network around us fills in;
        // not while the last publication is still under way, or a joining node, whose
        // table doubles every few seconds, would run one walk and 20 stores after another
        // at once, each to fewer peers than the next (the next one starts when it ends).
        let table = self.status.borrow().routing_table;
        let grown = self.presence.is_some()
            && self.presence_query.is_some_and(|(q, t)| {
                table >= 2 * t.max(1) && self.swarm.behaviour_mut().kad.query(&q).is_none()
            });
        if addresses_changed {
            self.announce_change(Instant::now());
        }
        if grown {
            self.presence_query = self.presence_query.map(|(q, _)| (q, table));
            // A full queue is fine: the daemon republishes on its timer too.
            let _ = self.events.try_send(NetEvent::Republish);
        }
        // The relay announcement moves the same way, for the same reason.
        if self.providing && table >= 2 * self.providing_routing_table.max(1) {
            tracing::debug!(table, "routing table doubled; announcing the relay again");
            self.announce_relay();
        }
    }

    /// The peers with a connection of this kind open, sorted.
    fn peers_via(&self, link: Link) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> =
            self.connections.values().filter(|c| c.via == link).map(|c| c.peer).collect();
        peers.sort();
        peers.dedup();
        peers
    }
}
