//! Group messages from peers: changes, texts and requests for changes, taken in (called by
//! the inbox once the envelope is open), kept as far as the group's signed history allows, and
//! answered with the changes the sender lacks.

use kolokol_protocol::control::Event;
use kolokol_protocol::group::{self, GroupBody, GroupLog, GroupMessage, GroupOp, OpId};
use kolokol_protocol::message::MessageId;
use libp2p::PeerId;

use super::{Groups, event_text};
use crate::conversations::Held;
use crate::error::Result;
use crate::ids::receipt_id;
use crate::inbox::Arrival;
use crate::store::{
    GroupStatus, GroupTextRow, MAX_GROUPS, MAX_PENDING_GROUPS, OutboxBody, OutboxRow,
};
use crate::wire::delivery::Ack;

impl Groups {
    /// Takes a group message from a peer (called by the inbox once the envelope is open): keeps
    /// what it may, with the envelope's conversation state and, for one fetched from a mailbox,
    /// the receipt that answers it, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accept(
        &self,
        sender: PeerId,
        device_key: [u8; 32],
        content_id: MessageId,
        sent_at_ms: u64,
        message: GroupMessage,
        arrival: Arrival,
        held: &mut Option<Held<()>>,
    ) -> Result<Ack> {
        let now = self.0.parts.clock.now_ms();
        // The receipt's id is derived from the message, as for one-to-one texts, so a copy
        // fetched again queues no second receipt.
        let receipt = (arrival == Arrival::Mailbox).then(|| OutboxRow {
            id: receipt_id(&sender, &content_id),
            peer_id: sender,
            device_key,
            body: OutboxBody::Receipt(content_id),
            created_at_ms: now,
            attempts: 0,
        });
        let group = message.group;
        let ack = match message.body {
            GroupBody::Text { id, seq, heads, text } => {
                let text = GroupTextRow {
                    group,
                    sender,
                    id,
                    seq,
                    text,
                    sent_at_ms,
                    received_at_ms: now,
                    read_at_ms: None,
                    missing_before: 0,
                };
                self.accept_text(text, heads, device_key, receipt.as_ref(), held)?
            }
            GroupBody::Ops { ops } => {
                self.accept_ops(group, sender, device_key, ops, receipt.as_ref(), held)?
            }
            GroupBody::Want { heads, ids } => {
                let _guard = self.lock();
                let members = self.store().group_members(&group)?;
                if members.iter().any(|m| m.peer_id == sender) {
                    let log = self.load(&group)?;
                    let answer = log.answer(&ids, &heads);
                    let sends = Self::ops_messages(group, answer)?
                        .into_iter()
                        .map(|m| (m, vec![(sender, device_key)]))
                        .collect();
                    self.enqueue(&group, sends, false)?;
                }
                self.ack(receipt.as_ref(), held, now)?;
                Ack::Accepted
            }
        };
        if receipt.is_some() && ack == Ack::Accepted {
            self.0.parts.outbox.wake();
        }
        Ok(ack)
    }

    /// Stores only the envelope's receipt and conversation state.
    fn ack(
        &self,
        receipt: Option<&OutboxRow>,
        held: &mut Option<Held<()>>,
        now: u64,
    ) -> Result<()> {
        let conversation = held.take();
        self.store().group_ack(
            receipt,
            conversation.as_ref().and_then(Held::write).as_ref(),
            now,
        )?;
        if let Some(c) = conversation {
            c.stored();
        }
        Ok(())
    }

    fn accept_text(
        &self,
        text: GroupTextRow,
        heads: Vec<OpId>,
        device_key: [u8; 32],
        receipt: Option<&OutboxRow>,
        held: &mut Option<Held<()>>,
    ) -> Result<Ack> {
        let _guard = self.lock();
        let Some(row) = self.store().group(&text.group)? else {
            // Its history may still be on its way to us: not now, and it comes again.
            return Ok(Ack::Busy);
        };
        let sender = text.sender;
        let member = self.store().group_members(&row.id)?.iter().any(|m| m.peer_id == sender);
        let pending = if member {
            false
        } else {
            let log = self.load(&row.id)?;
            let unknown: Vec<OpId> = heads.iter().filter(|h| !log.contains(h)).copied().collect();
            if unknown.is_empty() {
                tracing::info!(%sender, "refused a group text from someone who is not a member");
                return Ok(Ack::Rejected);
            }
            // Its writer knows changes we do not: perhaps the one that added them.
            let heads = log.resolve().map(|s| s.heads).unwrap_or_default();
            self.want(&row.id, &sender, device_key, unknown, heads)?;
            true
        };
        let conversation = held.take();
        let stored = self.store().group_text(
            &text,
            pending,
            receipt,
            conversation.as_ref().and_then(Held::write).as_ref(),
        )?;
        let Some(new) = stored else {
            // Too many texts wait for their writers' changes: not now.
            return Ok(Ack::Busy);
        };
        if let Some(c) = conversation {
            c.stored();
        }
        if new && !pending {
            let names = self.names(&row.id);
            self.0
                .parts
                .events
                .send(Event::GroupMessage(event_text(self.text_view(&text, &names, &row.name))));
        }
        Ok(Ack::Accepted)
    }

    fn accept_ops(
        &self,
        group: [u8; 16],
        sender: PeerId,
        device_key: [u8; 32],
        ops: Vec<GroupOp>,
        receipt: Option<&OutboxRow>,
        held: &mut Option<Held<()>>,
    ) -> Result<Ack> {
        let now = self.0.parts.clock.now_ms();
        let _guard = self.lock();
        let row = self.store().group(&group)?;
        let mut log = match &row {
            Some(row) => self.load(&row.id)?,
            None => {
                // An invitation (or its first part). Bounded: a node keeps so many groups, and so
                // many half-arrived ones from people who are not contacts.
                let (all, pending) = self.store().group_counts()?;
                let contact = self.store().contact_by_peer(&sender)?.is_some();
                if all >= MAX_GROUPS || (!contact && pending >= MAX_PENDING_GROUPS) {
                    tracing::info!(%sender, "refused a group invitation: too many groups");
                    return Ok(Ack::Rejected);
                }
                GroupLog::new(group)
            }
        };
        if let Some(row) = &row {
            // Changes are taken from members, from whoever brought us in while the history is
            // arriving, and from anyone whose changes name some we lack (they may know of a
            // member we do not).
            let member = self.store().group_members(&row.id)?.iter().any(|m| m.peer_id == sender);
            let inviter = row.status == GroupStatus::Pending && row.invited_by == sender;
            let news = ops.iter().any(|op| op.body.parents.iter().any(|p| !log.contains(p)));
            if !member && !inviter && !news {
                self.ack(receipt, held, now)?;
                return Ok(Ack::Accepted);
            }
        }
        let mut new_ops = Vec::new();
        for op in ops {
            let Ok(id) = op.verify() else {
                tracing::info!(%sender, "ignored a group change that does not verify");
                continue;
            };
            match log.insert(op.clone()) {
                Ok(group::Inserted::New) => new_ops.push((id, op.to_bytes()?)),
                Ok(group::Inserted::Known) => {}
                Err(e) => tracing::info!(%sender, %e, "ignored a group change"),
            }
        }
        if new_ops.is_empty() {
            if row.is_none() {
                return Ok(Ack::Rejected);
            }
            self.ack(receipt, held, now)?;
            return Ok(Ack::Accepted);
        }
        let conversation = held.take();
        let (committed, promoted) = self.commit(
            log,
            &new_ops,
            &sender,
            receipt,
            conversation.as_ref().and_then(Held::write).as_ref(),
        )?;
        if let Some(c) = conversation {
            c.stored();
        }
        self.announce(&committed, promoted);
        self.follow_up(&committed, &sender, device_key)?;
        Ok(Ack::Accepted)
    }
}
