//! End-to-end envelopes: one complete one-way Noise handshake message per message, padded to a
//! fixed size bucket.
//!
//! Two formats exist. Format 3 is the current one: `header (10 bytes) || Noise message`, where
//! the header is the format version, the envelope kind and the 8-byte id of the key the
//! envelope is encrypted to. Kind 1 (first contact) is `Noise_X_25519_ChaChaPoly_BLAKE2s` to the
//! recipient's device key; kind 2 (conversation) is `Noise_Kpsk1_25519_ChaChaPoly_BLAKE2s` to a
//! receive key the recipient advertised, with that key's seed as the PSK. Format 1 is the
//! walking skeleton's (a 2-byte header, kind 1 only, no key id), kept so [`seal`] and [`open`]
//! work until the node has moved to [`crate::conversation`].
//!
//! The Noise prologue is `"kolokol-envelope" || header || recipient identity key`: changing any
//! header byte breaks the decryption, and so does opening an envelope as anyone but the
//! identity the sender meant (no unknown-key-share through a certificate that names someone
//! else's device key). The Noise payload is `u32 length || bincode body || zero padding`, sized so the
//! whole envelope is exactly one of [`BUCKETS`]. Each envelope stands alone: loss, reordering
//! and duplication by relays and mailboxes cannot desynchronise anything, and no Noise state is
//! ever kept between messages. `docs/PROTOCOL.md` is the normative description.

mod bucket;
mod resolver;

use std::sync::{Arc, LazyLock};

use bincode::{Decode, Encode};
use blake2::{Blake2s256, Digest};
use constant_time::ct_eq;
use libp2p_identity::PeerId;
use snow::params::NoiseParams;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;
use crate::codec;
use crate::identity::{
    DeviceCertificate, DeviceKey, Identity, VerifiedCertificates, check_x25519_public,
};
use crate::kem;
use crate::mailbox_key::MailboxAddress;
use crate::message::Content;
use crate::prekey::{HybridPrekey, HybridPrekeySecret};
use crate::x25519::KeyPair;
#[cfg(test)]
use bucket::bucket_with_overhead;
use bucket::{overhead, overhead_4, sealing_bucket};
use resolver::EnvelopeResolver;

// The attack tests forge envelopes with resolvers of their own on the same primitives.
#[cfg(test)]
use resolver::{GivenBytes, X25519};
#[cfg(test)]
use snow::params::{CipherChoice, DHChoice, HashChoice};
#[cfg(test)]
use snow::resolvers::{CryptoResolver, DefaultResolver};
#[cfg(test)]
use snow::types::{Cipher, Dh, Hash, Random};

pub use bucket::{
    BUCKETS, FIRST_CONTACT_4_OVERHEAD, MAX_ENVELOPE_LEN, TEXT_BUCKET, bucket_for, bucket_for_kind,
    bucket_for_kind_4, floor_for,
};

/// Format 1, the walking skeleton's: a 2-byte header and a [`Sealed`] payload, first contact
/// only. Read and written only by [`seal`] and [`open`].
pub const ENVELOPE_VERSION: u8 = 1;

/// Format 3: a 10-byte header with the key id, a [`Payload`], both kinds, and the recipient's
/// identity key in the Noise prologue. Format 2, the same without the identity, is refused: it
/// was never released.
pub const ENVELOPE_VERSION_3: u8 = 3;

/// Format 4: the hybrid post-quantum first contact (`Noise_Xpsk0` to a hybrid prekey, with an
/// ML-KEM-768 ciphertext in clear and its secret as the PSK), an 18-byte header whose last 8
/// bytes are a tag that lets the recipient throw junk away before any X25519 operation, and a
/// [`Payload::V2`]. Formats 1 and 3 are still opened, never sealed by a conversation.
pub const ENVELOPE_VERSION_4: u8 = 4;

/// Header length of format 4: version, kind, key id and tag.
pub const HEADER_LEN_4: usize = 2 + KEY_ID_LEN + TAG_LEN;

/// Length of the format 4 header tag.
pub const TAG_LEN: usize = 8;

/// Domain-separation prefix of the format 4 header tag.
const TAG_CONTEXT: &[u8] = b"kolokol-envelope-tag:v4";

/// Domain-separation prefix of the key id of a hybrid prekey, keyed with the owner's mailbox
/// address so that only its contacts can tell which identity a first contact is for.
const PREKEY_ID_CONTEXT: &[u8] = b"kolokol-prekey-id:v4";

/// Envelope kind: first contact, `Noise_X` to the recipient's device key.
pub const KIND_FIRST_CONTACT: u8 = 1;

/// Envelope kind: conversation, `Noise_Kpsk1` to a receive key the recipient advertised.
pub const KIND_CONVERSATION: u8 = 2;

/// Header length of format 1: version and kind.
pub const HEADER_LEN: usize = 2;

/// Length of a key id, the first bytes of a domain-separated BLAKE2s hash of a public key.
pub const KEY_ID_LEN: usize = 8;

/// Header length of format 3: version, kind and key id.
pub const HEADER_LEN_3: usize = 2 + KEY_ID_LEN;

/// Noise overhead of one `X` message: ephemeral key, encrypted static key with its tag, and
/// the payload's tag.
pub const NOISE_X_OVERHEAD: usize = 32 + 48 + 16;

/// Noise overhead of one `Kpsk1` message: ephemeral key and the payload's tag (both static
/// keys are known in advance, so none travels).
pub const NOISE_KPSK1_OVERHEAD: usize = 32 + 16;

/// Length of the plaintext length prefix inside the payload.
const LENGTH_PREFIX: usize = 4;

/// Length of an X25519 public key, and so of the Noise ephemeral at the start of a message.
const KEY_LEN: usize = 32;

/// Prefix of the Noise prologue; the header bytes follow it.
const PROLOGUE_CONTEXT: &[u8] = b"kolokol-envelope";

/// Domain-separation prefix of key ids, so they never collide with any other hash of a key.
const KEY_ID_CONTEXT: &[u8] = b"kolokol-key-id";

static NOISE_X: LazyLock<NoiseParams> = LazyLock::new(|| {
    "Noise_X_25519_ChaChaPoly_BLAKE2s".parse().expect("a valid, supported Noise protocol name")
});

static NOISE_XPSK0: LazyLock<NoiseParams> = LazyLock::new(|| {
    "Noise_Xpsk0_25519_ChaChaPoly_BLAKE2s".parse().expect("a valid, supported Noise protocol name")
});

static NOISE_KPSK1: LazyLock<NoiseParams> = LazyLock::new(|| {
    "Noise_Kpsk1_25519_ChaChaPoly_BLAKE2s".parse().expect("a valid, supported Noise protocol name")
});

/// The short name of a public key that travels in clear in a format 3 header, so the recipient
/// knows which private key to try without trial decryption.
pub type KeyId = [u8; KEY_ID_LEN];

/// The key id of an X25519 public key: the first [`KEY_ID_LEN`] bytes of
/// `BLAKE2s-256("kolokol-key-id" || public)`.
pub fn key_id(public: &[u8; 32]) -> KeyId {
    let mut hasher = Blake2s256::new();
    hasher.update(KEY_ID_CONTEXT);
    hasher.update(public);
    let digest = hasher.finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

/// The cleartext header of an envelope, readable before any decryption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The format version, [`ENVELOPE_VERSION`] or [`ENVELOPE_VERSION_3`].
    pub version: u8,
    /// [`KIND_FIRST_CONTACT`] or [`KIND_CONVERSATION`].
    pub kind: u8,
    /// The id of the key the envelope is encrypted to; format 1 has none.
    pub key_id: Option<KeyId>,
    /// Format 4's header tag (see [`tag`]); formats 1 and 3 have none.
    pub tag: Option<[u8; TAG_LEN]>,
}

/// Reads the cleartext header of an envelope and checks its length, version and kind, so the
/// node can pick the conversation (by key id) before opening it. Nothing here is authenticated
/// until the envelope is opened.
pub fn peek(envelope: &[u8]) -> Result<Header, Error> {
    if !BUCKETS.contains(&envelope.len()) {
        return Err(Error::Envelope("length is not one of the envelope buckets"));
    }
    match (envelope[0], envelope[1]) {
        (ENVELOPE_VERSION, KIND_FIRST_CONTACT) => Ok(Header {
            version: ENVELOPE_VERSION,
            kind: KIND_FIRST_CONTACT,
            key_id: None,
            tag: None,
        }),
        (
            version @ (ENVELOPE_VERSION_3 | ENVELOPE_VERSION_4),
            kind @ (KIND_FIRST_CONTACT | KIND_CONVERSATION),
        ) => {
            let mut id = [0u8; KEY_ID_LEN];
            id.copy_from_slice(&envelope[2..HEADER_LEN_3]);
            let tag = (version == ENVELOPE_VERSION_4).then(|| {
                let mut tag = [0u8; TAG_LEN];
                tag.copy_from_slice(&envelope[HEADER_LEN_3..HEADER_LEN_4]);
                tag
            });
            Ok(Header { version, kind, key_id: Some(id), tag })
        }
        (ENVELOPE_VERSION | ENVELOPE_VERSION_3 | ENVELOPE_VERSION_4, _) => {
            Err(Error::Envelope("unsupported envelope kind"))
        }
        _ => Err(Error::Envelope("unsupported envelope version")),
    }
}

/// What the sender encrypts in a format 1 envelope: its certificate (which binds its Noise
/// static key to its identity) and the content.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Sealed {
    /// The sender's device certificate. Its device key must equal the Noise static key.
    pub sender: DeviceCertificate,
    /// The message.
    pub content: Content,
}

/// What the sender encrypts in a format 3 envelope, of either kind. It is an enum so a later
/// layout is a new variant that old readers refuse cleanly: the 4-byte variant index is the
/// payload's own version.
// A payload lives for one seal or open; boxing the 1.3 KB prekey of layout 2 would save nothing
// worth an allocation and a less direct encoding.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Payload {
    /// Payload layout 1.
    V1 {
        /// The sender's device certificate: required in first-contact envelopes (it binds the
        /// Noise static key to the identity); optional in conversation envelopes, where it can
        /// carry a renewed certificate for the same device key.
        certificate: Option<DeviceCertificate>,
        /// The sender's newest receive key for this conversation, which the recipient uses for
        /// its next `Kpsk1` envelopes.
        advertisement: Option<Advertisement>,
        /// The message.
        content: Content,
    },
    /// Payload layout 2, the only one of format 4.
    V2 {
        /// The sender's device certificate: required in first contacts, a renewal otherwise.
        certificate: Option<DeviceCertificate>,
        /// The sender's newest receive key for this conversation. In a first contact, sequence
        /// number 0 says the sender (re)started its side of the conversation (section 8.9).
        advertisement: Option<Advertisement>,
        /// The sender's current hybrid prekey, so the recipient can re-key to it later without
        /// a DHT lookup: every first contact carries one.
        prekey: Option<HybridPrekey>,
        /// The sender's mailbox address, so the recipient can deposit answers (section 11.1):
        /// every first contact carries it.
        mailbox: Option<MailboxAddress>,
        /// The message.
        content: Content,
    },
}

impl Payload {
    /// The content, whatever the layout.
    pub fn content(&self) -> &Content {
        match self {
            Payload::V1 { content, .. } | Payload::V2 { content, .. } => content,
        }
    }
}

/// A receive key offered to the peer: its public half and the seed the peer must use as the
/// Noise PSK when encrypting to it. It travels only inside encrypted payloads.
#[derive(Clone, PartialEq, Eq, Encode, Decode, Zeroize, ZeroizeOnDrop)]
pub struct Advertisement {
    /// Position of the key in the advertiser's sequence for this conversation; a larger number
    /// is a newer key, so reordered envelopes cannot roll the peer back to an older one.
    pub seq: u32,
    /// The X25519 public key.
    pub public: [u8; 32],
    /// The 32-byte secret seed, used as the `psk1` of every envelope to this key.
    pub seed: [u8; 32],
}

impl std::fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertisement")
            .field("seq", &self.seq)
            .field("public", &crate::identity::hex(&self.public))
            .finish_non_exhaustive()
    }
}

/// An opened format 1 envelope: who sent it, as proven by the handshake and the certificate,
/// and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The sender's peer id, derived from the verified certificate.
    pub sender: PeerId,
    /// The sender's certificate, so the recipient can answer (receipts) without a lookup.
    pub certificate: DeviceCertificate,
    /// The message.
    pub content: Content,
}

/// An opened format 3 first-contact envelope, with everything a conversation needs to accept
/// it (see [`crate::conversation::Conversation::accept_first_contact`]). Only
/// [`open_first_contact`] makes one (it is `non_exhaustive`), so holding one means the
/// certificate verified.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FirstContact {
    /// The sender's peer id, derived from the verified certificate.
    pub sender: PeerId,
    /// The sender's verified certificate; its device key is the Noise static key.
    pub certificate: DeviceCertificate,
    /// The sender's receive key for the reply, if it sent one.
    pub advertisement: Option<Advertisement>,
    /// The message.
    pub content: Content,
    /// The initiator's ephemeral public key, the replay cache's entry for this envelope.
    pub ephemeral: [u8; 32],
    /// The envelope's format, [`ENVELOPE_VERSION_3`] or [`ENVELOPE_VERSION_4`].
    pub version: u8,
    /// Format 4: the sender's hybrid prekey, verified against its certificate's identity.
    pub prekey: Option<HybridPrekey>,
    /// Format 4: the sender's mailbox address.
    pub mailbox: Option<MailboxAddress>,
}

/// Seals `content` in a format 1 envelope from `sender` (with its current `certificate`) to
/// the recipient's X25519 device key. `ephemeral` must be 32 fresh random bytes: it becomes the
/// Noise ephemeral key.
pub fn seal(
    sender: &Identity,
    certificate: &DeviceCertificate,
    recipient_device_key: &[u8; 32],
    content: &Content,
    ephemeral: [u8; 32],
) -> Result<Vec<u8>, Error> {
    check_x25519_public(recipient_device_key)?;
    let body = codec::encode(&Sealed { sender: certificate.clone(), content: content.clone() })?;
    let body = Zeroizing::new(body);
    let bucket =
        sealing_bucket("sealed message", HEADER_LEN + NOISE_X_OVERHEAD, body.len(), content)?;
    let header = [ENVELOPE_VERSION, KIND_FIRST_CONTACT];
    let device = sender.device();
    let resolver =
        EnvelopeResolver::device(device, Some(ephemeral)).remembering(recipient_device_key);
    let builder = snow::Builder::with_resolver(NOISE_X.clone(), Box::new(resolver));
    let prologue = prologue(&header, None);
    let handshake = builder
        .local_private_key(device.secret())
        .and_then(|b| b.remote_public_key(recipient_device_key))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_initiator())
        .map_err(|e| noise("build", e))?;
    write(handshake, &header, &body, bucket, NOISE_X_OVERHEAD)
}

/// Opens a format 1 envelope addressed to `recipient`, checking the sender's certificate at
/// `now` (Unix seconds). Any change to any byte makes this fail.
pub fn open(recipient: &DeviceKey, envelope: &[u8], now: u64) -> Result<Opened, Error> {
    let header = peek(envelope)?;
    if header.version != ENVELOPE_VERSION {
        return Err(Error::Envelope("unsupported envelope version"));
    }
    let (header, message) = envelope.split_at(HEADER_LEN);
    ephemeral_of(message)?;
    let resolver = EnvelopeResolver::device(recipient, None);
    let builder = snow::Builder::with_resolver(NOISE_X.clone(), Box::new(resolver));
    let prologue = prologue(header, None);
    let handshake = builder
        .local_private_key(recipient.secret())
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(|e| noise("build", e))?;
    let (plaintext, remote_static) = read(handshake, message)?;
    let sealed: Sealed = codec::decode("sealed message", unpad(&plaintext)?)?;
    if !ct_eq(&sealed.sender.device_key, &remote_static) {
        return Err(Error::Envelope("sender certificate does not match the Noise static key"));
    }
    let sender = sealed.sender.verify(now)?;
    Ok(Opened { sender, certificate: sealed.sender, content: sealed.content })
}

/// Seals a format 3 first-contact envelope (`Noise_X`) from `sender` to `recipient_key` (the
/// recipient's device key or signed prekey) for the identity `recipient_identity`. The payload
/// must carry the sender's certificate, or the recipient will refuse it. `ephemeral` must be 32
/// fresh random bytes.
pub fn seal_first_contact(
    sender: &DeviceKey,
    recipient_key: &[u8; 32],
    recipient_identity: &[u8; 32],
    payload: &Payload,
    ephemeral: [u8; 32],
) -> Result<Vec<u8>, Error> {
    seal_3(KIND_FIRST_CONTACT, sender, recipient_key, None, recipient_identity, payload, ephemeral)
}

/// Opens a format 3 first-contact envelope addressed to `recipient` (our device key or one of
/// our prekeys) and meant for our identity key `own_identity`, checks that the payload carries
/// a certificate for the Noise static key, and verifies it at `now` (Unix seconds). Replay
/// checks are the conversation's job, which is why the ephemeral key is returned.
pub fn open_first_contact(
    recipient: &DeviceKey,
    own_identity: &[u8; 32],
    envelope: &[u8],
    now: u64,
) -> Result<FirstContact, Error> {
    open_first_contact_remembering(recipient, own_identity, envelope, now, None)
}

/// As [`open_first_contact`], with the sender's certificate checked through `verified`
/// ([`DeviceCertificate::verify_remembered`]): a daemon passes the list it keeps, so the same
/// sender's first contacts cost one Ed25519 verification, not one each.
pub fn open_first_contact_remembering(
    recipient: &DeviceKey,
    own_identity: &[u8; 32],
    envelope: &[u8],
    now: u64,
    verified: Option<&VerifiedCertificates>,
) -> Result<FirstContact, Error> {
    let header = peek(envelope)?;
    if header.version != ENVELOPE_VERSION_3 || header.kind != KIND_FIRST_CONTACT {
        return Err(Error::Envelope("not a first-contact envelope"));
    }
    if !header.key_id.is_some_and(|id| constant_time::ct_eq(&id, &key_id(recipient.public()))) {
        return Err(Error::Envelope("not for this device key"));
    }
    let (header, message) = envelope.split_at(HEADER_LEN_3);
    let ephemeral = ephemeral_of(message)?;
    let resolver = EnvelopeResolver::device(recipient, None);
    let builder = snow::Builder::with_resolver(NOISE_X.clone(), Box::new(resolver));
    let prologue = prologue(header, Some(own_identity));
    let handshake = builder
        .local_private_key(recipient.secret())
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(|e| noise("build", e))?;
    let (plaintext, remote_static) = read(handshake, message)?;
    let Payload::V1 { certificate, advertisement, content } =
        codec::decode("envelope payload", unpad(&plaintext)?)?
    else {
        return Err(Error::Envelope("format 3 carries payload layout 1"));
    };
    let Some(certificate) = certificate else {
        return Err(Error::Envelope("first contact without the sender's certificate"));
    };
    if !ct_eq(&certificate.device_key, &remote_static) {
        return Err(Error::Envelope("sender certificate does not match the Noise static key"));
    }
    let sender = match verified {
        Some(verified) => certificate.verify_remembered(now, verified)?,
        None => certificate.verify(now)?,
    };
    if let Some(a) = &advertisement {
        check_x25519_public(&a.public)?;
    }
    Ok(FirstContact {
        sender,
        certificate,
        advertisement,
        content,
        ephemeral,
        version: ENVELOPE_VERSION_3,
        prekey: None,
        mailbox: None,
    })
}

/// Seals a format 3 conversation envelope (`Noise_Kpsk1`) from `sender` (our device key, which
/// the recipient knows from our certificate) to the recipient's advertised receive key, with
/// that key's `seed` as the PSK, for the identity `recipient_identity`. `ephemeral` must be 32
/// fresh random bytes.
pub(crate) fn seal_conversation(
    sender: &DeviceKey,
    receive_key: &[u8; 32],
    seed: &[u8; 32],
    recipient_identity: &[u8; 32],
    payload: &Payload,
    ephemeral: [u8; 32],
) -> Result<Vec<u8>, Error> {
    seal_3(
        KIND_CONVERSATION,
        sender,
        receive_key,
        Some(seed),
        recipient_identity,
        payload,
        ephemeral,
    )
}

/// Seals a format 3 envelope of `kind` from `sender` to `recipient_key` for the identity
/// `recipient_identity`: `Noise_X` for a first contact, `Noise_Kpsk1` with `psk` in slot 1 for a
/// conversation. The two kinds differ in nothing else on the sending side.
fn seal_3(
    kind: u8,
    sender: &DeviceKey,
    recipient_key: &[u8; 32],
    psk: Option<&[u8; 32]>,
    recipient_identity: &[u8; 32],
    payload: &Payload,
    ephemeral: [u8; 32],
) -> Result<Vec<u8>, Error> {
    check_x25519_public(recipient_key)?;
    let body = Zeroizing::new(codec::encode(payload)?);
    let bucket = sealing_bucket("envelope payload", overhead(kind), body.len(), payload.content())?;
    let header = header_3(kind, recipient_key);
    let (params, noise_overhead) = if kind == KIND_CONVERSATION {
        (&*NOISE_KPSK1, NOISE_KPSK1_OVERHEAD)
    } else {
        (&*NOISE_X, NOISE_X_OVERHEAD)
    };
    let resolver = EnvelopeResolver::device(sender, Some(ephemeral)).remembering(recipient_key);
    let builder = snow::Builder::with_resolver(params.clone(), Box::new(resolver));
    let prologue = prologue(&header, Some(recipient_identity));
    let handshake = builder
        .local_private_key(sender.secret())
        .and_then(|b| b.remote_public_key(recipient_key))
        .and_then(|b| match psk {
            Some(psk) => b.psk(1, psk),
            None => Ok(b),
        })
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_initiator())
        .map_err(|e| noise("build", e))?;
    write(handshake, &header, &body, bucket, noise_overhead)
}

/// The private half of a receive key, as [`open_conversation`] needs it.
pub(crate) struct ReceiveSecret<'a> {
    pub secret: &'a [u8; 32],
    pub public: &'a [u8; 32],
    pub seed: &'a [u8; 32],
    /// `secret` already loaded for Diffie-Hellman, when the caller keeps it loaded.
    pub pair: Option<Arc<KeyPair>>,
}

/// Opens a format 3 conversation envelope with one of our receive keys, meant for our identity
/// key `own_identity`, authenticating the sender by its device key (`sender_device_key`, known
/// from its certificate). The caller has already matched the key id.
pub(crate) fn open_conversation(
    receive: &ReceiveSecret<'_>,
    sender_device_key: &[u8; 32],
    own_identity: &[u8; 32],
    envelope: &[u8],
) -> Result<Payload, Error> {
    let header = peek(envelope)?;
    if header.version != ENVELOPE_VERSION_3 || header.kind != KIND_CONVERSATION {
        return Err(Error::Envelope("not a conversation envelope"));
    }
    check_x25519_public(sender_device_key)?;
    let (header, message) = envelope.split_at(HEADER_LEN_3);
    ephemeral_of(message)?;
    let resolver = EnvelopeResolver::new(receive.secret, receive.public, None)
        .with_static_pair(receive.pair.clone())
        .remembering(sender_device_key);
    let builder = snow::Builder::with_resolver(NOISE_KPSK1.clone(), Box::new(resolver));
    let prologue = prologue(header, Some(own_identity));
    let handshake = builder
        .local_private_key(receive.secret)
        .and_then(|b| b.remote_public_key(sender_device_key))
        .and_then(|b| b.psk(1, receive.seed))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(|e| noise("build", e))?;
    let (plaintext, _) = read(handshake, message)?;
    match codec::decode("envelope payload", unpad(&plaintext)?)? {
        payload @ Payload::V1 { .. } => Ok(payload),
        Payload::V2 { .. } => Err(Error::Envelope("format 3 carries payload layout 1")),
    }
}

/// The key id of a hybrid prekey in a format 4 first contact:
/// `BLAKE2s-256("kolokol-prekey-id:v4" || mailbox address || X25519 public)[0..8]`. Keyed with
/// the owner's mailbox address, which only its contacts hold, so a replica that has the owner's
/// presence record (and so its prekey) still cannot tell whom a first contact is for.
pub fn prekey_id(owner_address: &MailboxAddress, prekey_public: &[u8; 32]) -> KeyId {
    let mut hasher = Blake2s256::new();
    hasher.update(PREKEY_ID_CONTEXT);
    hasher.update(owner_address);
    hasher.update(prekey_public);
    let digest = hasher.finalize();
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    id
}

/// The format 4 header tag: `BLAKE2s-256("kolokol-envelope-tag:v4" || key || version || kind
/// || key id || e)[0..8]`, where `key` is the receive key's seed (kind 2) or the recipient's
/// mailbox address (kind 1). The recipient recomputes it right after the key-id lookup, with
/// one hash and before any X25519 or ML-KEM operation, so junk costs it next to nothing: a
/// forger without the seed hits the tag with probability 2^-64. It authenticates nothing by
/// itself (the AEAD does); it is only a cheap filter, and it is in the prologue like the rest
/// of the header.
pub fn tag(key: &[u8; 32], header: &[u8], ephemeral: &[u8; 32]) -> [u8; TAG_LEN] {
    let mut hasher = Blake2s256::new();
    hasher.update(TAG_CONTEXT);
    hasher.update(key);
    hasher.update(header.get(..HEADER_LEN_3).unwrap_or(header));
    hasher.update(ephemeral);
    let digest = hasher.finalize();
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&digest[..TAG_LEN]);
    tag
}

/// Checks a format 4 envelope's tag against `key` (see [`tag`]) in constant time: the cheap
/// test the recipient runs before anything costly. The node may call it too, per sending peer,
/// to count junk without opening anything.
pub fn check_tag(envelope: &[u8], key: &[u8; 32]) -> Result<(), Error> {
    let header = peek(envelope)?;
    let (Some(expected), Some(message)) = (header.tag, envelope.get(HEADER_LEN_4..)) else {
        return Err(Error::Envelope("not a format 4 envelope"));
    };
    let ephemeral_at = if header.kind == KIND_FIRST_CONTACT { kem::CIPHERTEXT_LEN } else { 0 };
    let ephemeral: [u8; KEY_LEN] = message
        .get(ephemeral_at..ephemeral_at + KEY_LEN)
        .and_then(|e| e.try_into().ok())
        .ok_or(Error::Envelope("too short"))?;
    if !constant_time::ct_eq(&tag(key, envelope, &ephemeral), &expected) {
        return Err(Error::Envelope("header tag does not match: junk, or not for this key"));
    }
    Ok(())
}

/// Seals a format 4 first contact (`Noise_Xpsk0` plus ML-KEM-768) from `sender` to the peer's
/// hybrid `prekey` for the identity `recipient_identity`, whose mailbox address is
/// `recipient_address`. The payload must be [`Payload::V2`] and carry the sender's certificate.
/// `ephemeral` and `kem_randomness` must be 32 fresh random bytes each.
///
/// Layout: `header (18) || ML-KEM ciphertext (1088) || Noise message`. The Noise PSK (slot 0,
/// mixed in before anything else) is [`kem::psk`] of the encapsulated secret; the prologue binds
/// the header, the recipient's identity and the ciphertext. So the payload and the sender's
/// static key are readable only with both the X25519 secret and the ML-KEM secret of the prekey.
pub fn seal_first_contact_4(
    sender: &DeviceKey,
    prekey: &HybridPrekey,
    recipient_address: &MailboxAddress,
    recipient_identity: &[u8; 32],
    payload: &Payload,
    ephemeral: [u8; 32],
    kem_randomness: [u8; 32],
) -> Result<Vec<u8>, Error> {
    if !matches!(payload, Payload::V2 { certificate: Some(_), .. }) {
        return Err(Error::Envelope(
            "a format 4 first contact carries payload 2 and a certificate",
        ));
    }
    check_x25519_public(&prekey.public)?;
    let body = Zeroizing::new(codec::encode(payload)?);
    let bucket = sealing_bucket(
        "envelope payload",
        overhead_4(KIND_FIRST_CONTACT),
        body.len(),
        payload.content(),
    )?;
    let (ciphertext, psk) = kem::encapsulate(&prekey.kem_public, kem_randomness)?;
    // Loaded once: its public half goes in the tag, and snow's handshake takes the same pair.
    let ephemeral_pair = Arc::new(KeyPair::new(&ephemeral));
    let ephemeral_public = ephemeral_pair.public;
    let mut header = [0u8; HEADER_LEN_4];
    header[0] = ENVELOPE_VERSION_4;
    header[1] = KIND_FIRST_CONTACT;
    header[2..HEADER_LEN_3].copy_from_slice(&prekey_id(recipient_address, &prekey.public));
    let tag = tag(recipient_address, &header, &ephemeral_public);
    header[HEADER_LEN_3..].copy_from_slice(&tag);
    let mut prologue = prologue(&header, Some(recipient_identity));
    prologue.extend_from_slice(&ciphertext);
    let resolver = EnvelopeResolver::device(sender, None)
        .with_ephemeral_pair(ephemeral_pair)
        .remembering(&prekey.public);
    let handshake = snow::Builder::with_resolver(NOISE_XPSK0.clone(), Box::new(resolver))
        .local_private_key(sender.secret())
        .and_then(|b| b.remote_public_key(&prekey.public))
        .and_then(|b| b.psk(0, &psk))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_initiator())
        .map_err(|e| noise("build", e))?;
    let mut front = Vec::with_capacity(HEADER_LEN_4 + kem::CIPHERTEXT_LEN);
    front.extend_from_slice(&header);
    front.extend_from_slice(&ciphertext);
    write(handshake, &front, &body, bucket, NOISE_X_OVERHEAD)
}

/// Opens a format 4 first contact with one of our hybrid prekeys (`prekey`, its `secret`),
/// meant for our identity key `own_identity` and sent to our mailbox address `own_address`.
/// Checks the key id and the tag before any public-key operation, then the certificate as
/// [`open_first_contact`] does, and a prekey the payload carries against that certificate's
/// identity. Replay checks are the conversation's job.
pub fn open_first_contact_4(
    prekey: &HybridPrekey,
    secret: &HybridPrekeySecret,
    own_address: &MailboxAddress,
    own_identity: &[u8; 32],
    envelope: &[u8],
    now: u64,
) -> Result<FirstContact, Error> {
    let header = peek(envelope)?;
    if header.version != ENVELOPE_VERSION_4 || header.kind != KIND_FIRST_CONTACT {
        return Err(Error::Envelope("not a format 4 first contact"));
    }
    let expected = prekey_id(own_address, &prekey.public);
    if !header.key_id.is_some_and(|id| constant_time::ct_eq(&id, &expected)) {
        return Err(Error::Envelope("not for this prekey"));
    }
    check_tag(envelope, own_address)?;
    let (front, message) = envelope.split_at(HEADER_LEN_4 + kem::CIPHERTEXT_LEN);
    let (header_bytes, ciphertext) = front.split_at(HEADER_LEN_4);
    let ciphertext: kem::Ciphertext =
        ciphertext.try_into().map_err(|_| Error::Envelope("too short"))?;
    let ephemeral = ephemeral_of(message)?;
    let psk = kem::decapsulate(&secret.kem_seed, &ciphertext);
    let mut prologue = prologue(header_bytes, Some(own_identity));
    prologue.extend_from_slice(&ciphertext);
    let resolver = EnvelopeResolver::new(&secret.x25519, &prekey.public, None);
    let handshake = snow::Builder::with_resolver(NOISE_XPSK0.clone(), Box::new(resolver))
        .local_private_key(&*secret.x25519)
        .and_then(|b| b.psk(0, &psk))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(|e| noise("build", e))?;
    let (plaintext, remote_static) = read(handshake, message)?;
    let Payload::V2 { certificate, advertisement, prekey: sender_prekey, mailbox, content } =
        codec::decode("envelope payload", unpad(&plaintext)?)?
    else {
        return Err(Error::Envelope("format 4 carries payload layout 2"));
    };
    let Some(certificate) = certificate else {
        return Err(Error::Envelope("first contact without the sender's certificate"));
    };
    if !constant_time::ct_eq(&certificate.device_key, &remote_static) {
        return Err(Error::Envelope("sender certificate does not match the Noise static key"));
    }
    let sender = certificate.verify(now)?;
    if let Some(a) = &advertisement {
        check_x25519_public(&a.public)?;
    }
    if let Some(p) = &sender_prekey {
        p.verify(&certificate.identity_key, now)?;
    }
    Ok(FirstContact {
        sender,
        certificate,
        advertisement,
        content,
        ephemeral,
        version: ENVELOPE_VERSION_4,
        prekey: sender_prekey,
        mailbox,
    })
}

/// Seals a format 4 conversation envelope: format 3's `Noise_Kpsk1` with the 18-byte header
/// whose tag is keyed by the receive key's `seed`, and a [`Payload::V2`].
pub(crate) fn seal_conversation_4(
    sender: &DeviceKey,
    receive_key: &[u8; 32],
    seed: &[u8; 32],
    recipient_identity: &[u8; 32],
    payload: &Payload,
    ephemeral: [u8; 32],
) -> Result<Vec<u8>, Error> {
    if !matches!(payload, Payload::V2 { .. }) {
        return Err(Error::Envelope("format 4 carries payload layout 2"));
    }
    check_x25519_public(receive_key)?;
    let body = Zeroizing::new(codec::encode(payload)?);
    let bucket = sealing_bucket(
        "envelope payload",
        overhead_4(KIND_CONVERSATION),
        body.len(),
        payload.content(),
    )?;
    let mut header = [0u8; HEADER_LEN_4];
    header[0] = ENVELOPE_VERSION_4;
    header[1] = KIND_CONVERSATION;
    header[2..HEADER_LEN_3].copy_from_slice(&key_id(receive_key));
    // Loaded once: its public half goes in the tag, and snow's handshake takes the same pair.
    let ephemeral_pair = Arc::new(KeyPair::new(&ephemeral));
    let tag = tag(seed, &header, &ephemeral_pair.public);
    header[HEADER_LEN_3..].copy_from_slice(&tag);
    let prologue = prologue(&header, Some(recipient_identity));
    let resolver = EnvelopeResolver::device(sender, None)
        .with_ephemeral_pair(ephemeral_pair)
        .remembering(receive_key);
    let handshake = snow::Builder::with_resolver(NOISE_KPSK1.clone(), Box::new(resolver))
        .local_private_key(sender.secret())
        .and_then(|b| b.remote_public_key(receive_key))
        .and_then(|b| b.psk(1, seed))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_initiator())
        .map_err(|e| noise("build", e))?;
    write(handshake, &header, &body, bucket, NOISE_KPSK1_OVERHEAD)
}

/// Opens a conversation envelope of format 3 or 4 with one of our receive keys (see
/// [`open_conversation`]); for format 4 the tag is checked first, with no X25519 operation.
pub(crate) fn open_conversation_any(
    receive: &ReceiveSecret<'_>,
    sender_device_key: &[u8; 32],
    own_identity: &[u8; 32],
    envelope: &[u8],
) -> Result<Payload, Error> {
    let header = peek(envelope)?;
    if header.version == ENVELOPE_VERSION_3 {
        return open_conversation(receive, sender_device_key, own_identity, envelope);
    }
    if header.version != ENVELOPE_VERSION_4 || header.kind != KIND_CONVERSATION {
        return Err(Error::Envelope("not a conversation envelope"));
    }
    check_tag(envelope, receive.seed)?;
    check_x25519_public(sender_device_key)?;
    let (header, message) = envelope.split_at(HEADER_LEN_4);
    ephemeral_of(message)?;
    let prologue = prologue(header, Some(own_identity));
    let resolver = EnvelopeResolver::new(receive.secret, receive.public, None)
        .with_static_pair(receive.pair.clone())
        .remembering(sender_device_key);
    let handshake = snow::Builder::with_resolver(NOISE_KPSK1.clone(), Box::new(resolver))
        .local_private_key(receive.secret)
        .and_then(|b| b.remote_public_key(sender_device_key))
        .and_then(|b| b.psk(1, receive.seed))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_responder())
        .map_err(|e| noise("build", e))?;
    let (plaintext, _) = read(handshake, message)?;
    match codec::decode("envelope payload", unpad(&plaintext)?)? {
        payload @ Payload::V2 { .. } => Ok(payload),
        Payload::V1 { .. } => Err(Error::Envelope("format 4 carries payload layout 2")),
    }
}

/// The initiator ephemeral key of a format 3 envelope, refused if it is a small-order point:
/// the name the replay caches know the envelope by (see `Conversation::unsee`).
///
/// For format 4 it is the ephemeral after the 18-byte header (and, in a first contact, after the
/// ML-KEM ciphertext).
pub fn ephemeral_key(envelope: &[u8]) -> Result<[u8; 32], Error> {
    let at = match peek(envelope) {
        Ok(Header { version: ENVELOPE_VERSION_4, kind: KIND_FIRST_CONTACT, .. }) => {
            HEADER_LEN_4 + kem::CIPHERTEXT_LEN
        }
        Ok(Header { version: ENVELOPE_VERSION_4, .. }) => HEADER_LEN_4,
        _ => HEADER_LEN_3,
    };
    let message = envelope.get(at..).ok_or(Error::Envelope("too short"))?;
    ephemeral_of(message)
}

fn header_3(kind: u8, recipient_key: &[u8; 32]) -> [u8; HEADER_LEN_3] {
    let mut header = [0u8; HEADER_LEN_3];
    header[0] = ENVELOPE_VERSION_3;
    header[1] = kind;
    header[2..].copy_from_slice(&key_id(recipient_key));
    header
}

fn ephemeral_of(message: &[u8]) -> Result<[u8; 32], Error> {
    let mut ephemeral = [0u8; KEY_LEN];
    ephemeral.copy_from_slice(message.get(..KEY_LEN).ok_or(Error::Envelope("too short"))?);
    check_x25519_public(&ephemeral)?;
    Ok(ephemeral)
}

/// Pads `body` into a plaintext of the bucket's size and writes the one handshake message after
/// `header`.
fn write(
    mut handshake: snow::HandshakeState,
    header: &[u8],
    body: &[u8],
    bucket: usize,
    noise_overhead: usize,
) -> Result<Vec<u8>, Error> {
    let body_len = u32::try_from(body.len()).map_err(|_| Error::TooLarge {
        what: "envelope payload",
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    let plaintext_len = bucket - header.len() - noise_overhead;
    let mut plaintext = Zeroizing::new(vec![0u8; plaintext_len]);
    plaintext[..LENGTH_PREFIX].copy_from_slice(&body_len.to_be_bytes());
    plaintext[LENGTH_PREFIX..LENGTH_PREFIX + body.len()].copy_from_slice(body);
    let mut out = vec![0u8; bucket];
    out[..header.len()].copy_from_slice(header);
    let written = handshake
        .write_message(&plaintext, &mut out[header.len()..])
        .map_err(|e| noise("write", e))?;
    if header.len() + written != bucket {
        return Err(Error::Envelope("sealed length does not match its bucket"));
    }
    Ok(out)
}

/// Reads the one handshake message and returns the padded plaintext and the sender's static
/// key (the one transmitted, for `X`, or the one given in advance, for `K`).
fn read(
    mut handshake: snow::HandshakeState,
    message: &[u8],
) -> Result<(Zeroizing<Vec<u8>>, [u8; 32]), Error> {
    let mut plaintext = Zeroizing::new(vec![0u8; message.len()]);
    let read = handshake
        .read_message(message, &mut plaintext)
        .map_err(|_| Error::Envelope("decryption failed: not for this recipient, or tampered"))?;
    plaintext.truncate(read);
    let remote_static: [u8; 32] = handshake
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(Error::Envelope("handshake did not yield the sender's static key"))?;
    Ok((plaintext, remote_static))
}

/// The body inside a padded plaintext; the padding must be zero, so the AEAD covers one
/// encoding of each message.
fn unpad(plaintext: &[u8]) -> Result<&[u8], Error> {
    if plaintext.len() < LENGTH_PREFIX {
        return Err(Error::Envelope("payload shorter than its length prefix"));
    }
    let (prefix, rest) = plaintext.split_at(LENGTH_PREFIX);
    let body_len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if body_len > rest.len() {
        return Err(Error::Envelope("length prefix exceeds the payload"));
    }
    let (body, padding) = rest.split_at(body_len);
    if padding.iter().any(|b| *b != 0) {
        return Err(Error::Envelope("padding is not zero"));
    }
    Ok(body)
}

/// The Noise prologue: the context, the cleartext header, and for format 3 the identity key of
/// the recipient the sender means. The recipient puts its own identity key there, so an
/// envelope meant for another identity fails to open even when it was sealed to our key.
fn prologue(header: &[u8], recipient_identity: Option<&[u8; 32]>) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROLOGUE_CONTEXT.len() + header.len() + KEY_LEN);
    p.extend_from_slice(PROLOGUE_CONTEXT);
    p.extend_from_slice(header);
    if let Some(identity) = recipient_identity {
        p.extend_from_slice(identity);
    }
    p
}

fn noise(step: &'static str, e: snow::Error) -> Error {
    Error::Noise { step, detail: e.to_string() }
}

/// The X25519 public key of a secret, where the envelopes' callers look for it.
pub(crate) use crate::x25519::public_key;

/// True if `a == b`, in time independent of where they differ: for keys, tags and mailbox ids.
pub fn ct_eq_32(a: &[u8; 32], b: &[u8; 32]) -> bool {
    constant_time::ct_eq(a, b)
}

/// True if two key ids are equal, in time independent of where they differ.
pub fn ct_eq_key_id(a: &KeyId, b: &KeyId) -> bool {
    constant_time::ct_eq(a, b)
}

/// Constant-time comparison of byte strings of equal length, without a dependency for one loop.
mod constant_time {
    /// True if `a == b`, in time independent of where they differ.
    pub fn ct_eq<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
        let mut diff = 0u8;
        for (x, y) in a.iter().zip(b) {
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }
}

/// A key-compromise impersonation, for the attack tests only: the holder of a receive key's
/// secret (`receive_secret`, stolen from the recipient) and seed writes a format 4 conversation
/// envelope (format 3 or 4, after the payload's layout) that opens as if `claimed_sender` had
/// written it. `Noise_Kpsk1`'s `ss` is
/// DH(sender static, receive key) = DH(receive secret, sender static), so the thief computes it
/// from the other side; everything else is the honest construction.
#[cfg(test)]
pub(crate) fn forge_conversation_kci(
    receive_secret: &[u8; 32],
    claimed_sender: &[u8; 32],
    seed: &[u8; 32],
    recipient_identity: &[u8; 32],
    payload: &Payload,
    ephemeral: [u8; 32],
) -> Result<Vec<u8>, Error> {
    let receive_public = public_key(receive_secret);
    let format_4 = matches!(payload, Payload::V2 { .. });
    let mut header = vec![0u8; if format_4 { HEADER_LEN_4 } else { HEADER_LEN_3 }];
    header[0] = if format_4 { ENVELOPE_VERSION_4 } else { ENVELOPE_VERSION_3 };
    header[1] = KIND_CONVERSATION;
    header[2..HEADER_LEN_3].copy_from_slice(&key_id(&receive_public));
    if format_4 {
        let tag = tag(seed, &header, &public_key(&ephemeral));
        header[HEADER_LEN_3..].copy_from_slice(&tag);
    }
    let body = codec::encode(payload)?;
    let bucket = bucket_with_overhead(header.len() + NOISE_KPSK1_OVERHEAD, body.len())
        .ok_or(Error::Envelope("too large"))?;
    let prologue = prologue(&header, Some(recipient_identity));
    let ss = x25519_dalek::x25519(*receive_secret, *claimed_sender);
    let resolver = KciResolver { claimed: *claimed_sender, ss, ephemeral: Some(ephemeral) };
    let handshake = snow::Builder::with_resolver(NOISE_KPSK1.clone(), Box::new(resolver))
        .local_private_key(&[0xaa; 32])
        .and_then(|b| b.remote_public_key(&receive_public))
        .and_then(|b| b.psk(1, seed))
        .and_then(|b| b.prologue(&prologue))
        .and_then(|b| b.build_initiator())
        .map_err(|e| noise("build", e))?;
    write(handshake, &header, &body, bucket, NOISE_KPSK1_OVERHEAD)
}

/// The resolver of [`forge_conversation_kci`]: the "static" key it hands snow claims the
/// victim's public key and answers every DH with the precomputed `ss`; the ephemeral is honest.
#[cfg(test)]
struct KciResolver {
    claimed: [u8; 32],
    ss: [u8; 32],
    ephemeral: Option<[u8; 32]>,
}

#[cfg(test)]
struct KciDh {
    claimed: [u8; 32],
    ss: [u8; 32],
    honest: X25519,
    is_static: bool,
}

#[cfg(test)]
impl CryptoResolver for KciResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(GivenBytes { bytes: self.ephemeral }))
    }

    fn resolve_dh(&self, _: &DHChoice) -> Option<Box<dyn Dh>> {
        let honest = X25519 {
            secret: [0; 32],
            public: [0; 32],
            loaded: std::sync::OnceLock::new(),
            known_secret: [1; 32],
            known_public: [0; 32],
            known_pair: None,
            ephemeral_pair: None,
            remember: None,
        };
        Some(Box::new(KciDh { claimed: self.claimed, ss: self.ss, honest, is_static: false }))
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

#[cfg(test)]
impl Dh for KciDh {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        // Only the static key is ever set from outside (`local_private_key`).
        self.is_static = privkey == [0xaa; 32];
        self.honest.set(privkey);
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        self.is_static = false;
        self.honest.generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        if self.is_static { &self.claimed } else { self.honest.pubkey() }
    }
    fn privkey(&self) -> &[u8] {
        self.honest.privkey()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        if self.is_static {
            out.get_mut(..32).ok_or(snow::Error::Dh)?.copy_from_slice(&self.ss);
            Ok(())
        } else {
            self.honest.dh(pubkey, out)
        }
    }
}

#[cfg(test)]
mod tests;
