//! Kolokol's node: everything a running node does, around the libp2p swarm.
//!
//! It owns the swarm and the protocols it speaks, the delivery pipeline (outbox, receive path,
//! receipts), the mailboxes, the SQLite store, the data directory and the control-API server.
//! It is the only crate that knows libp2p, and only the swarm task touches the `Swarm`: other
//! tasks use its typed client over bounded channels. Envelopes are sealed and opened on worker
//! threads, never on the swarm task. Every queue, map and buffer fed by peers is bounded by a
//! named constant. The node never prints: it reports through `tracing` and through control-API
//! events. It must not hold plaintext of anyone else's messages: as a relay or mailbox replica
//! it only handles envelopes it cannot open.
//!
//! The rooms, in reading order (see `docs/ARCHITECTURE.md` for the map and the path of a
//! message): `run` starts everything; `node` is the façade the control API calls; `control` and
//! `metrics` serve it; the jobs are `contacts`, `groups`, `outbox`, `inbox`, `conversations`, `keys`,
//! `presence`, `mailbox`, `bootstrap` and `doctor`; below them `swarm`, `transport`, `wire`, `store`, and the
//! small shared pieces (`clock`, `events`, `ids`, `workers`, `config`, `data_dir`, `error`).

#![warn(unreachable_pub)]

pub mod control;
pub mod metrics;
pub mod node;
pub mod run;

pub mod backup;
pub mod bootstrap;
pub mod chats;
pub mod contacts;
pub mod conversations;
pub mod doctor;
pub mod files;
pub mod groups;
pub mod inbox;
pub mod keys;
pub mod mailbox;
pub mod outbox;
pub mod presence;

pub mod store;
pub mod store_key;
pub mod swarm;
pub mod transport;
pub mod wire;

pub mod clock;
pub mod config;
pub mod data_dir;
pub mod error;
pub mod events;
pub mod ids;
pub mod offline;
pub mod quota;
pub mod repeats;
pub mod workers;

pub use config::{Config, FileConfig, LogFormat, Role};
pub use error::Error;
pub use libp2p::{Multiaddr, PeerId};
pub use node::Node;
pub use run::RunningNode;
