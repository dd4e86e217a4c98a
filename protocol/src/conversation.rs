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
//! Everything here is sans-IO: randomness comes in as [`Randomness`], time as Unix seconds, and
//! the state goes out as bytes ([`Conversation::to_bytes`]) for the node to store. The node must
//! store the state after every [`Conversation::seal`] before it sends the envelope, and after
//! every successful [`Conversation::open`] before it acknowledges it, or a crash could forget a
//! key the peer is about to use, or accept a replay. `docs/PROTOCOL.md` is the normative
//! description.

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use libp2p_identity::PeerId;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;
use crate::codec;
use crate::envelope::{
    self, Advertisement, ENVELOPE_VERSION_3, FirstContact, KIND_CONVERSATION, KIND_FIRST_CONTACT,
    KeyId, Payload, ReceiveSecret,
};
use crate::identity::{DeviceCertificate, DeviceKey, Identity, check_x25519_public};
use crate::message::Content;
use crate::prekey::SignedPrekey;

/// Most receive keys kept per conversation, the newest included. The same bound libsignal and
/// vodozemac put on receiving chains: enough for envelopes still in flight to a key the peer
/// has moved past, small enough that a stolen state exposes little.
pub const MAX_RECEIVE_KEYS: usize = 5;

/// Most envelopes one receive key accepts; each leaves its ephemeral key in that key's replay
/// cache. The sender stops using a peer key after this many envelopes and falls back to first
/// contact, so an honest sender never hits the limit. 512 keeps a full state under the codec's
/// decode limit.
pub const MAX_SEEN_EPHEMERALS: usize = 512;

/// Most first-contact ephemeral keys remembered per conversation. First contact goes to the
/// long-lived device key, so this cache cannot end with a key's deletion: it forgets the oldest
/// entry when full, and the age limit plus the node's message-id set cover what it forgot.
pub const MAX_SEEN_FIRST_CONTACTS: usize = 512;

/// How long a superseded receive key is kept after the peer has started using a newer one, in
/// seconds: room for envelopes the relays reorder or delay (72 hours).
pub const RECEIVE_KEY_GRACE_SECS: u64 = 72 * 3600;

/// How long a superseded receive key is kept at most, in seconds, used or not: the mailbox
/// time-to-live, after which no honest envelope to it can still arrive (30 days).
pub const MAX_SUPERSEDED_SECS: u64 = 30 * 24 * 3600;

/// Oldest first-contact envelope accepted, by its `sent_at_ms`, in seconds (30 days). The node
/// keeps message ids at least this long, so a first-contact envelope replayed after its
/// ephemeral fell out of the cache is still caught.
pub const MAX_FIRST_CONTACT_AGE_SECS: u64 = 30 * 24 * 3600;

/// Version byte in front of the stored state; a layout change bumps it.
pub const STATE_VERSION: u8 = 2;

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
    + (32 + 8 + 8 + 64);

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
}

impl Randomness {
    /// Number of random bytes [`Randomness::from_bytes`] takes.
    pub const LEN: usize = 96;

    /// Splits 96 random bytes into the ephemeral, the receive secret and the seed.
    pub fn from_bytes(mut bytes: [u8; Self::LEN]) -> Self {
        let mut r = Self { ephemeral: [0; 32], receive_secret: [0; 32], receive_seed: [0; 32] };
        r.ephemeral.copy_from_slice(&bytes[..32]);
        r.receive_secret.copy_from_slice(&bytes[32..64]);
        r.receive_seed.copy_from_slice(&bytes[64..]);
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

/// One of our receive keys.
#[derive(Encode, Decode)]
struct ReceiveKey {
    /// Position in our sequence of keys for this conversation, as advertised.
    seq: u32,
    secret: Secret,
    public: [u8; 32],
    /// The PSK the peer must use with this key.
    seed: Secret,
    /// When we made it, Unix seconds.
    created_at: u64,
    /// When a newer key replaced it as the advertised one, Unix seconds.
    superseded_at: Option<u64>,
    /// When the peer first used a newer key of ours, Unix seconds: from then on, only envelopes
    /// already in flight can still arrive for this one, and the grace period runs.
    peer_moved_on_at: Option<u64>,
    /// Replay cache: the envelopes this key has accepted, by ephemeral, oldest first. Non-empty
    /// means the peer has seen this key, which is what triggers the next rotation.
    seen: Vec<Seen>,
}

impl ReceiveKey {
    fn id(&self) -> KeyId {
        envelope::key_id(&self.public)
    }

    fn advertisement(&self) -> Advertisement {
        Advertisement { seq: self.seq, public: self.public, seed: *self.seed.get() }
    }
}

/// The peer's newest advertised receive key, which our conversation envelopes go to.
#[derive(Encode, Decode)]
struct PeerKey {
    seq: u32,
    public: [u8; 32],
    seed: Secret,
    /// Envelopes we have sealed to it, capped at [`MAX_SEEN_EPHEMERALS`].
    sent: u32,
}

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
    /// first contacts go to it while it is valid, to the device key otherwise.
    peer_prekey: Option<SignedPrekey>,
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

    /// Starts a conversation from a first-contact envelope of a peer we had none with, and
    /// returns it with the message.
    pub fn from_first_contact(opened: FirstContact, now: u64) -> Result<(Self, Content), Error> {
        let mut conversation = Self::with_verified_peer(opened.certificate.clone());
        let content = conversation.accept_first_contact(opened, now)?;
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

    /// The ids of our live receive keys, oldest first. The node indexes conversations by them,
    /// so it can find the one a conversation envelope's key id belongs to.
    pub fn receive_key_ids(&self) -> Vec<KeyId> {
        self.receive_keys.iter().map(ReceiveKey::id).collect()
    }

    /// True once we know a receive key of the peer, so envelopes go out as `Kpsk1`.
    pub fn has_peer_receive_key(&self) -> bool {
        self.peer_key.is_some()
    }

    /// Seals `content` for the peer, at `now` (Unix seconds): a conversation envelope to the
    /// peer's newest receive key if we know one, else a first-contact envelope (carrying
    /// `certificate`, ours) to its device key. Either way it advertises our newest receive key,
    /// made fresh from `randomness` if the peer has already used the previous one.
    ///
    /// The state changes only if sealing succeeds; store it before sending the envelope.
    pub fn seal(
        &mut self,
        device: &DeviceKey,
        certificate: &DeviceCertificate,
        content: &Content,
        randomness: Randomness,
        now: u64,
    ) -> Result<Vec<u8>, Error> {
        if certificate.device_key != *device.public() {
            return Err(Error::InvalidKey {
                what: "own device",
                detail: "the certificate is for another device key",
            });
        }
        self.expire(now);
        let rotate = self.receive_keys.last().is_none_or(|k| !k.seen.is_empty());
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
        let advertised = fresh
            .as_ref()
            .or(self.receive_keys.last())
            .ok_or(Error::Envelope("no receive key to advertise"))?
            .advertisement();
        let peer_key = self.peer_key.as_ref().filter(|k| (k.sent as usize) < MAX_SEEN_EPHEMERALS);
        let to_peer_key = peer_key.is_some();
        let sealed = match peer_key {
            Some(key) => envelope::seal_conversation(
                device,
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
            None => envelope::seal_first_contact(
                device,
                &self.first_contact_key(now),
                &self.peer.identity_key,
                &Payload::V1 {
                    certificate: Some(certificate.clone()),
                    advertisement: Some(advertised),
                    content: content.clone(),
                },
                randomness.ephemeral,
            )?,
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

    /// True while the next envelope would be a first contact with no prekey to send it to: the
    /// node then looks the peer's presence record up for one.
    pub fn wants_prekey(&self, now: u64) -> bool {
        self.peer_key.is_none() && self.peer_prekey.as_ref().is_none_or(|p| p.expires_at < now)
    }

    /// Forgets the peer's prekey if the next envelope would be a first contact sealed to it;
    /// returns whether it did. The node calls this when the peer refused such an envelope (it
    /// lost the prekey's secret, say after a reinstall), so the retry goes to the device key.
    pub fn drop_prekey_for_first_contact(&mut self) -> bool {
        if self.peer_key.is_none() && self.peer_prekey.is_some() {
            self.peer_prekey = None;
            return true;
        }
        false
    }

    /// The key a first contact is sealed to: the peer's prekey while valid, else its device key.
    fn first_contact_key(&self, now: u64) -> [u8; 32] {
        match &self.peer_prekey {
            Some(p) if p.expires_at >= now => p.public,
            _ => self.peer.device_key,
        }
    }

    /// Opens an envelope from the peer at `now` (Unix seconds), as `me`: a conversation envelope
    /// with one of our receive keys, or a first-contact envelope with our device key. Returns the
    /// content; the sender is the peer. Fails with [`Error::Replayed`] for an envelope already
    /// accepted, and leaves the state unchanged on any failure (apart from deleting keys whose
    /// time is up).
    pub fn open(&mut self, me: &Identity, envelope: &[u8], now: u64) -> Result<Content, Error> {
        self.expire(now);
        let header = envelope::peek(envelope)?;
        match (header.version, header.kind, header.key_id) {
            (ENVELOPE_VERSION_3, KIND_CONVERSATION, Some(id)) => {
                self.open_conversation(me.identity_key(), id, envelope, now)
            }
            (ENVELOPE_VERSION_3, KIND_FIRST_CONTACT, Some(_)) => {
                let opened =
                    envelope::open_first_contact(me.device(), me.identity_key(), envelope, now)?;
                self.accept_first_contact(opened, now)
            }
            _ => Err(Error::Envelope("format 1 envelopes are opened by envelope::open")),
        }
    }

    /// Accepts an opened first-contact envelope from this conversation's peer: checks the
    /// replay cache and the message's age, takes a renewed certificate, and adopts the peer's
    /// advertised receive key.
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
        if let Some(advertisement) = &opened.advertisement {
            self.adopt(advertisement);
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
        let (ENVELOPE_VERSION_3, KIND_CONVERSATION, Some(id)) =
            (header.version, header.kind, header.key_id)
        else {
            return Err(Error::Envelope("only conversation envelopes reopen"));
        };
        let seen = seen_entry(&envelope::ephemeral_key(sealed)?);
        for key in self.receive_keys.iter().filter(|k| k.id() == id && k.seen.contains(&seen)) {
            let receive = ReceiveSecret {
                secret: key.secret.get(),
                public: &key.public,
                seed: key.seed.get(),
            };
            if let Ok(Payload::V1 { content, .. }) = envelope::open_conversation(
                &receive,
                &self.peer.device_key,
                me.identity_key(),
                sealed,
            ) {
                return Ok(content);
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
        // match costs nothing when it does not happen and stays correct when it does.
        for index in 0..self.receive_keys.len() {
            let key = &self.receive_keys[index];
            if key.id() != id {
                continue;
            }
            let receive = ReceiveSecret {
                secret: key.secret.get(),
                public: &key.public,
                seed: key.seed.get(),
            };
            let payload = match envelope::open_conversation(
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
            let Payload::V1 { certificate, advertisement, content } = payload;
            if let Some(certificate) = &certificate {
                self.check_renewal(certificate, now)?;
            }
            if let Some(advertisement) = &advertisement {
                check_x25519_public(&advertisement.public)?;
            }

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
            if let Some(advertisement) = &advertisement {
                self.adopt(advertisement);
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

    /// Takes the peer's advertised receive key if it is newer than the one we have, so a
    /// delayed envelope cannot roll us back to an older key.
    fn adopt(&mut self, advertisement: &Advertisement) {
        if self.peer_key.as_ref().is_none_or(|k| advertisement.seq > k.seq) {
            self.peer_key = Some(PeerKey {
                seq: advertisement.seq,
                public: advertisement.public,
                seed: Secret::new(&advertisement.seed),
                sent: 0,
            });
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

    fn enforce_key_limit(&mut self) {
        while self.receive_keys.len() > MAX_RECEIVE_KEYS {
            self.receive_keys.remove(0);
        }
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

    /// Reads a state written by [`Conversation::to_bytes`], refusing one that breaks any limit
    /// or invariant, so a corrupted store cannot make later calls misbehave.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let malformed = |detail: &str| Error::Malformed {
            what: "conversation state",
            detail: detail.to_owned(),
        };
        let Some((&version, body)) = bytes.split_first() else {
            return Err(malformed("empty"));
        };
        if version != STATE_VERSION {
            return Err(malformed("unknown state version"));
        }
        let state: Self = codec::decode("conversation state", body)?;
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
        if let Some(peer_key) = &state.peer_key {
            check_x25519_public(&peer_key.public)?;
        }
        if let Some(prekey) = &state.peer_prekey {
            check_x25519_public(&prekey.public)?;
        }
        Ok(state)
    }
}

fn seen_entry(ephemeral: &[u8; 32]) -> Seen {
    let mut seen = [0u8; SEEN_LEN];
    seen.copy_from_slice(&ephemeral[..SEEN_LEN]);
    seen
}

#[cfg(test)]
mod tests;
