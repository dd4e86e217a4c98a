//! `/kolokol/mailbox/1`: store-and-forward mailboxes on DHT servers, for recipients who are
//! offline.
//!
//! Flow: when direct delivery fails, the sender asks the DHT for the [`REPLICAS`] servers closest
//! to the recipient's mailbox id for the current period and sends each a `Deposit` of the sealed
//! envelope; the message is `stored` once [`REQUIRED_ACKS`] of them (all of them, when fewer
//! exist) answer `Stored`. The recipient, on start, when its reservations come up and every
//! [`FETCH_INTERVAL`], sends `Fetch` with an ownership proof to the servers closest to its
//! mailbox ids for the current and previous period, opens each envelope through the same path as
//! direct delivery, and then sends `Delete` with a proof. Replicas keep items in SQLite until
//! deleted or expired ([`MAX_ITEM_TTL`]), within [`QUOTAS`]; a full mailbox refuses new deposits
//! and never evicts stored ones. Every request is one frame each way: see [`codec`]. The wire
//! types and the proof are in `kolokol_protocol::mailbox`.

pub mod codec;

use std::time::Duration;

use libp2p::StreamProtocol;

use crate::store::MailboxQuotas;

/// The protocol id, versioned.
pub const PROTOCOL_NAME: StreamProtocol = StreamProtocol::new("/kolokol/mailbox/1");

/// How many replicas each deposit goes to: the DHT servers closest to the mailbox id.
pub const REPLICAS: usize = 3;

/// Acks that make a message `stored` when [`REPLICAS`] servers exist; with fewer, every one
/// must ack. Two of three survives one replica leaving before the recipient fetches.
pub const REQUIRED_ACKS: usize = 2;

/// Longest a replica keeps an item, whatever the depositor asks: the outbox gives up after
/// the same time.
pub const MAX_ITEM_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How often a node fetches its mailboxes even when nothing prompted it.
pub const FETCH_INTERVAL: Duration = Duration::from_secs(60);

/// How often a replica drops expired items.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

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

/// Rounds of fetch-then-delete against one replica in one pass: each round takes at most
/// `kolokol_protocol::mailbox::MAX_FETCH_ITEMS` items, so a pass takes at most this many
/// batches, and the next pass continues.
pub const MAX_FETCH_ROUNDS: usize = 64;

/// Items in one mailbox. A user offline for the whole TTL with many contacts must not lose
/// mail, yet one mailbox must not take a replica's disk: 8192 items of at most 64 KiB.
pub const MAX_ITEMS_PER_MAILBOX: u64 = 8192;

/// Envelope bytes in one mailbox (64 MiB).
pub const MAX_BYTES_PER_MAILBOX: u64 = 64 * 1024 * 1024;

/// Items one depositor may hold in one mailbox, so one sender cannot fill a mailbox and lock
/// the others out.
pub const MAX_ITEMS_PER_DEPOSITOR: u64 = 2048;

/// Envelope bytes a replica holds for all mailboxes together (1 GiB).
pub const MAX_STORED_BYTES: u64 = 1024 * 1024 * 1024;

/// The quotas a replica enforces.
pub const QUOTAS: MailboxQuotas = MailboxQuotas {
    items_per_mailbox: MAX_ITEMS_PER_MAILBOX,
    bytes_per_mailbox: MAX_BYTES_PER_MAILBOX,
    items_per_depositor: MAX_ITEMS_PER_DEPOSITOR,
    total_bytes: MAX_STORED_BYTES,
};
