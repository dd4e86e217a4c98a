//! Yamux over [`Batched`] sockets that hold what is written until flushed, as Noise does:
//! frames queued together leave in one flush, an answer comes back, a transfer far larger than
//! the socket's buffer completes in both directions at once, and what is written before the
//! connection closes arrives. A flush that is deferred and never made hangs these tests until
//! their deadline.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::poll_fn;
use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::core::StreamMuxer;
use libp2p::core::muxing::StreamMuxerExt as _;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt as _};

use super::BatchedYamux;

/// How long a test waits for an exchange before it fails (it takes milliseconds).
const DEADLINE: Duration = Duration::from_secs(30);

/// Bytes a [`Held`] socket takes before a write waits for them to go out, as libp2p's Noise
/// output holds one frame.
const HELD_MAX: usize = 65_535;

/// A socket that holds what is written until it is flushed, as libp2p's Noise output does
/// (writes fill a frame; a flush seals and sends it), so that a flush never made leaves the
/// bytes unsent and the test hangs until its deadline. It counts the flushes that pushed out
/// frames of a stream: each is one Noise frame and one write to TCP below a real connection.
/// Frames of the connection itself (yamux's pings and pongs, which measure its round trip once
/// it starts) are not counted.
struct Held {
    inner: Compat<tokio::io::DuplexStream>,
    /// What was written and not yet sent.
    pending: Vec<u8>,
    /// How much of `pending` went out already.
    sent: usize,
    /// Whether `pending`, since the last completed flush, held a frame of a stream.
    streams: bool,
    count: Arc<AtomicUsize>,
}

impl Held {
    fn new(inner: tokio::io::DuplexStream, count: Arc<AtomicUsize>) -> Self {
        Held { inner: inner.compat(), pending: Vec::new(), sent: 0, streams: false, count }
    }

    /// Sends what is held, as far as the pipe takes it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.streams |= has_stream_frame(&self.pending);
        self.pending.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

/// Whether these whole yamux frames (12-byte headers: version, type, flags, stream id, length;
/// a data frame's body follows its header) include one of a stream (id not 0).
fn has_stream_frame(mut frames: &[u8]) -> bool {
    while frames.len() >= 12 {
        let stream = u32::from_be_bytes(frames[4..8].try_into().expect("4 bytes"));
        if stream != 0 {
            return true;
        }
        let body = if frames[1] == 0 {
            u32::from_be_bytes(frames[8..12].try_into().expect("4 bytes")) as usize
        } else {
            0
        };
        frames = &frames[(12 + body).min(frames.len())..];
    }
    false
}

impl AsyncRead for Held {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= HELD_MAX {
            // A full frame goes out before more is taken, flushed or not.
            std::task::ready!(this.poll_send(cx))?;
        }
        let n = buf.len().min(HELD_MAX - this.pending.len());
        this.pending.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send(cx))?;
        std::task::ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        if std::mem::take(&mut this.streams) {
            this.count.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// One side of a test's connection.
type Muxer = super::CorkedMuxer<super::Batched<Held>>;

/// A client and a server multiplexer over [`Held`] sockets joined by a pipe of `pipe` bytes;
/// `flushes` counts the client's.
async fn connected(pipe: usize, flushes: Arc<AtomicUsize>) -> (Muxer, Muxer) {
    connected_counting(pipe, flushes, Arc::default()).await
}

/// [`connected`], counting the server's flushes too.
async fn connected_counting(
    pipe: usize,
    client_flushes: Arc<AtomicUsize>,
    server_flushes: Arc<AtomicUsize>,
) -> (Muxer, Muxer) {
    let (ours, theirs) = tokio::io::duplex(pipe);
    let client = BatchedYamux::default()
        .upgrade_outbound(Held::new(ours, client_flushes), "/yamux/1.0.0")
        .await
        .expect("client");
    let server = BatchedYamux::default()
        .upgrade_inbound(Held::new(theirs, server_flushes), "/yamux/1.0.0")
        .await
        .expect("server");
    (client, server)
}

/// Polls a multiplexer for good, as a connection's task does, until it fails or closes.
fn drive<M>(mut muxer: M) -> tokio::task::JoinHandle<()>
where
    M: StreamMuxer + Unpin + Send + 'static,
{
    tokio::spawn(async move { while poll_fn(|cx| muxer.poll_unpin(cx)).await.is_ok() {} })
}

/// The first inbound stream of a multiplexer, which is then driven for good.
async fn first_inbound<M>(mut muxer: M) -> M::Substream
where
    M: StreamMuxer + Unpin + Send + 'static,
    M::Error: std::fmt::Debug,
{
    let stream = poll_fn(|cx| {
        if let Poll::Ready(stream) = muxer.poll_inbound_unpin(cx) {
            return Poll::Ready(stream);
        }
        // `poll` is what reads the socket and queues the inbound streams.
        let _ = muxer.poll_unpin(cx);
        Poll::Pending
    })
    .await
    .expect("an inbound stream");
    drive(muxer);
    stream
}

#[tokio::test]
async fn frames_queued_together_leave_in_one_flush() {
    let flushes = Arc::new(AtomicUsize::new(0));
    let (mut client, server) = connected(1 << 20, flushes.clone()).await;

    // What a request costs: the stream's opening with the protocol's headers, the request and
    // the `FIN`, three yamux frames queued before the connection's task runs.
    let mut stream = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.expect("a stream");
    stream.write_all(b"\x13/multistream/1.0.0\n\x0f/kolokol/msg/1\n").await.expect("headers");
    stream.write_all(&[7; 1024]).await.expect("request");
    stream.close().await.expect("FIN");
    drive(client);

    let received = tokio::time::timeout(DEADLINE, async {
        let mut inbound = first_inbound(server).await;
        let mut received = Vec::new();
        inbound.read_to_end(&mut received).await.expect("read");
        received
    })
    .await
    .expect("the request arrived before the deadline");
    assert_eq!(received.len(), 20 + 16 + 1024);
    assert_eq!(received[36..], [7; 1024]);
    // Yamux's own flush after every frame made this three.
    assert_eq!(flushes.load(Ordering::Relaxed), 1, "one flush for the three frames");
}

#[tokio::test]
async fn a_transfer_far_beyond_the_socket_buffer_completes_both_ways_at_once() {
    // A 1 KiB pipe between the two: every write blocks many times, so flushes wait on the
    // socket's writability while the reads go on.
    let (mut client, server) = connected(1024, Arc::default()).await;
    const LEN: usize = 3 * 1024 * 1024 + 17;
    let sent: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();

    let outbound = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.expect("a stream");
    drive(client);
    let exchange = async {
        // The server echoes everything back as it reads it, while the client is still writing.
        let echo = tokio::spawn(async move {
            let inbound = first_inbound(server).await;
            let (mut read, mut write) = inbound.split();
            futures::io::copy(&mut read, &mut write).await.expect("echo");
            write.close().await.expect("FIN");
        });
        let (mut read, mut write) = outbound.split();
        let writer = async {
            write.write_all(&sent).await.expect("write");
            write.close().await.expect("FIN");
        };
        let reader = async {
            let mut back = Vec::with_capacity(LEN);
            read.read_to_end(&mut back).await.expect("read");
            back
        };
        let ((), back) = futures::join!(writer, reader);
        echo.await.expect("the echo task");
        back
    };
    let back =
        tokio::time::timeout(DEADLINE, exchange).await.expect("completed before the deadline");
    assert!(back == sent, "{} bytes came back, {} sent", back.len(), sent.len());
}

#[tokio::test]
async fn a_request_is_answered_and_what_precedes_a_close_arrives() {
    let (mut client, server) = connected(1 << 16, Arc::default()).await;
    let exchange = async move {
        let mut stream = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.expect("a stream");
        let answering = tokio::spawn(async move {
            let mut inbound = first_inbound(server).await;
            let mut request = [0u8; 5];
            inbound.read_exact(&mut request).await.expect("the request");
            inbound.write_all(b"answer").await.expect("the answer");
            // The answer goes out with nothing else to push it: no flush of the stream's own
            // reaches the socket, only yamux's pass does.
            let mut rest = Vec::new();
            inbound.read_to_end(&mut rest).await.expect("the rest");
            (request, rest)
        });
        // Driving the client while the test waits on the stream: the connection runs on its own.
        let (mut stop, release) = futures::channel::oneshot::channel::<()>();
        let driver = tokio::spawn(async move {
            poll_fn(|cx| {
                if stop.poll_canceled(cx).is_ready() {
                    return Poll::Ready(());
                }
                let _ = client.poll_unpin(cx);
                Poll::Pending
            })
            .await;
            client
        });
        stream.write_all(b"hello").await.expect("request");
        let mut answer = [0u8; 6];
        stream.read_exact(&mut answer).await.expect("the answer");
        // Written, then the stream and the whole connection closed with no flush in between.
        stream.write_all(b"last words").await.expect("last words");
        stream.close().await.expect("FIN");
        drop(release);
        let mut client = driver.await.expect("the driver");
        poll_fn(|cx| client.poll_close_unpin(cx)).await.expect("close");
        let (request, rest) = answering.await.expect("the answering task");
        (answer, request, rest)
    };
    let (answer, request, rest) =
        tokio::time::timeout(DEADLINE, exchange).await.expect("completed before the deadline");
    assert_eq!(&request, b"hello");
    assert_eq!(&answer, b"answer");
    assert_eq!(rest, b"last words");
}

/// multistream-select's opening of a `/kolokol/msg/1` stream: its header and the protocol,
/// which the dialer proposes and the listener echoes to confirm.
const PROPOSAL: &[u8] = b"\x13/multistream/1.0.0\n\x0f/kolokol/msg/1\n";

#[tokio::test]
async fn an_answer_leaves_with_the_confirmation_of_its_protocol() {
    let server_flushes = Arc::new(AtomicUsize::new(0));
    let (mut client, server) =
        connected_counting(1 << 20, Arc::default(), server_flushes.clone()).await;
    let exchange = async move {
        // The dialer proposes the protocol, sends its request and closes at once
        // (multistream-select's `V1Lazy`, which the node's swarm sets for every stream).
        let mut stream = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.expect("a stream");
        stream.write_all(PROPOSAL).await.expect("proposal");
        stream.write_all(&[7; 1024]).await.expect("request");
        stream.close().await.expect("FIN");
        drive(client);
        let answering = tokio::spawn(async move {
            let mut inbound = first_inbound(server).await;
            negotiate(&mut inbound, None).await;
            // The request is handled (stored, for a text) before the answer.
            let mut request = Vec::new();
            inbound.read_to_end(&mut request).await.expect("the request");
            tokio::task::yield_now().await;
            inbound.write_all(&[1]).await.expect("the answer");
            inbound.close().await.expect("FIN");
            request.len()
        });
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("the answer");
        (answer, answering.await.expect("the answering task"))
    };
    let (answer, request) =
        tokio::time::timeout(DEADLINE, exchange).await.expect("completed before the deadline");
    assert_eq!(request, 1024);
    assert_eq!(&answer[..PROPOSAL.len()], PROPOSAL);
    assert_eq!(answer[PROPOSAL.len()..], [1]);
    // The confirmation went out on its own, then the answer: the dialer was woken twice.
    assert_eq!(server_flushes.load(Ordering::Relaxed), 1, "the confirmation held for the answer");
}

#[tokio::test]
async fn a_dialer_that_waits_for_the_confirmation_gets_it() {
    let (mut client, server) = connected(1 << 20, Arc::default()).await;
    let exchange = async move {
        let mut stream = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.expect("a stream");
        drive(client);
        let answering = tokio::spawn(async move {
            let mut inbound = first_inbound(server).await;
            let mut proposal = [0u8; PROPOSAL.len()];
            inbound.read_exact(&mut proposal).await.expect("the proposal");
            inbound.write_all(&proposal).await.expect("the confirmation");
            inbound.flush().await.expect("the confirmation's flush");
            // Nothing comes until the dialer has the confirmation: the read finds nothing, so
            // what is held must go.
            let mut request = [0u8; 5];
            inbound.read_exact(&mut request).await.expect("the request");
            inbound.write_all(b"answer").await.expect("the answer");
            inbound.close().await.expect("FIN");
            request
        });
        // multistream-select's `V1`: the proposal, then nothing until it is confirmed.
        stream.write_all(PROPOSAL).await.expect("proposal");
        stream.flush().await.expect("the proposal's flush");
        let mut confirmation = [0u8; PROPOSAL.len()];
        stream.read_exact(&mut confirmation).await.expect("the confirmation");
        stream.write_all(b"hello").await.expect("request");
        stream.close().await.expect("FIN");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("the answer");
        (confirmation, answer, answering.await.expect("the answering task"))
    };
    let (confirmation, answer, request) =
        tokio::time::timeout(DEADLINE, exchange).await.expect("completed before the deadline");
    assert_eq!(&confirmation, PROPOSAL);
    assert_eq!(&request, b"hello");
    assert_eq!(answer, b"answer");
}

#[test]
fn a_negotiation_is_the_header_and_a_whole_line_after_it() {
    use super::negotiated;
    assert!(negotiated(PROPOSAL));
    assert!(!negotiated(&PROPOSAL[..20]), "the header alone");
    assert!(!negotiated(&PROPOSAL[..30]), "a line cut short");
    assert!(!negotiated(&PROPOSAL[20..]), "no header");
    assert!(!negotiated(b"\x13/multistream/1.0.1\n\x0f/kolokol/msg/1\n"));
    let mut long = b"\x13/multistream/1.0.0\n\xc8\x01".to_vec();
    long.extend_from_slice(&[b'a'; 200]);
    assert!(negotiated(&long), "a line longer than 127 bytes");
    assert!(!negotiated(&long[..long.len() - 1]));
}

/// A listener's negotiation, as multistream-select's does it: it echoes the header, reads
/// the protocol's name, echoes it (or `line` instead) and flushes after each.
async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(inbound: &mut S, line: Option<&[u8]>) {
    let mut header = [0u8; 20];
    inbound.read_exact(&mut header).await.expect("the header");
    inbound.write_all(&header).await.expect("the header echoed");
    inbound.flush().await.expect("the header's flush");
    let mut protocol = [0u8; PROPOSAL.len() - 20];
    inbound.read_exact(&mut protocol).await.expect("the protocol");
    inbound.write_all(line.unwrap_or(&protocol)).await.expect("the confirmation");
    inbound.flush().await.expect("the confirmation's flush");
}

#[tokio::test]
async fn a_listener_that_speaks_first_is_heard_before_it_reads() {
    let (mut client, server) = connected(1 << 20, Arc::default()).await;
    let exchange = async move {
        let mut stream = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.expect("a stream");
        drive(client);
        let (heard, hear) = futures::channel::oneshot::channel::<()>();
        let speaking = tokio::spawn(async move {
            let mut inbound = first_inbound(server).await;
            negotiate(&mut inbound, None).await;
            inbound.write_all(b"hello").await.expect("its first words");
            inbound.flush().await.expect("their flush");
            // It waits on something else than the stream, which only its words bring.
            hear.await.expect("heard");
            inbound.close().await.expect("FIN");
        });
        stream.write_all(PROPOSAL).await.expect("proposal");
        stream.flush().await.expect("the proposal's flush");
        let mut words = [0u8; PROPOSAL.len() + 5];
        stream.read_exact(&mut words).await.expect("the confirmation and the words");
        heard.send(()).expect("the listener waits");
        speaking.await.expect("the speaking task");
        words
    };
    let words =
        tokio::time::timeout(DEADLINE, exchange).await.expect("completed before the deadline");
    assert_eq!(&words[..PROPOSAL.len()], PROPOSAL);
    assert_eq!(&words[PROPOSAL.len()..], b"hello");
}

#[tokio::test]
async fn a_stream_dropped_while_it_holds_sends_what_it_held() {
    let (mut client, server) = connected(1 << 20, Arc::default()).await;
    let exchange = async move {
        let mut stream = poll_fn(|cx| client.poll_outbound_unpin(cx)).await.expect("a stream");
        drive(client);
        let refusing = tokio::spawn(async move {
            let mut inbound = first_inbound(server).await;
            // The protocol is refused, and the stream dropped (as the swarm does when the
            // dialer's next bytes are no proposal).
            negotiate(&mut inbound, Some(b"\x03na\n")).await;
        });
        stream.write_all(PROPOSAL).await.expect("proposal");
        stream.write_all(b"a lazy request").await.expect("request");
        stream.flush().await.expect("flush");
        let mut refusal = [0u8; 24];
        stream.read_exact(&mut refusal).await.expect("the header and the refusal");
        refusing.await.expect("the refusing task");
        refusal
    };
    let refusal =
        tokio::time::timeout(DEADLINE, exchange).await.expect("completed before the deadline");
    assert_eq!(&refusal[..20], &PROPOSAL[..20]);
    assert_eq!(&refusal[20..], b"\x03na\n");
}
