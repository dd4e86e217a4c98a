//! The end-to-end key schedule as the nodes run it: receive keys rotate as the conversation
//! goes back and forth, their ids are indexed in SQLite, and both sides pick up where they left
//! off after a restart.

use kolokol_node::{PeerId, RunningNode};
use kolokol_protocol::conversation::MAX_RECEIVE_KEYS;

use crate::support::{Net, wait_message, wait_state};

async fn round_trip(alice: &RunningNode, bob: &RunningNode, text: &str) {
    let (a, b) = (alice.node(), bob.node());
    let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());
    let sent = a.send("bob", text).await.expect("send");
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, text);
    wait_state(&mut a_events, &sent.id, "delivered").await;
    let reply = b.send("alice", &format!("re: {text}")).await.expect("send");
    assert_eq!(wait_message(&mut a_events, &reply.id).await.text, format!("re: {text}"));
    wait_state(&mut b_events, &reply.id, "delivered").await;
}

fn key_ids(owner: &RunningNode, peer: &PeerId) -> Vec<[u8; 8]> {
    owner.node().receive_key_ids(peer).expect("key ids")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_keys_rotate_per_round_trip_and_survive_restarts() {
    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
    let (alice_id, bob_id) = (alice.node().peer_id(), bob.node().peer_id());

    round_trip(&alice, &bob, "one").await;
    let first = key_ids(&bob, &alice_id);
    assert!(!first.is_empty(), "bob advertised a receive key to alice");
    for text in ["two", "three", "four"] {
        round_trip(&alice, &bob, text).await;
    }
    let later = key_ids(&bob, &alice_id);
    assert_ne!(first, later, "bob's receive keys rotated over three round trips");
    assert!(later.len() <= MAX_RECEIVE_KEYS + 1, "old keys are deleted: {}", later.len());
    assert!(!key_ids(&alice, &bob_id).is_empty());

    // Both restart: the conversation goes on from the stored state, with no first contact
    // needed and no message refused.
    alice.shutdown().await;
    bob.shutdown().await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", &[relay_addr]).await;
    round_trip(&alice, &bob, "after the restart").await;
    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
