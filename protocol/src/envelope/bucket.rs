//! The sizes of envelopes on the wire: the four buckets every envelope is padded to, the text
//! floor below which no text is sealed, and the overhead each format adds to its payload, from
//! which follows the bucket a payload is sealed in.
//!
//! Only the sender chooses a bucket, by these rules; a receiver accepts an envelope of any of
//! the four sizes, whatever it carries. The header lengths and each Noise pattern's overhead are
//! defined with the formats they describe, in `envelope.rs`; what is here adds them up.

use crate::Error;
use crate::envelope::{
    HEADER_LEN, HEADER_LEN_3, HEADER_LEN_4, KIND_CONVERSATION, LENGTH_PREFIX, NOISE_KPSK1_OVERHEAD,
    NOISE_X_OVERHEAD,
};
use crate::kem;
use crate::message::{Body, Content};

/// The only sizes an envelope has on the wire, in bytes. A relay or mailbox learns which of
/// four size classes a message falls in, and nothing finer.
pub const BUCKETS: [usize; 4] = [1024, 4096, 16_384, 65_535];

/// The largest envelope, in bytes.
pub const MAX_ENVELOPE_LEN: usize = BUCKETS[3];

/// The smallest envelope a text is sealed in (a one-to-one text or any group message): every
/// text that fits in it travels in envelopes of this one size, so a censor who sees sizes on
/// the wire cannot tell a short text from a long one (the lab's T16 read the length class of
/// texts from the 1 KiB and 4 KiB buckets). Receipts and other small bodies keep the 1 KiB
/// bucket: which kind of event an envelope carries is not hidden.
pub const TEXT_BUCKET: usize = BUCKETS[1];

/// Noise overhead of format 4's first contact besides the header: the ML-KEM ciphertext and
/// the `Xpsk0` message's ephemeral, encrypted static key and tag.
pub const FIRST_CONTACT_4_OVERHEAD: usize = kem::CIPHERTEXT_LEN + NOISE_X_OVERHEAD;

/// The smallest bucket an envelope carrying `content` is sealed in: [`TEXT_BUCKET`] for a
/// text, else the smallest bucket. Only the sender applies it; a receiver accepts any bucket.
pub fn floor_for(content: &Content) -> usize {
    match content.body {
        Body::Text(_) | Body::NumberedText { .. } | Body::Group(_) => TEXT_BUCKET,
        _ => BUCKETS[0],
    }
}

/// The smallest bucket that holds `plaintext_len` bytes of format 1 sealed content, or `None`
/// if even the largest does not.
pub fn bucket_for(plaintext_len: usize) -> Option<usize> {
    bucket_with_overhead(HEADER_LEN + NOISE_X_OVERHEAD, plaintext_len)
}

/// The smallest bucket that holds `body_len` bytes of payload in a format 3 envelope of `kind`.
pub fn bucket_for_kind(kind: u8, body_len: usize) -> Option<usize> {
    bucket_with_overhead(overhead(kind), body_len)
}

/// The smallest bucket that holds `body_len` bytes of payload in a format 4 envelope of `kind`.
pub fn bucket_for_kind_4(kind: u8, body_len: usize) -> Option<usize> {
    bucket_with_overhead(overhead_4(kind), body_len)
}

/// The bucket an envelope of every format is sealed in: the smallest that holds `body_len`
/// bytes of `content`'s encoded payload after `overhead` bytes of header and Noise, and at
/// least the text floor for a text ([`floor_for`]); `what` names the payload in the error.
pub(super) fn sealing_bucket(
    what: &'static str,
    overhead: usize,
    body_len: usize,
    content: &Content,
) -> Result<usize, Error> {
    let bucket = bucket_with_overhead(overhead, body_len).ok_or(Error::TooLarge {
        what,
        len: body_len,
        max: MAX_ENVELOPE_LEN - overhead - LENGTH_PREFIX,
    })?;
    Ok(bucket.max(floor_for(content)))
}

pub(super) fn overhead(kind: u8) -> usize {
    if kind == KIND_CONVERSATION {
        HEADER_LEN_3 + NOISE_KPSK1_OVERHEAD
    } else {
        HEADER_LEN_3 + NOISE_X_OVERHEAD
    }
}

pub(super) fn overhead_4(kind: u8) -> usize {
    if kind == KIND_CONVERSATION {
        HEADER_LEN_4 + NOISE_KPSK1_OVERHEAD
    } else {
        HEADER_LEN_4 + FIRST_CONTACT_4_OVERHEAD
    }
}

pub(super) fn bucket_with_overhead(overhead: usize, body_len: usize) -> Option<usize> {
    let needed = overhead.checked_add(LENGTH_PREFIX)?.checked_add(body_len)?;
    BUCKETS.into_iter().find(|b| *b >= needed)
}
