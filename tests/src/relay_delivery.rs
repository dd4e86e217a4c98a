//! Two users who listen on nothing and know only a Kolokol relay exchange messages both ways,
//! end to end encrypted, with receipts.

use crate::support::{Net, wait_message, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_the_relay_both_ways_exactly_once_with_receipts() {
    let net = Net::new();
    let (relay, _, alice, bob) = net.pair().await;
    let (a, b) = (alice.node(), bob.node());

    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();
    for i in 0..5 {
        let sent = a.send("bob", &format!("hello {i}")).await.expect("send");
        assert_eq!(sent.state, "delivered", "{:?}", sent.detail);
        let got = wait_message(&mut b_events, &sent.id).await;
        assert_eq!(got.text, format!("hello {i}"));
        assert_eq!(got.from.as_deref(), Some("alice"));
        wait_state(&mut a_events, &sent.id, "delivered").await;
    }
    let reply = b.send("alice", "hi alice").await.expect("send");
    assert_eq!(wait_message(&mut a_events, &reply.id).await.text, "hi alice");
    wait_state(&mut b_events, &reply.id, "delivered").await;

    let inbox = b.inbox(100).expect("inbox");
    let texts: Vec<&str> = inbox.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hello 0", "hello 1", "hello 2", "hello 3", "hello 4"]);
    assert_eq!(a.inbox(100).expect("inbox").len(), 1);

    // Each side lists the other's relayed connection with the relay it goes through, whether
    // it dialed the circuit or the circuit came to it.
    let relay_id = relay.node().peer_id().to_string();
    for (node, other) in [(&a, b.peer_id()), (&b, a.peer_id())] {
        let peers = node.peers().await.expect("peers").connected;
        let link = peers
            .iter()
            .find(|c| c.peer_id == other.to_string() && c.via == "relayed")
            .unwrap_or_else(|| panic!("no relayed connection to {other}: {peers:?}"));
        assert!(
            link.address.contains(&relay_id) && link.address.ends_with("/p2p-circuit"),
            "{link:?}"
        );
    }

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_contact_empty_and_oversized_messages_are_refused_and_nothing_is_queued() {
    let net = Net::new();
    let (relay, _, alice, bob) = net.pair().await;
    let (a, b) = (alice.node(), bob.node());

    let err = a.send("nobody", "hi").await.unwrap_err().to_string();
    assert!(err.contains("no contact or group named \"nobody\""), "{err}");
    let err = a.send("bob", "  ").await.unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    let long = "x".repeat(kolokol_protocol::message::MAX_TEXT_LEN + 1);
    let err = a.send("bob", &long).await.unwrap_err().to_string();
    assert!(err.contains("over the limit"), "{err}");
    let err = a.add_contact("carol", "kolokol1garbage").await.unwrap_err().to_string();
    assert!(err.contains("invite code"), "{err}");
    let err = a.add_contact("bob", &b.invite().await.expect("invite").invite).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(a.status().await.expect("status").queued_messages, 0);
    assert_eq!(a.contacts().expect("contacts").len(), 1);

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_messages_is_delivered_and_every_receipt_arrives() {
    let net = Net::new();
    let (relay, _, alice, bob) = net.pair().await;
    let (a, b) = (alice.node(), bob.node());
    let mut a_events = a.subscribe();

    // Sent all at once, so Bob's receipts fall due together and go batched in one envelope
    // (`Body::Receipts`) as well as one by one; either way each message becomes delivered.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..40 {
        let a = a.clone();
        sends.spawn(async move { a.send("bob", &format!("burst {i}")).await.expect("send").id });
    }
    let mut ids = Vec::new();
    while let Some(id) = sends.join_next().await {
        ids.push(id.expect("joined"));
    }
    let mut waiting: std::collections::HashSet<String> = ids.into_iter().collect();
    // Each event is a cue to look at what is still not delivered, so a lagging subscription
    // cannot lose one.
    crate::support::wait_event(&mut a_events, |_| {
        waiting.retain(|id| a.message(id).expect("status").message.state != "delivered");
        waiting.is_empty().then_some(())
    })
    .await;
    assert_eq!(b.inbox(100).expect("inbox").len(), 40);

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
