//! Events for control-API subscribers: a new message arrived, an outgoing message changed state.
//! They are a convenience; the store is the record, so nobody listening is fine and a subscriber
//! that falls behind gets a `lagged` event and re-reads.

use kolokol_protocol::control::{Event, GroupDelivery, MessageState, StateChange};
use kolokol_protocol::message::{MessageId, format_id};
use libp2p::PeerId;
use tokio::sync::broadcast;

use crate::store::{OutboxBody, OutboxRow, Store};

/// Events kept for subscribers that are slow to read; a subscriber that falls further behind
/// gets a `lagged` event and must re-read the inbox.
pub const EVENT_BUFFER: usize = 1024;

/// The sending side of the event stream.
#[derive(Clone)]
pub(crate) struct Events {
    sender: broadcast::Sender<Event>,
    store: Store,
}

impl Events {
    pub(crate) fn new(store: Store) -> Self {
        Self { sender: broadcast::channel(EVENT_BUFFER).0, store }
    }

    /// A new subscription, starting with the next event.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Sends an event to every subscriber.
    pub(crate) fn send(&self, event: Event) {
        let _ = self.sender.send(event);
    }

    /// Whether anyone is subscribed. The announcements below read the store to name who is
    /// concerned (a contact's name, a group's), work that nobody would read when nobody
    /// listens, which is a daemon's usual state (a scripted `kolokol send` subscribes to
    /// nothing).
    fn heard(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Announces a state change that a receipt caused: of one of our texts, or of a member's
    /// copy of one of our group messages (announced as a group delivery, or not at all).
    pub(crate) fn receipted(&self, id: &MessageId, peer: &PeerId, state: MessageState, at_ms: u64) {
        if !self.heard() {
            return;
        }
        match self.store.group_copy(id) {
            Ok(Some(_)) => self.group_copy(id, peer, state, at_ms),
            _ => self.state(id, peer, state, None, at_ms),
        }
    }

    /// Announces a state change of one of our messages, naming the recipient by contact name
    /// when they are one.
    pub(crate) fn state(
        &self,
        id: &MessageId,
        peer: &PeerId,
        state: MessageState,
        detail: Option<String>,
        at_ms: u64,
    ) {
        if !self.heard() {
            return;
        }
        let to = match self.store.contact_name(peer) {
            Ok(Some(name)) => name,
            _ => peer.to_string(),
        };
        self.send(Event::State(StateChange { id: format_id(id), to, state, detail, at_ms }));
    }

    /// Announces a state change of an outbox row, unless it is a receipt: receipts are
    /// plumbing, not messages the user sent, so subscribers never hear of them.
    pub(crate) fn outgoing(
        &self,
        row: &OutboxRow,
        state: MessageState,
        detail: Option<String>,
        at_ms: u64,
    ) {
        match row.body {
            OutboxBody::Text(_) | OutboxBody::Numbered(..) => {
                self.state(&row.id, &row.peer_id, state, detail, at_ms)
            }
            OutboxBody::Group(_) => self.group_copy(&row.id, &row.peer_id, state, at_ms),
            OutboxBody::Receipt(_) | OutboxBody::Read(_) => {}
        }
    }

    /// Announces that a member's copy of one of our group texts changed state; copies of
    /// changes and requests are plumbing and announce nothing.
    pub(crate) fn group_copy(
        &self,
        row: &MessageId,
        member: &PeerId,
        state: MessageState,
        at_ms: u64,
    ) {
        if !self.heard() {
            return;
        }
        let Ok(Some((group, message))) = self.store.group_copy(row) else { return };
        if message == [0; 16] {
            return;
        }
        let name = self.store.group(&group).ok().flatten().map(|g| g.name).unwrap_or_default();
        let member_name = match self.store.contact_name(member) {
            Ok(Some(name)) => name,
            _ => member.to_string(),
        };
        self.send(Event::GroupDelivery(GroupDelivery {
            group: format_id(&group),
            group_name: name,
            id: format_id(&message),
            member: member_name,
            member_peer_id: member.to_string(),
            state,
            at_ms,
        }));
    }
}
