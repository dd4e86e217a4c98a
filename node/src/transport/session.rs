//! Stealth tunnels that outlive their TCP connections (`kolokol_protocol::tunnel`, PROTOCOL
//! section 13.8): a censor that freezes every connection to a foreign host after some
//! kilobytes (T10) then costs a new TCP and TLS handshake every dozen kilobytes, instead of a
//! new libp2p connection, reservation and circuits.
//!
//! A session is the byte stream libp2p reads and writes. Below it, one connection at a time
//! (a "carrier") carries its frames: a reader task and a writer task per carrier, a supervisor
//! task per session that replaces the carrier. The client opens a new carrier when the current
//! one is lost, stalls (nothing heard for [`CARRIER_STALL`] while its data waits for an
//! acknowledgement), or nears the byte count at which a connection to the same address group
//! froze before (`Meters::carrier_budget`); the listener then sends at most the limit the
//! client named and waits. Each side keeps what it sent until the other acknowledges it
//! ([`MAX_UNACKED`], after which writes wait) and resends it on the next carrier from the
//! count the other says it has. A listener keeps a session without a carrier for
//! [`RESUME_WINDOW`], and at most [`MAX_SESSIONS`] sessions.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use kolokol_protocol::tunnel::{
    ACK_LEN, Answer, DATA_HEADER_LEN, Frame, Offer, SESSION_ID_LEN, decode, encode_ack,
    encode_data, encode_fin,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::transport::meter::{Group, Meter, Meters};

/// Bytes written and not yet acknowledged that a session keeps; past this, writes wait.
pub const MAX_UNACKED: usize = 128 * 1024;

/// Bytes received and not yet read that a session holds; past this its carrier is not read.
pub const MAX_INBOX: usize = 64 * 1024;

/// How long received data may wait for its acknowledgement when nothing goes the other way.
pub const ACK_DELAY: Duration = Duration::from_millis(50);

/// Received bytes after which an acknowledgement goes at once (but see [`ACK_MIN_GAP`]).
pub const ACK_EVERY: u64 = 32 * 1024;

/// The least time between two acknowledgements sent without data: each costs a TLS record and
/// a packet, which a censor's count sees (T10) and a frame limit does not.
pub const ACK_MIN_GAP: Duration = Duration::from_millis(10);

/// A carrier that has heard nothing for this long while our data waits for its
/// acknowledgement is taken for frozen, and the client opens another.
pub const CARRIER_STALL: Duration = Duration::from_secs(3);

/// How long a session lives without a carrier: the client's attempts to open one, and the
/// listener's wait for them.
pub const RESUME_WINDOW: Duration = Duration::from_secs(30);

/// How long opening one carrier (TCP, TLS, the upgrade) may take.
pub const CARRIER_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions a listener holds at once; a client beyond it gets the plain tunnel.
pub const MAX_SESSIONS: usize = 1024;

/// Resumptions waiting for their session's supervisor.
const RESUME_QUEUE: usize = 4;

/// Data one frame carries at most. Smaller than the format allows (`tunnel::MAX_DATA`), so that
/// a carrier that freezes before any budget is known has delivered whole frames up to a few
/// kilobytes before the freeze, not a part of one that is thrown away.
const FRAME_DATA: usize = 4 * 1024;

/// Bytes one write to a carrier gathers at most.
const WRITE_BATCH: usize = 64 * 1024;

/// How often a client's supervisor looks at its carrier's count and silence.
const CLIENT_TICK: Duration = Duration::from_millis(250);

/// How long a closed session waits for its last bytes and its end frame to be written.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A limit below this is raised to it: every carrier must carry something.
pub const MIN_LIMIT: u64 = 1024;

/// The longest wait between two attempts at a carrier that keep failing at once.
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(4);

/// The first such wait.
const FIRST_REOPEN_DELAY: Duration = Duration::from_millis(250);

/// A session id.
pub type SessionId = [u8; SESSION_ID_LEN];

/// A carrier: TLS (or, behind a reverse proxy, plain HTTP) after its upgrade.
pub trait Carrier: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Carrier for T {}

/// A boxed carrier.
pub type BoxCarrier = Box<dyn Carrier>;

#[derive(Default)]
struct State {
    /// Written and not yet acknowledged, from stream offset `acked`.
    unacked: Vec<u8>,
    acked: u64,
    /// Sent on the current carrier up to this offset.
    sent: u64,
    /// Received and not yet read.
    inbox: Vec<u8>,
    received: u64,
    /// The last count we acknowledged, when the next acknowledgement is due, and when the
    /// last one went without data.
    ack_sent: u64,
    ack_due: Option<Instant>,
    ack_alone: Option<Instant>,
    /// The current carrier's generation; tasks of another one stop.
    carrier: u64,
    /// Frame bytes sent and received on the current carrier.
    carrier_sent: u64,
    carrier_received: u64,
    /// The most frame bytes we may send on the current carrier (the client's limit).
    send_limit: Option<u64>,
    /// The limit we gave the listener for the current carrier (client).
    peer_limit: Option<u64>,
    /// When the current carrier last brought something, and since when sent data waits for
    /// its acknowledgement.
    heard: Option<Instant>,
    waiting_since: Option<Instant>,
    /// The current carrier failed or ended.
    lost: bool,
    /// The current carrier has carried what it may (client).
    exhausted: bool,
    /// libp2p dropped or shut down its side: send an end frame after the data.
    fin_queued: bool,
    fin_sent: bool,
    closed: bool,
    peer_fin: bool,
    /// Why the session ended, if it did.
    failed: Option<String>,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl State {
    fn wake_app(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    fn fail(&mut self, why: impl Into<String>) {
        if self.failed.is_none() {
            self.failed = Some(why.into());
        }
        self.wake_app();
    }

    fn end(&self) -> u64 {
        self.acked + self.unacked.len() as u64
    }

    /// Applies one frame from the peer; an error ends the session.
    fn apply(&mut self, frame: Frame<'_>, now: Instant) -> Result<(), String> {
        match frame {
            Frame::Data(data) => {
                if self.peer_fin {
                    return Err("data after the end frame".into());
                }
                self.inbox.extend_from_slice(data);
                self.received += data.len() as u64;
                let due =
                    if self.received - self.ack_sent >= ACK_EVERY { now } else { now + ACK_DELAY };
                self.ack_due = Some(self.ack_due.map_or(due, |t| t.min(due)));
                if let Some(w) = self.reader.take() {
                    w.wake();
                }
            }
            Frame::Ack(offset) => {
                if offset > self.sent.max(self.acked) {
                    return Err(format!(
                        "an acknowledgement of {offset} bytes, {} sent",
                        self.sent
                    ));
                }
                if offset > self.acked {
                    let n = (offset - self.acked) as usize;
                    self.unacked.drain(..n);
                    self.acked = offset;
                    self.waiting_since = (self.sent > self.acked).then_some(now);
                    if let Some(w) = self.writer.take() {
                        w.wake();
                    }
                }
            }
            Frame::Fin => {
                self.peer_fin = true;
                if let Some(w) = self.reader.take() {
                    w.wake();
                }
            }
        }
        Ok(())
    }

    /// Gathers what is due on the carrier into `out`: an acknowledgement, data, the end
    /// frame; returns when the next acknowledgement falls due if it waits.
    fn gather(&mut self, out: &mut Vec<u8>, now: Instant) -> Option<Instant> {
        let mut room = self.send_limit.map_or(u64::MAX, |l| l.saturating_sub(self.carrier_sent));
        let has_data = self.sent < self.end() && room > DATA_HEADER_LEN as u64;
        // An acknowledgement alone waits for its due time and for the gap after the last one.
        let alone_at = self.ack_due.map(|t| t.max(self.ack_alone.map_or(t, |a| a + ACK_MIN_GAP)));
        if self.received > self.ack_sent
            && (has_data || alone_at.is_some_and(|t| t <= now))
            && room >= ACK_LEN as u64
        {
            encode_ack(out, self.received);
            self.ack_sent = self.received;
            self.ack_due = None;
            if !has_data {
                self.ack_alone = Some(now);
            }
            room -= ACK_LEN as u64;
        }
        while self.sent < self.end() && out.len() < WRITE_BATCH {
            if room <= DATA_HEADER_LEN as u64 {
                break;
            }
            let start = (self.sent - self.acked) as usize;
            let take = (self.unacked.len() - start)
                .min(FRAME_DATA)
                .min((room - DATA_HEADER_LEN as u64) as usize);
            let n = encode_data(out, &self.unacked[start..start + take]);
            self.sent += n as u64;
            room -= (DATA_HEADER_LEN + n) as u64;
            if self.waiting_since.is_none() {
                self.waiting_since = Some(now);
            }
        }
        if self.fin_queued && !self.fin_sent && self.sent == self.end() && room >= 1 {
            encode_fin(out);
            self.fin_sent = true;
        }
        self.carrier_sent += out.len() as u64;
        // Nothing to wait for when the limit leaves no room for an acknowledgement: the next
        // carrier brings it (waking for it would spin).
        let room_left =
            self.send_limit.is_none_or(|l| l.saturating_sub(self.carrier_sent) >= ACK_LEN as u64);
        if self.received > self.ack_sent && room_left {
            self.ack_due.map(|t| t.max(self.ack_alone.map_or(t, |a| a + ACK_MIN_GAP)))
        } else {
            None
        }
    }

    /// Whether the peer may resume from `peer_received`: it cannot have less than it
    /// acknowledged, nor more than was written.
    fn can_resume_from(&self, peer_received: u64) -> bool {
        (self.acked..=self.end()).contains(&peer_received)
    }

    /// Starts carrier `generation` after the peer said it has received `peer_received`.
    fn begin_carrier(&mut self, peer_received: u64, now: Instant) -> Result<u64, String> {
        if !self.can_resume_from(peer_received) {
            return Err(format!(
                "the peer has {peer_received} bytes, but {} were acknowledged and {} written",
                self.acked,
                self.end()
            ));
        }
        let n = (peer_received - self.acked) as usize;
        self.unacked.drain(..n);
        self.acked = peer_received;
        self.sent = peer_received;
        if n > 0
            && let Some(w) = self.writer.take()
        {
            w.wake();
        }
        // An end frame sent on the old carrier may not have arrived; the peer ignores a second.
        self.fin_sent = false;
        self.carrier += 1;
        self.carrier_sent = 0;
        self.carrier_received = 0;
        self.lost = false;
        self.exhausted = false;
        self.heard = Some(now);
        self.waiting_since = None;
        // The offer or the answer told the peer what we have.
        self.ack_sent = self.received;
        self.ack_due = None;
        Ok(self.carrier)
    }
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the carrier's writer: data, an acknowledgement or the end frame to send.
    send: Notify,
    /// Wakes the carrier's reader: room in the inbox.
    room: Notify,
    /// Wakes the supervisor: a carrier lost or spent, the session closed.
    event: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn carrier_lost(&self, generation: u64) {
        let mut s = self.lock();
        if s.carrier == generation {
            s.lost = true;
            drop(s);
            self.event.notify_one();
        }
    }
}

/// The tasks of one carrier.
struct Tasks(JoinHandle<()>, JoinHandle<()>);

impl Tasks {
    fn start(
        shared: &Arc<Shared>,
        generation: u64,
        carrier: BoxCarrier,
        progress: Option<Meter>,
    ) -> Self {
        let (rd, wr) = tokio::io::split(carrier);
        Tasks(
            tokio::spawn(read_carrier(shared.clone(), generation, rd, progress)),
            tokio::spawn(write_carrier(shared.clone(), generation, wr)),
        )
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.abort();
        self.1.abort();
    }
}

async fn read_carrier(
    shared: Arc<Shared>,
    generation: u64,
    mut rd: tokio::io::ReadHalf<BoxCarrier>,
    progress: Option<Meter>,
) {
    let mut pending = Vec::with_capacity(2 * kolokol_protocol::tunnel::MAX_DATA);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        loop {
            let room = shared.room.notified();
            {
                let s = shared.lock();
                if s.carrier != generation {
                    return;
                }
                if s.inbox.len() < MAX_INBOX {
                    break;
                }
            }
            room.await;
        }
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return shared.carrier_lost(generation),
            Ok(n) => n,
        };
        if let Some(m) = &progress {
            m.fetch_add(n as u64, Ordering::Relaxed);
        }
        pending.extend_from_slice(&chunk[..n]);
        let now = Instant::now();
        let mut s = shared.lock();
        if s.carrier != generation {
            return;
        }
        s.heard = Some(now);
        s.carrier_received += n as u64;
        let mut at = 0;
        loop {
            match decode(&pending[at..]) {
                Ok(Some((frame, len))) => {
                    at += len;
                    if let Err(why) = s.apply(frame, now) {
                        s.fail(format!("the tunnel's peer sent {why}"));
                        drop(s);
                        shared.event.notify_one();
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    s.fail(e.to_string());
                    drop(s);
                    shared.event.notify_one();
                    return;
                }
            }
        }
        pending.drain(..at);
        let spent = s.peer_limit.is_some_and(|l| {
            l.saturating_sub(s.carrier_received) < (ACK_LEN + DATA_HEADER_LEN) as u64
        });
        let ack = s.ack_due.is_some();
        if spent && !s.exhausted {
            s.exhausted = true;
            drop(s);
            shared.event.notify_one();
        } else {
            drop(s);
        }
        if ack {
            shared.send.notify_one();
        }
    }
}

async fn write_carrier(
    shared: Arc<Shared>,
    generation: u64,
    mut wr: tokio::io::WriteHalf<BoxCarrier>,
) {
    let mut out = Vec::with_capacity(WRITE_BATCH + kolokol_protocol::tunnel::MAX_DATA);
    loop {
        let wake = shared.send.notified();
        let next_ack = {
            let mut s = shared.lock();
            if s.carrier != generation {
                return;
            }
            out.clear();
            s.gather(&mut out, Instant::now())
        };
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
                return shared.carrier_lost(generation);
            }
            continue;
        }
        match next_ack {
            Some(at) => {
                tokio::select! {
                    () = wake => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => wake.await,
        }
    }
}

/// The byte stream libp2p reads and writes.
pub struct Session {
    shared: Arc<Shared>,
}

impl Session {
    fn new() -> (Self, Arc<Shared>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            send: Notify::new(),
            room: Notify::new(),
            event: Notify::new(),
        });
        (Session { shared: shared.clone() }, shared)
    }
}

impl AsyncRead for Session {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = self.shared.lock();
        if !s.inbox.is_empty() {
            let n = s.inbox.len().min(buf.remaining());
            buf.put_slice(&s.inbox[..n]);
            let was_full = s.inbox.len() >= MAX_INBOX;
            s.inbox.drain(..n);
            drop(s);
            if was_full {
                self.shared.room.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        if s.peer_fin {
            return Poll::Ready(Ok(()));
        }
        if let Some(why) = &s.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, why.clone())));
        }
        s.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for Session {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.shared.lock();
        if let Some(why) = &s.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, why.clone())));
        }
        if s.fin_queued {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the tunnel was shut down for writing",
            )));
        }
        let room = MAX_UNACKED.saturating_sub(s.unacked.len());
        if room == 0 {
            s.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        s.unacked.extend_from_slice(&buf[..n]);
        drop(s);
        self.shared.send.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are the writer task's at once; it sends them as soon as it runs.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.lock().fin_queued = true;
        self.shared.send.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        {
            let mut s = self.shared.lock();
            s.fin_queued = true;
            s.closed = true;
        }
        self.shared.send.notify_one();
        self.shared.event.notify_one();
    }
}

/// Waits, after libp2p closed the session, for the writer to send what is left and the end
/// frame (or for the carrier to go).
async fn linger(shared: &Shared) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        loop {
            let event = shared.event.notified();
            {
                let s = shared.lock();
                // Done when the peer has everything, end frame included as far as we can tell
                // (it acknowledges data, not the end frame), or when nothing more can go.
                if (s.fin_sent && s.acked == s.end()) || s.lost || s.failed.is_some() {
                    return;
                }
            }
            // The writer does not wake the supervisor; look again shortly.
            let _ = tokio::time::timeout(Duration::from_millis(20), event).await;
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The client side.

/// How a client opens a carrier: the TCP and TLS connection, then the upgrade with an offer.
pub trait Opener: Send + Sync + 'static {
    /// Connects and runs TLS, up to the upgrade; `meter` counts the carrier's socket.
    fn connect(&self, meter: Meter) -> futures::future::BoxFuture<'static, io::Result<BoxCarrier>>;

    /// Sends the upgrade request with `offer` on `carrier` and returns the listener's answer
    /// (an error if it took no session: the session is gone).
    fn upgrade<'a>(
        &'a self,
        carrier: &'a mut BoxCarrier,
        offer: Offer,
    ) -> futures::future::BoxFuture<'a, io::Result<Option<Answer>>>;
}

/// What a client knows to decide when a carrier is spent.
pub struct Budget {
    /// Where budgets are kept.
    pub meters: Meters,
    /// The address group of the listener.
    pub group: Group,
}

impl Budget {
    fn of(budget: Option<&Budget>) -> Option<u64> {
        budget.and_then(|b| b.meters.carrier_budget(b.group))
    }
}

/// The limit to name in an offer on a carrier that has received `so_far` socket bytes, under
/// `budget` socket bytes: what is left, less a margin for what the count of frames leaves out
/// (TLS records, packet headers, the acknowledgements of what we send): seven tenths.
pub fn limit_under(budget: Option<u64>, so_far: u64) -> Option<u64> {
    budget.map(|b| (b.saturating_sub(so_far) / 10 * 7).max(MIN_LIMIT))
}

/// Opens a session on `carrier`, which `opener` connected (its socket counted in
/// `carrier_meter`): sends the offer and returns the session, or the carrier back if the
/// listener does not know sessions. `progress` counts what every later carrier receives, for
/// the swarm task's stall watch.
pub async fn open_client(
    opener: Arc<dyn Opener>,
    mut carrier: BoxCarrier,
    carrier_meter: Meter,
    budget: Option<Budget>,
    progress: Option<Meter>,
) -> io::Result<Result<Session, BoxCarrier>> {
    let mut id = [0u8; SESSION_ID_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    let limit = limit_under(Budget::of(budget.as_ref()), carrier_meter.load(Ordering::Relaxed));
    let Some(answer) = opener.upgrade(&mut carrier, Offer { id, resume: None, limit }).await?
    else {
        return Ok(Err(carrier));
    };
    let (session, shared) = Session::new();
    let generation = {
        let mut s = shared.lock();
        s.peer_limit = limit;
        s.begin_carrier(answer.received, Instant::now())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
    };
    let tasks = Tasks::start(&shared, generation, carrier, None);
    let client = Client {
        shared,
        opener,
        id,
        budget,
        progress,
        carrier_meter,
        tasks: Some(tasks),
        last_stall: None,
        delay: FIRST_REOPEN_DELAY,
    };
    tokio::spawn(client.supervise());
    Ok(Ok(session))
}

struct Client {
    shared: Arc<Shared>,
    opener: Arc<dyn Opener>,
    id: SessionId,
    budget: Option<Budget>,
    progress: Option<Meter>,
    carrier_meter: Meter,
    tasks: Option<Tasks>,
    /// The socket count at which an earlier carrier stalled, if one did after a count that
    /// looks like a censor's volume limit.
    last_stall: Option<u64>,
    /// The wait before the next attempt when carriers keep failing at once.
    delay: Duration,
}

/// Why a client replaces its carrier.
#[derive(Debug, PartialEq, Eq)]
enum Replace {
    Lost,
    Spent,
    Stalled(u64),
}

impl Client {
    async fn supervise(mut self) {
        let mut tick = tokio::time::interval(CLIENT_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        loop {
            let event = shared.event.notified();
            let (closed, failed, replace) = {
                let s = shared.lock();
                (s.closed, s.failed.is_some(), self.replace(&s, Instant::now()))
            };
            if closed {
                linger(&shared).await;
                return;
            }
            if failed {
                return;
            }
            if let Some(why) = replace {
                self.learn(&why);
                let carried = shared.lock().carrier_received;
                if why != Replace::Spent && carried < MIN_LIMIT {
                    // A carrier that failed before it carried anything: wait before the next,
                    // longer each time, so that a carrier reset at once does not make a loop.
                    tokio::time::sleep(self.delay).await;
                    self.delay = (self.delay * 2).min(MAX_REOPEN_DELAY);
                } else {
                    self.delay = FIRST_REOPEN_DELAY;
                }
                tracing::debug!(?why, "replacing the tunnel's carrier");
                if let Err(e) = self.reopen().await {
                    tracing::debug!(error = %e, "the tunnel could not be resumed");
                    self.shared.lock().fail(format!("the tunnel could not be resumed: {e}"));
                    return;
                }
                continue;
            }
            tokio::select! {
                () = event => {}
                _ = tick.tick() => {}
            }
        }
    }

    /// Takes the budget of the listener's address group from a stall, once a second carrier
    /// stalled after a count that looks like a censor's volume limit too: a single stall may be
    /// a moment of congestion or a handover, and a budget is kept until the node restarts.
    fn learn(&mut self, why: &Replace) {
        let Replace::Stalled(received) = *why else { return };
        if crate::swarm::volume::budget_after_freeze(received).is_none() {
            return;
        }
        if let (Some(b), Some(earlier)) = (&self.budget, self.last_stall)
            && let Some(budget) = crate::swarm::volume::budget_after_freeze(earlier.min(received))
        {
            tracing::debug!(
                received,
                budget,
                "tunnel carriers froze twice; the next ones stay under it"
            );
            b.meters.set_carrier_budget(b.group, budget);
        }
        self.last_stall = Some(received);
    }

    /// Whether the carrier must be replaced, and why.
    fn replace(&self, s: &State, now: Instant) -> Option<Replace> {
        if s.lost {
            return Some(Replace::Lost);
        }
        let socket = self.carrier_meter.load(Ordering::Relaxed);
        // A carrier carries at least MIN_LIMIT, however small the budget: its handshake alone
        // may be near it, and replacing it at once would loop.
        let over = s.carrier_received >= MIN_LIMIT
            && Budget::of(self.budget.as_ref()).is_some_and(|b| socket >= b);
        if s.exhausted || over {
            return Some(Replace::Spent);
        }
        let silent = s.heard.is_some_and(|h| now.duration_since(h) >= CARRIER_STALL);
        let waiting = s.waiting_since.is_some_and(|w| now.duration_since(w) >= CARRIER_STALL);
        (silent && waiting).then_some(Replace::Stalled(socket))
    }

    /// Opens the next carrier, retrying within [`RESUME_WINDOW`].
    async fn reopen(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + RESUME_WINDOW;
        let mut delay = FIRST_REOPEN_DELAY;
        loop {
            let error = match tokio::time::timeout(CARRIER_OPEN_TIMEOUT, self.open_next()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "opening a carrier timed out"),
            };
            if self.shared.lock().closed || Instant::now() + delay > deadline {
                return Err(error);
            }
            tracing::debug!(%error, "tunnel carrier not opened; trying again");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_REOPEN_DELAY);
        }
    }

    async fn open_next(&mut self) -> io::Result<()> {
        let meter = Meter::default();
        // The old carrier goes on while the new one's TCP and TLS handshakes run.
        let mut carrier = self.opener.connect(meter.clone()).await?;
        let received = {
            let mut s = self.shared.lock();
            s.carrier += 1;
            s.received
        };
        self.tasks = None;
        let limit = limit_under(Budget::of(self.budget.as_ref()), meter.load(Ordering::Relaxed));
        let offer = Offer { id: self.id, resume: Some(received), limit };
        let answer = self.opener.upgrade(&mut carrier, offer).await?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the listener no longer holds the session")
        })?;
        let generation = {
            let mut s = self.shared.lock();
            s.peer_limit = limit;
            s.begin_carrier(answer.received, Instant::now())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        };
        self.carrier_meter = meter;
        self.tasks = Some(Tasks::start(&self.shared, generation, carrier, self.progress.clone()));
        // Whatever waited for the old carrier goes on the new one.
        self.shared.send.notify_one();
        Ok(())
    }
}

/// Sends the upgrade request for `path` on `host` with `offer` on `carrier`, and returns the
/// listener's answer: `None` if it took no session (for a resumption: refused it, so the
/// session is gone).
pub async fn upgrade(
    carrier: &mut BoxCarrier,
    host: &str,
    path: &str,
    offer: Offer,
) -> io::Result<Option<Answer>> {
    let head =
        match crate::transport::http::client_upgrade(carrier, host, path, Some(&offer.to_header()))
            .await
        {
            Ok(head) => head,
            Err(e) if offer.resume.is_some() && e.kind() == io::ErrorKind::ConnectionRefused => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
    use crate::transport::http::header;
    Ok(Answer::parse(
        &offer.to_header(),
        header(&head, "sec-websocket-protocol"),
        header(&head, kolokol_protocol::tunnel::ANSWER_HEADER),
    ))
}

// ---------------------------------------------------------------------------------------------
// The listener side.

/// A carrier that asks to resume a session, with what the client has received and the limit
/// it names, and the `101` to send before the frames (its end still open, for the answer).
pub struct Resume {
    /// The new carrier.
    pub carrier: BoxCarrier,
    /// The client's offer.
    pub offer: Offer,
    /// The `101` head, without the blank line that ends it.
    pub response: Vec<u8>,
}

/// What a listener makes of a tunnel request.
pub enum Accepted {
    /// A new session, for the swarm.
    Session(Session),
    /// No session offered (or none to be had): the carrier, for a plain tunnel after the
    /// `101` the caller sends.
    Plain(BoxCarrier),
    /// A resumption handed to its session, or a request refused: nothing for the swarm.
    Nothing,
}

/// The sessions a listener holds, each by the id its client chose.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<HashMap<SessionId, mpsc::Sender<Resume>>>>);

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, mpsc::Sender<Resume>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens session `id` on `carrier`, whose `101` (`response`, its head still open) this
    /// sends with the answer; the carrier back if the id is taken or the registry full (the
    /// caller then answers with a plain tunnel).
    pub async fn open(
        &self,
        mut carrier: BoxCarrier,
        offer: Offer,
        response: Vec<u8>,
    ) -> Result<io::Result<Session>, BoxCarrier> {
        let id = offer.id;
        let (tx, rx) = mpsc::channel(RESUME_QUEUE);
        {
            let mut sessions = self.lock();
            sessions.retain(|_, tx| !tx.is_closed());
            if sessions.len() >= MAX_SESSIONS || sessions.contains_key(&id) {
                return Err(carrier);
            }
            sessions.insert(id, tx);
        }
        if let Err(e) = answer(&mut carrier, response, &offer, 0).await {
            self.lock().remove(&id);
            return Ok(Err(e));
        }
        let (session, shared) = Session::new();
        let generation = {
            let mut s = shared.lock();
            s.send_limit = offer.limit.map(|l| l.max(MIN_LIMIT));
            s.begin_carrier(0, Instant::now()).unwrap_or_default()
        };
        let tasks = Tasks::start(&shared, generation, carrier, None);
        let listener = Listener { shared, registry: self.clone(), id, rx, tasks: Some(tasks) };
        tokio::spawn(listener.supervise());
        Ok(Ok(session))
    }

    /// Hands a resuming carrier to its session; refuses it (`404`) if there is no such session.
    pub async fn resume(&self, id: SessionId, resume: Resume) {
        let tx = self.lock().get(&id).cloned();
        let refused = match tx {
            Some(tx) => match tx.send(resume).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(r)) => r,
            },
            None => resume,
        };
        refuse(refused.carrier).await;
    }
}

impl Registry {
    /// Answers a tunnel request whose head is `head` on `carrier`: opens or resumes the session
    /// it offers; `response` is the `101` without the blank line that ends it.
    pub async fn accept(&self, carrier: BoxCarrier, head: &[u8], response: Vec<u8>) -> Accepted {
        let offer = match crate::transport::http::header(head, "sec-websocket-protocol")
            .map(Offer::find)
        {
            // An offer this listener cannot read (a later version's) gets the plain tunnel.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "a stealth tunnel request with a session offer not understood");
                None
            }
            Some(Ok(offer)) => offer,
            None => None,
        };
        let Some(offer) = offer else { return Accepted::Plain(carrier) };
        if offer.resume.is_some() {
            self.resume(offer.id, Resume { carrier, offer, response }).await;
            return Accepted::Nothing;
        }
        match self.open(carrier, offer, response).await {
            Ok(Ok(session)) => Accepted::Session(session),
            Ok(Err(_)) => Accepted::Nothing,
            Err(carrier) => Accepted::Plain(carrier),
        }
    }
}

/// Refuses a resumption: the session is not here, or not at the count the client gives.
async fn refuse(mut carrier: BoxCarrier) {
    let _ = carrier
        .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
    let _ = carrier.shutdown().await;
}

/// Ends a `101` head with the session's answer to `offer` and sends it.
async fn answer(
    carrier: &mut BoxCarrier,
    mut response: Vec<u8>,
    offer: &Offer,
    received: u64,
) -> io::Result<()> {
    let header = format!(
        "Sec-WebSocket-Protocol: {}\r\n{}: {}\r\n\r\n",
        offer.to_header(),
        kolokol_protocol::tunnel::ANSWER_HEADER,
        Answer { received }.to_header()
    );
    response.extend_from_slice(header.as_bytes());
    carrier.write_all(&response).await?;
    carrier.flush().await
}

struct Listener {
    shared: Arc<Shared>,
    registry: Registry,
    id: SessionId,
    rx: mpsc::Receiver<Resume>,
    tasks: Option<Tasks>,
}

impl Listener {
    async fn supervise(mut self) {
        let mut orphaned: Option<Instant> = None;
        loop {
            let shared = self.shared.clone();
            let event = shared.event.notified();
            let (closed, failed) = {
                let mut s = shared.lock();
                if s.lost && orphaned.is_none() {
                    orphaned = Some(Instant::now() + RESUME_WINDOW);
                }
                if !s.closed && orphaned.is_some_and(|t| t <= Instant::now()) {
                    s.fail("the tunnel's client did not come back");
                }
                (s.closed, s.failed.is_some())
            };
            if closed {
                linger(&shared).await;
                break;
            }
            if failed {
                break;
            }
            let until = orphaned.unwrap_or_else(|| Instant::now() + RESUME_WINDOW);
            let resume = tokio::select! {
                () = event => None,
                () = tokio::time::sleep_until(until), if orphaned.is_some() => None,
                resume = self.rx.recv() => match resume {
                    Some(resume) => Some(resume),
                    None => break,
                },
            };
            if let Some(resume) = resume
                && self.take(resume).await
            {
                orphaned = None;
            }
        }
        self.tasks = None;
        self.registry.lock().remove(&self.id);
    }

    /// Moves the session to a resuming carrier; `false` if that failed. A resumption from a
    /// count the session cannot go on from (a stale request that arrived late, or one not from
    /// the client) is refused, and the current carrier kept.
    async fn take(&mut self, mut resume: Resume) -> bool {
        let peer_received = resume.offer.resume.unwrap_or_default();
        let received = {
            let mut s = self.shared.lock();
            if s.can_resume_from(peer_received) {
                s.carrier += 1;
                s.lost = true;
                Some(s.received)
            } else {
                None
            }
        };
        let Some(received) = received else {
            tracing::debug!(
                peer_received,
                "a tunnel resumption from a count the session is past; refused"
            );
            refuse(resume.carrier).await;
            return false;
        };
        self.tasks = None;
        if answer(&mut resume.carrier, resume.response, &resume.offer, received).await.is_err() {
            return false;
        }
        let generation = {
            let mut s = self.shared.lock();
            s.send_limit = resume.offer.limit.map(|l| l.max(MIN_LIMIT));
            match s.begin_carrier(peer_received, Instant::now()) {
                Ok(g) => g,
                Err(why) => {
                    s.fail(format!("the tunnel's client resumed wrongly: {why}"));
                    return false;
                }
            }
        };
        self.tasks = Some(Tasks::start(&self.shared, generation, resume.carrier, None));
        self.shared.send.notify_one();
        true
    }
}

#[cfg(test)]
mod tests;
