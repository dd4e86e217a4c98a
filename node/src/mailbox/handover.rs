//! Handing a mailbox on as the replicas closest to its id change: every [`HANDOVER_INTERVAL`]
//! (or `Config::mailbox_handover_interval`), a replica looks up the servers closest to each
//! mailbox id it holds items for. If it is still among the [`REPLICAS`] closest, it hands its
//! items to the others among them that it has not handed them to yet (a closer node that
//! joined, a replica that replaced one that left). If it is no longer among them, it hands its
//! items to the [`REPLICAS`] closest and, once [`REQUIRED_ACKS`] of them (all of them, when fewer
//! exist) hold every item, drops its copy. Each handover is a signed `Request::Handover` of at
//! most `MAX_HANDOVER_ITEMS` items; the receiver stores the ones it lacks, so repeats cost
//! nothing but bytes.

use std::time::Duration;

use kolokol_protocol::mailbox::{
    HandoverItem, HandoverProof, MAX_FETCH_BYTES, MAX_HANDOVER_ITEMS, MailboxId, Request, Response,
};
use libp2p::{Multiaddr, PeerId, kad};
use tokio::sync::watch;

use crate::mailbox::{MAX_FETCH_ROUNDS, Mailboxes, REPLICAS, REQUIRED_ACKS};
use crate::wire::mailbox::MailboxRequest;

/// How often a replica checks whether the closest servers of the mailboxes it holds changed.
pub const HANDOVER_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// Mailbox ids checked in one pass; the next pass takes the next ones as these empty.
pub const MAX_HANDOVER_MAILBOXES: usize = 64;

/// (mailbox, replica) pairs whose handover progress is remembered; cleared when full, which
/// only means some items are handed over again (and the receiver drops the repeats).
pub const MAX_TRACKED_HANDOVERS: usize = 4096;

impl Mailboxes {
    /// Hands mailboxes on every `interval`, until shutdown.
    pub(crate) async fn run_handover(
        self,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = self.hand_over_all() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One pass over the mailboxes this replica holds.
    pub(crate) async fn hand_over_all(&self) {
        let ids = match self.0.store.mailbox_ids(MAX_HANDOVER_MAILBOXES) {
            Ok(ids) => ids,
            Err(e) => return tracing::error!(%e, "cannot list the mailboxes held"),
        };
        for id in ids {
            if let Err(e) = self.hand_over(&id).await {
                tracing::warn!(%e, "mailbox handover failed; it is tried again next pass");
            }
        }
    }

    /// Hands one mailbox to the replicas that should hold it, and drops it here if this node
    /// is no longer one of them and enough of them hold every item.
    async fn hand_over(&self, id: &MailboxId) -> crate::error::Result<()> {
        let replicas = self.replicas(id, false).await;
        if replicas.is_empty() {
            return Ok(());
        }
        let target = kad::KBucketKey::new(id.to_vec());
        let distance = |p: &PeerId| kad::KBucketKey::from(*p).distance(&target);
        let me = distance(&self.0.keys.peer_id());
        // The lookup never returns this node: with it among the closest, the list holds one
        // server more than the replica set.
        let among = replicas.len() < REPLICAS
            || replicas.iter().take(REPLICAS).any(|(p, _)| me < distance(p));
        let targets: Vec<&(PeerId, Vec<Multiaddr>)> =
            replicas.iter().take(if among { REPLICAS - 1 } else { REPLICAS }).collect();
        let newest = self.0.store.mailbox_newest(id)?;
        let mut complete = 0;
        for (peer, addresses) in &targets {
            if self.hand_over_to(id, *peer, addresses.clone(), newest).await? {
                complete += 1;
            }
        }
        let required = REQUIRED_ACKS.min(targets.len());
        if !among && complete >= required {
            let dropped = self.0.store.mailbox_delete_through(id, newest)?;
            self.forget_handovers(id);
            self.0.changes.send_modify(|n| *n += 1);
            tracing::info!(
                dropped,
                holders = complete,
                "handed a mailbox to the replicas now closest to it and dropped it here"
            );
        }
        Ok(())
    }

    /// Hands `peer` the items of mailbox `id` it has not been handed yet, up to position
    /// `newest`; returns whether it now holds all of them.
    async fn hand_over_to(
        &self,
        id: &MailboxId,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        newest: i64,
    ) -> crate::error::Result<bool> {
        let mut handed = self.handed(id, &peer);
        for _ in 0..MAX_FETCH_ROUNDS {
            if handed >= newest {
                return Ok(true);
            }
            let now = self.0.clock.now_secs();
            let batch = self.0.store.mailbox_held_after(
                id,
                handed,
                now,
                MAX_HANDOVER_ITEMS,
                MAX_FETCH_BYTES,
            )?;
            let Some(last) = batch.last().map(|i| i.position) else {
                // What is left has expired; nothing more to hand.
                self.set_handed(id, &peer, newest);
                return Ok(true);
            };
            let items: Vec<HandoverItem> = batch
                .into_iter()
                .map(|i| HandoverItem {
                    item_id: i.item_id,
                    expires_at: i.expires_at,
                    envelope: i.envelope,
                })
                .collect();
            let proof = HandoverProof::sign(self.0.keys.identity(), id, now, &items)?;
            // A handover names no owner, so any mailbox, of either version, is handed over
            // `/kolokol/mailbox/1`; the receiver stores it under the same opaque id.
            let request = MailboxRequest::V1(Request::Handover { mailbox_id: *id, items, proof });
            match self.request(peer, addresses.clone(), request).await {
                Ok(Response::Stored) => {
                    handed = last;
                    self.set_handed(id, &peer, last);
                }
                Ok(other) => {
                    tracing::debug!(%peer, answer = ?other, "a replica did not take a handover");
                    return Ok(false);
                }
                Err(e) => {
                    tracing::debug!(%peer, %e, "cannot hand a mailbox over");
                    return Ok(false);
                }
            }
        }
        Ok(handed >= newest)
    }

    fn handed(&self, id: &MailboxId, peer: &PeerId) -> i64 {
        let handed = self.0.handed.lock().unwrap_or_else(|p| p.into_inner());
        handed.get(&(*id, *peer)).copied().unwrap_or(0)
    }

    fn set_handed(&self, id: &MailboxId, peer: &PeerId, position: i64) {
        let mut handed = self.0.handed.lock().unwrap_or_else(|p| p.into_inner());
        if handed.len() >= MAX_TRACKED_HANDOVERS && !handed.contains_key(&(*id, *peer)) {
            handed.clear();
        }
        handed.insert((*id, *peer), position);
    }

    fn forget_handovers(&self, id: &MailboxId) {
        self.0.handed.lock().unwrap_or_else(|p| p.into_inner()).retain(|(m, _), _| m != id);
    }
}
