//! The circuit relay server, for a community relay and for a user node that relays for its
//! contacts.
//!
//! A community relay (`kolokol relay`) runs libp2p's relay server with the limits of
//! `behaviour::relay_limits`. A user node that listens somewhere (its LAN addresses, `--listen`)
//! runs one too unless `relay_for_contacts` is off, so that two users inside a censored network
//! reach each other through a third one's node and never need a foreign relay. That server is
//! not a public relay:
//!
//! - Only the node's contacts may hold a reservation on it ([`contacts_only`], the first of its
//!   reservation rate limiters; libp2p answers a refused one `RESOURCE_LIMIT_EXCEEDED`).
//! - Circuits to a contact's reservation may come from any peer, since the contact's own
//!   contacts, strangers to this node, are the ones who need to reach it; each source peer and
//!   each source IP address is held to a few circuits ([`contact_limits`]), and there are few
//!   reservations to open circuits to at all.
//! - It identifies itself with [`CONTACT_RELAY_AGENT_VERSION`], so that user nodes reserve on
//!   it only when it is one of their contacts and keep their circuits through it out of their
//!   public presence record.
//!
//! libp2p's relay server puts its external addresses into every reservation it grants, and
//! grants none (it does not even speak the protocol) while it has none. A user node usually has
//! no confirmed external address, only listen addresses on its LAN or its `--listen`; telling
//! the swarm those are external would hand them to every peer in identify and make the node a
//! DHT server. So [`RelayServer`] tells the relay server alone about them: it passes each listen
//! address others can dial on to it as if it were confirmed, and nothing else sees that.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::behaviour::{ExternalAddrConfirmed, ExternalAddrExpired, FromSwarm};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
use libp2p::{Multiaddr, PeerId, relay};
use tokio::sync::watch;

use crate::swarm::behaviour::relay_limits;
use crate::swarm::{is_relayed, is_unspecified};

/// The agent version a user node sends in identify while it relays for its contacts: a peer
/// that is not its contact then knows not to ask it for a reservation, and a contact keeps the
/// circuits through it for its contacts only. Only peers that connect to the node see it.
pub const CONTACT_RELAY_AGENT_VERSION: &str = "/kolokol/1/contacts-relay";

/// Limits of a user node's relay for its contacts: small, so that it is never a free relay for
/// the public, and enough for a household's or a circle of friends' messages.
pub mod contact_limits {
    use std::time::Duration;

    /// Reservations held at once (by contacts only).
    pub const MAX_RESERVATIONS: usize = 32;
    /// Reservations one contact may hold at once: libp2p refuses a new one only past this
    /// count, so with 1 a contact holds at most two, the old and its replacement.
    pub const MAX_RESERVATIONS_PER_PEER: usize = 1;
    /// Circuits relayed at once, to all contacts together.
    pub const MAX_CIRCUITS: usize = 16;
    /// Circuits at once opened by one source peer.
    pub const MAX_CIRCUITS_PER_PEER: usize = 4;
    /// Longest life of one circuit; the client opens another after it.
    pub const MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(30 * 60);
    /// Most bytes relayed by one circuit, both directions (16 MiB, some four thousand short
    /// messages; a large file is a job for a hole punch or a community relay).
    pub const MAX_CIRCUIT_BYTES: u64 = 16 * 1024 * 1024;
    /// How long a reservation lasts before the contact renews it; a contact removed from the
    /// contact book keeps its reservation at most this long, since a renewal is refused.
    pub const RESERVATION_DURATION: Duration = Duration::from_secs(30 * 60);
    /// New circuits one source peer may open in a burst; one more each
    /// [`CIRCUIT_REFILL_PER_PEER`].
    pub const CIRCUITS_PER_SOURCE_PEER: u32 = 8;
    /// How often a source peer gets back one circuit of its burst.
    pub const CIRCUIT_REFILL_PER_PEER: Duration = Duration::from_secs(60);
    /// New circuits one source IP address may open in a burst; one more each
    /// [`CIRCUIT_REFILL_PER_IP`]. Peer ids cost nothing, IP addresses do.
    pub const CIRCUITS_PER_SOURCE_IP: u32 = 16;
    /// How often a source IP address gets back one circuit of its burst.
    pub const CIRCUIT_REFILL_PER_IP: Duration = Duration::from_secs(30);
    /// Reservations (new or renewed) one contact may ask for in a burst; one more each
    /// [`RESERVATION_REFILL`]. A contact whose connection keeps dropping reserves again each
    /// time, so the burst is generous; a refused ask costs a stranger nothing here, since
    /// strangers are refused before this limiter counts them.
    pub const RESERVATIONS_PER_CONTACT: u32 = 30;
    /// How often a contact gets back one reservation of its burst.
    pub const RESERVATION_REFILL: Duration = Duration::from_secs(60);
}

/// Listen addresses (and confirmed external ones) the relay server offers in reservations at
/// most; past this a new address is not offered until one goes.
pub const MAX_OFFERED_ADDRESSES: usize = 16;

/// Which relay server a node runs.
#[derive(Clone, Debug)]
pub(crate) enum Serve {
    /// A community relay: anyone may reserve, under `relay_limits`.
    Public,
    /// A user node's relay for its contacts: the set of their peer ids, which the contact book
    /// keeps current, decides who may reserve.
    Contacts(watch::Receiver<Arc<HashSet<PeerId>>>),
}

/// The relay server behaviour, with the listen addresses of a user node passed on to it as
/// addresses to offer (see the module documentation).
pub(crate) struct RelayServer {
    inner: relay::Behaviour,
    /// Whether listen addresses are offered too (a user node's relay for contacts).
    offer_listen: bool,
    /// Listen addresses offered, at most [`MAX_OFFERED_ADDRESSES`].
    listen: Vec<Multiaddr>,
    /// Confirmed external addresses offered, at most [`MAX_OFFERED_ADDRESSES`].
    external: Vec<Multiaddr>,
}

impl RelayServer {
    /// The relay server for `serve`, on the node `peer_id`.
    pub(crate) fn new(peer_id: PeerId, serve: Serve) -> Self {
        let (config, offer_listen) = match serve {
            Serve::Public => (
                relay::Config {
                    max_reservations: relay_limits::MAX_RESERVATIONS,
                    reservation_duration: relay_limits::RESERVATION_DURATION,
                    max_circuits: relay_limits::MAX_CIRCUITS,
                    max_circuits_per_peer: relay_limits::MAX_CIRCUITS_PER_PEER,
                    max_circuit_duration: relay_limits::MAX_CIRCUIT_DURATION,
                    max_circuit_bytes: relay_limits::MAX_CIRCUIT_BYTES,
                    ..Default::default()
                },
                false,
            ),
            Serve::Contacts(contacts) => (contacts_config(contacts), true),
        };
        let mut inner = relay::Behaviour::new(peer_id, config);
        // A community relay serves from the start (it confirms its addresses soon after); a
        // user node's relay speaks the protocol only while it has an address to offer, which
        // libp2p's automatic status gives it.
        if !offer_listen {
            inner.set_status(Some(relay::Status::Enable));
        }
        Self { inner, offer_listen, listen: Vec::new(), external: Vec::new() }
    }

    /// Whether `addr` may be offered to a contact: a circuit through a circuit is not a thing,
    /// an unspecified address names no host, and a stealth listener behind a proxy is reached
    /// at the proxy's address.
    fn offerable(addr: &Multiaddr) -> bool {
        !is_relayed(addr)
            && !is_unspecified(addr)
            && crate::transport::is_dialable_listen_address(addr)
    }

    /// Whether `addr` is offered now, from either list.
    fn offered(&self, addr: &Multiaddr) -> bool {
        self.listen.contains(addr) || self.external.contains(addr)
    }

    /// Adds `addr` to `list` (the listen or the external one) and tells the relay server when it
    /// is newly offered.
    fn add(&mut self, addr: &Multiaddr, external: bool) {
        if !Self::offerable(addr) {
            return;
        }
        let was = self.offered(addr);
        let list = if external { &mut self.external } else { &mut self.listen };
        if list.contains(addr) || list.len() >= MAX_OFFERED_ADDRESSES {
            return;
        }
        list.push(addr.clone());
        if !was {
            self.inner
                .on_swarm_event(FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed { addr }));
        }
    }

    /// Removes `addr` from `list` and tells the relay server when it is offered no more.
    fn remove(&mut self, addr: &Multiaddr, external: bool) {
        let list = if external { &mut self.external } else { &mut self.listen };
        let before = list.len();
        list.retain(|a| a != addr);
        if list.len() != before && !self.offered(addr) {
            self.inner.on_swarm_event(FromSwarm::ExternalAddrExpired(ExternalAddrExpired { addr }));
        }
    }
}

/// The relay configuration of a user node's relay for its contacts.
fn contacts_config(contacts: watch::Receiver<Arc<HashSet<PeerId>>>) -> relay::Config {
    use contact_limits as l;
    let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    relay::Config {
        max_reservations: l::MAX_RESERVATIONS,
        max_reservations_per_peer: l::MAX_RESERVATIONS_PER_PEER,
        reservation_duration: l::RESERVATION_DURATION,
        // The gate comes first: libp2p asks the limiters in order and stops at the first that
        // says no, so a stranger's ask is refused before it spends a contact's tokens.
        reservation_rate_limiters: vec![contacts_only(contacts)],
        max_circuits: l::MAX_CIRCUITS,
        max_circuits_per_peer: l::MAX_CIRCUITS_PER_PEER,
        max_circuit_duration: l::MAX_CIRCUIT_DURATION,
        max_circuit_bytes: l::MAX_CIRCUIT_BYTES,
        circuit_src_rate_limiters: Vec::new(),
    }
    .reservation_rate_per_peer(nonzero(l::RESERVATIONS_PER_CONTACT), l::RESERVATION_REFILL)
    .circuit_src_per_peer(nonzero(l::CIRCUITS_PER_SOURCE_PEER), l::CIRCUIT_REFILL_PER_PEER)
    .circuit_src_per_ip(nonzero(l::CIRCUITS_PER_SOURCE_IP), l::CIRCUIT_REFILL_PER_IP)
}

/// A reservation limiter that admits the peers in `contacts` and nobody else. The set is the
/// contact book's, replaced whole when a contact is added or removed, so it is as bounded as the
/// contact book and holds nothing a peer sent.
pub(crate) fn contacts_only(
    contacts: watch::Receiver<Arc<HashSet<PeerId>>>,
) -> Box<dyn relay::RateLimiter> {
    Box::new(move |peer: PeerId, _addr: &Multiaddr, _now| {
        let admitted = contacts.borrow().contains(&peer);
        if !admitted {
            tracing::debug!(%peer, "refused a relay reservation: not a contact");
        }
        admitted
    })
}

impl NetworkBehaviour for RelayServer {
    type ConnectionHandler = <relay::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = relay::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner.handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if !self.offer_listen {
            self.inner.on_swarm_event(event);
            return;
        }
        // A user node's relay hears of addresses only through `add` and `remove`, which keep
        // circuits (ours through other relays) out of what it offers.
        match event {
            FromSwarm::NewListenAddr(e) => self.add(e.addr, false),
            FromSwarm::ExpiredListenAddr(e) => self.remove(e.addr, false),
            FromSwarm::ExternalAddrConfirmed(e) => self.add(e.addr, true),
            FromSwarm::ExternalAddrExpired(e) => self.remove(e.addr, true),
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer_id, connection_id, event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests;
