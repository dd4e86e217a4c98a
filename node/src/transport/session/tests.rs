//! Resumable tunnels over real sockets on 127.0.0.1, through a proxy that freezes every
//! connection after 16 KB toward the client, as the T10 censor does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::transport::http;
use crate::transport::meter::Wire;

/// What the proxy lets through toward the client on each connection.
const FREEZE_AFTER: usize = 16 * 1024;

/// A proxy to `upstream` that forwards everything toward it, and toward the client only the
/// first `limit` bytes of each connection: the rest is read and dropped, the connection kept
/// open and silent.
async fn freezing_proxy(upstream: SocketAddr, limit: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(upstream).await else { continue };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            tokio::spawn(async move {
                let mut passed = 0;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let pass = n.min(limit.saturating_sub(passed));
                    passed += pass;
                    if pass > 0 && cw.write_all(&buf[..pass]).await.is_err() {
                        break;
                    }
                }
                // Keeps the client's side open: a frozen flow, not a closed one.
                std::future::pending::<()>().await;
                drop(cw);
            });
        }
    });
    addr
}

/// A listener that answers tunnel requests as the stealth listener does (without TLS), and
/// hands each new session or plain tunnel to the test.
async fn listener(registry: Registry) -> (SocketAddr, mpsc::Receiver<Accepted>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let registry = registry.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(head) = http::read_head(&mut tcp).await else { return };
                let response = http::switching_protocols_open(&head);
                match registry.accept(Box::new(tcp), &head, response).await {
                    Accepted::Nothing => {}
                    accepted => {
                        let _ = tx.send(accepted).await;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Opens carriers as the stealth dialer does, without TLS.
struct TestDialer(SocketAddr);

impl Opener for TestDialer {
    fn connect(&self, meter: Meter) -> BoxFuture<'static, io::Result<BoxCarrier>> {
        let addr = self.0;
        async move {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(Wire::new(tcp, Some(meter))) as BoxCarrier)
        }
        .boxed()
    }

    fn upgrade<'a>(
        &'a self,
        carrier: &'a mut BoxCarrier,
        offer: Offer,
    ) -> BoxFuture<'a, io::Result<Option<Answer>>> {
        upgrade(carrier, "example.org", "secret", offer).boxed()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn dial(to: SocketAddr, meters: &Meters) -> io::Result<Result<Session, BoxCarrier>> {
    let opener = Arc::new(TestDialer(to));
    let meter = Meter::default();
    let carrier = opener.connect(meter.clone()).await?;
    let group = crate::swarm::dht::address_group(
        &format!("/ip4/127.0.0.1/tcp/{}", to.port()).parse().unwrap(),
    );
    let budget = Budget { meters: meters.clone(), group };
    open_client(opener, carrier, meter, Some(budget), None).await
}

#[tokio::test]
async fn a_session_carries_a_megabyte_each_way_across_connections_that_freeze_after_16_kb() {
    let (server, mut sessions) = listener(Registry::default()).await;
    let proxy = freezing_proxy(server, FREEZE_AFTER).await;

    // The negative control: one connection through the proxy carries no more than 16 KB.
    let mut raw = TcpStream::connect(proxy).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let Accepted::Plain(mut plain) = sessions.recv().await.unwrap() else {
        panic!("no session was offered")
    };
    let big = pattern(64 * 1024, 1);
    tokio::spawn(async move {
        let _ = plain.write_all(&big).await;
        std::future::pending::<()>().await;
    });
    let mut got = vec![0u8; 64 * 1024];
    let mut read = 0;
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_secs(2), raw.read(&mut got[read..])).await
    {
        if n == 0 {
            break;
        }
        read += n;
    }
    assert_eq!(read, FREEZE_AFTER, "the proxy freezes a connection after 16 KB");

    let meters = Meters::default();
    let mut client = dial(proxy, &meters).await.unwrap().ok().expect("the listener takes sessions");
    let Accepted::Session(mut far) = sessions.recv().await.unwrap() else {
        panic!("a plain tunnel")
    };

    let down = pattern(1_000_000, 7);
    let up = pattern(1_000_000, 9);
    let (down2, up2) = (down.clone(), up.clone());
    let far_task = tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(&mut far);
        let write = async {
            wr.write_all(&down2).await.unwrap();
        };
        let read = async {
            let mut got = vec![0u8; up2.len()];
            rd.read_exact(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(write, read);
        assert!(got == up2, "the listener read what the client wrote");
        far
    });
    let (mut rd, mut wr) = tokio::io::split(&mut client);
    let write = async {
        wr.write_all(&up).await.unwrap();
    };
    let read = async {
        let mut got = vec![0u8; down.len()];
        rd.read_exact(&mut got).await.unwrap();
        got
    };
    let ((), got) =
        tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(write, read) })
            .await
            .expect("a megabyte each way within two minutes");
    assert!(got == down, "the client read what the listener wrote");
    let _far = tokio::time::timeout(Duration::from_secs(60), far_task).await.unwrap().unwrap();
    // Carriers froze, and the client took the group's budget from them (twice, so that one
    // moment of congestion sets none) and kept the later ones under it.
    let group = crate::swarm::dht::address_group(
        &format!("/ip4/127.0.0.1/tcp/{}", proxy.port()).parse().unwrap(),
    );
    assert!(meters.carrier_budget(group).is_some(), "a budget learned from the freezes");
}

#[tokio::test]
async fn the_end_of_a_session_reaches_the_other_side() {
    let (server, mut sessions) = listener(Registry::default()).await;
    let meters = Meters::default();
    let mut client = dial(server, &meters).await.unwrap().ok().expect("a session");
    let Accepted::Session(mut far) = sessions.recv().await.unwrap() else {
        panic!("a plain tunnel")
    };
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), far.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"last words");
}

#[tokio::test]
async fn a_listener_without_sessions_gives_the_plain_tunnel() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = http::read_head(&mut tcp).await.unwrap();
        // An older listener: the upgrade, and no word of the offer.
        tcp.write_all(&http::switching_protocols(&head)).await.unwrap();
        tcp.write_all(b"plain").await.unwrap();
        std::future::pending::<()>().await;
    });
    let Err(mut carrier) = dial(addr, &Meters::default()).await.unwrap() else {
        panic!("a session with a listener that does not know them")
    };
    let mut got = [0u8; 5];
    carrier.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"plain");
}

#[tokio::test]
async fn a_resumption_of_an_unknown_session_is_refused() {
    let (server, _sessions) = listener(Registry::default()).await;
    let opener = TestDialer(server);
    let mut carrier = opener.connect(Meter::default()).await.unwrap();
    let offer = Offer { id: [7; SESSION_ID_LEN], resume: Some(100), limit: None };
    assert!(matches!(opener.upgrade(&mut carrier, offer).await, Ok(None)));
}

#[test]
fn a_limit_stays_under_the_budget() {
    assert_eq!(limit_under(None, 5000), None);
    assert_eq!(limit_under(Some(12_000), 2_000), Some(7_000));
    assert_eq!(limit_under(Some(1_000), 2_000), Some(MIN_LIMIT));
}

#[tokio::test]
async fn a_resumption_from_an_impossible_count_is_refused_and_the_session_goes_on() {
    let registry = Registry::default();
    let (server, mut sessions) = listener(registry.clone()).await;
    let meters = Meters::default();
    let mut client = dial(server, &meters).await.unwrap().ok().expect("a session");
    let Accepted::Session(mut far) = sessions.recv().await.unwrap() else {
        panic!("a plain tunnel")
    };
    let id = *registry.lock().keys().next().expect("the listener holds the session");

    // Someone resumes the session from more than the listener ever wrote to it.
    let opener = TestDialer(server);
    let mut carrier = opener.connect(Meter::default()).await.unwrap();
    let offer = Offer { id, resume: Some(1 << 40), limit: None };
    assert!(matches!(opener.upgrade(&mut carrier, offer).await, Ok(None)), "refused");

    far.write_all(b"still here").await.unwrap();
    let mut got = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(30), client.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"still here");
}
