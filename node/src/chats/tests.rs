//! The order of a conversation: as written, not as arrived; gaps where a numbered message is
//! missing; our messages in between by time.

use std::collections::HashMap;

use kolokol_protocol::control::MessageState;
use libp2p::PeerId;

use crate::chats::{Chats, MIN_PEER_PREFIX, gaps, order, whole_peer_id};
use crate::store::{InboxRow, Number, OutboxView};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn peer() -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([7; 32]).expect("key").public().to_peer_id()
}

fn received(seq: u64, sent_at_ms: u64, received_at_ms: u64) -> InboxRow {
    InboxRow {
        id: [seq as u8; 16],
        peer_id: peer(),
        contact: Some("alice".into()),
        text: format!("message {seq}"),
        sent_at_ms,
        received_at_ms,
        read_at_ms: None,
        number: Some(Number { series: 9, seq }),
    }
}

fn sent(id: u8, created_at_ms: u64) -> OutboxView {
    OutboxView {
        id: [id; 16],
        peer_id: peer(),
        contact: Some("alice".into()),
        text: format!("reply {id}"),
        state: MessageState::Delivered,
        detail: None,
        attempts: 1,
        created_at_ms,
    }
}

fn numbers(rows: &[InboxRow]) -> HashMap<Number, (u64, u64)> {
    let list: Vec<(Number, u64)> =
        rows.iter().filter_map(|r| r.number.map(|n| (n, r.received_at_ms))).collect();
    gaps(&list)
}

#[test]
fn messages_that_arrived_5_1_4_3_2_read_1_to_5_with_replies_in_place() {
    // Written a second apart; arrived in the order 5, 1, 4, 3, 2 after the sender restarted.
    let rows: Vec<InboxRow> = [5u64, 1, 4, 3, 2]
        .into_iter()
        .enumerate()
        .map(|(arrival, seq)| received(seq, 1000 * seq, 10_000 + arrival as u64))
        .collect();
    let gaps = numbers(&rows);
    let entries = order(rows, vec![sent(100, 2500)], &gaps, 20_000);
    let texts: Vec<&str> = entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        ["message 1", "message 2", "reply 100", "message 3", "message 4", "message 5"]
    );
    assert!(entries.iter().all(|e| e.missing_before == 0));
}

#[test]
fn a_wrong_clock_cannot_reorder_a_series_and_a_gap_waits_until_its_writer_gives_up() {
    // Message 3 says it was sent before message 1 (the writer's clock jumped back), and
    // message 2 has not arrived.
    let rows = vec![received(1, 5000, 10), received(3, 1000, 11)];
    let gaps = numbers(&rows);
    let entries = order(rows.clone(), vec![], &gaps, 20);
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [Some(1), Some(3)]);
    assert_eq!((entries[1].missing_before, entries[1].missing_for_good), (1, false));
    // Fourteen days later its writer has given up on message 2.
    let entries = order(rows, vec![], &gaps, 11 + 15 * DAY_MS);
    assert_eq!((entries[1].missing_before, entries[1].missing_for_good), (1, true));
}

#[test]
fn gaps_count_from_one_and_never_across_series() {
    let list = vec![
        (Number { series: 1, seq: 3 }, 0),
        (Number { series: 1, seq: 4 }, 0),
        (Number { series: 2, seq: 1 }, 0),
        (Number { series: 2, seq: 5 }, 0),
    ];
    let gaps = gaps(&list);
    assert_eq!(gaps[&Number { series: 1, seq: 3 }].0, 2, "1 and 2 of series 1 are missing");
    assert_eq!(gaps[&Number { series: 1, seq: 4 }].0, 0);
    assert_eq!(gaps[&Number { series: 2, seq: 1 }].0, 0);
    assert_eq!(gaps[&Number { series: 2, seq: 5 }].0, 3);
}

fn ed25519_peer(seed: u8) -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([seed; 32]).expect("key").public().to_peer_id()
}

#[test]
fn only_a_whole_peer_id_is_taken_as_one_and_no_start_of_one_is() {
    let mut short_parses = 0;
    for seed in 0..=255u8 {
        let peer = ed25519_peer(seed);
        let text = peer.to_string();
        assert_eq!(whole_peer_id(&text), Some(peer));
        for len in MIN_PEER_PREFIX..text.len() {
            // Some starts parse as peer ids of their own; none may be taken as a whole one.
            short_parses += usize::from(text[..len].parse::<PeerId>().is_ok());
            assert_eq!(whole_peer_id(&text[..len]), None, "{}", &text[..len]);
        }
    }
    // The case the check is for happens: starts of real ids that libp2p parses.
    assert!(short_parses > 0);
    let rsa_like = PeerId::from_multihash(
        libp2p::multihash::Multihash::wrap(0x12, &[9; 32]).expect("a SHA-256 multihash"),
    )
    .expect("a peer id");
    assert_eq!(whole_peer_id(&rsa_like.to_string()), Some(rsa_like));
}

#[test]
fn a_blocked_peer_is_found_by_the_shortest_start_of_its_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::store::Store::open(&dir.path().join("kolokol.db")).expect("store");
    let chats = Chats { store: store.clone(), clock: crate::clock::Clock::system() };
    for seed in 0..=255u8 {
        let peer = ed25519_peer(seed);
        store.block(&peer, 1).expect("block");
        let text = peer.to_string();
        assert_eq!(chats.peer(&text[..MIN_PEER_PREFIX]).expect("found by its start"), peer);
        assert_eq!(chats.peer(&text).expect("found whole"), peer);
        store.unblock(&peer).expect("unblock");
    }
    assert!(matches!(chats.peer("12D3KooWxxxx"), Err(crate::error::Error::UnknownPeer(_))));
}
