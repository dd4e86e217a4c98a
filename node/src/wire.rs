//! The node's own request-response protocols as bytes on a stream: `/kolokol/msg/1` (one
//! envelope, one acknowledgement byte) and `/kolokol/mailbox/1` (one request frame, one response
//! frame). Framing, protocol ids and stream limits only: lengths are checked before anything is
//! allocated. What the node does with what arrives is elsewhere (`inbox`, `mailbox`).

pub mod delivery;
pub mod mailbox;
