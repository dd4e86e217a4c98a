//! The stealth transport: libp2p connections inside TLS, opened by an HTTP upgrade at a
//! secret path, on a listener that is an ordinary HTTPS web server to everyone else.
//!
//! It wraps libp2p's TCP transport. A dial connects over TCP, runs a TLS handshake (pinned to
//! the address's certificate hash, or checked against public roots for its SNI), asks for a
//! WebSocket upgrade of the secret path, and hands the stream to the swarm, which then runs
//! its usual multistream-select, Noise and Yamux inside it. A listener hands every accepted
//! TCP connection to a task of its own, which judges the first TLS record as OpenSSL would
//! (`first_record`), terminates TLS (unless a reverse proxy in front already did), opens a connection to the cover server, and reads the client's first bytes:
//! as soon as they stop being a prefix of `GET /<secret> HTTP/1.1\r\n` for every accepted
//! secret, everything read so far and everything after goes to the cover server, and its
//! answers go back, byte for byte. Only a connection whose request line names a secret
//! reaches the swarm, so the swarm's pending-connection limits and handshake timeout never
//! see a scanner or a browser.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt as _, Ready};
use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt as _};

use crate::transport::address::{DialAddress, ListenAddress, ListenMode, certhash};
use crate::transport::cover::{Cover, Io};
use crate::transport::first_record::{self, Replay};
use crate::transport::http::{self, Verdict};
use crate::transport::meter::{Meter, Meters, Wire};
use crate::transport::session::{self, BoxCarrier, Budget, Opener};
use crate::transport::tls;
use kolokol_protocol::tunnel::{Answer, Offer};

/// How long a client may take over its TLS handshake (nginx's `ssl_handshake_timeout` is 60 s;
/// rustls-based servers commonly use less).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client that sent a tunnel request line may take to finish its head.
pub const TUNNEL_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections a listener handles before they are known to be tunnels or while they talk to
/// the cover server, all listeners of the transport together. Past this a new connection is
/// closed at once, as an overloaded web server would.
pub const MAX_PENDING_CONNECTIONS: usize = 1024;

/// Tunnels accepted and waiting for the swarm to take them.
pub const READY_QUEUE_LEN: usize = 64;

/// How long a client that has not yet sent anything decisive is waited for after the cover
/// server closed its side. A proxy would wait for the client's next write to fail; this bound
/// only keeps a silent client from holding a connection slot forever.
pub const COVER_CLOSED_LINGER: Duration = Duration::from_secs(30);

/// Size of the buffers used while splicing.
const SPLICE_BUFFER: usize = 16 * 1024;

/// What a listener advertises besides its own IP address and port.
#[derive(Clone, Debug)]
pub struct Advertised {
    /// The TLS server name dialers should send (the cover site's domain), if any.
    pub sni: Option<String>,
    /// The current secret.
    pub path: String,
    /// SHA-256 of the certificate, when dialers must pin it.
    pub certhash: Option<[u8; 32]>,
}

/// Everything a stealth listener needs.
#[derive(Clone)]
pub struct ListenerConfig {
    /// The TLS configuration for `/tls/http` listeners; `None` allows plain listeners only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Every accepted secret, current first.
    pub secrets: Vec<String>,
    /// Where everyone else goes.
    pub cover: Cover,
    /// What goes into the listen addresses.
    pub advertised: Advertised,
}

/// What the listener tasks share.
struct Server {
    tls: Option<tokio_rustls::TlsAcceptor>,
    lines: Vec<Vec<u8>>,
    cover: Cover,
    advertised: Advertised,
    /// The resumable tunnels this transport's listeners hold (`session`).
    sessions: session::Registry,
}

/// A tunnel accepted by a listener task, waiting for the swarm.
struct Accepted {
    listener: ListenerId,
    tunnel: Tunnel,
    local: Multiaddr,
    remote: Multiaddr,
}

/// The stealth transport.
pub struct Transport {
    tcp: libp2p::tcp::tokio::Transport,
    server: Option<Arc<Server>>,
    listeners: HashMap<ListenerId, ListenMode>,
    ready_tx: mpsc::Sender<Accepted>,
    ready_rx: mpsc::Receiver<Accepted>,
    pending: Arc<Semaphore>,
    /// Where the counter of a dial's socket comes from (`meter::metered`), if dials are counted.
    meters: Option<crate::transport::meter::Meters>,
}

impl Transport {
    /// A transport that dials stealth addresses, and listens on them if `listener` is given.
    pub fn new(listener: Option<ListenerConfig>) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel(READY_QUEUE_LEN);
        let server = listener.map(|l| {
            Arc::new(Server {
                tls: l.tls.map(tokio_rustls::TlsAcceptor::from),
                lines: l.secrets.iter().map(|s| http::request_line(s)).collect(),
                cover: l.cover,
                advertised: l.advertised,
                sessions: session::Registry::default(),
            })
        });
        Self {
            tcp: libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true)),
            server,
            listeners: HashMap::new(),
            ready_tx,
            ready_rx,
            pending: Arc::new(Semaphore::new(MAX_PENDING_CONNECTIONS)),
            meters: None,
        }
    }

    /// Counts each dial's socket, below TLS, in the counter `meters` holds for it.
    pub fn counted(mut self, meters: crate::transport::meter::Meters) -> Self {
        self.meters = Some(meters);
        self
    }

    /// The address a listener advertises for a bound TCP address.
    fn advertise(&self, tcp: Multiaddr, mode: ListenMode) -> Multiaddr {
        let Some(server) = &self.server else { return tcp };
        let a = &server.advertised;
        match mode {
            ListenMode::Tls => {
                let mut addr = tcp.with(Protocol::Tls);
                if let Some(sni) = &a.sni {
                    addr = addr.with(Protocol::Sni(sni.clone().into()));
                }
                addr = addr.with(Protocol::Http).with(Protocol::HttpPath(a.path.clone().into()));
                if let Some(hash) = &a.certhash {
                    addr = addr.with(certhash(hash));
                }
                addr
            }
            // Behind a reverse proxy the public address is the proxy's, which the operator
            // configures; this one is only for the log, and carries no secret.
            ListenMode::Plain => tcp.with(Protocol::Http),
        }
    }
}

impl libp2p::core::Transport for Transport {
    type Output = Compat<Tunnel>;
    type Error = io::Error;
    type ListenerUpgrade = Ready<Result<Self::Output, Self::Error>>;
    type Dial = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some(listen) = ListenAddress::parse(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let Some(server) = &self.server else {
            return Err(TransportError::Other(io::Error::other(
                "this node has no stealth listener configured (only relays listen on stealth addresses)",
            )));
        };
        if listen.mode == ListenMode::Tls && server.tls.is_none() {
            return Err(TransportError::Other(io::Error::other(
                "no TLS certificate for a /tls/http stealth listener",
            )));
        }
        self.tcp.listen_on(id, listen.tcp)?;
        self.listeners.insert(id, listen.mode);
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.listeners.remove(&id);
        self.tcp.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(target) = DialAddress::parse(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let tcp = self.tcp.dial(target.tcp.clone(), opts)?;
        let meter = self.meters.as_ref().and_then(|m| m.take_dialing());
        let meters = self.meters.clone();
        Ok(async move {
            let stream = tcp.await?;
            let tunnel = dial_tunnel(stream.0, target, meter, meters).await?;
            Ok(tunnel.compat())
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        loop {
            if let Poll::Ready(Some(a)) = self.ready_rx.poll_recv(cx) {
                return Poll::Ready(TransportEvent::Incoming {
                    listener_id: a.listener,
                    upgrade: futures::future::ready(Ok(a.tunnel.compat())),
                    local_addr: a.local,
                    send_back_addr: a.remote,
                });
            }
            let event = match Pin::new(&mut self.tcp).poll(cx) {
                Poll::Ready(event) => event,
                Poll::Pending => return Poll::Pending,
            };
            match event {
                TransportEvent::NewAddress { listener_id, listen_addr } => {
                    let mode = self.listeners.get(&listener_id).copied().unwrap_or(ListenMode::Tls);
                    let listen_addr = self.advertise(listen_addr, mode);
                    return Poll::Ready(TransportEvent::NewAddress { listener_id, listen_addr });
                }
                TransportEvent::AddressExpired { listener_id, listen_addr } => {
                    let mode = self.listeners.get(&listener_id).copied().unwrap_or(ListenMode::Tls);
                    let listen_addr = self.advertise(listen_addr, mode);
                    return Poll::Ready(TransportEvent::AddressExpired {
                        listener_id,
                        listen_addr,
                    });
                }
                TransportEvent::Incoming { listener_id, upgrade, local_addr, send_back_addr } => {
                    let Ok(stream) = upgrade.into_inner() else { continue };
                    let (Some(server), Some(mode)) =
                        (self.server.clone(), self.listeners.get(&listener_id).copied())
                    else {
                        continue;
                    };
                    // Over the limit the connection is dropped here, which closes it.
                    let Ok(permit) = self.pending.clone().try_acquire_owned() else {
                        tracing::debug!(%send_back_addr, "too many stealth connections pending; closing one");
                        continue;
                    };
                    let ready = self.ready_tx.clone();
                    let local = self.advertise(local_addr, mode);
                    tokio::spawn(async move {
                        // The permit is held until the swarm has the tunnel, so that tunnels
                        // waiting for a full ready queue count against the limit too.
                        let _permit = permit;
                        if let Some(tunnel) = accept(stream.0, &server, mode).await {
                            let _ = ready
                                .send(Accepted {
                                    listener: listener_id,
                                    tunnel,
                                    local,
                                    remote: send_back_addr,
                                })
                                .await;
                        }
                    });
                }
                TransportEvent::ListenerClosed { listener_id, reason } => {
                    self.listeners.remove(&listener_id);
                    return Poll::Ready(TransportEvent::ListenerClosed { listener_id, reason });
                }
                TransportEvent::ListenerError { listener_id, error } => {
                    return Poll::Ready(TransportEvent::ListenerError { listener_id, error });
                }
            }
        }
    }
}

/// The client side: TLS to the listener, then the upgrade at the secret path, offering a
/// resumable session (`session`); a listener that does not know sessions gives the plain
/// tunnel. `meter` counts the connection for the swarm task: the first carrier's socket, then
/// what later carriers receive.
async fn dial_tunnel(
    tcp: TcpStream,
    target: DialAddress,
    meter: Option<Meter>,
    meters: Option<Meters>,
) -> io::Result<Tunnel> {
    let carrier_meter = meter.clone().unwrap_or_default();
    let carrier = connect_tls(Wire::new(tcp, Some(carrier_meter.clone())), &target).await?;
    let budget = meters
        .clone()
        .map(|meters| Budget { meters, group: crate::swarm::dht::address_group(&target.tcp) });
    let opener = Arc::new(Dialer { target });
    match session::open_client(opener, carrier, carrier_meter, budget, meter.clone()).await? {
        Ok(session) => {
            if let (Some(meters), Some(meter)) = (&meters, &meter) {
                meters.mark_resumable(meter);
            }
            Ok(Tunnel(Kind::Session(session)))
        }
        Err(carrier) => Ok(Tunnel(Kind::Plain(Replay::new(Vec::new(), Inner::Boxed(carrier))))),
    }
}

/// TLS to a stealth listener, pinned or checked as its address says.
async fn connect_tls(tcp: Wire<TcpStream>, target: &DialAddress) -> io::Result<BoxCarrier> {
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(target.certhash));
    let name = tls::server_name(target.sni.as_deref(), &target.host)?;
    Ok(Box::new(connector.connect(name, tcp).await?))
}

/// The `Host` header of a dial to `target`.
fn host_header(target: &DialAddress) -> String {
    let port = target.tcp.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    let host = target.sni.clone().unwrap_or_else(|| {
        if target.host.contains(':') { format!("[{}]", target.host) } else { target.host.clone() }
    });
    match port {
        Some(443) | None => host,
        Some(port) => format!("{host}:{port}"),
    }
}

/// How a session's client opens its carriers: to the address it was dialed at.
struct Dialer {
    target: DialAddress,
}

impl Opener for Dialer {
    fn connect(&self, meter: Meter) -> BoxFuture<'static, io::Result<BoxCarrier>> {
        let target = self.target.clone();
        async move {
            let port = target
                .tcp
                .iter()
                .find_map(|p| match p {
                    Protocol::Tcp(port) => Some(port),
                    _ => None,
                })
                .ok_or_else(|| io::Error::other("a stealth address without a TCP port"))?;
            let tcp = TcpStream::connect((target.host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            connect_tls(Wire::new(tcp, Some(meter)), &target).await
        }
        .boxed()
    }

    fn upgrade<'a>(
        &'a self,
        carrier: &'a mut BoxCarrier,
        offer: Offer,
    ) -> BoxFuture<'a, io::Result<Option<Answer>>> {
        async move {
            let host = host_header(&self.target);
            session::upgrade(carrier, &host, &self.target.path, offer).await
        }
        .boxed()
    }
}

/// The listener side of one connection: the tunnel if the client knows a secret; otherwise
/// the connection is spliced to the cover server until either side closes, and `None`.
async fn accept(tcp: TcpStream, server: &Server, mode: ListenMode) -> Option<Tunnel> {
    match (mode, &server.tls) {
        (ListenMode::Tls, Some(acceptor)) => {
            // Bytes that are not TLS are refused as OpenSSL refuses them (first_record). A
            // failed handshake ends here: tokio-rustls has sent rustls's alert, if any, and
            // dropping the stream closes the connection. Both within one handshake timeout.
            let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, async {
                let tcp = first_record::read(tcp).await?;
                acceptor.accept(tcp).await.ok()
            })
            .await
            .ok()??;
            let (tls, head, pending) = sort(tls, server).await?;
            open(Replay::new(pending, Inner::Server(Box::new(tls))), &head, server).await
        }
        (ListenMode::Plain, _) => {
            let (tcp, head, pending) = sort(tcp, server).await?;
            open(Replay::new(pending, Inner::Plain(tcp)), &head, server).await
        }
        (ListenMode::Tls, None) => None,
    }
}

/// Answers a tunnel request whose head is `head`: opens or resumes the session it offers, or
/// opens a plain tunnel. A resumption goes to its session, and gives no new tunnel.
async fn open(carrier: Replay<Inner>, head: &[u8], server: &Server) -> Option<Tunnel> {
    let mut response = http::switching_protocols_open(head);
    match server.sessions.accept(Box::new(carrier), head, response.clone()).await {
        session::Accepted::Session(session) => Some(Tunnel(Kind::Session(session))),
        session::Accepted::Nothing => None,
        session::Accepted::Plain(mut carrier) => {
            response.extend_from_slice(b"\r\n");
            carrier.write_all(&response).await.ok()?;
            carrier.flush().await.ok()?;
            Some(Tunnel(Kind::Plain(Replay::new(Vec::new(), Inner::Boxed(carrier)))))
        }
    }
}

/// Reads a client's first bytes while relaying the cover server's to it: returns the stream,
/// the request head and any bytes after it once a secret's request line has arrived, or
/// splices the client to the cover server as soon as the bytes cannot be one.
async fn sort<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    server: &Server,
) -> Option<(S, Vec<u8>, Vec<u8>)> {
    let mut cover: Box<dyn Io> = server.cover.connect().await.ok()?;
    let mut received = Vec::with_capacity(256);
    let mut from_client = [0u8; 2048];
    let mut from_cover = vec![0u8; SPLICE_BUFFER];
    let mut cover_closed = false;
    let linger = tokio::time::sleep(Duration::MAX);
    tokio::pin!(linger);
    loop {
        tokio::select! {
            () = &mut linger => return None,
            read = client.read(&mut from_client) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        // The client stopped before saying anything decisive: the cover server
                        // gets what it sent, and the end of it.
                        let _ = cover.write_all(&received).await;
                        let _ = cover.shutdown().await;
                        break;
                    }
                    Ok(n) => n,
                };
                received.extend_from_slice(&from_client[..n]);
                match http::classify(&received, &server.lines) {
                    Verdict::Undecided => {}
                    Verdict::Tunnel(_) => {
                        drop(cover);
                        return finish_tunnel(client, received).await;
                    }
                    Verdict::Cover => {
                        if cover.write_all(&received).await.is_err() {
                            return None;
                        }
                        break;
                    }
                }
            }
            read = cover.read(&mut from_cover), if !cover_closed => match read {
                Ok(0) | Err(_) => {
                    cover_closed = true;
                    let _ = client.shutdown().await;
                    linger.as_mut().reset(tokio::time::Instant::now() + COVER_CLOSED_LINGER);
                }
                Ok(n) => {
                    if client.write_all(&from_cover[..n]).await.is_err() {
                        return None;
                    }
                }
            },
        }
    }
    let _ = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut cover,
        SPLICE_BUFFER,
        SPLICE_BUFFER,
    )
    .await;
    None
}

/// Reads the rest of a tunnel request's head: the stream, the head and what came after it.
async fn finish_tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    mut received: Vec<u8>,
) -> Option<(S, Vec<u8>, Vec<u8>)> {
    let head_len = tokio::time::timeout(TUNNEL_HEAD_TIMEOUT, async {
        loop {
            if let Some(end) = http::head_end(&received) {
                return Some(end);
            }
            if received.len() >= http::MAX_HEAD {
                return None;
            }
            let mut chunk = [0u8; 1024];
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .ok()??;
    let rest = received.split_off(head_len);
    Some((client, received, rest))
}

/// The stream under a plain tunnel.
enum Inner {
    Boxed(BoxCarrier),
    Server(Box<tokio_rustls::server::TlsStream<Replay<TcpStream>>>),
    Plain(TcpStream),
}

/// An open tunnel, as libp2p reads and writes it.
pub struct Tunnel(Kind);

enum Kind {
    /// The TLS (or, behind a reverse proxy, plain) stream, after the bytes that arrived right
    /// after the upgrade request, which libp2p reads first.
    Plain(Replay<Inner>),
    /// A session that outlives its connections.
    Session(session::Session),
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Kind::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Kind::Session(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.0 {
            Kind::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Kind::Session(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Kind::Plain(s) => Pin::new(s).poll_flush(cx),
            Kind::Session(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            Kind::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Kind::Session(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Inner {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut *self {
            Inner::Boxed(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Inner::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Inner {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut *self {
            Inner::Boxed(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Inner::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Inner::Boxed(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Inner::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *self {
            Inner::Boxed(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Inner::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
