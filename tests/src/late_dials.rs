//! A dial that connects after its race was won is closed when another of the node's own dials
//! to the peer is open, whichever end has the higher peer id: kept, such late relayed dials
//! piled up on a slow network (seven connections to one peer in the lab's T10), and
//! request-response spread the envelopes over all of them.

use kolokol_node::Role;
use kolokol_node::swarm::TARGET_RESERVATIONS;
use kolokol_protocol::identity::Identity;

use crate::support::{Net, Pause, Proxy, TIMEOUT, introduce, wait_message};

/// Writes an identity into `name`'s data directory before its node first starts.
fn give_identity(net: &Net, name: &str, identity: &Identity) {
    let dir = net.data_dir(name);
    std::fs::create_dir_all(&dir).expect("the data directory can be created");
    let path = dir.join(kolokol_node::data_dir::IDENTITY_FILE);
    std::fs::write(&path, identity.to_file_bytes().as_slice()).expect("identity written");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_relayed_dial_is_closed_by_the_lower_peer_id_when_its_own_dial_is_open() {
    let net = Net::new();
    // Alice gets the lower peer id: the end that, before, kept every dial of its own that
    // came late.
    let mut seeds = (0u8..).map(|i| Identity::from_secrets([i; 32], [i.wrapping_add(128); 32]));
    let first = seeds.next().expect("an identity");
    let second = seeds.next().expect("an identity");
    let (alice_id, bob_id) =
        if first.peer_id() < second.peer_id() { (first, second) } else { (second, first) };
    give_identity(&net, "alice", &alice_id);
    give_identity(&net, "bob", &bob_id);

    // Bob holds reservations on two relays, reached through proxies that can hold what the
    // relays send him through the connection his reservation is on; Alice holds hers on two
    // others, as many as a node holds.
    let (r0, r0_addr) = net.relay("r0").await;
    let (r1, r1_addr) = net.relay("r1").await;
    let (r2, r2_addr) = net.relay("r2").await;
    let (r3, r3_addr) = net.relay("r3").await;
    let mut proxies = Vec::new();
    let mut through = Vec::new();
    for relay in [&r1_addr, &r2_addr] {
        let proxy = Proxy::to(relay, Pause::FirstConnection).await;
        through.push(proxy.address.clone());
        proxies.push(proxy);
    }
    let bob = net.start("bob", Role::Node, &through).await;
    let alice = net.start("alice", Role::Node, &[r0_addr, r3_addr]).await;
    for (node, name) in [(&alice, "Alice"), (&bob, "Bob")] {
        node.node()
            .wait_for_net(TIMEOUT, |s| s.reservations.len() == TARGET_RESERVATIONS)
            .await
            .unwrap_or_else(|| panic!("{name} holds reservations on both relays"));
    }
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    // Bob's invite names his relays, which Alice dials as bootstrap peers: once she is
    // connected to all four, her race to Bob dials circuits over those connections.
    alice
        .node()
        .wait_for_net(TIMEOUT, |s| s.bootstrap_connected == 4)
        .await
        .expect("Alice is connected to Bob's relays");

    // While the relays cannot reach Bob, Alice's race dials one circuit after the other; let
    // through, the first connects and wins, the others connect late.
    for p in &proxies {
        p.pause();
    }
    let mut b_events = bob.node().subscribe();
    let sender = alice.node();
    let sending = tokio::spawn(async move { sender.send("bob", "past the late dials").await });
    let before = alice
        .node()
        .wait_for_net(TIMEOUT, |s| s.dialing >= 2)
        .await
        .expect("Alice's race dials a second circuit")
        .duplicates_closed;
    for p in &proxies {
        p.resume();
    }
    let sent = sending.await.expect("the send task").expect("send");
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "past the late dials");

    let bob_peer = bob.node().peer_id();
    let mut status = alice
        .node()
        .wait_for_net(TIMEOUT, |s| s.duplicates_closed > before)
        .await
        .expect("Alice closed her late dial to Bob");
    let to_bob = |peers: &kolokol_protocol::control::PeersInfo| {
        peers.connected.iter().filter(|c| c.peer_id == bob_peer.to_string()).count()
    };
    // The connection goes when its task ends, after the close: each change in the count of
    // open connections is an event to wait for.
    let mut left = to_bob(&alice.node().peers().await.expect("peers"));
    while left > 1 {
        let seen = status.connections;
        status = alice
            .node()
            .wait_for_net(TIMEOUT, |s| s.connections != seen)
            .await
            .expect("the closed connection went");
        left = to_bob(&alice.node().peers().await.expect("peers"));
    }
    assert_eq!(left, 1, "one connection from Alice to Bob stays");

    // The connection that stayed carries the conversation on.
    let sent = alice.node().send("bob", "still here").await.expect("send");
    assert_eq!(sent.state, "delivered", "{:?}", sent.detail);
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "still here");
    for n in [alice, bob, r0, r1, r2, r3] {
        n.shutdown().await;
    }
}
