//! Messages too large for one envelope: they travel as chunks, each a full 65 535-byte
//! envelope, directly through a relay or through the recipient's mailbox, and arrive whole,
//! once, with a delivery receipt.

use kolokol_node::Role;
use kolokol_node::store::MAX_PARTIAL_MESSAGES_PER_PEER;
use kolokol_protocol::chunk;
use kolokol_protocol::chunk::CHUNK_LEN_4;
use kolokol_protocol::control::EVENT_TEXT_LEN;
use kolokol_protocol::conversation::{Conversation, Randomness};
use kolokol_protocol::envelope::{self, MAX_ENVELOPE_LEN};
use kolokol_protocol::invite::Invite;
use kolokol_protocol::mailbox::{
    BlindedProof, Operation, Request, RequestV2, Response, mailbox_id, period_of,
};
use kolokol_protocol::message::MAX_TEXT_LEN;
use kolokol_protocol::message::{Body, Content};

use crate::support::{
    Net, raw_mailbox_requests, raw_mailbox_requests_v2, wait_message, wait_state,
};

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

/// The whole text of a received message, from the inbox.
fn inbox_text(node: &kolokol_node::Node, id: &str) -> String {
    let inbox = node.inbox(100).expect("inbox");
    inbox.into_iter().find(|m| m.id == id).expect("in the inbox").text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_message_crosses_a_relay_in_chunks_and_arrives_whole_once() {
    let net = Net::new();
    let (relay, _, alice, bob) = net.pair().await;
    let (a, b) = (alice.node(), bob.node());
    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();

    // A first contact in chunks, then a conversation message in chunks, then the largest.
    for len in [100_000, 300_000, MAX_TEXT_LEN] {
        let text = long_text(len);
        let sent = a.send("bob", &text).await.expect("send");
        assert_eq!(sent.state, "delivered", "{:?}", sent.detail);
        // The event carries the first EVENT_TEXT_LEN bytes; the inbox has all of it.
        let got = wait_message(&mut b_events, &sent.id).await;
        assert!(got.truncated && text.starts_with(&got.text), "the event of {len} bytes");
        assert!(got.text.len() <= EVENT_TEXT_LEN);
        assert!(inbox_text(&b, &sent.id) == text, "the text of {len} bytes arrived changed");
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
    let (relay, relay_addr, alice, bob) = net.pair().await;
    bob.shutdown().await;

    let text = long_text(200_000);
    let sent = alice.node().send("bob", &text).await.expect("send");
    assert_eq!(sent.state, "stored", "{:?}", sent.detail);

    // What the replica holds: one item per chunk (of the format 4 length: the pair's
    // conversation is format 4, from their version 2 invites), every one exactly the largest
    // bucket, a format 4 envelope, with no plaintext in it.
    // Alice knows Bob's mailbox address (his version 2 invite), so the items are in his
    // version 2 mailbox, fetched with his mailbox key.
    let bob_mailbox = net.mailbox_key("bob");
    let now = kolokol_node::clock::unix_secs();
    let (id, proof) =
        BlindedProof::sign(&bob_mailbox, period_of(now), Operation::Fetch, now, &[]).expect("sign");
    let items = match &raw_mailbox_requests_v2(
        &relay_addr,
        vec![RequestV2::Fetch { mailbox_id: id, proof }],
    )
    .await[..]
    {
        [Response::Items { items, more: false }] => items.clone(),
        other => panic!("the owner could not fetch: {other:?}"),
    };
    // The encoded body is the text and 12 bytes of length and variant.
    assert_eq!(items.len(), (text.len() + 12).div_ceil(CHUNK_LEN_4));
    for item in &items {
        assert_eq!(item.envelope.len(), MAX_ENVELOPE_LEN);
        assert_eq!(envelope::peek(&item.envelope).expect("header").version, 4);
        let marker = "секретное".as_bytes();
        assert!(!item.envelope.windows(marker.len()).any(|w| w == marker));
    }

    let mut a_events = alice.node().subscribe();
    let bob = net.start("bob", Role::Node, &[relay_addr]).await;
    let mut b_events = bob.node().subscribe();
    wait_message(&mut b_events, &sent.id).await;
    assert!(inbox_text(&bob.node(), &sent.id) == text, "the text arrived changed");
    wait_state(&mut a_events, &sent.id, "delivered").await;
    assert_eq!(bob.node().inbox(100).expect("inbox").len(), 1);

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_deferred_while_too_many_messages_are_incomplete_is_fetched_again_not_lost() {
    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
    alice.shutdown().await;

    // Alice's identity writes first contacts of its own making (the node would do the same),
    // one more two-chunk message than Bob keeps incomplete at once.
    let now = kolokol_node::clock::unix_secs();
    let alice_identity = net.identity("alice");
    let alice_certificate = alice_identity.certify(now - 60, now + 3600).expect("certify");
    let invite = bob.node().invite().await.expect("invite").invite;
    let (invite, _) = Invite::from_text(&invite, now).expect("bob's invite");
    let mut conversation = Conversation::new(invite.certificate, now).expect("conversation");
    let messages = MAX_PARTIAL_MESSAGES_PER_PEER as usize + 1;
    let mut firsts = Vec::new();
    let mut seconds = Vec::new();
    let mut ids = Vec::new();
    for m in 0..messages {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(m as u64 + 1).to_be_bytes());
        ids.push(kolokol_protocol::message::format_id(&id));
        let content = Content { id, sent_at_ms: now * 1000, body: Body::Text(long_text(100_000)) };
        let chunks = chunk::split(&content).expect("split");
        assert_eq!(chunks.len(), 2);
        for (n, chunk) in chunks.iter().enumerate() {
            let mut random = [0u8; Randomness::LEN];
            random[..8].copy_from_slice(&((m * 2 + n) as u64 + 1).to_be_bytes());
            random[8] = 1;
            let sealed = conversation
                .seal(
                    alice_identity.device(),
                    &alice_certificate,
                    chunk,
                    Randomness::from_bytes(random),
                    now,
                )
                .expect("seal");
            let deposit = Request::Deposit {
                mailbox_id: mailbox_id(net.identity("bob").identity_key(), period_of(now)),
                item_id: kolokol_protocol::mailbox::chunk_item_id(&id, n as u32),
                envelope: sealed,
                expires_at: now + 3600,
            };
            if n == 0 { firsts.push(deposit) } else { seconds.push(deposit) }
        }
    }
    let stored = vec![Response::Stored; messages];
    assert_eq!(raw_mailbox_requests(&relay_addr, firsts).await, stored);
    let b = bob.node();
    // Every first chunk is taken but one, which Bob answers "busy" and leaves in the mailbox.
    b.fetch_mailboxes().await;
    assert!(b.inbox(100).expect("inbox").is_empty());

    // The second chunks complete the messages one by one, freeing room; the first chunk that
    // was deferred must open again (not pass for a replay and be deleted unread).
    assert_eq!(raw_mailbox_requests(&relay_addr, seconds).await, stored);
    let deadline = std::time::Instant::now() + crate::support::TIMEOUT;
    loop {
        b.fetch_mailboxes().await;
        let inbox = b.inbox(100).expect("inbox");
        if ids.iter().all(|id| inbox.iter().any(|m| &m.id == id)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {} of {messages} arrived", inbox.len());
    }
    for n in [bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_message_from_someone_who_is_not_a_contact_is_refused_a_short_one_arrives() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", &[relay_addr]).await;
    let (a, b) = (alice.node(), bob.node());
    // Alice has Bob's invite; Bob never added Alice.
    a.add_contact("bob", &b.invite().await.expect("invite").invite).await.expect("add bob");

    let refused = a.send("bob", &long_text(100_000)).await.expect("send");
    assert_eq!(refused.state, "failed", "{:?}", refused.detail);
    // The reason says what happened: long messages are taken only from contacts.
    let why = refused.detail.expect("a reason");
    assert!(why.contains("only from people it has added as contacts"), "{why}");
    assert!(!why.contains("key"), "{why}");
    let history = a.message(&refused.id).expect("history").history;
    assert_eq!(history.last().and_then(|h| h.detail.as_deref()), Some(why.as_str()));
    let mut b_events = b.subscribe();
    let short = a.send("bob", "hello, stranger here").await.expect("send");
    assert_eq!(short.state, "delivered", "{:?}", short.detail);
    let got = wait_message(&mut b_events, &short.id).await;
    assert_eq!((got.from, got.text.as_str()), (None, "hello, stranger here"));
    assert_eq!(b.inbox(100).expect("inbox").len(), 1, "nothing of the long one was kept");

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
