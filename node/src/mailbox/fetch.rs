//! Fetching our own mailboxes: on start, every [`FETCH_INTERVAL`] and when our reservations
//! change, from the replicas of our mailbox ids for this period and the one before, of both
//! versions: version 2 (from our mailbox address, where contacts that know it deposit, with
//! blinded proofs that name no identity) and version 1 (from our identity key, where older
//! contacts still deposit), and from our contacts' nodes we hold a reservation on, which keep
//! what our contacts could leave with no replica. Every envelope goes through the same receive
//! path as a direct
//! delivery; what was accepted (or will never open) is then deleted from the replica, with a
//! proof that the mailbox is ours.

use std::sync::Arc;

use kolokol_protocol::mailbox::{
    self as mailbox_proto, BlindedProof, ItemId, MailboxId, Operation, Proof, Request, RequestV2,
    Response,
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{Notify, watch};

use crate::inbox::{Arrival, Inbox, Received};
#[cfg(doc)]
use crate::mailbox::FETCH_INTERVAL;
use crate::mailbox::{MAX_FETCH_ROUNDS, Mailboxes};
use crate::swarm::MailboxFailure;
use crate::swarm::courier::Courier;
use crate::wire::mailbox::MailboxRequest;

/// One of our own mailboxes: its id, and the version its proofs take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OwnMailbox {
    /// The mailbox id, as the DHT and the replicas know it.
    pub(crate) id: MailboxId,
    version: OwnVersion,
}

/// How an own mailbox's id was made, and so how its proofs are signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OwnVersion {
    /// From the identity key: proofs by the identity, over `/kolokol/mailbox/1`.
    V1,
    /// From the mailbox address for `period`: blinded proofs, over `/kolokol/mailbox/2`.
    V2 { period: u64 },
}

impl OwnMailbox {
    /// A deposit into this mailbox, in its version (the doctor's probe).
    pub(crate) fn deposit(
        &self,
        item_id: ItemId,
        envelope: Vec<u8>,
        expires_at: u64,
    ) -> MailboxRequest {
        let mailbox_id = self.id;
        match self.version {
            OwnVersion::V1 => {
                MailboxRequest::V1(Request::Deposit { mailbox_id, item_id, envelope, expires_at })
            }
            OwnVersion::V2 { .. } => {
                MailboxRequest::V2(RequestV2::Deposit { mailbox_id, item_id, envelope, expires_at })
            }
        }
    }

    /// Whether this is a version 2 mailbox, whose requests go through a courier.
    pub(crate) fn is_version_2(&self) -> bool {
        matches!(self.version, OwnVersion::V2 { .. })
    }

    /// The item id of a message in this mailbox, in its version.
    pub(crate) fn item_id(&self, message_id: &[u8; 16]) -> ItemId {
        match self.version {
            OwnVersion::V1 => mailbox_proto::item_id(message_id),
            OwnVersion::V2 { .. } => mailbox_proto::item_id_v2(&self.id, message_id, None),
        }
    }
}

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
    /// Fetches until shutdown: every `interval` ([`FETCH_INTERVAL`] but in the scale
    /// simulation), and at once when `wake` is notified.
    pub(crate) async fn run_fetch(
        self,
        inbox: Inbox,
        interval: std::time::Duration,
        wake: Arc<Notify>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut fetch = tokio::time::interval(interval);
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

    /// Our mailboxes for `period`: the version 2 one first (where contacts that know our mailbox
    /// address deposit), then the version 1 one (where older contacts still do).
    pub(crate) fn own_mailboxes(&self, period: u64) -> Vec<OwnMailbox> {
        let mut own = Vec::with_capacity(2);
        match self.0.keys.mailbox_key().mailbox_id(period) {
            Ok(id) => own.push(OwnMailbox { id, version: OwnVersion::V2 { period } }),
            // Only a blinding factor of zero fails, with odds of one in 2^252.
            Err(e) => tracing::error!(%e, "cannot derive our version 2 mailbox id"),
        }
        let key = self.0.keys.identity().identity_key();
        own.push(OwnMailbox {
            id: mailbox_proto::mailbox_id(key, period),
            version: OwnVersion::V1,
        });
        own
    }

    /// Waits until no other fetch of our own mailboxes is under way, and keeps others out
    /// while the guard lives.
    pub(crate) async fn fetching(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.fetching.lock().await
    }

    /// A Fetch (no items) or Delete (of `item_ids`) of one of our mailboxes, with a fresh proof.
    pub(crate) fn owner_request(
        &self,
        mailbox: &OwnMailbox,
        operation: Operation,
        item_ids: Vec<ItemId>,
    ) -> Result<MailboxRequest, FetchError> {
        let now = self.0.clock.now_secs();
        let mailbox_id = mailbox.id;
        Ok(match mailbox.version {
            OwnVersion::V1 => {
                let proof =
                    Proof::sign(self.0.keys.identity(), &mailbox_id, operation, now, &item_ids)?;
                MailboxRequest::V1(match operation {
                    Operation::Fetch => Request::Fetch { mailbox_id, proof },
                    Operation::Delete => Request::Delete { mailbox_id, item_ids, proof },
                })
            }
            OwnVersion::V2 { period } => {
                let (_, proof) = BlindedProof::sign(
                    self.0.keys.mailbox_key(),
                    period,
                    operation,
                    now,
                    &item_ids,
                )?;
                MailboxRequest::V2(match operation {
                    Operation::Fetch => RequestV2::Fetch { mailbox_id, proof },
                    Operation::Delete => RequestV2::Delete { mailbox_id, item_ids, proof },
                })
            }
        })
    }

    /// Fetches from the replicas of our mailboxes (both versions) for the current and the
    /// previous period, accepts every envelope through the inbound path, then deletes what was
    /// accepted; returns how many items were taken.
    pub(crate) async fn fetch_all(&self, inbox: &Inbox) -> usize {
        let _fetching = self.fetching().await;
        let period = mailbox_proto::period_of(self.0.clock.now_secs());
        // One courier for the pass's version 2 requests: the replicas see a fresh identity
        // each pass, never ours. Without one, the version 2 mailboxes wait for the next pass
        // rather than be fetched under our own peer id.
        let courier = match self.courier().await {
            Ok(courier) => Some(courier),
            Err(e) => {
                tracing::error!(%e, "cannot start a courier; version 2 mailboxes are not fetched");
                None
            }
        };
        let courier = courier.as_ref().map(|(c, _)| c);
        let relays = self.contact_relays().await;
        let mut taken = 0;
        for period in [period, period.saturating_sub(1)] {
            for mailbox in self.own_mailboxes(period) {
                let replicas = self.replicas(&mailbox.id, false).await;
                if !mailbox.is_version_2() || courier.is_some() {
                    for (replica, addresses) in replicas.iter().cloned() {
                        match self.fetch_from(inbox, replica, addresses, mailbox, courier).await {
                            Ok(n) => taken += n,
                            Err(e) => tracing::debug!(%replica, %e, "mailbox fetch failed"),
                        }
                    }
                }
                // Our contacts' nodes we hold a reservation on keep what our contacts could
                // leave nowhere else (`Mailboxes::deposit_at_relays`). They serve only their
                // contacts, so these requests go under our own peer id, to a contact.
                for (relay, addresses) in &relays {
                    if replicas.iter().any(|(p, _)| p == relay) {
                        continue;
                    }
                    match self.fetch_from(inbox, *relay, addresses.clone(), mailbox, None).await {
                        Ok(n) => taken += n,
                        Err(e) => {
                            tracing::debug!(%relay, %e, "mailbox fetch from a contact failed")
                        }
                    }
                }
            }
        }
        taken
    }

    /// Our contacts' nodes that hold a reservation for us, with the address each is reached at.
    async fn contact_relays(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let Ok(net) = self.0.swarm.status().await else { return Vec::new() };
        net.reservations
            .iter()
            .filter(|(relay, _)| net.contact_relays.contains(relay))
            .filter_map(|(relay, circuit)| {
                Some((*relay, vec![crate::bootstrap::relay_of(circuit)?]))
            })
            .collect()
    }

    /// Fetch-then-delete rounds against one replica until it has no more, the version 2
    /// requests through `courier`; returns how many items were taken.
    pub(crate) async fn fetch_from(
        &self,
        inbox: &Inbox,
        replica: PeerId,
        addresses: Vec<Multiaddr>,
        mailbox: OwnMailbox,
        courier: Option<&Courier>,
    ) -> Result<usize, FetchError> {
        let mut taken = 0;
        for _ in 0..MAX_FETCH_ROUNDS {
            let request = self.owner_request(&mailbox, Operation::Fetch, Vec::new())?;
            let (items, more) =
                match self.carry(courier, replica, addresses.clone(), request).await? {
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
            let request = self.owner_request(&mailbox, Operation::Delete, done)?;
            match self.carry(courier, replica, addresses.clone(), request).await? {
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
