//! A censor that freezes a connection once it has carried some kilobytes toward the user (T10):
//! a TCP proxy on 127.0.0.1 in front of the relay forwards the relay's bytes to the user until
//! [`FREEZE_AFTER`], then silently drops the rest, without a reset. The user notices the stall
//! within seconds, leaves the frozen connection, holds a reservation again, and nothing sent to
//! it is lost.

use std::time::Duration;

use kolokol_node::Multiaddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::{Net, TIMEOUT, introduce, socket_of, wait_message};

/// What the proxy lets through toward the user on one connection: about what the censor lets
/// through.
const FREEZE_AFTER: usize = 16 * 1024;

/// How soon after the freeze the user must have connected again: above the node's
/// stall timeout (8 s), its one-second tick and the dial (which took up to 7 s more while the
/// rest of the suite ran on two cores), and below the 25 to 30 s libp2p's ping alone takes
/// (two missed pings), which is what this test catches.
const STALL_DEADLINE: Duration = Duration::from_secs(20);

/// Proxy events the test waits on; the proxy holds a handful of connections.
const PROXY_EVENTS: usize = 64;

/// What happened on one of the proxy's connections, by the order it was accepted in.
#[derive(Debug)]
enum ProxyEvent {
    /// The relay sent past [`FREEZE_AFTER`]: nothing more reaches the user on it.
    Froze(usize),
    /// The user opened it.
    Accepted(usize),
}

/// Starts the freezing proxy in front of `relay` (a TCP address) and returns its address.
async fn spawn_freezing_proxy(relay: std::net::SocketAddr) -> (u16, mpsc::Receiver<ProxyEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
    let port = listener.local_addr().expect("address").port();
    let (events, rx) = mpsc::channel(PROXY_EVENTS);
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((user, _)) = listener.accept().await {
            let Ok(upstream) = TcpStream::connect(relay).await else { continue };
            let _ = events.try_send(ProxyEvent::Accepted(n));
            let (mut user_read, mut user_write) = user.into_split();
            let (mut relay_read, mut relay_write) = upstream.into_split();
            let events_down = events.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut forwarded = 0;
                let mut frozen = false;
                while let Ok(k) = relay_read.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    // Like the censor: what passes the limit is dropped, the connection stays
                    // open, and the user is told nothing.
                    if frozen || forwarded + k > FREEZE_AFTER {
                        if !frozen {
                            frozen = true;
                            let _ = events_down.try_send(ProxyEvent::Froze(n));
                        }
                        continue;
                    }
                    forwarded += k;
                    if user_write.write_all(&buf[..k]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut user_read, &mut relay_write).await;
                let _ = relay_write.shutdown().await;
            });
            n += 1;
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_frozen_after_16_kb_is_left_within_seconds_and_nothing_is_lost() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let relay_id = relay.node().peer_id();
    let (port, mut proxy) = spawn_freezing_proxy(socket_of(&relay_addr)).await;
    let through_proxy: Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{relay_id}").parse().expect("valid multiaddr");
    let alice = net.user("alice", &[through_proxy]).await;
    let bob = net.user("bob", std::slice::from_ref(&relay_addr)).await;
    let (a, b) = (alice.node(), bob.node());
    introduce(&a, "alice", &b, "bob").await;
    let mut a_events = a.subscribe();

    // Bob writes to Alice until the connection her reservation is on freezes (each message
    // crosses it in a 4 KiB envelope); what he sends after that waits for her to come back.
    let mut sent = Vec::new();
    let mut frozen = None;
    let frozen = loop {
        let message = b.send("alice", &format!("message {}", sent.len())).await.expect("send");
        sent.push(message.id);
        while let Ok(event) = proxy.try_recv() {
            if let ProxyEvent::Froze(n) = event {
                frozen = Some(n);
            }
        }
        if let Some(frozen) = frozen {
            break frozen;
        }
        assert!(sent.len() < 200, "the proxy never froze a connection");
    };

    // Alice leaves the frozen connection within seconds: she connects again (from a new port,
    // which the censor would count from zero) and no longer waits for the frozen one.
    tokio::time::timeout(STALL_DEADLINE, async {
        loop {
            match proxy.recv().await.expect("the proxy runs") {
                ProxyEvent::Accepted(n) if n > frozen => return,
                _ => continue,
            }
        }
    })
    .await
    .expect("alice connected again within the stall deadline");

    // She holds a reservation again, and every message Bob sent arrives.
    a.wait_for_net(TIMEOUT, |s| !s.reservations.is_empty()).await.expect("a reservation again");
    let last = b.send("alice", "after the freeze").await.expect("send");
    sent.push(last.id);
    let mut arrived = a.inbox(10_000).expect("inbox").into_iter().map(|m| m.id).collect::<Vec<_>>();
    for id in &sent {
        if !arrived.contains(id) {
            arrived.push(wait_message(&mut a_events, id).await.id);
        }
    }

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
