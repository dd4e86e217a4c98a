//! A relay that Kolokol did not write (libp2p's circuit relay v2 and Kademlia under our protocol
//! name, nothing else) serves as bootstrap and relay for two Kolokol users.

use crate::support::{Net, introduce, spawn_plain_relay, wait_message, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_libp2p_relay_carries_kolokol_messages() {
    let (relay_addr, relay_task) = spawn_plain_relay().await;
    let net = Net::new();
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", &[relay_addr]).await;
    let (a, b) = (alice.node(), bob.node());
    introduce(&a, "alice", &b, "bob").await;

    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();
    let sent = a.send("bob", "through a stranger's relay").await.expect("send");
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "through a stranger's relay");
    wait_state(&mut a_events, &sent.id, "delivered").await;
    let reply = b.send("alice", "and back").await.expect("send");
    assert_eq!(wait_message(&mut a_events, &reply.id).await.text, "and back");

    alice.shutdown().await;
    bob.shutdown().await;
    relay_task.abort();
}
