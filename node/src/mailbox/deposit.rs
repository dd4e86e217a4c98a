//! Depositing a message's envelopes on the replicas of the recipient's mailbox, and remembering
//! which replicas hold them, so a later attempt deposits only where they are missing.
//!
//! When the sender knows the recipient's mailbox address (its version 2 invite, or its format 4
//! first contact), the mailbox is version 2: its id comes from the address and the period, its
//! item ids from the mailbox id and the message id, and the deposits go over
//! `/kolokol/mailbox/2`, so neither the replicas nor the DHT peers asked for them can tell whose
//! mailbox it is. Without the address (a contact from before mailbox addresses), version 1, from
//! the recipient's identity key, as before. A deposit that no replica took goes to the relays
//! the recipient's circuits go through, where a contact's node relaying for its contacts keeps
//! it for the recipient.

use std::sync::Arc;

use kolokol_protocol::mailbox::{self as mailbox_proto, MailboxId, Request, RequestV2, Response};
use kolokol_protocol::mailbox_key::{self, MailboxAddress};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::task::JoinSet;

use crate::mailbox::{MAX_ITEM_TTL, Mailboxes, REPLICAS, REQUIRED_ACKS, Replica};
use crate::store::{DepositRecord, OutboxRow};
use crate::wire::mailbox::MailboxRequest;

/// The recipient's mailbox id at `now` and the deposits of a message's `parts` into it (one, or
/// one per chunk of a `chunked` message, each with its index): version 2 with the recipient's
/// mailbox `address`, version 1 from its peer id without.
pub(crate) fn deposits(
    peer: &PeerId,
    address: Option<&MailboxAddress>,
    message_id: &[u8; 16],
    expires_at: u64,
    parts: Vec<(u32, Vec<u8>)>,
    chunked: bool,
    now: u64,
) -> crate::error::Result<(MailboxId, Vec<MailboxRequest>)> {
    let period = mailbox_proto::period_of(now);
    let chunk = |index: u32| chunked.then_some(index);
    match address {
        Some(address) => {
            let mailbox_id = mailbox_key::mailbox_id(address, period)?;
            let requests = parts
                .into_iter()
                .map(|(index, envelope)| {
                    MailboxRequest::V2(RequestV2::Deposit {
                        mailbox_id,
                        item_id: mailbox_proto::item_id_v2(&mailbox_id, message_id, chunk(index)),
                        envelope,
                        expires_at,
                    })
                })
                .collect();
            Ok((mailbox_id, requests))
        }
        None => {
            let key = kolokol_protocol::safety::identity_key(peer)?;
            let mailbox_id = mailbox_proto::mailbox_id(&key, period);
            let requests = parts
                .into_iter()
                .map(|(index, envelope)| {
                    MailboxRequest::V1(Request::Deposit {
                        mailbox_id,
                        item_id: match chunk(index) {
                            Some(index) => mailbox_proto::chunk_item_id(message_id, index),
                            None => mailbox_proto::item_id(message_id),
                        },
                        envelope,
                        expires_at,
                    })
                })
                .collect();
            Ok((mailbox_id, requests))
        }
    }
}

/// Why a message is not (yet) stored in its recipient's mailbox.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DepositError {
    /// The DHT named no server close to the mailbox id.
    #[error("no mailbox replica found in the DHT")]
    NoReplica,
    /// Fewer replicas than needed stored every envelope.
    #[error("stored on only {acked} of {replicas} mailbox replicas ({reasons})")]
    TooFew {
        /// Replicas holding the message.
        acked: usize,
        /// Replicas found.
        replicas: usize,
        /// What the others said, `; `-separated.
        reasons: String,
    },
    /// The node could not compute the mailbox or record the deposit.
    #[error(transparent)]
    Node(#[from] crate::error::Error),
}

/// The recipient's relays a deposit that reached no mailbox replica is left with at most.
pub const MAX_FALLBACK_RELAYS: usize = 2;

impl Mailboxes {
    /// Leaves the message with the relays the recipient's circuit addresses go through, when no
    /// replica the DHT names took it: a contact's node relaying for its contacts (which keeps
    /// mailboxes for its contacts, `docs/PROTOCOL.md` section 10.10) is where the recipient
    /// holds a reservation and fetches, so a message between two users in a country cut off
    /// from the DHT abroad is kept there instead of lost. The deposits go over the main swarm,
    /// under our own peer id, since such a node takes them only from its contacts. Returns the
    /// `stored` detail if at least one relay took every envelope, `None` if none did. The
    /// replicas in `tried` just failed and are not asked again.
    async fn deposit_at_relays(
        &self,
        row: &OutboxRow,
        mailbox_id: &MailboxId,
        deposits: &[MailboxRequest],
        tried: &[PeerId],
    ) -> Result<Option<String>, DepositError> {
        let addresses = match self.0.store.contact_by_peer(&row.peer_id)? {
            Some(contact) => contact.addresses,
            None => return Ok(None),
        };
        let mut relays: Vec<(PeerId, Multiaddr)> = Vec::new();
        for address in &addresses {
            // A circuit `<base>/p2p/<relay>/p2p-circuit/...`: its relay, reached at `base`.
            let Some(base) = crate::bootstrap::relay_of(address) else { continue };
            let Some(Protocol::P2p(relay)) = base.iter().last() else { continue };
            if relay != row.peer_id
                && !tried.contains(&relay)
                && relays.len() < MAX_FALLBACK_RELAYS
                && !relays.iter().any(|(r, _)| *r == relay)
            {
                relays.push((relay, base));
            }
        }
        let mut acked = Vec::new();
        let mut reasons = Vec::new();
        for (relay, base) in &relays {
            let mut answer = Ok(Response::Stored);
            for deposit in deposits {
                answer = self.request(*relay, vec![base.clone()], deposit.clone()).await;
                if !matches!(answer, Ok(Response::Stored)) {
                    break;
                }
            }
            match answer {
                Ok(Response::Stored) => acked.push(*relay),
                Ok(other) => reasons.push(format!("{relay} answered {other:?}")),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        if acked.is_empty() {
            if !relays.is_empty() {
                tracing::debug!(reasons = %reasons.join("; "), "no relay of the recipient took the message");
            }
            return Ok(None);
        }
        let record = DepositRecord { mailbox_id: *mailbox_id, replicas: acked.clone() };
        self.0.store.set_deposited(&row.id, &record)?;
        Ok(Some(format!(
            "stored on {} of the recipient's {} relays (no mailbox replica reachable)",
            acked.len(),
            relays.len()
        )))
    }

    /// Deposits the message's envelopes that its recipient lacks (one, or one per chunk of a
    /// `chunked` message, each with its index) on the replicas of the recipient's current
    /// mailbox that do not hold them yet, version 2 if we know the recipient's mailbox
    /// `address`; returns the detail of the `stored` state ("stored on N of M mailbox
    /// replicas") once enough hold all of them.
    pub(crate) async fn deposit(
        &self,
        row: &OutboxRow,
        address: Option<MailboxAddress>,
        parts: Vec<(u32, Vec<u8>)>,
        chunked: bool,
    ) -> Result<String, DepositError> {
        // The replica keeps it no longer than the outbox would go on trying.
        let expires_at = (row.created_at_ms / 1000).saturating_add(MAX_ITEM_TTL.as_secs());
        let (mailbox_id, deposits) = deposits(
            &row.peer_id,
            address.as_ref(),
            &row.id,
            expires_at,
            parts,
            chunked,
            self.0.clock.now_secs(),
        )?;
        let replicas = self.replicas(&mailbox_id, true).await;
        if replicas.is_empty() {
            // No DHT server is known (the border is cut, or there is none at home): the
            // recipient's relays are the replicas of last resort.
            return match self.deposit_at_relays(row, &mailbox_id, &deposits, &[]).await? {
                Some(detail) => Ok(detail),
                None => Err(DepositError::NoReplica),
            };
        }
        // Replicas that acked an earlier deposit into this same mailbox and are still among the
        // closest keep their copy; the others (new closest peers, or a new period) get one.
        let before: Vec<PeerId> = match self.0.store.deposited(&row.id)? {
            Some(record) if record.mailbox_id == mailbox_id => record.replicas,
            _ => Vec::new(),
        };
        let mut acked: Vec<PeerId> =
            replicas.iter().map(|(p, _)| *p).filter(|p| before.contains(p)).collect();
        // A chunked message is one item per chunk; a replica holds the message once it has
        // stored every chunk the recipient lacks.
        let deposits: Arc<Vec<MailboxRequest>> = Arc::new(deposits);
        let to: Vec<&Replica> = replicas.iter().filter(|(p, _)| !acked.contains(p)).collect();
        // A version 2 deposit goes through a courier, under a fresh identity, so the replicas
        // learn neither our peer id nor that deposits into different mailboxes share a sender;
        // deposits into this mailbox within seconds share one (`DEPOSIT_COURIER_REUSE`). A
        // version 1 mailbox names its owner anyway and goes over the main swarm.
        let version_2 = deposits.iter().any(|d| matches!(d, MailboxRequest::V2(_)));
        let courier = if version_2 && !to.is_empty() {
            Some(self.deposit_courier(&mailbox_id).await?)
        } else {
            None
        };
        let mut pending = JoinSet::new();
        for (replica, addresses) in to {
            let mailboxes = self.clone();
            let (replica, addresses, deposits) = (*replica, addresses.clone(), deposits.clone());
            let courier = courier.as_ref().map(|(c, _)| c.clone());
            pending.spawn(async move {
                let mut answer = Ok(Response::Stored);
                for deposit in deposits.iter() {
                    answer = mailboxes
                        .carry(courier.as_ref(), replica, addresses.clone(), deposit.clone())
                        .await;
                    if !matches!(answer, Ok(Response::Stored)) {
                        break;
                    }
                }
                (replica, answer)
            });
        }
        let mut reasons = Vec::new();
        while let Some(joined) = pending.join_next().await {
            let Ok((replica, answer)) = joined else { continue };
            match answer {
                Ok(Response::Stored) => acked.push(replica),
                Ok(Response::QuotaExceeded { reason } | Response::Refused { reason }) => {
                    reasons.push(format!("mailbox replica {replica} refused it: {reason}"))
                }
                Ok(other) => reasons.push(format!("mailbox replica {replica} answered {other:?}")),
                Err(e) => {
                    // The replica may be gone: look the closest peers up afresh next time.
                    self.forget_replicas(&mailbox_id);
                    reasons.push(e.to_string())
                }
            }
        }
        let record = DepositRecord { mailbox_id, replicas: acked.clone() };
        self.0.store.set_deposited(&row.id, &record)?;
        let required = if replicas.len() >= REPLICAS { REQUIRED_ACKS } else { replicas.len() };
        if acked.len() >= required {
            Ok(format!("stored on {} of {} mailbox replicas", acked.len(), replicas.len()))
        } else if acked.is_empty()
            && let Some(detail) = self
                .deposit_at_relays(
                    row,
                    &mailbox_id,
                    &deposits,
                    &replicas.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
                )
                .await?
        {
            Ok(detail)
        } else {
            Err(DepositError::TooFew {
                acked: acked.len(),
                replicas: replicas.len(),
                reasons: reasons.join("; "),
            })
        }
    }
}
