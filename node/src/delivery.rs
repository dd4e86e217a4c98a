//! `/kolokol/msg/1`: direct delivery of one envelope to a connected (or dialable) peer, answered
//! by a one-byte acknowledgement.
//!
//! Flow: the sender opens a stream, writes one length-prefixed envelope and closes its write
//! side; the receiver reads it, hands it to an opener worker (never opened on the swarm task),
//! and answers [`Ack::Accepted`] once the message is in its store, [`Ack::Rejected`] if the
//! envelope does not open, or [`Ack::Busy`] if its queue of envelopes waiting to be opened is
//! full. Only `Accepted` moves the sender's message to `sent`.

pub mod codec;

use libp2p::StreamProtocol;

/// The protocol id, versioned.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/kolokol/msg/1");

/// The receiver's answer to one envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Opened and stored (or already stored before: duplicates are acknowledged again).
    Accepted,
    /// Did not open: not for this node, tampered, or from an invalid certificate.
    Rejected,
    /// The receiver is overloaded; try again later.
    Busy,
}

impl Ack {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            Ack::Accepted => 0,
            Ack::Rejected => 1,
            Ack::Busy => 2,
        }
    }

    /// Reads the wire byte; unknown values are `None`.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Ack::Accepted),
            1 => Some(Ack::Rejected),
            2 => Some(Ack::Busy),
            _ => None,
        }
    }
}
