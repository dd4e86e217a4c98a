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

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

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

impl<C> InboundConnectionUpgrade<C> for BatchedYamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = libp2p::yamux::Muxer<Batched<C>>;
    type Error = io::Error;
    type Future = <libp2p::yamux::Config as InboundConnectionUpgrade<Batched<C>>>::Future;

    fn upgrade_inbound(self, io: C, info: Self::Info) -> Self::Future {
        self.0.upgrade_inbound(Batched::new(io), info)
    }
}

impl<C> OutboundConnectionUpgrade<C> for BatchedYamux
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = libp2p::yamux::Muxer<Batched<C>>;
    type Error = io::Error;
    type Future = <libp2p::yamux::Config as OutboundConnectionUpgrade<Batched<C>>>::Future;

    fn upgrade_outbound(self, io: C, info: Self::Info) -> Self::Future {
        self.0.upgrade_outbound(Batched::new(io), info)
    }
}

#[cfg(test)]
mod tests;
