//! Files: what travels inside envelopes to carry a file from one node to another.
//!
//! A file is one [`FileOffer`] (its name, size and SHA-256) followed by its chunks, each a
//! [`FileMessage::Chunk`] of exactly [`FILE_CHUNK_LEN`] bytes (the last padded with zeros), every
//! one in its own envelope and in a [`crate::message::Content`] that carries the transfer's id
//! (the offer's content id). A chunk's payload is so large that its envelope is always the
//! largest bucket (65 535 bytes), so the wire shows only how many chunks a file has: its size to
//! within [`FILE_CHUNK_LEN`], the same padding as a long message's chunks. This module only
//! describes and checks; reading, writing and resuming are the node's job.
//! `docs/PROTOCOL.md` section 6.10 is the normative description.

use bincode::{Decode, Encode};

use crate::Error;

/// Bytes of file in every chunk: [`crate::chunk::CHUNK_LEN_4`], which fits even a format 4 first
/// contact (a file chunk's fields take 4 bytes fewer than a message chunk's) and never fits a
/// bucket smaller than the largest.
pub const FILE_CHUNK_LEN: usize = crate::chunk::CHUNK_LEN_4;

/// The largest file the protocol describes, in bytes (64 GiB): its chunk count fits a `u32`
/// many times over. Nodes refuse much less (their configured maximum).
pub const MAX_FILE_LEN: u64 = 64 * 1024 * 1024 * 1024;

/// The longest file name an offer may carry, in bytes of UTF-8.
pub const MAX_FILE_NAME_LEN: usize = 255;

/// A file message: the offer that starts a transfer, or one of its chunks.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum FileMessage {
    /// What the file is; its content id is the transfer's id.
    Offer(FileOffer),
    /// Chunk `index` of the transfer named by its content id.
    Chunk {
        /// Position of the chunk, from 0; it holds bytes `index * FILE_CHUNK_LEN` onwards.
        index: u32,
        /// Exactly [`FILE_CHUNK_LEN`] bytes, the last chunk's padded with zeros.
        data: Vec<u8>,
    },
}

/// What a file is, sent before any of its chunks.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct FileOffer {
    /// The name the sender's file had, without any directory; the receiver makes it safe
    /// before it uses it.
    pub name: String,
    /// Its length in bytes, 1 to [`MAX_FILE_LEN`].
    pub size: u64,
    /// SHA-256 of its bytes, checked by the receiver once every chunk is in.
    pub sha256: [u8; 32],
}

impl FileOffer {
    /// Whether the offer is within its bounds: a name of 1 to [`MAX_FILE_NAME_LEN`] bytes and a
    /// size of 1 to [`MAX_FILE_LEN`].
    pub fn is_valid(&self) -> bool {
        !self.name.is_empty()
            && self.name.len() <= MAX_FILE_NAME_LEN
            && (1..=MAX_FILE_LEN).contains(&self.size)
    }

    /// How many chunks the file travels in.
    pub fn chunks(&self) -> u32 {
        chunk_count(self.size)
    }
}

impl FileMessage {
    /// Whether the message is within its bounds, as far as it can tell alone: a valid offer, or
    /// a chunk of exactly [`FILE_CHUNK_LEN`] bytes whose index a file of [`MAX_FILE_LEN`] could
    /// have. The receiver checks a chunk against its offer with [`check_chunk`].
    pub fn is_valid(&self) -> bool {
        match self {
            FileMessage::Offer(offer) => offer.is_valid(),
            FileMessage::Chunk { index, data } => {
                data.len() == FILE_CHUNK_LEN && *index < chunk_count(MAX_FILE_LEN)
            }
        }
    }
}

/// How many chunks a file of `size` bytes travels in (0 for an empty one, which no valid offer
/// describes).
pub fn chunk_count(size: u64) -> u32 {
    let count = size.div_ceil(FILE_CHUNK_LEN as u64);
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Where chunk `index` of a file of `size` bytes lies in the file: its offset and how many of
/// its bytes are the file's (the rest is padding). `None` past the last chunk.
pub fn chunk_span(size: u64, index: u32) -> Option<(u64, usize)> {
    let offset = u64::from(index).checked_mul(FILE_CHUNK_LEN as u64)?;
    if offset >= size {
        return None;
    }
    let len = (size - offset).min(FILE_CHUNK_LEN as u64) as usize;
    Some((offset, len))
}

/// Checks chunk `index` with `data` against the offer's `size`: the index names a chunk of
/// the file, the data is [`FILE_CHUNK_LEN`] bytes and its padding (after the file's end) is
/// zero. Returns the chunk's place in the file, as [`chunk_span`].
pub fn check_chunk(size: u64, index: u32, data: &[u8]) -> Result<(u64, usize), Error> {
    if data.len() != FILE_CHUNK_LEN {
        return Err(Error::Envelope("file chunk data is not of the chunk length"));
    }
    let Some((offset, len)) = chunk_span(size, index) else {
        return Err(Error::Envelope("file chunk index beyond the file"));
    };
    if data[len..].iter().any(|b| *b != 0) {
        return Err(Error::Envelope("file chunk padding is not zero"));
    }
    Ok((offset, len))
}

/// Builds chunk `index` of a file from `bytes`, the file's bytes at that chunk's place (at most
/// [`FILE_CHUNK_LEN`]), padding it with zeros.
pub fn chunk(index: u32, bytes: &[u8]) -> Result<FileMessage, Error> {
    if bytes.len() > FILE_CHUNK_LEN {
        return Err(Error::TooLarge { what: "file chunk", len: bytes.len(), max: FILE_CHUNK_LEN });
    }
    let mut data = vec![0u8; FILE_CHUNK_LEN];
    data[..bytes.len()].copy_from_slice(bytes);
    Ok(FileMessage::Chunk { index, data })
}

#[cfg(test)]
mod tests;
