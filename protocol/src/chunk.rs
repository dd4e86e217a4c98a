//! Messages too large for one envelope: the body is split into chunks, each sent in its own
//! envelope of the largest bucket, and put back together by the receiver.
//!
//! A chunk is a [`Body::Chunk`] in a [`Content`] that carries the whole message's id and time,
//! so every chunk goes through the same conversation, replay cache, outbox and mailbox as any
//! other envelope. Every chunk carries exactly [`CHUNK_LEN`] bytes of the encoded body (the
//! last is padded with zeros), so every chunk envelope is exactly 65 535 bytes and an observer
//! learns only the number of chunks: the body's length to within [`CHUNK_LEN`]. That rounding is
//! coarser than Padmé's for every size allowed here, so no other length padding is applied.
//! This module only splits, checks and joins; keeping the chunks until all have arrived is the
//! node's job. `docs/PROTOCOL.md` section 6.7 is the normative description.

use crate::Error;
use crate::codec;
use crate::message::{Body, Content};

/// Bytes of encoded body in every chunk. Chosen so that a chunk in a first-contact payload,
/// with the sender's certificate and advertisement, still fits the 65 535-byte bucket (whose
/// largest first-contact body is 65 425 bytes, and a chunk's payload costs 266 bytes besides
/// its data), and so that a chunk never fits a smaller bucket.
pub const CHUNK_LEN: usize = 65_024;

/// Bytes of encoded body in every chunk of a message to a format 4 peer. A format 4 first
/// contact spends 1 088 bytes on the ML-KEM ciphertext and 1 297 on the sender's hybrid prekey,
/// so a [`CHUNK_LEN`] chunk does not fit one; this one does (with the certificate,
/// advertisement, prekey and mailbox address, 13 bytes are left in the 65 535-byte bucket), so a
/// long message can start a conversation. Sixteen of them still carry the longest text. All the
/// chunks of one message have the same length (the sender picks it by the conversation's
/// format, which does not go back), and a chunk never fits a smaller bucket.
pub const CHUNK_LEN_4: usize = 62_720;

/// The chunk lengths a receiver accepts.
pub const CHUNK_LENS: [usize; 2] = [CHUNK_LEN, CHUNK_LEN_4];

/// The most chunks one message may have. It bounds what a receiver keeps for one message.
pub const MAX_CHUNKS: u32 = 16;

/// The largest encoded body a chunked message may carry, in bytes (1 040 384).
pub const MAX_CHUNKED_LEN: usize = CHUNK_LEN * MAX_CHUNKS as usize;

/// The largest encoded body sent in a single envelope; a larger one is chunked. It leaves room
/// in the largest bucket for the certificate and advertisement of a first contact (the limit
/// there is 65 183 bytes of body) and for payload fields added later.
pub const MAX_UNCHUNKED_LEN: usize = 60 * 1024;

/// Splits `content` into the contents to seal, one per envelope: `content` itself if its body
/// encodes to at most [`MAX_UNCHUNKED_LEN`] bytes, else one [`Body::Chunk`] per
/// [`CHUNK_LEN`] bytes of the encoded body, all with `content`'s id and time. A body over
/// [`MAX_CHUNKED_LEN`] is refused, and so is a chunk (chunks are not chunked again).
pub fn split(content: &Content) -> Result<Vec<Content>, Error> {
    split_with(content, CHUNK_LEN)
}

/// [`split`] with chunks of `chunk_len` bytes, one of [`CHUNK_LENS`]: [`CHUNK_LEN_4`] for a
/// format 4 peer, whose first contacts have less room.
pub fn split_with(content: &Content, chunk_len: usize) -> Result<Vec<Content>, Error> {
    if !CHUNK_LENS.contains(&chunk_len) {
        return Err(Error::Envelope("not a chunk length"));
    }
    let max_len = chunk_len * MAX_CHUNKS as usize;
    if matches!(content.body, Body::Chunk { .. }) {
        return Err(Error::Envelope("a chunk cannot be chunked again"));
    }
    let body = codec::encode(&content.body)?;
    if body.len() <= MAX_UNCHUNKED_LEN {
        return Ok(vec![content.clone()]);
    }
    if body.len() > max_len {
        return Err(Error::TooLarge { what: "message body", len: body.len(), max: max_len });
    }
    let count = body.len().div_ceil(chunk_len);
    let body_len = u32::try_from(body.len()).map_err(|_| Error::TooLarge {
        what: "message body",
        len: body.len(),
        max: MAX_CHUNKED_LEN,
    })?;
    Ok(body
        .chunks(chunk_len)
        .enumerate()
        .map(|(index, piece)| {
            let mut data = vec![0u8; chunk_len];
            data[..piece.len()].copy_from_slice(piece);
            Content {
                id: content.id,
                sent_at_ms: content.sent_at_ms,
                body: Body::Chunk {
                    // Both fit: count is at most MAX_CHUNKS.
                    index: index as u32,
                    count: count as u32,
                    body_len,
                    data,
                },
            }
        })
        .collect())
}

/// Checks one chunk's fields against each other and the limits: 1 to [`MAX_CHUNKS`] chunks,
/// an index below the count, a body length that needs exactly `count` chunks and is over
/// [`MAX_UNCHUNKED_LEN`], and data of one of the [`CHUNK_LENS`] (the count is that of chunks of
/// this length). A receiver checks this before it keeps anything.
pub fn check(index: u32, count: u32, body_len: u32, data: &[u8]) -> Result<(), Error> {
    if !(1..=MAX_CHUNKS).contains(&count) {
        return Err(Error::Envelope("chunk count out of range"));
    }
    if index >= count {
        return Err(Error::Envelope("chunk index beyond the count"));
    }
    let body_len = body_len as usize;
    if !CHUNK_LENS.contains(&data.len()) {
        return Err(Error::Envelope("chunk data is not of a chunk length"));
    }
    if body_len <= MAX_UNCHUNKED_LEN || body_len.div_ceil(data.len()) != count as usize {
        return Err(Error::Envelope("chunk body length does not match the count"));
    }
    Ok(())
}

/// Puts a message's chunks back together: `chunks` must be the data of chunks 0 to `count - 1`
/// in order, each checked with [`check`] against the same `body_len`, all of one length. The
/// padding after the body must be zero, and the body must decode to a body that is not itself
/// a chunk.
pub fn join<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, body_len: u32) -> Result<Body, Error> {
    let body_len = body_len as usize;
    if body_len > MAX_CHUNKED_LEN {
        return Err(Error::TooLarge { what: "message body", len: body_len, max: MAX_CHUNKED_LEN });
    }
    let mut joined = Vec::with_capacity(body_len.div_ceil(CHUNK_LEN_4) * CHUNK_LEN_4);
    let mut chunk_len = None;
    for chunk in chunks {
        let len = *chunk_len.get_or_insert(chunk.len());
        if !CHUNK_LENS.contains(&len) || chunk.len() != len || joined.len() >= body_len {
            return Err(Error::Envelope("chunks do not make up the body length"));
        }
        joined.extend_from_slice(chunk);
    }
    if joined.len() < body_len {
        return Err(Error::Envelope("chunks do not make up the body length"));
    }
    if joined[body_len..].iter().any(|b| *b != 0) {
        return Err(Error::Envelope("chunk padding is not zero"));
    }
    joined.truncate(body_len);
    match codec::decode_chunked::<Body>("chunked message body", &joined)? {
        Body::Chunk { .. } => Err(Error::Envelope("a chunked body is itself a chunk")),
        body => Ok(body),
    }
}

#[cfg(test)]
mod tests;
