//! Kolokol's sans-IO core: identities and device certificates, invite codes, the peer wire types
//! and their codec, end-to-end envelopes and the chunks of messages too large for one, and the control-API message types shared by the daemon
//! and the CLI.
//!
//! This crate must stay deterministic given its inputs: it does no I/O, has no async code, and
//! owns no clock or random number generator. Time arrives as Unix seconds or milliseconds and
//! randomness as byte arrays, both supplied by the caller. Nothing here may panic on any input
//! a peer, a file or a user can produce; every decoder returns [`Error`] instead.
//! Of libp2p it uses only `libp2p-identity`, for Ed25519 keys and peer ids.

pub mod backup;
pub mod bundle;
pub mod chunk;
pub mod codec;
pub mod control;
pub mod conversation;
pub mod envelope;
pub mod error;
pub mod file;
pub mod group;
pub mod identity;
pub mod invite;
pub mod kem;
pub mod mailbox;
pub mod mailbox_key;
pub mod message;
pub mod prekey;
pub mod presence;
pub mod safety;
pub mod tunnel;
mod x25519;

pub use error::Error;

#[cfg(test)]
mod tests;
