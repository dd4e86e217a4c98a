//! Counts the bytes each connection has received, so the swarm task can see a connection that
//! stopped making progress (a censor that freezes a flow after some kilobytes, T10) and move off
//! one before it reaches the volume that froze an earlier one.
//!
//! The count is taken above the multiplexer, on every substream's reads: one atomic addition per
//! read, the same for every transport (TCP, QUIC, stealth, memory). It leaves out the framing
//! below (Noise, Yamux, TCP and IP headers), so it is not the censor's count; the swarm task only
//! compares it with the count at which a connection froze before, measured the same way
//! (`swarm::volume`).
//!
//! Every dial to an address group where a connection froze leaves from a new local port: a dial
//! from the port of a frozen connection (TCP's port reuse, QUIC's one shared socket) would be
//! the same flow to the censor, frozen from its first byte.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::Multiaddr;
use libp2p::PeerId;
use libp2p::core::ConnectedPoint;
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox};
use libp2p::core::transport::{
    Boxed, DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent,
};

/// Counters of connections the transport made that the swarm task has not taken yet. A
/// connection the swarm refuses before it is established leaves its counter here; past this
/// many the oldest goes.
pub const MAX_UNCLAIMED_METERS: usize = 64;

/// Address groups dials to which leave from a new port; as many as the swarm task keeps byte
/// budgets for (`swarm::volume::MAX_FROZEN_GROUPS`).
pub const MAX_FRESH_PORT_GROUPS: usize = 32;

/// An address group (`swarm::dht::address_group`), `None` for addresses without an IP.
pub type Group = Option<[u8; 7]>;

/// The bytes one connection has received so far.
pub type Meter = Arc<AtomicU64>;

/// What the transport shares with the swarm task: the counters of new connections, each under
/// its peer and endpoint until the swarm task claims it for the connection's id.
#[derive(Clone, Default)]
pub struct Meters {
    unclaimed: Arc<Mutex<VecDeque<Unclaimed>>>,
    fresh_ports: Arc<Mutex<HashSet<Group>>>,
}

struct Unclaimed {
    peer: PeerId,
    endpoint: ConnectedPoint,
    /// Held weakly: a connection the swarm drops before it is established (the loser of two
    /// dials to one address) drops its counter, and must not be taken for the next one there.
    meter: Weak<AtomicU64>,
}

impl Meters {
    /// A counter for a connection the transport just made.
    fn register(&self, peer: PeerId, endpoint: ConnectedPoint) -> Meter {
        let meter = Meter::default();
        let mut unclaimed = self.unclaimed.lock().unwrap_or_else(|e| e.into_inner());
        // The counters of connections already gone go first, then, if still full, the oldest.
        unclaimed.retain(|u| u.meter.strong_count() > 0);
        if unclaimed.len() >= MAX_UNCLAIMED_METERS {
            unclaimed.pop_front();
        }
        unclaimed.push_back(Unclaimed { peer, endpoint, meter: Arc::downgrade(&meter) });
        meter
    }

    /// From now on, dials into `group` leave from a new local port.
    pub fn use_fresh_ports(&self, group: Group) {
        let mut groups = self.fresh_ports.lock().unwrap_or_else(|e| e.into_inner());
        if groups.len() < MAX_FRESH_PORT_GROUPS {
            groups.insert(group);
        }
    }

    fn fresh_port_for(&self, address: &Multiaddr) -> bool {
        let groups = self.fresh_ports.lock().unwrap_or_else(|e| e.into_inner());
        !groups.is_empty() && groups.contains(&crate::swarm::dht::address_group(address))
    }

    /// The counter of the established connection to `peer` at `endpoint`, the oldest first when
    /// two connections share both (two dials to one address).
    pub fn claim(&self, peer: PeerId, endpoint: &ConnectedPoint) -> Option<Meter> {
        let mut unclaimed = self.unclaimed.lock().unwrap_or_else(|e| e.into_inner());
        unclaimed.retain(|u| u.meter.strong_count() > 0);
        let at = unclaimed
            .iter()
            .position(|u| u.peer == peer && same_endpoint(&u.endpoint, endpoint))?;
        unclaimed.remove(at).and_then(|u| u.meter.upgrade())
    }
}

/// Whether two endpoints are the same connection's: the dialed address, or the pair of
/// addresses of an accepted connection. A dial's role override and port use do not matter.
fn same_endpoint(a: &ConnectedPoint, b: &ConnectedPoint) -> bool {
    match (a, b) {
        (ConnectedPoint::Dialer { address: x, .. }, ConnectedPoint::Dialer { address: y, .. }) => {
            crate::swarm::without_peer(x) == crate::swarm::without_peer(y)
        }
        (
            ConnectedPoint::Listener { local_addr: l1, send_back_addr: s1 },
            ConnectedPoint::Listener { local_addr: l2, send_back_addr: s2 },
        ) => l1 == l2 && s1 == s2,
        _ => false,
    }
}

/// `transport` with every connection it makes counted in `meters`, and its dials into groups
/// where a connection froze made from new ports.
pub fn metered(
    transport: Boxed<(PeerId, StreamMuxerBox)>,
    meters: Meters,
) -> Boxed<(PeerId, StreamMuxerBox)> {
    let counting = meters.clone();
    let inner = transport
        .map(move |(peer, muxer), endpoint| {
            let meter = counting.register(peer, endpoint);
            (peer, StreamMuxerBox::new(Counting { inner: muxer, meter }))
        })
        .boxed();
    FreshPorts { inner, meters }.boxed()
}

/// A transport that dials from a new port where [`Meters::use_fresh_ports`] says so.
struct FreshPorts {
    inner: Boxed<(PeerId, StreamMuxerBox)>,
    meters: Meters,
}

impl Transport for FreshPorts {
    type Output = (PeerId, StreamMuxerBox);
    type Error = io::Error;
    type ListenerUpgrade = <Boxed<(PeerId, StreamMuxerBox)> as Transport>::ListenerUpgrade;
    type Dial = <Boxed<(PeerId, StreamMuxerBox)> as Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        mut opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        if self.meters.fresh_port_for(&addr) {
            opts.port_use = PortUse::New;
        }
        self.inner.dial(addr, opts)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

/// A multiplexer whose substreams add what they read to one counter.
struct Counting {
    inner: StreamMuxerBox,
    meter: Meter,
}

impl StreamMuxer for Counting {
    type Substream = Counted;
    type Error = io::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let meter = this.meter.clone();
        Pin::new(&mut this.inner).poll_inbound(cx).map_ok(|inner| Counted { inner, meter })
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        let meter = this.meter.clone();
        Pin::new(&mut this.inner).poll_outbound(cx).map_ok(|inner| Counted { inner, meter })
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

/// A substream that adds what it reads to its connection's counter.
struct Counted {
    inner: SubstreamBox,
    meter: Meter,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read {
            this.meter.fetch_add(n as u64, Ordering::Relaxed);
        }
        read
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use libp2p::core::Endpoint;
    use libp2p::core::transport::PortUse;

    use super::*;

    fn dialed(address: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: address.parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    #[test]
    fn a_counter_is_claimed_once_by_its_peer_and_endpoint_and_the_unclaimed_are_bounded() {
        let meters = Meters::default();
        let (relay, other) = (PeerId::random(), PeerId::random());
        let first = meters.register(relay, dialed("/ip4/127.0.0.1/tcp/1"));
        first.fetch_add(5, Ordering::Relaxed);
        assert!(meters.claim(other, &dialed("/ip4/127.0.0.1/tcp/1")).is_none(), "another peer");
        assert!(meters.claim(relay, &dialed("/ip4/127.0.0.1/tcp/2")).is_none(), "another address");
        let claimed = meters
            .claim(relay, &dialed(&format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}")))
            .expect("the dialed address, with or without the peer id");
        assert_eq!(claimed.load(Ordering::Relaxed), 5);
        assert!(meters.claim(relay, &dialed("/ip4/127.0.0.1/tcp/1")).is_none(), "claimed once");
        let held: Vec<Meter> = (0..MAX_UNCLAIMED_METERS + 10)
            .map(|_| meters.register(other, dialed("/ip4/127.0.0.1/tcp/3")))
            .collect();
        assert_eq!(meters.unclaimed.lock().unwrap().len(), MAX_UNCLAIMED_METERS);
        drop(held);
        // A dropped connection's counter is never handed to the next connection there.
        let loser = meters.register(relay, dialed("/ip4/127.0.0.1/tcp/4"));
        let winner = meters.register(relay, dialed("/ip4/127.0.0.1/tcp/4"));
        winner.fetch_add(7, Ordering::Relaxed);
        drop(loser);
        let claimed = meters.claim(relay, &dialed("/ip4/127.0.0.1/tcp/4")).expect("the winner");
        assert_eq!(claimed.load(Ordering::Relaxed), 7);
        assert!(meters.unclaimed.lock().unwrap().is_empty(), "the dropped ones are forgotten");
    }
}
