//! The outbox keeps a message through a restart of the sender while the recipient is offline,
//! and delivers it exactly once when both are up.

use crate::support::{Net, assert_stored_then_delivered, wait_message_at, wait_state_at};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_message_survives_a_sender_restart_and_arrives_once() {
    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
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
    assert_stored_then_delivered(&alice.node(), &sent.id);

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
