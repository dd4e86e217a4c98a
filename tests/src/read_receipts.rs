//! Read receipts: Bob reads his inbox through the control socket, as `kolokol inbox` does, and
//! Alice's message goes on from `delivered` to `read`; reading again sends nothing, and a
//! stranger who wrote to Bob never learns that he read it. A node with read receipts turned
//! off marks what its user reads and tells nobody.

use kolokol_node::{Role, RunningNode};
use kolokol_protocol::control::{InboxMessage, InboxReadResult, MessageStatus, method};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::support::{Net, TIMEOUT, control_socket, introduce, wait_message, wait_state};

/// One JSON-RPC call on a fresh connection to `name`'s control socket: its result, or a panic
/// on an error.
async fn call(net: &Net, name: &str, method: &str, params: Value) -> Value {
    let stream = UnixStream::connect(control_socket(&net.data_dir(name))).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    write.write_all(format!("{request}\n").as_bytes()).await.expect("write");
    let mut line = String::new();
    tokio::time::timeout(TIMEOUT, BufReader::new(read).read_line(&mut line))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer: Value = serde_json::from_str(&line).expect("JSON");
    assert!(answer.get("error").is_none(), "{method} failed: {answer}");
    answer["result"].clone()
}

/// What `kolokol inbox` does: list the inbox, then mark what it showed read.
async fn read_inbox(net: &Net, name: &str) -> (Vec<InboxMessage>, InboxReadResult) {
    let messages: Vec<InboxMessage> =
        serde_json::from_value(call(net, name, method::INBOX, json!({})).await).expect("shape");
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let result = call(net, name, method::INBOX_READ, json!({ "ids": ids })).await;
    (messages, serde_json::from_value(result).expect("shape"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_inbox_sends_one_read_receipt_to_contacts_only() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", std::slice::from_ref(&relay_addr)).await;
    let carol = net.user("carol", &[relay_addr]).await;
    let (a, b, c) = (alice.node(), bob.node(), carol.node());
    introduce(&a, "alice", &b, "bob").await;
    // Carol knows Bob, but Bob has never added her: to him she is a stranger.
    c.add_contact("bob", &b.invite().await.expect("invite").invite).await.expect("add contact");

    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();
    let sent = a.send("bob", "hello bob").await.expect("send");
    wait_message(&mut b_events, &sent.id).await;
    wait_state(&mut a_events, &sent.id, "delivered").await;
    let from_carol = c.send("bob", "hi, it's carol").await.expect("send");
    wait_message(&mut b_events, &from_carol.id).await;

    // Bob reads both; only Alice, a contact, gets a read receipt.
    let (shown, result) = read_inbox(&net, "bob").await;
    assert_eq!(shown.len(), 2);
    assert!(shown.iter().all(|m| m.read_at_ms.is_none()), "unread until now: {shown:?}");
    assert_eq!(result, InboxReadResult { marked: 2, receipts: 1 });
    wait_state(&mut a_events, &sent.id, "read").await;
    let status = call(&net, "alice", method::MESSAGE, json!({ "id": sent.id })).await;
    let status: MessageStatus = serde_json::from_value(status).expect("shape");
    assert_eq!(status.message.state, "read");
    let history: Vec<&str> = status.history.iter().map(|h| h.state.as_str()).collect();
    assert_eq!(history, ["queued", "sent", "delivered", "read"]);

    // Reading again marks nothing and sends nothing.
    let (shown, result) = read_inbox(&net, "bob").await;
    assert!(shown.iter().all(|m| m.read_at_ms.is_some()), "marked read: {shown:?}");
    assert_eq!(result, InboxReadResult { marked: 0, receipts: 0 });
    assert_eq!(b.status().await.expect("status").queued_messages, 0);

    // Carol's message was never reported read: no read receipt was ever queued for her.
    let carol_status = c.message(&from_carol.id).expect("status");
    assert_ne!(carol_status.message.state, "read");
    assert!(carol_status.history.iter().all(|h| h.state != "read"));

    for n in [alice, bob, carol, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_receipts_off_reading_tells_nobody() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let mut config = net.config("bob", Role::Node);
    config.bootstrap = vec![relay_addr];
    config.read_receipts = false;
    let bob = RunningNode::start(config).await.expect("bob starts");
    bob.node()
        .wait_for_net(TIMEOUT, |s| !s.reservations.is_empty())
        .await
        .expect("bob got a relay reservation");
    let (a, b) = (alice.node(), bob.node());
    introduce(&a, "alice", &b, "bob").await;

    let mut a_events = a.subscribe();
    let mut b_events = b.subscribe();
    let sent = a.send("bob", "do you read me?").await.expect("send");
    wait_message(&mut b_events, &sent.id).await;
    wait_state(&mut a_events, &sent.id, "delivered").await;
    let (_, result) = read_inbox(&net, "bob").await;
    assert_eq!(result, InboxReadResult { marked: 1, receipts: 0 });
    let (shown, _) = read_inbox(&net, "bob").await;
    assert!(shown[0].read_at_ms.is_some(), "still marked read: {shown:?}");
    assert_eq!(a.message(&sent.id).expect("status").message.state, "delivered");

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
