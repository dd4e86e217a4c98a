//! The receive path, one for every envelope whatever brought it (a direct delivery or a mailbox
//! fetch): open it through the right key, store what it says, and answer.
//!
//! A text goes into the inbox; if it came from a mailbox, a delivery receipt that answers it is
//! queued in the same transaction (one that came directly is answered by the acknowledgement on
//! the same stream, sent only once it is stored, which the sender takes as delivery). A receipt
//! marks our message delivered, a read receipt marks our messages read, a chunk waits in the
//! store until its message is whole, and a file's offer and chunks go to [`crate::files`].
//! Strangers may write (that is how first contact works) within quotas that refill after their
//! window ([`STRANGER_MESSAGES_PER_SENDER`], [`STRANGER_MESSAGES`], [`STRANGER_CONVERSATIONS`]);
//! contacts are never limited by strangers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kolokol_protocol::control::{Event, InboxMessage, MessageState};
use kolokol_protocol::conversation::Conversation;
use kolokol_protocol::envelope;
use kolokol_protocol::file::FileMessage;
use kolokol_protocol::identity::VerifiedCertificates;
use kolokol_protocol::message::{Body, Content, MessageId, format_id};
use libp2p::PeerId;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::conversations::{Conversations, Held};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::groups::Groups;
use crate::ids::receipt_id;
use crate::keys::Keys;
use crate::quota::{LogLimit, Quota};
use crate::store::{ChunkOutcome, InboxRow, Number, OutboxBody, OutboxRow, Store};
use crate::swarm::{self, Inbound};
use crate::wire::delivery::Ack;
use crate::workers::Workers;

/// The window of the stranger quotas: what strangers used more than a day ago no longer
/// counts, so a flood (of one identity or of thousands) delays other strangers by at most a
/// day, and their senders, who are answered busy, try again.
pub const STRANGER_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Messages stored from any one sender who is not a contact, per [`STRANGER_WINDOW`]. First
/// contact needs strangers to be able to write, but a stranger must not be able to fill the
/// disk.
pub const STRANGER_MESSAGES_PER_SENDER: Quota = Quota::new(100, STRANGER_WINDOW);

/// Messages stored from all non-contacts together, per [`STRANGER_WINDOW`]: a thousand
/// throwaway identities cannot make the disk grow faster than this.
pub const STRANGER_MESSAGES: Quota = Quota::new(1000, STRANGER_WINDOW);

/// Conversations with peers who are not contacts that were active in the last
/// [`STRANGER_WINDOW`]; past this, first contacts from new strangers are answered busy until
/// older ones fall out of the window. Conversation state is at most about 50 KiB, so this
/// bounds how fast strangers can grow it.
pub const STRANGER_CONVERSATIONS: Quota = Quota::new(1000, STRANGER_WINDOW);

/// How long the chunks of an incomplete message are kept: the sender stops trying after the
/// same time.
pub const CHUNK_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How often chunks of messages whose sender gave up are dropped.
pub const CHUNK_PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// How an envelope reached us, which decides whether its sender needs a receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Over `/kolokol/msg/1` from the sender's node, which hears our acknowledgement on the
    /// same authenticated stream once the message is stored.
    Direct,
    /// Fetched from one of our mailboxes: the sender hears nothing unless we send a receipt.
    Mailbox,
}

/// An opened envelope, with the conversation it was opened through still held, its new state
/// not stored yet (`None` for a format 1 envelope, which has no conversation).
struct Opened {
    sender: PeerId,
    device_key: [u8; 32],
    content: Content,
    held: Option<Held<()>>,
}

impl Opened {
    fn held(held: Held<(PeerId, [u8; 32], Content)>) -> Self {
        let ((sender, device_key, content), held) = held.split();
        Self { sender, device_key, content, held: Some(held) }
    }
}

/// A cloneable handle to the receive path.
#[derive(Clone)]
pub(crate) struct Inbox(Arc<InboxParts>);

/// What the receive path works with.
pub(crate) struct InboxParts {
    pub(crate) conversations: Conversations,
    pub(crate) store: Store,
    pub(crate) keys: Keys,
    pub(crate) events: Events,
    pub(crate) workers: Workers,
    pub(crate) clock: Clock,
    /// Where group messages go.
    pub(crate) groups: Groups,
    /// Where files' offers and chunks go.
    pub(crate) downloads: crate::files::Downloads,
    /// Wakes the outbox: a receipt was queued.
    pub(crate) outbox_wake: Arc<Notify>,
    /// One log line per window for refusals past the stranger quotas.
    pub(crate) quota_log: Mutex<LogLimit>,
    /// The senders' device certificates verified so far (bounded): a sender's first contacts
    /// all carry the same one until its conversation starts, and each Ed25519 verification
    /// cost about a tenth of this node's CPU per message.
    pub(crate) verified_certificates: VerifiedCertificates,
}

/// What became of one envelope: [`Received::ack`] is the answer a sender gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Opened and stored (now or before).
    Accepted,
    /// Refused for good: it does not open, or says something out of bounds.
    Rejected,
    /// Not taken now (a full queue, a store that could not write): try again.
    Busy,
    /// From a stranger past a quota with a window: not stored, and the sender may try again
    /// once the window has moved on.
    OverQuota,
}

impl Received {
    /// The answer on the wire: a stranger past a quota is told busy, so its node tries again
    /// later instead of giving the message up.
    pub(crate) fn ack(self) -> Ack {
        match self {
            Received::Accepted => Ack::Accepted,
            Received::Rejected => Ack::Rejected,
            Received::Busy | Received::OverQuota => Ack::Busy,
        }
    }
}

impl Inbox {
    pub(crate) fn new(parts: InboxParts) -> Self {
        Self(Arc::new(parts))
    }

    /// Takes envelopes from the swarm task and opens each on a worker, answering through
    /// `swarm`; drops chunks of messages their sender gave up on. At most one opener per core
    /// runs at a time; while they are all busy, envelopes wait in the bounded inbound queue, and
    /// once that is full the swarm task answers new ones [`Ack::Busy`].
    /// Contacts' envelopes come first, from a queue of their own: strangers can fill theirs
    /// and keep every opener busy, and a contact's envelope still goes before the next of
    /// theirs.
    pub(crate) async fn run(
        self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut from_contacts: mpsc::Receiver<Inbound>,
        swarm: swarm::Client,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut openers = JoinSet::new();
        let mut purge = tokio::time::interval(CHUNK_PURGE_INTERVAL);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let idle = openers.len() < self.0.workers.count();
            tokio::select! {
                biased;
                next = from_contacts.recv(), if idle => match next {
                    Some(inbound) => self.open_on(&mut openers, inbound, &swarm),
                    None => break,
                },
                next = inbound.recv(), if idle => match next {
                    Some(inbound) => self.open_on(&mut openers, inbound, &swarm),
                    None => break,
                },
                Some(_) = openers.join_next(), if !openers.is_empty() => {}
                _ = purge.tick() => self.purge_chunks(),
                _ = shutdown.changed() => break,
            }
        }
        openers.shutdown().await;
    }

    /// Opens one envelope on a worker and answers its sender.
    fn open_on(&self, openers: &mut JoinSet<()>, inbound: Inbound, swarm: &swarm::Client) {
        let Inbound { peer, envelope, channel } = inbound;
        let (inbox, swarm) = (self.clone(), swarm.clone());
        openers.spawn(async move {
            let ack = inbox.open_and_accept(envelope, Arrival::Direct).await;
            swarm.respond(peer, channel, ack).await;
        });
    }

    /// Drops the chunks of messages whose first chunk arrived longer than [`CHUNK_TTL`] ago,
    /// and gives up files nothing arrived for in as long.
    fn purge_chunks(&self) {
        let before = self.0.clock.now_ms().saturating_sub(CHUNK_TTL.as_millis() as u64);
        match self.0.store.purge_chunks(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "dropped chunks of incomplete messages"),
            Err(e) => tracing::error!(%e, "cannot purge chunks"),
        }
        match self.0.downloads.purge(before) {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "gave up files whose senders stopped sending"),
            Err(e) => tracing::error!(%e, "cannot purge abandoned files"),
        }
    }

    /// Opens an envelope and accepts it: the one path for envelopes that arrive directly and
    /// those fetched from mailboxes, so both get the same checks, the same duplicate detection
    /// and the same receipts.
    pub(crate) async fn open_and_accept(&self, envelope: Vec<u8>, arrival: Arrival) -> Ack {
        self.open_and_store(envelope, arrival).await.ack()
    }

    /// As [`Inbox::open_and_accept`], telling a stranger past its quota apart from a busy
    /// node: the mailbox fetch deletes the first (its sender keeps trying on its own) and keeps
    /// the second.
    pub(crate) async fn open_and_store(&self, envelope: Vec<u8>, arrival: Arrival) -> Received {
        match self.receive(envelope, arrival).await {
            Ok(received) => received,
            // Opening it crashed a worker: answering `Busy` would have it sent (or fetched)
            // again for ever.
            Err(Error::WorkerPanicked) => {
                tracing::error!("refused an envelope that crashed a crypto worker");
                Received::Rejected
            }
            Err(e) => {
                tracing::error!(%e, "cannot store a received message");
                Received::Busy
            }
        }
    }

    /// Opens one envelope and stores what it says. The header says which way to open it: a
    /// format 1 envelope to the device key (legacy contacts only); a conversation envelope with
    /// the receive key its id names, through that peer's conversation; or a first contact to a
    /// hybrid prekey (format 4), a signed prekey or the device key (format 3), which starts or
    /// continues the sender's conversation. Every check that costs no public-key operation (the
    /// length, the key id, a format 4 tag) runs before any that does.
    async fn receive(&self, envelope: Vec<u8>, arrival: Arrival) -> Result<Received> {
        use kolokol_protocol::Error as P;
        let now = self.0.clock.now_secs();
        let header = match envelope::peek(&envelope) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%e, "rejected an envelope");
                return Ok(Received::Rejected);
            }
        };
        let keys = self.0.keys.clone();
        let opened: std::result::Result<Opened, P> = match (
            header.version,
            header.kind,
            header.key_id,
        ) {
            (envelope::ENVELOPE_VERSION, _, _) => {
                let opened = self
                    .0
                    .workers
                    .run(move || envelope::open(keys.identity().device(), &envelope, now))
                    .await?;
                match opened {
                    Ok(o) => {
                        if !self.format_1_allowed(&o.sender)? {
                            tracing::info!(sender = %o.sender, "refused a format 1 envelope: only contacts without a conversation may still send them");
                            return Ok(Received::Rejected);
                        }
                        if let Err(e) = check_sent_at(o.content.sent_at_ms, now) {
                            tracing::info!(sender = %o.sender, %e, "refused a format 1 envelope");
                            return Ok(Received::Rejected);
                        }
                        Ok(Opened {
                            sender: o.sender,
                            device_key: o.certificate.device_key,
                            content: o.content,
                            held: None,
                        })
                    }
                    Err(e) => Err(e),
                }
            }
            (_, envelope::KIND_CONVERSATION, Some(key_id)) => {
                let Some(peer) = self.0.store.peer_for_key(&key_id)? else {
                    tracing::debug!("rejected an envelope for an unknown receive key");
                    return Ok(Received::Rejected);
                };
                // The sender is the peer whose conversation the key belongs to (its state is
                // kept under that peer id): no need to derive it from the certificate again.
                let sender = peer;
                let held = self
                    .0
                    .conversations
                    .hold(&peer, move |conversation| {
                        let c = conversation
                            .as_mut()
                            .ok_or(P::Envelope("no conversation for this key"))?;
                        let content = match c.open(keys.identity(), &envelope, now) {
                            // Accepted before: a state is stored only with (or after) what its
                            // envelope said, so the message is in already. Acting on it again is
                            // idempotent, by message id, and covers a state stored by an older
                            // version before its message.
                            Err(P::Replayed) => {
                                c.reopen(keys.identity(), &envelope).map_err(|_| P::Replayed)?
                            }
                            other => other?,
                        };
                        Ok((sender, c.peer_certificate().device_key, content))
                    })
                    .await?;
                held.map(Opened::held)
            }
            (_, envelope::KIND_FIRST_CONTACT, key_id) => {
                match self.open_first_contact(envelope, header.version, key_id, now).await? {
                    Ok(opened) => opened,
                    Err(refused) => return Ok(refused),
                }
            }
            _ => Err(P::Envelope("unknown envelope kind")),
        };
        match opened {
            Ok(Opened { sender, device_key, content, held }) => {
                // The conversation's new state (the envelope counted as seen) is stored with
                // what the envelope said, or alone if it is refused for good; if it cannot be
                // stored now (busy, an error), it is not stored at all, so the very same bytes
                // open again next time (a mailbox hands them over again).
                let mut held = held;
                let ack = self.accept(sender, device_key, content, arrival, &mut held)?;
                if matches!(ack, Received::Accepted | Received::Rejected)
                    && let Some(held) = held
                {
                    held.store()?;
                }
                Ok(ack)
            }
            // A replay whose content could not be had again: it was acted on before.
            Err(P::Replayed) => Ok(Received::Accepted),
            Err(e) => {
                tracing::debug!(%e, "rejected an envelope");
                Ok(Received::Rejected)
            }
        }
    }

    /// Whether a format 1 envelope from `sender` may be accepted: only from a contact with whom
    /// we hold no conversation (one added before conversations existed, whose node may still
    /// seal format 1), and from ourselves (the doctor's mailbox probe). Anyone else has a
    /// conversation to use, and format 1 has neither forward secrecy nor a cheap rejection.
    fn format_1_allowed(&self, sender: &PeerId) -> Result<bool> {
        if *sender == self.0.keys.peer_id() {
            return Ok(true);
        }
        Ok(self.0.store.contact_name(sender)?.is_some() && !self.0.conversations.has(sender)?)
    }

    /// Opens a first contact: format 4 to the hybrid prekey its key id names (the id and the
    /// tag are checked before any public-key work), format 3 to the signed prekey its key id
    /// names or else to the device key; then starts or continues the sender's conversation
    /// with it. `Err` is the answer instead: rejected if it does not open, over quota if too
    /// many strangers started conversations within the window.
    async fn open_first_contact(
        &self,
        envelope: Vec<u8>,
        version: u8,
        key_id: Option<[u8; 8]>,
        now: u64,
    ) -> Result<std::result::Result<std::result::Result<Opened, kolokol_protocol::Error>, Received>>
    {
        use kolokol_protocol::Error as P;
        let keys = self.0.keys.clone();
        let opened = if version == envelope::ENVELOPE_VERSION_4 {
            let Some(id) = key_id else { return Ok(Err(Received::Rejected)) };
            let Some((prekey, secret)) = self.0.store.hybrid_prekey(&id)? else {
                tracing::debug!("rejected a first contact for an unknown hybrid prekey");
                return Ok(Err(Received::Rejected));
            };
            self.0
                .workers
                .run(move || {
                    envelope::open_first_contact_4(
                        &prekey,
                        &secret,
                        &keys.mailbox_address(),
                        keys.identity().identity_key(),
                        &envelope,
                        now,
                    )
                })
                .await?
        } else {
            let prekey = match key_id {
                Some(id) => self.0.store.prekey_secret(&id)?,
                None => None,
            };
            let verified = self.0.verified_certificates.clone();
            self.0
                .workers
                .run(move || {
                    let identity = keys.identity();
                    match prekey {
                        Some(secret) => envelope::open_first_contact_remembering(
                            &kolokol_protocol::identity::DeviceKey::from_secret(*secret),
                            identity.identity_key(),
                            &envelope,
                            now,
                            Some(&verified),
                        ),
                        None => envelope::open_first_contact_remembering(
                            identity.device(),
                            identity.identity_key(),
                            &envelope,
                            now,
                            Some(&verified),
                        ),
                    }
                })
                .await?
        };
        let first = match opened {
            Ok(first) => first,
            Err(e) => {
                tracing::debug!(%e, "rejected a first-contact envelope");
                return Ok(Err(Received::Rejected));
            }
        };
        let sender = first.sender;
        let since =
            self.0.clock.now_ms().saturating_sub(STRANGER_CONVERSATIONS.window.as_millis() as u64);
        if !self.0.conversations.has(&sender)?
            && self.0.store.contact_name(&sender)?.is_none()
            && !self.0.store.is_group_member(&sender)?
            && self.0.store.stranger_conversations(since)?
                >= u64::from(STRANGER_CONVERSATIONS.limit)
        {
            self.log_over_quota(&sender, "stranger conversations", STRANGER_CONVERSATIONS);
            return Ok(Err(Received::OverQuota));
        }
        let opened = self
            .0
            .conversations
            .hold(&sender, move |conversation| {
                let (peer, device_key) = (first.sender, first.certificate.device_key);
                let content = match conversation {
                    // A replay is acted on again, as for conversation envelopes.
                    Some(c) => {
                        let again = first.content.clone();
                        match c.accept_first_contact(first, now) {
                            Err(P::Replayed) => again,
                            other => other?,
                        }
                    }
                    None => {
                        let (c, content) = Conversation::from_first_contact(first, now)?;
                        *conversation = Some(c);
                        content
                    }
                };
                Ok((peer, device_key, content))
            })
            .await?;
        Ok(Ok(opened.map(Opened::held)))
    }

    /// Stores an opened envelope and reacts to it: a text is put in the inbox and answered by a
    /// receipt, a receipt marks our message delivered, a read receipt marks our messages read.
    fn accept(
        &self,
        sender: PeerId,
        device_key: [u8; 32],
        content: Content,
        arrival: Arrival,
        held: &mut Option<Held<()>>,
    ) -> Result<Received> {
        let store = &self.0.store;
        let now = self.0.clock.now_ms();
        // Decoding bounds only the size; a read receipt naming no ids, or more than any of our
        // nodes puts in one, is refused before anything acts on it.
        if !content.body.is_valid() {
            tracing::info!(%sender, "refused a body out of bounds");
            return Ok(Received::Rejected);
        }
        // A blocked peer's envelopes are taken, so its node stops trying, and dropped: no
        // message, no receipt, nothing it could tell apart from a delivery.
        if store.is_blocked(&sender)? {
            tracing::debug!(%sender, "dropped an envelope from a blocked peer");
            return Ok(Received::Accepted);
        }
        // A numbered text is stored as a text with its place in the sender's conversation.
        let mut number = None;
        let body = match content.body {
            Body::NumberedText { series, seq, text } => {
                number = Some(Number { series, seq });
                Body::Text(text)
            }
            other => other,
        };
        match body {
            Body::Text(text) | Body::NumberedText { text, .. } => {
                if self.stranger_over_quota(&sender)? {
                    return Ok(Received::OverQuota);
                }
                let row = InboxRow {
                    id: content.id,
                    peer_id: sender,
                    contact: None,
                    text,
                    sent_at_ms: content.sent_at_ms,
                    received_at_ms: now,
                    read_at_ms: None,
                    number,
                };
                // A message fetched from a mailbox is answered by a receipt, committed with it:
                // a crash between the two would leave a stored message whose sender never
                // hears of it. One that came directly is answered by the acknowledgement, and
                // by a receipt too when the conversation asks for an answer (docs/PROTOCOL.md
                // 8.11): a sender that never hears from us has no key of ours, or only an old
                // one, and would seal every text as a first contact, or to that one key. Only
                // contacts are answered: a stranger's messages are few and held to quotas, and
                // answering each new identity would be work for whoever makes them.
                let answer = arrival == Arrival::Direct
                    && held
                        .as_ref()
                        .and_then(Held::conversation)
                        .is_some_and(|c| c.answer_due(now / 1000))
                    && store.contact_name(&sender)?.is_some();
                let receipt = (arrival == Arrival::Mailbox || answer).then(|| OutboxRow {
                    id: receipt_id(&sender, &content.id),
                    peer_id: sender,
                    device_key,
                    body: OutboxBody::Receipt(content.id),
                    created_at_ms: now,
                    attempts: 0,
                });
                // One transaction for the message, its receipt and the conversation state it
                // was opened with.
                let conversation = held.take();
                let new = store.receive(
                    &row,
                    receipt.as_ref(),
                    conversation.as_ref().and_then(Held::write).as_ref(),
                )?;
                if let Some(conversation) = conversation {
                    conversation.stored();
                }
                if receipt.is_some() {
                    self.0.outbox_wake.notify_one();
                }
                if new {
                    let contact = store.contact_name(&sender)?;
                    self.0.events.send(Event::Message(event_view(InboxRow { contact, ..row })));
                }
            }
            Body::Group(message) => {
                let ack = self.0.groups.accept(
                    sender,
                    device_key,
                    content.id,
                    content.sent_at_ms,
                    message,
                    arrival,
                    held,
                )?;
                return Ok(match ack {
                    Ack::Accepted => Received::Accepted,
                    Ack::Rejected => Received::Rejected,
                    Ack::Busy => Received::Busy,
                });
            }
            Body::Receipt { of } => self.delivered(&of, &sender, now)?,
            Body::Receipts { of } => {
                for id in &of {
                    self.delivered(id, &sender, now)?;
                }
            }
            Body::Chunk { index, count, body_len, data } => {
                // Long messages are for contacts and fellow group members: a stranger's first
                // messages fit one envelope, so nobody we never added (or were added to a group
                // with) can make us keep megabytes of halves or of text.
                if store.contact_name(&sender)?.is_none() && !store.is_group_member(&sender)? {
                    tracing::info!(%sender, "refused a chunk from a peer who is not a contact");
                    return Ok(Received::Rejected);
                }
                let kept = store.add_chunk(
                    &sender,
                    &content.id,
                    index,
                    count,
                    body_len,
                    content.sent_at_ms,
                    &data,
                    now,
                )?;
                let chunks = match kept {
                    ChunkOutcome::Kept | ChunkOutcome::AlreadyReceived => {
                        return Ok(Received::Accepted);
                    }
                    ChunkOutcome::Full => {
                        tracing::info!(%sender, "deferred a chunk: too many partial messages");
                        return Ok(Received::Busy);
                    }
                    ChunkOutcome::Inconsistent => {
                        tracing::info!(%sender, "refused a chunk that contradicts its message");
                        return Ok(Received::Rejected);
                    }
                    ChunkOutcome::Complete(chunks) => chunks,
                };
                let joined =
                    kolokol_protocol::chunk::join(chunks.iter().map(Vec::as_slice), body_len);
                drop(chunks);
                let ack = match joined {
                    Ok(body) => {
                        let whole =
                            Content { id: content.id, sent_at_ms: content.sent_at_ms, body };
                        self.accept(sender, device_key, whole, arrival, &mut None)?
                    }
                    Err(e) => {
                        tracing::info!(%sender, %e, "refused a message whose chunks do not join");
                        Received::Rejected
                    }
                };
                // Stored (or refused for good): the chunks have served. A crash before this
                // line leaves them until the purge, and the inbox already answers repeats.
                store.delete_chunks(&sender, &content.id)?;
                return Ok(ack);
            }
            // A file's offer or chunk: only contacts' files are taken; anyone else's wait as
            // requests (answered busy) until the user accepts them. (A stranger's long message
            // is refused for good instead, above: its chunks would be the megabytes to keep.)
            Body::File(message) => {
                let contact = store.contact_name(&sender)?.is_some();
                let downloads = &self.0.downloads;
                return match message {
                    FileMessage::Offer(offer) => {
                        downloads.offered(&sender, contact, &content.id, &offer)
                    }
                    FileMessage::Chunk { index, data } => {
                        downloads.chunk(&sender, contact, &content.id, index, &data)
                    }
                };
            }
            // Only the recipient of a message can say it was read, as with delivery receipts;
            // ids of other messages, and repeats, change nothing.
            Body::Read { of } => {
                for id in of {
                    if store.outgoing_text_peer(&id)? == Some(sender)
                        && store.set_state(&id, MessageState::Read, None, now)?
                    {
                        self.0.events.receipted(&id, &sender, MessageState::Read, now);
                    }
                }
            }
        }
        Ok(Received::Accepted)
    }

    /// Marks our text `of` delivered if `sender` is the peer we sent it to.
    fn delivered(&self, of: &MessageId, sender: &PeerId, now: u64) -> Result<()> {
        if self.0.store.outgoing_text_peer(of)?.as_ref() == Some(sender) {
            for state in self.0.store.receipt_delivered(of, now)? {
                self.0.events.receipted(of, sender, state, now);
            }
        }
        Ok(())
    }

    /// Strangers may write (that is how first contact works) but not without bound: past a
    /// quota their messages are refused until the window moves on, and contacts are never
    /// affected. The counts are of messages stored within the window, so they hold across
    /// restarts.
    fn stranger_over_quota(&self, sender: &PeerId) -> Result<bool> {
        if self.0.store.contact_name(sender)?.is_some() {
            return Ok(false);
        }
        let since = self.0.clock.now_ms().saturating_sub(STRANGER_WINDOW.as_millis() as u64);
        let (from_sender, from_all) = self.0.store.stranger_messages(sender, since)?;
        if from_sender >= u64::from(STRANGER_MESSAGES_PER_SENDER.limit) {
            self.log_over_quota(sender, "messages per stranger", STRANGER_MESSAGES_PER_SENDER);
            return Ok(true);
        }
        if from_all >= u64::from(STRANGER_MESSAGES.limit) {
            self.log_over_quota(sender, "messages from all strangers", STRANGER_MESSAGES);
            return Ok(true);
        }
        Ok(false)
    }

    /// One line per window however many strangers are refused.
    fn log_over_quota(&self, sender: &PeerId, quota: &'static str, limit: Quota) {
        let mut log = self.0.quota_log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(not_logged_before) = log.allow(limit.window) {
            tracing::warn!(%sender, quota, %limit, not_logged_before, "refused a stranger's message: quota reached; it is answered busy and may come again after the window; further refusals are not logged for one window");
        }
    }
}

/// The `sent_at_ms` bound of `docs/PROTOCOL.md` section 6 for format 1 envelopes (the
/// conversation applies it to the others): a message claiming to be sent more than a day from
/// now or more than 30 days ago is refused.
fn check_sent_at(sent_at_ms: u64, now: u64) -> std::result::Result<(), &'static str> {
    use kolokol_protocol::conversation::{MAX_SENT_AT_AGE_SECS, MAX_SENT_AT_FUTURE_SECS};
    let sent_at = sent_at_ms / 1000;
    if sent_at > now.saturating_add(MAX_SENT_AT_FUTURE_SECS) {
        return Err("the message claims to be sent more than a day from now");
    }
    if sent_at.saturating_add(MAX_SENT_AT_AGE_SECS) < now {
        return Err("the message claims to be sent more than 30 days ago");
    }
    Ok(())
}

/// A received message as the control API shows it.
pub(crate) fn inbox_view(m: InboxRow) -> InboxMessage {
    InboxMessage {
        id: format_id(&m.id),
        from: m.contact,
        from_peer_id: m.peer_id.to_string(),
        text: m.text,
        sent_at_ms: m.sent_at_ms,
        received_at_ms: m.received_at_ms,
        read_at_ms: m.read_at_ms,
        truncated: false,
    }
}

/// The view of a received message that goes into a `message` event: its text cut to
/// [`kolokol_protocol::control::EVENT_TEXT_LEN`] bytes, so the event buffer stays small.
fn event_view(m: InboxRow) -> InboxMessage {
    let mut view = inbox_view(m);
    if view.text.len() > kolokol_protocol::control::EVENT_TEXT_LEN {
        let mut end = kolokol_protocol::control::EVENT_TEXT_LEN;
        while !view.text.is_char_boundary(end) {
            end -= 1;
        }
        view.text.truncate(end);
        view.truncated = true;
    }
    view
}

#[cfg(test)]
mod tests;
