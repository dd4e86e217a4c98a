//! Serving others' mailboxes as a replica: storing deposits within [`QUOTAS`], handing items
//! only to whoever proves the mailbox is theirs, deleting on their word, and dropping what has
//! expired every [`PURGE_INTERVAL`]. The swarm task forwards requests here only while this node
//! is a DHT server.
//!
//! Both protocol versions share one store and one set of quotas: a mailbox id is 32 opaque bytes
//! to the replica, whichever way it was derived. Only the ownership proof differs: version 1
//! names the owner's identity key, version 2 a blinded key that hashes to the id
//! (`docs/PROTOCOL.md` 11.7).

use kolokol_protocol::mailbox::{
    HandoverItem, HandoverProof, Item, ItemId, MAX_FETCH_BYTES, MAX_FETCH_ITEMS, MailboxId,
    Operation, Request, RequestV2, Response,
};
use kolokol_protocol::safety::identity_key;
use libp2p::PeerId;
use tokio::sync::{mpsc, watch};

use crate::mailbox::{MAX_ITEM_TTL, Mailboxes, PURGE_INTERVAL, QUOTAS};
use crate::store::{HandedItem, MailboxDeposit};
use crate::swarm::MailboxInbound;
use crate::wire::mailbox::MailboxRequest;

impl Mailboxes {
    /// Answers mailbox requests one at a time (each is a short SQLite call) and purges expired
    /// items, until shutdown.
    pub(crate) async fn run_replica(
        self,
        mut requests: mpsc::Receiver<MailboxInbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                next = requests.recv() => match next {
                    Some(MailboxInbound { peer, source, request, channel }) => {
                        let response = self.serve(peer, source, request);
                        if matches!(response, Response::Stored | Response::Deleted { .. }) {
                            self.0.changes.send_modify(|n| *n += 1);
                        }
                        self.0.swarm.mailbox_respond(channel, response).await;
                    }
                    None => return,
                },
                _ = purge.tick() => match self.0.store.mailbox_purge(self.0.clock.now_secs()) {
                    Ok(0) => {}
                    Ok(n) => {
                        self.0.changes.send_modify(|c| *c += 1);
                        tracing::info!(purged = n, "dropped expired mailbox items")
                    }
                    Err(e) => tracing::error!(%e, "cannot purge mailbox items"),
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The replica's answer to one mailbox request from `peer`, of either version, over a
    /// connection from the address range `source`.
    pub(crate) fn serve(
        &self,
        peer: PeerId,
        source: Option<[u8; 7]>,
        request: MailboxRequest,
    ) -> Response {
        let now = self.0.clock.now_secs();
        let refused = |e: kolokol_protocol::Error| Response::Refused { reason: e.to_string() };
        match request {
            MailboxRequest::V1(Request::Deposit { mailbox_id, item_id, envelope, expires_at })
            | MailboxRequest::V2(RequestV2::Deposit {
                mailbox_id,
                item_id,
                envelope,
                expires_at,
            }) => {
                let deposit = MailboxDeposit {
                    mailbox_id,
                    item_id,
                    depositor: peer,
                    envelope,
                    expires_at: expires_at.min(now + MAX_ITEM_TTL.as_secs()),
                };
                self.take_deposit(deposit, source, expires_at, now)
            }
            MailboxRequest::V1(Request::Fetch { mailbox_id, proof }) => {
                match proof.verify(&mailbox_id, Operation::Fetch, &[], now) {
                    Ok(()) => self.hand_out(&mailbox_id, now),
                    Err(e) => refused(e),
                }
            }
            MailboxRequest::V2(RequestV2::Fetch { mailbox_id, proof }) => {
                match proof.verify(&mailbox_id, Operation::Fetch, &[], now) {
                    Ok(()) => self.hand_out(&mailbox_id, now),
                    Err(e) => refused(e),
                }
            }
            MailboxRequest::V1(Request::Delete { mailbox_id, item_ids, proof }) => {
                match proof.verify(&mailbox_id, Operation::Delete, &item_ids, now) {
                    Ok(()) => self.delete(&mailbox_id, &item_ids),
                    Err(e) => refused(e),
                }
            }
            MailboxRequest::V2(RequestV2::Delete { mailbox_id, item_ids, proof }) => {
                match proof.verify(&mailbox_id, Operation::Delete, &item_ids, now) {
                    Ok(()) => self.delete(&mailbox_id, &item_ids),
                    Err(e) => refused(e),
                }
            }
            MailboxRequest::V1(Request::Handover { mailbox_id, items, proof }) => {
                self.take_handover(peer, mailbox_id, items, proof, now)
            }
        }
    }

    /// The store failed: logged, and the request refused without saying more.
    fn trouble(e: crate::error::Error) -> Response {
        tracing::error!(%e, "mailbox store failed");
        Response::Refused { reason: "the replica cannot serve it now".into() }
    }

    /// Stores a deposit from the address range `source`, asked to expire at `expires_at`,
    /// within the deposit windows and the store's quotas.
    fn take_deposit(
        &self,
        deposit: MailboxDeposit,
        source: Option<[u8; 7]>,
        expires_at: u64,
        now: u64,
    ) -> Response {
        if expires_at < now {
            return Response::Refused { reason: "the item has already expired".into() };
        }
        // Every window must have room, and every one counts the deposit, or none does.
        {
            let mut meters = self.0.deposits.lock().unwrap_or_else(|p| p.into_inner());
            let meters = &mut *meters;
            let peer = deposit.depositor;
            if let Err(refusal) = meters.per_depositor.take(&peer) {
                return Response::QuotaExceeded { reason: refusal.to_string() };
            }
            if let Some(source) = &source
                && let Err(refusal) = meters.per_source.take(source)
            {
                meters.per_depositor.give_back(&peer);
                return Response::QuotaExceeded { reason: refusal.to_string() };
            }
            if let Err(refusal) = meters.per_mailbox.take(&deposit.mailbox_id) {
                meters.per_depositor.give_back(&peer);
                if let Some(source) = &source {
                    meters.per_source.give_back(source);
                }
                return Response::QuotaExceeded { reason: refusal.to_string() };
            }
        }
        match self.0.store.mailbox_deposit(&deposit, &QUOTAS, self.0.clock.now_ms()) {
            Ok(None) => Response::Stored,
            Ok(Some(reason)) => Response::QuotaExceeded { reason },
            Err(e) => Self::trouble(e),
        }
    }

    /// The mailbox's unexpired items, oldest first, for an owner whose proof verified.
    fn hand_out(&self, mailbox_id: &MailboxId, now: u64) -> Response {
        match self.0.store.mailbox_items(mailbox_id, now, MAX_FETCH_ITEMS, MAX_FETCH_BYTES) {
            Ok((items, more)) => Response::Items {
                items: items
                    .into_iter()
                    .map(|(item_id, envelope)| Item { item_id, envelope })
                    .collect(),
                more,
            },
            Err(e) => Self::trouble(e),
        }
    }

    /// Deletes the named items for an owner whose proof verified.
    fn delete(&self, mailbox_id: &MailboxId, item_ids: &[ItemId]) -> Response {
        match self.0.store.mailbox_delete(mailbox_id, item_ids) {
            Ok(count) => Response::Deleted { count: count as u32 },
            Err(e) => Self::trouble(e),
        }
    }

    /// Takes over items another replica hands this one, if it signed them itself.
    fn take_handover(
        &self,
        peer: PeerId,
        mailbox_id: MailboxId,
        items: Vec<HandoverItem>,
        proof: HandoverProof,
        now: u64,
    ) -> Response {
        match proof.verify(&mailbox_id, &items, now) {
            Err(e) => return Response::Refused { reason: e.to_string() },
            // Only the replica itself hands its items over: the signature binds the items to
            // its key, and the connection to its peer id.
            Ok(key) if identity_key(&peer).ok() != Some(key) => {
                return Response::Refused {
                    reason: "the handover is signed by another peer".into(),
                };
            }
            Ok(_) => {}
        }
        if let Err(refusal) = self
            .0
            .deposits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .handovers
            .take_n(&peer, items.len() as u32)
        {
            return Response::QuotaExceeded { reason: refusal.to_string() };
        }
        let cap = now + MAX_ITEM_TTL.as_secs();
        let items: Vec<HandedItem<'_>> = items
            .iter()
            .filter(|i| i.expires_at >= now)
            .map(|i| (i.item_id, i.expires_at.min(cap), i.envelope.as_slice()))
            .collect();
        match self.0.store.mailbox_take_over(
            &mailbox_id,
            &items,
            &peer,
            &QUOTAS,
            self.0.clock.now_ms(),
        ) {
            Ok(None) => Response::Stored,
            Ok(Some(reason)) => Response::QuotaExceeded { reason },
            Err(e) => Self::trouble(e),
        }
    }
}
