//! End-to-end conversation states, one per peer: loaded, used on a crypto worker and stored
//! again under that peer's lock, and kept decoded in a small write-through cache between
//! messages.
//!
//! Invariants: no two seals or opens of one conversation interleave (one lock per peer); the
//! store is never behind the cache (a state is written before the caller sends what was sealed
//! or acknowledges what was opened, so a crash can lose neither a receive key we advertised nor
//! a replay-cache entry); a state in use is out of the cache, so a failure reloads it from the
//! store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kolokol_protocol::control::{Event, Rekey};
use kolokol_protocol::conversation::{Conversation, Own, Randomness, Rekeyed};
use kolokol_protocol::envelope;
use kolokol_protocol::identity::DeviceCertificate;
use kolokol_protocol::invite::{Invite, InviteKeys};
use kolokol_protocol::mailbox_key::MailboxAddress;
use kolokol_protocol::message::Content;
use kolokol_protocol::prekey::{HybridPrekey, SignedPrekey};
use libp2p::PeerId;
use rand::RngCore;

use crate::clock::Clock;
use crate::error::Result;
use crate::events::Events;
use crate::keys::Keys;
use crate::store::{ConversationWrite, Store};
use crate::workers::Workers;

/// Conversation states kept decoded in memory. Past this, the cache is emptied and refilled
/// from the store as peers write; each entry is at most about 100 KB (the state and its
/// stored encoding).
pub const MAX_CACHED_CONVERSATIONS: usize = 64;

/// Per-peer locks kept; past this, the ones nobody holds are dropped.
pub const MAX_CONVERSATION_LOCKS: usize = 1024;

/// What a conversation operation gives back: the node's own failure (the store, shutting down)
/// outside, the protocol's verdict inside.
pub(crate) type Outcome<T> = Result<std::result::Result<T, kolokol_protocol::Error>>;

/// A conversation state between uses, with the bytes the store holds for it, so a state that
/// did not change is not written again.
struct Cached {
    conversation: Conversation,
    stored: zeroize::Zeroizing<Vec<u8>>,
}

/// A cloneable handle to the conversation states.
#[derive(Clone)]
pub(crate) struct Conversations(Arc<Inner>);

struct Inner {
    store: Store,
    keys: Keys,
    workers: Workers,
    clock: Clock,
    /// Where a re-key is announced.
    events: Events,
    /// Wakes the outbox: a re-key made what waits for the peer due again.
    outbox_wake: Arc<tokio::sync::Notify>,
    /// One lock per peer, held while its conversation state is loaded, used and stored.
    locks: Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<()>>>>,
    /// States in use, kept decoded between messages, at most [`MAX_CACHED_CONVERSATIONS`].
    cache: Mutex<HashMap<PeerId, Cached>>,
}

impl Conversations {
    pub(crate) fn new(
        store: Store,
        keys: Keys,
        workers: Workers,
        clock: Clock,
        events: Events,
        outbox_wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            keys,
            workers,
            clock,
            events,
            outbox_wake,
            locks: Default::default(),
            cache: Default::default(),
        }))
    }

    fn lock_of(&self, peer: &PeerId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.0.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() >= MAX_CONVERSATION_LOCKS {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(*peer).or_default().clone()
    }

    fn cache(&self) -> MutexGuard<'_, HashMap<PeerId, Cached>> {
        self.0.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the conversation state with `peer` (`None` if there is none yet) through the
    /// workers, holding that peer's lock; then stores the state if `f` succeeded.
    pub(crate) async fn with<T: Send + 'static>(
        &self,
        peer: &PeerId,
        f: impl FnOnce(&mut Option<Conversation>) -> std::result::Result<T, kolokol_protocol::Error>
        + Send
        + 'static,
    ) -> Outcome<T> {
        Ok(match self.hold(peer, f).await? {
            Ok(held) => Ok(held.store()?),
            Err(e) => Err(e),
        })
    }

    /// Runs `f` as [`Conversations::with`] does, but leaves storing the state to the caller,
    /// who stores it with what it sealed or opened in one transaction ([`Held::write`]) and then
    /// calls [`Held::stored`]. The peer's lock is held until then.
    pub(crate) async fn hold<T: Send + 'static>(
        &self,
        peer: &PeerId,
        f: impl FnOnce(&mut Option<Conversation>) -> std::result::Result<T, kolokol_protocol::Error>
        + Send
        + 'static,
    ) -> Outcome<Held<T>> {
        let guard = self.lock_of(peer).lock_owned().await;
        // Taken out of the cache while in use: if anything below fails, the next use reloads
        // the state from the store, which is never behind the cache.
        let cached = self.cache().remove(peer);
        let mut rekeyed = None;
        let (mut conversation, stored) = match cached {
            Some(c) => (Some(c.conversation), Some(c.stored)),
            None => {
                let stored = self.0.store.conversation(peer)?;
                let conversation = match stored.as_ref().map(|b| Conversation::from_bytes(b)) {
                    Some(Ok(c)) => Some(c),
                    Some(Err(e)) => {
                        // An unreadable state cannot be repaired; keeping it would block the
                        // conversation for good. It restarts from the contact's invite (a first
                        // contact to their prekey, which makes them restart too), visibly; never
                        // as format 1, which a peer that had a conversation refuses anyway.
                        tracing::error!(%peer, %e, "conversation state unreadable; restarting it");
                        let restarted = self.restart_from_invite(peer)?;
                        if restarted.is_some() {
                            rekeyed = Some(UNREADABLE.to_owned());
                        }
                        restarted
                    }
                    None => None,
                };
                (conversation, stored)
            }
        };
        // The receive-key index is rewritten only when the keys changed (about once per round
        // trip), not with every state.
        let ids_before = conversation.as_ref().map(Conversation::receive_key_ids);
        let (result, conversation, protocol_rekey) = self
            .0
            .workers
            .run(move || {
                let result = f(&mut conversation);
                // A re-key the operation caused is taken out of the state here, so the state
                // stored with it no longer carries it: it is announced once.
                let rekey = conversation.as_mut().and_then(Conversation::take_rekeyed);
                (result, conversation, rekey)
            })
            .await?;
        let value = match result {
            Ok(value) => value,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(why) = protocol_rekey {
            rekeyed = Some(rekey_reason(why).to_owned());
        }
        let state = match conversation {
            Some(c) => {
                let bytes = c.to_bytes()?;
                // Only a changed state is written: a look at the state costs no disk write.
                let changed = rekeyed.is_some()
                    || stored.as_deref().map(Vec::as_slice) != Some(bytes.as_slice());
                let ids = c.receive_key_ids();
                let key_ids = (ids_before.as_ref() != Some(&ids)).then_some(ids);
                Some(HeldState { conversation: c, bytes, changed, key_ids, rekeyed })
            }
            None => None,
        };
        Ok(Ok(Held { value, peer: *peer, state, conversations: self.clone(), _guard: guard }))
    }

    /// A new conversation with a contact whose stored state could not be read, from the invite
    /// they were added with: their certificate, and (version 2) their hybrid prekey and mailbox
    /// address. `None` for a peer who is not a contact, or one added before invites were kept.
    fn restart_from_invite(&self, peer: &PeerId) -> Result<Option<Conversation>> {
        let Some(contact) = self.0.store.contact_by_peer(peer)? else { return Ok(None) };
        let Some(text) = contact.invite else { return Ok(None) };
        // Read as of when it was added: the prekey may have expired since (the first contact
        // then waits for a current one), the certificate is checked again below.
        let (invite, keys, _) = Invite::from_text_with_keys(&text, contact.added_at_ms / 1000)?;
        Ok(Some(Conversation::from_invite(&invite, keys.as_ref(), self.0.clock.now_secs())?))
    }

    /// Whether we hold conversation state with the peer, in the cache or the store.
    pub(crate) fn has(&self, peer: &PeerId) -> Result<bool> {
        if self.cache().contains_key(peer) {
            return Ok(true);
        }
        Ok(self.0.store.conversation(peer)?.is_some())
    }

    /// The state a conversation with a new contact starts from, made from their invite (its
    /// certificate, and for a version 2 invite the hybrid prekey and mailbox address that make
    /// it a format 4 conversation): its encoding and its receive-key ids, for
    /// `Store::add_contact_with`, which stores it with the contact unless a conversation exists
    /// already. Creating it involves no key work, so it runs here rather than on a worker.
    pub(crate) fn first_state(
        &self,
        invite: &Invite,
        keys: Option<&InviteKeys>,
    ) -> Result<FirstState> {
        let conversation = Conversation::from_invite(invite, keys, self.0.clock.now_secs())?;
        Ok(FirstState { state: conversation.to_bytes()?, key_ids: conversation.receive_key_ids() })
    }

    /// The certificate the peer's envelopes come from, if we hold a conversation with them.
    pub(crate) fn peer_certificate(&self, peer: &PeerId) -> Result<Option<DeviceCertificate>> {
        if let Some(c) = self.cache().get(peer) {
            return Ok(Some(c.conversation.peer_certificate().clone()));
        }
        match self.0.store.conversation(peer)? {
            Some(bytes) => Ok(Some(Conversation::from_bytes(&bytes)?.peer_certificate().clone())),
            None => Ok(None),
        }
    }

    /// Starts a conversation with a peer who is not a contact (a fellow member of a group) from
    /// their certificate, unless one exists: our first envelope to them is then a proper first
    /// contact. No invite, so no hybrid prekey: the first contact is format 3, to the signed
    /// prekey of the member's presence record (or its device key).
    pub(crate) fn start(&self, peer: &PeerId, certificate: DeviceCertificate) -> Result<()> {
        self.start_with(peer, |now| Conversation::new(certificate, now))
    }

    /// Starts a conversation with a peer who is not a contact from their invite (a member
    /// added to a group by invite code), unless one exists. A version 2 invite makes it a
    /// format 4 conversation and gives us the peer's mailbox address, with which its presence
    /// record's part for contacts opens (its bridges and current hybrid prekey).
    pub(crate) fn start_from_invite(
        &self,
        peer: &PeerId,
        invite: &Invite,
        keys: Option<&InviteKeys>,
    ) -> Result<()> {
        self.start_with(peer, |now| Conversation::from_invite(invite, keys, now))
    }

    /// Stores the conversation `make` creates, at once and never over an existing state; if
    /// the peer's conversation is in use, it exists, and nothing is done.
    fn start_with(
        &self,
        peer: &PeerId,
        make: impl FnOnce(u64) -> std::result::Result<Conversation, kolokol_protocol::Error>,
    ) -> Result<()> {
        let lock = self.lock_of(peer);
        if let Ok(_guard) = lock.try_lock()
            && !self.has(peer)?
        {
            let conversation = make(self.0.clock.now_secs())?;
            let (state, key_ids) = (conversation.to_bytes()?, conversation.receive_key_ids());
            let write =
                ConversationWrite { peer, state: &state, key_ids: Some(&key_ids), rekeyed: None };
            self.0.store.save_first_conversation(&write, self.0.clock.now_ms())?;
        }
        Ok(())
    }

    /// Whether the next envelope to the peer would be a first contact that lacks the peer's
    /// signed prekey. Only a hint, so a plain read is enough: no lock and no worker, which keeps
    /// an established conversation (the common case) at one look per message.
    pub(crate) fn wants_prekey(&self, peer: &PeerId) -> bool {
        let now = self.0.clock.now_secs();
        if let Some(c) = self.cache().get(peer) {
            return c.conversation.wants_prekey(now);
        }
        match self.0.store.conversation(peer) {
            Ok(Some(bytes)) => Conversation::from_bytes(&bytes).is_ok_and(|c| c.wants_prekey(now)),
            _ => false,
        }
    }

    /// Seals each of `contents` for the peer, in one hold of its conversation: Kpsk1 envelopes
    /// to their newest receive key, or first contacts carrying our own (to `prekey` if given and
    /// valid). A peer with no conversation (a contact added before conversations existed) gets
    /// format 1 envelopes to `device_key`, which every version opens. The caller stores the new
    /// state (it may advertise a receive key) before it sends any of them.
    pub(crate) async fn seal(
        &self,
        peer: &PeerId,
        device_key: [u8; 32],
        contents: Vec<Content>,
        prekeys: PeerPrekeys,
    ) -> Outcome<Held<Vec<Vec<u8>>>> {
        let keys = self.0.keys.clone();
        let now = self.0.clock.now_secs();
        // Our own hybrid prekey and mailbox address ride in every format 4 first contact, so
        // the peer can re-key and deposit to us without a lookup.
        let own_prekey = keys.hybrid_prekey()?;
        // Format 1 only for a contact we never had a conversation with (added before
        // conversations existed): a peer whose state we hold, even an unreadable one, never
        // gets one (issue 15, finding 3).
        let legacy = !self.has(peer)? && self.0.store.contact_name(peer)?.is_some();
        self.hold(peer, move |conversation| {
            let certificate = keys.certificate();
            if let (Some(c), Some(p)) = (conversation.as_mut(), prekeys.signed)
                && let Err(e) = c.set_peer_prekey(p, now)
            {
                tracing::debug!(%e, "ignored a signed prekey");
            }
            if let (Some(c), Some(p)) = (conversation.as_mut(), prekeys.hybrid)
                && let Err(e) = c.set_peer_hybrid_prekey(p, now)
            {
                tracing::debug!(%e, "ignored a hybrid prekey");
            }
            let mailbox = keys.mailbox_address();
            let own = Own {
                device: keys.identity().device(),
                certificate: &certificate,
                prekey: own_prekey.as_ref(),
                mailbox: Some(&mailbox),
            };
            let mut envelopes = Vec::with_capacity(contents.len());
            for content in &contents {
                let mut random = [0u8; Randomness::LEN];
                rand::rngs::OsRng.fill_bytes(&mut random);
                envelopes.push(match conversation.as_mut() {
                    Some(c) => c.seal_with(&own, content, Randomness::from_bytes(random), now)?,
                    None if !legacy => {
                        return Err(kolokol_protocol::Error::Envelope(
                            "no usable conversation with this peer, and format 1 is only for \
                             contacts that never had one",
                        ));
                    }
                    None => {
                        let mut ephemeral = [0u8; 32];
                        ephemeral.copy_from_slice(&random[..32]);
                        zeroize::Zeroize::zeroize(&mut random);
                        envelope::seal(
                            keys.identity(),
                            &certificate,
                            &device_key,
                            content,
                            ephemeral,
                        )?
                    }
                });
            }
            Ok(envelopes)
        })
        .await
    }

    /// Whether the conversation with the peer is a format 4 one (we hold its hybrid prekey and
    /// mailbox address). A plain read, as [`Conversations::wants_prekey`].
    pub(crate) fn is_format_4(&self, peer: &PeerId) -> bool {
        let format_4 =
            |c: &Conversation| c.peer_hybrid_prekey().is_some() && c.peer_mailbox().is_some();
        if let Some(c) = self.cache().get(peer) {
            return format_4(&c.conversation);
        }
        match self.0.store.conversation(peer) {
            Ok(Some(bytes)) => Conversation::from_bytes(&bytes).is_ok_and(|c| format_4(&c)),
            _ => false,
        }
    }

    /// The peer's mailbox address, if it gave us one (its version 2 invite or a format 4 first
    /// contact): the key to its mailbox and to its presence record's part for contacts. A plain
    /// read, as [`Conversations::wants_prekey`].
    pub(crate) fn peer_mailbox(&self, peer: &PeerId) -> Option<MailboxAddress> {
        if let Some(c) = self.cache().get(peer) {
            return c.conversation.peer_mailbox().copied();
        }
        match self.0.store.conversation(peer) {
            Ok(Some(bytes)) => Conversation::from_bytes(&bytes).ok()?.peer_mailbox().copied(),
            _ => None,
        }
    }

    /// When the next envelope to the peer would be a format 4 first contact (the peer gave us
    /// its mailbox address, in its invite or its own first contact) and we hold no current
    /// hybrid prekey of it: `Some(Some(expiry))` if the one we hold expired then (Unix seconds),
    /// `Some(None)` if we hold none (its format 4 first contact came without one). Sealing must
    /// wait for a current one (from a new invite, or the peer's next envelope; presence records
    /// bring one too, in the part for contacts), since a format 4 conversation never falls back to the
    /// long-term device key. A plain read, as [`Conversations::wants_prekey`].
    pub(crate) fn stale_prekey(&self, peer: &PeerId) -> Option<Option<u64>> {
        let now = self.0.clock.now_secs();
        let stale = |c: &Conversation| {
            if c.has_peer_receive_key() || c.peer_mailbox().is_none() {
                return None;
            }
            match c.peer_hybrid_prekey() {
                None => Some(None),
                Some(p) if p.expires_at < now => Some(Some(p.expires_at)),
                Some(_) => None,
            }
        };
        if let Some(c) = self.cache().get(peer) {
            return stale(&c.conversation);
        }
        match self.0.store.conversation(peer) {
            Ok(Some(bytes)) => Conversation::from_bytes(&bytes).ok().as_ref().and_then(stale),
            _ => None,
        }
    }

    /// Forgets the peer's prekey if the next envelope to it would be a first contact sealed to
    /// it; returns whether it did. A format 4 conversation (the peer gave us its mailbox address)
    /// keeps its hybrid prekey: `Rejected` does not say whether the peer lost the prekey or
    /// refused the content (a stranger's chunk, a quota), and forgetting it would turn the
    /// conversation into format 3, whose first contact may go to the never-rotating device key.
    /// The refused message fails with the peer's reason instead, and the next one goes to the
    /// same prekey.
    pub(crate) async fn drop_prekey(&self, peer: &PeerId) -> bool {
        let dropped = self
            .with(peer, |c| {
                Ok(c.as_mut().is_some_and(|c| {
                    c.peer_mailbox().is_none() && c.drop_prekey_for_first_contact()
                }))
            })
            .await;
        matches!(dropped, Ok(Ok(true)))
    }

    /// The peer refused an envelope sealed to its receive key: it no longer holds that key (it
    /// lost or restored its state). Re-keys the conversation (announced when stored); returns
    /// whether it did, and so whether sealing again is worth it.
    pub(crate) async fn peer_rejected(&self, peer: &PeerId) -> bool {
        let rekeyed =
            self.with(peer, |c| Ok(c.as_mut().is_some_and(Conversation::peer_rejected))).await;
        matches!(rekeyed, Ok(Ok(true)))
    }

    /// Deletes receive keys whose time is up in every conversation, so forward secrecy does not
    /// wait for the next message.
    pub(crate) async fn expire_keys(&self) -> Result<()> {
        let now = self.0.clock.now_secs();
        // One conversation that cannot be read or written must not keep the others' keys
        // alive: each is swept on its own, and the first error is reported after all.
        let mut first_error = None;
        for peer in self.0.store.conversation_peers()? {
            let swept = self
                .with(&peer, move |c| {
                    if let Some(c) = c.as_mut() {
                        c.expire(now);
                    }
                    Ok(())
                })
                .await;
            match swept {
                Ok(Ok(())) => {}
                Ok(Err(e)) => _ = first_error.get_or_insert(crate::error::Error::from(e)),
                Err(e) => _ = first_error.get_or_insert(e),
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The reason shown for a conversation restarted because its stored state could not be read.
pub(crate) const UNREADABLE: &str = "our stored state of it could not be read";

/// The reason shown for each of the protocol's re-keys.
pub(crate) fn rekey_reason(why: Rekeyed) -> &'static str {
    match why {
        Rekeyed::Conflict => {
            "a key announcement contradicted what we knew: a restored backup on either side, \
             or someone holding a stolen copy of the state"
        }
        Rekeyed::PeerRestarted => "the contact restarted its side (it lost or restored its data)",
        Rekeyed::PeerRefused => "the contact no longer held our key (it lost or restored its data)",
    }
}

impl Conversations {
    /// Tells subscribers that the conversation with `peer` was re-keyed, and the outbox that
    /// what waits for the peer is due again (the store made it due in the same transaction).
    fn announce_rekey(&self, peer: &PeerId, reason: &str) {
        tracing::info!(%peer, reason, "conversation re-keyed");
        let contact = self.0.store.contact_name(peer).ok().flatten();
        self.0.events.send(Event::Rekeyed(Rekey {
            peer_id: peer.to_string(),
            contact,
            reason: reason.to_owned(),
            at_ms: self.0.clock.now_ms(),
        }));
        self.0.outbox_wake.notify_one();
    }
}

/// The peer's prekeys as its presence record gave them, for a first contact.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerPrekeys {
    /// Its signed prekey (format 3).
    pub(crate) signed: Option<SignedPrekey>,
    /// Its hybrid prekey (format 4).
    pub(crate) hybrid: Option<HybridPrekey>,
}

/// A new conversation's first state: its encoding (it holds secret keys) and receive-key ids.
pub(crate) struct FirstState {
    pub(crate) state: zeroize::Zeroizing<Vec<u8>>,
    pub(crate) key_ids: Vec<[u8; 8]>,
}

/// A conversation used under its peer's lock whose new state is not stored yet. Store it with
/// [`Held::store`], or inside the caller's own transaction with [`Held::write`] followed by
/// [`Held::stored`]; dropped without either, nothing changes: the lock is released and the next
/// use reloads the state the store still has.
pub(crate) struct Held<T> {
    /// What the operation gave back.
    pub(crate) value: T,
    peer: PeerId,
    state: Option<HeldState>,
    conversations: Conversations,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

struct HeldState {
    conversation: Conversation,
    bytes: zeroize::Zeroizing<Vec<u8>>,
    /// Whether `bytes` differ from what the store holds.
    changed: bool,
    /// Our receive-key ids, when they changed.
    key_ids: Option<Vec<[u8; 8]>>,
    /// Why the conversation was re-keyed by this use, if it was.
    rekeyed: Option<String>,
}

impl<T> Held<T> {
    /// Takes the value out, leaving the conversation held.
    pub(crate) fn split(self) -> (T, Held<()>) {
        let Held { value, peer, state, conversations, _guard } = self;
        (value, Held { value: (), peer, state, conversations, _guard })
    }

    /// Puts a value back, keeping the conversation held.
    pub(crate) fn with_value<U>(self, value: U) -> Held<U> {
        let Held { value: _, peer, state, conversations, _guard } = self;
        Held { value, peer, state, conversations, _guard }
    }

    /// The conversation as this use left it (`None` if there is none).
    pub(crate) fn conversation(&self) -> Option<&Conversation> {
        self.state.as_ref().map(|s| &s.conversation)
    }

    /// What to write, if the state changed.
    pub(crate) fn write(&self) -> Option<ConversationWrite<'_>> {
        self.state.as_ref().filter(|s| s.changed).map(|s| ConversationWrite {
            peer: &self.peer,
            state: &s.bytes,
            key_ids: s.key_ids.as_deref(),
            rekeyed: s.rekeyed.as_deref(),
        })
    }

    /// Stores the state alone (if it changed), then as [`Held::stored`].
    pub(crate) fn store(self) -> Result<T> {
        if let Some(write) = self.write() {
            let now = self.conversations.0.clock.now_ms();
            self.conversations.0.store.save_conversation(&write, now)?;
        }
        Ok(self.stored())
    }

    /// The caller has stored [`Held::write`] in its own transaction: the state goes back into
    /// the cache and the lock is released.
    pub(crate) fn stored(self) -> T {
        if let Some(state) = self.state {
            if let Some(reason) = &state.rekeyed {
                self.conversations.announce_rekey(&self.peer, reason);
            }
            let mut cache = self.conversations.cache();
            if cache.len() >= MAX_CACHED_CONVERSATIONS {
                cache.clear();
            }
            cache.insert(
                self.peer,
                Cached { conversation: state.conversation, stored: state.bytes },
            );
        }
        self.value
    }
}
