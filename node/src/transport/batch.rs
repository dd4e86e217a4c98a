//! One write for the frames yamux has ready together: the frames of one request (the stream's
//! opening with its protocol headers, the request, the `FIN`) leave as one Noise frame in one
//! TCP segment instead of one each.
//!
//! yamux 0.14's connection task flushes its socket after every frame it writes
//! (`Connection::poll`: each pass of its loop starts with `poll_flush`), and a flush of
//! libp2p's Noise output seals what it holds as a Noise frame and writes it out. So a text
//! cost the sender three `sendto` calls and the recipient's node four on the way back (the
//! multistream-select header, the protocol's confirmation, the answer, the `FIN`), each waking
//! the other process, whose reads found one small frame each: a third of the per-message CPU
//! of the two daemons' system calls was those wake-ups (docs/BENCHMARKS.md, "One write per
//! burst").
//!
//! [`Batched`] sits between yamux and Noise and takes a flush as a request to flush before
//! the next read: yamux's connection reads its socket at the end of every pass before it
//! waits, and before it hands over a new inbound stream, so everything queued during one pass
//! leaves together at the end of it, and nothing waits longer than that pass. A pass that
//! ends with the socket's writes blocked (yamux then skips the read) has Noise's full buffer
//! waiting on the socket's writability, which wakes the connection again; closing flushes
//! first (Noise's `poll_close`). This leans on how yamux drives its socket, so a change of the
//! yamux version must keep `batch::tests` passing.
//!
//! The answering side's half: an inbound stream confirms its protocol (multistream-select's
//! listener writes and flushes the header and the protocol's name) as soon as it is accepted,
//! and answers once the request is handled, which for a text is after it is stored: two passes
//! of yamux, two writes, and the sender woken twice for one answer. A [`Corked`] inbound stream
//! holds the negotiation's lines ([`negotiated`]), flushes included, until it writes again (the
//! answer, or the first words of a listener that speaks first: both leave together) or closes;
//! and when a read finds nothing, after [`CORKED_TURNS`] more turns of the connection's task
//! (the multiplexer may hand over the rest of a request that came with its opening a turn
//! later), since the other side may be waiting for them (a dialer that waits for the
//! confirmation before it sends, as multistream-select's `V1` does). A stream dropped while it
//! holds sends what it held, as before. Outbound streams hold nothing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite, TryFutureExt as _};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// The most an inbound stream holds ([`Corked`]): room for multistream-select's confirmation
/// (its header and a protocol name of up to 140 bytes, with room to spare); a negotiation
/// longer than that goes out at once.
pub const MAX_CORKED: usize = 512;

/// A byte stream whose flushes wait for its next read (see the module's doc).
#[derive(Debug)]
pub struct Batched<T> {
    inner: T,
    /// Bytes were written since the last flush that completed.
    unflushed: bool,
}

impl<T> Batched<T> {
    /// `inner` with its flushes deferred to its next read.
    pub fn new(inner: T) -> Self {
        Batched { inner, unflushed: false }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Batched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.unflushed {
            // A flush that cannot finish now has registered the task for the socket's
            // writability; the read goes on meanwhile, as yamux's own flush did not block it.
            match Pin::new(&mut this.inner).poll_flush(cx) {
                Poll::Ready(Ok(())) => this.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Batched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.unflushed = true;
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Done at the next read (the module's doc says why that comes before yamux waits).
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Noise's close flushes what it holds before it closes.
        let closed = Pin::new(&mut this.inner).poll_close(cx);
        if let Poll::Ready(Ok(())) = closed {
            this.unflushed = false;
        }
        closed
    }
}

/// libp2p's yamux over a [`Batched`] socket: the multiplexer of every connection but QUIC's
/// (`transport::upgraded` for TCP, the stealth and the in-memory transports; the swarm builder's
/// relay client for circuits).
#[derive(Debug, Clone, Default)]
pub struct BatchedYamux(libp2p::yamux::Config);

impl UpgradeInfo for BatchedYamux {
    type Info = <libp2p::yamux::Config as UpgradeInfo>::Info;
    type InfoIter = <libp2p::yamux::Config as UpgradeInfo>::InfoIter;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.protocol_info()
    }
}

/// What [`BatchedYamux`] makes of a connection.
type Upgraded<C> = libp2p::yamux::Muxer<Batched<C>>;

impl<C> InboundConnectionUpgrade<C> for BatchedYamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = CorkedMuxer<Batched<C>>;
    type Error = io::Error;
    type Future = futures::future::MapOk<
        <libp2p::yamux::Config as InboundConnectionUpgrade<Batched<C>>>::Future,
        fn(Upgraded<C>) -> CorkedMuxer<Batched<C>>,
    >;

    fn upgrade_inbound(self, io: C, info: Self::Info) -> Self::Future {
        self.0.upgrade_inbound(Batched::new(io), info).map_ok(CorkedMuxer)
    }
}

impl<C> OutboundConnectionUpgrade<C> for BatchedYamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = CorkedMuxer<Batched<C>>;
    type Error = io::Error;
    type Future = futures::future::MapOk<
        <libp2p::yamux::Config as OutboundConnectionUpgrade<Batched<C>>>::Future,
        fn(Upgraded<C>) -> CorkedMuxer<Batched<C>>,
    >;

    fn upgrade_outbound(self, io: C, info: Self::Info) -> Self::Future {
        self.0.upgrade_outbound(Batched::new(io), info).map_ok(CorkedMuxer)
    }
}

/// libp2p's yamux multiplexer whose inbound streams are [`Corked`]; outbound ones pass
/// everything through at once.
#[derive(Debug)]
pub struct CorkedMuxer<C>(libp2p::yamux::Muxer<C>);

impl<C> StreamMuxer for CorkedMuxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = Corked<libp2p::yamux::Stream>;
    type Error = <libp2p::yamux::Muxer<C> as StreamMuxer>::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.get_mut().0).poll_inbound(cx).map_ok(Corked::inbound)
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.get_mut().0).poll_outbound(cx).map_ok(Corked::outbound)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().0).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

/// Where a [`Corked`] stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cork {
    /// Written bytes wait in `held` (none yet, or some); `waited` counts the turns of its task
    /// the stream asked for after a read found nothing.
    Holding { waited: u8 },
    /// Everything goes through at once: an outbound stream, or an inbound one that let its
    /// held bytes go (some may still be on their way out, when the stream took only part).
    Through,
}

/// A stream that holds the lines of its protocol's negotiation until it answers (see the
/// module's doc).
#[derive(Debug)]
pub struct Corked<S: AsyncWrite + Unpin> {
    inner: S,
    held: Vec<u8>,
    cork: Cork,
}

/// How many turns of its task a [`Corked`] stream whose read found nothing asks for before it
/// lets what it holds go: the connection's task may poll a stream before its multiplexer hands
/// over the rest of a request that came in the same segment.
pub const CORKED_TURNS: u8 = 2;

/// multistream-select's header, the first line a listener writes.
const MULTISTREAM_HEADER: &[u8] = b"\x13/multistream/1.0.0\n";

/// Whether `held` is a listener's whole negotiation: the header and at least one more line
/// (the protocol confirmed, or refused), each a length (an unsigned varint) and that many
/// bytes.
fn negotiated(held: &[u8]) -> bool {
    let Some(mut rest) = held.strip_prefix(MULTISTREAM_HEADER) else { return false };
    let mut lines = 0;
    while !rest.is_empty() {
        let (len, prefix) = match rest {
            [short, ..] if short & 0x80 == 0 => (usize::from(*short), 1),
            [low, high, ..] if high & 0x80 == 0 => {
                (usize::from(low & 0x7f) | usize::from(*high) << 7, 2)
            }
            _ => return false,
        };
        match rest.get(prefix + len..) {
            Some(after) => rest = after,
            None => return false,
        }
        lines += 1;
    }
    lines >= 1
}

impl<S: AsyncWrite + Unpin> Corked<S> {
    /// An inbound stream: its negotiation waits for its answer.
    pub fn inbound(inner: S) -> Self {
        Corked { inner, held: Vec::new(), cork: Cork::Holding { waited: 0 } }
    }

    /// An outbound stream: nothing waits.
    pub fn outbound(inner: S) -> Self {
        Corked { inner, held: Vec::new(), cork: Cork::Through }
    }

    /// Stops holding and writes out what was held (as far as the stream takes it now; the
    /// next poll of either direction goes on with the rest).
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cork = Cork::Through;
        while !self.held.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.held) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.held.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.held = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Lets what is held go and flushes it, as far as it can now; an error shows again at the
    /// stream's next write or close.
    fn release_and_flush(&mut self, cx: &mut Context<'_>) {
        if let Poll::Ready(Ok(())) = self.poll_release(cx) {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Corked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.cork == Cork::Through && !this.held.is_empty() {
            // A release that could not finish: the other side may be waiting for the rest.
            this.release_and_flush(cx);
        }
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Cork::Holding { waited }, Poll::Pending) = (&mut this.cork, &read)
            && !this.held.is_empty()
        {
            if *waited < CORKED_TURNS {
                // Nothing to read yet: the rest of a request that came with its opening may be
                // handed over on the task's next turn (the same task runs the connection's
                // multiplexer and its streams).
                *waited += 1;
                cx.waker().wake_by_ref();
            } else {
                // Still nothing: the other side may be waiting for what is held.
                this.release_and_flush(cx);
            }
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Corked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // The negotiation's lines wait; the first write after them is the answer (or a
        // protocol whose listener speaks first), and goes with them.
        if let Cork::Holding { .. } = this.cork
            && !negotiated(&this.held)
            && this.held.len() + buf.len() <= MAX_CORKED
        {
            this.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        std::task::ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Cork::Holding { .. } = this.cork {
            // The negotiation's flushes: what is held waits for the answer (or a read that
            // finds nothing).
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

impl<S: AsyncWrite + Unpin> Drop for Corked<S> {
    /// A stream dropped while it holds its negotiation (its request could not be read, timed
    /// out, or named a protocol refused with `na`) still sends it, as it would have without
    /// the hold: yamux queues the write and sends it before it resets the stream. Best effort,
    /// as the write cannot wait.
    fn drop(&mut self) {
        if !self.held.is_empty() {
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            let _ = self.poll_release(&mut cx);
        }
    }
}

#[cfg(test)]
mod tests;
