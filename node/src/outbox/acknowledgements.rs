//! The recipients' acknowledgements of outgoing items, recorded several to a transaction when
//! they land together (a group commit).
//!
//! Recording an acknowledgement is a commit: the item's states and history rows, its sealed
//! parts deleted, every page a frame of the write-ahead log and two `pwrite` calls (about eight
//! pages for one acknowledgement). Deliveries that land while one is being recorded share its
//! commit, so under load the pages they touch in common (the outbox's, the history's and the
//! parts' leaves and indexes) are written once for all of them (docs/BENCHMARKS.md, "A group
//! commit of acknowledgements").
//!
//! There is no task of its own: the first acknowledgement into an empty queue leads. It lets
//! the tasks that are ready to run add theirs, then commits everything queued and answers each.
//! The commit runs when the leader's guard is dropped, so a leader that is cancelled (its
//! attempt aborted at shutdown) still records what it was carrying, synchronously, and nothing
//! is left behind for a leader that will never come. A lone acknowledgement waits for nothing
//! but one turn of the runtime.

use std::sync::Mutex;

use kolokol_protocol::control::MessageState;
use tokio::sync::oneshot;

use crate::error::Result;
use crate::store::Store;

/// The most acknowledgements one transaction records; a longer queue is committed in several.
/// The queue itself holds one entry per attempt waiting for its commit, so the attempts in
/// flight bound it: the outbox loop's [`super::MAX_ATTEMPTS_IN_FLIGHT`] and one first attempt
/// per control connection ([`crate::control::MAX_CONTROL_CONNECTIONS`]).
pub(crate) const MAX_ACKS_PER_COMMIT: usize = 64;

/// One acknowledgement waiting for its commit.
struct Pending {
    id: [u8; 16],
    states: &'static [MessageState],
    now_ms: u64,
    reply: oneshot::Sender<Result<Vec<MessageState>>>,
}

/// The acknowledgements waiting for the leader's commit.
#[derive(Default)]
pub(crate) struct Acknowledgements {
    queue: Mutex<Vec<Pending>>,
}

impl Acknowledgements {
    /// Records that the recipient acknowledged item `id`: forgets its sealed parts and moves it
    /// through `states`, as [`Store::acknowledged`] does, in a transaction it may share with
    /// other acknowledgements; returns the states it entered.
    pub(crate) async fn record(
        &self,
        store: &Store,
        id: [u8; 16],
        states: &'static [MessageState],
        now_ms: u64,
    ) -> Result<Vec<MessageState>> {
        let (reply, answer) = oneshot::channel();
        let leads = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.push(Pending { id, states, now_ms, reply });
            queue.len() == 1
        };
        if leads {
            let commit = Commit { acknowledgements: self, store };
            // Deliveries that landed in the same turn of the runtime are ready to run now: this
            // lets them queue their acknowledgements before the commit instead of after it.
            tokio::task::yield_now().await;
            drop(commit);
        }
        match answer.await {
            Ok(result) => result,
            // Only a commit that panicked drops an answer: the item is recorded on its own.
            Err(_) => store.acknowledged(&id, states, now_ms),
        }
    }
}

/// The leader's commit of everything queued, run when it is dropped: after the leader's turn,
/// or when the leader is cancelled before it.
struct Commit<'a> {
    acknowledgements: &'a Acknowledgements,
    store: &'a Store,
}

impl Drop for Commit<'_> {
    fn drop(&mut self) {
        let queued = std::mem::take(
            &mut *self.acknowledgements.queue.lock().unwrap_or_else(|p| p.into_inner()),
        );
        let mut queued = queued.into_iter().peekable();
        while queued.peek().is_some() {
            let batch: Vec<Pending> = queued.by_ref().take(MAX_ACKS_PER_COMMIT).collect();
            let items: Vec<_> = batch.iter().map(|p| (p.id, p.states, p.now_ms)).collect();
            match self.store.acknowledged_many(&items) {
                Ok(entered) => {
                    for (ack, states) in batch.into_iter().zip(entered) {
                        let _ = ack.reply.send(Ok(states));
                    }
                }
                // The shared transaction failed: each is tried on its own, so one item's error
                // is that item's alone.
                Err(e) => {
                    tracing::warn!(%e, items = batch.len(), "cannot record acknowledgements together; recording each alone");
                    for ack in batch {
                        let _ = ack
                            .reply
                            .send(self.store.acknowledged(&ack.id, ack.states, ack.now_ms));
                    }
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

    /// Acknowledgements of items `0..n`, released in the same turn, as the swarm task wakes the
    /// deliveries that land together; each task answers its item and what recording it gave.
    fn land_together(
        acks: &std::sync::Arc<Acknowledgements>,
        store: &Store,
        n: u8,
    ) -> tokio::task::JoinSet<(u8, crate::error::Result<Vec<MessageState>>)> {
        let landing = std::sync::Arc::new(tokio::sync::Barrier::new(usize::from(n)));
        let mut landed = tokio::task::JoinSet::new();
        for i in 0..n {
            let (acks, store, landing) = (acks.clone(), store.clone(), landing.clone());
            landed.spawn(async move {
                landing.wait().await;
                (i, acks.record(&store, [i; 16], BOTH, 20).await)
            });
        }
        landed
    }

    /// Acknowledgements that land together are recorded together, on the runtime a user node
    /// runs (one worker): each item enters its own states, and the log grows by a fraction of
    /// what the same acknowledgements write one by one (by about what one lone acknowledgement
    /// writes, when they make one commit), where one by one it grows by that much for each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn acknowledgements_that_land_together_share_one_commit() {
        const N: u8 = 24;
        let (together, alone) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (together, alone) = (queued(&together, N + 1), queued(&alone, N));
        let acks = std::sync::Arc::new(Acknowledgements::default());

        // What one acknowledgement alone writes.
        let before = together.wal_bytes();
        assert_eq!(acks.record(&together, [N; 16], BOTH, 20).await.unwrap(), BOTH);
        let one = together.wal_bytes() - before;

        // N deliveries released in the same turn.
        let before = together.wal_bytes();
        let mut landed = land_together(&acks, &together, N);
        while let Some(entered) = landed.join_next().await {
            assert_eq!(entered.unwrap().1.unwrap(), BOTH);
        }
        let grew_together = together.wal_bytes() - before;

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
        // How many commits the runtime makes of them depends on how the worker is scheduled
        // (one here; two or three on a loaded machine): a fraction of the one-by-one log either
        // way, which is what the bound says.
        assert!(
            4 * grew_together <= grew_alone && grew_alone > 10 * one,
            "one acknowledgement wrote {one} bytes of log; {N} together {grew_together}, one by one {grew_alone}"
        );
    }

    /// When the shared transaction fails, each acknowledgement is recorded on its own: the one
    /// that cannot be recorded gets the error, and those that landed with it are recorded. They
    /// land together as in the test above, so they are first tried in one transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn one_acknowledgement_that_fails_does_not_fail_those_that_landed_with_it() {
        const N: u8 = 6;
        const BAD: u8 = 3;
        let dir = tempfile::tempdir().unwrap();
        let store = queued(&dir, N);
        // Forgetting item BAD's parts fails, in any transaction, as a full disk or a corrupt
        // page would fail it.
        store
            .connection_for_tests()
            .execute_batch(&format!(
                "CREATE TEMP TRIGGER refuse BEFORE DELETE ON outbox_parts
                     WHEN old.id = X'{}'
                     BEGIN SELECT RAISE(ABORT, 'refused for the test'); END;",
                format!("{BAD:02x}").repeat(16)
            ))
            .unwrap();
        let acks = std::sync::Arc::new(Acknowledgements::default());
        let mut landed = land_together(&acks, &store, N);
        while let Some(joined) = landed.join_next().await {
            let (i, entered) = joined.unwrap();
            if i == BAD {
                let e = entered.expect_err("the refused item's acknowledgement fails");
                assert!(e.to_string().contains("refused for the test"), "{e}");
            } else {
                assert_eq!(entered.unwrap(), BOTH, "item {i}");
            }
        }
        for i in 0..N {
            let view = store.outgoing(&[i; 16]).unwrap().unwrap();
            if i == BAD {
                assert_eq!(view.state, MessageState::Queued, "the refused item is untouched");
                assert_eq!(store.parts(&[i; 16]).unwrap().len(), 1);
            } else {
                assert_eq!(view.state, MessageState::Delivered, "item {i}");
                assert!(store.parts(&[i; 16]).unwrap().is_empty());
            }
        }
    }

    /// A lone acknowledgement is committed at once, with no timer: the clock does not move.
    #[tokio::test(start_paused = true)]
    async fn a_lone_acknowledgement_is_not_held_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = queued(&dir, 2);
        let acks = Acknowledgements::default();
        let start = tokio::time::Instant::now();
        assert_eq!(acks.record(&store, [0; 16], BOTH, 20).await.unwrap(), BOTH);
        assert_eq!(store.outgoing(&[0; 16]).unwrap().unwrap().state, MessageState::Delivered);
        assert_eq!(
            acks.record(&store, [1; 16], &[MessageState::Sent], 21).await.unwrap(),
            [MessageState::Sent]
        );
        // Acknowledged again, it enters nothing.
        assert!(acks.record(&store, [0; 16], BOTH, 22).await.unwrap().is_empty());
        assert_eq!(tokio::time::Instant::now(), start, "no acknowledgement waited for time");
    }

    /// A leader cancelled before its commit (its attempt aborted at shutdown) still records
    /// what it carried, its own acknowledgement and those that joined it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_cancelled_leader_still_records_what_it_carried() {
        let dir = tempfile::tempdir().unwrap();
        let store = queued(&dir, 2);
        let acks = Acknowledgements::default();
        {
            let leader = std::pin::pin!(acks.record(&store, [0; 16], BOTH, 20));
            // One poll: it queues its acknowledgement, leads, and yields; then it is dropped.
            assert!(futures::poll!(leader).is_pending());
        }
        assert_eq!(store.outgoing(&[0; 16]).unwrap().unwrap().state, MessageState::Delivered);
        assert!(store.parts(&[0; 16]).unwrap().is_empty());
        // The queue is empty again: the next one leads and commits.
        assert_eq!(acks.record(&store, [1; 16], BOTH, 21).await.unwrap(), BOTH);
    }
}
