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

use kolokol_protocol::conversation::{Conversation, Randomness};
use kolokol_protocol::envelope;
use kolokol_protocol::identity::DeviceCertificate;
use kolokol_protocol::message::Content;
use kolokol_protocol::prekey::SignedPrekey;
use libp2p::PeerId;
use rand::RngCore;

use crate::clock::Clock;
use crate::error::Result;
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
    /// One lock per peer, held while its conversation state is loaded, used and stored.
    locks: Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<()>>>>,
    /// States in use, kept decoded between messages, at most [`MAX_CACHED_CONVERSATIONS`].
    cache: Mutex<HashMap<PeerId, Cached>>,
}

impl Conversations {
    pub(crate) fn new(store: Store, keys: Keys, workers: Workers, clock: Clock) -> Self {
        Self(Arc::new(Inner {
            store,
            keys,
            workers,
            clock,
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

    /// Runs `f` on the conversation state with `peer` (`None` if there is none yet) on a worker
    /// thread, holding that peer's lock; then stores the state if `f` succeeded.
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
        let (mut conversation, stored) = match cached {
            Some(c) => (Some(c.conversation), Some(c.stored)),
            None => {
                let stored = self.0.store.conversation(peer)?;
                let conversation = match stored.as_ref().map(|b| Conversation::from_bytes(b)) {
                    Some(Ok(c)) => Some(c),
                    Some(Err(e)) => {
                        // An unreadable state cannot be repaired; starting afresh costs one
                        // first-contact round trip, keeping it would block the conversation for
                        // good.
                        tracing::error!(%peer, %e, "conversation state unreadable; starting a new one");
                        None
                    }
                    None => None,
                };
                (conversation, stored)
            }
        };
        // The receive-key index is rewritten only when the keys changed (about once per round
        // trip), not with every state.
        let ids_before = conversation.as_ref().map(Conversation::receive_key_ids);
        let (result, conversation) = self
            .0
            .workers
            .run(move || {
                let result = f(&mut conversation);
                (result, conversation)
            })
            .await?;
        let value = match result {
            Ok(value) => value,
            Err(e) => return Ok(Err(e)),
        };
        let state = match conversation {
            Some(c) => {
                let bytes = c.to_bytes()?;
                // Only a changed state is written: a look at the state costs no disk write.
                let changed = stored.as_deref().map(Vec::as_slice) != Some(bytes.as_slice());
                let ids = c.receive_key_ids();
                let key_ids = (ids_before.as_ref() != Some(&ids)).then_some(ids);
                Some(HeldState { conversation: c, bytes, changed, key_ids })
            }
            None => None,
        };
        Ok(Ok(Held { value, peer: *peer, state, conversations: self.clone(), _guard: guard }))
    }

    /// Whether we hold conversation state with the peer, in the cache or the store.
    pub(crate) fn has(&self, peer: &PeerId) -> Result<bool> {
        if self.cache().contains_key(peer) {
            return Ok(true);
        }
        Ok(self.0.store.conversation(peer)?.is_some())
    }

    /// The state a conversation with a new contact starts from, made from their invite's
    /// certificate: its encoding and its receive-key ids, for `Store::add_contact_with`, which
    /// stores it with the contact unless a conversation exists already. Creating it involves no
    /// key work, so it runs here rather than on a worker.
    pub(crate) fn first_state(&self, certificate: DeviceCertificate) -> Result<FirstState> {
        let conversation = Conversation::new(certificate, self.0.clock.now_secs())?;
        Ok(FirstState { state: conversation.to_bytes()?, key_ids: conversation.receive_key_ids() })
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
        prekey: Option<SignedPrekey>,
    ) -> Outcome<Held<Vec<Vec<u8>>>> {
        let keys = self.0.keys.clone();
        let now = self.0.clock.now_secs();
        self.hold(peer, move |conversation| {
            let certificate = keys.certificate();
            if let (Some(c), Some(p)) = (conversation.as_mut(), prekey)
                && let Err(e) = c.set_peer_prekey(p, now)
            {
                tracing::debug!(%e, "ignored a signed prekey");
            }
            let mut envelopes = Vec::with_capacity(contents.len());
            for content in &contents {
                let mut random = [0u8; Randomness::LEN];
                rand::rngs::OsRng.fill_bytes(&mut random);
                envelopes.push(match conversation.as_mut() {
                    Some(c) => c.seal(
                        keys.identity().device(),
                        &certificate,
                        content,
                        Randomness::from_bytes(random),
                        now,
                    )?,
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

    /// Forgets the peer's prekey if the next envelope to it would be a first contact sealed to
    /// it; returns whether it did.
    pub(crate) async fn drop_prekey(&self, peer: &PeerId) -> bool {
        let dropped = self
            .with(peer, |c| Ok(c.as_mut().is_some_and(|c| c.drop_prekey_for_first_contact())))
            .await;
        matches!(dropped, Ok(Ok(true)))
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

    /// What to write, if the state changed.
    pub(crate) fn write(&self) -> Option<ConversationWrite<'_>> {
        self.state.as_ref().filter(|s| s.changed).map(|s| ConversationWrite {
            peer: &self.peer,
            state: &s.bytes,
            key_ids: s.key_ids.as_deref(),
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
