//! The `/kolokol/msg/1` codec: a 4-byte big-endian length and one envelope, answered by one
//! byte.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use kolokol_protocol::envelope::{BUCKETS, MAX_ENVELOPE_LEN};
use libp2p::StreamProtocol;

use crate::delivery::Ack;

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
