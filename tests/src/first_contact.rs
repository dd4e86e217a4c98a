//! Finding 4 of issue 15: a first contact must not depend on the DHT. A version 2 invite carries
//! the inviter's hybrid prekey and mailbox address, so the first message is a format 4 first
//! contact (X25519 + ML-KEM-768) even when no DHT server can be reached at all; and when the
//! invite's prekey has expired, the message waits for a current one rather than being sealed
//! to the never-rotating device key.

use kolokol_node::{Multiaddr, Role, RunningNode};
use kolokol_protocol::invite::{Invite, InviteKeys};
use kolokol_protocol::prekey::{HybridPrekey, HybridPrekeySecret};

use crate::support::{Net, TIMEOUT, wait_message};

/// A node with no bootstrap source at all (so no DHT), no mDNS, listening on 127.0.0.1.
async fn isolated(net: &Net, name: &str) -> (RunningNode, Multiaddr) {
    let mut config = net.config(name, Role::Node);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    let node = RunningNode::start(config).await.expect("the node starts");
    let status = node
        .node()
        .wait_for_net(TIMEOUT, |s| !s.listen.is_empty())
        .await
        .expect("the node listens");
    let address = status.listen[0].clone();
    (node, address)
}

/// The node's own invite, version 2, with `address` in place of whatever it found (a node with
/// no peers has confirmed no external address), and optionally another prekey.
async fn invite_at(
    node: &RunningNode,
    address: &Multiaddr,
    prekey: Option<HybridPrekey>,
) -> String {
    let text = node.node().invite().await.expect("invite").invite;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (invite, keys, _) = Invite::from_text_with_keys(&text, now).expect("its own invite reads");
    let keys = keys.expect("the node emits version 2 invites");
    let invite = Invite { addresses: vec![address.to_vec()], ..invite };
    let keys = InviteKeys { prekey: prekey.unwrap_or(keys.prekey), mailbox: keys.mailbox };
    invite.to_text_v2(&keys).expect("encodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_contact_goes_through_with_the_dht_unreachable() {
    let net = Net::new();
    let (alice, alice_at) = isolated(&net, "alice").await;
    let (bob, _) = isolated(&net, "bob").await;
    assert_eq!(alice.node().net_status().await.expect("status").routing_table, 0, "no DHT");
    bob.node()
        .add_contact("alice", &invite_at(&alice, &alice_at, None).await)
        .await
        .expect("added");
    let alice_id = alice.node().peer_id();
    assert_eq!(bob.node().conversation_format(&alice_id).expect("reads"), Some(4));

    let mut events = alice.node().subscribe();
    let sent = bob.node().send("alice", "hello over no DHT").await.expect("send");
    let got = wait_message(&mut events, &sent.id).await;
    assert_eq!(got.text, "hello over no DHT");
    // Only a format 4 first contact carries the sender's hybrid prekey and mailbox address: if
    // Alice's conversation with Bob has them, the first contact went to the invite's prekey.
    let bob_id = bob.node().peer_id();
    assert_eq!(alice.node().conversation_format(&bob_id).expect("reads"), Some(4));
    for n in [alice, bob] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_invite_prekey_makes_the_message_wait_never_the_device_key() {
    let net = Net::new();
    let (alice, alice_at) = isolated(&net, "alice").await;
    let (bob, _) = isolated(&net, "bob").await;
    // A prekey of Alice's, properly signed by her identity, that expired a day ago.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let secret = HybridPrekeySecret {
        x25519: zeroize::Zeroizing::new([5; 32]),
        kem_seed: zeroize::Zeroizing::new([6; 64]),
    };
    let stale =
        HybridPrekey::sign(&net.identity("alice"), &secret, now - 15 * 86_400, now - 86_400)
            .expect("signs");
    bob.node()
        .add_contact("alice", &invite_at(&alice, &alice_at, Some(stale)).await)
        .await
        .expect("an invite with a stale prekey still adds the contact");

    let sent = bob.node().send("alice", "wait for a fresh prekey").await.expect("send");
    assert_eq!(sent.state, kolokol_protocol::control::MessageState::Queued);
    let detail = sent.detail.unwrap_or_default();
    assert!(detail.contains("current prekey"), "{detail}");
    // Nothing went out: Alice has no conversation with Bob and nothing in her inbox.
    let bob_id = bob.node().peer_id();
    assert_eq!(alice.node().conversation_format(&bob_id).expect("reads"), None);
    assert!(alice.node().inbox(10).expect("inbox").is_empty());
    let status = bob.node().message(&sent.id).expect("status");
    assert_eq!(status.message.state, kolokol_protocol::control::MessageState::Queued);
    for n in [alice, bob] {
        n.shutdown().await;
    }
}

/// Finding 6 of issue 15: format 1 (to the long-term device key, no forward secrecy, no cheap
/// rejection) is accepted only from a contact we never had a conversation with. A stranger's,
/// and a contact's who has a conversation with us, are refused; both are fetched from the
/// mailbox (so the refusal is the inbox's, not a failed delivery) and deleted there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_1_is_refused_from_a_stranger_and_from_a_contact_with_a_conversation() {
    use kolokol_protocol::envelope;
    use kolokol_protocol::identity::Identity;
    use kolokol_protocol::mailbox::{Request, Response, item_id, mailbox_id, period_of};
    use kolokol_protocol::message::{Body, Content};

    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
    let now = kolokol_node::clock::unix_secs();
    let bob_identity = net.identity("bob");
    let deposit = |sender: &Identity, n: u8| {
        let certificate = sender.certify(now - 60, now + 3600).expect("certify");
        let content = Content {
            id: [n; 16],
            sent_at_ms: now * 1000,
            body: Body::Text(format!("format 1 number {n}")),
        };
        let sealed =
            envelope::seal(sender, &certificate, bob_identity.device().public(), &content, [n; 32])
                .expect("seal");
        Request::Deposit {
            mailbox_id: mailbox_id(bob_identity.identity_key(), period_of(now)),
            item_id: item_id(&[n; 16]),
            envelope: sealed,
            expires_at: now + 3600,
        }
    };
    let mallory = Identity::from_secrets([7; 32], [8; 32]);
    let requests = vec![deposit(&mallory, 1), deposit(&net.identity("alice"), 2)];
    assert_eq!(
        crate::support::raw_mailbox_requests(&relay_addr, requests).await,
        [Response::Stored, Response::Stored]
    );

    let b = bob.node();
    // Both envelopes are fetched and handled: deleted from the replica.
    let id = mailbox_id(bob_identity.identity_key(), period_of(now));
    crate::support::fetch_until_taken(&b, &relay.node(), &id).await;
    assert!(b.inbox(100).expect("inbox").is_empty(), "a format 1 envelope was accepted");

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

/// docs/PROTOCOL.md 8.11 between real nodes: Alice writes and Bob never does. Bob's node
/// answers her first contact with a receipt, so her texts go to a receive key of his instead of
/// each being a hybrid first contact to his prekey, and answers again after
/// `ANSWER_AFTER_ENVELOPES` texts on one key, which moves her to a fresh one. Without the
/// answer Bob would hold no receive key for her at all. Every text arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_conversation_leaves_first_contact_and_moves_keys() {
    let net = Net::new();
    let (alice, alice_at) = isolated(&net, "alice").await;
    let (bob, bob_at) = isolated(&net, "bob").await;
    alice.node().add_contact("bob", &invite_at(&bob, &bob_at, None).await).await.expect("added");
    bob.node().add_contact("alice", &invite_at(&alice, &alice_at, None).await).await.expect("add");
    let alice_id = alice.node().peer_id();
    let mut events = bob.node().subscribe();
    let texts = kolokol_protocol::conversation::ANSWER_AFTER_ENVELOPES + 16;
    for n in 0..texts {
        let sent = alice.node().send("bob", &format!("one way {n}")).await.expect("send");
        assert_eq!(wait_message(&mut events, &sent.id).await.text, format!("one way {n}"));
    }
    let keys = bob.node().receive_key_ids(&alice_id).expect("reads");
    assert!(
        keys.len() >= 2,
        "Bob answered the first contact and again after a key's worth of texts: {} keys",
        keys.len()
    );
    let inbox = bob.node().inbox(1_000).expect("inbox");
    assert_eq!(inbox.len(), texts, "every text once");
    for n in [alice, bob] {
        n.shutdown().await;
    }
}
