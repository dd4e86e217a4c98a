//! Findings 2 and 3 of issue 15 as the nodes live them: a side that restores an old copy of its
//! data directory and its contact both go on talking, by themselves, and both show the user
//! that the conversation was re-keyed; nothing queued is lost.

use kolokol_node::RunningNode;
use kolokol_protocol::control::Event;

use crate::support::{Net, wait_event, wait_message, wait_state};

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

/// Copies the files that make a node's state (the database and the identity) from one data
/// directory to another, as a user restoring a backup would.
fn copy_state(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("backup directory");
    for name in ["kolokol.db", "identity.key"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copied");
    }
    for name in ["kolokol.db-wal", "kolokol.db-shm"] {
        let _ = std::fs::remove_file(to.join(name));
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).expect("copied");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_side_that_restores_an_old_copy_of_its_data_and_its_contact_both_go_on_talking() {
    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
    round_trip(&alice, &bob, "before the backup").await;

    // Alice backs her data up while stopped.
    alice.shutdown().await;
    let backup = net.data_dir("alice-backup");
    copy_state(&net.data_dir("alice"), &backup);

    // Then they talk long enough that both rotate past every key the backup knows.
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    for i in 0..8 {
        round_trip(&alice, &bob, &format!("after the backup {i}")).await;
    }

    // Alice restores the backup.
    alice.shutdown().await;
    copy_state(&backup, &net.data_dir("alice"));
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let (a, b) = (alice.node(), bob.node());
    let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());

    // Her message goes to a receive key Bob deleted long ago: Bob refuses it, Alice re-keys
    // through his prekey and the same message arrives.
    let sent = a.send("bob", "from the restored copy").await.expect("send");
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "from the restored copy");
    wait_state(&mut a_events, &sent.id, "delivered").await;
    // And Bob's answer reaches her, whatever keys he held for her.
    let reply = b.send("alice", "welcome back").await.expect("send");
    assert_eq!(wait_message(&mut a_events, &reply.id).await.text, "welcome back");
    wait_state(&mut b_events, &reply.id, "delivered").await;

    // Both were told, and both keep the re-key in the contact book.
    for (node, peer) in [(&a, "bob"), (&b, "alice")] {
        let contact = node
            .contacts()
            .expect("contacts")
            .into_iter()
            .find(|c| c.name == peer)
            .expect("contact");
        assert!(
            contact.rekeyed_at_ms.is_some() && contact.rekey_reason.is_some(),
            "{peer}'s conversation shows no re-key: {contact:?}"
        );
    }
    // The history of Alice's message says it was sealed again under the new keys.
    let id = kolokol_protocol::message::parse_id(&sent.id).expect("id");
    let history = a.history(&id).expect("history");
    assert!(
        history
            .iter()
            .any(|(_, detail, _)| detail.as_deref().is_some_and(|d| d.contains("re-keyed"))),
        "{history:?}"
    );

    // And the conversation goes on as usual.
    round_trip(&alice, &bob, "after the restore").await;
    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekey_is_announced_to_subscribers() {
    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
    round_trip(&alice, &bob, "one").await;
    alice.shutdown().await;
    let backup = net.data_dir("alice-backup");
    copy_state(&net.data_dir("alice"), &backup);
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    for i in 0..8 {
        round_trip(&alice, &bob, &format!("{i}")).await;
    }
    alice.shutdown().await;
    copy_state(&backup, &net.data_dir("alice"));
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let mut a_events = alice.node().subscribe();
    let mut b_events = bob.node().subscribe();
    alice.node().send("bob", "hello again").await.expect("send");
    let mine = wait_event(&mut a_events, |e| match e {
        Event::Rekeyed(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(mine.contact.as_deref(), Some("bob"));
    let theirs = wait_event(&mut b_events, |e| match e {
        Event::Rekeyed(r) => Some(r.clone()),
        _ => None,
    })
    .await;
    assert_eq!(theirs.contact.as_deref(), Some("alice"));
    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_conversation_state_restarts_from_the_invite_visibly() {
    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
    round_trip(&alice, &bob, "before the damage").await;
    let bob_id = bob.node().peer_id();

    // Alice's stored state of the conversation with Bob is damaged while she is stopped (a
    // bad sector, a broken restore): it no longer decodes.
    alice.shutdown().await;
    {
        let store = kolokol_node::store::Store::open(&net.data_dir("alice").join("kolokol.db"))
            .expect("store");
        let write = kolokol_node::store::ConversationWrite {
            peer: &bob_id,
            state: b"not a conversation state",
            key_ids: None,
            rekeyed: None,
        };
        store.save_conversation(&write, 1).expect("saved");
    }
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let (a, b) = (alice.node(), bob.node());
    let (mut a_events, mut b_events) = (a.subscribe(), b.subscribe());

    // Her next message restarts the conversation from Bob's invite (a first contact to its
    // prekey, never format 1), and arrives; Bob restarts his side too.
    let sent = a.send("bob", "from a damaged state").await.expect("send");
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "from a damaged state");
    wait_state(&mut a_events, &sent.id, "delivered").await;
    let contact = a.contacts().expect("contacts").into_iter().find(|c| c.name == "bob").unwrap();
    assert_eq!(
        contact.rekey_reason.as_deref(),
        Some("our stored state of it could not be read"),
        "{contact:?}"
    );
    let contact = b.contacts().expect("contacts").into_iter().find(|c| c.name == "alice").unwrap();
    assert!(contact.rekey_reason.is_some(), "Bob shows no re-key: {contact:?}");
    assert_eq!(a.conversation_format(&bob_id).expect("format"), Some(4));

    round_trip(&alice, &bob, "after the damage").await;
    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
