//! Tests of the stealth transport over 127.0.0.1: two swarms connect through it (and not
//! with a wrong secret or a wrong certificate pin), and a client without the secret gets the
//! cover site, before and after a TLS handshake.

use std::time::Duration;

use futures::StreamExt as _;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, ping};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::address::DialAddress;
use super::*;
use crate::config::{Config, Role};

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

fn swarm(policy: Policy, listener: Option<stealth::ListenerConfig>) -> Swarm<ping::Behaviour> {
    metered_swarm(policy, listener, meter::Meters::default())
}

fn metered_swarm(
    policy: Policy,
    listener: Option<stealth::ListenerConfig>,
    meters: meter::Meters,
) -> Swarm<ping::Behaviour> {
    #[allow(clippy::expect_used)]
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            build(key, policy, listener, cooldown::Shared::default(), meters)
        })
        .expect("transport")
        .with_behaviour(|_| ping::Behaviour::default())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build()
}

/// A relay-like config with a stealth listener on 127.0.0.1 and the given cover.
fn listener(
    dir: &std::path::Path,
    cover_dir: Option<std::path::PathBuf>,
) -> stealth::ListenerConfig {
    let mut config = Config::new(dir, Role::Relay);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0/tls/http".parse().expect("addr")];
    config.stealth.cover_dir = cover_dir;
    prepare(&config, 1_700_000_000).expect("prepare").expect("a stealth listener")
}

/// Starts listening and returns the advertised dial address.
async fn listen(s: &mut Swarm<ping::Behaviour>) -> Multiaddr {
    s.listen_on("/ip4/127.0.0.1/tcp/0/tls/http".parse().expect("addr")).expect("listen");
    tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("a listen address")
}

/// Drives both swarms until the dialer's connection is established or fails.
async fn connect(
    dialer: &mut Swarm<ping::Behaviour>,
    listener: &mut Swarm<ping::Behaviour>,
    addr: Multiaddr,
) -> Result<libp2p::PeerId, String> {
    dialer.dial(addr).expect("dial starts");
    tokio::time::timeout(STEP, async {
        loop {
            tokio::select! {
                e = dialer.select_next_some() => match e {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => return Ok(peer_id),
                    SwarmEvent::OutgoingConnectionError { error, .. } => return Err(error.to_string()),
                    _ => {}
                },
                _ = listener.select_next_some() => {}
            }
        }
    })
    .await
    .expect("the dial ends")
}

#[tokio::test]
async fn two_swarms_connect_through_the_stealth_transport() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut relay = swarm(Policy::Any, Some(listener(dir.path(), None)));
    let addr = listen(&mut relay).await;
    let parsed = DialAddress::parse(&addr).expect("a dialable stealth address");
    assert!(parsed.certhash.is_some() && parsed.sni.is_none(), "{addr}");
    let mut user = swarm(Policy::Stealth, None);
    let peer = connect(&mut user, &mut relay, addr).await.expect("connects");
    assert_eq!(peer, *relay.local_peer_id());
}

/// Dials `addr` from a swarm of its own and returns what the new connection's counter says as
/// soon as it is established, before any substream has carried a byte.
async fn counted_at_establishment(
    listener: &mut Swarm<ping::Behaviour>,
    addr: Multiaddr,
    policy: Policy,
) -> u64 {
    let meters = meter::Meters::default();
    let mut dialer = metered_swarm(policy, None, meters.clone());
    dialer.dial(addr).expect("dial starts");
    let (peer, endpoint) = tokio::time::timeout(STEP, async {
        loop {
            tokio::select! {
                e = dialer.select_next_some() => match e {
                    SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => return (peer_id, endpoint),
                    SwarmEvent::OutgoingConnectionError { error, .. } => panic!("no connection: {error}"),
                    _ => {}
                },
                _ = listener.select_next_some() => {}
            }
        }
    })
    .await
    .expect("the dial ends");
    let meter = meters.claim(peer, &endpoint).expect("the connection's counter");
    meter.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn a_dialed_connection_is_counted_on_its_socket_from_the_handshake_on() {
    // Counted above the multiplexer, as before, both would be 0 here: no substream has read
    // anything yet. On the socket, the count holds the handshakes the censor counted too.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut relay = swarm(Policy::Any, Some(listener(dir.path(), None)));
    let stealth = listen(&mut relay).await;
    relay.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr")).expect("listen");
    let plain = tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = relay.select_next_some().await
                && !address.iter().any(|p| p == Protocol::Http)
            {
                return address;
            }
        }
    })
    .await
    .expect("a plain listen address");
    let over_tcp = counted_at_establishment(&mut relay, plain, Policy::Any).await;
    // Noise's second message (an ephemeral key, the encrypted static key and the signed
    // identity payload) and multistream-select's answer, with a packet's headers per read.
    assert!((200..4_096).contains(&over_tcp), "plain TCP counted {over_tcp}");
    let over_tls = counted_at_establishment(&mut relay, stealth, Policy::Stealth).await;
    // The TLS server's flight holds its certificate.
    assert!(over_tls > over_tcp + 300, "stealth counted {over_tls}, plain TCP {over_tcp}");
}

#[tokio::test]
async fn a_wrong_secret_or_pin_does_not_connect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut relay = swarm(Policy::Any, Some(listener(dir.path(), None)));
    let addr = listen(&mut relay).await;
    let good = DialAddress::parse(&addr).expect("dialable");

    let wrong_secret = DialAddress { path: "AAAAAAAAAAAAAAAAAAAAAA".into(), ..good.clone() };
    let mut user = swarm(Policy::Stealth, None);
    let error =
        connect(&mut user, &mut relay, wrong_secret.to_multiaddr()).await.expect_err("refused");
    assert!(error.contains("404"), "{error}");

    let wrong_pin = DialAddress { certhash: Some([7; 32]), ..good };
    let error =
        connect(&mut user, &mut relay, wrong_pin.to_multiaddr()).await.expect_err("refused");
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test]
async fn the_stealth_policy_dials_nothing_else() {
    let mut user = swarm(Policy::Stealth, None);
    let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().expect("addr");
    assert!(user.dial(tcp.clone()).is_ok());
    let refused = tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::OutgoingConnectionError { error, .. } = user.select_next_some().await
            {
                return error.to_string();
            }
        }
    })
    .await
    .expect("the dial fails");
    assert!(
        refused.contains("not supported") || refused.contains("MultiaddrNotSupported"),
        "{refused}"
    );
}

/// A TLS client that trusts the listener's pinned certificate, for probing it by hand.
async fn tls_client(addr: &Multiaddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let target = DialAddress::parse(addr).expect("dialable");
    let port = target
        .tcp
        .iter()
        .find_map(|p| if let Protocol::Tcp(p) = p { Some(p) } else { None })
        .expect("port");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(target.certhash));
    connector.connect(tls::server_name(None, "127.0.0.1").expect("name"), tcp).await.expect("tls")
}

async fn read_all(mut s: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut out)).await.expect("the server closes");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn without_the_secret_a_client_gets_the_cover_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = dir.path().join("site");
    std::fs::create_dir(&site).expect("mkdir");
    std::fs::write(site.join("index.html"), "<h1>Bakery on the corner</h1>").expect("write");
    let mut relay = swarm(Policy::Any, Some(listener(dir.path(), Some(site))));
    let addr = listen(&mut relay).await;
    let driver = tokio::spawn(async move {
        loop {
            relay.select_next_some().await;
        }
    });

    // The front page, then a wrong path on the same connection.
    let mut c = tls_client(&addr).await;
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = read_all(c).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("<h1>Bakery on the corner</h1>HTTP/1.1 404 Not Found\r\n"), "{answer}");

    // The secret's path, but not as the first request: the cover server answers it.
    let secret = DialAddress::parse(&addr).expect("dialable").path;
    let mut c = tls_client(&addr).await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /{secret} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n"
    );
    c.write_all(request.as_bytes()).await.expect("write");
    let answer = read_all(c).await;
    assert!(!answer.contains(" 101 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 2, "{answer}");

    // Garbage after a valid handshake: the cover server's 400.
    let mut c = tls_client(&addr).await;
    c.write_all(b"\x13/multistream/1.0.0\n\r\n\r\n").await.expect("write");
    let answer = read_all(c).await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");

    // The secret's request line opens the tunnel.
    let mut c = tls_client(&addr).await;
    let (request, accept) = http::upgrade_request("x", &secret, None);
    c.write_all(&request).await.expect("write");
    let head = http::read_head(&mut c).await.expect("head");
    assert!(head.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    assert_eq!(http::header(&head, "sec-websocket-accept"), Some(accept.as_str()));

    // Plain bytes before any TLS: the TLS layer refuses them and closes.
    let port = DialAddress::parse(&addr)
        .expect("dialable")
        .tcp
        .iter()
        .find_map(|p| if let Protocol::Tcp(p) = p { Some(p) } else { None })
        .expect("port");
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
    raw.write_all(b"\x13/multistream/1.0.0\n\x07/noise\n").await.expect("write");
    let answer = read_all(raw).await;
    assert!(!answer.contains("multistream") && !answer.contains("noise"), "{answer:?}");
    driver.abort();
}

#[tokio::test]
async fn relays_derive_stealth_external_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = listener(dir.path(), None);
    let external: Vec<Multiaddr> = vec![
        "/ip4/198.51.100.4/tcp/4001".parse().expect("addr"),
        "/dns4/example.org/tcp/443/tls/sni/example.org/http".parse().expect("addr"),
        "/ip4/198.51.100.4/udp/4001/quic-v1".parse().expect("addr"),
    ];
    let listen: Vec<Multiaddr> = vec!["/ip4/0.0.0.0/tcp/8443/tls/http".parse().expect("addr")];
    let derived = stealth_external_addresses(&external, &listen, &l);
    assert_eq!(derived.len(), 2, "{derived:?}");
    let first = DialAddress::parse(&derived[0]).expect("dialable");
    assert_eq!(first.tcp.to_string(), "/ip4/198.51.100.4/tcp/8443");
    assert_eq!(first.path, l.advertised.path);
    let second = DialAddress::parse(&derived[1]).expect("dialable");
    assert_eq!(second.sni.as_deref(), Some("example.org"));
    assert_eq!(second.tcp.to_string(), "/dns4/example.org/tcp/443");
    assert!(!is_dialable_listen_address(&external[1]));
    assert!(is_dialable_listen_address(&derived[1]));
}

#[test]
fn addresses_round_trip_and_other_transports_keep_theirs() {
    let a: Multiaddr =
        "/ip4/198.51.100.4/tcp/443/tls/sni/example.org/http/http-path/abcdefghijklmnopqrstuv"
            .parse()
            .expect("addr");
    let d = DialAddress::parse(&a).expect("dialable");
    assert_eq!(d.to_multiaddr(), a);
    for other in [
        "/ip4/198.51.100.4/tcp/443",
        "/ip4/198.51.100.4/tcp/443/tls/ws",
        "/ip4/198.51.100.4/tcp/443/tls/sni/example.org/ws",
        "/ip4/198.51.100.4/tcp/443/wss",
        // No SNI and no pin: nothing to check the certificate against.
        "/ip4/198.51.100.4/tcp/443/tls/http/http-path/abcdefghijklmnopqrstuv",
        // A relay circuit through a stealth relay is the relay transport's.
        "/ip4/198.51.100.4/tcp/443/tls/sni/example.org/http/http-path/abcdefghijklmnopqrstuv/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp/p2p-circuit",
    ] {
        let m: Multiaddr = other.parse().expect("addr");
        assert!(!is_stealth(&m), "{other}");
    }
}

#[test]
fn a_relays_other_addresses_are_its_direct_public_ones() {
    let dialed: Multiaddr = "/ip4/198.51.100.4/tcp/4001".parse().expect("addr");
    let announced: Vec<Multiaddr> = [
        "/ip4/198.51.100.4/tcp/4001",
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/198.51.100.4/udp/4001/quic-v1",
        "/ip4/198.51.100.4/tcp/443/tls/http/http-path/abcdefghijklmnopqrstuv/certhash/uEiBq15oRdKXFKkgw90rDlypnopX4ECmPar3z2lcDIl0orA",
        "/ip4/198.51.100.9/tcp/4001/p2p/12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp/p2p-circuit",
    ]
    .iter()
    .map(|a| a.parse().expect("addr"))
    .collect();
    let other = other_addresses(&dialed, &announced);
    assert_eq!(other, vec![announced[2].clone(), announced[3].clone()]);
    let local: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("addr");
    assert_eq!(other_addresses(&local, &announced).len(), 3);
}

#[test]
fn secrets_rotate_and_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = 1_700_000_000;
    let grace = Duration::from_secs(100);
    let first = secret::Secrets::load(dir.path(), false, None, grace, now).expect("created");
    let again = secret::Secrets::load(dir.path(), false, None, grace, now).expect("loaded");
    assert_eq!(first, again);
    let rotated = secret::Secrets::load(dir.path(), true, None, grace, now).expect("rotated");
    assert_ne!(rotated.current, first.current);
    assert_eq!(rotated.accepted(now), vec![rotated.current.clone(), first.current.clone()]);
    assert_eq!(rotated.accepted(now + 100), vec![rotated.current.clone()]);
    let later = secret::Secrets::load(dir.path(), false, None, grace, now + 101).expect("loaded");
    assert!(later.retired.is_empty());
    let mode = std::fs::metadata(dir.path().join(secret::SECRETS_FILE)).expect("file");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    assert!(secret::Secrets::parse("short current\n").is_err());
    assert!(secret::Secrets::parse("abcdefghijklmnopqrstuv 12\n").is_err());
}

/// An ordinary TLS-terminating reverse proxy, as nginx with `proxy_pass` is: TLS with its own
/// certificate on one port, every connection copied to `upstream` as plain bytes.
async fn tls_proxy(dir: &std::path::Path, upstream: u16) -> (u16, [u8; 32]) {
    let identity =
        tls::Identity::load(dir, None, None, "example.org", 1_700_000_000).expect("cert");
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config().expect("config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, identity.hash())
}

#[tokio::test]
async fn a_plain_listener_works_behind_a_tls_reverse_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::new(dir.path().join("relay"), Role::Relay);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0/http".parse().expect("addr")];
    config.stealth.secret = Some("k/8f3a2c61d94b7e05a1c2".into());
    let l = prepare(&config, 1_700_000_000).expect("prepare").expect("a listener");
    assert!(l.tls.is_none() && l.advertised.certhash.is_none());
    let mut relay = swarm(Policy::Any, Some(l));
    relay.listen_on(config.listen[0].clone()).expect("listen");
    let plain = tokio::time::timeout(STEP, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = relay.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("listening");
    // The plain listener's own address carries no secret and is not dialable.
    assert!(!plain.to_string().contains("http-path") && !is_dialable_listen_address(&plain));
    let port = plain
        .iter()
        .find_map(|p| if let Protocol::Tcp(p) = p { Some(p) } else { None })
        .expect("port");
    let (proxy_port, pin) = tls_proxy(&dir.path().join("proxy"), port).await;
    let through_proxy = DialAddress {
        tcp: format!("/ip4/127.0.0.1/tcp/{proxy_port}").parse().expect("addr"),
        host: "127.0.0.1".into(),
        sni: Some("example.org".into()),
        path: "k/8f3a2c61d94b7e05a1c2".into(),
        certhash: Some(pin),
        peer: None,
    };
    let mut user = swarm(Policy::Stealth, None);
    let peer =
        connect(&mut user, &mut relay, through_proxy.to_multiaddr()).await.expect("connects");
    assert_eq!(peer, *relay.local_peer_id());
}

proptest::proptest! {
    /// Whatever a peer sends first, the listener's judgement never panics, and only the whole
    /// request line of a secret opens the tunnel.
    #[test]
    fn classify_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let lines = vec![http::request_line("abcdefghijklmnopqrstuv"), http::request_line("k/8f3a2c61d94b7e05a1c2")];
        match http::classify(&bytes, &lines) {
            http::Verdict::Tunnel(i) => proptest::prop_assert!(bytes.starts_with(&lines[i])),
            http::Verdict::Undecided => proptest::prop_assert!(lines.iter().any(|l| l.starts_with(&bytes))),
            http::Verdict::Cover => proptest::prop_assert!(lines.iter().all(|l| !l.starts_with(&bytes) && !bytes.starts_with(l))),
        }
        let _ = http::head_end(&bytes);
        let _ = http::header(&bytes, "upgrade");
    }

    /// The built-in cover server answers any bytes with HTTP or nothing, and ends once the
    /// client has closed.
    #[test]
    fn the_cover_site_survives_any_request(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let answer = runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let site = cover::Site::default();
            let task = tokio::spawn(async move { site.serve(server).await });
            let _ = client.write_all(&bytes).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(STEP, client.read_to_end(&mut answer)).await.expect("the site closes");
            task.await.expect("the site does not panic");
            answer
        });
        proptest::prop_assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 "));
    }

    /// The secrets file parser refuses junk with an error, never a panic.
    #[test]
    fn secrets_parse_any_text(text in ".{0,300}") {
        let _ = secret::Secrets::parse(&text);
    }

    /// Any multiaddr (as bytes from a peer) is either a stealth address or not, without panic,
    /// and a dial address written back reads the same.
    #[test]
    fn any_multiaddr_parses_or_not(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120)) {
        if let Ok(addr) = Multiaddr::try_from(bytes) {
            if let Some(d) = DialAddress::parse(&addr) {
                proptest::prop_assert_eq!(DialAddress::parse(&d.to_multiaddr()), Some(d));
            }
            let _ = ListenAddress::parse(&addr);
        }
    }
}

mod first_record_judge {
    //! The first-record rules, one case each, as `openssl s_server` 3.0 answered them.

    use proptest::prelude::*;

    use crate::transport::first_record::{
        MAX_RECORD_LEN, RECORD_OVERFLOW, UNEXPECTED_MESSAGE, Verdict, judge,
    };

    #[test]
    fn each_rule_gives_openssls_verdict() {
        let len = |n: usize| u16::try_from(n).expect("short").to_be_bytes();
        let max = len(MAX_RECORD_LEN);
        let over = len(MAX_RECORD_LEN + 1);
        let overflow = Verdict::Alert { description: RECORD_OVERFLOW, minor: 3 };
        let unexpected = |minor| Verdict::Alert { description: UNEXPECTED_MESSAGE, minor };
        let cases: Vec<(&str, Vec<u8>, Verdict)> = vec![
            ("nothing yet", vec![], Verdict::Undecided),
            ("four bytes of a header", vec![22, 3, 1, 0], Verdict::Undecided),
            ("the multistream header", b"\x13/multistream/1.0.0\n".to_vec(), Verdict::NotTls),
            ("an HTTP request", b"GET / HTTP/1.1\r\n".to_vec(), Verdict::NotTls),
            ("version byte 2", vec![22, 2, 0, 0, 10], Verdict::NotTls),
            ("longest record, body to come", vec![22, 3, 3, max[0], max[1]], Verdict::Undecided),
            ("one byte too long", vec![22, 3, 1, over[0], over[1]], overflow),
            ("alert record, body to come", vec![21, 3, 3, 0, 2, 2], Verdict::Undecided),
            ("whole alert record", vec![21, 3, 1, 0, 2, 2, 40], unexpected(1)),
            ("whole TLS 1.3 data record", vec![23, 3, 4, 0, 1, 0], unexpected(3)),
            ("empty handshake record", vec![22, 3, 1, 0, 0], Verdict::Tls),
            ("handshake, type to come", vec![22, 3, 1, 0, 4], Verdict::Undecided),
            ("a ClientHello starts", vec![22, 3, 1, 2, 0, 1], Verdict::Tls),
            ("a ServerHello, body to come", vec![22, 3, 3, 0, 4, 2, 0], Verdict::Undecided),
            ("a whole ServerHello record", vec![22, 3, 1, 0, 4, 2, 0, 0, 0], unexpected(3)),
        ];
        for (name, bytes, verdict) in cases {
            assert_eq!(judge(&bytes), verdict, "{name}");
        }
    }

    proptest! {
        #[test]
        /// A verdict, once given, is the one the longer input gets too: more bytes never
        /// change the listener's mind, whatever the client sends.
        #[test]
        fn a_verdict_never_changes_with_more_bytes(
            kind in prop_oneof![Just(22u8), any::<u8>()],
            version in prop_oneof![Just(3u8), any::<u8>()],
            rest in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut bytes = vec![kind, version];
            bytes.extend_from_slice(&rest);
            let full = judge(&bytes);
            for end in 0..bytes.len() {
                let early = judge(&bytes[..end]);
                if early != Verdict::Undecided {
                    prop_assert_eq!(&early, &full, "prefix of {} bytes", end);
                }
            }
        }
    }
}
