//! Kolokol's node: the libp2p swarm and the protocols it speaks, the delivery pipeline (outbox,
//! opener workers, receipts), the SQLite store, the data directory, and the control-API server.
//!
//! This is the only crate that knows libp2p, and only [`swarm`]'s event loop touches the
//! `Swarm`: other tasks send it commands over bounded channels. Envelopes are sealed and opened
//! on worker threads, never on the swarm task. Every queue, map and buffer fed by peers is
//! bounded by a named constant. The node never prints: it reports through `tracing` and through
//! control-API events. It must not hold plaintext of anyone else's messages: as a relay it only
//! forwards libp2p streams, whose contents are envelopes it cannot open.

pub mod config;
pub mod control;
pub mod daemon;
pub mod data_dir;
pub mod delivery;
pub mod error;
pub mod mailbox;
pub mod metrics;
pub mod store;
pub mod swarm;
pub mod transport;

pub use config::{Config, FileConfig, LogFormat, Role};
pub use daemon::{Node, RunningNode};
pub use error::Error;
pub use libp2p::{Multiaddr, PeerId};
