//! Counts the bytes each connection has received, so the swarm task can see a connection that
//! stopped making progress (a censor that freezes a flow after some kilobytes, T10) and move off
//! one before it reaches the volume that froze an earlier one.
//!
//! A connection we dial over TCP (plain or the stealth transport) is counted on its socket, as
//! the censor counts it: every byte read, below TLS, Noise and Yamux, and [`PACKET_OVERHEAD`]
//! per read for the packet's headers. Counted above the multiplexer instead, a connection that
//! carried mostly small frames (pings, acknowledgements) froze at half the count of one that
//! carried texts, and a stealth connection at a sixth (its TLS handshake and records left out),
//! so a budget taken from one freeze let the next connection freeze too. QUIC (one UDP socket
//! for all connections), the in-memory transport and accepted connections are still counted
//! above the multiplexer: one atomic addition per substream read. The swarm task only compares
//! a count with the count at which a connection of the same transport froze before, measured
//! the same way (`swarm::volume`).
//!
//! Every dial to an address group where a connection froze leaves from a new local port: a dial
//! from the port of a frozen connection (TCP's port reuse, QUIC's one shared socket) would be
//! the same flow to the censor, frozen from its first byte.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt, TryFutureExt};
use libp2p::Multiaddr;
use libp2p::PeerId;
use libp2p::core::ConnectedPoint;
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox};
use libp2p::core::transport::{
    Boxed, DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent,
};

/// What a read from a TCP socket is taken to have cost on the wire beyond its payload: the IPv4
/// and TCP headers with the timestamp option (20 + 20 + 12 bytes). A censor's connection
/// tracking counts whole packets; a read returns at least one.
pub const PACKET_OVERHEAD: u64 = 52;

/// Counters of connections the transport made that the swarm task has not taken yet. A
/// connection the swarm refuses before it is established leaves its counter here; past this
/// many the oldest goes.
pub const MAX_UNCLAIMED_METERS: usize = 64;

/// Address groups dials to which leave from a new port; as many as the swarm task keeps byte
/// budgets for (`swarm::volume::MAX_FROZEN_GROUPS`).
pub const MAX_FRESH_PORT_GROUPS: usize = 32;

/// Resumable tunnels noted at once; past this one is treated like any connection (replaced
/// for its byte budget), which costs its circuits but nothing else.
pub const MAX_RESUMABLE: usize = 1024;

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
    /// The counter of the dial being made, for the socket-level transport that takes it
    /// ([`OnTheWire`], the stealth transport's TCP). Dials are made one at a time, in the swarm
    /// task's calls into the transport, so one slot is enough.
    dialing: Arc<Mutex<Option<Meter>>>,
    /// Per address group, the socket bytes a stealth tunnel's carrier may receive before the
    /// client opens the next (`transport::session`); at most [`MAX_FRESH_PORT_GROUPS`].
    carrier_budgets: Arc<Mutex<HashMap<Group, u64>>>,
    /// The counters of connections that are resumable stealth tunnels, which replace their own
    /// carriers: the swarm task replaces none of them for their byte budget.
    resumable: Arc<Mutex<Vec<Weak<AtomicU64>>>>,
}

struct Unclaimed {
    peer: PeerId,
    endpoint: ConnectedPoint,
    /// Held weakly: a connection the swarm drops before it is established (the loser of two
    /// dials to one address) drops its counter, and must not be taken for the next one there.
    meter: Weak<AtomicU64>,
}

impl Meters {
    /// The counter of the dial being made, once: the socket-level transport that dials takes it.
    pub fn take_dialing(&self) -> Option<Meter> {
        self.dialing.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn set_dialing(&self, meter: Option<Meter>) -> Option<Meter> {
        std::mem::replace(&mut *self.dialing.lock().unwrap_or_else(|e| e.into_inner()), meter)
    }

    /// Files the counter of a connection the transport just made.
    fn register(&self, peer: PeerId, endpoint: ConnectedPoint, meter: &Meter) {
        let mut unclaimed = self.unclaimed.lock().unwrap_or_else(|e| e.into_inner());
        // The counters of connections already gone go first, then, if still full, the oldest.
        unclaimed.retain(|u| u.meter.strong_count() > 0);
        if unclaimed.len() >= MAX_UNCLAIMED_METERS {
            unclaimed.pop_front();
        }
        unclaimed.push_back(Unclaimed { peer, endpoint, meter: Arc::downgrade(meter) });
    }

    /// The socket bytes a tunnel carrier into `group` may receive, if a connection there froze.
    pub fn carrier_budget(&self, group: Group) -> Option<u64> {
        self.carrier_budgets.lock().unwrap_or_else(|e| e.into_inner()).get(&group).copied()
    }

    /// Keeps tunnel carriers into `group` under `budget` socket bytes (the least one set).
    pub fn set_carrier_budget(&self, group: Group, budget: u64) {
        let mut budgets = self.carrier_budgets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = budgets.get_mut(&group) {
            *b = (*b).min(budget);
        } else if budgets.len() < MAX_FRESH_PORT_GROUPS {
            budgets.insert(group, budget);
        }
    }

    /// Notes that the connection counted by `meter` is a resumable tunnel.
    pub fn mark_resumable(&self, meter: &Meter) {
        let mut resumable = self.resumable.lock().unwrap_or_else(|e| e.into_inner());
        resumable.retain(|m| m.strong_count() > 0);
        if resumable.len() < MAX_RESUMABLE {
            resumable.push(Arc::downgrade(meter));
        }
    }

    /// Whether the connection counted by `meter` is a resumable tunnel.
    pub fn is_resumable(&self, meter: &Meter) -> bool {
        let resumable = self.resumable.lock().unwrap_or_else(|e| e.into_inner());
        resumable.iter().any(|m| std::ptr::eq(m.as_ptr(), Arc::as_ptr(meter)))
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

/// `transport` with every connection it makes counted in `meters` (on its socket where the
/// transport below takes the dial's counter, else above the multiplexer), and its dials into
/// groups where a connection froze made from new ports.
pub fn metered(
    transport: Boxed<(PeerId, StreamMuxerBox)>,
    meters: Meters,
) -> Boxed<(PeerId, StreamMuxerBox)> {
    Metered { inner: transport, meters }.boxed()
}

/// The transport [`metered`] makes.
struct Metered {
    inner: Boxed<(PeerId, StreamMuxerBox)>,
    meters: Meters,
}

/// A connection's muxer, counted above it unless its socket is counted already.
fn counted(
    meters: &Meters,
    peer: PeerId,
    endpoint: ConnectedPoint,
    muxer: StreamMuxerBox,
    meter: Meter,
    on_the_wire: bool,
) -> (PeerId, StreamMuxerBox) {
    meters.register(peer, endpoint, &meter);
    if on_the_wire {
        (peer, muxer)
    } else {
        (peer, StreamMuxerBox::new(Counting { inner: muxer, meter }))
    }
}

impl Transport for Metered {
    type Output = (PeerId, StreamMuxerBox);
    type Error = io::Error;
    type ListenerUpgrade = BoxFuture<'static, io::Result<(PeerId, StreamMuxerBox)>>;
    type Dial = BoxFuture<'static, io::Result<(PeerId, StreamMuxerBox)>>;

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
        let meter = Meter::default();
        self.meters.set_dialing(Some(meter.clone()));
        let dial = self.inner.dial(addr.clone(), opts);
        // Still in the slot: no transport below counts this dial's socket.
        let on_the_wire = self.meters.set_dialing(None).is_none();
        let dial = dial?;
        let endpoint = ConnectedPoint::Dialer {
            address: addr,
            role_override: opts.role,
            port_use: opts.port_use,
        };
        let meters = self.meters.clone();
        Ok(dial
            .map_ok(move |(peer, muxer)| {
                counted(&meters, peer, endpoint, muxer, meter, on_the_wire)
            })
            .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        let meters = this.meters.clone();
        Pin::new(&mut this.inner).poll(cx).map(|event| match event {
            TransportEvent::Incoming { listener_id, upgrade, local_addr, send_back_addr } => {
                let endpoint = ConnectedPoint::Listener {
                    local_addr: local_addr.clone(),
                    send_back_addr: send_back_addr.clone(),
                };
                let upgrade = upgrade
                    .map_ok(move |(peer, muxer)| {
                        counted(&meters, peer, endpoint, muxer, Meter::default(), false)
                    })
                    .boxed();
                TransportEvent::Incoming { listener_id, upgrade, local_addr, send_back_addr }
            }
            other => other.map_upgrade(|upgrade| upgrade.boxed()),
        })
    }
}

/// A byte-stream transport (TCP) whose dials are counted on the socket: each takes the counter
/// [`metered`] set for it, if any. Accepted connections are not counted here.
pub struct OnTheWire<T> {
    inner: T,
    meters: Meters,
}

impl<T> OnTheWire<T> {
    /// `inner`, its dials counted in `meters`.
    pub fn new(inner: T, meters: Meters) -> Self {
        Self { inner, meters }
    }
}

impl<T> Transport for OnTheWire<T>
where
    T: Transport + Unpin,
    T::Dial: Send + 'static,
    T::Output: Send + 'static,
    T::Error: Send + 'static,
{
    type Output = Wire<T::Output>;
    type Error = T::Error;
    type ListenerUpgrade =
        futures::future::MapOk<T::ListenerUpgrade, fn(T::Output) -> Wire<T::Output>>;
    type Dial = BoxFuture<'static, Result<Wire<T::Output>, T::Error>>;

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
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        // Taken only once the dial is ours: a transport that refuses the address leaves the
        // counter to the next one.
        let dial = self.inner.dial(addr, opts)?;
        let meter = self.meters.take_dialing();
        Ok(dial.map_ok(move |inner| Wire::new(inner, meter)).boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let uncounted: fn(T::Output) -> Wire<T::Output> = |inner| Wire::new(inner, None);
        Pin::new(&mut self.get_mut().inner)
            .poll(cx)
            .map(|event| event.map_upgrade(|upgrade| upgrade.map_ok(uncounted)))
    }
}

/// A socket that adds what it reads, and [`PACKET_OVERHEAD`] per read, to its connection's
/// counter (none: not counted). Both `futures`' and `tokio`'s I/O traits, as the socket's.
pub struct Wire<S> {
    inner: S,
    meter: Option<Meter>,
}

impl<S> Wire<S> {
    /// `inner`, counted in `meter`.
    pub fn new(inner: S, meter: Option<Meter>) -> Self {
        Self { inner, meter }
    }

    fn count(&self, read: usize) {
        if let Some(meter) = &self.meter
            && read > 0
        {
            meter.fetch_add(read as u64 + PACKET_OVERHEAD, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read {
            this.count(n);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
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

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.count(buf.filled().len().saturating_sub(before));
        }
        read
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Wire<S> {
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

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
        let first = Meter::default();
        meters.register(relay, dialed("/ip4/127.0.0.1/tcp/1"), &first);
        first.fetch_add(5, Ordering::Relaxed);
        assert!(meters.claim(other, &dialed("/ip4/127.0.0.1/tcp/1")).is_none(), "another peer");
        assert!(meters.claim(relay, &dialed("/ip4/127.0.0.1/tcp/2")).is_none(), "another address");
        let claimed = meters
            .claim(relay, &dialed(&format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}")))
            .expect("the dialed address, with or without the peer id");
        assert_eq!(claimed.load(Ordering::Relaxed), 5);
        assert!(meters.claim(relay, &dialed("/ip4/127.0.0.1/tcp/1")).is_none(), "claimed once");
        let held: Vec<Meter> = (0..MAX_UNCLAIMED_METERS + 10)
            .map(|_| {
                let meter = Meter::default();
                meters.register(other, dialed("/ip4/127.0.0.1/tcp/3"), &meter);
                meter
            })
            .collect();
        assert_eq!(meters.unclaimed.lock().unwrap().len(), MAX_UNCLAIMED_METERS);
        drop(held);
        // A dropped connection's counter is never handed to the next connection there.
        let (loser, winner) = (Meter::default(), Meter::default());
        meters.register(relay, dialed("/ip4/127.0.0.1/tcp/4"), &loser);
        meters.register(relay, dialed("/ip4/127.0.0.1/tcp/4"), &winner);
        winner.fetch_add(7, Ordering::Relaxed);
        drop(loser);
        let claimed = meters.claim(relay, &dialed("/ip4/127.0.0.1/tcp/4")).expect("the winner");
        assert_eq!(claimed.load(Ordering::Relaxed), 7);
        assert!(meters.unclaimed.lock().unwrap().is_empty(), "the dropped ones are forgotten");
    }
}
