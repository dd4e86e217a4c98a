//! Serving others' mailboxes as a replica: storing deposits within [`QUOTAS`], handing items
//! only to whoever proves the mailbox is theirs, deleting on their word, and dropping what has
//! expired every [`PURGE_INTERVAL`]. The swarm task forwards requests here only while this node
//! is a DHT server.

use kolokol_protocol::mailbox::{
    Item, MAX_FETCH_BYTES, MAX_FETCH_ITEMS, Operation, Request, Response,
};
use kolokol_protocol::safety::identity_key;
use libp2p::PeerId;
use tokio::sync::{mpsc, watch};

use crate::mailbox::{MAX_ITEM_TTL, Mailboxes, PURGE_INTERVAL, QUOTAS};
use crate::store::{HandedItem, MailboxDeposit};
use crate::swarm::MailboxInbound;

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
                    Some(MailboxInbound { peer, request, channel }) => {
                        let response = self.serve(peer, request);
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

    /// The replica's answer to one mailbox request from `peer`.
    pub(crate) fn serve(&self, peer: PeerId, request: Request) -> Response {
        let now = self.0.clock.now_secs();
        let refused = |reason: String| Response::Refused { reason };
        let trouble = |e: crate::error::Error| {
            tracing::error!(%e, "mailbox store failed");
            refused("the replica cannot serve it now".into())
        };
        match request {
            Request::Deposit { mailbox_id, item_id, envelope, expires_at } => {
                if expires_at < now {
                    return refused("the item has already expired".into());
                }
                // Both windows must have room, and both count the deposit, or neither does.
                {
                    let mut meters = self.0.deposits.lock().unwrap_or_else(|p| p.into_inner());
                    let meters = &mut *meters;
                    if let Err(refusal) = meters.per_depositor.take(&peer) {
                        return Response::QuotaExceeded { reason: refusal.to_string() };
                    }
                    if let Err(refusal) = meters.per_mailbox.take(&mailbox_id) {
                        meters.per_depositor.give_back(&peer);
                        return Response::QuotaExceeded { reason: refusal.to_string() };
                    }
                }
                let deposit = MailboxDeposit {
                    mailbox_id,
                    item_id,
                    depositor: peer,
                    envelope,
                    expires_at: expires_at.min(now + MAX_ITEM_TTL.as_secs()),
                };
                match self.0.store.mailbox_deposit(&deposit, &QUOTAS, self.0.clock.now_ms()) {
                    Ok(None) => Response::Stored,
                    Ok(Some(reason)) => Response::QuotaExceeded { reason },
                    Err(e) => trouble(e),
                }
            }
            Request::Fetch { mailbox_id, proof } => {
                if let Err(e) = proof.verify(&mailbox_id, Operation::Fetch, &[], now) {
                    return refused(e.to_string());
                }
                match self.0.store.mailbox_items(&mailbox_id, now, MAX_FETCH_ITEMS, MAX_FETCH_BYTES)
                {
                    Ok((items, more)) => Response::Items {
                        items: items
                            .into_iter()
                            .map(|(item_id, envelope)| Item { item_id, envelope })
                            .collect(),
                        more,
                    },
                    Err(e) => trouble(e),
                }
            }
            Request::Handover { mailbox_id, items, proof } => {
                match proof.verify(&mailbox_id, &items, now) {
                    Err(e) => return refused(e.to_string()),
                    // Only the replica itself hands its items over: the signature binds the
                    // items to its key, and the connection to its peer id.
                    Ok(key) if identity_key(&peer).ok() != Some(key) => {
                        return refused("the handover is signed by another peer".into());
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
                    Err(e) => trouble(e),
                }
            }
            Request::Delete { mailbox_id, item_ids, proof } => {
                if let Err(e) = proof.verify(&mailbox_id, Operation::Delete, &item_ids, now) {
                    return refused(e.to_string());
                }
                match self.0.store.mailbox_delete(&mailbox_id, &item_ids) {
                    Ok(count) => Response::Deleted { count: count as u32 },
                    Err(e) => trouble(e),
                }
            }
        }
    }
}
