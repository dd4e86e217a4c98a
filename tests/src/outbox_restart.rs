//! The outbox keeps a message through a restart of the sender while the recipient is offline,
//! and delivers it exactly once when both are up.

use crate::support::{Net, introduce, wait_message_at, wait_state_at};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_survives_a_sender_restart_and_arrives_once() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", std::slice::from_ref(&relay_addr)).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    bob.shutdown().await;

    // Bob is offline: direct delivery fails and the envelope goes to his mailbox on the relay
    // (the only DHT server, so one ack is all there can be).
    let sent = alice.node().send("bob", "while you were away").await.expect("send");
    assert_eq!(sent.state, "stored", "{:?}", sent.detail);
    assert_eq!(sent.detail.as_deref(), Some("stored on 1 of 1 mailbox replicas"));
    alice.shutdown().await;

    // Bob comes back first; Alice's restart makes the queued message due at once.
    let bob = net.user("bob", std::slice::from_ref(&relay_addr)).await;
    let mut b_events = bob.node().subscribe();
    let alice = net.user("alice", &[relay_addr]).await;
    let mut a_events = alice.node().subscribe();
    // Bob may have fetched it from his mailbox, and Alice heard his receipt, before the test
    // subscribed: look at the stores first.
    let got = wait_message_at(&bob.node(), &mut b_events, &sent.id).await;
    assert_eq!(got.text, "while you were away");
    wait_state_at(&alice.node(), &mut a_events, &sent.id, "delivered").await;

    let inbox = bob.node().inbox(100).expect("inbox");
    assert_eq!(inbox.iter().filter(|m| m.id == sent.id).count(), 1);
    let id = kolokol_protocol::message::parse_id(&sent.id).expect("id");
    let states: Vec<String> =
        alice.node().history(&id).expect("history").into_iter().map(|h| h.0).collect();
    // Whether Bob fetched it from his mailbox or Alice's retry reached him first, the states
    // only moved forward.
    assert!(
        states == ["queued", "stored", "delivered"]
            || states == ["queued", "stored", "sent", "delivered"],
        "{states:?}"
    );

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
