//! `/kolokol/mailbox/1` and `/kolokol/mailbox/2`: requests to a mailbox replica (deposit,
//! fetch, delete, handover), each one frame each way. Version 2 carries blinded ownership proofs
//! that name no identity (`docs/PROTOCOL.md` 11.7); the wire types and the proofs are in
//! `kolokol_protocol::mailbox`; what a replica and a depositor do with them is in the node's
//! `mailbox` room.
//!
//! The codec: a 4-byte big-endian length and one bincode request, answered by a 4-byte
//! big-endian length and one bincode response, each at most [`MAX_FRAME_LEN`] bytes. One codec
//! type serves both versions, with the request type of each as its parameter.

use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use kolokol_protocol::codec::MAX_BATCH_DECODE_LEN;
use kolokol_protocol::mailbox::{Request, RequestV2, Response};
use libp2p::StreamProtocol;

/// The protocol id of version 1: mailbox ids and proofs from the owner's identity key.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/kolokol/mailbox/1");

/// The protocol id of version 2: mailbox ids from the owner's mailbox address, blinded proofs.
pub const PROTOCOL_NAME_V2: StreamProtocol = StreamProtocol::new("/kolokol/mailbox/2");

/// A mailbox request of either version, as the node sends and serves it. A handover names no
/// owner, so it travels over version 1 whatever the mailbox id's version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailboxRequest {
    /// Over `/kolokol/mailbox/1`.
    V1(Request),
    /// Over `/kolokol/mailbox/2`.
    V2(RequestV2),
}

impl MailboxRequest {
    /// The request's frame body, as it goes on the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, kolokol_protocol::Error> {
        match self {
            MailboxRequest::V1(r) => r.to_bytes(),
            MailboxRequest::V2(r) => r.to_bytes(),
        }
    }
}

/// A request type the codec can carry: its bytes and its checked decoding.
pub trait Frame: Sized + Send + 'static {
    /// The request's bytes on the wire.
    fn encode(&self) -> Result<Vec<u8>, kolokol_protocol::Error>;
    /// Decodes a request and checks its limits.
    fn decode(bytes: &[u8]) -> Result<Self, kolokol_protocol::Error>;
}

impl Frame for Request {
    fn encode(&self) -> Result<Vec<u8>, kolokol_protocol::Error> {
        self.to_bytes()
    }
    fn decode(bytes: &[u8]) -> Result<Self, kolokol_protocol::Error> {
        Request::from_bytes(bytes)
    }
}

impl Frame for RequestV2 {
    fn encode(&self) -> Result<Vec<u8>, kolokol_protocol::Error> {
        self.to_bytes()
    }
    fn decode(bytes: &[u8]) -> Result<Self, kolokol_protocol::Error> {
        RequestV2::from_bytes(bytes)
    }
}

/// How long one mailbox request (dial excluded) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Concurrent mailbox streams per connection; a depositor with a backlog sends many at once.
pub const MAX_STREAMS: usize = 256;

/// Inbound mailbox requests waiting for the daemon's store. When full, new ones are refused as
/// busy at once and the depositor tries again on its next attempt.
pub const INBOUND_QUEUE_LEN: usize = 512;

/// Mailbox requests of ours waiting for an answer; each holds its request (up to one envelope)
/// until answered. A backlog deposits one outbox batch at a time, far below this; past it, new
/// requests fail at once and the outbox tries again later.
pub const MAX_PENDING_REQUESTS: usize = 4096;

/// The largest frame either way: the batch decoder's limit.
pub const MAX_FRAME_LEN: usize = MAX_BATCH_DECODE_LEN;

/// The request-response codec of the mailbox protocol, for requests of type `R`: [`Request`]
/// over `/kolokol/mailbox/1`, [`RequestV2`] over `/kolokol/mailbox/2`.
pub struct Codec<R = Request>(PhantomData<fn() -> R>);

impl<R> Clone for Codec<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Codec<R> {}

impl<R> Default for Codec<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<R> std::fmt::Debug for Codec<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mailbox::Codec")
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("mailbox frame of {len} bytes is over the limit of {MAX_FRAME_LEN}"),
        ));
    }
    // The buffer grows as bytes arrive, so a peer that only sends a length holds nothing.
    let mut frame = Vec::new();
    io.take(len as u64).read_to_end(&mut frame).await?;
    if frame.len() != len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "mailbox frame cut short"));
    }
    Ok(frame)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: Vec<u8>) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME_LEN)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mailbox frame too long"))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    io.write_all(&frame).await?;
    io.flush().await
}

fn invalid(e: kolokol_protocol::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl<R: Frame> libp2p::request_response::Codec for Codec<R> {
    type Protocol = StreamProtocol;
    type Request = R;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<R>
    where
        T: AsyncRead + Unpin + Send,
    {
        R::decode(&read_frame(io).await?).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        Response::from_bytes(&read_frame(io).await?).map_err(invalid)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: R) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, req.encode().map_err(invalid)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, res.to_bytes().map_err(invalid)?).await
    }
}
