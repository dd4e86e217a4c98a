//! Tests of the SQLite store on a real database file.

use kolokol_protocol::control::MessageState;
use libp2p::{Multiaddr, PeerId};

use crate::store::{
    ChunkOutcome, ContactRow, InboxRow, MAX_PARTIAL_MESSAGES, MAX_PARTIAL_MESSAGES_PER_PEER,
    MailboxDeposit, MailboxQuotas, OutboxBody, OutboxRow, PeerSource, Store,
};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
    (dir, store)
}

/// A peer id that stands for `name`: the same name gives the same peer in every test.
fn peer(name: &str) -> PeerId {
    let mut seed = [0u8; 32];
    for (byte, c) in seed.iter_mut().zip(name.bytes()) {
        *byte = c;
    }
    libp2p::identity::Keypair::ed25519_from_bytes(seed).expect("32 bytes").public().to_peer_id()
}

fn addr(text: &str) -> Multiaddr {
    text.parse().expect("a multiaddr")
}

fn contact(name: &str, who: &str) -> ContactRow {
    ContactRow {
        name: name.into(),
        peer_id: peer(who),
        device_key: [9; 32],
        addresses: vec![addr("/ip4/127.0.0.1/tcp/1")],
        added_at_ms: 5,
        verified_at_ms: None,
        invite: None,
        rekeyed: None,
    }
}

/// The states an outgoing item went through, oldest first.
fn history(s: &Store, id: &[u8; 16]) -> Vec<&'static str> {
    s.history(id).unwrap().into_iter().map(|h| h.0.as_str()).collect()
}

fn text(id: u8, created: u64) -> OutboxRow {
    OutboxRow {
        id: [id; 16],
        peer_id: peer("peer"),
        device_key: [1; 32],
        body: OutboxBody::Text(format!("m{id}")),
        created_at_ms: created,
        attempts: 0,
    }
}

#[test]
fn contacts_refuse_duplicate_names_and_peers() {
    let (_d, s) = store();
    s.add_contact(&contact("bob", "p1")).unwrap();
    assert!(
        s.add_contact(&contact("bob", "p2")).unwrap_err().to_string().contains("already exists")
    );
    assert!(s.add_contact(&contact("robert", "p1")).unwrap_err().to_string().contains("\"bob\""));
    assert_eq!(s.contact("bob").unwrap(), Some(contact("bob", "p1")));
    assert_eq!(s.contact_by_peer(&peer("p1")).unwrap().unwrap().name, "bob");
    assert_eq!(s.remove_contact("bob").unwrap().unwrap().name, "bob");
    assert_eq!(s.contacts().unwrap(), vec![]);
}

#[test]
fn a_contacts_name_is_found_by_its_peer_and_follows_a_rename() {
    let (_d, s) = store();
    assert_eq!(s.contact_name(&peer("p1")).unwrap(), None);
    s.add_contact(&contact("bob", "p1")).unwrap();
    assert_eq!(s.contact_name(&peer("p1")).unwrap().as_deref(), Some("bob"));
    assert_eq!(s.contact_name(&peer("p2")).unwrap(), None, "a stranger has no name");
    s.rename_contact("bob", "Robert").unwrap();
    assert_eq!(s.contact_name(&peer("p1")).unwrap().as_deref(), Some("Robert"));
    s.remove_contact("robert").unwrap();
    assert_eq!(s.contact_name(&peer("p1")).unwrap(), None);
}

#[test]
fn contact_names_ignore_case_but_keep_the_spelling_typed() {
    let (_d, s) = store();
    s.add_contact(&contact("Bob", "p1")).unwrap();
    let err = s.add_contact(&contact("bOB", "p2")).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
    let err =
        s.add_contact(&contact("Ärger", "p3")).map(|_| s.add_contact(&contact("äRGER", "p4")));
    assert!(err.unwrap().unwrap_err().to_string().contains("already exists"), "Unicode case too");
    for name in ["bob", "BOB", "Bob"] {
        assert_eq!(s.contact(name).unwrap().unwrap().name, "Bob", "{name}");
    }
    // A row from before version 11 has no folded name; opening the store gives it one.
    s.conn().execute("UPDATE contacts SET folded = '' WHERE name = 'Bob'", []).unwrap();
    assert!(s.contact("bob").unwrap().is_none());
    s.fold_names().unwrap();
    assert_eq!(s.contact("bob").unwrap().unwrap().name, "Bob");
    assert_eq!(s.recipient("bOb").unwrap(), Some((peer("p1"), [9; 32])));
    // Two names that differ only in case (possible before version 11): the exact spelling
    // finds its own, and any other spelling is refused rather than guessed.
    s.conn()
        .execute(
            "INSERT INTO contacts (name, peer_id, device_key, addresses, added_at_ms, folded)
             VALUES ('BOB', ?1, x'0707070707070707070707070707070707070707070707070707070707070707', '', 1, 'bob')",
            [peer("p9").to_string()],
        )
        .unwrap();
    assert_eq!(s.contact("BOB").unwrap().unwrap().peer_id, peer("p9"));
    assert_eq!(s.recipient("BOB").unwrap(), Some((peer("p9"), [7; 32])));
    assert_eq!(s.recipient("Bob").unwrap(), Some((peer("p1"), [9; 32])));
    for refused in [s.contact("bob").map(|_| ()), s.recipient("bob").map(|_| ())] {
        assert!(refused.unwrap_err().to_string().contains("different case"));
    }
    assert_eq!(s.recipient("nobody").unwrap(), None);
    assert_eq!(s.remove_contact("BOB").unwrap().unwrap().name, "BOB");
    assert_eq!(s.remove_contact("BOB").unwrap().unwrap().name, "Bob");
    assert!(s.contact("bob").unwrap().is_none());
}

#[test]
fn outbox_claims_items_so_no_two_passes_take_one() {
    let (_d, s) = store();
    s.enqueue(&text(1, 10), 10).unwrap();
    s.enqueue(&text(2, 20), 20).unwrap();
    assert_eq!(s.due(15, 1000).unwrap().len(), 1);
    assert_eq!(s.due(30, 1000).unwrap().iter().map(|r| r.id[0]).collect::<Vec<_>>(), vec![2]);
    assert!(s.due(999, 2000).unwrap().is_empty());
    assert_eq!(s.wake_all(50).unwrap(), 2);
    assert_eq!(s.due(50, 2000).unwrap().len(), 2);
}

#[test]
fn a_peer_coming_back_wakes_a_long_message_only_for_its_first_tries() {
    let (_d, s) = store();
    let long = "x".repeat(kolokol_protocol::chunk::MAX_UNCHUNKED_LEN + 1);
    s.enqueue(&OutboxRow { body: OutboxBody::Text(long), ..text(1, 10) }, 10).unwrap();
    s.enqueue(&text(2, 10), 10).unwrap();
    let limit = crate::store::outbox::WAKE_CHUNKED_ATTEMPTS;
    for id in [1, 2] {
        s.reschedule(&[id; 16], limit - 1, 1_000, "cut off").unwrap();
    }
    assert_eq!(s.wake_peer(&peer("peer"), 50).unwrap(), 2, "both, while the long one is new");
    for id in [1, 2] {
        s.reschedule(&[id; 16], limit, 1_000, "cut off").unwrap();
    }
    // Behind a volume freeze each try of the long one would fill the connection again (T10).
    assert_eq!(s.wake_peer(&peer("peer"), 50).unwrap(), 1, "the short one only");
    assert_eq!(s.due(50, 2000).unwrap().iter().map(|r| r.id[0]).collect::<Vec<_>>(), vec![2]);
    s.wake_all(60).unwrap();
    assert!(
        s.due(60, 3000).unwrap().iter().any(|r| r.id[0] == 1),
        "the node's own connectivity still wakes it"
    );
}

#[test]
fn messages_waiting_in_mailboxes_count_as_waiting_not_only_queued_ones() {
    let (_d, s) = store();
    for id in 1..=3 {
        s.enqueue(&text(id, 10), 10).unwrap();
    }
    s.enqueue(&OutboxRow { body: OutboxBody::Receipt([9; 16]), ..text(9, 10) }, 10).unwrap();
    s.set_state(&[1; 16], MessageState::Stored, Some("stored on 1 of 1"), 20).unwrap();
    s.set_state(&[2; 16], MessageState::Stored, Some("stored on 1 of 1"), 20).unwrap();
    assert_eq!(s.waiting_counts().unwrap(), (1, 2), "one queued, two in mailboxes; no receipt");
    s.set_state(&[2; 16], MessageState::Delivered, None, 30).unwrap();
    assert_eq!(s.waiting_counts().unwrap(), (1, 1));
}

/// A group send whose member copy the outbox loop took first reads that attempt's outcome
/// from here: it once read the view of the user's own texts, found nothing for a copy, and
/// answered `queued` for a copy already delivered.
#[test]
fn the_state_of_a_group_copy_is_read_like_a_texts() {
    let (_d, s) = store();
    s.enqueue(&text(1, 10), 10).unwrap();
    s.enqueue(&OutboxRow { body: OutboxBody::Group(vec![7; 40]), ..text(2, 10) }, 10).unwrap();
    assert_eq!(s.outgoing(&[2; 16]).unwrap(), None, "not one of the user's texts");
    assert_eq!(s.outbox_state(&[2; 16]).unwrap(), Some((MessageState::Queued, None)));
    s.set_states(&[2; 16], &[MessageState::Sent, MessageState::Delivered], None, 20).unwrap();
    assert_eq!(s.outbox_state(&[2; 16]).unwrap(), Some((MessageState::Delivered, None)));
    s.set_state(&[1; 16], MessageState::Stored, Some("stored on 1 of 1"), 20).unwrap();
    assert_eq!(
        s.outbox_state(&[1; 16]).unwrap(),
        Some((MessageState::Stored, Some("stored on 1 of 1".into())))
    );
    assert_eq!(s.outbox_state(&[3; 16]).unwrap(), None);
}

#[test]
fn ids_are_found_by_a_prefix_of_their_hex_digits() {
    let (_d, s) = store();
    let mut a = text(1, 10);
    a.id = [0xab, 0xcd, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
    let mut b = text(2, 10);
    b.id = [0xab, 0xce, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];
    s.enqueue(&a, 10).unwrap();
    s.enqueue(&b, 10).unwrap();
    // Receipts are not the user's messages and are never found.
    s.enqueue(&OutboxRow { body: OutboxBody::Receipt([9; 16]), ..text(0xab, 10) }, 10).unwrap();
    assert_eq!(s.outgoing_ids_with_prefix("ABCD", 2).unwrap(), vec![a.id]);
    assert_eq!(s.outgoing_ids_with_prefix("ABC", 2).unwrap().len(), 2);
    assert_eq!(s.outgoing_ids_with_prefix("ABCF", 2).unwrap(), Vec::<[u8; 16]>::new());
    let row = InboxRow {
        id: [0x5e; 16],
        peer_id: peer("p"),
        contact: None,
        text: "hi".into(),
        sent_at_ms: 1,
        received_at_ms: 1,
        read_at_ms: None,
        number: None,
    };
    let receipt = OutboxRow { body: OutboxBody::Receipt([0x5e; 16]), ..text(30, 1) };
    s.receive(&row, Some(&receipt), None).unwrap();
    assert_eq!(s.incoming_ids_with_prefix("5E5E", 2).unwrap(), vec![[0x5e; 16]]);
}

#[test]
fn states_move_forward_only_and_keep_a_history() {
    let (_d, s) = store();
    let row = text(1, 10);
    s.enqueue(&row, 10).unwrap();
    assert!(s.set_state(&row.id, MessageState::Sent, None, 11).unwrap());
    assert!(s.set_state(&row.id, MessageState::Delivered, None, 12).unwrap());
    assert!(
        !s.set_state(&row.id, MessageState::Sent, None, 13).unwrap(),
        "a late ack moved it back"
    );
    let history: Vec<&str> =
        s.history(&row.id).unwrap().into_iter().map(|h| h.0.as_str()).collect();
    assert_eq!(history, vec!["queued", "sent", "delivered"]);
    assert_eq!(s.queued_count().unwrap(), 0);

    // A stored message stays due for direct delivery, may become sent, and a late deposit
    // ack never moves a sent one back.
    let row = text(2, 20);
    s.enqueue(&row, 20).unwrap();
    assert!(s.set_state(&row.id, MessageState::Stored, Some("stored on 2 of 3"), 21).unwrap());
    s.reschedule(&row.id, 1, 30, "cannot reach").unwrap();
    assert_eq!(s.outgoing(&row.id).unwrap().unwrap().detail.as_deref(), Some("stored on 2 of 3"));
    assert_eq!(s.due(30, 100).unwrap().len(), 1, "a stored message is still retried");
    assert!(!s.set_state(&row.id, MessageState::Stored, Some("stored on 2 of 3"), 22).unwrap());
    assert!(s.set_state(&row.id, MessageState::Stored, Some("stored on 3 of 3"), 22).unwrap());
    assert!(s.set_state(&row.id, MessageState::Sent, None, 23).unwrap());
    assert!(
        !s.set_state(&row.id, MessageState::Stored, None, 24).unwrap(),
        "sent moved back to stored"
    );
    assert!(s.set_state(&row.id, MessageState::Delivered, None, 25).unwrap());
    let history: Vec<&str> =
        s.history(&row.id).unwrap().into_iter().map(|h| h.0.as_str()).collect();
    assert_eq!(history, vec!["queued", "stored", "stored", "sent", "delivered"]);
}

#[test]
fn read_ranks_above_delivered_and_is_final() {
    let (_d, s) = store();
    let states = |id: &[u8; 16]| history(&s, id);
    let row = text(1, 10);
    s.enqueue(&row, 10).unwrap();
    assert!(s.set_state(&row.id, MessageState::Sent, None, 11).unwrap());
    assert!(s.set_state(&row.id, MessageState::Delivered, None, 12).unwrap());
    assert!(!s.set_state(&row.id, MessageState::Failed, Some("expired"), 13).unwrap());
    assert!(s.set_state(&row.id, MessageState::Read, None, 14).unwrap());
    assert!(!s.set_state(&row.id, MessageState::Read, None, 15).unwrap(), "read twice");
    assert!(!s.set_state(&row.id, MessageState::Delivered, None, 16).unwrap(), "a late receipt");
    assert!(!s.set_state(&row.id, MessageState::Failed, Some("expired"), 17).unwrap());
    assert_eq!(states(&row.id), vec!["queued", "sent", "delivered", "read"]);
    assert_eq!(s.outgoing(&row.id).unwrap().unwrap().state, "read");

    // The delivery receipt was lost: read follows sent or stored directly, and ends retries.
    for (id, before) in [(2, MessageState::Sent), (3, MessageState::Stored)] {
        let row = text(id, 20);
        s.enqueue(&row, 20).unwrap();
        assert!(s.set_state(&row.id, before, None, 21).unwrap());
        assert!(s.set_state(&row.id, MessageState::Read, None, 22).unwrap());
        assert_eq!(states(&row.id), vec!["queued", before.as_str(), "read"]);
    }
    assert!(s.due(1000, 2000).unwrap().is_empty(), "a read message is retried");

    // A failed message stays failed.
    let row = text(4, 30);
    s.enqueue(&row, 30).unwrap();
    assert!(s.set_state(&row.id, MessageState::Failed, Some("refused"), 31).unwrap());
    assert!(!s.set_state(&row.id, MessageState::Read, None, 32).unwrap());
}

#[test]
fn reading_marks_once_and_queues_one_receipt_per_contact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kolokol.db");
    let received = |id: u8, who: &str| InboxRow {
        id: [id; 16],
        peer_id: peer(who),
        contact: None,
        text: format!("m{id}"),
        sent_at_ms: 1,
        received_at_ms: u64::from(id),
        read_at_ms: None,
        number: None,
    };
    let receipt = |id| OutboxRow { body: OutboxBody::Receipt([id; 16]), ..text(id, 1) };
    let mut next = 100u8;
    let mut new_id = || {
        next += 1;
        [next; 16]
    };
    {
        let s = Store::open(&path).unwrap();
        s.add_contact(&contact("alice", "friend")).unwrap();
        for (id, peer) in [(1, "friend"), (2, "friend"), (3, "stranger")] {
            assert!(s.receive(&received(id, peer), Some(&receipt(id + 10)), None).unwrap());
        }
        let (marked, receipts) =
            s.mark_read(&[[1; 16], [2; 16], [3; 16]], 50, true, &mut new_id).unwrap();
        assert_eq!(marked, 3);
        assert_eq!(receipts.len(), 1, "one receipt for the contact, none for the stranger");
        assert_eq!(receipts[0].peer_id, peer("friend"));
        assert_eq!(receipts[0].device_key, [9; 32]);
        assert_eq!(receipts[0].body, OutboxBody::Read(vec![[1; 16], [2; 16]]));
        // Reading again changes nothing and sends nothing.
        let (marked, receipts) =
            s.mark_read(&[[1; 16], [2; 16], [9; 16]], 60, true, &mut new_id).unwrap();
        assert_eq!((marked, receipts.len()), (0, 0));
        // Read receipts turned off: marked, nothing queued.
        assert!(s.receive(&received(4, "friend"), Some(&receipt(14)), None).unwrap());
        let (marked, receipts) = s.mark_read(&[[4; 16]], 70, false, &mut new_id).unwrap();
        assert_eq!((marked, receipts.len()), (1, 0));
    }
    // The read times and the queued read receipt survive reopening, and the receipt is due.
    let s = Store::open(&path).unwrap();
    let read: Vec<Option<u64>> = s.inbox(10).unwrap().iter().map(|m| m.read_at_ms).collect();
    assert_eq!(read, vec![Some(50), Some(50), Some(50), Some(70)]);
    let due = s.due(100, 200).unwrap();
    let reads: Vec<&OutboxBody> =
        due.iter().map(|r| &r.body).filter(|b| matches!(b, OutboxBody::Read(_))).collect();
    assert_eq!(reads, vec![&OutboxBody::Read(vec![[1; 16], [2; 16]])]);
}

const QUOTAS: MailboxQuotas = MailboxQuotas {
    items_per_mailbox: 3,
    bytes_per_mailbox: 10_000,
    items_per_depositor: 2,
    total_bytes: 1 << 20,
};

fn deposit(mailbox: u8, item: u8, depositor: &str, expires_at: u64) -> MailboxDeposit {
    MailboxDeposit {
        mailbox_id: [mailbox; 32],
        item_id: [item; 16],
        depositor: peer(depositor),
        envelope: vec![item; 1024],
        expires_at,
    }
}

#[test]
fn a_full_mailbox_refuses_with_a_reason_and_keeps_every_stored_item() {
    let (_d, s) = store();
    assert_eq!(s.mailbox_deposit(&deposit(1, 1, "alice", 100), &QUOTAS, 1).unwrap(), None);
    assert_eq!(s.mailbox_deposit(&deposit(1, 2, "alice", 100), &QUOTAS, 2).unwrap(), None);
    // A repeated deposit is acknowledged and stores nothing more.
    assert_eq!(s.mailbox_deposit(&deposit(1, 2, "alice", 100), &QUOTAS, 3).unwrap(), None);
    let per_sender = s.mailbox_deposit(&deposit(1, 3, "alice", 100), &QUOTAS, 4).unwrap();
    assert!(per_sender.unwrap().contains("most one sender may"));
    assert_eq!(s.mailbox_deposit(&deposit(1, 4, "carol", 100), &QUOTAS, 5).unwrap(), None);
    let full = s.mailbox_deposit(&deposit(1, 5, "dave", 100), &QUOTAS, 6).unwrap();
    assert!(full.unwrap().contains("mailbox is full"));
    // Another mailbox is unaffected, and the full one still holds exactly what it had.
    assert_eq!(s.mailbox_deposit(&deposit(2, 5, "dave", 100), &QUOTAS, 7).unwrap(), None);
    let (items, more) = s.mailbox_items(&[1; 32], 50, 10, 1 << 20).unwrap();
    let ids: Vec<u8> = items.iter().map(|(id, _)| id[0]).collect();
    assert_eq!((ids, more), (vec![1, 2, 4], false));
    assert_eq!(items[0].1, vec![1; 1024]);
}

#[test]
fn mailbox_items_come_in_bounded_batches_and_expired_ones_are_purged() {
    let (_d, s) = store();
    let roomy = MailboxQuotas { items_per_mailbox: 100, items_per_depositor: 100, ..QUOTAS };
    let roomy = MailboxQuotas { bytes_per_mailbox: 1 << 20, ..roomy };
    for i in 1..=5 {
        let expires = if i % 2 == 0 { 1_000 } else { 2_000 };
        assert_eq!(
            s.mailbox_deposit(&deposit(1, i, "alice", expires), &roomy, i.into()).unwrap(),
            None
        );
    }
    let (items, more) = s.mailbox_items(&[1; 32], 500, 2, 1 << 20).unwrap();
    assert_eq!((items.len(), more), (2, true));
    let (items, more) = s.mailbox_items(&[1; 32], 500, 10, 2048).unwrap();
    assert_eq!((items.len(), more), (2, true), "the byte budget bounds a batch too");
    // Expired items are never handed out, and the purge removes them for good.
    let (items, _) = s.mailbox_items(&[1; 32], 1_500, 10, 1 << 20).unwrap();
    assert_eq!(items.iter().map(|(id, _)| id[0]).collect::<Vec<_>>(), vec![1, 3, 5]);
    assert_eq!(s.mailbox_purge(1_500).unwrap(), 2);
    assert_eq!(s.mailbox_count(&[1; 32]).unwrap(), 3);
    assert_eq!(s.mailbox_delete(&[1; 32], &[[1; 16], [3; 16], [9; 16]]).unwrap(), 2);
    assert_eq!(s.mailbox_purge(2_001).unwrap(), 1);
    assert_eq!(s.mailbox_count(&[1; 32]).unwrap(), 0);
}

#[test]
fn inbox_deduplicates_per_sender_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kolokol.db");
    let row = InboxRow {
        id: [3; 16],
        peer_id: peer("p1"),
        contact: None,
        text: "hi".into(),
        sent_at_ms: 1,
        received_at_ms: 2,
        read_at_ms: None,
        number: None,
    };
    {
        let s = Store::open(&path).unwrap();
        let receipt = |id| OutboxRow { body: OutboxBody::Receipt([3; 16]), ..text(id, 1) };
        assert!(s.receive(&row, Some(&receipt(10)), None).unwrap());
        // A repeat queues a receipt only if none with its id is there: the node derives a
        // receipt's id from the message, so a message fetched again gets no second one.
        assert!(!s.receive(&row, None, None).unwrap());
        assert!(!s.receive(&row, Some(&receipt(10)), None).unwrap());
        assert!(!s.receive(&row, Some(&receipt(11)), None).unwrap());
        assert!(s.receive(&InboxRow { peer_id: peer("p2"), ..row.clone() }, None, None).unwrap());
        let due: Vec<u8> = s.due(100, 200).unwrap().iter().map(|r| r.id[0]).collect();
        assert_eq!(due, vec![10, 11]);
        assert_eq!(s.history(&receipt(10).id).unwrap().len(), 1, "one history for one row");
        assert_eq!(s.queued_count().unwrap(), 0, "receipts are not the user's queued messages");
    }
    let s = Store::open(&path).unwrap();
    s.add_contact(&contact("alice", "p1")).unwrap();
    let inbox = s.inbox(10).unwrap();
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0].contact.as_deref(), Some("alice"));
}

#[test]
fn the_inbox_lists_messages_in_the_order_they_were_written_not_as_they_arrived() {
    let (_d, s) = store();
    // A sender restarted with messages queued and in the mailbox: they arrive 5, 1, 4, 3, 2.
    for (arrival, written) in [5u8, 1, 4, 3, 2].into_iter().enumerate() {
        let row = InboxRow {
            id: [written; 16],
            peer_id: peer("writer"),
            contact: None,
            text: format!("message {written}"),
            sent_at_ms: 1000 + u64::from(written),
            received_at_ms: 5000 + arrival as u64,
            read_at_ms: None,
            number: None,
        };
        let receipt =
            OutboxRow { body: OutboxBody::Receipt([written; 16]), ..text(100 + written, 1) };
        assert!(s.receive(&row, Some(&receipt), None).unwrap());
    }
    let texts: Vec<String> = s.inbox(10).unwrap().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["message 1", "message 2", "message 3", "message 4", "message 5"]);
}

#[test]
fn the_peer_cache_merges_addresses_keeps_relays_first_and_is_bounded() {
    let (_d, s) = store();
    s.peer_seen(&peer("a"), &addr("/ip4/127.0.0.1/tcp/1"), false, 10).unwrap();
    s.peer_seen(&peer("r"), &addr("/ip4/127.0.0.1/tcp/2"), true, 5).unwrap();
    s.peer_seen(&peer("a"), &addr("/ip4/127.0.0.1/tcp/3"), false, 20).unwrap();
    s.peer_imported(&peer("b"), &[addr("/ip4/127.0.0.1/tcp/4")], false, 30).unwrap();
    let peers = s.cached_peers(10).unwrap();
    let order: Vec<PeerId> = peers.iter().map(|p| p.peer_id).collect();
    assert_eq!(order, [peer("r"), peer("a"), peer("b")]);
    assert_eq!(peers[1].addresses, [addr("/ip4/127.0.0.1/tcp/3"), addr("/ip4/127.0.0.1/tcp/1")]);
    assert_eq!(peers[1].last_success_ms, Some(20));
    assert_eq!(peers[2].last_success_ms, None);
    assert_eq!(peers[2].source, PeerSource::Bundle);
    for i in 0..crate::store::MAX_CACHED_PEERS + 5 {
        s.peer_seen(&peer(&format!("p{i}")), &addr("/ip4/127.0.0.1/tcp/9"), false, 100 + i as u64)
            .unwrap();
    }
    assert_eq!(s.cached_peers(10_000).unwrap().len(), crate::store::MAX_CACHED_PEERS);
}

#[test]
fn a_fresh_import_survives_a_full_cache() {
    let (_d, s) = store();
    for i in 0..crate::store::MAX_CACHED_PEERS {
        s.peer_seen(&peer(&format!("p{i}")), &addr("/ip4/127.0.0.1/tcp/9"), false, 100 + i as u64)
            .unwrap();
    }
    s.peer_imported(&peer("fresh"), &[addr("/ip4/127.0.0.1/tcp/4")], false, 10_000).unwrap();
    let cached = s.cached_peers(10_000).unwrap();
    assert_eq!(cached.len(), crate::store::MAX_CACHED_PEERS);
    assert!(cached.iter().any(|p| p.peer_id == peer("fresh")), "the import was evicted at once");
    assert!(!cached.iter().any(|p| p.peer_id == peer("p0")), "the oldest success should go first");
}

#[test]
fn chunks_are_kept_once_completed_in_order_bounded_and_purged() {
    let (_dir, store) = store();
    let add = |who: &str, id: u8, index: u32, sent: u64, now: u64| {
        store
            .add_chunk(&peer(who), &[id; 16], index, 3, 150_000, sent, &[index as u8; 4], now)
            .unwrap()
    };
    assert_eq!(add("p", 1, 2, 10, 100), ChunkOutcome::Kept);
    // A repeat changes nothing; a chunk that disagrees with its message is refused.
    assert_eq!(add("p", 1, 2, 10, 100), ChunkOutcome::Kept);
    assert_eq!(add("p", 1, 1, 11, 100), ChunkOutcome::Inconsistent);
    assert_eq!(add("p", 1, 0, 10, 100), ChunkOutcome::Kept);
    assert_eq!(
        add("p", 1, 1, 10, 100),
        ChunkOutcome::Complete(vec![vec![0; 4], vec![1; 4], vec![2; 4]])
    );
    // Stored whole, then a late repeat of a chunk: nothing is kept again.
    let row = InboxRow {
        id: [1; 16],
        peer_id: peer("p"),
        contact: None,
        text: "whole".into(),
        sent_at_ms: 10,
        received_at_ms: 100,
        read_at_ms: None,
        number: None,
    };
    let receipt = OutboxRow { body: OutboxBody::Receipt([1; 16]), ..text(99, 1) };
    assert!(store.receive(&row, Some(&receipt), None).unwrap());
    store.delete_chunks(&peer("p"), &[1; 16]).unwrap();
    assert_eq!(add("p", 1, 2, 10, 100), ChunkOutcome::AlreadyReceived);

    // Partial messages are bounded per peer and in all; what is kept stays kept.
    for id in 0..MAX_PARTIAL_MESSAGES_PER_PEER as u8 {
        assert_eq!(add("p", id + 2, 0, 10, 100), ChunkOutcome::Kept);
    }
    assert_eq!(add("p", 200, 0, 10, 100), ChunkOutcome::Full);
    assert_eq!(add("p", 2, 1, 10, 100), ChunkOutcome::Kept, "a started message goes on");
    for peer in 0..MAX_PARTIAL_MESSAGES - MAX_PARTIAL_MESSAGES_PER_PEER {
        assert_eq!(add(&format!("q{peer}"), 1, 0, 10, 200), ChunkOutcome::Kept);
    }
    assert_eq!(add("fresh", 1, 0, 10, 200), ChunkOutcome::Full);

    // The purge drops messages begun before the cut, whole, and nothing newer.
    assert_eq!(store.purge_chunks(150).unwrap(), MAX_PARTIAL_MESSAGES_PER_PEER as usize + 1);
    assert_eq!(add("fresh", 1, 0, 10, 300), ChunkOutcome::Kept);
    assert_eq!(add("q0", 1, 1, 10, 300), ChunkOutcome::Kept);
}

#[test]
fn a_message_and_the_conversation_state_it_was_opened_or_sealed_with_commit_together() {
    let (_d, s) = store();
    let state = [5u8; 40];
    let ids = [[1u8; 8], [2u8; 8]];
    let write = crate::store::ConversationWrite {
        peer: &peer("p"),
        state: &state,
        key_ids: Some(&ids),
        rekeyed: None,
    };
    let row = InboxRow {
        id: [9; 16],
        peer_id: peer("p"),
        contact: None,
        text: "hi".into(),
        sent_at_ms: 1,
        received_at_ms: 2,
        read_at_ms: None,
        number: None,
    };
    assert!(s.receive(&row, None, Some(&write)).unwrap());
    assert_eq!(s.conversation(&peer("p")).unwrap().as_deref().map(Vec::as_slice), Some(&state[..]));
    assert_eq!(s.peer_for_key(&[2; 8]).unwrap(), Some(peer("p")));

    let sealed = [6u8; 40];
    let write = crate::store::ConversationWrite {
        peer: &peer("p"),
        state: &sealed,
        key_ids: None,
        rekeyed: None,
    };
    s.enqueue_sealed(&text(3, 30), 30, Some(&write), &[(0, vec![7; 1024])]).unwrap();
    assert_eq!(
        s.conversation(&peer("p")).unwrap().as_deref().map(Vec::as_slice),
        Some(&sealed[..])
    );
    assert_eq!(s.receive_key_ids(&peer("p")).unwrap(), ids, "the key index stays");
    assert_eq!(s.due(30, 40).unwrap().len(), 1);
    assert_eq!(s.parts(&[3; 16]).unwrap().len(), 1, "the envelope commits with its row");
}

#[test]
fn parts_are_kept_until_done_acknowledged_ones_stay_and_only_the_rest_is_resealed() {
    let (_d, s) = store();
    let row = text(4, 10);
    s.enqueue(&row, 10).unwrap();
    let parts: Vec<(u32, Vec<u8>)> = (0..3).map(|i| (i, vec![i as u8; 65_535])).collect();
    s.put_parts(&row.id, &parts, None, 11).unwrap();
    s.ack_part(&row.id, 1, 12).unwrap();
    let kept = s.parts(&row.id).unwrap();
    assert_eq!(
        kept.iter().map(|p| (p.index, p.acked)).collect::<Vec<_>>(),
        [(0, false), (1, true), (2, false)]
    );
    assert_eq!(kept[2].envelope, vec![2u8; 65_535]);
    assert_eq!(kept[0].sealed_at_ms, 11);

    // Sealed anew, the unacknowledged parts are replaced and the acknowledged one is not.
    assert_eq!(s.drop_unacked_parts(&row.id).unwrap(), 2);
    let resealed: Vec<(u32, Vec<u8>)> = (0..3).map(|i| (i, vec![9; 1024])).collect();
    s.put_parts(&row.id, &resealed, None, 20).unwrap();
    let kept = s.parts(&row.id).unwrap();
    assert_eq!(kept[1].envelope, vec![1u8; 65_535], "an acknowledged part is never replaced");
    assert_eq!(kept[0].envelope, vec![9u8; 1024]);

    // Parts of an item that is no longer waiting are purged; a waiting one's stay.
    let done = text(5, 10);
    s.enqueue(&done, 10).unwrap();
    s.put_parts(&done.id, &[(0, vec![1; 1024])], None, 11).unwrap();
    s.set_state(&done.id, MessageState::Sent, None, 12).unwrap();
    assert_eq!(s.purge_parts().unwrap(), 1);
    assert_eq!(s.parts(&row.id).unwrap().len(), 3);
    s.drop_parts(&row.id).unwrap();
    assert!(s.parts(&row.id).unwrap().is_empty());
}

#[test]
fn an_acknowledged_item_loses_its_parts_and_enters_its_states_together() {
    let (_d, s) = store();
    let row = text(6, 10);
    s.enqueue_sealed(&row, 10, None, &[(0, vec![6; 1024])]).unwrap();
    let entered =
        s.acknowledged(&row.id, &[MessageState::Sent, MessageState::Delivered], 12).unwrap();
    assert_eq!(entered, [MessageState::Sent, MessageState::Delivered]);
    assert!(s.parts(&row.id).unwrap().is_empty(), "the parts go with the acknowledgement");
    assert_eq!(s.outgoing(&row.id).unwrap().unwrap().state, MessageState::Delivered);
    // Acknowledged again (a late duplicate), it enters nothing and stays as it is.
    assert!(s.acknowledged(&row.id, &[MessageState::Sent], 13).unwrap().is_empty());
    assert_eq!(s.outgoing(&row.id).unwrap().unwrap().state, MessageState::Delivered);
}

#[test]
fn acknowledgements_in_one_transaction_are_each_recorded_as_alone() {
    let (_d, s) = store();
    let (a, b, c) = (text(7, 10), text(8, 10), text(9, 10));
    for row in [&a, &b, &c] {
        s.enqueue_sealed(row, 10, None, &[(0, vec![row.id[0]; 1024])]).unwrap();
    }
    // `c` is already delivered: it enters nothing, and the others are not held up by it.
    s.acknowledged(&c.id, &[MessageState::Sent, MessageState::Delivered], 11).unwrap();
    let both: &[MessageState] = &[MessageState::Sent, MessageState::Delivered];
    let entered = s
        .acknowledged_many(&[
            (a.id, both, 12),
            (b.id, &[MessageState::Sent], 13),
            (c.id, both, 14),
            ([99; 16], both, 15),
        ])
        .unwrap();
    assert_eq!(
        entered,
        [both.to_vec(), vec![MessageState::Sent], vec![], vec![]],
        "each item enters its own states; an unknown or finished one enters none"
    );
    for (row, state) in [(&a, MessageState::Delivered), (&b, MessageState::Sent)] {
        assert!(s.parts(&row.id).unwrap().is_empty(), "the parts go with the acknowledgement");
        assert_eq!(s.outgoing(&row.id).unwrap().unwrap().state, state);
    }
    let at: Vec<u64> = s.history(&b.id).unwrap().into_iter().map(|h| h.2).collect();
    assert_eq!(at, [10, 13], "each state is dated by its own acknowledgement");
}

#[test]
fn endpoint_records_are_replaced_in_place_and_bounded() {
    use crate::store::{EndpointRow, MAX_ENDPOINT_ROWS};
    let (_d, s) = store();
    let row = |i: u64, success: Option<u64>| EndpointRow {
        network: [1; 8],
        address: addr(&format!("/ip4/10.2.{}.{}/tcp/4001", i / 250, i % 250)),
        peer_id: peer("relay"),
        successes: u32::from(success.is_some()),
        failures: u32::from(success.is_none()),
        last_success_ms: success,
        last_failure_ms: success.is_none().then_some(i),
    };
    s.save_endpoint(&row(0, None)).unwrap();
    s.save_endpoint(&row(0, Some(5))).unwrap();
    assert_eq!(s.endpoints().unwrap(), vec![row(0, Some(5))]);
    for i in 1..=MAX_ENDPOINT_ROWS as u64 {
        s.save_endpoint(&row(i, Some(10 + i))).unwrap();
    }
    let kept = s.endpoints().unwrap();
    assert_eq!(kept.len(), MAX_ENDPOINT_ROWS);
    assert_eq!(kept[0], row(MAX_ENDPOINT_ROWS as u64, Some(10 + MAX_ENDPOINT_ROWS as u64)));
    assert!(!kept.contains(&row(0, Some(5))), "the one used longest ago went");
}

#[test]
fn a_keyed_store_is_sqlcipher_with_memory_security_on() {
    let dir = tempfile::tempdir().unwrap();
    let key = crate::store_key::StoreKey::from_bytes([7; 32]);
    let store = Store::open_keyed(&dir.path().join("kolokol.db"), Some(&key)).unwrap();
    let pragma = |name: &str| -> String {
        store.conn().query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap()
    };
    assert!(pragma("cipher_version").starts_with('4'), "SQLCipher 4");
    assert_eq!(pragma("cipher_memory_security"), "1", "freed memory is wiped");
}

#[test]
fn a_receipt_that_overtakes_the_acknowledgement_records_sent_too() {
    let (_d, s) = store();
    let states = |id: &[u8; 16]| history(&s, id);
    // Still queued (the attempt that carried it has not recorded its acknowledgement yet).
    let row = text(1, 10);
    s.enqueue(&row, 10).unwrap();
    assert_eq!(
        s.receipt_delivered(&row.id, 11).unwrap(),
        [MessageState::Sent, MessageState::Delivered]
    );
    assert!(
        s.acknowledged(&row.id, &[MessageState::Sent, MessageState::Delivered], 12)
            .unwrap()
            .is_empty()
    );
    assert_eq!(states(&row.id), ["queued", "sent", "delivered"]);
    // Stored in a mailbox and fetched from there: delivered, never sent.
    let row = text(2, 20);
    s.enqueue(&row, 20).unwrap();
    assert!(s.set_state(&row.id, MessageState::Stored, Some("stored on 2 of 3"), 21).unwrap());
    assert_eq!(s.receipt_delivered(&row.id, 22).unwrap(), [MessageState::Delivered]);
    assert_eq!(states(&row.id), ["queued", "stored", "delivered"]);
}

#[test]
fn a_peer_text_is_its_base58_whichever_peers_came_before() {
    let peers: Vec<PeerId> =
        (0..3 * super::PEER_TEXTS_REMEMBERED).map(|_| PeerId::random()).collect();
    // Each new, then each again (remembered or pushed out), in two orders.
    for round in 0..2 {
        for (i, peer) in peers.iter().enumerate() {
            let peer = if round == 0 { peer } else { &peers[peers.len() - 1 - i] };
            assert_eq!(super::peer_text(peer), peer.to_base58());
            assert_eq!(super::peer_text(peer), peer.to_base58());
        }
    }
}

#[test]
fn a_version_14_database_keeps_each_items_states_in_order_and_adds_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kolokol.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        super::schema::migrate_to(&conn, 0, 14).unwrap();
        conn.execute_batch(
            "INSERT INTO outbox (id, peer_id, device_key, kind, text, state, created_at_ms,
                                 next_attempt_ms)
             VALUES (x'01010101010101010101010101010101', 'p', x'00', 'text', 'a', 'stored', 1, 50),
                    (x'02020202020202020202020202020202', 'p', x'00', 'text', 'b', 'delivered', 1, 9);
             INSERT INTO message_states (id, state, detail, at_ms) VALUES
                 (x'01010101010101010101010101010101', 'queued', NULL, 1),
                 (x'02020202020202020202020202020202', 'queued', NULL, 1),
                 (x'01010101010101010101010101010101', 'stored', 'on 1 of 3', 2),
                 (x'02020202020202020202020202020202', 'sent', NULL, 2),
                 (x'01010101010101010101010101010101', 'stored', 'on 2 of 3', 2),
                 (x'02020202020202020202020202020202', 'delivered', NULL, 3);
             PRAGMA user_version = 14;",
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    let stored = s.history(&[1; 16]).unwrap();
    let details: Vec<_> = stored.iter().map(|h| (h.0.as_str(), h.1.as_deref(), h.2)).collect();
    assert_eq!(
        details,
        vec![
            ("queued", None, 1),
            ("stored", Some("on 1 of 3"), 2),
            ("stored", Some("on 2 of 3"), 2)
        ],
        "two states of one millisecond keep the order they were entered in"
    );
    assert_eq!(history(&s, &[2; 16]), vec!["queued", "sent", "delivered"]);
    assert!(s.set_state(&[1; 16], MessageState::Delivered, None, 4).unwrap());
    assert_eq!(history(&s, &[1; 16]), vec!["queued", "stored", "stored", "delivered"]);
    assert_eq!(s.next_due().unwrap(), None, "a delivered item is not due");
}

#[test]
fn the_items_to_send_are_found_from_their_index() {
    let (_d, s) = store();
    for id in 0..50u8 {
        let row = text(id, u64::from(id));
        s.enqueue(&row, 100).unwrap();
        if id % 10 != 0 {
            s.set_state(&row.id, MessageState::Delivered, None, 200).unwrap();
        }
    }
    assert_eq!(s.queued_count().unwrap(), 5);
    assert_eq!(s.waiting_counts().unwrap(), (5, 0));
    assert_eq!(s.next_due().unwrap(), Some(100));
    assert_eq!(s.due(100, 1_000).unwrap().len(), 5);
    let conn = s.connection_for_tests();
    for query in [
        super::outbox::DUE_ITEMS,
        super::outbox::NEXT_DUE,
        super::outbox::WAITING_COUNTS,
        super::outbox::QUEUED_COUNT,
    ] {
        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {query}")).unwrap();
        let bound = [100i64, 10].into_iter().take(explain.parameter_count());
        let plan: Vec<String> = explain
            .query_map(rusqlite::params_from_iter(bound), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(plan.iter().any(|step| step.contains("INDEX outbox_due")), "{query}: {plan:?}");
        assert!(!plan.iter().any(|step| step.starts_with("SCAN outbox")), "{query}: {plan:?}");
    }
}

#[test]
fn the_newest_hybrid_prekey_is_read_again_after_every_change_of_its_table() {
    use kolokol_protocol::prekey::{HybridPrekey, HybridPrekeySecret};
    let (_d, s) = store();
    let identity = kolokol_protocol::identity::Identity::from_secrets([4; 32], [5; 32]);
    let hybrid = |seed: u8, created: u64, expires: u64| {
        let secret = HybridPrekeySecret {
            x25519: zeroize::Zeroizing::new([seed; 32]),
            kem_seed: zeroize::Zeroizing::new([seed; kolokol_protocol::kem::SEED_LEN]),
        };
        let prekey = HybridPrekey::sign(&identity, &secret, created, expires).unwrap();
        s.save_hybrid_prekey(&[seed; 8], &secret, &prekey).unwrap();
        prekey
    };
    assert_eq!(s.newest_hybrid_prekey().unwrap(), None);
    let old = hybrid(1, 10, 1_000);
    assert_eq!(s.newest_hybrid_prekey().unwrap(), Some(old.clone()), "read after the first save");
    let new = hybrid(2, 20, 100);
    assert_eq!(s.newest_hybrid_prekey().unwrap(), Some(new), "a newer one replaces it");
    assert_eq!(s.delete_prekeys_expired_before(500).unwrap(), 1);
    assert_eq!(s.newest_hybrid_prekey().unwrap(), Some(old), "the newest deleted, the one left");
    assert_eq!(s.delete_prekeys_expired_before(5_000).unwrap(), 1);
    assert_eq!(s.newest_hybrid_prekey().unwrap(), None);
}

#[test]
fn acknowledging_a_part_leaves_secure_delete_on_whether_or_not_the_deletion_failed() {
    let (_d, s) = store();
    let secure_delete =
        || -> i64 { s.conn().query_row("PRAGMA secure_delete", [], |r| r.get(0)).unwrap() };
    assert_eq!(secure_delete(), 1, "the store opens with secure delete on");
    // A sealed text spills into an overflow page, the page the relaxed deletion does not zero.
    let row = text(10, 10);
    s.enqueue_sealed(&row, 10, None, &[(0, vec![6; 4 * 1024 + 200])]).unwrap();
    s.acknowledged(&row.id, &[MessageState::Sent], 11).unwrap();
    assert!(s.parts(&row.id).unwrap().is_empty());
    assert_eq!(secure_delete(), 1, "on again after the parts went");

    let failing = text(11, 10);
    s.enqueue_sealed(&failing, 10, None, &[(0, vec![7; 4 * 1024 + 200])]).unwrap();
    s.conn()
        .execute_batch(
            "CREATE TEMP TRIGGER refuse BEFORE DELETE ON outbox_parts
                 BEGIN SELECT RAISE(ABORT, 'refused for the test'); END;",
        )
        .unwrap();
    let e = s.acknowledged(&failing.id, &[MessageState::Sent], 12).unwrap_err();
    assert!(e.to_string().contains("refused for the test"), "{e}");
    assert_eq!(secure_delete(), 1, "on again after a deletion that failed");
    assert_eq!(s.parts(&failing.id).unwrap().len(), 1, "nothing of the failed one went");
}
