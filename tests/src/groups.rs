//! Private groups on real nodes through a relay: five members, two of them offline while texts
//! and changes go by, who catch up from their mailboxes, each text shown once and each
//! writer's in order; a member removed, then handed envelopes sent after the removal (taken
//! from a mailbox) that their node cannot open; two admins renaming at once and every member
//! ending on the same name; changes forged by a plain member, and one forged in an admin's
//! name, changing nothing; a member made an admin who then adds and renames; the last admin's
//! leave refused unless forced.

use kolokol_node::{Error, Node, Role, RunningNode};
use kolokol_protocol::control::{Event, GroupText};
use kolokol_protocol::conversation::{Conversation, Randomness};
use kolokol_protocol::envelope;
use kolokol_protocol::group::{Action, GroupBody, GroupMessage, GroupOp, OpBody};
use kolokol_protocol::mailbox::{
    BlindedProof, Operation, Request, RequestV2, Response, mailbox_id, period_of,
};
use kolokol_protocol::message::{Body, Content};
use tokio::sync::broadcast;

use crate::support::{Net, TIMEOUT, introduce, raw_mailbox_requests, raw_mailbox_requests_v2};

/// Waits until `check` holds at `node`, looking again after each event of its stream: every
/// change to a group or its texts is announced, so nothing can change unseen.
async fn until(events: &mut broadcast::Receiver<Event>, mut check: impl FnMut() -> bool) {
    tokio::time::timeout(TIMEOUT, async {
        while !check() {
            match events.recv().await {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the node stopped"),
            }
        }
    })
    .await
    .expect("the group reached the expected state in time");
}

/// The group's name, status and member count at `node`.
fn group_at(node: &Node, id: &str) -> Option<(String, String, u32, u64)> {
    node.groups()
        .expect("groups")
        .into_iter()
        .find(|g| g.id == id)
        .map(|g| (g.name, g.status, g.members, g.changes))
}

fn texts(node: &Node, group: &str) -> Vec<GroupText> {
    node.group_messages(group, 1000).expect("messages").messages
}

/// A relay and `names.len()` users on it; the first is a contact of each of the others (who
/// do not know each other), creates a group called "family" and adds them all. Returns the
/// relay, its address, the users and the group id, once every one of them has joined.
async fn family(
    net: &Net,
    names: &[&str],
) -> (RunningNode, libp2p::Multiaddr, Vec<RunningNode>, String) {
    let (relay, relay_addr) = net.relay("relay").await;
    let mut users = Vec::new();
    for name in names {
        users.push(net.user(name, std::slice::from_ref(&relay_addr)).await);
    }
    for (i, user) in users.iter().enumerate().skip(1) {
        introduce(&users[0].node(), names[0], &user.node(), names[i]).await;
    }
    let mut subscriptions: Vec<_> = users.iter().map(|u| u.node().subscribe()).collect();
    let created = users[0].node().group_create("family", Some(names[0])).await.expect("create");
    let others: Vec<String> = names[1..].iter().map(|n| n.to_string()).collect();
    users[0].node().group_invite("family", &others, None, false).await.expect("invite");
    for (user, events) in users.iter().zip(subscriptions.iter_mut()) {
        let node = user.node();
        until(events, || {
            group_at(&node, &created.id).is_some_and(|(_, status, members, _)| {
                status == "member" && members == names.len() as u32
            })
        })
        .await;
    }
    (relay, relay_addr, users, created.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_across_a_relay_two_offline_catch_up_from_their_mailboxes() {
    let net = Net::new();
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let (relay, relay_addr, mut users, group) = family(&net, &names).await;
    // Every member sees all five, with names: contacts by their contact names, the others by
    // the names Alice listed them under.
    let members = users[1].node().group_members(&group).expect("members");
    let mut seen: Vec<&str> = members.members.iter().map(|m| m.name.as_str()).collect();
    seen.sort();
    assert_eq!(seen, names);
    assert!(members.members.iter().any(|m| m.name == "alice" && m.admin));

    // Dave and Erin go offline.
    let erin = users.pop().expect("erin");
    let dave = users.pop().expect("dave");
    dave.shutdown().await;
    erin.shutdown().await;
    let (alice, bob, carol) = (users[0].node(), users[1].node(), users[2].node());

    // Bob writes three texts, Carol one, Alice renames the group meanwhile.
    let mut bob_ids = Vec::new();
    for i in 1..=3 {
        let sent = bob.group_send(&group, &format!("bob {i}")).await.expect("send");
        assert_eq!(sent.recipients, 4);
        assert_eq!((sent.delivered, sent.stored), (2, 2), "{sent:?}");
        bob_ids.push(sent.id);
    }
    alice.group_rename(&group, "the family").await.expect("rename");
    let carol_sent = carol.send("the family", "carol here").await.expect("send by name");
    assert_eq!(carol_sent.state, "stored", "{:?}", carol_sent.detail);
    assert_eq!(
        carol_sent.detail.as_deref(),
        Some("delivered to 2 of 4 members; 2 stored in their mailboxes")
    );

    // Alice, online, has all four texts with their writers' names.
    let at_alice: Vec<(String, String)> =
        texts(&alice, &group).into_iter().map(|t| (t.from, t.text)).collect();
    assert_eq!(
        at_alice,
        [("bob", "bob 1"), ("bob", "bob 2"), ("bob", "bob 3"), ("carol", "carol here")]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );

    // Dave and Erin come back and catch up from their mailboxes: the rename and the texts,
    // each once, Bob's in his order.
    let mut back = Vec::new();
    for name in ["dave", "erin"] {
        let node = net.start(name, Role::Node, std::slice::from_ref(&relay_addr)).await;
        let mut events = node.node().subscribe();
        let n = node.node();
        until(&mut events, || {
            group_at(&n, &group).is_some_and(|(name, ..)| name == "the family")
                && texts(&n, &group).len() == 4
        })
        .await;
        // A second fetch finds nothing new, and nothing is shown twice.
        n.fetch_mailboxes().await;
        let got = texts(&n, &group);
        let bob_texts: Vec<&str> = got
            .iter()
            .filter(|t| t.from_peer_id == bob.peer_id().to_string())
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(bob_texts, ["bob 1", "bob 2", "bob 3"]);
        assert_eq!(got.iter().filter(|t| t.text == "carol here").count(), 1);
        assert!(got.iter().all(|t| t.missing_before == 0));
        // Dave is not Bob's contact: Bob shows under the name Alice listed him under.
        assert!(got.iter().any(|t| t.from == "bob"));
        assert_eq!(group_at(&n, &group).map(|g| g.2), Some(5));
        back.push(node);
    }
    // Bob's copies to Dave and Erin end delivered: their nodes answer what they fetched with
    // receipts (or Bob's next attempt reaches them directly).
    let mut events = bob.subscribe();
    until(&mut events, || {
        texts(&bob, &group).iter().filter(|t| t.from_me).all(|t| t.delivered == Some(4))
    })
    .await;
    for u in users.into_iter().chain(back) {
        u.shutdown().await;
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_obtains_what_is_sent_after_but_cannot_open_it() {
    let net = Net::new();
    let (relay, relay_addr, users, group) = family(&net, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (users[0].node(), users[1].node(), users[2].node());
    // Before the removal Carol reads the group.
    let mut carol_events = carol.subscribe();
    bob.group_send(&group, "before").await.expect("send");
    until(&mut carol_events, || texts(&carol, &group).iter().any(|t| t.text == "before")).await;

    alice.group_remove(&group, "carol").await.expect("remove");
    until(&mut carol_events, || {
        group_at(&carol, &group).is_some_and(|(_, status, ..)| status == "removed")
    })
    .await;
    let mut bob_events = bob.subscribe();
    until(&mut bob_events, || group_at(&bob, &group).is_some_and(|g| g.2 == 2)).await;

    // Alice goes offline, so Bob's next text waits for her, sealed, in her mailbox on the
    // relay; Carol, who runs that relay's disk, takes the envelope out and into her own
    // mailbox, and her node fetches it.
    // Her node's last handle goes with it, so the store is free for her next start.
    drop(alice);
    let mut users = users;
    users.remove(0).shutdown().await;
    let sent = bob.group_send(&group, "after the removal").await.expect("send");
    assert_eq!((sent.recipients, sent.stored), (1, 1), "Carol is no longer sent a copy");
    // Bob knows Alice's mailbox address (her version 2 invite): the copy is in her version 2
    // mailbox, which Carol opens with Alice's mailbox key, as Alice's node would.
    let alice_mailbox = net.mailbox_key("alice");
    let now = kolokol_node::clock::unix_secs();
    let (alice_box, proof) =
        BlindedProof::sign(&alice_mailbox, period_of(now), Operation::Fetch, now, &[])
            .expect("sign");
    let items = match raw_mailbox_requests_v2(
        &relay_addr,
        vec![RequestV2::Fetch { mailbox_id: alice_box, proof }],
    )
    .await
    .pop()
    {
        Some(Response::Items { items, .. }) => items,
        other => panic!("the relay answered {other:?}"),
    };
    assert!(!items.is_empty(), "the copy for Alice is in her mailbox");
    let carol_identity = net.identity("carol");
    let carol_box = mailbox_id(carol_identity.identity_key(), period_of(now));
    // With Carol's own keys: a conversation envelope names a receive key Carol never had, and
    // no envelope opens as a first contact to her.
    for item in &items {
        let header = envelope::peek(&item.envelope).expect("a header");
        if let Some(key_id) = header.key_id {
            assert!(!carol.receive_key_ids(&bob.peer_id()).expect("ids").contains(&key_id));
        }
        assert!(
            envelope::open_first_contact(
                carol_identity.device(),
                carol_identity.identity_key(),
                &item.envelope,
                now
            )
            .is_err()
        );
    }
    let deposits: Vec<Request> = items
        .iter()
        .enumerate()
        .map(|(i, item)| Request::Deposit {
            mailbox_id: carol_box,
            item_id: [0xc0 + i as u8; 16],
            envelope: item.envelope.clone(),
            expires_at: now + 3600,
        })
        .collect();
    assert!(
        raw_mailbox_requests(&relay_addr, deposits).await.iter().all(|r| *r == Response::Stored)
    );
    // Her node takes them (and drops them: they do not open), and shows nothing new.
    crate::support::fetch_until_taken(&carol, &relay.node(), &carol_box).await;
    let at_carol = texts(&carol, &group);
    assert!(at_carol.iter().all(|t| t.text != "after the removal"), "{at_carol:?}");
    assert!(carol.inbox(100).expect("inbox").iter().all(|m| m.text != "after the removal"));
    // Nor can Carol write to the group any more.
    assert!(carol.group_send(&group, "still here?").await.is_err());
    // Alice, back, reads it.
    let alice = net.start("alice", Role::Node, std::slice::from_ref(&relay_addr)).await;
    let mut events = alice.node().subscribe();
    let a = alice.node();
    until(&mut events, || texts(&a, &group).iter().any(|t| t.text == "after the removal")).await;
    for n in users.into_iter().chain([alice, relay]) {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_renames_by_two_admins_converge_everywhere() {
    let net = Net::new();
    let (relay, _, users, group) = family(&net, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (users[0].node(), users[1].node(), users[2].node());
    let mut subscriptions: Vec<_> = [&alice, &bob, &carol].iter().map(|n| n.subscribe()).collect();
    // Alice makes Bob an admin; everyone has the four changes (create, two adds, promotion).
    alice.group_invite(&group, &["bob".to_owned()], None, true).await.expect("promote");
    for (node, events) in [&alice, &bob, &carol].into_iter().zip(subscriptions.iter_mut()) {
        until(events, || group_at(node, &group).is_some_and(|g| g.3 == 4)).await;
    }
    assert!(bob.group_members(&group).expect("members").group.admin);

    // Both rename at once, each before seeing the other's.
    let (a, b) =
        tokio::join!(alice.group_rename(&group, "by alice"), bob.group_rename(&group, "by bob"));
    a.expect("alice renames");
    b.expect("bob renames");
    for (node, events) in [&alice, &bob, &carol].into_iter().zip(subscriptions.iter_mut()) {
        until(events, || group_at(node, &group).is_some_and(|g| g.3 == 6)).await;
    }
    let names: Vec<String> =
        [&alice, &bob, &carol].iter().map(|n| group_at(n, &group).expect("group").0).collect();
    assert!(names[0] == "by alice" || names[0] == "by bob", "{names:?}");
    assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
    for u in users.into_iter().chain([relay]) {
        u.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_forged_by_a_plain_member_change_nothing() {
    let net = Net::new();
    let (relay, relay_addr, users, group) = family(&net, &["alice", "bob", "carol"]).await;
    let bob = users[1].node();
    let before = bob.group_members(&group).expect("members");

    // Carol, a plain member, signs changes with her own key on top of the record's current
    // version, and one in Alice's name, seals them in an envelope to Bob herself, and leaves
    // it in his mailbox.
    let carol = net.identity("carol");
    let now = kolokol_node::clock::unix_secs();
    let group_id = kolokol_protocol::message::parse_id(&group).expect("a group id");
    let parents: Vec<[u8; 32]> = before.group.heads.iter().map(|h| hex32(h)).collect();
    let alice_key = *net.identity("alice").identity_key();
    let mallory = kolokol_protocol::identity::Identity::from_secrets([77; 32], [78; 32]);
    let mallory = kolokol_protocol::group::Member {
        certificate: mallory.certify(now - 60, now + 3600).expect("certificate"),
        name: "mallory".into(),
        admin: true,
    };
    let body = |author: [u8; 32], action| OpBody {
        group: group_id,
        lamport: before.group.version + 1,
        parents: parents.clone(),
        author,
        action,
    };
    let mine = *carol.identity_key();
    let mut in_alices_name =
        GroupOp::sign(&carol, body(mine, Action::Rename { name: "forged".into() })).expect("sign");
    in_alices_name.body.author = alice_key;
    let forged = vec![
        GroupOp::sign(&carol, body(mine, Action::Rename { name: "carol's now".into() }))
            .expect("sign"),
        GroupOp::sign(&carol, body(mine, Action::Add { member: mallory })).expect("sign"),
        GroupOp::sign(&carol, body(mine, Action::Remove { identity: alice_key })).expect("sign"),
        in_alices_name,
    ];
    let content = Content {
        id: [0x5a; 16],
        sent_at_ms: now * 1000,
        body: Body::Group(GroupMessage { group: group_id, body: GroupBody::Ops { ops: forged } }),
    };
    let bob_certificate = net.identity("bob").certify(now - 60, now + 3600).expect("cert");
    let carol_certificate = carol.certify(now - 60, now + 3600).expect("certificate");
    let mut conversation = Conversation::new(bob_certificate, now).expect("conversation");
    let random = Randomness::from_bytes([0x42; Randomness::LEN]);
    let sealed =
        conversation.seal(carol.device(), &carol_certificate, &content, random, now).expect("seal");
    let bob_key = kolokol_protocol::safety::identity_key(&bob.peer_id()).expect("key");
    let deposit = Request::Deposit {
        mailbox_id: mailbox_id(&bob_key, period_of(now)),
        item_id: [0x5a; 16],
        envelope: sealed,
        expires_at: now + 3600,
    };
    assert_eq!(raw_mailbox_requests(&relay_addr, vec![deposit]).await, [Response::Stored]);
    let mut events = bob.subscribe();
    crate::support::fetch_until_taken(&bob, &relay.node(), &mailbox_id(&bob_key, period_of(now)))
        .await;
    // The three well-signed changes are kept (Carol is a member, they are part of the record)
    // but take no effect; the one in Alice's name does not verify and is not kept.
    until(&mut events, || {
        bob.group_members(&group).is_ok_and(|m| m.group.changes == before.group.changes + 3)
    })
    .await;
    let after = bob.group_members(&group).expect("members");
    assert_eq!(after.group.name, "family");
    assert_eq!(after.members, before.members);
    for u in users.into_iter().chain([relay]) {
        u.shutdown().await;
    }
}

/// 32 bytes from 64 hex digits.
fn hex32(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

/// A member added by invite code, who is not a contact, is written to with what the invite
/// gives: its mailbox address, with which the member's presence part for contacts opens (its
/// bridges and current hybrid prekey), and a format 4 conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_by_invite_code_keeps_the_invites_mailbox_address() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = net.user("alice", std::slice::from_ref(&relay_addr)).await;
    let bob = net.user("bob", std::slice::from_ref(&relay_addr)).await;
    let code = bob.node().invite().await.expect("invite").invite;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (_, keys, bob_id) =
        kolokol_protocol::invite::Invite::from_text_with_keys(&code, now).expect("bob's invite");
    let mailbox = keys.expect("a version 2 invite").mailbox;
    alice.node().group_create("family", Some("alice")).await.expect("create");
    alice.node().group_invite("family", &[code], Some("bob"), false).await.expect("add bob");
    alice.shutdown().await;

    let store = kolokol_node::store::Store::open(&net.data_dir("alice").join("kolokol.db"))
        .expect("alice's store");
    let state = store.conversation(&bob_id).expect("read").expect("a conversation with bob");
    let conversation = Conversation::from_bytes(&state).expect("it decodes");
    assert_eq!(conversation.peer_mailbox(), Some(&mailbox));
    bob.shutdown().await;
    relay.shutdown().await;
}

/// Whether `peer` is an admin of the group at `node`.
fn is_admin_at(node: &Node, group: &str, peer: &str) -> bool {
    node.group_members(group)
        .is_ok_and(|m| m.members.iter().any(|member| member.peer_id == peer && member.admin))
}

/// What a refused group change says, or a panic naming what it was instead.
fn refusal<T: std::fmt::Debug>(outcome: Result<T, Error>) -> String {
    match outcome {
        Err(Error::GroupRefused(message)) => message,
        other => panic!("expected a group refusal, got {other:?}"),
    }
}

/// An admin makes a plain member an admin, with their entry as it was (certificate and listed
/// name): every member sees it, and the new admin adds someone and renames the group, which
/// they could not before. The first admin can then leave without force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_made_admin_adds_and_renames_and_the_first_admin_may_then_leave() {
    let net = Net::new();
    let (relay, relay_addr, users, group) = family(&net, &["alice", "bob", "carol"]).await;
    let dave = net.user("dave", std::slice::from_ref(&relay_addr)).await;
    let (alice, bob, carol) = (users[0].node(), users[1].node(), users[2].node());
    let nodes = [&alice, &bob, &carol];
    let mut subscriptions: Vec<_> = nodes.iter().map(|n| n.subscribe()).collect();
    let bob_id = bob.peer_id().to_string();
    let listed_before = carol.group_members(&group).expect("members").members;
    let dave_code = dave.node().invite().await.expect("invite").invite;

    // Before: Bob may not add or promote, and Alice is told exactly what is wrong.
    let by_bob = bob.group_invite(&group, std::slice::from_ref(&dave_code), Some("dave"), false);
    assert!(refusal(by_bob.await).contains("only an admin can add members"));
    assert!(refusal(bob.group_admin(&group, "me", true).await).contains("only an admin can"));
    assert!(refusal(alice.group_admin(&group, "dave", true).await).contains("not a member"));
    assert_eq!(
        refusal(alice.group_admin(&group, "bob", false).await),
        "bob is not an admin of \"family\""
    );

    let promoted = alice.group_admin(&group, "bob", true).await.expect("promote");
    assert_eq!((promoted.members, promoted.admins), (3, 2));
    assert_eq!(
        refusal(alice.group_admin(&group, "bob", true).await),
        "bob is already an admin of \"family\""
    );
    for (node, events) in nodes.iter().zip(subscriptions.iter_mut()) {
        until(events, || is_admin_at(node, &group, &bob_id)).await;
    }
    // Only the admin flag changed: Carol lists Bob under the same name and peer id.
    let listed_after = carol.group_members(&group).expect("members").members;
    let entry = |members: &[kolokol_protocol::control::GroupMember]| {
        members.iter().find(|m| m.peer_id == bob_id).map(|m| m.listed_as.clone())
    };
    assert_eq!(entry(&listed_after), entry(&listed_before));
    assert_eq!(entry(&listed_after).as_deref(), Some("bob"));

    // Bob, an admin now, adds Dave and renames the group; everyone, Dave too, sees both.
    let added = bob.group_invite(&group, &[dave_code], Some("dave"), false).await.expect("add");
    assert_eq!(added.members, 4);
    bob.group_rename(&group, "bob's family").await.expect("rename by bob");
    let dave_node = dave.node();
    let mut dave_events = dave_node.subscribe();
    for (node, events) in nodes
        .iter()
        .copied()
        .chain([&dave_node])
        .zip(subscriptions.iter_mut().chain([&mut dave_events]))
    {
        until(events, || {
            group_at(node, &group)
                .is_some_and(|(name, _, members, _)| name == "bob's family" && members == 4)
        })
        .await;
    }

    // Alice is no longer the last admin, so she leaves without force.
    let left = alice.group_leave(&group, false).await.expect("alice leaves");
    assert_eq!(left.status, "left");
    until(&mut subscriptions[1], || group_at(&bob, &group).is_some_and(|g| g.2 == 3)).await;
    assert!(bob.group_members(&group).expect("members").group.admin);
    for u in users.into_iter().chain([dave, relay]) {
        u.shutdown().await;
    }
}

/// The last admin's leave is refused while another member remains, and changes nothing; so is
/// giving up their admin rights; with force they leave, and the member left can no longer
/// rename. An admin made a plain member again counts as none. The only member leaves freely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_admin_leaves_only_by_force_while_others_remain() {
    let net = Net::new();
    let (relay, _, users, group) = family(&net, &["alice", "bob"]).await;
    let (alice, bob) = (users[0].node(), users[1].node());
    let mut bob_events = bob.subscribe();
    let bob_id = bob.peer_id().to_string();

    // Bob is made an admin and a plain member again: Alice is the last admin once more.
    alice.group_admin(&group, "bob", true).await.expect("promote");
    let demoted = alice.group_admin(&group, "bob", false).await.expect("demote");
    assert_eq!((demoted.members, demoted.admins), (2, 1));
    until(&mut bob_events, || group_at(&bob, &group).is_some_and(|g| g.3 == 4)).await;
    assert!(!is_admin_at(&bob, &group, &bob_id));

    let before = alice.group_members(&group).expect("members");
    let expected = "you are the last admin of \"family\": make another member an admin first \
        (kolokol group admin family NAME), or leave anyway with --force (then nobody can add, \
        remove or rename)";
    match alice.group_leave(&group, false).await {
        Err(e @ Error::LastAdmin { .. }) => assert_eq!(e.to_string(), expected),
        other => panic!("expected the last admin's leave refused, got {other:?}"),
    }
    match alice.group_remove(&group, "me").await {
        Err(Error::LastAdmin { group }) => assert_eq!(group, "family"),
        other => panic!("expected the last admin's leave refused, got {other:?}"),
    }
    assert!(refusal(alice.group_admin(&group, "me", false).await).contains("the last admin"));
    assert_eq!(alice.group_members(&group).expect("members"), before, "nothing changed");

    let left = alice.group_leave(&group, true).await.expect("forced leave");
    assert_eq!(left.status, "left");
    until(&mut bob_events, || group_at(&bob, &group).is_some_and(|g| g.2 == 1)).await;
    let alone = bob.group_members(&group).expect("members");
    assert_eq!(alone.group.admins, 0);
    assert!(refusal(bob.group_rename(&group, "ours").await).contains("only an admin can rename"));

    // A group's only member, its admin, leaves without force.
    alice.group_create("solo", None).await.expect("create");
    assert_eq!(alice.group_leave("solo", false).await.expect("leave solo").status, "left");
    for u in users.into_iter().chain([relay]) {
        u.shutdown().await;
    }
}
