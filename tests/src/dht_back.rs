//! A node whose presence publications fail, because no DHT server is in reach, fetches its
//! mailboxes as soon as one succeeds again (`NetEvent::DhtBack`) rather than at its next
//! periodic fetch: a message deposited while it was away reaches it once the DHT answers, though
//! nothing else about its connectivity changed.

use std::time::Duration;

use kolokol_node::swarm::{PRESENCE_RETRY_MAX, TARGET_RESERVATIONS};
use kolokol_node::{Role, RunningNode};
use kolokol_protocol::mailbox::period_of;

use crate::support::{Net, Pause, Proxy, TIMEOUT, introduce, wait_message_at, wait_state_at};

/// Bob's periodic mailbox fetch: far longer than any wait of the test, so that a message that
/// reaches him within one came from a fetch something woke.
const FETCH_INTERVAL: Duration = Duration::from_secs(60 * 60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publication_that_succeeds_after_a_failed_one_fetches_the_mailboxes() {
    let net = Net::new();
    // Alice and Bob hold their reservations on two bridges, which are never DHT servers, and
    // become contacts through invites that name only those: neither learns the address of a
    // DHT server from the other, and Bob's peer cache holds none.
    let (bridge1, bridge1_addr) = net.bridge("bridge1").await;
    let (bridge2, bridge2_addr) = net.bridge("bridge2").await;
    let bridges = [bridge1_addr, bridge2_addr];
    let alice = net.user("alice", &bridges).await;
    let bob = net.user("bob", &bridges).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    bob.shutdown().await;
    alice.shutdown().await;

    // The only DHT server, so the only mailbox replica, starts; Alice comes back with it as a
    // bootstrap peer and deposits a message for Bob, who is away.
    let (server, server_addr) = net.relay("server").await;
    let alice = net.start("alice", Role::Node, std::slice::from_ref(&server_addr)).await;
    alice
        .node()
        .wait_for_net(TIMEOUT, |s| s.presence == Some(Ok(())))
        .await
        .expect("Alice reaches the DHT server");
    let mut a_events = alice.node().subscribe();
    let before = period_of(kolokol_node::clock::unix_secs());
    let sent = alice.node().send("bob", "the DHT answers again").await.expect("send");
    wait_state_at(&alice.node(), &mut a_events, &sent.id, "stored").await;
    // The server holds it in Bob's mailbox of the period it was deposited in (a day long, which
    // may have turned over meanwhile).
    let after = period_of(kolokol_node::clock::unix_secs());
    let key = net.mailbox_key("bob");
    let held: u64 = (before..=after)
        .map(|p| key.mailbox_id(p).expect("a mailbox id"))
        .map(|id| server.node().mailbox_items_held(&id).expect("count"))
        .sum();
    assert_eq!(held, 1, "the server holds the message for Bob");
    // Alice leaves, so that her retries cannot reach Bob directly: the message can only come to
    // him from the replica.
    alice.shutdown().await;

    // Bob comes back with his only way to the DHT server through a proxy that refuses every
    // connection for now, and his periodic fetch an hour away.
    let proxy = Proxy::to(&server_addr, Pause::NewConnections).await;
    proxy.pause();
    let mut config = net.config("bob", Role::Node);
    config.bootstrap = bridges.iter().cloned().chain([proxy.address.clone()]).collect();
    config.mailbox_fetch_interval = FETCH_INTERVAL;
    let bob = RunningNode::start(config).await.expect("Bob starts");
    let b = bob.node();
    let mut b_events = b.subscribe();
    // Holding both his reservations, he asks the server for none once it is in reach (a new
    // reservation wakes a fetch of its own), and his addresses stay as they are; his
    // publication failed.
    b.wait_for_net(TIMEOUT, |s| {
        s.reservations.len() == TARGET_RESERVATIONS && matches!(s.presence, Some(Err(_)))
    })
    .await
    .expect("Bob holds his reservations and his publication failed");
    // Without the DHT, a fetch finds no replica. Fetch passes take turns: the first of these
    // waits for the passes the node started as it came online, the second for one it may have
    // queued behind the first, so that no pass that started before the server is in reach again
    // is still under way when it is.
    assert_eq!(b.fetch_mailboxes().await, 0, "a fetch with no DHT server in reach");
    assert_eq!(b.fetch_mailboxes().await, 0, "a fetch with no DHT server in reach");
    assert!(b.inbox(100).expect("inbox").is_empty());

    // The path is back: the next retry of the publication succeeds, and the fetch it wakes
    // brings the message, within a deadline far shorter than the periodic fetch. Retries wait
    // longer after each failure in a row, up to PRESENCE_RETRY_MAX, and on a slow machine
    // Bob may have failed a few times by now.
    proxy.resume();
    b.wait_for_net(PRESENCE_RETRY_MAX + TIMEOUT, |s| s.presence == Some(Ok(())))
        .await
        .expect("Bob's publication succeeds again");
    assert_eq!(wait_message_at(&b, &mut b_events, &sent.id).await.text, "the DHT answers again");

    for n in [bob, server, bridge1, bridge2] {
        n.shutdown().await;
    }
}
