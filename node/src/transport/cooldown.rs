//! A cool-down per endpoint (IP address and port) after a dial that went unanswered.
//!
//! A censor that cuts the border drops packets silently: every dial waits for its connect
//! timeout and fails. Several parts of the node dial on their own schedule (the racing dialer
//! for deliveries, the relay client for circuits and reservations, Kademlia for its queries),
//! so without a common brake a node cut off from the world sends a stream of connection
//! attempts to each foreign host, which costs battery and shows a censor a node that keeps
//! knocking. [`Cooldown`] wraps the swarm's transports: after a dial to an endpoint failed
//! *silently* (it took at least [`SILENT_FAILURE`], so nothing refused it), further dials to
//! that endpoint fail at once for [`COOLDOWN`], doubling with each silent failure in a row up
//! to [`MAX_COOLDOWN`]. A fast failure (a refusal, a reset) says the path answers and sets no
//! cool-down, so a peer that restarts on the same TCP port is dialed again at once (QUIC
//! cannot tell a closed port from silence: its handshake gives up after 5 s either way); a
//! connection this node dials clears the endpoint's record. The cap keeps recovery after a heal within tens of seconds.
//!
//! Hole punching is left alone: a dial that DCUtR makes (one side's carries the listener
//! role; the other's goes to a peer we hold a relayed connection to, [`Shared`]) must go
//! out at its moment, and to the very endpoint a direct dial just found silent.
//!
//! Dials to one endpoint also take turns: one that arrives while another is under way waits
//! for its outcome, then goes out, or fails at once if the first went unanswered. Without
//! turns, the parts of the node that ask at the same moment would each send their own
//! connection attempt into the same silence. The connect timeout ([`super::CONNECT_TIMEOUT`])
//! is kept here rather than by the inner transports, and starts when a dial goes out, so a dial
//! that waited for its turn still gets all of it.
//!
//! A refusal by the cool-down is noted in [`Shared`], so the node can tell it from a failure
//! of the path: it says nothing new about the endpoint and must not count against it a second
//! time.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use libp2p::core::Endpoint as Role;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

/// A failed dial that took at least this long was not refused: its packets went unanswered.
pub const SILENT_FAILURE: Duration = Duration::from_secs(5);

/// How long an endpoint is not dialed after its first silent failure in a row.
pub const COOLDOWN: Duration = Duration::from_secs(10);

/// The longest cool-down, however many silent failures came in a row: once a cut heals, the
/// next dial goes out within this.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(30);

/// Endpoints remembered; the oldest cool-downs make way when a new one would exceed this.
pub const MAX_COOLING: usize = 1024;

/// Endpoints whose dials take turns at once; a dial beyond them goes out without waiting.
pub const MAX_TURNS: usize = 1024;

/// How long a refusal is remembered for the swarm task to read: it learns of a dial's failure
/// as soon as the refusal is made.
pub const REFUSAL_MEMORY: Duration = Duration::from_secs(2);

/// Peers remembered as reachable through a relay (candidates for hole punching); past this, a
/// dial to a new one is treated like any other.
pub const MAX_RELAYED_PEERS: usize = 1024;

/// An IP address and port of one transport, the unit a censor's drop rule and the cool-down
/// apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Endpoint {
    ip: IpAddr,
    port: u16,
    udp: bool,
}

impl Endpoint {
    /// The endpoint a dial of `addr` goes to, if it names an IP address and a port (a DNS
    /// name is resolved before this transport sees it).
    fn of(addr: &Multiaddr) -> Option<Self> {
        // A circuit is the relay transport's, which owns its dials.
        if addr.iter().any(|p| p == Protocol::P2pCircuit) {
            return None;
        }
        let mut ip = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) if ip.is_none() => ip = Some(IpAddr::V4(a)),
                Protocol::Ip6(a) if ip.is_none() => ip = Some(IpAddr::V6(a)),
                Protocol::Tcp(port) => return ip.map(|ip| Self { ip, port, udp: false }),
                Protocol::Udp(port) => return ip.map(|ip| Self { ip, port, udp: true }),
                _ => {}
            }
        }
        None
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = if self.udp { "udp" } else { "tcp" };
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}/{proto}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}/{proto}", self.port),
        }
    }
}

/// The silent failures in a row of one endpoint.
#[derive(Clone, Copy, Debug)]
struct Cooling {
    failures: u32,
    until: Instant,
}

/// The turn of the dials to one endpoint: held by the one under way.
type Turn = Arc<tokio::sync::Mutex<()>>;

/// The cool-downs and the turns.
#[derive(Default)]
struct State {
    cooling: HashMap<Endpoint, Cooling>,
    turns: HashMap<Endpoint, Turn>,
}

/// The cool-downs and turns, shared between the transport and the dials it hands out.
#[derive(Clone, Default)]
struct Book(Arc<Mutex<State>>);

impl Book {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held leaves maps that are still whole: go on with them.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The time left in `endpoint`'s cool-down at `now`, if any.
    fn left(&self, endpoint: Endpoint, now: Instant) -> Option<Duration> {
        let state = self.state();
        let c = state.cooling.get(&endpoint)?;
        (c.until > now).then(|| c.until - now)
    }

    /// The turn of `endpoint`'s dials, unless [`MAX_TURNS`] endpoints are dialed already.
    fn turn(&self, endpoint: Endpoint) -> Option<Turn> {
        let mut state = self.state();
        if !state.turns.contains_key(&endpoint) && state.turns.len() >= MAX_TURNS {
            // A turn only the map holds belongs to no dial (its dial was dropped unfinished).
            state.turns.retain(|_, t| Arc::strong_count(t) > 1);
            if state.turns.len() >= MAX_TURNS {
                return None;
            }
        }
        Some(state.turns.entry(endpoint).or_default().clone())
    }

    /// A dial to `endpoint` is over: its turn goes when no other dial waits for it.
    fn release(&self, endpoint: Endpoint, turn: Turn) {
        let mut state = self.state();
        // The map's reference and `turn` itself: nobody else holds it.
        if Arc::strong_count(&turn) <= 2 {
            state.turns.remove(&endpoint);
        }
    }

    fn failed_silently(&self, endpoint: Endpoint, now: Instant) {
        let mut state = self.state();
        let book = &mut state.cooling;
        if !book.contains_key(&endpoint) && book.len() >= MAX_COOLING {
            // Make way: the cool-downs that ended first are the least worth keeping.
            book.retain(|_, c| c.until > now);
            if book.len() >= MAX_COOLING {
                let oldest = book.iter().min_by_key(|(_, c)| c.until).map(|(e, _)| *e);
                if let Some(e) = oldest {
                    book.remove(&e);
                }
            }
        }
        let failures = book.get(&endpoint).map_or(0, |c| c.failures).saturating_add(1);
        book.insert(endpoint, Cooling { failures, until: now + cooldown(failures) });
    }

    fn connected(&self, endpoint: Endpoint) {
        self.state().cooling.remove(&endpoint);
    }
}

/// Why a dial was refused without going out: its endpoint is in its cool-down.
#[derive(Debug)]
pub struct CoolingDown {
    endpoint: Endpoint,
    left: Duration,
}

impl std::fmt::Display for CoolingDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} left the last dial unanswered; not dialed again for {} s",
            self.endpoint,
            self.left.as_secs().max(1)
        )
    }
}

impl std::error::Error for CoolingDown {}

/// The error of a dial refused during its endpoint's cool-down.
fn refusal(endpoint: Endpoint, left: Duration) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, CoolingDown { endpoint, left })
}

/// The dial `dial`, given up with a timeout error after [`super::CONNECT_TIMEOUT`] from its
/// first poll.
async fn within_connect_timeout<O>(dial: impl Future<Output = io::Result<O>>) -> io::Result<O> {
    match tokio::time::timeout(super::CONNECT_TIMEOUT, dial).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no connection within {} s (the connect timeout)",
                super::CONNECT_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The cool-down after `failures` silent failures in a row.
pub fn cooldown(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(8);
    COOLDOWN.saturating_mul(1 << doublings).min(MAX_COOLDOWN)
}

/// What the cool-down shares with the swarm task: the peers this node holds a relayed
/// connection to (kept by the swarm task: DCUtR dials them directly to punch a hole, which the
/// cool-down must not delay), and the endpoints whose dials it has just refused (read by the
/// swarm task, which must not count a refusal as a failure of the path: the errors libp2p
/// hands it have been wrapped by layers that hide their cause).
#[derive(Clone, Default)]
pub struct Shared {
    relayed: Arc<Mutex<HashSet<PeerId>>>,
    refused: Arc<Mutex<HashMap<Endpoint, Instant>>>,
}

impl Shared {
    fn peers(&self) -> std::sync::MutexGuard<'_, HashSet<PeerId>> {
        self.relayed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refusals(&self) -> std::sync::MutexGuard<'_, HashMap<Endpoint, Instant>> {
        self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records whether `peer` has a relayed connection to this node.
    pub fn set_relayed(&self, peer: PeerId, relayed: bool) {
        let mut peers = self.peers();
        if !relayed {
            peers.remove(&peer);
        } else if peers.len() < MAX_RELAYED_PEERS {
            peers.insert(peer);
        }
    }

    /// Whether a dial of `addr` (which ends in the peer's `/p2p/` id) may be a hole punch.
    fn covers(&self, addr: &Multiaddr) -> bool {
        match addr.iter().last() {
            Some(Protocol::P2p(peer)) => self.peers().contains(&peer),
            _ => false,
        }
    }

    fn note_refusal(&self, endpoint: Endpoint, now: Instant) {
        let mut refused = self.refusals();
        if refused.len() >= MAX_COOLING {
            refused.retain(|_, at| now.saturating_duration_since(*at) < REFUSAL_MEMORY);
            if refused.len() >= MAX_COOLING {
                refused.clear();
            }
        }
        refused.insert(endpoint, now);
    }

    /// Whether the cool-down refused a dial of `addr`'s endpoint within the last
    /// [`REFUSAL_MEMORY`]: a failed dial of it then was that refusal, not a new failure. (A
    /// silent failure is reported after 5 s or more, and sets the cool-down that refuses the
    /// dials after it, never one before it.)
    pub fn refused_recently(&self, addr: &Multiaddr) -> bool {
        let Some(endpoint) = Endpoint::of(addr) else { return false };
        self.refusals().get(&endpoint).is_some_and(|at| at.elapsed() < REFUSAL_MEMORY)
    }
}

/// A transport whose dials to an endpoint in its cool-down fail at once.
pub struct Cooldown<T> {
    inner: T,
    book: Book,
    shared: Shared,
}

impl<T> Cooldown<T> {
    /// `inner`, with the cool-down in front of its dials except hole punches, sharing
    /// `shared` with the swarm task.
    pub fn new(inner: T, shared: Shared) -> Self {
        Self { inner, book: Book::default(), shared }
    }
}

/// One dial under way to an endpoint. Dropped unfinished (the swarm gave up on it) after
/// [`SILENT_FAILURE`] or more of silence, it counts as a silent failure: the endpoint did not
/// answer in that time either. Dropped in any way, it gives up its turn.
struct Attempt {
    book: Book,
    endpoint: Endpoint,
    turn: Option<Turn>,
    /// When the connection attempt went out; `None` before and after.
    started: Option<Instant>,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if self.started.is_some_and(|s| s.elapsed() >= SILENT_FAILURE) {
            self.book.failed_silently(self.endpoint, Instant::now());
        }
        if let Some(t) = self.turn.take() {
            self.book.release(self.endpoint, t);
        }
    }
}

impl<T> libp2p::core::Transport for Cooldown<T>
where
    T: libp2p::core::Transport<Error = io::Error> + Unpin,
    T::Dial: Send + 'static,
    T::Output: 'static,
{
    type Output = T::Output;
    type Error = io::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = BoxFuture<'static, io::Result<T::Output>>;

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
        let endpoint = if opts.role == Role::Listener || self.shared.covers(&addr) {
            None
        } else {
            Endpoint::of(&addr)
        };
        let now = Instant::now();
        if let Some((e, left)) = endpoint.and_then(|e| Some((e, self.book.left(e, now)?))) {
            self.shared.note_refusal(e, now);
            return Err(TransportError::Other(refusal(e, left)));
        }
        // The inner dial is made now, so that an address it does not support is refused now;
        // it sends nothing until polled, after its turn has come.
        let dial = self.inner.dial(addr, opts)?;
        let Some(e) = endpoint else { return Ok(within_connect_timeout(dial).boxed()) };
        let turn = self.book.turn(e);
        let mut attempt = Attempt { book: self.book.clone(), endpoint: e, turn, started: None };
        let shared = self.shared.clone();
        Ok(async move {
            let held = match &attempt.turn {
                Some(t) => Some(t.clone().lock_owned().await),
                None => None,
            };
            let now = Instant::now();
            if let Some(left) = attempt.book.left(e, now) {
                // The dial before this one went unanswered meanwhile.
                shared.note_refusal(e, now);
                return Err(refusal(e, left));
            }
            attempt.started = Some(now);
            let result = within_connect_timeout(dial).await;
            match &result {
                Ok(_) => attempt.book.connected(e),
                Err(_) if now.elapsed() >= SILENT_FAILURE => {
                    attempt.book.failed_silently(e, Instant::now());
                }
                Err(_) => {}
            }
            // Finished: its outcome is recorded, and dropping it records nothing more.
            attempt.started.take();
            drop(held);
            result
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    //! The cool-down with an inner transport whose dials succeed, are refused or go
    //! unanswered, on paused tokio time.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use libp2p::core::Transport as _;
    use libp2p::core::transport::DialOpts;
    use libp2p::core::transport::PortUse;

    use super::*;

    /// How a dial of the test transport ends: by the port it dials.
    const ANSWERS: u16 = 1;
    const REFUSES: u16 = 2;
    const SILENT: u16 = 3;
    const SLOW: u16 = 4;
    const HANGS: u16 = 5;

    /// A transport that counts the dials it makes.
    #[derive(Default)]
    struct Counting {
        dials: Arc<AtomicUsize>,
    }

    impl libp2p::core::Transport for Counting {
        type Output = ();
        type Error = io::Error;
        type ListenerUpgrade = futures::future::Ready<io::Result<()>>;
        type Dial = BoxFuture<'static, io::Result<()>>;

        fn listen_on(
            &mut self,
            _: ListenerId,
            a: Multiaddr,
        ) -> Result<(), TransportError<io::Error>> {
            Err(TransportError::MultiaddrNotSupported(a))
        }

        fn remove_listener(&mut self, _: ListenerId) -> bool {
            false
        }

        fn dial(
            &mut self,
            a: Multiaddr,
            _: DialOpts,
        ) -> Result<Self::Dial, TransportError<io::Error>> {
            let port = Endpoint::of(&a).map_or(0, |e| e.port);
            let dials = self.dials.clone();
            Ok(async move {
                // Counted when polled: that is when a real transport sends its first packet.
                dials.fetch_add(1, Ordering::SeqCst);
                match port {
                    ANSWERS => Ok(()),
                    REFUSES => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
                    SLOW => {
                        tokio::time::sleep(Duration::from_secs(8)).await;
                        Ok(())
                    }
                    HANGS => futures::future::pending().await,
                    _ => {
                        tokio::time::sleep(Duration::from_secs(20)).await;
                        Err(io::Error::from(io::ErrorKind::TimedOut))
                    }
                }
            }
            .boxed())
        }

        fn poll(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
            Poll::Pending
        }
    }

    fn opts() -> DialOpts {
        DialOpts { role: Role::Dialer, port_use: PortUse::New }
    }

    fn addr(port: u16) -> Multiaddr {
        Multiaddr::empty().with(Protocol::Ip4([203, 0, 113, 10].into())).with(Protocol::Tcp(port))
    }

    /// Dials `port` once: whether the dial reached the inner transport and how it ended.
    async fn dial_once(t: &mut Cooldown<Counting>, port: u16) -> (bool, bool) {
        let before = t.inner.dials.load(Ordering::SeqCst);
        let ok = match t.dial(addr(port), opts()) {
            Ok(dial) => dial.await.is_ok(),
            Err(_) => false,
        };
        (t.inner.dials.load(Ordering::SeqCst) > before, ok)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_endpoint_is_not_dialed_again_until_its_cooldown_ends() {
        let mut t = Cooldown::new(Counting::default(), Shared::default());
        assert_eq!(dial_once(&mut t, SILENT).await, (true, false));
        // At once and just before the cool-down ends: refused without a packet.
        assert_eq!(dial_once(&mut t, SILENT).await, (false, false));
        tokio::time::advance(COOLDOWN - Duration::from_millis(1)).await;
        assert_eq!(dial_once(&mut t, SILENT).await, (false, false));
        // Another port of the same host is another endpoint (the racing dialer's fallback).
        assert_eq!(dial_once(&mut t, ANSWERS).await, (true, true));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(dial_once(&mut t, SILENT).await, (true, false));
        // The second silent failure in a row doubles the cool-down.
        tokio::time::advance(COOLDOWN).await;
        assert_eq!(dial_once(&mut t, SILENT).await, (false, false));
        tokio::time::advance(COOLDOWN).await;
        assert_eq!(dial_once(&mut t, SILENT).await, (true, false));
    }

    #[tokio::test(start_paused = true)]
    async fn dials_to_one_endpoint_take_turns() {
        let mut t = Cooldown::new(Counting::default(), Shared::default());
        // Two at once into silence: the second waits for the first and goes nowhere.
        let first = t.dial(addr(SILENT), opts()).expect("not refused");
        let second = t.dial(addr(SILENT), opts()).expect("not refused");
        let (a, b) = futures::join!(first, second);
        assert!(a.is_err() && b.is_err());
        assert_eq!(t.inner.dials.load(Ordering::SeqCst), 1);
        // Two at once to an endpoint that answers: both go out, one after the other.
        let first = t.dial(addr(ANSWERS), opts()).expect("not refused");
        let second = t.dial(addr(ANSWERS), opts()).expect("not refused");
        let (a, b) = futures::join!(first, second);
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(t.inner.dials.load(Ordering::SeqCst), 3);
        // Nothing is left waiting: the turns are gone.
        assert!(t.book.state().turns.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dial_given_up_after_long_silence_counts_as_unanswered() {
        let mut t = Cooldown::new(Counting::default(), Shared::default());
        let dial = t.dial(addr(SILENT), opts()).expect("not refused");
        let given_up = tokio::time::timeout(SILENT_FAILURE, dial).await;
        assert!(given_up.is_err(), "the silent dial ended on its own");
        assert_eq!(dial_once(&mut t, SILENT).await, (false, false));
        // Given up sooner, it says nothing of the endpoint.
        tokio::time::advance(MAX_COOLDOWN).await;
        let dial = t.dial(addr(SILENT), opts()).expect("not refused");
        assert!(tokio::time::timeout(Duration::from_secs(1), dial).await.is_err());
        assert_eq!(dial_once(&mut t, ANSWERS).await, (true, true));
        assert!(
            t.book
                .left(Endpoint::of(&addr(SILENT)).expect("an endpoint"), Instant::now())
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hole_punches_pass_a_cooling_endpoint() {
        let hole_punch = Shared::default();
        let mut t = Cooldown::new(Counting::default(), hole_punch.clone());
        assert_eq!(dial_once(&mut t, SILENT).await, (true, false));
        assert_eq!(dial_once(&mut t, SILENT).await, (false, false));
        // DCUtR's listener side dials with the listener role.
        let listener =
            DialOpts { role: libp2p::core::Endpoint::Listener, port_use: PortUse::Reuse };
        let before = t.inner.dials.load(Ordering::SeqCst);
        // Polled once (the inner dial counts itself then), and given up long before the
        // cool-down ends.
        let dial = t.dial(addr(SILENT), listener).expect("not refused");
        let _ = tokio::time::timeout(Duration::from_millis(1), dial).await;
        assert_eq!(t.inner.dials.load(Ordering::SeqCst), before + 1);
        // Its dialer side dials a peer this node holds a relayed connection to.
        let peer = PeerId::random();
        let to_peer = addr(SILENT).with(Protocol::P2p(peer));
        assert!(t.dial(to_peer.clone(), opts()).is_err());
        hole_punch.set_relayed(peer, true);
        let dial = t.dial(to_peer.clone(), opts()).expect("not refused");
        let _ = tokio::time::timeout(Duration::from_millis(1), dial).await;
        assert_eq!(t.inner.dials.load(Ordering::SeqCst), before + 2);
        hole_punch.set_relayed(peer, false);
        assert!(t.dial(to_peer, opts()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_dial_sets_no_cooldown() {
        let mut t = Cooldown::new(Counting::default(), Shared::default());
        assert_eq!(dial_once(&mut t, REFUSES).await, (true, false));
        assert_eq!(dial_once(&mut t, REFUSES).await, (true, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dial_that_waited_for_its_turn_still_gets_the_whole_connect_timeout() {
        let mut t = Cooldown::new(Counting::default(), Shared::default());
        // Each takes 8 s of the 10 s timeout; the second waits 8 s for its turn first.
        let first = t.dial(addr(SLOW), opts()).expect("not refused");
        let second = t.dial(addr(SLOW), opts()).expect("not refused");
        let (a, b) = futures::join!(first, second);
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        // A dial that never ends is given up at the timeout.
        let started = Instant::now();
        let dial = t.dial(addr(HANGS), opts()).expect("not refused");
        let hung = tokio::time::timeout(super::super::CONNECT_TIMEOUT * 3, dial).await;
        assert!(matches!(hung, Ok(Err(_))), "the hung dial was not given up: {hung:?}");
        assert_eq!(started.elapsed(), super::super::CONNECT_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_noted_for_the_swarm_task_and_a_failure_is_not() {
        let shared = Shared::default();
        let mut t = Cooldown::new(Counting::default(), shared.clone());
        // The silent failure itself is not a refusal.
        assert_eq!(dial_once(&mut t, SILENT).await, (true, false));
        assert!(!shared.refused_recently(&addr(SILENT)));
        // The dial refused during the cool-down is, for a moment.
        assert_eq!(dial_once(&mut t, SILENT).await, (false, false));
        assert!(shared.refused_recently(&addr(SILENT)));
        assert!(!shared.refused_recently(&addr(ANSWERS)));
        tokio::time::advance(REFUSAL_MEMORY).await;
        assert!(!shared.refused_recently(&addr(SILENT)));
    }

    #[test]
    fn the_cooldown_doubles_up_to_its_cap() {
        assert_eq!(cooldown(1), COOLDOWN);
        assert_eq!(cooldown(2), COOLDOWN * 2);
        assert_eq!(cooldown(3), MAX_COOLDOWN);
        assert_eq!(cooldown(u32::MAX), MAX_COOLDOWN);
    }

    #[test]
    fn the_book_stays_within_its_bound() {
        let book = Book::default();
        let now = Instant::now();
        for i in 0..(MAX_COOLING as u32 + 10) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            book.failed_silently(Endpoint { ip, port: 1, udp: false }, now);
        }
        assert_eq!(book.state().cooling.len(), MAX_COOLING);
    }

    #[test]
    fn endpoints_are_read_from_addresses() {
        let stealth: Multiaddr = "/ip4/203.0.113.10/tcp/443/tls/http".parse().unwrap();
        assert_eq!(
            Endpoint::of(&stealth).map(|e| e.to_string()),
            Some("203.0.113.10:443/tcp".into())
        );
        let quic: Multiaddr = "/ip6/::1/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(Endpoint::of(&quic).map(|e| e.to_string()), Some("[::1]:4001/udp".into()));
        let circuit: Multiaddr =
            "/ip4/203.0.113.10/tcp/4001/p2p/12D3KooWEmKLbatUPwC4mnEMuyckP79CgS1SobopLrBGhfrJoqkK/p2p-circuit"
                .parse()
                .unwrap();
        assert_eq!(Endpoint::of(&circuit), None);
    }
}
