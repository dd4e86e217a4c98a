//! The outbox: every outgoing item (texts, delivery and read receipts) is committed to the store
//! before anything is sent, then attempted, and retried on a schedule until the recipient's node
//! acknowledges it or [`MESSAGE_TTL`] passes.
//!
//! One attempt: seal the item once (through the conversation, on a worker) and keep its sealed
//! envelopes, its *parts*, in the store; send the parts the recipient has not acknowledged
//! ([`transfer`]); if that fails look the peer up afresh and try its new addresses, seal again
//! what the recipient no longer takes (an envelope kept too long, a prekey it lost), and
//! finally deposit what it lacks in its mailbox. What an attempt's outcome means for the
//! message (sent, failed, or retry when) is decided by one pure function, [`verdict`], so the
//! schedule is tested without a network.

mod acknowledgements;
pub mod files;
mod seal;
pub mod transfer;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kolokol_protocol::control::{self, MessageState};
use kolokol_protocol::message::{
    Body, Content, MAX_RECEIPT_IDS, MAX_TEXT_LEN, MessageId, format_id,
};
use libp2p::PeerId;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::contacts::Recipient;
use crate::conversations::{Conversations, Held};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::ids::new_message_id;
use crate::mailbox::Mailboxes;
use crate::outbox::transfer::{Paths, Stopwatch};
use crate::presence::Presence;
use crate::store::{OutboxBody, OutboxRow, OutboxView, SealedPart, Store, attempt_envelopes};
use crate::swarm::{self, DeliveryFailure};

/// How long an outgoing message is retried before it is marked failed.
pub const MESSAGE_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);

// Mailbox replicas keep a deposit no longer than the outbox goes on trying.
const _: () = assert!(MESSAGE_TTL.as_secs() == crate::mailbox::MAX_ITEM_TTL.as_secs());

/// How long an attempt owns its outbox row: the outbox loop leaves a row alone for this long
/// after an attempt starts, so one message is not sent twice at once. It must outlast the
/// longest attempt, a delivery ([`crate::swarm::behaviour::DELIVERY_TIMEOUT`], 10 s), a
/// presence lookup ([`crate::presence::RESOLVE_TIMEOUT`], 15 s) and a second delivery (10 s),
/// with room for a slow store and crypto workers busy with other envelopes.
pub const ATTEMPT_CLAIM: Duration = Duration::from_secs(60);

/// Longest wait between two delivery attempts of one message: once the path is back, a
/// message waits at most this long even when nothing told the node (a dial to a peer that was
/// unreachable costs nothing more than once per `swarm::MIN_REDIAL_INTERVAL`).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The wait before a message whose delivery was merely slow (the recipient's node was
/// connected but did not answer in time) is tried again: it is not left in a mailbox, since
/// its recipient is online, and what it already delivered stays delivered.
pub const SLOW_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Attempts under way at once, across all messages; the retry loop starts no more.
pub const MAX_ATTEMPTS_IN_FLIGHT: usize = 256;

/// The outbox looks for due messages at least this often even without a wake-up.
pub const OUTBOX_POLL: Duration = Duration::from_secs(5);

/// What one attempt's outcome means for the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The recipient's node acknowledged it.
    Sent,
    /// Give up, with the reason to record: the recipient refused it for good, or it was not
    /// delivered within [`MESSAGE_TTL`].
    Failed {
        /// The state's detail.
        detail: String,
    },
    /// Try again at `at_ms`; `attempts` counts this one.
    Retry {
        /// Attempts made so far, this one included.
        attempts: u32,
        /// When the next attempt is due, Unix ms.
        at_ms: u64,
    },
}

/// Decides what an attempt's `outcome` means for a message created at `created_at_ms` that had
/// `attempts` attempts before this one: sent; failed if refused for good or older than
/// [`MESSAGE_TTL`]; else retried after [`retry_delay`].
pub(crate) fn verdict(
    outcome: &std::result::Result<(), DeliveryFailure>,
    attempts: u32,
    created_at_ms: u64,
    now_ms: u64,
) -> Verdict {
    match outcome {
        Ok(()) => Verdict::Sent,
        Err(f) if f.permanent => Verdict::Failed { detail: f.reason.clone() },
        Err(f) if now_ms.saturating_sub(created_at_ms) > MESSAGE_TTL.as_millis() as u64 => {
            Verdict::Failed {
                detail: format!(
                    "not delivered within {} days: {}",
                    MESSAGE_TTL.as_secs() / 86_400,
                    f.reason
                ),
            }
        }
        Err(f) if f.slow => Verdict::Retry {
            attempts: attempts + 1,
            at_ms: now_ms + SLOW_RETRY_DELAY.as_millis() as u64,
        },
        Err(_) => {
            let attempts = attempts + 1;
            Verdict::Retry { attempts, at_ms: now_ms + retry_delay(attempts).as_millis() as u64 }
        }
    }
}

/// Why the recipient's node refused a message of `envelopes` envelopes, for the user. Its
/// answer is one byte (`Rejected`) that does not say why, but what was sent narrows it down: a
/// node refuses the chunks of a long message from anyone it has not added as a contact (see
/// `Inbox::accept`), while one envelope is refused only when it does not open (the recipient
/// has a new key).
pub(crate) fn refusal(envelopes: usize) -> String {
    if envelopes > 1 {
        format!(
            "the recipient's node refused it: a message over about {} bytes travels in chunks, \
             and a node takes those only from people it has added as contacts; ask them to add \
             you (kolokol contacts add), or send shorter messages",
            kolokol_protocol::chunk::MAX_UNCHUNKED_LEN / 1000 * 1000
        )
    } else {
        "the recipient's node refused it: it could not open it (their key changed since their \
         invite: ask them for a new one)"
            .into()
    }
}

/// The wait after the `attempts`-th failed attempt: 2 s, doubling each time, at most
/// [`MAX_RETRY_DELAY`].
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(9)).min(MAX_RETRY_DELAY)
}

/// An item's sealed parts in a form to send: index and envelope.
type Parts = Vec<(u32, Vec<u8>)>;

/// A cloneable handle to the outbox.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<OutboxParts>);

/// What the outbox works with.
pub(crate) struct OutboxParts {
    pub(crate) conversations: Conversations,
    pub(crate) presence: Presence,
    pub(crate) mailboxes: Mailboxes,
    pub(crate) swarm: swarm::Client,
    pub(crate) store: Store,
    pub(crate) events: Events,
    pub(crate) clock: Clock,
    /// Wakes the outbox loop: something became due.
    pub(crate) wake: Arc<Notify>,
    /// The items an attempt is under way for, so no item is attempted twice at once;
    /// at most [`MAX_ATTEMPTS_IN_FLIGHT`] from the loop, plus the first attempts of `send`.
    pub(crate) in_flight: Flights,
    /// What the outbox knows of the path to each peer.
    pub(crate) paths: Paths,
    /// Held from taking a text's number to committing it, so no two texts get the same one.
    pub(crate) numbering: tokio::sync::Mutex<()>,
    /// The largest file this node sends, in bytes.
    pub(crate) max_file_size: u64,
    /// Records acknowledgements that land together in one transaction.
    pub(crate) acknowledgements: acknowledgements::Acknowledgements,
}

/// The items an attempt is under way for, and a signal each time one ends.
#[derive(Default)]
pub(crate) struct Flights {
    ids: Mutex<HashSet<MessageId>>,
    landed: Notify,
}

/// An item's place in [`OutboxParts::in_flight`], given up when dropped.
struct InFlight<'a> {
    outbox: &'a Outbox,
    id: MessageId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let flights = &self.outbox.0.in_flight;
        flights.ids.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
        flights.landed.notify_waiters();
    }
}

impl Outbox {
    pub(crate) fn new(parts: OutboxParts) -> Self {
        Self(Arc::new(parts))
    }

    /// Sends a text to a contact: commits it to the outbox, then makes the first delivery
    /// attempt. Returns when that attempt has an answer; if it failed, the outbox keeps trying.
    pub(crate) async fn send(&self, to: Recipient, text: &str) -> Result<control::SendResult> {
        let row = new_text(to, text, self.0.clock.now_ms())?;
        let now = row.created_at_ms;
        let claim = ATTEMPT_CLAIM.as_millis() as u64 * attempt_envelopes(&row.body);
        // Numbered, sealed, then the row, its number, its sealed parts and the conversation
        // state they were sealed with are committed in one transaction, before anything is
        // sent.
        let numbering = self.0.numbering.lock().await;
        let row = self.numbered(row)?;
        let sealed = self.seal(&row, None).await;
        {
            let write = sealed.as_ref().ok().and_then(Held::write);
            let parts = sealed.as_ref().map(|h| h.value.as_slice()).unwrap_or(&[]);
            self.0.store.enqueue_sealed(&row, now + claim, write.as_ref(), parts)?;
        }
        drop(numbering);
        let sealed = sealed.map(Held::stored);
        self.0.events.state(&row.id, &row.peer_id, MessageState::Queued, None, now);
        let Some(_flight) = self.take_off(&row.id) else {
            // The outbox loop took it between the commit and here (the peer connected, and
            // everything waiting for it became due): its attempt is this one.
            let (state, detail) = self.landed(&row.id).await;
            return Ok(control::SendResult { id: format_id(&row.id), state, detail });
        };
        let (state, detail) = self.deliver(&row, sealed.map(|p| (p, true))).await;
        Ok(control::SendResult { id: format_id(&row.id), state, detail })
    }

    /// Commits a text to the outbox and returns at once, `queued`: the outbox loop makes the
    /// first attempt, and `state` events tell how it went. A client that must be able to stop
    /// waiting (the CLI on Ctrl-C) learns the id as soon as the message is safe.
    pub(crate) async fn enqueue(&self, to: Recipient, text: &str) -> Result<control::SendResult> {
        let row = new_text(to, text, self.0.clock.now_ms())?;
        let now = row.created_at_ms;
        let numbering = self.0.numbering.lock().await;
        let row = self.numbered(row)?;
        self.0.store.enqueue_sealed(&row, now, None, &[])?;
        drop(numbering);
        self.0.events.state(&row.id, &row.peer_id, MessageState::Queued, None, now);
        self.0.wake.notify_one();
        Ok(control::SendResult {
            id: format_id(&row.id),
            state: MessageState::Queued,
            detail: None,
        })
    }

    /// The text of `row` with the number it will take in our series for the recipient. The
    /// caller holds the numbering lock until the row is committed.
    fn numbered(&self, row: OutboxRow) -> Result<OutboxRow> {
        let OutboxBody::Text(text) = row.body else { return Ok(row) };
        let number = self.0.store.peek_number(&row.peer_id, rand::random())?;
        Ok(OutboxRow { body: OutboxBody::Numbered(number, text), ..row })
    }

    /// Makes the first attempts of rows already committed (and claimed) by their owner, at
    /// most `in_flight` at once, and returns the state each is left in, in order: how a group
    /// message reaches its members, each copy in its own conversation.
    pub(crate) async fn attempt_all(
        &self,
        rows: Vec<OutboxRow>,
        in_flight: usize,
    ) -> Vec<(MessageState, Option<String>)> {
        let slots = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
        let mut attempts = JoinSet::new();
        for (i, row) in rows.into_iter().enumerate() {
            let (outbox, slots) = (self.clone(), slots.clone());
            attempts.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let result = match outbox.attempt(&row).await {
                    Some(result) => result,
                    // The outbox loop took it first (its peer connected meanwhile, which makes
                    // everything waiting for the peer due): what that attempt did is the answer.
                    None => outbox.landed(&row.id).await,
                };
                (i, result)
            });
        }
        let mut results = vec![(MessageState::Queued, None); attempts.len()];
        while let Some(done) = attempts.join_next().await {
            if let Ok((i, result)) = done
                && let Some(slot) = results.get_mut(i)
            {
                *slot = result;
            }
        }
        results
    }

    /// Wakes the retry loop: something was queued due now.
    pub(crate) fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// Marks an item in flight; `None` if an attempt is already under way for it.
    fn take_off(&self, id: &MessageId) -> Option<InFlight<'_>> {
        let mut in_flight = self.0.in_flight.ids.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.insert(*id).then(|| InFlight { outbox: self, id: *id })
    }

    /// Whether an attempt is under way for the item.
    fn is_in_flight(&self, id: &MessageId) -> bool {
        self.0.in_flight.ids.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// Waits for the attempt under way for an item to end, and returns the state it left the
    /// item in (as recorded, so `queued` if the record cannot be read).
    async fn landed(&self, id: &MessageId) -> (MessageState, Option<String>) {
        loop {
            // Registered before the check, so an attempt ending in between still wakes us.
            let landed = self.0.in_flight.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if !self.is_in_flight(id) {
                break;
            }
            landed.await;
        }
        // Any kind of item: a group send waits here for its members' copies, which are not
        // texts of the user's own (`Store::outgoing` leaves them out).
        match self.0.store.outbox_state(id) {
            Ok(Some(state)) => state,
            _ => (MessageState::Queued, None),
        }
    }

    /// Makes everything waiting for `peer` due now (it just connected); returns how many.
    pub(crate) fn wake_peer(&self, peer: &PeerId) -> Result<usize> {
        let now = self.0.clock.now_ms();
        let woken =
            self.0.store.wake_peer(peer, now)? + self.0.store.wake_file_sends(Some(peer), now)?;
        if woken > 0 {
            self.0.wake.notify_one();
        }
        Ok(woken)
    }

    /// Makes everything waiting due now (connectivity came back); returns how many.
    pub(crate) fn wake_all(&self) -> Result<usize> {
        let now = self.0.clock.now_ms();
        let woken = self.0.store.wake_all(now)? + self.0.store.wake_file_sends(None, now)?;
        if woken > 0 {
            self.0.wake.notify_one();
        }
        Ok(woken)
    }

    /// One delivery attempt of an outbox row; records the outcome and returns the state it
    /// leaves the row in (`sent`, `stored`, `queued` or `failed`) with its detail. An item
    /// already in flight is left alone.
    async fn attempt(&self, row: &OutboxRow) -> Option<(MessageState, Option<String>)> {
        let _flight = self.take_off(&row.id)?;
        let parts = self.parts_to_send(row).await;
        Some(self.deliver(row, parts).await)
    }

    /// The parts of an outbox row still to send, sealed by an earlier attempt (`false`) or now
    /// (`true`, stored with the conversation state they were sealed with).
    async fn parts_to_send(
        &self,
        row: &OutboxRow,
    ) -> std::result::Result<(Parts, bool), DeliveryFailure> {
        let kept =
            self.0.store.parts(&row.id).map_err(|e| DeliveryFailure::temporary(e.to_string()))?;
        if !kept.is_empty() {
            return Ok((unacked(kept), false));
        }
        self.seal_and_store(row, None).await.map(|p| (p, true))
    }

    /// Seals an outbox row (all of it, or only the parts `only` names) and stores the parts
    /// with the conversation state they were sealed with, in one transaction.
    async fn seal_and_store(
        &self,
        row: &OutboxRow,
        only: Option<&[u32]>,
    ) -> std::result::Result<Parts, DeliveryFailure> {
        let held = self.seal(row, only).await?;
        let now = self.0.clock.now_ms();
        self.0
            .store
            .put_parts(&row.id, &held.value, held.write().as_ref(), now)
            .map_err(|e| DeliveryFailure::temporary(e.to_string()))?;
        Ok(held.stored())
    }

    /// The rest of an attempt, once the row's parts are sealed and stored (`fresh` when this
    /// attempt sealed them): send them, and record the outcome.
    async fn deliver(
        &self,
        row: &OutboxRow,
        sealed: std::result::Result<(Parts, bool), DeliveryFailure>,
    ) -> (MessageState, Option<String>) {
        let mut stored = None;
        let outcome = match sealed {
            Err(failure) => Err(failure),
            Ok((mut parts, mut fresh)) => {
                let mut outcome = self.send_parts(row, &mut parts).await;
                // The connection it went over closed under it (both ends of a simultaneous dial
                // closing a duplicate, say): once more at once, over what is left or a new
                // connection, before anything is left in a mailbox.
                if matches!(&outcome, Err(f) if f.interrupted) {
                    outcome = self.send_parts(row, &mut parts).await;
                }
                // The addresses we had did not work: the peer may have moved to other relays.
                // Its presence record says where it is now; if it names new addresses, try
                // them at once.
                if matches!(&outcome, Err(f) if !f.permanent && !f.slow)
                    && self.0.presence.refresh_addresses(&row.peer_id, &self.0.conversations).await
                {
                    outcome = self.send_parts(row, &mut parts).await;
                }
                // A node from before numbered texts cannot decode one and refuses it: the same
                // text, sealed anew, goes once more unnumbered, which it reads. Refused again,
                // the refusal is about the key, and is handled below.
                if matches!(&outcome, Err(f) if f.refused)
                    && let OutboxBody::Numbered(_, text) = &row.body
                {
                    let plain = OutboxRow { body: OutboxBody::Text(text.clone()), ..row.clone() };
                    let _ = self.0.store.drop_parts(&row.id);
                    match self.seal_and_store(&plain, None).await {
                        Ok(resealed) => {
                            parts = resealed;
                            fresh = true;
                            outcome = self.send_parts(&plain, &mut parts).await;
                        }
                        Err(failure) => outcome = Err(failure),
                    }
                }
                // Refused for good. A conversation envelope: the peer no longer holds the
                // receive key it went to (it lost or restored its state), so the conversation
                // is re-keyed, visibly, through the peer's prekey (issue 15, finding 3); one
                // sealed by an earlier attempt is sealed again in any case (the peer may only
                // have rotated past its key). A first contact sealed to the peer's prekey: the
                // peer no longer holds its secret (a reinstall, say), so the prekey is
                // forgotten and a format 3 one goes to the device key. Either way what the peer
                // lacks is sealed again and sent at once. A refused format 4 first contact is
                // not: the conversation keeps its hybrid prekey (`Conversations::drop_prekey`
                // says why) and the message fails.
                let refused = matches!(&outcome, Err(f) if f.permanent);
                let conversation_envelope = parts
                    .first()
                    .and_then(|(_, e)| kolokol_protocol::envelope::peek(e).ok())
                    .is_some_and(|h| h.kind == kolokol_protocol::envelope::KIND_CONVERSATION);
                let again = refused
                    && if conversation_envelope {
                        self.0.conversations.peer_rejected(&row.peer_id).await || !fresh
                    } else {
                        !fresh || self.0.conversations.drop_prekey(&row.peer_id).await
                    };
                if again {
                    let missing: Vec<u32> = parts.iter().map(|(i, _)| *i).collect();
                    let _ = self.0.store.drop_unacked_parts(&row.id);
                    match self.seal_and_store(row, Some(&missing)).await {
                        Ok(resealed) => {
                            parts = resealed;
                            fresh = true;
                            outcome = self.send_parts(row, &mut parts).await;
                        }
                        // Nothing is deposited then: the envelopes we hold were refused.
                        Err(failure) => {
                            parts = Vec::new();
                            outcome = Err(failure);
                        }
                    }
                }
                // The recipient's node said no; say why, as far as what we sent tells.
                let outcome = outcome.map_err(|f| {
                    if f.refused {
                        DeliveryFailure {
                            reason: refusal(attempt_envelopes(&row.body) as usize),
                            ..f
                        }
                    } else {
                        f
                    }
                });
                let _ = fresh;
                // Still unreachable: leave what the recipient lacks in its mailbox. Direct
                // delivery goes on being retried, since it is faster when both are online. A
                // recipient that is online but slow gets it directly, soon.
                if matches!(&outcome, Err(f) if !f.permanent && !f.slow) && !parts.is_empty() {
                    let chunked =
                        attempt_envelopes(&row.body) > 1 || parts.iter().any(|(i, _)| *i > 0);
                    let address = self.0.conversations.peer_mailbox(&row.peer_id);
                    stored = Some(self.0.mailboxes.deposit(row, address, parts, chunked).await);
                }
                outcome
            }
        };
        let now = self.0.clock.now_ms();
        let (result, recorded) = match verdict(&outcome, row.attempts, row.created_at_ms, now) {
            Verdict::Sent => self.acknowledged(row, now).await,
            Verdict::Failed { detail } => {
                let _ = self.0.store.drop_parts(&row.id);
                // The caller hears the recipient's reason; the history says why we gave up.
                let reason = outcome.err().map(|f| f.reason);
                let recorded = self.record(row, MessageState::Failed, Some(detail), now).map(drop);
                ((MessageState::Failed, reason), recorded)
            }
            Verdict::Retry { attempts, at_ms } => {
                let reason = outcome.err().map(|f| f.reason).unwrap_or_default();
                let result = match stored {
                    Some(Ok(detail)) => (MessageState::Stored, Some(detail)),
                    Some(Err(why)) => (MessageState::Queued, Some(format!("{reason}; {why}"))),
                    None => (MessageState::Queued, Some(reason)),
                };
                let recorded = self.retry(row, &result, attempts, at_ms, now);
                (result, recorded)
            }
        };
        if let Err(e) = recorded {
            tracing::error!(%e, "cannot record a delivery outcome");
        }
        // A message stored by an earlier attempt stays stored whatever this one did.
        if result.0 == MessageState::Queued
            && let Ok(Some((MessageState::Stored, detail))) = self.0.store.outbox_state(&row.id)
        {
            return (MessageState::Stored, detail);
        }
        result
    }

    /// Records the recipient's node's acknowledgement. For a text that is delivery too: the
    /// node acknowledges only once the message is stored, on a stream authenticated end to end
    /// by its identity key, so no separate receipt is needed (docs/PROTOCOL.md, section 9.3).
    /// A receipt of ours is only `sent`.
    async fn acknowledged(
        &self,
        row: &OutboxRow,
        now: u64,
    ) -> ((MessageState, Option<String>), Result<()>) {
        let states: &'static [MessageState] = match row.body {
            OutboxBody::Text(_) | OutboxBody::Numbered(..) | OutboxBody::Group(_) => {
                &[MessageState::Sent, MessageState::Delivered]
            }
            OutboxBody::Receipt(_) | OutboxBody::Read(_) => &[MessageState::Sent],
        };
        let recorded = self.0.acknowledgements.record(&self.0.store, row.id, states, now).await;
        let recorded = recorded.map(|entered| {
            for state in entered {
                self.0.events.outgoing(row, state, None, now);
            }
        });
        let last = *states.last().unwrap_or(&MessageState::Sent);
        ((last, None), recorded)
    }

    /// Moves the row to `state` and, if that changed it, tells subscribers; returns whether it
    /// changed.
    fn record(
        &self,
        row: &OutboxRow,
        state: MessageState,
        detail: Option<String>,
        now: u64,
    ) -> Result<bool> {
        let changed = self.0.store.set_state(&row.id, state, detail.as_deref(), now)?;
        // A failure is announced even when the row already ended (it says why, once more).
        if changed || state == MessageState::Failed {
            self.0.events.outgoing(row, state, detail, now);
        }
        Ok(changed)
    }

    /// Records a failed attempt: `stored` if the mailbox now holds the message, and in any
    /// case the next attempt's time. A message stored by an earlier attempt stays stored
    /// whatever this one did, so its user sees no step back to `queued`.
    fn retry(
        &self,
        row: &OutboxRow,
        (state, detail): &(MessageState, Option<String>),
        attempts: u32,
        at_ms: u64,
        now: u64,
    ) -> Result<()> {
        let stored_before =
            matches!(self.0.store.outbox_state(&row.id), Ok(Some((MessageState::Stored, _))));
        let changed = if *state == MessageState::Stored {
            self.0.store.set_state(&row.id, MessageState::Stored, detail.as_deref(), now)?
        } else {
            false
        };
        self.0.store.reschedule(&row.id, attempts, at_ms, detail.as_deref().unwrap_or_default())?;
        if changed || (*state == MessageState::Queued && !stored_before) {
            self.0.events.outgoing(row, *state, detail.clone(), now);
        }
        Ok(())
    }

    /// Sends an item's parts directly, one after the other (a large one only while it holds
    /// the peer's bulk lane), each acknowledged part recorded and taken out of `parts` at once;
    /// the first failure is the attempt's outcome, and the next attempt sends only what is
    /// left.
    async fn send_parts(
        &self,
        row: &OutboxRow,
        parts: &mut Parts,
    ) -> std::result::Result<(), DeliveryFailure> {
        while let Some((index, envelope)) = parts.first().cloned() {
            self.deliver_one(&row.peer_id, envelope).await?;
            // The last part's acknowledgement is not written on its own: the item is then
            // acknowledged as a whole, its parts dropped in the same transaction
            // (`Store::acknowledged`), so a commit per message is saved. Were the node to stop
            // in between, the next attempt sends the same bytes again, which the recipient
            // accepts once more (docs/PROTOCOL.md, section 8.7), as after a stop just before
            // the acknowledgement arrived.
            if parts.len() > 1
                && let Err(e) = self.0.store.ack_part(&row.id, index, self.0.clock.now_ms())
            {
                tracing::error!(%e, "cannot record an acknowledged part");
            }
            parts.remove(0);
        }
        Ok(())
    }

    /// Delivers one envelope, within the time its size and the path allow, holding the peer's
    /// bulk lane if it is large.
    async fn deliver_one(
        &self,
        peer: &PeerId,
        envelope: Vec<u8>,
    ) -> std::result::Result<(), DeliveryFailure> {
        let len = envelope.len();
        let _lane = match self.0.paths.lane(peer, len) {
            Some(lane) => Some(
                lane.acquire_owned()
                    .await
                    .map_err(|_| DeliveryFailure::temporary("the node is shutting down"))?,
            ),
            None => None,
        };
        let timeout = self.0.paths.timeout(peer, len);
        let addresses = self.0.presence.known_addresses(peer);
        let watch = Stopwatch::start();
        self.0.swarm.deliver(*peer, addresses, envelope, timeout).await?;
        if let Some(goodput) = self.0.paths.measured(peer, len, watch.elapsed()) {
            tracing::warn!(
                %peer,
                kbit_s = (goodput * 8.0 / 1000.0).round(),
                "the path to this peer looks throttled: long messages take longer, short ones go first"
            );
        }
        Ok(())
    }

    /// Delivers whole envelopes that are not kept as parts (a batch of receipts), one after
    /// the other.
    async fn deliver_all(
        &self,
        peer: &PeerId,
        envelopes: &[Vec<u8>],
    ) -> std::result::Result<(), DeliveryFailure> {
        for envelope in envelopes {
            self.deliver_one(peer, envelope.clone()).await?;
        }
        Ok(())
    }

    /// Sends the delivery receipts of several messages to one peer in one envelope
    /// ([`Body::Receipts`]) and marks them all sent. If that cannot be done directly, each goes
    /// its own usual way (one envelope, retries, the mailbox), so batching never costs a receipt.
    async fn attempt_receipts(&self, rows: Vec<OutboxRow>) {
        if let [row] = rows.as_slice() {
            let _ = self.attempt(row).await;
            return;
        }
        let (peer, device_key) = (rows[0].peer_id, rows[0].device_key);
        let of: Vec<MessageId> = rows
            .iter()
            .filter_map(|r| match r.body {
                OutboxBody::Receipt(of) => Some(of),
                _ => None,
            })
            .collect();
        let content = Content {
            id: new_message_id(),
            sent_at_ms: self.0.clock.now_ms(),
            body: Body::Receipts { of },
        };
        let sealed = self
            .seal_content(&peer, device_key, content, None)
            .await
            .and_then(|held| held.store().map_err(|e| DeliveryFailure::temporary(e.to_string())));
        let sent = match sealed {
            Ok(parts) => {
                let envelopes: Vec<Vec<u8>> = parts.into_iter().map(|(_, e)| e).collect();
                self.deliver_all(&peer, &envelopes).await.is_ok()
            }
            Err(_) => false,
        };
        if sent {
            let ids: Vec<MessageId> = rows.iter().map(|r| r.id).collect();
            match self.0.store.set_sent(&ids, self.0.clock.now_ms()) {
                Ok(()) => return,
                Err(e) => tracing::error!(%e, "cannot record receipts sent"),
            }
        }
        let mut attempts = JoinSet::new();
        for row in rows {
            let outbox = self.clone();
            attempts.spawn(async move {
                let _ = outbox.attempt(&row).await;
            });
        }
        while attempts.join_next().await.is_some() {}
    }

    /// Retries queued messages and files until shutdown: when they fall due, when their peer
    /// connects, and when woken. Attempts run side by side, at most [`MAX_ATTEMPTS_IN_FLIGHT`]
    /// (files: [`files::MAX_FILE_SENDS_IN_FLIGHT`]): a long transfer to one peer holds up
    /// nothing else, and an item already in flight is not started again.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let store = &self.0.store;
        let mut attempts = JoinSet::new();
        let mut files = JoinSet::new();
        loop {
            while attempts.try_join_next().is_some() {}
            while files.try_join_next().is_some() {}
            self.start_due_files(&mut files);
            if attempts.len() + crate::store::OUTBOX_BATCH <= MAX_ATTEMPTS_IN_FLIGHT {
                let now = self.0.clock.now_ms();
                match store.due(now, now + ATTEMPT_CLAIM.as_millis() as u64) {
                    Ok(rows) => {
                        // Delivery receipts due together for one peer go in one envelope.
                        let mut receipts: HashMap<PeerId, Vec<OutboxRow>> = HashMap::new();
                        for row in rows {
                            if self.is_in_flight(&row.id) {
                                continue;
                            }
                            // Only first attempts: a receipt that failed before goes alone, so
                            // a peer that stays away costs one failed batch, not one per pass.
                            if matches!(row.body, OutboxBody::Receipt(_)) && row.attempts == 0 {
                                receipts.entry(row.peer_id).or_default().push(row);
                                continue;
                            }
                            let outbox = self.clone();
                            attempts.spawn(async move {
                                let _ = outbox.attempt(&row).await;
                            });
                        }
                        for (_, group) in receipts {
                            for group in group.chunks(MAX_RECEIPT_IDS) {
                                let (outbox, group) = (self.clone(), group.to_vec());
                                attempts.spawn(async move { outbox.attempt_receipts(group).await });
                            }
                        }
                    }
                    Err(e) => tracing::error!(%e, "cannot read the outbox"),
                }
            }
            let next = [store.next_due(), store.next_file_due()]
                .into_iter()
                .filter_map(|due| due.ok().flatten())
                .min();
            let wait = match next {
                Some(at) => self.0.clock.until_ms(at).min(OUTBOX_POLL),
                None => OUTBOX_POLL,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.0.wake.notified() => {}
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                Some(_) = files.join_next(), if !files.is_empty() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The parts of `kept` the recipient has not acknowledged, to send.
fn unacked(kept: Vec<SealedPart>) -> Parts {
    kept.into_iter().filter(|p| !p.acked).map(|p| (p.index, p.envelope)).collect()
}

/// An outgoing text message as the control API shows it.
pub(crate) fn outbox_view(m: OutboxView) -> control::OutboxMessage {
    control::OutboxMessage {
        id: format_id(&m.id),
        to: m.contact.unwrap_or_else(|| m.peer_id.to_string()),
        text: m.text,
        state: m.state,
        detail: m.detail,
        attempts: m.attempts,
        created_at_ms: m.created_at_ms,
    }
}

/// Checks a text before it is written anywhere: not empty, within [`MAX_TEXT_LEN`].
pub(crate) fn check_text(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::BadMessage("the message is empty".into()));
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(Error::BadMessage(format!(
            "the message is {} bytes, over the limit of {MAX_TEXT_LEN}",
            text.len()
        )));
    }
    Ok(())
}

/// A text to a contact as an outbox row, once checked ([`check_text`]).
fn new_text(to: Recipient, text: &str, now: u64) -> Result<OutboxRow> {
    check_text(text)?;
    Ok(OutboxRow {
        id: new_message_id(),
        peer_id: to.peer_id,
        device_key: to.device_key,
        body: OutboxBody::Text(text.to_owned()),
        created_at_ms: now,
        attempts: 0,
    })
}

#[cfg(test)]
mod tests;
