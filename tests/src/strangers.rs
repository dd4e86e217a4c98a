//! Strangers and contacts: a stranger's first message waits as a request that can be
//! accepted or blocked; a contact can be renamed, marked verified, and replaced when they start
//! over with a new identity.

use kolokol_node::Role;

use crate::support::{Net, wait_message, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_message_is_a_request_to_accept_or_block() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let bob = net.user("bob", std::slice::from_ref(&relay_addr)).await;
    let carol = net.user("carol", std::slice::from_ref(&relay_addr)).await;
    let mallory = net.user("mallory", &[relay_addr]).await;
    let b = bob.node();
    let bob_invite = b.invite().await.expect("invite").invite;
    carol.node().add_contact("bob", &bob_invite).await.expect("add");
    mallory.node().add_contact("bob", &bob_invite).await.expect("add");

    let mut b_events = b.subscribe();
    let hello = carol.node().send("bob", "hi, it's carol").await.expect("send");
    wait_message(&mut b_events, &hello.id).await;
    let spam = mallory.node().send("bob", "buy now").await.expect("send");
    wait_message(&mut b_events, &spam.id).await;
    let chats = b.chats().expect("chats");
    assert_eq!(chats.len(), 2, "{chats:?}");
    assert!(chats.iter().all(|c| c.request && c.name.is_none() && c.unread == 1), "{chats:?}");

    // Bob accepts Carol by a start of her peer id: she is a contact, her conversation no
    // longer a request, and what she wrote stays.
    let carol_id = carol.node().peer_id().to_string();
    let accepted = b.accept_contact(&carol_id[..16], "Carol").expect("accept");
    assert_eq!((accepted.name.as_str(), accepted.peer_id.as_str()), ("Carol", carol_id.as_str()));
    let chat = b.chat("carol", 10).expect("chat");
    assert_eq!(chat.name.as_deref(), Some("Carol"));
    assert_eq!(chat.entries[0].text, "hi, it's carol");
    // And Bob can answer her: the key he accepted is the one she writes from.
    let mut c_events = carol.node().subscribe();
    let answer = b.send("carol", "welcome").await.expect("send");
    assert_eq!(wait_message(&mut c_events, &answer.id).await.text, "welcome");

    // Mallory is blocked: her message is gone, and the next one is taken but dropped.
    let mallory_id = mallory.node().peer_id().to_string();
    let blocked = b.block(&mallory_id).expect("block");
    assert_eq!(blocked.removed_messages, 1);
    assert_eq!(b.blocked().expect("blocked")[0].peer_id, mallory_id);
    let again = mallory.node().send("bob", "still there?").await.expect("send");
    assert_eq!(again.state, "delivered", "{:?}", again.detail);
    assert!(b.inbox(100).expect("inbox").iter().all(|m| m.from_peer_id != mallory_id));
    assert!(b.chats().expect("chats").iter().all(|c| c.peer_id != mallory_id));
    // Her node took the direct acknowledgement as delivery, and it stays so: nothing tells her
    // she is blocked (no read receipt goes back either). A contact cannot be blocked.
    assert_eq!(mallory.node().message(&again.id).expect("status").message.state, "delivered");
    assert!(b.block(&carol_id).unwrap_err().to_string().contains("remove the contact first"));

    for n in [carol, mallory, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_is_renamed_marked_verified_and_replaced_when_they_start_over() {
    let net = Net::new();
    let (relay, relay_addr, alice, bob) = net.pair().await;
    let a = alice.node();
    let renamed = a.rename_contact("BOB", "Robert").expect("rename");
    assert_eq!(renamed.name, "Robert");
    assert!(a.rename_contact("nobody", "x").is_err());
    let marked = a.mark_contact("robert", true).expect("mark");
    assert!(marked.verified && marked.verified_at_ms.is_some());
    assert!(a.contacts().expect("contacts")[0].verified);

    // Bob starts over: a new data directory, so a new identity and a new invite.
    let old_bob = bob.node().peer_id();
    bob.shutdown().await;
    let new_bob = net.start("bob-again", Role::Node, &[relay_addr]).await;
    new_bob
        .node()
        .wait_for_net(crate::support::TIMEOUT, |s| !s.reservations.is_empty())
        .await
        .expect("a reservation");
    let invite = new_bob.node().invite().await.expect("invite").invite;
    let replaced = a.replace_contact("robert", &invite).await.expect("replace");
    assert_eq!(replaced.old_peer_id, old_bob.to_string());
    assert!(replaced.was_verified && !replaced.contact.verified);
    assert_eq!(replaced.contact.name, "Robert");
    assert_eq!(replaced.contact.peer_id, new_bob.node().peer_id().to_string());
    // Messages now go to the new identity.
    let mut events = a.subscribe();
    let sent = a.send("Robert", "is this you?").await.expect("send");
    wait_state(&mut events, &sent.id, "delivered").await;

    for n in [alice, new_bob, relay] {
        n.shutdown().await;
    }
}
