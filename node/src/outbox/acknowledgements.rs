//! The recipients' acknowledgements of outgoing items, recorded several to a transaction when
//! they land together (a group commit).
//!
//! Recording an acknowledgement is a commit: the item's states and history rows, its sealed
//! parts deleted, every page a frame of the write-ahead log and two `pwrite` calls. Deliveries
//! that land while one commit runs share the next one, so under load the pages they touch in
//! common (the outbox's, the history's and the parts' leaves and indexes) are written once for
//! all of them. Nothing is held back: a lone acknowledgement is committed as soon as the
//! committer runs, and the caller still learns the states its item entered before it answers
//! anyone, exactly as when it committed on its own (docs/BENCHMARKS.md, "The profile after
//! X25519 by AWS-LC").

use std::sync::OnceLock;

use kolokol_protocol::control::MessageState;
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::store::Store;

/// The acknowledgements waiting for the committer: a sender beyond it waits for room, which is
/// at most the attempts in flight anyway.
pub(crate) const ACK_QUEUE: usize = 256;

/// The most acknowledgements one transaction records.
pub(crate) const MAX_ACKS_PER_COMMIT: usize = 64;

/// One acknowledgement on its way to the committer.
struct Pending {
    id: [u8; 16],
    states: &'static [MessageState],
    now_ms: u64,
    reply: oneshot::Sender<Result<Vec<MessageState>>>,
}

/// The way to the committer task, started on first use (the outbox is built before it runs on
/// a runtime in some tests) and ended when the outbox is dropped.
#[derive(Default)]
pub(crate) struct Acknowledgements {
    queue: OnceLock<mpsc::Sender<Pending>>,
}

impl Acknowledgements {
    /// Records that the recipient acknowledged item `id`: forgets its sealed parts and moves it
    /// through `states`, as [`Store::acknowledged`] does, in a transaction it may share with
    /// other acknowledgements; returns the states it entered. If the committer is gone (the
    /// node is stopping), it commits here.
    pub(crate) async fn record(
        &self,
        store: &Store,
        id: [u8; 16],
        states: &'static [MessageState],
        now_ms: u64,
    ) -> Result<Vec<MessageState>> {
        let queue = self.queue.get_or_init(|| {
            let (queue, pending) = mpsc::channel(ACK_QUEUE);
            tokio::spawn(commit(store.clone(), pending));
            queue
        });
        let (reply, answer) = oneshot::channel();
        if queue.send(Pending { id, states, now_ms, reply }).await.is_ok()
            && let Ok(result) = answer.await
        {
            return result;
        }
        store.acknowledged(&id, states, now_ms)
    }
}

/// The committer: takes every acknowledgement waiting, after letting the tasks that are ready to
/// run add theirs, and records them in one transaction.
async fn commit(store: Store, mut pending: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_ACKS_PER_COMMIT);
    while pending.recv_many(&mut batch, MAX_ACKS_PER_COMMIT).await > 0 {
        // Deliveries that landed in the same turn of the runtime are ready to run now; this
        // lets them queue their acknowledgements before the commit instead of after it.
        tokio::task::yield_now().await;
        while batch.len() < MAX_ACKS_PER_COMMIT {
            match pending.try_recv() {
                Ok(ack) => batch.push(ack),
                Err(_) => break,
            }
        }
        let items: Vec<_> = batch.iter().map(|p| (p.id, p.states, p.now_ms)).collect();
        match store.acknowledged_many(&items) {
            Ok(entered) => {
                for (ack, states) in batch.drain(..).zip(entered) {
                    let _ = ack.reply.send(Ok(states));
                }
            }
            // The shared transaction failed: each is tried on its own, so one item's error is
            // that item's alone.
            Err(_) => {
                for ack in batch.drain(..) {
                    let _ = ack.reply.send(store.acknowledged(&ack.id, ack.states, ack.now_ms));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kolokol_protocol::control::MessageState;

    use super::Acknowledgements;
    use crate::store::{OutboxBody, OutboxRow, Store};

    const BOTH: &[MessageState] = &[MessageState::Sent, MessageState::Delivered];

    /// A store with `n` texts queued, each with one sealed part.
    fn queued(dir: &tempfile::TempDir, n: u8) -> Store {
        let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
        let peer = libp2p::identity::Keypair::ed25519_from_bytes([3; 32])
            .expect("32 bytes")
            .public()
            .to_peer_id();
        for i in 0..n {
            let row = OutboxRow {
                id: [i; 16],
                peer_id: peer,
                device_key: [1; 32],
                body: OutboxBody::Text(format!("m{i}")),
                created_at_ms: 10,
                attempts: 0,
            };
            store.enqueue_sealed(&row, 10, None, &[(0, vec![i; 1024])]).unwrap();
        }
        store
    }

    /// Acknowledgements that land together are recorded together: each item enters its own
    /// states, and the log grows by a fraction of what the same acknowledgements cost one by
    /// one (every commit writes each page it touched, so fewer commits write fewer pages).
    #[tokio::test]
    async fn acknowledgements_that_land_together_share_one_commit() {
        const N: u8 = 24;
        let (together, alone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (together, alone) = (queued(&together, N), queued(&alone, N));

        let acks = std::sync::Arc::new(Acknowledgements::default());
        let before = together.wal_bytes();
        let mut landed = tokio::task::JoinSet::new();
        for i in 0..N {
            let (acks, store) = (acks.clone(), together.clone());
            landed.spawn(async move { acks.record(&store, [i; 16], BOTH, 20).await });
        }
        while let Some(entered) = landed.join_next().await {
            assert_eq!(entered.unwrap().unwrap(), BOTH);
        }
        let grew_together = together.wal_bytes() - before;

        let acks = Acknowledgements::default();
        let before = alone.wal_bytes();
        for i in 0..N {
            assert_eq!(acks.record(&alone, [i; 16], BOTH, 20).await.unwrap(), BOTH);
        }
        let grew_alone = alone.wal_bytes() - before;

        for (store, i) in [(&together, 0), (&together, N - 1), (&alone, N / 2)] {
            let view = store.outgoing(&[i; 16]).unwrap().unwrap();
            assert_eq!(view.state, MessageState::Delivered);
            assert!(store.parts(&[i; 16]).unwrap().is_empty());
        }
        assert!(
            grew_together * 4 < grew_alone,
            "{N} acknowledgements together wrote {grew_together} bytes of log, one by one {grew_alone}"
        );
    }

    /// A lone acknowledgement is committed at once, and a second after it too: the committer
    /// waits for nothing but the tasks already able to run.
    #[tokio::test]
    async fn a_lone_acknowledgement_is_not_held_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = queued(&dir, 2);
        let acks = Acknowledgements::default();
        assert_eq!(acks.record(&store, [0; 16], BOTH, 20).await.unwrap(), BOTH);
        assert_eq!(store.outgoing(&[0; 16]).unwrap().unwrap().state, MessageState::Delivered);
        assert_eq!(
            acks.record(&store, [1; 16], &[MessageState::Sent], 21).await.unwrap(),
            [MessageState::Sent]
        );
        // Acknowledged again, it enters nothing.
        assert!(acks.record(&store, [0; 16], BOTH, 22).await.unwrap().is_empty());
    }
}
