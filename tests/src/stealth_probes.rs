//! Active probes against a stealth listener (threat model T11), each compared with the same
//! probe against an ordinary HTTPS reverse proxy in front of the same cover web server: the
//! multistream header, random bytes of several lengths, a plain HTTP request, a ClientHello
//! with another server name, a replayed first flight of a real Kolokol client, and a valid TLS
//! handshake followed by garbage or by a request for a wrong path. Every answer, and how the
//! connection ends (close_notify, FIN, reset, or still open), must be the reference's.
//!
//! Two references, neither of them the transport's code. Bytes that are not a ClientHello are
//! compared with a real `openssl s_server`: OpenSSL's record layer is what nginx, Apache and
//! most HTTPS servers judge a first record with. From a ClientHello on, the reference is
//! written here: accept TCP, run rustls's handshake with the same certificate, connect to the
//! cover server, copy both ways, which is what nginx's `proxy_pass` or any small rustls proxy
//! does. Timings are printed, never asserted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kolokol_node::config::Policy;
use kolokol_node::transport::{self, DialAddress, cover, stealth, tls};
use kolokol_node::{Config, Role};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, ping};
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::support::TIMEOUT;

/// A probe's answer is read until the server has been quiet this long; a server still
/// waiting then counts as "open".
const QUIET: Duration = Duration::from_millis(700);

/// What a probe saw.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The answer: raw bytes for probes without TLS; the TLS record types and lengths for a
    /// bare ClientHello or a replay (their contents are random by design); the decrypted
    /// answer, without its `Date` header, after a handshake of our own.
    answer: String,
    /// How the connection ended: `close_notify`, `fin`, `reset`, `open` or `error: ...`.
    end: String,
}

fn swarm(policy: Policy, listener: Option<stealth::ListenerConfig>) -> Swarm<ping::Behaviour> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            transport::build(
                key,
                policy,
                listener,
                transport::cooldown::Shared::default(),
                transport::meter::Meters::default(),
            )
        })
        .expect("transport")
        .with_behaviour(|_| ping::Behaviour::default())
        .expect("behaviour")
        .build()
}

/// The cover web server: the built-in static server on a TCP port of its own.
async fn cover_server(root: std::path::PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let site = Arc::new(cover::Site { root: Some(root) });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let site = site.clone();
            tokio::spawn(async move { site.serve(stream).await });
        }
    });
    addr
}

/// The reference: a minimal rustls HTTPS reverse proxy to `backend`.
async fn reference_proxy(config: Arc<rustls::ServerConfig>, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(stealth::TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                        .await
                else {
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(backend).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    addr
}

/// `openssl s_server` on a port of 127.0.0.1, killed on drop.
struct OpensslServer {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl OpensslServer {
    /// Starts it with a fresh self-signed certificate, and waits until it accepts.
    async fn start() -> Self {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().expect("tempdir");
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-nodes", "-days", "2", "-subj", "/CN=cover.example"])
            .args(["-keyout", "k.pem", "-out", "c.pem"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "openssl is needed as the reference TLS server (apt-get install openssl)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Its standard input stays open as long as the child holds the pipe: s_server stops
        // at the end of its input.
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &addr.to_string()])
            .args(["-cert", "c.pem", "-key", "k.pem"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let server = Self { child, addr, _dir: dir };
        tokio::time::timeout(TIMEOUT, async {
            while TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("openssl s_server listens");
        server
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until the peer is quiet for [`QUIET`] or ends the connection.
async fn drain(mut s: impl AsyncRead + Unpin) -> (Vec<u8>, String) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match tokio::time::timeout(QUIET, s.read(&mut buf)).await {
            Err(_) => return (out, "open".into()),
            Ok(Ok(0)) => return (out, "close_notify or fin".into()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => {
                let end = match e.kind() {
                    std::io::ErrorKind::ConnectionReset => "reset".to_owned(),
                    std::io::ErrorKind::UnexpectedEof => "fin".to_owned(),
                    _ => format!("error: {e}"),
                };
                return (out, end);
            }
        }
        assert!(Instant::now() < deadline, "the server never stops talking");
    }
}

/// TLS records in `bytes` as `type:length` words.
fn records(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        out.push(format!("{}:{len}", rest[0]));
        rest = &rest[(5 + len).min(rest.len())..];
    }
    if !rest.is_empty() {
        out.push(format!("+{}", rest.len()));
    }
    out.join(" ")
}

/// Whether two outcomes are the same. Encrypted records (type 23) may differ in length by a
/// few bytes, since an ECDSA signature's DER encoding varies from 70 to 72 bytes from one
/// handshake to the next; everything else must be equal.
fn same(a: &Outcome, b: &Outcome) -> bool {
    if a == b {
        return true;
    }
    let (wa, wb): (Vec<&str>, Vec<&str>) =
        (a.answer.split(' ').collect(), b.answer.split(' ').collect());
    a.end == b.end
        && wa.len() == wb.len()
        && wa.iter().zip(&wb).all(|(x, y)| {
            x == y
                || match (x.strip_prefix("23:"), y.strip_prefix("23:")) {
                    (Some(x), Some(y)) => match (x.parse::<i64>(), y.parse::<i64>()) {
                        (Ok(x), Ok(y)) => (x - y).abs() <= 4,
                        _ => false,
                    },
                    _ => false,
                }
        })
}

/// The answer without `Date:` headers, which differ by the second.
fn without_dates(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split("\r\n")
        .filter(|l| !l.starts_with("Date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Sends raw bytes with no TLS.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let (answer, end) = drain(s).await;
    Outcome { answer: String::from_utf8_lossy(&answer).into_owned(), end }
}

/// Sends TLS records of a client flight by flight (a ClientHello, then whatever followed it),
/// and reports the record structure of the answers.
async fn flights(addr: SocketAddr, first: &[u8], rest: Option<&[u8]>) -> Outcome {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(first).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    // The server's first flight, up to its first pause.
    while let Ok(Ok(n)) = tokio::time::timeout(QUIET, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let mut text = records(&answer);
    if let Some(rest) = rest {
        let _ = s.write_all(rest).await;
        text.push_str(" |");
    }
    let (more, end) = drain(s).await;
    if !more.is_empty() {
        text.push(' ');
        text.push_str(&records(&more));
    }
    Outcome { answer: text, end }
}

/// A TLS handshake with SNI `sni` (or none), then `bytes`, reading the decrypted answer.
async fn after_handshake(
    addr: SocketAddr,
    pin: [u8; 32],
    sni: Option<&str>,
    bytes: &[u8],
) -> Outcome {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(Some(pin)));
    let name = tls::server_name(sni, "127.0.0.1").expect("name");
    let mut s = match connector.connect(name, tcp).await {
        Ok(s) => s,
        Err(e) => return Outcome { answer: String::new(), end: format!("handshake failed: {e}") },
    };
    let _ = s.write_all(bytes).await;
    let _ = s.flush().await;
    let (answer, end) = drain(s).await;
    Outcome { answer: without_dates(&answer), end }
}

/// The ClientHello a rustls client with the stealth dialer's settings sends for `sni`.
pub async fn client_hello(sni: Option<&str>, pin: [u8; 32]) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sni = sni.map(str::to_owned);
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let connector = tokio_rustls::TlsConnector::from(tls::client_config(Some(pin)));
        let name = tls::server_name(sni.as_deref(), "127.0.0.1").expect("name");
        let _ = connector.connect(name, tcp).await;
    });
    let (mut s, _) = listener.accept().await.expect("accept");
    let mut hello = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "the client closed before its ClientHello");
        hello.extend_from_slice(&buf[..n]);
        if hello.len() >= 5
            && hello.len() >= 5 + usize::from(u16::from_be_bytes([hello[3], hello[4]]))
        {
            break;
        }
    }
    drop(s);
    let _ = client.await;
    hello
}

/// A real Kolokol client's bytes to the listener at `target`, recorded by a TCP proxy in
/// between while a stealth swarm dials through it and connects.
async fn recorded_first_flight(
    target: &DialAddress,
    listener: &mut Swarm<ping::Behaviour>,
) -> Vec<u8> {
    let upstream_port = target
        .tcp
        .iter()
        .find_map(|p| if let Protocol::Tcp(p) = p { Some(p) } else { None })
        .expect("port");
    let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_port = proxy.local_addr().expect("addr").port();
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let record = recorded.clone();
    tokio::spawn(async move {
        let (client, _) = proxy.accept().await.expect("accept");
        let server = TcpStream::connect(("127.0.0.1", upstream_port)).await.expect("connect");
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        });
        let mut buf = [0u8; 4096];
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            record.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let mut via_proxy = target.clone();
    via_proxy.tcp = Multiaddr::empty()
        .with(Protocol::Ip4([127, 0, 0, 1].into()))
        .with(Protocol::Tcp(proxy_port));
    let mut client = swarm(Policy::Stealth, None);
    client.dial(via_proxy.to_multiaddr()).expect("dial");
    tokio::time::timeout(TIMEOUT, async {
        loop {
            tokio::select! {
                e = client.select_next_some() => match e {
                    SwarmEvent::ConnectionEstablished { .. } => break,
                    SwarmEvent::OutgoingConnectionError { error, .. } => panic!("the real client failed: {error}"),
                    _ => {}
                },
                _ = listener.select_next_some() => {}
            }
        }
    })
    .await
    .expect("the real client connects");
    recorded.lock().expect("lock").clone()
}

#[tokio::test]
async fn probes_see_exactly_what_an_ordinary_https_proxy_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site");
    std::fs::create_dir(&site).expect("mkdir");
    std::fs::write(site.join("index.html"), "<h1>Opening hours</h1>").expect("write");
    let backend = cover_server(site).await;

    let mut config = Config::new(dir.path().join("relay"), Role::Relay);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0/tls/http".parse().expect("addr")];
    config.stealth.cover_backend = Some(backend);
    let listener_config =
        transport::prepare(&config, 1_700_000_000).expect("prepare").expect("a listener");
    let server_config = listener_config.tls.clone().expect("tls");
    let mut relay = swarm(Policy::Any, Some(listener_config));
    relay.listen_on(config.listen[0].clone()).expect("listen");
    let stealth_addr = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = relay.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("listening");
    let target = DialAddress::parse(&stealth_addr).expect("dialable");
    let pin = target.certhash.expect("a pinned certificate");
    let port = target
        .tcp
        .iter()
        .find_map(|p| if let Protocol::Tcp(p) = p { Some(p) } else { None })
        .expect("port");
    let stealth = SocketAddr::from(([127, 0, 0, 1], port));
    let reference = reference_proxy(server_config, backend).await;
    let openssl = OpensslServer::start().await;

    let first_flight = recorded_first_flight(&target, &mut relay).await;
    let hello_len = 5 + usize::from(u16::from_be_bytes([first_flight[3], first_flight[4]]));
    let (replay_hello, replay_rest) = first_flight.split_at(hello_len);
    // The recorded client did speak libp2p inside TLS: its bytes are TLS records only.
    assert!(!records(&first_flight).contains('+'), "{}", records(&first_flight));

    let driver = tokio::spawn(async move {
        loop {
            relay.select_next_some().await;
        }
    });

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut probes: Vec<(String, Vec<u8>)> = vec![
        ("multistream header".into(), b"\x13/multistream/1.0.0\n\x07/noise\n".to_vec()),
        ("plain HTTP".into(), b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n".to_vec()),
    ];
    for len in [1usize, 5, 64, 517, 2048] {
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes[..]);
        probes.push((format!("{len} random bytes"), bytes));
    }
    // Random-bytes probes that start like TLS records, each aimed at one of OpenSSL's rules
    // for a first record.
    let record = |kind: u8, body: &[u8]| {
        let mut r = vec![kind, 0x03, 0x01];
        r.extend_from_slice(&u16::try_from(body.len()).expect("short").to_be_bytes());
        r.extend_from_slice(body);
        r
    };
    let mut noise = vec![0u8; 512];
    rng.fill(&mut noise[..]);
    noise[0] = 0xab;
    probes.push(("TLS handshake record of random bytes".into(), record(22, &noise)));
    probes.push(("TLS application data record".into(), record(23, &noise[..64])));
    probes.push(("TLS alert record".into(), record(21, &[2, 40])));
    probes.push(("TLS record header too long".into(), vec![22, 3, 3, 0xff, 0xff]));
    probes.push(("TLS header only".into(), vec![22, 3, 1, 2, 0]));
    let mut hello = vec![1, 0, 0, 40];
    hello.extend_from_slice(&noise[..40]);
    probes.push(("ClientHello of random bytes".into(), record(22, &hello)));
    probes
        .push(("HTTPS proxy request".into(), b"CONNECT example.org:443 HTTP/1.1\r\n\r\n".to_vec()));

    let mut table = Vec::new();
    let mut compare = |name: &str,
                       ours: Outcome,
                       theirs: Outcome,
                       ours_t: Duration,
                       theirs_t: Duration| {
        table.push(format!(
            "{name:<40} {:>6} ms {:>6} ms  {}",
            ours_t.as_millis(),
            theirs_t.as_millis(),
            ours.end
        ));
        assert!(
            same(&ours, &theirs),
            "probe {name:?}: the stealth listener differs from the reference\n  stealth:   {ours:?}\n  reference: {theirs:?}"
        );
        for forbidden in ["multistream", "/noise", "/yamux", "libp2p", "kolokol", "/ipfs"] {
            assert!(!ours.answer.contains(forbidden), "probe {name:?} got {forbidden:?} back");
        }
    };

    for (name, bytes) in &probes {
        let t = Instant::now();
        let ours = raw(stealth, bytes).await;
        let ours_t = t.elapsed();
        let t = Instant::now();
        let theirs = raw(openssl.addr, bytes).await;
        compare(name, ours, theirs, ours_t, t.elapsed());
    }

    for sni in [Some("other.example"), None] {
        let hello = client_hello(sni, pin).await;
        let name = format!("ClientHello, SNI {sni:?}");
        let t = Instant::now();
        let ours = flights(stealth, &hello, None).await;
        let ours_t = t.elapsed();
        let t = Instant::now();
        let theirs = flights(reference, &hello, None).await;
        assert!(ours.answer.starts_with("22:"), "{name}: {}", ours.answer);
        compare(&name, ours, theirs, ours_t, t.elapsed());
    }

    let t = Instant::now();
    let ours = flights(stealth, replay_hello, Some(replay_rest)).await;
    let ours_t = t.elapsed();
    let t = Instant::now();
    let theirs = flights(reference, replay_hello, Some(replay_rest)).await;
    compare("replayed first flight of a real client", ours, theirs, ours_t, t.elapsed());

    let mut garbage = vec![0u8; 300];
    rng.fill(&mut garbage[..]);
    let after: Vec<(String, Option<&str>, Vec<u8>)> = vec![
        ("handshake, then garbage".into(), None, garbage),
        ("handshake, then the multistream header".into(), None, b"\x13/multistream/1.0.0\n".to_vec()),
        ("handshake, then GET /".into(), None, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()),
        (
            "handshake, then an upgrade at a wrong path".into(),
            Some("other.example"),
            b"GET /AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
        ),
        ("handshake, then nothing".into(), None, Vec::new()),
    ];
    for (name, sni, bytes) in &after {
        let t = Instant::now();
        let ours = after_handshake(stealth, pin, *sni, bytes).await;
        let ours_t = t.elapsed();
        let t = Instant::now();
        let theirs = after_handshake(reference, pin, *sni, bytes).await;
        compare(name, ours, theirs, ours_t, t.elapsed());
    }
    driver.abort();
    println!("{:<40} {:>9} {:>9}  end", "probe", "stealth", "reference");
    for line in table {
        println!("{line}");
    }
}
