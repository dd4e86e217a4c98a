//! Store-and-forward mailboxes (`/kolokol/mailbox/1`): the wire types, the rotating mailbox id,
//! and the ownership proof that lets only the recipient fetch or delete.
//!
//! A recipient's mailbox id for a period is BLAKE2s-256 over [`MAILBOX_ID_CONTEXT`], the
//! recipient's Ed25519 identity key and the period number (big-endian u64), where the period is
//! `unix_secs / MAILBOX_PERIOD_SECS`. Depositors know the identity key from the peer id, so both
//! sides compute the same id without talking; the id changes every period, so the replicas that
//! hold a mailbox (the DHT servers closest to it) change too and no server holds one user's
//! mailbox for long. Replicas hold only sealed envelopes and learn which ids are asked for, not
//! whose they are, until the owner proves ownership by revealing its key in a signed [`Proof`].
//! `docs/PROTOCOL.md` is the normative description.

use bincode::{Decode, Encode};
use blake2::{Blake2s256, Digest};

use crate::Error;
use crate::codec;
use crate::envelope::BUCKETS;
use crate::identity::{Identity, verify_strict};

/// Domain-separation prefix of the mailbox id hash.
pub const MAILBOX_ID_CONTEXT: &[u8] = b"kolokol-mailbox:v1";

/// Domain-separation prefix of the ownership proof signature.
pub const PROOF_CONTEXT: &[u8] = b"kolokol-mailbox-proof:v1";

/// Domain-separation prefix of a replica's signature over a handover (`Request::Handover`).
pub const HANDOVER_CONTEXT: &[u8] = b"kolokol-mailbox-handover:v1";

/// Most items one handover carries; a replica hands a mailbox over in batches of this size.
pub const MAX_HANDOVER_ITEMS: usize = 64;

/// Domain-separation prefix of the item id derived from a message id.
pub const ITEM_ID_CONTEXT: &[u8] = b"kolokol-mailbox-item:v1";

/// Length of a mailbox period, in seconds: one day.
pub const MAILBOX_PERIOD_SECS: u64 = 24 * 60 * 60;

/// How far a proof's timestamp may be from the replica's clock, in seconds, either way. It
/// bounds how long a captured proof can be replayed, and how much clock skew is tolerated.
pub const PROOF_WINDOW_SECS: u64 = 5 * 60;

/// Most item ids one delete request may name; the owner deletes in batches of this size.
pub const MAX_DELETE_IDS: usize = 1024;

/// Most items one fetch answer carries; the owner asks again while `more` is set.
pub const MAX_FETCH_ITEMS: usize = 256;

/// Most envelope bytes one fetch answer carries: fifteen of the largest envelopes. With the
/// framing of [`MAX_FETCH_ITEMS`] items (24 bytes each) the answer stays under
/// [`codec::MAX_BATCH_DECODE_LEN`] whatever mix of sizes it holds; a replica that filled
/// sixteen could build an answer its owner cannot decode, and the mailbox would be stuck.
pub const MAX_FETCH_BYTES: usize = 15 * BUCKETS[3];

/// Longest reason text in an answer, in bytes.
pub const MAX_REASON_LEN: usize = 256;

/// A mailbox id: BLAKE2s-256 of the context, the identity key and the period.
pub type MailboxId = [u8; 32];

/// An item id, unique within a mailbox.
pub type ItemId = [u8; 16];

/// What an ownership proof authorises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Hand over the mailbox's items.
    Fetch,
    /// Delete the named items.
    Delete,
}

impl Operation {
    fn byte(self) -> u8 {
        match self {
            Operation::Fetch => 1,
            Operation::Delete => 2,
        }
    }
}

/// The owner's proof: its identity key, a timestamp, and a signature over both, the mailbox id,
/// the operation and (for deletes) the item ids.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Proof {
    /// The owner's Ed25519 identity key; it must hash to the mailbox id.
    pub identity_key: [u8; 32],
    /// When the proof was made, Unix seconds; it must be within [`PROOF_WINDOW_SECS`].
    pub timestamp: u64,
    /// Ed25519 signature over [`proof_bytes`].
    pub signature: [u8; 64],
}

/// A request to a mailbox replica.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Request {
    /// Keep this envelope for the mailbox's owner.
    Deposit {
        /// The recipient's mailbox id for the current period.
        mailbox_id: MailboxId,
        /// The item's id; depositing the same id again is acknowledged and changes nothing.
        item_id: ItemId,
        /// A sealed envelope, exactly one of the envelope buckets long.
        envelope: Vec<u8>,
        /// Unix seconds after which the replica may drop it.
        expires_at: u64,
    },
    /// Hand over the mailbox's items.
    Fetch {
        /// The mailbox.
        mailbox_id: MailboxId,
        /// The owner's proof for [`Operation::Fetch`].
        proof: Proof,
    },
    /// Delete items the owner has stored.
    Delete {
        /// The mailbox.
        mailbox_id: MailboxId,
        /// The items, at most [`MAX_DELETE_IDS`].
        item_ids: Vec<ItemId>,
        /// The owner's proof for [`Operation::Delete`] over these ids.
        proof: Proof,
    },
    /// Take over items of a mailbox from a replica that is no longer among the closest to its
    /// id, or that hands them to a closer one that joined. Variant 3, appended: the encodings
    /// of variants 0 to 2 are unchanged, and a replica that does not know it refuses the frame,
    /// so the sender keeps its items.
    Handover {
        /// The mailbox.
        mailbox_id: MailboxId,
        /// 1 to [`MAX_HANDOVER_ITEMS`] items, with at most [`MAX_FETCH_BYTES`] of envelopes.
        items: Vec<HandoverItem>,
        /// The handing replica's signature over the mailbox id and every item.
        proof: HandoverProof,
    },
}

/// One item handed from replica to replica: what the depositor sent, and when it expires.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct HandoverItem {
    /// The item's id, unchanged.
    pub item_id: ItemId,
    /// Unix seconds after which the new replica may drop it (as the old one held it).
    pub expires_at: u64,
    /// The sealed envelope, exactly one of the envelope buckets long.
    pub envelope: Vec<u8>,
}

/// A replica's signature over a handover: who hands the items on, when, and exactly which.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct HandoverProof {
    /// The handing replica's Ed25519 identity key; its peer id must be the connection's.
    pub replica_key: [u8; 32],
    /// When it was signed, Unix seconds; it must be within [`PROOF_WINDOW_SECS`].
    pub timestamp: u64,
    /// Ed25519 signature over [`handover_bytes`].
    pub signature: [u8; 64],
}

/// The bytes a handover proof signs: the context, the mailbox id, the timestamp (big-endian
/// u64), and the BLAKE2s-256 of every item's id, expiry (big-endian u64) and BLAKE2s-256 of
/// its envelope, in order; so a captured proof covers no other item, mailbox or order.
pub fn handover_bytes(mailbox_id: &MailboxId, timestamp: u64, items: &[HandoverItem]) -> Vec<u8> {
    let mut digest = Blake2s256::new();
    for item in items {
        digest.update(item.item_id);
        digest.update(item.expires_at.to_be_bytes());
        digest.update(Blake2s256::digest(&item.envelope));
    }
    let mut m = Vec::with_capacity(HANDOVER_CONTEXT.len() + 32 + 8 + 32);
    m.extend_from_slice(HANDOVER_CONTEXT);
    m.extend_from_slice(mailbox_id);
    m.extend_from_slice(&timestamp.to_be_bytes());
    m.extend_from_slice(&digest.finalize());
    m
}

impl HandoverProof {
    /// Signs a handover of `items` of `mailbox_id` by `replica` at `timestamp`.
    pub fn sign(
        replica: &Identity,
        mailbox_id: &MailboxId,
        timestamp: u64,
        items: &[HandoverItem],
    ) -> Result<Self, Error> {
        let signature = replica.sign(&handover_bytes(mailbox_id, timestamp, items))?;
        Ok(Self { replica_key: *replica.identity_key(), timestamp, signature })
    }

    /// Checks the proof at `now`: the timestamp is within the window and the signature
    /// verifies over exactly these items. Returns the replica's identity key; the caller checks
    /// that it is the peer at the other end of the connection.
    pub fn verify(
        &self,
        mailbox_id: &MailboxId,
        items: &[HandoverItem],
        now: u64,
    ) -> Result<[u8; 32], Error> {
        if self.timestamp.abs_diff(now) > PROOF_WINDOW_SECS {
            return Err(Error::Mailbox("handover is stale or from the future"));
        }
        let signed = handover_bytes(mailbox_id, self.timestamp, items);
        if !verify_strict(&self.replica_key, &signed, &self.signature)? {
            return Err(Error::Mailbox("handover signature does not verify"));
        }
        Ok(self.replica_key)
    }
}

/// One stored item as handed to the owner.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Item {
    /// The item's id, used to delete it.
    pub item_id: ItemId,
    /// The sealed envelope.
    pub envelope: Vec<u8>,
}

/// A replica's answer.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Response {
    /// The deposit is stored (or was already).
    Stored,
    /// The deposit was refused because a quota is reached; nothing else was touched.
    QuotaExceeded {
        /// Which quota, for the depositor's user.
        reason: String,
    },
    /// Items for the owner, oldest first.
    Items {
        /// At most [`MAX_FETCH_ITEMS`] items and [`MAX_FETCH_BYTES`] of envelopes.
        items: Vec<Item>,
        /// More items remain; fetch again after deleting these.
        more: bool,
    },
    /// The items named in a delete are gone.
    Deleted {
        /// How many were there to delete.
        count: u32,
    },
    /// The request was refused: a bad proof, a malformed deposit, or not a replica.
    Refused {
        /// Why.
        reason: String,
    },
}

/// The period number of a Unix time.
pub fn period_of(unix_secs: u64) -> u64 {
    unix_secs / MAILBOX_PERIOD_SECS
}

/// The mailbox id of the identity key for a period.
pub fn mailbox_id(identity_key: &[u8; 32], period: u64) -> MailboxId {
    let mut hasher = Blake2s256::new();
    hasher.update(MAILBOX_ID_CONTEXT);
    hasher.update(identity_key);
    hasher.update(period.to_be_bytes());
    hasher.finalize().into()
}

/// The item id of a message: a hash of its id, so replicas never see message ids themselves,
/// while every deposit of one message (retries, other replicas) has the same item id.
pub fn item_id(message_id: &[u8; 16]) -> ItemId {
    let mut hasher = Blake2s256::new();
    hasher.update(ITEM_ID_CONTEXT);
    hasher.update(message_id);
    let digest = hasher.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The item id of chunk `index` of a message sent in chunks: like [`item_id`], with the index
/// (big-endian u32) after the message id, so each chunk is its own item and every deposit of
/// one chunk has the same item id.
pub fn chunk_item_id(message_id: &[u8; 16], index: u32) -> ItemId {
    let mut hasher = Blake2s256::new();
    hasher.update(ITEM_ID_CONTEXT);
    hasher.update(message_id);
    hasher.update(index.to_be_bytes());
    let digest = hasher.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The bytes an ownership proof signs: the context, the mailbox id, the operation byte, the
/// timestamp (big-endian u64), and for deletes the BLAKE2s-256 of the concatenated item ids
/// (32 zero bytes for a fetch), so a captured delete proof cannot delete other items.
pub fn proof_bytes(
    mailbox_id: &MailboxId,
    operation: Operation,
    timestamp: u64,
    item_ids: &[ItemId],
) -> Vec<u8> {
    let digest: [u8; 32] = match operation {
        Operation::Fetch => [0; 32],
        Operation::Delete => {
            let mut hasher = Blake2s256::new();
            for id in item_ids {
                hasher.update(id);
            }
            hasher.finalize().into()
        }
    };
    let mut m = Vec::with_capacity(PROOF_CONTEXT.len() + 32 + 1 + 8 + 32);
    m.extend_from_slice(PROOF_CONTEXT);
    m.extend_from_slice(mailbox_id);
    m.push(operation.byte());
    m.extend_from_slice(&timestamp.to_be_bytes());
    m.extend_from_slice(&digest);
    m
}

impl Proof {
    /// Signs a proof for `operation` on `mailbox_id` at `timestamp` (Unix seconds).
    pub fn sign(
        identity: &Identity,
        mailbox_id: &MailboxId,
        operation: Operation,
        timestamp: u64,
        item_ids: &[ItemId],
    ) -> Result<Self, Error> {
        let signature = identity.sign(&proof_bytes(mailbox_id, operation, timestamp, item_ids))?;
        Ok(Self { identity_key: *identity.identity_key(), timestamp, signature })
    }

    /// Checks the proof at `now` (Unix seconds): the timestamp is within the window, the key
    /// hashes to `mailbox_id` for the current or the previous period, and the signature
    /// verifies.
    pub fn verify(
        &self,
        mailbox_id: &MailboxId,
        operation: Operation,
        item_ids: &[ItemId],
        now: u64,
    ) -> Result<(), Error> {
        if self.timestamp.abs_diff(now) > PROOF_WINDOW_SECS {
            return Err(Error::Mailbox("proof is stale or from the future"));
        }
        let period = period_of(now);
        let owns = [period, period.saturating_sub(1)]
            .iter()
            .any(|p| self::mailbox_id(&self.identity_key, *p) == *mailbox_id);
        if !owns {
            return Err(Error::Mailbox("proof key does not own this mailbox"));
        }
        let signed = proof_bytes(mailbox_id, operation, self.timestamp, item_ids);
        if !verify_strict(&self.identity_key, &signed, &self.signature)? {
            return Err(Error::Mailbox("proof signature does not verify"));
        }
        Ok(())
    }
}

impl Request {
    /// The request's bytes on the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        codec::encode(self)
    }

    /// Decodes a request and checks its limits: a deposit's envelope is one of the buckets,
    /// a delete names at most [`MAX_DELETE_IDS`] items.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let request: Request = codec::decode_batch("mailbox request", bytes)?;
        match &request {
            Request::Deposit { envelope, .. } if !BUCKETS.contains(&envelope.len()) => {
                Err(Error::Mailbox("deposit is not one of the envelope sizes"))
            }
            Request::Delete { item_ids, .. } if item_ids.len() > MAX_DELETE_IDS => {
                Err(Error::Mailbox("delete names too many items"))
            }
            Request::Handover { items, .. }
                if items.is_empty()
                    || items.len() > MAX_HANDOVER_ITEMS
                    || items.iter().any(|i| !BUCKETS.contains(&i.envelope.len()))
                    || items.iter().map(|i| i.envelope.len()).sum::<usize>() > MAX_FETCH_BYTES =>
            {
                Err(Error::Mailbox("handover carries no items, too many, or an odd-sized one"))
            }
            _ => Ok(request),
        }
    }
}

impl Response {
    /// The answer's bytes on the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        codec::encode(self)
    }

    /// Decodes an answer and checks its limits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let response: Response = codec::decode_batch("mailbox response", bytes)?;
        match &response {
            Response::Items { items, .. }
                if items.len() > MAX_FETCH_ITEMS
                    || items.iter().any(|i| !BUCKETS.contains(&i.envelope.len())) =>
            {
                Err(Error::Mailbox("answer carries too many items or an odd-sized one"))
            }
            Response::QuotaExceeded { reason } | Response::Refused { reason }
                if reason.len() > MAX_REASON_LEN =>
            {
                Err(Error::Mailbox("answer carries an overlong reason"))
            }
            _ => Ok(response),
        }
    }
}

/// Domain-separation prefix of the version 2 ownership proof signature.
pub const PROOF_CONTEXT_V2: &[u8] = b"kolokol-mailbox-proof:v2";

/// Domain-separation prefix of version 2 item ids.
pub const ITEM_ID_CONTEXT_V2: &[u8] = b"kolokol-mailbox-item:v2";

/// The item id of a message (or of chunk `index` of it) in a version 2 mailbox: a hash of the
/// mailbox id and the message id, so the same message deposited under two periods' ids has two
/// unrelated item ids and does not link them.
pub fn item_id_v2(mailbox_id: &MailboxId, message_id: &[u8; 16], chunk: Option<u32>) -> ItemId {
    let mut hasher = Blake2s256::new();
    hasher.update(ITEM_ID_CONTEXT_V2);
    hasher.update(mailbox_id);
    hasher.update(message_id);
    if let Some(index) = chunk {
        hasher.update(index.to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// The owner's proof in mailbox protocol version 2: the blinded key of the period (see
/// [`crate::mailbox_key`]), a timestamp and a signature by the blinded key. It names no
/// identity: the replica checks only that the blinded key hashes to the mailbox id.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct BlindedProof {
    /// The blinded key `A_t`; `BLAKE2s-256("kolokol-mailbox:v2" || A_t)` must be the mailbox id.
    pub blinded_key: [u8; 32],
    /// When the proof was made, Unix seconds; it must be within [`PROOF_WINDOW_SECS`].
    pub timestamp: u64,
    /// Ed25519 signature by the blinded key over [`proof_bytes_v2`].
    pub signature: [u8; 64],
}

/// The bytes a version 2 proof signs: as [`proof_bytes`], with [`PROOF_CONTEXT_V2`].
pub fn proof_bytes_v2(
    mailbox_id: &MailboxId,
    operation: Operation,
    timestamp: u64,
    item_ids: &[ItemId],
) -> Vec<u8> {
    let mut m = proof_bytes(mailbox_id, operation, timestamp, item_ids);
    m.splice(..PROOF_CONTEXT.len(), PROOF_CONTEXT_V2.iter().copied());
    m
}

impl BlindedProof {
    /// Signs a proof for `operation` on the mailbox of `key` for `period`, at `timestamp`.
    pub fn sign(
        key: &crate::mailbox_key::MailboxKey,
        period: u64,
        operation: Operation,
        timestamp: u64,
        item_ids: &[ItemId],
    ) -> Result<(MailboxId, Self), Error> {
        let mailbox_id = key.mailbox_id(period)?;
        let signed = proof_bytes_v2(&mailbox_id, operation, timestamp, item_ids);
        let (blinded_key, signature) = key.sign_blinded(period, &signed)?;
        Ok((mailbox_id, Self { blinded_key, timestamp, signature }))
    }

    /// Checks the proof at `now`: the timestamp is within the window, the blinded key hashes to
    /// `mailbox_id`, and the signature verifies strictly under it. Nothing else is learned.
    pub fn verify(
        &self,
        mailbox_id: &MailboxId,
        operation: Operation,
        item_ids: &[ItemId],
        now: u64,
    ) -> Result<(), Error> {
        if self.timestamp.abs_diff(now) > PROOF_WINDOW_SECS {
            return Err(Error::Mailbox("proof is stale or from the future"));
        }
        let owns = crate::mailbox_key::mailbox_id_of_blinded(&self.blinded_key);
        if !crate::envelope::ct_eq_32(&owns, mailbox_id) {
            return Err(Error::Mailbox("proof key does not own this mailbox"));
        }
        let signed = proof_bytes_v2(mailbox_id, operation, self.timestamp, item_ids);
        if !verify_strict(&self.blinded_key, &signed, &self.signature)? {
            return Err(Error::Mailbox("proof signature does not verify"));
        }
        Ok(())
    }
}

/// A request to a mailbox replica in protocol version 2 (`/kolokol/mailbox/2`): as [`Request`],
/// with [`BlindedProof`]s. Same limits.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum RequestV2 {
    /// Keep this envelope for the mailbox's owner.
    Deposit {
        /// The mailbox id of the recipient's mailbox address for the current period.
        mailbox_id: MailboxId,
        /// [`item_id_v2`] of the message.
        item_id: ItemId,
        /// A sealed envelope, exactly one of the envelope buckets long.
        envelope: Vec<u8>,
        /// Unix seconds after which the replica may drop it.
        expires_at: u64,
    },
    /// Hand over the mailbox's items.
    Fetch {
        /// The mailbox.
        mailbox_id: MailboxId,
        /// The owner's proof for [`Operation::Fetch`].
        proof: BlindedProof,
    },
    /// Delete items the owner has stored.
    Delete {
        /// The mailbox.
        mailbox_id: MailboxId,
        /// The items, at most [`MAX_DELETE_IDS`].
        item_ids: Vec<ItemId>,
        /// The owner's proof for [`Operation::Delete`] over these ids.
        proof: BlindedProof,
    },
}

impl RequestV2 {
    /// The request's bytes on the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        codec::encode(self)
    }

    /// Decodes a request and checks the limits of [`Request::from_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let request: RequestV2 = codec::decode_batch("mailbox request", bytes)?;
        match &request {
            RequestV2::Deposit { envelope, .. } if !BUCKETS.contains(&envelope.len()) => {
                Err(Error::Mailbox("deposit is not one of the envelope sizes"))
            }
            RequestV2::Delete { item_ids, .. } if item_ids.len() > MAX_DELETE_IDS => {
                Err(Error::Mailbox("delete names too many items"))
            }
            _ => Ok(request),
        }
    }
}

#[cfg(test)]
mod tests;
