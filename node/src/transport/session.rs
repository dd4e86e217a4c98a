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

mod client;
mod listener;

pub use client::{Budget, Opener, limit_under, open_client, upgrade};
pub use listener::{Accepted, Registry, Resume};

#[cfg(test)]
mod tests;
