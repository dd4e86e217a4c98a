//! Prometheus metrics over HTTP: `GET /metrics` on the `--metrics` address.
//!
//! The server is hand-written on tokio rather than pulled in from an HTTP framework, because
//! it answers one request shape: it reads at most [`MAX_REQUEST_LEN`] bytes of request head
//! within [`REQUEST_TIMEOUT`], answers, and closes the connection. At most
//! [`MAX_METRICS_CONNECTIONS`] are served at once; further ones are closed at once, so a
//! scraper gone wild cannot tie up the daemon.
//!
//! The body is OpenMetrics text: Kolokol's own gauges (messages by state, inbox size, relay
//! reservations, connected peers, routing table size), read fresh from the store and the swarm
//! task on each scrape, followed by libp2p's own metrics (connections, identify, relay server
//! events), which the swarm task records into the shared registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::swarm;
use kolokol_protocol::control::MessageState;

/// Metrics connections served at once; one more is closed without an answer.
pub const MAX_METRICS_CONNECTIONS: usize = 8;

/// The longest request head read, in bytes; a longer one is answered 431 and closed.
pub const MAX_REQUEST_LEN: usize = 8 * 1024;

/// How long a client may take to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read and thrown away after answering, before closing. Closing a socket with unread
/// input makes the kernel send a reset, which can destroy the answer in flight (a 431 to an
/// oversized request would never arrive), so the rest of the request is drained first, up to
/// this much and for at most [`REQUEST_TIMEOUT`].
const MAX_DRAIN_LEN: usize = 64 * 1024;

/// The content type of the answer.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the metrics address.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Network(format!("cannot serve metrics on {addr}: {e}")))
}

/// Serves scrapes until shutdown.
pub(crate) async fn serve(
    source: Source,
    listener: TcpListener,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Dropping the stream closes it: over the limit nobody waits.
                    let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                    let source = source.clone();
                    let registry = registry.clone();
                    connections.spawn(async move {
                        serve_connection(source, stream, &registry).await;
                        drop(permit);
                    });
                }
                Err(e) => tracing::warn!(%e, "metrics accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(source: Source, mut stream: TcpStream, registry: &Registry) {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await;
    let (status, body) = match head {
        Err(_) => ("408 Request Timeout", "request head not received in time\n".to_owned()),
        Ok(None) => ("431 Request Header Fields Too Large", "request too large\n".to_owned()),
        Ok(Some(head)) => {
            let request_line = head.lines().next().unwrap_or_default();
            let mut parts = request_line.split(' ');
            match (parts.next(), parts.next()) {
                (Some("GET"), Some("/metrics")) => match render(&source, registry).await {
                    Ok(body) => ("200 OK", body),
                    Err(e) => ("500 Internal Server Error", format!("{e}\n")),
                },
                (Some("GET"), Some(_)) => ("404 Not Found", "only /metrics is served\n".into()),
                _ => ("405 Method Not Allowed", "only GET /metrics is served\n".into()),
            }
        }
    };
    let content_type = if status == "200 OK" { CONTENT_TYPE } else { "text/plain" };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, drain(&mut stream)).await;
}

/// Reads and discards input until the client closes, or [`MAX_DRAIN_LEN`] bytes.
async fn drain(stream: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    let mut drained = 0;
    while drained < MAX_DRAIN_LEN {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Reads up to the blank line ending the request head; `None` if it exceeds
/// [`MAX_REQUEST_LEN`]. A connection closed early yields what arrived, which then fails to
/// parse as a request and is answered 405.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST_LEN {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The whole answer body: our gauges, then libp2p's metrics, then the OpenMetrics end marker.
async fn render(source: &Source, registry: &Registry) -> Result<String> {
    let snapshot = source.snapshot().await?;
    let mut out = String::new();
    gauge_header(&mut out, "kolokol_messages", "Text messages this node sent, by state.");
    for s in MessageState::ALL {
        let n = snapshot.messages.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
        out.push_str(&format!("kolokol_messages{{state=\"{s}\"}} {n}\n"));
    }
    let gauges = [
        ("kolokol_inbox_messages", "Messages in the inbox.", snapshot.inbox),
        (
            "kolokol_relay_reservations",
            "Relay reservations this node holds (a user node's, on relays).",
            snapshot.reservations,
        ),
        ("kolokol_connected_peers", "Peers connected now.", snapshot.connected_peers),
        ("kolokol_routing_table_peers", "Peers in the Kademlia routing table.", snapshot.routing),
        (
            "kolokol_mailbox_items",
            "Envelopes this node holds as a mailbox replica for others.",
            snapshot.mailbox_items,
        ),
    ];
    for (name, help, value) in gauges {
        gauge_header(&mut out, name, help);
        out.push_str(&format!("{name} {value}\n"));
    }
    prometheus_client::encoding::text::encode_registry(&mut out, registry)
        .map_err(|_| Error::Network("cannot encode libp2p metrics".into()))?;
    out.push_str("# EOF\n");
    Ok(out)
}

fn gauge_header(out: &mut String, name: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
}

/// Where the gauges are read from on each scrape.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) store: Store,
    pub(crate) swarm: swarm::Client,
}

impl Source {
    async fn snapshot(&self) -> Result<Snapshot> {
        let net = self.swarm.status().await?;
        Ok(Snapshot {
            messages: self.store.message_counts()?,
            inbox: self.store.inbox_count()?,
            reservations: net.reservations.len() as u64,
            connected_peers: net.connected as u64,
            routing: net.routing_table as u64,
            mailbox_items: self.store.mailbox_items_total()?,
        })
    }
}

/// The values behind Kolokol's own gauges.
struct Snapshot {
    /// Sent text messages by state.
    pub messages: Vec<(MessageState, u64)>,
    /// Messages in the inbox.
    pub inbox: u64,
    /// Relay reservations held.
    pub reservations: u64,
    /// Connected peers.
    pub connected_peers: u64,
    /// Routing table size.
    pub routing: u64,
    /// Mailbox items held for others.
    pub mailbox_items: u64,
}
