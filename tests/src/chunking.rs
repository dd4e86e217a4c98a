//! Messages too large for one envelope: they travel as chunks, each a full 65 535-byte
//! envelope, directly through a relay or through the recipient's mailbox, and arrive whole,
//! once, with a delivery receipt.

use kolokol_node::Role;
use kolokol_protocol::chunk::CHUNK_LEN;
use kolokol_protocol::envelope::{self, MAX_ENVELOPE_LEN};
use kolokol_protocol::mailbox::{Operation, Proof, Request, Response, mailbox_id, period_of};
use kolokol_protocol::message::MAX_TEXT_LEN;

use crate::support::{Net, introduce, raw_mailbox_requests, wait_message, wait_state};

/// A text of `len` bytes that is not one repeated byte: mixed ASCII and two-byte UTF-8, so a
/// chunk boundary inside a character would show, and a marker that must not appear on the wire.
fn long_text(len: usize) -> String {
    let mut text = String::with_capacity(len);
    let mut i = 0usize;
    while text.len() + 40 < len {
        text.push_str(&format!("line {i}: секретное сообщение\n"));
        i += 1;
    }
    while text.len() < len {
        text.push('.');
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_message_crosses_a_relay_in_chunks_and_arrives_whole_once() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", &[relay_addr]).await;
    let (a, b) = (alice.node(), bob.node());
    introduce(&a, "alice", &b, "bob").await;
    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();

    // A first contact in chunks, then a conversation message in chunks, then the largest.
    for len in [100_000, 300_000, MAX_TEXT_LEN] {
        let text = long_text(len);
        let sent = a.send("bob", &text).await.expect("send");
        assert_eq!(sent.state, "sent", "{:?}", sent.detail);
        let got = wait_message(&mut b_events, &sent.id).await;
        assert!(got.text == text, "the text of {len} bytes arrived changed");
        wait_state(&mut a_events, &sent.id, "delivered").await;
    }
    // An answer in one envelope still works after chunks went the other way.
    let reply = b.send("alice", "got them").await.expect("send");
    assert_eq!(wait_message(&mut a_events, &reply.id).await.text, "got them");
    assert_eq!(b.inbox(100).expect("inbox").len(), 3, "each message once");

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_message_waits_in_the_mailbox_as_full_size_envelopes_and_arrives_whole() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", std::slice::from_ref(&relay_addr)).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    bob.shutdown().await;

    let text = long_text(200_000);
    let sent = alice.node().send("bob", &text).await.expect("send");
    assert_eq!(sent.state, "stored", "{:?}", sent.detail);

    // What the replica holds: one item per chunk, every one exactly the largest bucket, a
    // format 3 envelope, with no plaintext in it.
    let bob_identity = net.identity("bob");
    let now = kolokol_node::daemon::unix_secs();
    let id = mailbox_id(bob_identity.identity_key(), period_of(now));
    let proof = Proof::sign(&bob_identity, &id, Operation::Fetch, now, &[]).expect("sign");
    let items =
        match &raw_mailbox_requests(&relay_addr, vec![Request::Fetch { mailbox_id: id, proof }])
            .await[..]
        {
            [Response::Items { items, more: false }] => items.clone(),
            other => panic!("the owner could not fetch: {other:?}"),
        };
    // The encoded body is the text and 12 bytes of length and variant.
    assert_eq!(items.len(), (text.len() + 12).div_ceil(CHUNK_LEN));
    for item in &items {
        assert_eq!(item.envelope.len(), MAX_ENVELOPE_LEN);
        assert_eq!(envelope::peek(&item.envelope).expect("header").version, 3);
        let marker = "секретное".as_bytes();
        assert!(!item.envelope.windows(marker.len()).any(|w| w == marker));
    }

    let mut a_events = alice.node().subscribe();
    let bob = net.start("bob", Role::Node, &[relay_addr]).await;
    let mut b_events = bob.node().subscribe();
    let got = wait_message(&mut b_events, &sent.id).await;
    assert!(got.text == text, "the text arrived changed");
    wait_state(&mut a_events, &sent.id, "delivered").await;
    assert_eq!(bob.node().inbox(100).expect("inbox").len(), 1);

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
