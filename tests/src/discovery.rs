//! Discovery and bootstrap: invites alone, the peer cache alone, relays found in the DHT,
//! presence records resolved across a 50-node DHT, and hostile records refused.

use kolokol_node::{Multiaddr, Role};
use kolokol_protocol::invite::Invite;
use kolokol_protocol::presence::{PresenceRecord, record_key};

use crate::support::{Net, TIMEOUT, push_raw_records, wait_message, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_knows_only_an_invite_reaches_the_inviter() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let bob = net.user("bob", &[relay_addr]).await;
    // Alice has no bootstrap address, no cache, nothing but Bob's invite.
    let alice = net.start("alice", Role::Node, &[]).await;
    alice
        .node()
        .add_contact("bob", &bob.node().invite().await.expect("invite").invite)
        .await
        .expect("add");
    let mut b_events = bob.node().subscribe();
    let mut a_events = alice.node().subscribe();
    let sent = alice.node().send("bob", "found you").await.expect("send");
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "found you");
    wait_state(&mut a_events, &sent.id, "delivered").await;
    // The relay Alice learned from the invite is her bootstrap peer from now on, not only
    // after a restart: she holds a reservation through it and the doctor is content.
    let status = alice
        .node()
        .wait_for_net(TIMEOUT, |s| s.bootstrap_connected > 0 && !s.reservations.is_empty())
        .await
        .expect("the invite's relay is a connected bootstrap peer");
    assert_eq!(status.bootstrap_peers, 1);
    assert_eq!(
        alice.node().status().await.expect("status").bootstrap,
        "connected to 1 of 1 bootstrap peers"
    );
    let report = alice.node().doctor().await.expect("doctor");
    let bootstrap =
        report.checks.iter().find(|c| c.name == "bootstrap").expect("a bootstrap check");
    assert_eq!(bootstrap.status, "ok", "{bootstrap:?}");
    alice.shutdown().await;

    // On restart the invite's relay is a bootstrap source: Alice becomes reachable through it.
    let alice = net.start("alice", Role::Node, &[]).await;
    let status = alice
        .node()
        .wait_for_net(TIMEOUT, |s| !s.reservations.is_empty())
        .await
        .expect("a reservation through the relay named in the invite");
    assert_eq!(status.reservations[0].0, relay.node().peer_id());
    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_through_its_peer_cache_when_its_bootstrap_relay_is_gone() {
    let net = Net::new();
    let (relay1, relay1_addr) = net.relay("relay1").await;
    let relay2 = net.start("relay2", Role::Relay, std::slice::from_ref(&relay1_addr)).await;
    relay2.node().wait_for_net(TIMEOUT, |s| s.routing_table > 0).await.expect("relay2 joins");
    let relay2_id = relay2.node().peer_id();

    // Alice is given only relay1; she finds relay2 in the DHT and reserves on both.
    let alice = net.start("alice", Role::Node, std::slice::from_ref(&relay1_addr)).await;
    alice
        .node()
        .wait_for_net(TIMEOUT, |s| s.reservations.iter().any(|(p, _)| *p == relay2_id))
        .await
        .expect("alice found relay2 through the DHT");
    let cached = alice.node().peers().await.expect("peers").cached;
    assert!(cached.iter().any(|p| p.peer_id == relay2_id.to_string() && p.relay), "{cached:?}");
    alice.shutdown().await;
    relay1.shutdown().await;

    // relay1 is gone and is still Alice's only configured bootstrap address.
    let alice = net.start("alice", Role::Node, &[relay1_addr]).await;
    alice
        .node()
        .wait_for_net(TIMEOUT, |s| s.reservations.iter().any(|(p, _)| *p == relay2_id))
        .await
        .expect("alice rejoined through her peer cache");
    alice.shutdown().await;
    relay2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_fifty_resolves_every_other_nodes_presence() {
    const NODES: usize = 50;
    let net = Net::new();
    let (first, first_addr) = net.relay("n0").await;
    let mut nodes = vec![first];
    for i in 1..NODES {
        nodes.push(
            net.start(&format!("n{i}"), Role::Relay, std::slice::from_ref(&first_addr)).await,
        );
    }
    // Each node republishes as its routing table doubles; wait until every record was placed
    // while its node knew a good part of the network. Fifty nodes in one debug process share two
    // cores with the rest of the suite, and each record (with its sealed part) is a few kB, so
    // the network gets longer than one usual wait to form.
    const FORMATION: std::time::Duration = std::time::Duration::from_secs(4 * TIMEOUT.as_secs());
    for n in &nodes {
        n.node()
            .wait_for_net(FORMATION, |s| {
                s.presence == Some(Ok(())) && s.presence_routing_table >= 16
            })
            .await
            .expect("every node publishes its presence into the formed DHT");
    }
    let handles: Vec<_> = nodes.iter().map(|n| n.node()).collect();
    let ids: Vec<_> = handles.iter().map(|n| n.peer_id()).collect();
    let mut lookups = tokio::task::JoinSet::new();
    for (i, node) in handles.iter().enumerate() {
        let node = node.clone();
        let others: Vec<_> =
            ids.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
        lookups.spawn(async move {
            let mut missing = Vec::new();
            for peer in others {
                match node.resolve(peer).await.expect("resolve") {
                    Some(record)
                        if !record.body.addresses.is_empty()
                            || !record.body.for_contacts.is_empty() => {}
                    _ => missing.push(peer),
                }
            }
            (i, missing)
        });
    }
    while let Some(result) = lookups.join_next().await {
        let (i, missing) = result.expect("lookup task");
        assert!(missing.is_empty(), "node {i} could not resolve {missing:?}");
    }
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_and_older_presence_records_are_refused() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let bob = net.start("bob", Role::Relay, std::slice::from_ref(&relay_addr)).await;
    bob.node().wait_for_net(TIMEOUT, |s| s.presence == Some(Ok(()))).await.expect("bob publishes");
    let genuine = bob.node().resolve(bob.node().peer_id()).await.expect("resolve").expect("found");

    // Mallory has stolen an old copy of Bob's identity file; she replays an older record and
    // pushes a forged one and an expired one straight into the DHT server.
    let stolen = net.identity("bob");
    let now = kolokol_node::clock::unix_secs();
    let cert = stolen.certify(now - 60, now + 3600).expect("certificate");
    let evil: Vec<Vec<u8>> =
        vec!["/ip4/127.0.0.66/tcp/6666".parse::<Multiaddr>().expect("valid").to_vec()];
    let older = PresenceRecord::sign(
        &stolen,
        &cert,
        evil.clone(),
        genuine.body.seq - 1,
        now + 600,
        None,
        vec![],
    )
    .expect("sign");
    let expired = PresenceRecord::sign(
        &stolen,
        &cert,
        evil.clone(),
        genuine.body.seq + 1,
        now - 1,
        None,
        vec![],
    )
    .expect("sign");
    let mut forged =
        PresenceRecord::sign(&stolen, &cert, vec![], genuine.body.seq + 2, now + 600, None, vec![])
            .expect("sign");
    forged.body.addresses = evil;
    let key = record_key(&bob.node().peer_id());
    push_raw_records(
        &relay_addr,
        [older, expired, forged]
            .iter()
            .map(|r| (key.clone(), r.to_bytes().expect("encode")))
            .collect(),
    )
    .await;

    let alice = net.user("alice", &[relay_addr]).await;
    let seen = alice.node().resolve(bob.node().peer_id()).await.expect("resolve").expect("found");
    // Bob may have republished meanwhile (his routing table grew as Alice joined), so the record
    // seen is the genuine one or a newer one of his own: his addresses, never Mallory's.
    assert!(seen.body.seq >= genuine.body.seq, "an older record replaced the genuine one");
    assert_eq!(seen.body.addresses, genuine.body.addresses, "a hostile record was taken");
    assert!(seen.body.expires_at > now, "an expired record was taken");
    assert!(seen.verify(now).is_ok());
    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_whose_invite_addresses_are_dead_is_found_through_its_presence() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let (old_relay, old_relay_addr) = net.relay("old-relay").await;
    // An unlisted relay, a bridge, that Bob also holds a reservation on.
    let mut config = net.config("bridge", Role::Relay);
    config.bridge = true;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    let bridge = kolokol_node::RunningNode::start(config).await.expect("the bridge starts");
    let bridge_net = bridge
        .node()
        .wait_for_net(TIMEOUT, |s| !s.external.is_empty())
        .await
        .expect("the bridge confirms its listen address");
    let bridge_id = bridge.node().peer_id();
    let bridge_addr: Multiaddr =
        format!("{}/p2p/{bridge_id}", bridge_net.external[0]).parse().expect("valid");
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", &[relay_addr, bridge_addr]).await;
    bob.node()
        .wait_for_net(TIMEOUT, |s| s.bridges.contains(&bridge_id) && s.presence == Some(Ok(())))
        .await
        .expect("bob holds a reservation on the bridge and publishes");
    // Alice holds an old invite of Bob's that names only a relay which has since shut down
    // (his current one, with its addresses swapped for the dead relay's circuit).
    old_relay.shutdown().await;
    let now = kolokol_node::clock::unix_secs();
    let current = bob.node().invite().await.expect("invite").invite;
    let (mut invite, keys, _) = Invite::from_text_with_keys(&current, now).expect("bob's invite");
    let keys = keys.expect("a version 2 invite");
    let dead: Multiaddr = format!("{old_relay_addr}/p2p-circuit").parse().expect("valid");
    invite.addresses = vec![dead.to_vec()];
    alice.node().add_contact("bob", &invite.to_text_v2(&keys).expect("text")).await.expect("add");

    // Bob's record names the bridge only in its part for contacts: a crawler without his
    // mailbox address learns neither the circuit nor the bridge. (Bob republishes when his
    // reservations change, so the record that names the bridge may come a moment later.)
    let stranger = kolokol_protocol::mailbox_key::MailboxKey::from_secret(&[7; 32]);
    let bridge_bytes = bridge_id.to_bytes();
    let part = tokio::time::timeout(TIMEOUT, async {
        loop {
            let record =
                alice.node().resolve(bob.node().peer_id()).await.expect("resolve").expect("found");
            let public = record.to_bytes().expect("encode");
            assert!(
                !public.windows(bridge_bytes.len()).any(|w| w == bridge_bytes),
                "public bridge"
            );
            assert!(record.open_for_contacts(stranger.address(), now).is_err());
            let part = record.open_for_contacts(&keys.mailbox, now).expect("opens");
            if part.as_ref().is_some_and(|p| !p.addresses.is_empty()) {
                break part.expect("a part");
            }
        }
    })
    .await
    .expect("bob's record names the bridge for contacts");
    assert!(part.hybrid_prekey.is_some());
    let circuit = Multiaddr::try_from(part.addresses[0].clone()).expect("an address");
    assert!(circuit.to_string().contains(&bridge_id.to_string()), "{circuit}");

    // The invite's address fails; the first attempt looks Bob up, opens the part for contacts
    // with the mailbox address of his invite, and succeeds at once.
    let mut b_events = bob.node().subscribe();
    let sent = alice.node().send("bob", "where did you go?").await.expect("send");
    assert_eq!(sent.state, "delivered", "{:?}", sent.detail);
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "where did you go?");
    let contact = &alice.node().contacts().expect("contacts")[0];
    let addresses = contact.addresses.join(" ");
    assert!(addresses.contains(&relay.node().peer_id().to_string()), "{contact:?}");
    assert!(addresses.contains(&bridge_id.to_string()), "the bridge circuit: {contact:?}");
    for n in [alice, bob, relay, bridge] {
        n.shutdown().await;
    }
}
