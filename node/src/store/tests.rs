//! Tests of the SQLite store on a real database file.

use crate::store::{ContactRow, InboxRow, OutboxBody, OutboxRow, Store, state};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
    (dir, store)
}

fn contact(name: &str, peer: &str) -> ContactRow {
    ContactRow {
        name: name.into(),
        peer_id: peer.into(),
        device_key: [9; 32],
        addresses: vec!["/ip4/127.0.0.1/tcp/1".into()],
        added_at_ms: 5,
    }
}

fn text(id: u8, created: u64) -> OutboxRow {
    OutboxRow {
        id: [id; 16],
        peer_id: "peer".into(),
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
    assert_eq!(s.contact_by_peer("p1").unwrap().unwrap().name, "bob");
    assert_eq!(s.remove_contact("bob").unwrap().unwrap().name, "bob");
    assert_eq!(s.contacts().unwrap(), vec![]);
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
fn states_move_forward_only_and_keep_a_history() {
    let (_d, s) = store();
    let row = text(1, 10);
    s.enqueue(&row, 10).unwrap();
    assert!(s.set_state(&row.id, state::SENT, None, 11).unwrap());
    assert!(s.set_state(&row.id, state::DELIVERED, None, 12).unwrap());
    assert!(!s.set_state(&row.id, state::SENT, None, 13).unwrap(), "a late ack moved it back");
    let history: Vec<String> = s.history(&row.id).unwrap().into_iter().map(|h| h.0).collect();
    assert_eq!(history, vec!["queued", "sent", "delivered"]);
    assert_eq!(s.queued_count().unwrap(), 0);
}

#[test]
fn inbox_deduplicates_per_sender_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kolokol.db");
    let row = InboxRow {
        id: [3; 16],
        peer_id: "p1".into(),
        contact: None,
        text: "hi".into(),
        sent_at_ms: 1,
        received_at_ms: 2,
    };
    {
        let s = Store::open(&path).unwrap();
        let receipt = |id| OutboxRow { body: OutboxBody::Receipt([3; 16]), ..text(id, 1) };
        assert!(s.receive(&row, &receipt(10)).unwrap());
        assert!(!s.receive(&row, &receipt(11)).unwrap());
        assert!(
            s.receive(&InboxRow { peer_id: "p2".into(), ..row.clone() }, &receipt(12)).unwrap()
        );
        // One receipt per new message, queued with it; none for the duplicate.
        let due: Vec<u8> = s.due(100, 200).unwrap().iter().map(|r| r.id[0]).collect();
        assert_eq!(due, vec![10, 12]);
        assert_eq!(s.queued_count().unwrap(), 0, "receipts are not the user's queued messages");
    }
    let s = Store::open(&path).unwrap();
    s.add_contact(&contact("alice", "p1")).unwrap();
    let inbox = s.inbox(10).unwrap();
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0].contact.as_deref(), Some("alice"));
}

#[test]
fn the_peer_cache_merges_addresses_keeps_relays_first_and_is_bounded() {
    let (_d, s) = store();
    s.peer_seen("a", "/ip4/127.0.0.1/tcp/1", false, 10).unwrap();
    s.peer_seen("r", "/ip4/127.0.0.1/tcp/2", true, 5).unwrap();
    s.peer_seen("a", "/ip4/127.0.0.1/tcp/3", false, 20).unwrap();
    s.peer_imported("b", &["/ip4/127.0.0.1/tcp/4".into()], false, 30).unwrap();
    let peers = s.cached_peers(10).unwrap();
    let order: Vec<&str> = peers.iter().map(|p| p.peer_id.as_str()).collect();
    assert_eq!(order, ["r", "a", "b"]);
    assert_eq!(peers[1].addresses, ["/ip4/127.0.0.1/tcp/3", "/ip4/127.0.0.1/tcp/1"]);
    assert_eq!(peers[1].last_success_ms, Some(20));
    assert_eq!(peers[2].last_success_ms, None);
    assert_eq!(peers[2].source, "bundle");
    for i in 0..crate::store::MAX_CACHED_PEERS + 5 {
        s.peer_seen(&format!("p{i}"), "/ip4/127.0.0.1/tcp/9", false, 100 + i as u64).unwrap();
    }
    assert_eq!(s.cached_peers(10_000).unwrap().len(), crate::store::MAX_CACHED_PEERS);
}

#[test]
fn a_fresh_import_survives_a_full_cache() {
    let (_d, s) = store();
    for i in 0..crate::store::MAX_CACHED_PEERS {
        s.peer_seen(&format!("p{i}"), "/ip4/127.0.0.1/tcp/9", false, 100 + i as u64).unwrap();
    }
    s.peer_imported("fresh", &["/ip4/127.0.0.1/tcp/4".into()], false, 10_000).unwrap();
    let cached = s.cached_peers(10_000).unwrap();
    assert_eq!(cached.len(), crate::store::MAX_CACHED_PEERS);
    assert!(cached.iter().any(|p| p.peer_id == "fresh"), "the import was evicted at once");
    assert!(!cached.iter().any(|p| p.peer_id == "p0"), "the oldest success should go first");
}
