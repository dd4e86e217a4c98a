//! Node configuration: what the daemon is told at start, by flags or by the embedding program.

use std::path::PathBuf;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

use crate::error::{Error, Result};

/// What kind of node to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A user's node: relay client, DHT client, reachable through relays.
    Node,
    /// A community relay: circuit relay v2 server and DHT server, on a public address.
    Relay,
}

impl Role {
    /// The name shown in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Relay => "relay",
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory: identity, database, control socket.
    pub data_dir: PathBuf,
    /// Node or relay.
    pub role: Role,
    /// Addresses to listen on. A user node with none makes only outbound connections and is
    /// reachable through its relays alone, which keeps its IP address from its contacts.
    pub listen: Vec<Multiaddr>,
    /// Peers to bootstrap from; each must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses this node is reachable at from outside (relays must have one, or they can
    /// grant no reservations). When empty, a relay uses its concrete listen addresses.
    pub external_addresses: Vec<Multiaddr>,
}

impl Config {
    /// A configuration with defaults for everything but the data directory and role.
    pub fn new(data_dir: impl Into<PathBuf>, role: Role) -> Self {
        Self {
            data_dir: data_dir.into(),
            role,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            external_addresses: Vec::new(),
        }
    }

    /// Checks what can be checked before anything starts.
    pub fn validate(&self) -> Result<()> {
        for addr in &self.bootstrap {
            peer_id_of(addr)?;
        }
        Ok(())
    }
}

/// The peer id at the end of a bootstrap address.
pub fn peer_id_of(addr: &Multiaddr) -> Result<libp2p::PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(peer),
        _ => Err(Error::Address(format!(
            "bootstrap address {addr} has no /p2p/<peer id> at its end (ask the relay operator for its full address)"
        ))),
    }
}
