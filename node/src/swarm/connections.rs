//! The swarm task's bookkeeping of its connections: what opens (admission, how each reaches its
//! peer, what a connection to a relay or a bootstrap peer resets, what waits for the peer), what
//! closes, and the closing of connections made redundant by another to the same peer. Dial
//! failures are the racing dialer's (`dialer`); what a connection receives is `volume`'s.

use libp2p::PeerId;
use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use tokio::time::Instant;

use crate::swarm::event_loop::{BOOTSTRAP_UNREACHABLE, Conn, EventLoop, RELAYED_OVERLAP};
use crate::swarm::{Link, NetEvent, connection_address, is_relayed, without_peer};

impl EventLoop {
    /// A connection is up: admitted or closed at once, then recorded, and what waits for its
    /// peer goes out.
    pub(super) fn on_connection_established(
        &mut self,
        peer_id: PeerId,
        endpoint: ConnectedPoint,
        connection_id: ConnectionId,
    ) {
        if let Err(refusal) = self.admission.connection_opened(connection_id, &endpoint) {
            // Too many from one address: closed at once, before it can ask anything.
            tracing::debug!(peer = %peer_id, %refusal, "closing an inbound connection");
            self.swarm.close_connection(connection_id);
            return;
        }
        let address = connection_address(&endpoint);
        let via = if endpoint.is_relayed() { Link::Relayed } else { Link::Direct };
        let was_connected = !self.connections.is_empty();
        let dialed = endpoint.is_dialer();
        self.connections
            .insert(connection_id, Conn { peer: peer_id, via, address, dialed, closing: false });
        self.volume_connected(connection_id, peer_id, &endpoint);
        if via == Link::Relayed {
            self.cooldown.set_relayed(peer_id, true);
        }
        if via == Link::Direct || self.has_direct(&peer_id) {
            self.direct_since.entry(peer_id).or_insert_with(Instant::now);
        }
        if let ConnectedPoint::Dialer { address, .. } = &endpoint
            && !is_relayed(address)
        {
            self.dialed.insert(peer_id, without_peer(address));
            if let Some(slot) = self.relays.get_mut(&peer_id) {
                slot.address = without_peer(address).with(Protocol::P2p(peer_id));
            }
        }
        if let Some(b) = self.bootstrap.iter_mut().find(|b| b.peer == peer_id) {
            b.failures = 0;
            self.repeats.clear(BOOTSTRAP_UNREACHABLE, &peer_id.to_string());
        }
        if let Some(slot) = self.relays.get_mut(&peer_id) {
            slot.failures = 0;
            slot.next_attempt = Instant::now();
        }
        self.race_connected(peer_id, connection_id);
        // A full queue only delays the retry until the outbox's next timer.
        let _ = self.events.try_send(NetEvent::PeerConnected(peer_id));
        if !was_connected {
            self.reconnected("the first connection is up");
        }
        self.reserve();
    }

    /// A connection is gone: forgotten, with what was kept for its peer once it was the last.
    pub(super) fn on_connection_closed(
        &mut self,
        peer_id: PeerId,
        num_established: u32,
        connection_id: ConnectionId,
        endpoint: ConnectedPoint,
    ) {
        self.admission.connection_closed(connection_id, &endpoint);
        let was_closing = self.connections.remove(&connection_id).is_some_and(|c| c.closing);
        self.volume_closed(connection_id, peer_id, was_closing);
        if !self.connections.values().any(|c| c.peer == peer_id && c.via == Link::Relayed) {
            self.cooldown.set_relayed(peer_id, false);
        }
        if !self.has_direct(&peer_id) {
            self.direct_since.remove(&peer_id);
        }
        if num_established == 0 {
            self.dialed.remove(&peer_id);
            self.relaying_strangers.remove(&peer_id);
        }
    }

    /// Whether a direct (not relayed) connection to `peer` is open and not closing.
    pub(super) fn has_direct(&self, peer: &PeerId) -> bool {
        self.connections.values().any(|c| c.peer == *peer && c.via != Link::Relayed && !c.closing)
    }

    /// Whether a connection to `peer` is closing on our request (as a duplicate, a late dial,
    /// stalled or past its budget): the relay client would still put a reservation on it.
    pub(super) fn closing_to(&self, peer: &PeerId) -> bool {
        self.connections.values().any(|c| c.peer == *peer && c.closing)
    }

    /// Closes a connection, marking it closing until it is gone: a connection on its way out
    /// is no reason to close another (it was, when it had been closed a moment before as a
    /// duplicate or as stalled, and the one closed for it was the last).
    pub(super) fn close(&mut self, id: ConnectionId) {
        if let Some(conn) = self.connections.get_mut(&id) {
            conn.closing = true;
        }
        self.swarm.close_connection(id);
    }

    /// Closes the relayed connections to peers that have had a direct one for
    /// [`RELAYED_OVERLAP`]: request-response spreads requests over every connection to a peer,
    /// so a relayed one left open would carry half the envelopes the long way round. The
    /// overlap lets a hole punch finish its exchange on the relayed connection first, and a
    /// delivery in flight on it fails and is retried like any other.
    pub(super) fn close_relayed_duplicates(&mut self) {
        let due: Vec<PeerId> = self
            .direct_since
            .iter()
            .filter(|(_, since)| since.elapsed() >= RELAYED_OVERLAP)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            self.direct_since.remove(&peer);
            if !self.has_direct(&peer) {
                continue;
            }
            let relayed: Vec<ConnectionId> = self
                .connections
                .iter()
                .filter(|(_, c)| c.peer == peer && c.via == Link::Relayed)
                .map(|(id, _)| *id)
                .collect();
            for id in relayed {
                tracing::debug!(%peer, "closing a relayed connection: a direct one is open");
                self.duplicates_closed += 1;
                self.close(id);
            }
        }
    }
}
