//! The per-contact key schedule: which key to encrypt the next envelope to, which of our keys
//! may still open envelopes, and which envelopes were already accepted.
//!
//! Each side of a conversation keeps a few *receive keys* (X25519 key pairs, each with a 32-byte
//! seed). The newest one is advertised inside every envelope we send, and the peer encrypts its
//! next envelopes to the newest key it has seen from us with `Noise_Kpsk1`, the seed as PSK.
//! When the peer has used our newest key (so it has seen it), the next envelope we send brings
//! a fresh one: keys rotate about once per round trip, like the Double Ratchet's DH step.
//! Superseded keys are deleted on a schedule, after which nothing sent to them can be opened
//! again. Until we know a receive key of the peer, we send first-contact envelopes
//! (`Noise_X`) to its device key instead.
//!
//! Format 4 adds three things (`docs/PROTOCOL.md`, sections 8.3 and 8.9). Advertisements may
//! only move forward one step at a time, and only after we used the key they replace; anything
//! else is a *conflict*. A conflict, or the peer refusing what we sealed, makes us *re-key*: we
//! forget the peer's key, start our own sequence again at 0 with a fresh key, and send a first
//! contact to the peer's hybrid prekey, which a thief of our state cannot read; a first contact
//! whose advertisement has sequence 0 tells the peer to do the same. Both sides recover by
//! themselves, and [`Conversation::take_rekeyed`] tells the node so it can show the user.
//! First contacts are hybrid (X25519 and ML-KEM-768) and go only to a hybrid prekey.
//!
//! Everything here is sans-IO: randomness comes in as [`Randomness`], time as Unix seconds, and
//! the state goes out as bytes ([`Conversation::to_bytes`]) for the node to store. The node must
//! store the state after every [`Conversation::seal`] before it sends the envelope, and after
//! every successful [`Conversation::open`] before it acknowledges it, or a crash could forget a
//! key the peer is about to use, or accept a replay. `docs/PROTOCOL.md` is the normative
//! description.

mod receive_keys;

use std::sync::Arc;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use libp2p_identity::PeerId;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;
use crate::codec;
use crate::envelope::{
    self, ENVELOPE_VERSION_3, ENVELOPE_VERSION_4, FirstContact, KIND_CONVERSATION,
    KIND_FIRST_CONTACT, KeyId, Payload, ReceiveSecret,
};
use crate::identity::{DeviceCertificate, DeviceKey, Identity, check_x25519_public};
use crate::mailbox_key::MailboxAddress;
use crate::message::Content;
use crate::prekey::{HybridPrekey, SignedPrekey};
use crate::x25519::KeyPair;
use receive_keys::{PeerKey, ReceiveKey};

pub use receive_keys::{
    ANSWER_AFTER_ENVELOPES, ANSWER_AFTER_SECS, ANSWER_AGAIN_SECS, MAX_PEER_STARTS,
    MAX_RECEIVE_KEYS, MAX_SUPERSEDED_SECS, RECEIVE_KEY_GRACE_SECS, Rekeyed,
};

/// Most envelopes one receive key accepts; each leaves its ephemeral key in that key's replay
/// cache. The sender stops using a peer key after this many envelopes and falls back to first
/// contact, so an honest sender never hits the limit. 512 keeps a full state under the codec's
/// decode limit.
pub const MAX_SEEN_EPHEMERALS: usize = 512;

/// Most first-contact ephemeral keys remembered per conversation. First contact goes to the
/// long-lived device key, so this cache cannot end with a key's deletion: it forgets the oldest
/// entry when full, and the age limit plus the node's message-id set cover what it forgot.
pub const MAX_SEEN_FIRST_CONTACTS: usize = 512;

/// Oldest first-contact envelope accepted, by its `sent_at_ms`, in seconds (30 days). The node
/// keeps message ids at least this long, so a first-contact envelope replayed after its
/// ephemeral fell out of the cache is still caught.
pub const MAX_FIRST_CONTACT_AGE_SECS: u64 = 30 * 24 * 3600;

/// Version byte in front of the stored state; a layout change bumps it. Version 3 added the
/// re-key fields, the peer's hybrid prekey and mailbox address; version 2 states still load.
pub const STATE_VERSION: u8 = 3;

/// The previous state version, read and converted by [`Conversation::from_bytes`].
const STATE_VERSION_2: u8 = 2;

/// How far in the future a message's `sent_at_ms` may be, by the receiver's clock, in seconds:
/// one day, the clock skew certificates tolerate too (section 2.6). Anything later is refused.
pub const MAX_SENT_AT_FUTURE_SECS: u64 = 24 * 3600;

/// How old a message's `sent_at_ms` may be, by the receiver's clock, in seconds, for every kind:
/// 30 days, past the 14 days an honest message lives in an outbox or a mailbox.
pub const MAX_SENT_AT_AGE_SECS: u64 = 30 * 24 * 3600;

/// Bytes of an ephemeral key kept in a replay cache. A replay must repeat the envelope byte for
/// byte (the ephemeral is hashed into the handshake), so 128 bits tell envelopes apart with a
/// collision chance of about 2^-110 even for a full cache, at half the storage.
const SEEN_LEN: usize = 16;

/// One replay-cache entry: the first [`SEEN_LEN`] bytes of an initiator ephemeral key.
type Seen = [u8; SEEN_LEN];

/// Upper bound of [`Conversation::to_bytes`], in bytes, with every cache full.
pub const MAX_STATE_LEN: usize = 1
    + MAX_RECEIVE_KEYS_LEN_PREFIX
    + MAX_RECEIVE_KEYS * (4 + 32 + 32 + 32 + 8 + 9 + 9 + 8 + MAX_SEEN_EPHEMERALS * SEEN_LEN)
    + CERTIFICATE_LEN
    + 4
    + 1
    + (4 + 32 + 32 + 4)
    + 8
    + MAX_SEEN_FIRST_CONTACTS * SEEN_LEN
    + 1
    + (32 + 8 + 8 + 64)
    // Version 3: restart base, the two flags, the notice, the hybrid prekey, the mailbox.
    + 4
    + 1
    + 1
    + 2
    + 1
    + HYBRID_PREKEY_LEN
    + 1
    + 32
    + 8
    + MAX_PEER_STARTS * 32;

/// Encoded length of a hybrid prekey.
const HYBRID_PREKEY_LEN: usize = 32 + crate::kem::PUBLIC_KEY_LEN + 8 + 8 + 64;

/// Length prefix of the receive-key list.
const MAX_RECEIVE_KEYS_LEN_PREFIX: usize = 8;

/// Encoded length of a device certificate.
const CERTIFICATE_LEN: usize = 32 + 32 + 8 + 8 + 64;

const _: () = assert!(MAX_STATE_LEN <= codec::MAX_DECODE_LEN, "a full state must stay decodable");

/// The random bytes one [`Conversation::seal`] may need: the Noise ephemeral, and a fresh
/// receive key and seed in case this envelope rotates our receive key. The caller fills all of
/// them from a CSPRNG every time; what is not used is wiped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Randomness {
    ephemeral: [u8; 32],
    receive_secret: [u8; 32],
    receive_seed: [u8; 32],
    kem: [u8; 32],
}

impl Randomness {
    /// Number of random bytes [`Randomness::from_bytes`] takes.
    pub const LEN: usize = 128;

    /// Splits 128 random bytes into the ephemeral, the receive secret, the seed and the ML-KEM
    /// encapsulation randomness (used by first contacts only).
    pub fn from_bytes(mut bytes: [u8; Self::LEN]) -> Self {
        let mut r = Self {
            ephemeral: [0; 32],
            receive_secret: [0; 32],
            receive_seed: [0; 32],
            kem: [0; 32],
        };
        r.ephemeral.copy_from_slice(&bytes[..32]);
        r.receive_secret.copy_from_slice(&bytes[32..64]);
        r.receive_seed.copy_from_slice(&bytes[64..96]);
        r.kem.copy_from_slice(&bytes[96..]);
        bytes.zeroize();
        r
    }
}

impl std::fmt::Debug for Randomness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Randomness").finish_non_exhaustive()
    }
}

/// 32 secret bytes on the heap, wiped on drop. Boxed so that moving the struct that owns it
/// (a vector growing or shifting) moves a pointer and leaves no copy of the secret behind.
struct Secret(Box<Zeroizing<[u8; 32]>>);

impl Secret {
    fn new(bytes: &[u8; 32]) -> Self {
        Self(Box::new(Zeroizing::new(*bytes)))
    }

    fn get(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Encode for Secret {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.get().encode(encoder)
    }
}

impl<Context> Decode<Context> for Secret {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let mut bytes = <[u8; 32]>::decode(decoder)?;
        let secret = Self::new(&bytes);
        bytes.zeroize();
        Ok(secret)
    }
}

bincode::impl_borrow_decode!(Secret);

/// Our receive keys loaded into X25519 ([`KeyPair::remembering`]), by public key: an envelope
/// to a key loaded before costs no key load (a base-point multiplication), and the sender's
/// device key, the same for every envelope of the conversation, costs its static-static
/// Diffie-Hellman once per receive key. Kept in memory only: it encodes as nothing, so the
/// stored state and its golden bytes are unchanged, and a state read from the store starts
/// with none loaded. A pair (the secret, its loaded form and the remembered shared secret) is
/// dropped, and wiped, as soon as its key is deleted ([`Conversation::expire`]), so it keeps
/// nothing that forward secrecy requires gone. At most one per receive key.
#[derive(Default)]
struct LoadedKeys(Vec<([u8; 32], Arc<KeyPair>)>);

impl LoadedKeys {
    /// The loaded pair of the key with this public half, loaded now if it was not.
    fn get(&mut self, public: &[u8; 32], secret: &[u8; 32]) -> Arc<KeyPair> {
        if let Some((_, pair)) = self.0.iter().find(|(p, _)| p == public) {
            return pair.clone();
        }
        let pair = Arc::new(KeyPair::remembering(secret));
        self.0.push((*public, pair.clone()));
        pair
    }

    /// Drops the pairs of keys no longer among `live`.
    fn keep_only(&mut self, live: &[ReceiveKey]) {
        self.0.retain(|(public, _)| live.iter().any(|k| k.public == *public));
    }
}

impl Encode for LoadedKeys {
    fn encode<E: Encoder>(&self, _: &mut E) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl<Context> Decode<Context> for LoadedKeys {
    fn decode<D: Decoder<Context = Context>>(_: &mut D) -> Result<Self, DecodeError> {
        Ok(Self::default())
    }
}

bincode::impl_borrow_decode!(LoadedKeys);

/// The end-to-end state of one conversation with one peer device: our receive keys with their
/// replay caches, the peer's newest receive key, and the peer's certificate.
#[derive(Encode, Decode)]
pub struct Conversation {
    /// The peer's device certificate; its device key authenticates conversation envelopes.
    peer: DeviceCertificate,
    /// Our receive keys, oldest first; the last one is the one we advertise.
    receive_keys: Vec<ReceiveKey>,
    /// The sequence number of our next receive key.
    next_seq: u32,
    /// The peer's newest receive key we know of.
    peer_key: Option<PeerKey>,
    /// Replay cache of first-contact envelopes from this peer, oldest first.
    first_contact_seen: Vec<Seen>,
    /// The peer's newest signed prekey (from its presence record), verified against `peer`:
    /// format 3 first contacts go to it while it is valid, to the device key otherwise.
    peer_prekey: Option<SignedPrekey>,
    /// Our keys are advertised with their sequence number minus this: a re-key starts the
    /// advertised sequence at 0 again while the numbers kept here go on increasing.
    restart_base: u32,
    /// Our next sealed envelope brings a fresh receive key whatever the peer has used (a
    /// re-key, ours or the peer's, asks for one).
    restart_pending: bool,
    /// We re-keyed and wait for the peer's restarted key; until it comes, only advertisements
    /// with sequence 0 are taken.
    awaiting_restart: bool,
    /// A re-key the node has not been told about yet ([`Rekeyed`] as its byte).
    rekeyed: Option<u8>,
    /// The peer's newest hybrid prekey (from its invite, a first contact or its presence
    /// record), verified against `peer`: format 4 first contacts go to it.
    peer_hybrid_prekey: Option<HybridPrekey>,
    /// The peer's mailbox address (from its invite or a first contact): where to deposit for
    /// it, and the key of its first-contact key ids and tags.
    peer_mailbox: Option<MailboxAddress>,
    /// The peer's keys we took at sequence 0 (the starts of its numbering), newest last, at
    /// most [`MAX_PEER_STARTS`]: a delayed first contact advertising one of them is old news,
    /// not a restart.
    peer_starts: Vec<[u8; 32]>,
    /// Our receive keys loaded for Diffie-Hellman, kept in memory only (see [`LoadedKeys`]).
    loaded: LoadedKeys,
}

/// The layout of state version 2, read by [`Conversation::from_bytes`] and converted.
#[derive(Decode)]
struct StateV2 {
    peer: DeviceCertificate,
    receive_keys: Vec<ReceiveKey>,
    next_seq: u32,
    peer_key: Option<PeerKey>,
    first_contact_seen: Vec<Seen>,
    peer_prekey: Option<SignedPrekey>,
}

/// What we are, for sealing: our device key and certificate, and for format 4 first contacts
/// our current hybrid prekey and mailbox address, which they carry so that the peer can re-key
/// and deposit to us without a DHT lookup.
pub struct Own<'a> {
    /// Our device key.
    pub device: &'a DeviceKey,
    /// Our current certificate, for that device key.
    pub certificate: &'a DeviceCertificate,
    /// Our current hybrid prekey, if we have one.
    pub prekey: Option<&'a HybridPrekey>,
    /// Our mailbox address, if we have one.
    pub mailbox: Option<&'a MailboxAddress>,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seqs: Vec<u32> = self.receive_keys.iter().map(|k| k.seq).collect();
        f.debug_struct("Conversation")
            .field("peer", &crate::identity::hex(&self.peer.identity_key))
            .field("receive_keys", &seqs)
            .field("peer_key", &self.peer_key.as_ref().map(|k| k.seq))
            .finish_non_exhaustive()
    }
}

impl Conversation {
    /// Starts a conversation with the device named by `peer` (from an invite or a first-contact
    /// envelope), checking the certificate at `now`. It holds no keys yet: the first envelope
    /// sealed is a first contact carrying our first receive key.
    pub fn new(peer: DeviceCertificate, now: u64) -> Result<Self, Error> {
        peer.verify(now)?;
        Ok(Self::with_verified_peer(peer))
    }

    /// Starts a conversation from a version 2 invite: the certificate, the inviter's hybrid
    /// prekey and its mailbox address, so the first contact needs no DHT lookup while the
    /// prekey is valid (section 7.4).
    pub fn from_invite(
        invite: &crate::invite::Invite,
        keys: Option<&crate::invite::InviteKeys>,
        now: u64,
    ) -> Result<Self, Error> {
        let mut conversation = Self::new(invite.certificate.clone(), now)?;
        if let Some(keys) = keys {
            // A stale prekey is still kept (its signature checked): the seal's error then says
            // a current one is needed, and `wants_prekey` makes the node look one up.
            keys.prekey.verify(&conversation.peer.identity_key, keys.prekey.created_at)?;
            conversation.peer_hybrid_prekey = Some(keys.prekey.clone());
            conversation.peer_mailbox = Some(keys.mailbox);
        }
        Ok(conversation)
    }

    /// Starts a conversation from a first-contact envelope of a peer we had none with, and
    /// returns it with the message.
    pub fn from_first_contact(opened: FirstContact, now: u64) -> Result<(Self, Content), Error> {
        let mut conversation = Self::with_verified_peer(opened.certificate.clone());
        let content = conversation.accept_first_contact(opened, now)?;
        // A new conversation has nothing to re-key: the peer's first key is simply taken.
        conversation.rekeyed = None;
        Ok((conversation, content))
    }

    fn with_verified_peer(peer: DeviceCertificate) -> Self {
        Self {
            peer,
            receive_keys: Vec::with_capacity(MAX_RECEIVE_KEYS + 1),
            next_seq: 0,
            peer_key: None,
            first_contact_seen: Vec::new(),
            peer_prekey: None,
            restart_base: 0,
            restart_pending: false,
            awaiting_restart: false,
            rekeyed: None,
            peer_hybrid_prekey: None,
            peer_mailbox: None,
            peer_starts: Vec::new(),
            loaded: LoadedKeys::default(),
        }
    }

    /// The peer's certificate, as last renewed.
    pub fn peer_certificate(&self) -> &DeviceCertificate {
        &self.peer
    }

    /// The peer's id, from its certificate.
    pub fn peer_id(&self) -> Result<PeerId, Error> {
        self.peer.claimed_peer_id()
    }

    /// The peer's mailbox address, if we know it: deposits for the peer go to its mailbox ids
    /// ([`crate::mailbox_key::mailbox_id`]).
    pub fn peer_mailbox(&self) -> Option<&MailboxAddress> {
        self.peer_mailbox.as_ref()
    }

    /// The peer's hybrid prekey, if we hold one.
    pub fn peer_hybrid_prekey(&self) -> Option<&HybridPrekey> {
        self.peer_hybrid_prekey.as_ref()
    }

    /// True once we know a receive key of the peer, so envelopes go out as `Kpsk1`.
    pub fn has_peer_receive_key(&self) -> bool {
        self.peer_key.is_some()
    }

    /// Seals `content` for the peer with format 3 envelopes, as before format 4: see
    /// [`Conversation::seal_with`], which this calls with no prekey or mailbox address of ours.
    pub fn seal(
        &mut self,
        device: &DeviceKey,
        certificate: &DeviceCertificate,
        content: &Content,
        randomness: Randomness,
        now: u64,
    ) -> Result<Vec<u8>, Error> {
        let own = Own { device, certificate, prekey: None, mailbox: None };
        self.seal_with(&own, content, randomness, now)
    }

    /// Seals `content` for the peer, at `now` (Unix seconds): a conversation envelope to the
    /// peer's newest receive key if we know one, else a first contact.
    ///
    /// Format 4 is sealed once the peer is format 4 capable (we hold its hybrid prekey and its
    /// mailbox address); the first contact then goes to that prekey only, and if it has expired
    /// sealing fails with "the peer's hybrid prekey has expired": the node looks up a current
    /// one, and never falls back to the device key (section 7.4). Otherwise format 3, as before.
    /// Either way the envelope advertises our newest receive key, made fresh from `randomness`
    /// if the peer has already used the previous one or a re-key asks for one.
    ///
    /// The state changes only if sealing succeeds; store it before sending the envelope.
    pub fn seal_with(
        &mut self,
        own: &Own<'_>,
        content: &Content,
        randomness: Randomness,
        now: u64,
    ) -> Result<Vec<u8>, Error> {
        if own.certificate.device_key != *own.device.public() {
            return Err(Error::InvalidKey {
                what: "own device",
                detail: "the certificate is for another device key",
            });
        }
        self.expire(now);
        let format_4 = self.peer_hybrid_prekey.is_some() && self.peer_mailbox.is_some();
        let rotate =
            self.restart_pending || self.receive_keys.last().is_none_or(|k| !k.seen.is_empty());
        let fresh = if rotate {
            let public = envelope::public_key(&randomness.receive_secret);
            Some(ReceiveKey {
                seq: self.next_seq,
                secret: Secret::new(&randomness.receive_secret),
                public,
                seed: Secret::new(&randomness.receive_seed),
                created_at: now,
                superseded_at: None,
                peer_moved_on_at: None,
                seen: Vec::new(),
            })
        } else {
            None
        };
        let next_seq = match &fresh {
            Some(_) => self.next_seq.checked_add(1).ok_or(Error::Envelope("key sequence spent"))?,
            None => self.next_seq,
        };
        // A re-key moved `restart_base` to the fresh key's number: it is advertised at 0.
        let mut advertised = fresh
            .as_ref()
            .or(self.receive_keys.last())
            .ok_or(Error::Envelope("no receive key to advertise"))?
            .advertisement();
        advertised.seq = advertised.seq.wrapping_sub(self.restart_base);
        let peer_key = self.peer_key.as_ref().filter(|k| (k.sent as usize) < MAX_SEEN_EPHEMERALS);
        let to_peer_key = peer_key.is_some();
        let sealed = match (peer_key, format_4) {
            (Some(key), false) => envelope::seal_conversation(
                own.device,
                &key.public,
                key.seed.get(),
                &self.peer.identity_key,
                &Payload::V1 {
                    certificate: None,
                    advertisement: Some(advertised),
                    content: content.clone(),
                },
                randomness.ephemeral,
            )?,
            (Some(key), true) => envelope::seal_conversation_4(
                own.device,
                &key.public,
                key.seed.get(),
                &self.peer.identity_key,
                &Payload::V2 {
                    certificate: None,
                    advertisement: Some(advertised),
                    prekey: None,
                    mailbox: None,
                    content: content.clone(),
                },
                randomness.ephemeral,
            )?,
            (None, false) => envelope::seal_first_contact(
                own.device,
                &self.first_contact_key(now),
                &self.peer.identity_key,
                &Payload::V1 {
                    certificate: Some(own.certificate.clone()),
                    advertisement: Some(advertised),
                    content: content.clone(),
                },
                randomness.ephemeral,
            )?,
            (None, true) => {
                let (Some(prekey), Some(address)) = (&self.peer_hybrid_prekey, &self.peer_mailbox)
                else {
                    return Err(Error::Envelope("no hybrid prekey of the peer"));
                };
                if prekey.expires_at < now {
                    return Err(Error::Envelope(
                        "the peer's hybrid prekey has expired: a current one is needed",
                    ));
                }
                envelope::seal_first_contact_4(
                    own.device,
                    prekey,
                    address,
                    &self.peer.identity_key,
                    &Payload::V2 {
                        certificate: Some(own.certificate.clone()),
                        advertisement: Some(advertised),
                        prekey: own.prekey.cloned(),
                        mailbox: own.mailbox.copied(),
                        content: content.clone(),
                    },
                    randomness.ephemeral,
                    randomness.kem,
                )?
            }
        };

        // Sealed: now commit.
        if let Some(key) = self.peer_key.as_mut().filter(|_| to_peer_key) {
            key.sent = key.sent.saturating_add(1);
        }
        if let Some(key) = fresh {
            if let Some(previous) = self.receive_keys.last_mut() {
                previous.superseded_at = Some(now);
            }
            self.receive_keys.push(key);
            self.next_seq = next_seq;
            self.restart_pending = false;
            self.enforce_key_limit();
        }
        Ok(sealed)
    }

    /// Takes the peer's signed prekey (from its presence record) if it verifies against the
    /// peer's identity at `now` and is newer than the one held; returns whether it was taken.
    pub fn set_peer_prekey(&mut self, prekey: SignedPrekey, now: u64) -> Result<bool, Error> {
        prekey.verify(&self.peer.identity_key, now)?;
        if self.peer_prekey.as_ref().is_some_and(|p| p.created_at >= prekey.created_at) {
            return Ok(false);
        }
        self.peer_prekey = Some(prekey);
        Ok(true)
    }

    /// Takes the peer's hybrid prekey (from a presence record, or renewed in an envelope) if it
    /// verifies against the peer's identity at `now` and is newer than the one held; returns
    /// whether it was taken.
    pub fn set_peer_hybrid_prekey(
        &mut self,
        prekey: HybridPrekey,
        now: u64,
    ) -> Result<bool, Error> {
        prekey.verify(&self.peer.identity_key, now)?;
        if self.peer_hybrid_prekey.as_ref().is_some_and(|p| p.created_at >= prekey.created_at) {
            return Ok(false);
        }
        self.peer_hybrid_prekey = Some(prekey);
        Ok(true)
    }

    /// True while the next envelope would be a first contact with no valid prekey to send it
    /// to: the node then looks the peer's presence record up for one.
    pub fn wants_prekey(&self, now: u64) -> bool {
        if self.peer_key.is_some() {
            return false;
        }
        match (&self.peer_hybrid_prekey, &self.peer_mailbox) {
            (Some(p), Some(_)) => p.expires_at < now,
            _ => self.peer_prekey.as_ref().is_none_or(|p| p.expires_at < now),
        }
    }

    /// Forgets the peer's prekey if the next envelope would be a first contact sealed to it;
    /// returns whether it did. The node calls this when the peer refused such an envelope (it
    /// lost the prekey's secret, say after a reinstall): a format 3 retry goes to the device
    /// key, a format 4 one waits for a current prekey from the peer's presence record.
    pub fn drop_prekey_for_first_contact(&mut self) -> bool {
        if self.peer_key.is_none() && self.peer_hybrid_prekey.is_some() {
            self.peer_hybrid_prekey = None;
            return true;
        }
        if self.peer_key.is_none() && self.peer_prekey.is_some() {
            self.peer_prekey = None;
            return true;
        }
        false
    }

    /// The key a format 3 first contact is sealed to: the peer's prekey while valid, else its
    /// device key.
    fn first_contact_key(&self, now: u64) -> [u8; 32] {
        match &self.peer_prekey {
            Some(p) if p.expires_at >= now => p.public,
            _ => self.peer.device_key,
        }
    }

    /// Opens an envelope from the peer at `now` (Unix seconds), as `me`: a conversation envelope
    /// (format 3 or 4) with one of our receive keys, or a format 3 first-contact envelope with
    /// our device key. A format 4 first contact needs our prekey's secrets, which the node
    /// holds: it opens it with [`envelope::open_first_contact_4`] and hands the result to
    /// [`Conversation::accept_first_contact`]. Returns the content; the sender is the peer.
    /// Fails with [`Error::Replayed`] for an envelope already accepted, and leaves the state
    /// unchanged on any failure (apart from deleting keys whose time is up).
    pub fn open(&mut self, me: &Identity, envelope: &[u8], now: u64) -> Result<Content, Error> {
        self.expire(now);
        let header = envelope::peek(envelope)?;
        match (header.version, header.kind, header.key_id) {
            (ENVELOPE_VERSION_3 | ENVELOPE_VERSION_4, KIND_CONVERSATION, Some(id)) => {
                self.open_conversation(me.identity_key(), id, envelope, now)
            }
            (ENVELOPE_VERSION_3, KIND_FIRST_CONTACT, Some(_)) => {
                let opened =
                    envelope::open_first_contact(me.device(), me.identity_key(), envelope, now)?;
                self.accept_first_contact(opened, now)
            }
            (ENVELOPE_VERSION_4, KIND_FIRST_CONTACT, _) => Err(Error::Envelope(
                "format 4 first contacts are opened by envelope::open_first_contact_4",
            )),
            _ => Err(Error::Envelope("format 1 envelopes are opened by envelope::open")),
        }
    }

    /// Accepts an opened first-contact envelope from this conversation's peer: checks the
    /// replay cache and the message's age, takes a renewed certificate, the peer's prekey and
    /// mailbox address (format 4), and the peer's advertised receive key by the rules of
    /// section 8.3: sequence 0 from a peer we knew means it restarted its side.
    pub fn accept_first_contact(
        &mut self,
        opened: FirstContact,
        now: u64,
    ) -> Result<Content, Error> {
        if opened.certificate.identity_key != self.peer.identity_key {
            return Err(Error::Envelope("first contact from another identity"));
        }
        let seen = seen_entry(&opened.ephemeral);
        if self.first_contact_seen.contains(&seen) {
            return Err(Error::Replayed);
        }
        let sent_at = opened.content.sent_at_ms / 1000;
        if sent_at.saturating_add(MAX_FIRST_CONTACT_AGE_SECS) < now {
            return Err(Error::Envelope("first contact older than the replay window"));
        }
        check_sent_at(&opened.content, now)?;
        if let Some(prekey) = &opened.prekey {
            prekey.verify(&opened.certificate.identity_key, now)?;
        }

        if self.first_contact_seen.len() >= MAX_SEEN_FIRST_CONTACTS {
            self.first_contact_seen.remove(0);
        }
        self.first_contact_seen.push(seen);
        // The certificate was verified when the envelope was opened; a newer one (renewal, or a
        // new device key of the same identity) replaces the one we hold.
        if (opened.certificate.not_before, opened.certificate.not_after)
            > (self.peer.not_before, self.peer.not_after)
        {
            self.peer = opened.certificate.clone();
        }
        if let Some(prekey) = opened.prekey
            && self.peer_hybrid_prekey.as_ref().is_none_or(|p| p.created_at < prekey.created_at)
        {
            self.peer_hybrid_prekey = Some(prekey);
        }
        if let Some(mailbox) = opened.mailbox {
            self.peer_mailbox = Some(mailbox);
        }
        if let Some(advertisement) = &opened.advertisement {
            self.adopt(advertisement, None);
        }
        Ok(opened.content)
    }

    /// Opens again a conversation envelope this conversation has already accepted (one that
    /// [`Conversation::open`] refuses as [`Error::Replayed`]) and returns its content, changing
    /// nothing. The replay cache is written before the node stores what an envelope says, so a
    /// node killed in between meets the envelope again (a mailbox hands it over until it is
    /// deleted) as a replay; acting on the content again, which the node does idempotently
    /// (by message id), is how that message still arrives. Only envelopes in the replay cache
    /// of a live receive key reopen.
    pub fn reopen(&self, me: &Identity, sealed: &[u8]) -> Result<Content, Error> {
        let header = envelope::peek(sealed)?;
        let (ENVELOPE_VERSION_3 | ENVELOPE_VERSION_4, KIND_CONVERSATION, Some(id)) =
            (header.version, header.kind, header.key_id)
        else {
            return Err(Error::Envelope("only conversation envelopes reopen"));
        };
        let seen = seen_entry(&envelope::ephemeral_key(sealed)?);
        for key in self.receive_keys.iter().filter(|k| k.has_id(&id) && k.seen.contains(&seen)) {
            // A replay is rare: the key is loaded for it alone.
            let receive = ReceiveSecret {
                secret: key.secret.get(),
                public: &key.public,
                seed: key.seed.get(),
                pair: None,
            };
            if let Ok(payload) = envelope::open_conversation_any(
                &receive,
                &self.peer.device_key,
                me.identity_key(),
                sealed,
            ) {
                return Ok(payload.content().clone());
            }
        }
        Err(Error::Envelope("not an envelope this conversation accepted"))
    }

    /// Takes an accepted envelope, named by its ephemeral key ([`envelope::ephemeral_key`]),
    /// back out of the replay caches, so the same bytes open again later; returns whether it
    /// was there. The node calls this when it opened an envelope but could not act on what it
    /// said (its store was busy or full): a mailbox hands the same envelope over again, and
    /// without this it would be taken for a replay and dropped. The rest of what opening did
    /// (an adopted key, a renewed certificate) holds either way.
    pub fn unsee(&mut self, ephemeral: &[u8; 32]) -> bool {
        let seen = seen_entry(ephemeral);
        let mut found = false;
        for list in std::iter::once(&mut self.first_contact_seen)
            .chain(self.receive_keys.iter_mut().map(|k| &mut k.seen))
        {
            let before = list.len();
            list.retain(|s| *s != seen);
            found |= list.len() != before;
        }
        found
    }

    fn open_conversation(
        &mut self,
        own_identity: &[u8; 32],
        id: KeyId,
        sealed: &[u8],
        now: u64,
    ) -> Result<Content, Error> {
        let ephemeral = envelope::ephemeral_key(sealed)?;
        let seen = seen_entry(&ephemeral);
        let mut failure = Error::Envelope("no receive key with this id: deleted, or never ours");
        // Key ids are 64 bits, so two live keys sharing one is all but impossible; trying each
        // match costs nothing when it does not happen and stays correct when it does. The ids
        // are compared in constant time, so the lookup says nothing about our keys.
        for index in 0..self.receive_keys.len() {
            let key = &self.receive_keys[index];
            if !key.has_id(&id) {
                continue;
            }
            let pair = self.loaded.get(&key.public, key.secret.get());
            let receive = ReceiveSecret {
                secret: key.secret.get(),
                public: &key.public,
                seed: key.seed.get(),
                pair: Some(pair),
            };
            let payload = match envelope::open_conversation_any(
                &receive,
                &self.peer.device_key,
                own_identity,
                sealed,
            ) {
                Ok(payload) => payload,
                Err(e) => {
                    failure = e;
                    continue;
                }
            };
            if key.seen.contains(&seen) {
                return Err(Error::Replayed);
            }
            if key.seen.len() >= MAX_SEEN_EPHEMERALS {
                return Err(Error::Envelope("receive key has taken its most envelopes"));
            }
            let (certificate, advertisement, prekey, mailbox, content) = match payload {
                Payload::V1 { certificate, advertisement, content } => {
                    (certificate, advertisement, None, None, content)
                }
                Payload::V2 { certificate, advertisement, prekey, mailbox, content } => {
                    (certificate, advertisement, prekey, mailbox, content)
                }
            };
            if let Some(certificate) = &certificate {
                self.check_renewal(certificate, now)?;
            }
            if let Some(advertisement) = &advertisement {
                check_x25519_public(&advertisement.public)?;
            }
            if let Some(prekey) = &prekey {
                prekey.verify(&self.peer.identity_key, now)?;
            }
            check_sent_at(&content, now)?;

            // Accepted: now commit.
            let seq = key.seq;
            self.receive_keys[index].seen.push(seen);
            for older in self.receive_keys.iter_mut().filter(|k| k.seq < seq) {
                older.peer_moved_on_at.get_or_insert(now);
            }
            if let Some(certificate) = certificate
                && certificate.not_after > self.peer.not_after
            {
                self.peer = certificate;
            }
            if let Some(prekey) = prekey
                && self.peer_hybrid_prekey.as_ref().is_none_or(|p| p.created_at < prekey.created_at)
            {
                self.peer_hybrid_prekey = Some(prekey);
            }
            if let Some(mailbox) = mailbox {
                self.peer_mailbox = Some(mailbox);
            }
            if let Some(advertisement) = &advertisement {
                self.adopt(advertisement, Some(seq));
            }
            return Ok(content);
        }
        Err(failure)
    }

    /// A certificate inside a conversation envelope may only renew the one we hold: same
    /// identity, same device key (the one the envelope was authenticated with), valid now.
    fn check_renewal(&self, certificate: &DeviceCertificate, now: u64) -> Result<(), Error> {
        if certificate.identity_key != self.peer.identity_key
            || certificate.device_key != self.peer.device_key
        {
            return Err(Error::Envelope("certificate in a conversation is not a renewal"));
        }
        certificate.verify(now).map(|_| ())
    }

    /// The state as bytes for the node's store: [`STATE_VERSION`] then the bincode encoding.
    /// The buffer holds private keys and is wiped when dropped; at most [`MAX_STATE_LEN`] bytes.
    pub fn to_bytes(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let body = Zeroizing::new(codec::encode(self)?);
        let mut out = Zeroizing::new(Vec::with_capacity(1 + body.len()));
        out.push(STATE_VERSION);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads a state written by [`Conversation::to_bytes`] (version 3, or version 2 from before
    /// format 4), refusing one that breaks any limit or invariant, so a corrupted store cannot
    /// make later calls misbehave.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let malformed = |detail: &str| Error::Malformed {
            what: "conversation state",
            detail: detail.to_owned(),
        };
        let Some((&version, body)) = bytes.split_first() else {
            return Err(malformed("empty"));
        };
        let state: Self = match version {
            STATE_VERSION => codec::decode("conversation state", body)?,
            STATE_VERSION_2 => {
                let old: StateV2 = codec::decode("conversation state", body)?;
                let mut state = Self::with_verified_peer(old.peer);
                state.receive_keys = old.receive_keys;
                state.next_seq = old.next_seq;
                state.peer_key = old.peer_key;
                state.first_contact_seen = old.first_contact_seen;
                state.peer_prekey = old.peer_prekey;
                state
            }
            _ => return Err(malformed("unknown state version")),
        };
        check_x25519_public(&state.peer.device_key)?;
        if state.receive_keys.len() > MAX_RECEIVE_KEYS {
            return Err(malformed("too many receive keys"));
        }
        if state.first_contact_seen.len() > MAX_SEEN_FIRST_CONTACTS {
            return Err(malformed("first-contact replay cache over its limit"));
        }
        let mut previous: Option<u32> = None;
        for key in &state.receive_keys {
            if key.seen.len() > MAX_SEEN_EPHEMERALS {
                return Err(malformed("replay cache over its limit"));
            }
            if previous.is_some_and(|p| key.seq <= p) || key.seq >= state.next_seq {
                return Err(malformed("receive keys out of sequence"));
            }
            previous = Some(key.seq);
        }
        if state.restart_base > state.next_seq {
            return Err(malformed("restart base beyond the sequence"));
        }
        if state.peer_starts.len() > MAX_PEER_STARTS {
            return Err(malformed("too many starts of the peer's numbering"));
        }
        if state.rekeyed.is_some_and(|b| Rekeyed::from_byte(b).is_none()) {
            return Err(malformed("unknown re-key reason"));
        }
        if let Some(peer_key) = &state.peer_key {
            check_x25519_public(&peer_key.public)?;
        }
        if let Some(prekey) = &state.peer_prekey {
            check_x25519_public(&prekey.public)?;
        }
        if let Some(prekey) = &state.peer_hybrid_prekey {
            check_x25519_public(&prekey.public)?;
            crate::kem::check_public(&prekey.kem_public)?;
        }
        Ok(state)
    }
}

/// Refuses content whose `sent_at_ms` is more than [`MAX_SENT_AT_FUTURE_SECS`] ahead of `now`
/// or more than [`MAX_SENT_AT_AGE_SECS`] behind it (section 8.7): the time a peer claims is
/// shown to the user and orders nothing, but it must not be absurd.
fn check_sent_at(content: &Content, now: u64) -> Result<(), Error> {
    let sent_at = content.sent_at_ms / 1000;
    if sent_at > now.saturating_add(MAX_SENT_AT_FUTURE_SECS) {
        return Err(Error::Envelope("message claims to be sent more than a day from now"));
    }
    if sent_at.saturating_add(MAX_SENT_AT_AGE_SECS) < now {
        return Err(Error::Envelope("message claims to be sent more than 30 days ago"));
    }
    Ok(())
}

fn seen_entry(ephemeral: &[u8; 32]) -> Seen {
    let mut seen = [0u8; SEEN_LEN];
    seen.copy_from_slice(&ephemeral[..SEEN_LEN]);
    seen
}

#[cfg(test)]
mod tests;
