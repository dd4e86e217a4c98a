//! The first TLS record a stealth listener receives, judged the way OpenSSL judges it, and the
//! stream that replays what was read to judge it.
//!
//! Most HTTPS servers a censor compares a relay with (nginx, Apache, HAProxy, `openssl
//! s_server`) run OpenSSL, whose record layer judges a connection's first record before any
//! handshake code sees it: it waits for a whole five-byte header; when the header's version
//! byte is not 3 ("doesn't look like TLS") it closes without an alert
//! (`ssl/record/ssl3_record.c`, `SSL_AD_NO_ALERT`); a length past 16 704 gets a
//! `record_overflow` alert at once; otherwise it waits for the whole record, and a record that
//! is not a handshake, or a handshake message that is not a ClientHello, gets an
//! `unexpected_message` alert. rustls answers many of the same bytes differently (an alert at
//! once, even after one byte), which set a stealth listener apart from the web server it stands
//! in for. So the listener judges the first record itself, as OpenSSL 3.0 does (each rule was
//! read off `openssl s_server`'s answers, and `tests/src/stealth_probes.rs` compares the two),
//! closes with a FIN (draining what the prober sends, so the kernel answers no reset), and
//! hands rustls only a ClientHello, replaying the bytes it read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// Length of a TLS record header: content type, version (two bytes), length (two bytes).
pub const HEADER_LEN: usize = 5;

/// The longest record OpenSSL waits for (`SSL3_RT_MAX_ENCRYPTED_LENGTH` as its record layer
/// applies it to a first record): a longer one is refused from its header.
pub const MAX_RECORD_LEN: usize = 16_704;

/// How long a client that was refused is drained before the connection is dropped: long
/// enough for a prober's remaining bytes to arrive, short enough that a slot is not held.
pub const DRAIN_LINGER: Duration = Duration::from_secs(5);

/// TLS content type of handshake records.
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Alert description `unexpected_message`.
pub const UNEXPECTED_MESSAGE: u8 = 10;
/// Alert description `record_overflow`.
pub const RECORD_OVERFLOW: u8 = 22;

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough bytes yet: wait for more, as OpenSSL does.
    Undecided,
    /// The start of a ClientHello: rustls decides the rest.
    Tls,
    /// Not TLS: close without an alert.
    NotTls,
    /// TLS-shaped but refused: send this fatal alert, in a record of this minor version,
    /// then close.
    Alert {
        /// The alert's description byte.
        description: u8,
        /// The minor version byte of the alert's record (its major is 3).
        minor: u8,
    },
}

/// Judges the bytes read so far.
pub fn judge(head: &[u8]) -> Verdict {
    let Some(header) = head.get(..HEADER_LEN) else { return Verdict::Undecided };
    if header[1] != 3 {
        return Verdict::NotTls;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MAX_RECORD_LEN {
        return Verdict::Alert { description: RECORD_OVERFLOW, minor: 3 };
    }
    let whole = head.len() >= HEADER_LEN + len;
    if header[0] != HANDSHAKE {
        // OpenSSL's record layer answers in the record's own version, but never 3.4 (TLS 1.3
        // records say 3.3).
        let minor = if header[2] == 4 { 3 } else { header[2] };
        let refused = Verdict::Alert { description: UNEXPECTED_MESSAGE, minor };
        return if whole { refused } else { Verdict::Undecided };
    }
    if len == 0 {
        // An empty handshake record: what follows decides, and rustls reads it.
        return Verdict::Tls;
    }
    match head.get(HEADER_LEN) {
        None => Verdict::Undecided,
        Some(&CLIENT_HELLO) => Verdict::Tls,
        Some(_) if whole => Verdict::Alert { description: UNEXPECTED_MESSAGE, minor: 3 },
        Some(_) => Verdict::Undecided,
    }
}

/// The bytes of a fatal alert record with `description`, as OpenSSL sends it before a
/// version is agreed.
pub fn alert(description: u8, minor: u8) -> [u8; 7] {
    [21, 3, minor, 0, 2, 2, description]
}

/// Reads the first record until it is judged. `Some(stream)` replays everything read, for
/// rustls; `None` means the client was refused (the connection has been closed the way
/// OpenSSL closes it) or closed first.
pub async fn read<S: AsyncRead + AsyncWrite + Unpin>(mut client: S) -> Option<Replay<S>> {
    let mut head = Vec::with_capacity(2048);
    let mut buf = [0u8; 4096];
    loop {
        match judge(&head) {
            Verdict::Tls => return Some(Replay::new(head, client)),
            Verdict::NotTls => {
                close_silently(client).await;
                return None;
            }
            Verdict::Alert { description, minor } => {
                if client.write_all(&alert(description, minor)).await.is_ok() {
                    close_silently(client).await;
                }
                return None;
            }
            Verdict::Undecided => {}
        }
        // The verdict comes at the latest with a whole record of MAX_RECORD_LEN, so `head`
        // never holds more than that and one read.
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a FIN and reads until the client closes too (or [`DRAIN_LINGER`] passes), so the
/// close is a FIN like OpenSSL's and not a reset.
async fn close_silently<S: AsyncRead + AsyncWrite + Unpin>(mut client: S) {
    let _ = client.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(DRAIN_LINGER, async {
        while let Ok(n) = client.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A stream that yields `head` before what `inner` reads; writes go to `inner`.
pub struct Replay<S> {
    head: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S> Replay<S> {
    /// `head` first, then `inner`.
    pub fn new(head: Vec<u8>, inner: S) -> Self {
        Self { head, offset: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.offset < this.head.len() {
            let n = (this.head.len() - this.offset).min(buf.remaining());
            buf.put_slice(&this.head[this.offset..this.offset + n]);
            this.offset += n;
            if this.offset == this.head.len() {
                // The replayed bytes are done with; their buffer need not live as long as the
                // connection.
                this.head = Vec::new();
                this.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
