//! Fetching our own mailboxes: on start, every [`FETCH_INTERVAL`] and when our reservations
//! change, from the replicas of our mailbox ids for this period and the one before. Every
//! envelope goes through the same receive path as a direct delivery; what was accepted (or will
//! never open) is then deleted from the replica, with a proof that the mailbox is ours.

use std::sync::Arc;

use kolokol_protocol::mailbox::{
    self as mailbox_proto, MailboxId, Operation, Proof, Request, Response,
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{Notify, watch};

use crate::inbox::{Arrival, Inbox, Received};
use crate::mailbox::{FETCH_INTERVAL, MAX_FETCH_ROUNDS, Mailboxes};
use crate::swarm::MailboxFailure;

/// Why a fetch from one replica stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The replica did not answer.
    #[error(transparent)]
    Unreachable(#[from] MailboxFailure),
    /// The replica refused (a bad proof, or it is not a replica).
    #[error("refused: {0}")]
    Refused(String),
    /// The replica answered something other than what was asked.
    #[error("unexpected answer {0}")]
    Unexpected(String),
    /// We could not sign the ownership proof.
    #[error("cannot sign the proof: {0}")]
    Proof(#[from] kolokol_protocol::Error),
}

impl Mailboxes {
    /// Fetches until shutdown: every [`FETCH_INTERVAL`], and at once when `wake` is notified.
    pub(crate) async fn run_fetch(
        self,
        inbox: Inbox,
        wake: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut fetch = tokio::time::interval(FETCH_INTERVAL);
        fetch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = fetch.tick() => {}
                _ = wake.notified() => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                fetched = self.fetch_all(&inbox) => {
                    if fetched > 0 {
                        tracing::info!(fetched, "fetched messages from our mailboxes");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Fetches from the replicas of our mailboxes for the current and the previous period,
    /// accepts every envelope through the inbound path, then deletes what was accepted;
    /// returns how many items were taken.
    pub(crate) async fn fetch_all(&self, inbox: &Inbox) -> usize {
        let key = *self.0.keys.identity().identity_key();
        let period = mailbox_proto::period_of(self.0.clock.now_secs());
        let mut taken = 0;
        for period in [period, period.saturating_sub(1)] {
            let mailbox_id = mailbox_proto::mailbox_id(&key, period);
            for (replica, addresses) in self.replicas(&mailbox_id, false).await {
                match self.fetch_from(inbox, replica, addresses, mailbox_id).await {
                    Ok(n) => taken += n,
                    Err(e) => tracing::debug!(%replica, %e, "mailbox fetch failed"),
                }
            }
        }
        taken
    }

    /// Fetch-then-delete rounds against one replica until it has no more; returns how many
    /// items were taken.
    pub(crate) async fn fetch_from(
        &self,
        inbox: &Inbox,
        replica: PeerId,
        addresses: Vec<Multiaddr>,
        mailbox_id: MailboxId,
    ) -> Result<usize, FetchError> {
        let identity = self.0.keys.identity();
        let mut taken = 0;
        for _ in 0..MAX_FETCH_ROUNDS {
            let proof =
                Proof::sign(identity, &mailbox_id, Operation::Fetch, self.0.clock.now_secs(), &[])?;
            let request = Request::Fetch { mailbox_id, proof };
            let (items, more) = match self.request(replica, addresses.clone(), request).await? {
                Response::Items { items, more } => (items, more),
                Response::Refused { reason } => return Err(FetchError::Refused(reason)),
                other => return Err(FetchError::Unexpected(format!("{other:?}"))),
            };
            let mut done = Vec::with_capacity(items.len());
            for item in items {
                // An envelope that does not open is deleted too: it never will. So is a
                // stranger's past its quota: kept, a flood of them would sit at the head of the
                // mailbox and hide what contacts left behind it; its sender, who got no receipt,
                // keeps trying directly and deposits again when the mailbox id turns over.
                if inbox.open_and_store(item.envelope, Arrival::Mailbox).await != Received::Busy {
                    done.push(item.item_id);
                }
            }
            if done.is_empty() {
                return Ok(taken);
            }
            taken += done.len();
            let proof = Proof::sign(
                identity,
                &mailbox_id,
                Operation::Delete,
                self.0.clock.now_secs(),
                &done,
            )?;
            let request = Request::Delete { mailbox_id, item_ids: done, proof };
            match self.request(replica, addresses.clone(), request).await? {
                Response::Deleted { .. } => {}
                other => return Err(FetchError::Unexpected(format!("to a delete: {other:?}"))),
            }
            if !more {
                break;
            }
        }
        Ok(taken)
    }
}
