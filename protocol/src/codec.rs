//! The one place that knows the binary encoding of wire and on-disk types.
//!
//! Everything goes through bincode 2 (pinned at `=2.0.1`) with one fixed configuration: big-endian,
//! fixed-width integers, and a decode limit of [`MAX_DECODE_LEN`] bytes. Keeping every call behind
//! this module means the encoding can change later in one place; `docs/PROTOCOL.md` spells out
//! the resulting bytes of every wire type.

use bincode::config::{BigEndian, Configuration, Fixint, Limit};

use crate::Error;

/// The largest input any decoder accepts, in bytes. It equals the largest envelope bucket, the
/// biggest thing a peer can legitimately send in one frame; bincode refuses to allocate past it,
/// so a forged length prefix cannot make the decoder reserve gigabytes.
pub const MAX_DECODE_LEN: usize = 65_535;

/// The largest batch frame (a mailbox deposit or a batch of fetched items) any decoder accepts,
/// in bytes: sixteen of the largest envelopes and room for their framing. Only
/// [`decode_batch`] and [`decode_chunked`] use it; every other type stays under
/// [`MAX_DECODE_LEN`].
pub const MAX_BATCH_DECODE_LEN: usize = 16 * 65_536 + 4096;

type Config = Configuration<BigEndian, Fixint, Limit<MAX_DECODE_LEN>>;

type BatchConfig = Configuration<BigEndian, Fixint, Limit<MAX_BATCH_DECODE_LEN>>;

fn config() -> Config {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_DECODE_LEN>()
}

fn batch_config() -> BatchConfig {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_BATCH_DECODE_LEN>()
}

/// Encodes `value` with the project's fixed configuration.
///
/// Encoding into a vector cannot fail for the types of this crate, which hold no maps or
/// non-UTF-8 strings; should it ever fail, the error is returned rather than hidden.
pub fn encode<T: bincode::Encode>(value: &T) -> Result<Vec<u8>, Error> {
    bincode::encode_to_vec(value, config())
        .map_err(|e| Error::Malformed { what: "value to encode", detail: e.to_string() })
}

/// Decodes exactly one `T` from `bytes`; trailing bytes are an error, so one value has exactly
/// one encoding (the golden vectors rely on that).
pub fn decode<T: bincode::Decode<()>>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    decode_with(what, bytes, MAX_DECODE_LEN, config())
}

/// Decodes exactly one `T` from `bytes` of at most [`MAX_BATCH_DECODE_LEN`]; the same encoding
/// as [`decode`], for the mailbox frames that carry a whole envelope plus fields, or several.
pub fn decode_batch<T: bincode::Decode<()>>(what: &'static str, bytes: &[u8]) -> Result<T, Error> {
    decode_with(what, bytes, MAX_BATCH_DECODE_LEN, batch_config())
}

/// Decodes exactly one `T` from `bytes` of at most [`crate::chunk::MAX_CHUNKED_LEN`]: the body a
/// message's chunks carry once they are put together.
pub fn decode_chunked<T: bincode::Decode<()>>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, Error> {
    decode_with(what, bytes, crate::chunk::MAX_CHUNKED_LEN, batch_config())
}

/// The one decoder: refuses input over `max` before bincode sees it, and trailing bytes after.
fn decode_with<T: bincode::Decode<()>>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
    config: impl bincode::config::Config,
) -> Result<T, Error> {
    if bytes.len() > max {
        return Err(Error::TooLarge { what, len: bytes.len(), max });
    }
    let (value, read) = bincode::decode_from_slice(bytes, config)
        .map_err(|e| Error::Malformed { what, detail: e.to_string() })?;
    if read != bytes.len() {
        return Err(Error::Malformed {
            what,
            detail: format!("{} trailing bytes after the value", bytes.len() - read),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
