//! The store's upkeep under paused time: the write-ahead log is checkpointed once the store
//! has been idle, not while it is busy, and emptied at shutdown.

use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::watch;

use crate::run::upkeep;
use crate::store::{IDLE_BEFORE_CHECKPOINT, IDLE_CHECKPOINT_BYTES, InboxRow, Store};
use crate::workers::Workers;

/// Writes about `bytes` of messages into the store.
fn fill(store: &Store, bytes: usize) {
    let peer = PeerId::random();
    for i in 0..bytes / 4096 + 1 {
        let row = InboxRow {
            id: (i as u128).to_be_bytes(),
            peer_id: peer,
            contact: None,
            text: "k".repeat(4000),
            sent_at_ms: 1,
            received_at_ms: 2,
            read_at_ms: None,
            number: None,
        };
        store.receive(&row, None, None).unwrap();
    }
}

/// Waits until the log is empty, or fails. The checkpoint runs on a blocking worker, which
/// holds paused time still while it runs, so each virtual millisecond waited here passes only
/// once the worker is done: a hundred of them are a bound, not a race.
async fn until_checkpointed(store: &Store) {
    for _ in 0..100 {
        if store.wal_bytes() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the log was not checkpointed: {} bytes", store.wal_bytes());
}

#[tokio::test(start_paused = true)]
async fn the_log_is_checkpointed_when_the_store_is_idle_and_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(upkeep(store.clone(), Workers::per_core(), shutdown));

    fill(&store, 2 * IDLE_CHECKPOINT_BYTES as usize);
    let wal = store.wal_bytes();
    assert!(wal > IDLE_CHECKPOINT_BYTES, "the log holds {wal} bytes");
    // Busy: used every 100 ms for three seconds (three looks of the upkeep), so the log is
    // left alone.
    for _ in 0..30 {
        tokio::time::advance(Duration::from_millis(100)).await;
        fill(&store, 1);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
    assert!(store.wal_bytes() >= wal, "checkpointed while busy");
    // Idle long enough: the next look checkpoints and truncates it.
    tokio::time::advance(IDLE_BEFORE_CHECKPOINT + Duration::from_secs(1)).await;
    until_checkpointed(&store).await;

    // A little more, below the idle threshold, is left until shutdown.
    fill(&store, 4096);
    assert!(store.wal_bytes() > 0);
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(store.wal_bytes(), 0, "a stopped node leaves an empty log");
}

#[tokio::test(start_paused = true)]
async fn a_deleted_key_is_erased_from_the_log_at_the_next_idle_moment() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(upkeep(store.clone(), Workers::per_core(), shutdown));
    // A conversation state with two receive keys, then the same without the first: a key was
    // deleted, and the log (far below the idle threshold) still holds it.
    let peer = PeerId::random();
    let save = |ids: &[[u8; 8]], at: u64| {
        let write = crate::store::ConversationWrite {
            peer: &peer,
            state: b"state",
            key_ids: Some(ids),
            rekeyed: None,
        };
        store.save_conversation(&write, at).unwrap();
    };
    save(&[[1; 8], [2; 8]], 1);
    store.checkpoint().unwrap();
    save(&[[2; 8]], 2);
    assert!(store.erasure_pending());
    assert!(store.wal_bytes() > 0 && store.wal_bytes() < IDLE_CHECKPOINT_BYTES);
    tokio::time::advance(IDLE_BEFORE_CHECKPOINT + Duration::from_secs(1)).await;
    until_checkpointed(&store).await;
    assert!(!store.erasure_pending());
    stop.send(true).unwrap();
    task.await.unwrap();
}
