//! Store-and-forward mailboxes: an offline recipient gets its messages from the replicas when
//! it comes back, exactly once, even with a replica gone; replicas hand over and delete items
//! only with a valid ownership proof, and refuse deposits past a quota without touching what
//! they hold; a backlog of 1 000 messages all arrives, in order, none twice; and through churn
//! the replicas hand a mailbox over so that the three closest live servers hold it. Version 2
//! (`/kolokol/mailbox/2`): a contact that knows the recipient's mailbox address deposits under
//! an id the replica cannot tie to the recipient, and nothing it stores names the recipient; a
//! contact that does not still deposits in version 1; a blinded proof opens only its own
//! mailbox.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kolokol_node::{Multiaddr, Role, RunningNode};
use kolokol_protocol::control::Event;
use kolokol_protocol::identity::Identity;
use kolokol_protocol::mailbox::{
    BlindedProof, Operation, Proof, Request, RequestV2, Response, mailbox_id, period_of,
};
use kolokol_protocol::mailbox_key::MailboxKey;
use libp2p::kad;

use crate::support::{
    Net, TIMEOUT, assert_stored_then_delivered, introduce, raw_mailbox_requests,
    raw_mailbox_requests_v2, wait_message, wait_message_at, wait_state, wait_state_at,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_recipient_gets_a_stored_message_exactly_once_when_it_starts() {
    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
    bob.shutdown().await;

    // The relay is the only DHT server, so one ack of one replica makes it stored.
    let sent = alice.node().send("bob", "see you later").await.expect("send");
    assert_eq!(sent.state, "stored", "{:?}", sent.detail);
    assert_eq!(sent.detail.as_deref(), Some("stored on 1 of 1 mailbox replicas"));
    // Alice goes offline too: the message can only reach Bob through his mailbox, and Bob's
    // receipt can only reach Alice through hers.
    alice.shutdown().await;

    let bob = net.start("bob", Role::Node, std::slice::from_ref(&relay_addr)).await;
    let mut b_events = bob.node().subscribe();
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "see you later");
    let alice = net.start("alice", Role::Node, &[relay_addr]).await;
    let mut a_events = alice.node().subscribe();
    wait_state(&mut a_events, &sent.id, "delivered").await;

    // A fetch now finds nothing: the items were deleted after the first fetch.
    assert_eq!(bob.node().fetch_mailboxes().await, 0);
    let inbox = bob.node().inbox(100).expect("inbox");
    assert_eq!(inbox.iter().filter(|m| m.id == sent.id).count(), 1);
    assert_stored_then_delivered(&alice.node(), &sent.id);
    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_on_three_replicas_arrives_with_one_of_them_gone() {
    let net = Net::new();
    let (relay1, relay1_addr) = net.relay("relay1").await;
    let relay2 = net.start("relay2", Role::Relay, std::slice::from_ref(&relay1_addr)).await;
    let relay3 = net.start("relay3", Role::Relay, std::slice::from_ref(&relay1_addr)).await;
    for r in [&relay1, &relay2, &relay3] {
        r.node().wait_for_net(TIMEOUT, |s| s.routing_table >= 2).await.expect("the DHT forms");
    }
    let alice = net.user("alice", std::slice::from_ref(&relay1_addr)).await;
    let bob = net.user("bob", std::slice::from_ref(&relay1_addr)).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    bob.shutdown().await;

    let sent = alice.node().send("bob", "three copies").await.expect("send");
    assert_eq!(sent.state, "stored", "{:?}", sent.detail);
    assert_eq!(sent.detail.as_deref(), Some("stored on 3 of 3 mailbox replicas"));
    alice.shutdown().await;
    // A replica leaves before Bob is back (relay1 stays: it is Bob's only way in).
    relay3.shutdown().await;

    let bob = net.start("bob", Role::Node, &[relay1_addr]).await;
    let mut b_events = bob.node().subscribe();
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "three copies");
    // The copies on the other replicas were deleted or are recognised as the same message.
    bob.node().fetch_mailboxes().await;
    let inbox = bob.node().inbox(100).expect("inbox");
    assert_eq!(inbox.iter().filter(|m| m.id == sent.id).count(), 1);
    for n in [bob, relay2, relay1] {
        n.shutdown().await;
    }
}

/// A deposit of one small envelope for `owner`'s current mailbox.
fn deposit(owner: &Identity, item: u8) -> Request {
    let now = kolokol_node::clock::unix_secs();
    Request::Deposit {
        mailbox_id: mailbox_id(owner.identity_key(), period_of(now)),
        item_id: [item; 16],
        envelope: vec![item; 1024],
        expires_at: now + 3600,
    }
}

fn fetch(owner: &Identity, signer: &Identity, timestamp: u64) -> Request {
    let id = mailbox_id(owner.identity_key(), period_of(timestamp));
    let proof = Proof::sign(signer, &id, Operation::Fetch, timestamp, &[]).expect("sign");
    Request::Fetch { mailbox_id: id, proof }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hand_over_and_delete_only_with_a_valid_proof() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let bob = Identity::from_secrets([1; 32], [51; 32]);
    let mallory = Identity::from_secrets([3; 32], [53; 32]);
    let now = kolokol_node::clock::unix_secs();
    let id = mailbox_id(bob.identity_key(), period_of(now));
    assert_eq!(raw_mailbox_requests(&relay_addr, vec![deposit(&bob, 7)]).await, [Response::Stored]);

    let genuine = Proof::sign(&bob, &id, Operation::Fetch, now, &[]).expect("sign");
    let mut forged = genuine.clone();
    forged.signature[0] ^= 1;
    let mallory_delete =
        Proof::sign(&mallory, &id, Operation::Delete, now, &[[7; 16]]).expect("sign");
    let fetch_as_delete =
        Request::Delete { mailbox_id: id, item_ids: vec![[7; 16]], proof: genuine };
    let answers = raw_mailbox_requests(
        &relay_addr,
        vec![
            fetch(&bob, &mallory, now),
            Request::Fetch { mailbox_id: id, proof: forged },
            fetch(&bob, &bob, now - 3600),
            Request::Delete { mailbox_id: id, item_ids: vec![[7; 16]], proof: mallory_delete },
            fetch_as_delete,
        ],
    )
    .await;
    let reasons: Vec<String> = answers
        .into_iter()
        .map(|a| match a {
            Response::Refused { reason } => reason,
            other => panic!("not refused: {other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("does not own"), "{reasons:?}");
    assert!(reasons[1].contains("signature"), "{reasons:?}");
    assert!(reasons[2].contains("stale"), "{reasons:?}");
    assert!(reasons[3].contains("does not own"), "{reasons:?}");
    assert!(reasons[4].contains("signature"), "{reasons:?}");

    // The item is still there for its owner.
    match &raw_mailbox_requests(&relay_addr, vec![fetch(&bob, &bob, now)]).await[..] {
        [Response::Items { items, more: false }] => {
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].envelope, vec![7; 1024]);
        }
        other => panic!("the owner could not fetch: {other:?}"),
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depositor_past_its_quota_gets_a_clear_error_and_nothing_else_changes() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let bob = Identity::from_secrets([1; 32], [51; 32]);
    let quota = kolokol_node::mailbox::MAX_ITEMS_PER_DEPOSITOR as usize;
    // One depositor fills its share of Bob's mailbox, then one more is refused.
    let requests: Vec<Request> = (0..=quota)
        .map(|i| {
            let mut r = deposit(&bob, 1);
            if let Request::Deposit { item_id, .. } = &mut r {
                item_id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            }
            r
        })
        .collect();
    let answers = raw_mailbox_requests(&relay_addr, requests).await;
    let stored = answers.iter().filter(|a| **a == Response::Stored).count();
    let refused: Vec<&Response> = answers.iter().filter(|a| **a != Response::Stored).collect();
    assert_eq!(stored, quota, "refused: {:?}", &refused[..refused.len().min(5)]);
    match refused[..] {
        [Response::QuotaExceeded { reason }] => {
            assert!(reason.contains("the most one sender may"), "{reason}")
        }
        _ => panic!("expected one quota error: {refused:?}"),
    }
    // Another sender still gets in, and the owner finds every stored item.
    assert_eq!(raw_mailbox_requests(&relay_addr, vec![deposit(&bob, 2)]).await, [Response::Stored]);
    let now = kolokol_node::clock::unix_secs();
    let id = mailbox_id(bob.identity_key(), period_of(now));
    let mut total = 0;
    for _ in 0..=quota {
        let [Response::Items { items, more }] =
            &raw_mailbox_requests(&relay_addr, vec![fetch(&bob, &bob, now)]).await[..]
        else {
            panic!("the owner could not fetch")
        };
        total += items.len();
        let item_ids: Vec<[u8; 16]> = items.iter().map(|i| i.item_id).collect();
        let proof = Proof::sign(&bob, &id, Operation::Delete, now, &item_ids).expect("sign");
        let delete = Request::Delete { mailbox_id: id, item_ids, proof };
        assert!(matches!(
            raw_mailbox_requests(&relay_addr, vec![delete]).await[..],
            [Response::Deleted { .. }]
        ));
        if !more {
            break;
        }
    }
    assert_eq!(total, quota + 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_to_an_offline_recipient_all_arrive_in_order_none_twice() {
    const MESSAGES: usize = 1000;
    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
    bob.shutdown().await;

    let started = Instant::now();
    let mut ids = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let sent = alice.node().send("bob", &format!("message {i}")).await.expect("send");
        assert_eq!(sent.state, "stored", "message {i}: {:?}", sent.detail);
        ids.push(sent.id);
    }
    let deposited = started.elapsed();
    alice.shutdown().await;

    let started = Instant::now();
    let bob = net.start("bob", Role::Node, &[relay_addr]).await;
    let mut events = bob.node().subscribe();
    let mut seen = HashSet::new();
    tokio::time::timeout(TIMEOUT * 4, async {
        while seen.len() < MESSAGES {
            match events.recv().await {
                Ok(Event::Message(m)) => assert!(seen.insert(m.id.clone()), "{} twice", m.id),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    seen.extend(
                        bob.node()
                            .inbox(2 * MESSAGES as u32)
                            .expect("inbox")
                            .into_iter()
                            .map(|m| m.id),
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("every message arrived");
    let fetched = started.elapsed();
    let inbox = bob.node().inbox(2 * MESSAGES as u32).expect("inbox");
    assert_eq!(inbox.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids, "order or count");
    // Measured, not asserted: tests never assert on timing.
    eprintln!("{MESSAGES} messages: deposited in {deposited:?}, fetched and opened in {fetched:?}");
    for n in [bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_message_moves_to_new_replicas_when_they_join_and_survives_the_old_one_leaving() {
    let net = Net::new();
    let (relay1, relay1_addr) = net.relay("relay1").await;
    let alice = net.user("alice", std::slice::from_ref(&relay1_addr)).await;
    let bob = net.user("bob", std::slice::from_ref(&relay1_addr)).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    bob.shutdown().await;
    let mut a_events = alice.node().subscribe();
    let sent = alice.node().send("bob", "follow me").await.expect("send");
    assert_eq!(sent.detail.as_deref(), Some("stored on 1 of 1 mailbox replicas"));

    // Three more DHT servers join; once Alice's replica lookup is stale (after
    // REPLICA_CACHE_TTL), a retry finds them closer and deposits there too.
    let mut relays = Vec::new();
    for name in ["relay2", "relay3", "relay4"] {
        relays.push(net.start(name, Role::Relay, std::slice::from_ref(&relay1_addr)).await);
    }
    for r in &relays {
        r.node().wait_for_net(TIMEOUT, |s| s.routing_table >= 3).await.expect("the DHT forms");
    }
    let relay2_addr = relays[0]
        .node()
        .wait_for_net(TIMEOUT, |s| !s.external.is_empty())
        .await
        .map(|s| format!("{}/p2p/{}", s.external[0], relays[0].node().peer_id()))
        .expect("relay2 listens")
        .parse()
        .expect("valid multiaddr");
    let wait = kolokol_node::mailbox::REPLICA_CACHE_TTL * 2 + TIMEOUT;
    tokio::time::timeout(wait, async {
        loop {
            match a_events.recv().await {
                Ok(Event::State(s))
                    if s.id == sent.id
                        && s.detail.as_deref() == Some("stored on 3 of 3 mailbox replicas") =>
                {
                    break;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the message was re-deposited on the new closest replicas");
    alice.shutdown().await;

    // The first replica (and Bob's only relay so far) leaves; Bob comes back through another.
    relay1.shutdown().await;
    let bob = net.start("bob", Role::Node, &[relay2_addr]).await;
    let mut b_events = bob.node().subscribe();
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "follow me");
    bob.shutdown().await;
    for r in relays {
        r.shutdown().await;
    }
}

/// A DHT server with a handover pass every second, on 127.0.0.1, bootstrapping from
/// `bootstrap`; with `identity`, it runs under that identity (ground to sit close to a key).
async fn replica(
    net: &Net,
    name: &str,
    bootstrap: &[Multiaddr],
    identity: Option<&Identity>,
) -> RunningNode {
    if let Some(identity) = identity {
        let dir = net.data_dir(name);
        std::fs::create_dir_all(&dir).expect("data dir");
        let path = dir.join(kolokol_node::data_dir::IDENTITY_FILE);
        std::fs::write(&path, identity.to_file_bytes().as_slice()).expect("identity file");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("identity file mode");
    }
    let mut config = net.config(name, Role::Relay);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    config.bootstrap = bootstrap.to_vec();
    config.mailbox_handover_interval = Duration::from_secs(1);
    RunningNode::start(config).await.expect("the replica starts")
}

/// The full address of a running DHT server.
async fn address_of(server: &RunningNode) -> Multiaddr {
    let net = server.node().wait_for_net(TIMEOUT, |s| !s.external.is_empty()).await.expect("up");
    format!("{}/p2p/{}", net.external[0], server.node().peer_id()).parse().expect("multiaddr")
}

/// Waits until `node` holds exactly `count` items of `mailbox`, waking on each change.
async fn wait_held(node: &RunningNode, mailbox: &[u8; 32], count: u64, what: &str) {
    let node = node.node();
    let mut changes = node.mailbox_changes();
    tokio::time::timeout(TIMEOUT * 2, async {
        loop {
            if node.mailbox_items_held(mailbox).expect("count") == count {
                return;
            }
            changes.changed().await.expect("the node runs");
        }
    })
    .await
    .unwrap_or_else(|_| {
        let held = node.mailbox_items_held(mailbox).expect("count");
        panic!("{what}: holds {held} items of the mailbox, not {count}")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hand_a_mailbox_over_through_churn_and_every_message_arrives() {
    const MESSAGES: usize = 5;
    let net = Net::new();
    let seed = replica(&net, "seed", &[], None).await;
    let seed_addr = address_of(&seed).await;
    let mut servers = vec![seed];
    for i in 1..4 {
        servers
            .push(replica(&net, &format!("old{i}"), std::slice::from_ref(&seed_addr), None).await);
    }
    for s in &servers {
        s.node().wait_for_net(TIMEOUT, |n| n.routing_table >= 3).await.expect("the DHT forms");
    }

    // Alice leaves five messages for Bob, who is away, then goes away herself: from here on,
    // only the replicas move the messages.
    let alice = net.user("alice", std::slice::from_ref(&seed_addr)).await;
    let bob = net.user("bob", std::slice::from_ref(&seed_addr)).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    bob.shutdown().await;
    let mut a_events = alice.node().subscribe();
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        ids.push(alice.node().send("bob", &format!("waiting {i}")).await.expect("send").id);
    }
    for id in &ids {
        wait_state_at(&alice.node(), &mut a_events, id, "stored").await;
    }
    alice.shutdown().await;

    // Alice knows Bob's mailbox address, so the mailbox is his version 2 one; replicas hand it
    // over as they do any id.
    let mailbox = net
        .mailbox_key("bob")
        .mailbox_id(period_of(kolokol_node::clock::unix_secs()))
        .expect("a mailbox id");
    let target = kad::KBucketKey::new(mailbox.to_vec());
    let distance = |p: &libp2p::PeerId| kad::KBucketKey::from(*p).distance(&target);
    servers.sort_by_key(|s| distance(&s.node().peer_id()));
    // The three closest of the four hold every message.
    for s in &servers[..3] {
        wait_held(s, &mailbox, MESSAGES as u64, "a first replica").await;
    }

    // Churn: the closest replica leaves (it may be the seed), and two servers closer than any
    // join through the servers still there.
    let left = servers.remove(0);
    left.shutdown().await;
    let mut alive = Vec::new();
    for s in &servers {
        alive.push(address_of(s).await);
    }
    let nearest = distance(&servers[0].node().peer_id());
    let mut joined = Vec::new();
    let mut secret = 0u32;
    while joined.len() < 2 {
        secret += 1;
        let mut s = [0x5a; 32];
        s[..4].copy_from_slice(&secret.to_be_bytes());
        let identity = Identity::from_secrets(s, [0x5b; 32]);
        if distance(&identity.peer_id()) < nearest {
            let name = format!("new{}", joined.len());
            joined.push(replica(&net, &name, &alive, Some(&identity)).await);
        }
    }
    let mut live: Vec<RunningNode> = joined.into_iter().chain(servers).collect();
    live.sort_by_key(|s| distance(&s.node().peer_id()));

    // The three live servers now closest hold every message; the one pushed out of the
    // closest set handed them on before dropping its copy.
    for s in &live[..3] {
        wait_held(s, &mailbox, MESSAGES as u64, "a live replica among the three closest").await;
    }
    for s in &live[3..] {
        wait_held(s, &mailbox, 0, "a server no longer among the closest").await;
    }

    // Bob comes back and gets every message, once.
    let bob = net.start("bob", Role::Node, &alive).await;
    let mut b_events = bob.node().subscribe();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            wait_message_at(&bob.node(), &mut b_events, id).await.text,
            format!("waiting {i}")
        );
    }
    assert_eq!(bob.node().inbox(100).expect("inbox").len(), MESSAGES);
    bob.shutdown().await;
    for s in live {
        s.shutdown().await;
    }
}

/// Every value of every row of a stopped replica's `mailbox_items`, as bytes, with the row's
/// mailbox id first.
fn stored_rows(net: &Net, replica: &str) -> Vec<([u8; 32], Vec<Vec<u8>>)> {
    use rusqlite::types::ValueRef;
    let db = net.database(replica);
    let mut statement = db.prepare("SELECT * FROM mailbox_items").expect("the table exists");
    let columns = statement.column_count();
    statement
        .query_map([], |row| {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Blob(b) => b.to_vec(),
                    ValueRef::Text(t) => t.to_vec(),
                    ValueRef::Integer(n) => n.to_be_bytes().to_vec(),
                    ValueRef::Real(f) => f.to_be_bytes().to_vec(),
                    ValueRef::Null => Vec::new(),
                });
            }
            let id: Vec<u8> = row.get("mailbox_id")?;
            Ok((id.try_into().expect("a 32-byte mailbox id"), values))
        })
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("rows")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_deposit_names_neither_the_recipient_nor_its_identity_on_the_replica() {
    let net = Net::new();
    let (relay, _, alice, bob) = net.pair().await;
    let bob_peer = bob.node().peer_id();
    bob.shutdown().await;

    let sent = alice.node().send("bob", "for your mailbox only").await.expect("send");
    assert_eq!(sent.state, "stored", "{:?}", sent.detail);
    let now = kolokol_node::clock::unix_secs();
    let bob_identity = net.identity("bob");
    let v1 = mailbox_id(bob_identity.identity_key(), period_of(now));
    let v2 = net.mailbox_key("bob").mailbox_id(period_of(now)).expect("a mailbox id");
    assert_ne!(v1, v2);
    // Alice holds Bob's mailbox address (his version 2 invite): the item is under the version 2
    // id, which no one without that address can compute, and nothing is under the version 1 id
    // that anyone can compute from his peer id.
    assert_eq!(relay.node().mailbox_items_held(&v2).expect("count"), 1);
    assert_eq!(relay.node().mailbox_items_held(&v1).expect("count"), 0);
    alice.shutdown().await;
    relay.shutdown().await;

    // What the replica's disk holds: no byte string of Bob's identity key, his peer id (as
    // bytes or as text) or his version 1 mailbox id, in any column.
    let rows = stored_rows(&net, "relay");
    assert_eq!(rows.len(), 1, "one item, one row");
    let (id, values) = &rows[0];
    assert_eq!(*id, v2);
    let bob_text = bob_peer.to_string();
    for needle in
        [&bob_identity.identity_key()[..], &bob_peer.to_bytes()[..], bob_text.as_bytes(), &v1[..]]
    {
        assert!(!values.iter().any(|v| contains(v, needle)), "a stored row names Bob");
    }

    // The replica comes back with its rows, and Bob, fetching his version 2 mailbox with a
    // blinded proof, gets the message; the replica deletes it.
    let (relay, relay_addr) = net.relay("relay").await;
    let bob = net.start("bob", Role::Node, &[relay_addr]).await;
    let mut b_events = bob.node().subscribe();
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "for your mailbox only");
    wait_held(&relay, &v2, 0, "the replica after Bob's fetch").await;
    // The doctor's probe takes the same way: deposited in Bob's version 2 mailbox, fetched back.
    let report = bob.node().doctor().await.expect("doctor");
    let round_trip =
        report.checks.iter().find(|c| c.name == "mailbox round trip").expect("a round-trip check");
    assert_eq!(round_trip.status, "ok", "{round_trip:?}");
    assert_eq!(relay.node().mailbox_items_held(&v2).expect("count"), 0);
    for n in [bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_without_the_mailbox_address_still_deposits_in_version_1() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", std::slice::from_ref(&relay_addr)).await;
    // Alice has Bob from an invite of before mailbox addresses (version 1, no keys), so she
    // cannot compute his version 2 mailbox id.
    let now = kolokol_node::clock::unix_secs();
    let bob_invite = bob.node().invite().await.expect("invite").invite;
    let (invite, keys, _) =
        kolokol_protocol::invite::Invite::from_text_with_keys(&bob_invite, now).expect("invite");
    assert!(keys.is_some());
    let old_invite = invite.to_text().expect("a version 1 invite");
    let alice_invite = alice.node().invite().await.expect("invite").invite;
    bob.node().add_contact("alice", &alice_invite).await.expect("add contact");
    alice.node().add_contact("bob", &old_invite).await.expect("add contact");
    bob.shutdown().await;

    let sent = alice.node().send("bob", "the old way").await.expect("send");
    assert_eq!(sent.state, "stored", "{:?}", sent.detail);
    let v1 = mailbox_id(net.identity("bob").identity_key(), period_of(now));
    let v2 = net.mailbox_key("bob").mailbox_id(period_of(now)).expect("a mailbox id");
    assert_eq!(relay.node().mailbox_items_held(&v1).expect("count"), 1);
    assert_eq!(relay.node().mailbox_items_held(&v2).expect("count"), 0);
    alice.shutdown().await;

    // Bob fetches his version 1 mailbox too, for contacts like Alice.
    let bob = net.start("bob", Role::Node, &[relay_addr]).await;
    let mut b_events = bob.node().subscribe();
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "the old way");
    wait_held(&relay, &v1, 0, "the replica after Bob's fetch").await;
    for n in [bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_replica_hands_out_and_deletes_only_for_the_owners_blinded_proof() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let bob = MailboxKey::from_secret(&[1; 32]);
    let mallory = MailboxKey::from_secret(&[3; 32]);
    let bob_identity = Identity::from_secrets([1; 32], [51; 32]);
    let now = kolokol_node::clock::unix_secs();
    let period = period_of(now);
    let id = bob.mailbox_id(period).expect("a mailbox id");
    let deposit = RequestV2::Deposit {
        mailbox_id: id,
        item_id: [7; 16],
        envelope: vec![7; 1024],
        expires_at: now + 3600,
    };
    assert_eq!(raw_mailbox_requests_v2(&relay_addr, vec![deposit]).await, [Response::Stored]);

    let fetch_by = |key: &MailboxKey, timestamp: u64| {
        let (_, proof) =
            BlindedProof::sign(key, period_of(timestamp), Operation::Fetch, timestamp, &[])
                .expect("sign");
        RequestV2::Fetch { mailbox_id: id, proof }
    };
    let (_, genuine) = BlindedProof::sign(&bob, period, Operation::Fetch, now, &[]).expect("sign");
    let mut forged = genuine.clone();
    forged.signature[0] ^= 1;
    let (_, mallory_delete) =
        BlindedProof::sign(&mallory, period, Operation::Delete, now, &[[7; 16]]).expect("sign");
    let answers = raw_mailbox_requests_v2(
        &relay_addr,
        vec![
            fetch_by(&mallory, now),
            RequestV2::Fetch { mailbox_id: id, proof: forged },
            fetch_by(&bob, now - 3600),
            RequestV2::Delete { mailbox_id: id, item_ids: vec![[7; 16]], proof: mallory_delete },
            RequestV2::Delete { mailbox_id: id, item_ids: vec![[7; 16]], proof: genuine },
        ],
    )
    .await;
    let reasons: Vec<String> = answers
        .into_iter()
        .map(|a| match a {
            Response::Refused { reason } => reason,
            other => panic!("not refused: {other:?}"),
        })
        .collect();
    assert!(reasons[0].contains("does not own"), "{reasons:?}");
    assert!(reasons[1].contains("signature"), "{reasons:?}");
    assert!(reasons[2].contains("stale"), "{reasons:?}");
    assert!(reasons[3].contains("does not own"), "{reasons:?}");
    assert!(reasons[4].contains("signature"), "{reasons:?}");
    // Nor does a version 1 proof by an identity open a version 2 mailbox.
    let identity_proof = Proof::sign(&bob_identity, &id, Operation::Fetch, now, &[]).expect("sign");
    match &raw_mailbox_requests(
        &relay_addr,
        vec![Request::Fetch { mailbox_id: id, proof: identity_proof }],
    )
    .await[..]
    {
        [Response::Refused { reason }] => assert!(reason.contains("does not own"), "{reason}"),
        other => panic!("an identity proof opened a version 2 mailbox: {other:?}"),
    }

    // The item is still there for its owner, who deletes it with a proof over its id.
    match &raw_mailbox_requests_v2(&relay_addr, vec![fetch_by(&bob, now)]).await[..] {
        [Response::Items { items, more: false }] => {
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].envelope, vec![7; 1024]);
        }
        other => panic!("the owner could not fetch: {other:?}"),
    }
    let (_, delete) =
        BlindedProof::sign(&bob, period, Operation::Delete, now, &[[7; 16]]).expect("sign");
    assert_eq!(
        raw_mailbox_requests_v2(
            &relay_addr,
            vec![RequestV2::Delete { mailbox_id: id, item_ids: vec![[7; 16]], proof: delete }],
        )
        .await,
        [Response::Deleted { count: 1 }]
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cannot_tell_which_sender_a_version_2_deposit_came_from() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let carol = net.user("carol", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", std::slice::from_ref(&relay_addr)).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    introduce(&carol.node(), "carol", &bob.node(), "bob").await;
    let bob_peer = bob.node().peer_id();
    bob.shutdown().await;

    // Both senders deposit while Bob is away, each message through a courier of its own.
    let mut sent = Vec::new();
    for (sender, text) in [(&alice, "from the first"), (&carol, "from the second")] {
        let s = sender.node().send("bob", text).await.expect("send");
        assert_eq!(s.state, "stored", "{:?}", s.detail);
        sent.push((s.id, text));
    }
    let senders: Vec<(libp2p::PeerId, Identity)> = ["alice", "carol"]
        .iter()
        .map(|name| (net.identity(name).peer_id(), net.identity(name)))
        .collect();
    alice.shutdown().await;
    carol.shutdown().await;
    relay.shutdown().await;

    // The replica's rows: the depositor it recorded is neither sender, and no column holds a
    // sender's identity key, device key or peer id (bytes or text), nor Bob's.
    let rows = stored_rows(&net, "relay");
    assert_eq!(rows.len(), 2, "one item per message");
    let depositors: Vec<String> = {
        let db = net.database("relay");
        let mut query = db.prepare("SELECT depositor FROM mailbox_items").expect("query");
        query
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("depositors")
    };
    assert_ne!(depositors[0], depositors[1], "one courier per deposit batch");
    let bob_identity = net.identity("bob");
    let mut needles: Vec<Vec<u8>> = vec![
        bob_identity.identity_key().to_vec(),
        bob_peer.to_bytes(),
        bob_peer.to_string().into_bytes(),
    ];
    for (peer, identity) in &senders {
        assert!(!depositors.contains(&peer.to_string()), "a sender's own peer id was recorded");
        needles.push(identity.identity_key().to_vec());
        needles.push(identity.device().public().to_vec());
        needles.push(peer.to_bytes());
        needles.push(peer.to_string().into_bytes());
    }
    for (_, values) in &rows {
        for needle in &needles {
            assert!(!values.iter().any(|v| contains(v, needle)), "a stored row names someone");
        }
    }

    // Bob gets both.
    let (relay, relay_addr) = net.relay("relay").await;
    let bob = net.start("bob", Role::Node, &[relay_addr]).await;
    let mut b_events = bob.node().subscribe();
    for (id, text) in &sent {
        assert_eq!(wait_message_at(&bob.node(), &mut b_events, id).await.text, *text);
    }
    for n in [bob, relay] {
        n.shutdown().await;
    }
}
