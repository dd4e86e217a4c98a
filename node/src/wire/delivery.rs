//! `/kolokol/msg/1`: direct delivery of one envelope to a connected (or dialable) peer, answered
//! by a one-byte acknowledgement.
//!
//! Flow: the sender opens a stream, writes one length-prefixed envelope and closes its write
//! side; the receiver reads it, hands it to an opener worker (never opened on the swarm task),
//! and answers [`Ack::Accepted`] once the message is in its store, [`Ack::Rejected`] if the
//! envelope does not open, or [`Ack::Busy`] if its queue of envelopes waiting to be opened is
//! full. Only `Accepted` moves the sender's message to `sent`.
//!
//! The codec: a 4-byte big-endian length and one envelope, answered by one byte.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use kolokol_protocol::envelope::{BUCKETS, MAX_ENVELOPE_LEN};
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

/// The request-response codec of the delivery protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct Codec;

impl libp2p::request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        // The length is checked before anything is allocated: only the four envelope sizes
        // exist, so anything else is refused without reading it.
        if !BUCKETS.contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("envelope length {len} is not one of the buckets (max {MAX_ENVELOPE_LEN})"),
            ));
        }
        // The buffer grows as bytes arrive instead of being reserved up front, so a peer that
        // sends only length prefixes on many streams makes us hold nothing for them.
        let mut envelope = Vec::new();
        io.take(len as u64).read_to_end(&mut envelope).await?;
        if envelope.len() != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "envelope cut short"));
        }
        Ok(envelope)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        Ack::from_byte(b[0]).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("unknown ack byte {}", b[0]))
        })
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let len = u32::try_from(req.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "envelope too long"))?;
        let mut frame = Vec::with_capacity(4 + req.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&req);
        io.write_all(&frame).await?;
        io.flush().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        ack: Ack,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&[ack.to_byte()]).await?;
        io.flush().await
    }
}
