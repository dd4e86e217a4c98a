//! Receive keys, ours and the peer's: the records a conversation keeps of them, and the rules
//! that decide which keys we advertise and accept and when ours are deleted.
//!
//! We advertise our newest key in every envelope we seal. A superseded key is deleted
//! [`RECEIVE_KEY_GRACE_SECS`] after the peer moved on to a newer one, [`MAX_SUPERSEDED_SECS`]
//! after it was superseded in any case, and as the oldest beyond [`MAX_RECEIVE_KEYS`]
//! ([`Conversation::expire`]); so that a peer that only sends still moves to fresh keys,
//! [`Conversation::answer_due`] tells the node when to answer it. The peer's advertisements are
//! taken one step at a time, and only after we used the key they replace; anything else, or the
//! peer refusing what we sealed, re-keys the conversation ([`Rekeyed`]). Making a fresh key and
//! committing it once the envelope is sealed is part of [`Conversation::seal_with`], and opening
//! fills each key's replay cache; both stay in the parent module and call what is here.

use bincode::{Decode, Encode};

use crate::conversation::{Conversation, Secret, Seen};
use crate::envelope::{self, Advertisement, KeyId};

/// Most receive keys kept per conversation, the newest included. The same bound libsignal and
/// vodozemac put on receiving chains: enough for envelopes still in flight to a key the peer
/// has moved past, small enough that a stolen state exposes little.
pub const MAX_RECEIVE_KEYS: usize = 5;

/// How long a superseded receive key is kept after the peer has started using a newer one, in
/// seconds: room for envelopes the relays reorder or delay (72 hours).
pub const RECEIVE_KEY_GRACE_SECS: u64 = 72 * 3600;

/// How long a superseded receive key is kept at most, in seconds, used or not: the mailbox
/// time-to-live, after which no honest envelope to it can still arrive (30 days).
pub const MAX_SUPERSEDED_SECS: u64 = 30 * 24 * 3600;

/// Envelopes our newest receive key accepts before the node answers the peer on its own
/// (section 8.11): a peer that only sends never sees a new key of ours otherwise, and every
/// envelope it sends stays open to whoever takes that one key.
pub const ANSWER_AFTER_ENVELOPES: usize = 64;

/// Age of our newest receive key, in seconds, after which an envelope to it makes the node
/// answer (one day; section 8.11): slow one-way traffic rotates daily.
pub const ANSWER_AFTER_SECS: u64 = 24 * 3600;

/// How long our newest receive key may stay unused, in seconds, before an envelope from the
/// peer to an older key (or a first contact) makes the node answer again (one hour; section
/// 8.11): the answer that advertised it was lost, or is still in a mailbox.
pub const ANSWER_AGAIN_SECS: u64 = 3600;

/// Most starts of the peer's numbering remembered (see `peer_starts`).
pub const MAX_PEER_STARTS: usize = 4;

/// Why a conversation was re-keyed, as [`Conversation::take_rekeyed`] reports it. The node
/// shows the user that the conversation was re-keyed (and why, in its log); messages are not
/// lost: what was queued is sealed again under the new keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rekeyed {
    /// An advertisement from the peer contradicted what we knew (two keys for one position, a
    /// jump ahead, a step before we used the key it replaces). Either someone holding a stolen
    /// state forged it, or one side restored an old state; we re-keyed through the peer's
    /// prekey, which settles both.
    Conflict,
    /// The peer restarted its side (it lost or restored its state, or re-keyed itself): we
    /// took its new key and restarted ours.
    PeerRestarted,
    /// The peer refused an envelope we sealed to its receive key (it no longer holds that key):
    /// we re-keyed through its prekey.
    PeerRefused,
}

/// One of our receive keys.
#[derive(Encode, Decode)]
pub(super) struct ReceiveKey {
    /// Position in our sequence of keys for this conversation, as advertised.
    pub(super) seq: u32,
    pub(super) secret: Secret,
    pub(super) public: [u8; 32],
    /// The PSK the peer must use with this key.
    pub(super) seed: Secret,
    /// When we made it, Unix seconds.
    pub(super) created_at: u64,
    /// When a newer key replaced it as the advertised one, Unix seconds.
    pub(super) superseded_at: Option<u64>,
    /// When the peer first used a newer key of ours, Unix seconds: from then on, only envelopes
    /// already in flight can still arrive for this one, and the grace period runs.
    pub(super) peer_moved_on_at: Option<u64>,
    /// Replay cache: the envelopes this key has accepted, by ephemeral, oldest first. Non-empty
    /// means the peer has seen this key, which is what triggers the next rotation.
    pub(super) seen: Vec<Seen>,
}

/// The peer's newest advertised receive key, which our conversation envelopes go to.
#[derive(Encode, Decode)]
pub(super) struct PeerKey {
    pub(super) seq: u32,
    pub(super) public: [u8; 32],
    pub(super) seed: Secret,
    /// Envelopes we have sealed to it, capped at
    /// [`MAX_SEEN_EPHEMERALS`](crate::conversation::MAX_SEEN_EPHEMERALS).
    pub(super) sent: u32,
}

/// What an advertisement does to the peer key we hold (section 8.3).
enum Adoption {
    /// Nothing: the key we hold, or an older one.
    Keep,
    /// The peer's next key, or its first: taken.
    Take,
    /// The peer restarted its side: taken, and we restart ours.
    Restart,
    /// A contradiction: we re-key.
    Conflict,
}

impl Rekeyed {
    fn byte(self) -> u8 {
        match self {
            Rekeyed::Conflict => 1,
            Rekeyed::PeerRestarted => 2,
            Rekeyed::PeerRefused => 3,
        }
    }

    pub(super) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Rekeyed::Conflict),
            2 => Some(Rekeyed::PeerRestarted),
            3 => Some(Rekeyed::PeerRefused),
            _ => None,
        }
    }
}

impl ReceiveKey {
    pub(super) fn id(&self) -> KeyId {
        envelope::key_id(&self.public)
    }

    /// Whether `id` is this key's id, compared in constant time.
    pub(super) fn has_id(&self, id: &KeyId) -> bool {
        envelope::ct_eq_key_id(&self.id(), id)
    }

    pub(super) fn advertisement(&self) -> Advertisement {
        Advertisement { seq: self.seq, public: self.public, seed: *self.seed.get() }
    }
}

// Our receive keys: their ids, when the node answers so that they rotate, their deletion, and
// the restart of their numbering.
impl Conversation {
    /// The ids of our live receive keys, oldest first. The node indexes conversations by them,
    /// so it can find the one a conversation envelope's key id belongs to.
    pub fn receive_key_ids(&self) -> Vec<KeyId> {
        self.receive_keys.iter().map(ReceiveKey::id).collect()
    }

    /// Whether the node should answer the peer now, with a receipt of what it just accepted,
    /// when it has nothing else to send (section 8.11): sealing anything gives the peer a
    /// receive key of ours (a fresh one once it has used the newest), which a peer that only
    /// sends never gets otherwise; it then seals conversation envelopes instead of first
    /// contacts, and its envelopes move to a new key of ours now and then. True when the peer
    /// holds no key of ours (none made yet, or a restart pending), when our newest key has
    /// accepted [`ANSWER_AFTER_ENVELOPES`] envelopes or is [`ANSWER_AFTER_SECS`] old and used,
    /// or when it has gone unused for [`ANSWER_AGAIN_SECS`] (the envelope that advertised it
    /// may be lost).
    pub fn answer_due(&self, now: u64) -> bool {
        let Some(newest) = self.receive_keys.last() else { return true };
        if self.restart_pending {
            return true;
        }
        let age = now.saturating_sub(newest.created_at);
        if newest.seen.is_empty() {
            age >= ANSWER_AGAIN_SECS
        } else {
            newest.seen.len() >= ANSWER_AFTER_ENVELOPES || age >= ANSWER_AFTER_SECS
        }
    }

    /// Deletes the receive keys whose time is up at `now` (Unix seconds): superseded keys the
    /// peer moved past more than [`RECEIVE_KEY_GRACE_SECS`] ago, superseded keys older than
    /// [`MAX_SUPERSEDED_SECS`] in any case, and the oldest beyond [`MAX_RECEIVE_KEYS`]. The
    /// newest key is never deleted. Seal and open call this; the node also calls it on a timer
    /// so that keys die on schedule in idle conversations.
    pub fn expire(&mut self, now: u64) {
        let newest = self.receive_keys.last().map(|k| k.seq);
        self.receive_keys.retain(|k| {
            if Some(k.seq) == newest {
                return true;
            }
            let moved_on =
                k.peer_moved_on_at.is_some_and(|t| t.saturating_add(RECEIVE_KEY_GRACE_SECS) <= now);
            let too_old =
                k.superseded_at.is_some_and(|t| t.saturating_add(MAX_SUPERSEDED_SECS) <= now);
            !(moved_on || too_old)
        });
        self.enforce_key_limit();
    }

    pub(super) fn enforce_key_limit(&mut self) {
        while self.receive_keys.len() > MAX_RECEIVE_KEYS {
            self.receive_keys.remove(0);
        }
        self.loaded.keep_only(&self.receive_keys);
    }

    /// Our next envelope brings a fresh key, numbered from 0 again: the next key made gets the
    /// internal number `next_seq`, which becomes the base.
    fn restart_own_side(&mut self) {
        self.restart_pending = true;
        self.restart_base = self.next_seq;
    }
}

// The peer's advertised keys, and re-keying when they contradict what we know.
impl Conversation {
    /// The peer refused an envelope we sealed to its receive key (the node got `Rejected`): it
    /// no longer holds that key, because it lost or restored its state. We re-key: the next
    /// envelope is a first contact to the peer's prekey with a fresh key of ours at sequence 0,
    /// which makes the peer restart its side too (section 8.9). Returns whether it re-keyed
    /// (a refused first contact is the prekey's business, see
    /// [`Conversation::drop_prekey_for_first_contact`]).
    pub fn peer_rejected(&mut self) -> bool {
        if self.peer_key.is_none() {
            return false;
        }
        self.rekey(Rekeyed::PeerRefused);
        true
    }

    /// Takes the re-key the node has not been told about yet, if any: after every open, seal
    /// and [`Conversation::peer_rejected`], the node asks, shows the user that the conversation
    /// was re-keyed, and seals what was queued for the peer again.
    pub fn take_rekeyed(&mut self) -> Option<Rekeyed> {
        self.rekeyed.take().and_then(Rekeyed::from_byte)
    }

    /// Applies the peer's advertisement from an accepted envelope (section 8.3): one that came
    /// in a first contact (`arrived_on` is `None`) or in a conversation envelope on our receive
    /// key with internal number `arrived_on`. The peer makes key `n + 1` only after it received
    /// an envelope we sealed to key `n`, so its honest advertisements never jump: the next key
    /// is exactly one step on, and only once we have used the current one. Older keys are
    /// ignored (a delayed envelope cannot roll us back); anything else contradicts what we
    /// know and makes us re-key through the peer's prekey, so that a forged advertisement (from
    /// someone holding a stolen state) is displaced by the next honest envelope instead of
    /// pinning our envelopes to the forger's key.
    pub(super) fn adopt(&mut self, advertisement: &Advertisement, arrived_on: Option<u32>) {
        match self.adoption(advertisement, arrived_on) {
            Adoption::Keep => {}
            Adoption::Take => self.take_peer_key(advertisement),
            Adoption::Restart => {
                self.take_peer_key(advertisement);
                if !self.awaiting_restart {
                    self.restart_own_side();
                    self.rekeyed = Some(Rekeyed::PeerRestarted.byte());
                }
                self.awaiting_restart = false;
            }
            Adoption::Conflict => self.rekey(Rekeyed::Conflict),
        }
    }

    fn adoption(&self, advertisement: &Advertisement, arrived_on: Option<u32>) -> Adoption {
        let a = advertisement;
        let first_contact = arrived_on.is_none();
        let a_known_start = self.peer_starts.iter().any(|k| envelope::ct_eq_32(k, &a.public));
        if self.awaiting_restart {
            // Only the peer's restarted key: in its own first contact (our restarts crossed),
            // or in a conversation envelope on a key we made after re-keying, which a thief of
            // our older state cannot forge. Anything else was sealed before the peer restarted.
            let fresh_arrival = arrived_on.is_none_or(|seq| seq >= self.restart_base);
            return if a.seq == 0 && fresh_arrival && !a_known_start {
                Adoption::Restart
            } else {
                Adoption::Keep
            };
        }
        let Some(held) = &self.peer_key else {
            // The peer's first key. Legacy (format 3) peers did not restart their numbering,
            // so only format 4 peers are held to sequence 0.
            let format_4 = self.peer_hybrid_prekey.is_some() && self.peer_mailbox.is_some();
            return if a.seq == 0 || !format_4 { Adoption::Take } else { Adoption::Conflict };
        };
        if envelope::ct_eq_32(&held.public, &a.public) {
            Adoption::Keep
        } else if first_contact && a.seq == 0 {
            // A first contact at 0 restarts the peer's side, unless it names a start we already
            // took: then it is a first contact sent before the peer heard from us, delayed.
            if a_known_start { Adoption::Keep } else { Adoption::Restart }
        } else if a.seq < held.seq {
            // An older key: a delayed envelope, unless it is a start of the peer's numbering we
            // never took, which no delayed envelope can name (we take every start the peer
            // makes before its later keys): then the peer restarted without a first contact,
            // which only a forgery does.
            if a.seq == 0 && !a_known_start { Adoption::Conflict } else { Adoption::Keep }
        } else if held.seq.checked_add(1) == Some(a.seq) && held.sent > 0 {
            Adoption::Take
        } else {
            Adoption::Conflict
        }
    }

    fn take_peer_key(&mut self, advertisement: &Advertisement) {
        if advertisement.seq == 0
            && !self.peer_starts.iter().any(|k| envelope::ct_eq_32(k, &advertisement.public))
        {
            if self.peer_starts.len() >= MAX_PEER_STARTS {
                self.peer_starts.remove(0);
            }
            self.peer_starts.push(advertisement.public);
        }
        self.peer_key = Some(PeerKey {
            seq: advertisement.seq,
            public: advertisement.public,
            seed: Secret::new(&advertisement.seed),
            sent: 0,
        });
    }

    fn rekey(&mut self, why: Rekeyed) {
        self.peer_key = None;
        self.awaiting_restart = true;
        self.restart_own_side();
        self.rekeyed = Some(why.byte());
    }
}
