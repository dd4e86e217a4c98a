//! What the node remembers of every address it dialed, per network: whether it worked, so the
//! next dial tries what worked first and what failed rarely.
//!
//! An *endpoint* is where a dial's packets go: a peer's direct address (TCP, QUIC or stealth),
//! or, for a relay circuit, the relay's address. Each dial the racing dialer makes ends in a
//! success (a connection) or a failure (refused, reset, timed out, stalled later), recorded
//! here under the network it was made on ([`NetworkId`]). Ranking a peer's addresses puts, in
//! order: those that worked last (most recent first); those never tried here (those of a
//! transport that works here first, those of a transport that only failed here last); those
//! that failed, once their retry time has come ([`retry_after`]); and those that failed
//! recently only when nothing else is left. The records are bounded by [`MAX_ENDPOINTS`] over
//! all networks, the oldest forgotten first; the swarm task holds them and the store keeps
//! them across restarts (`store/endpoints.rs`).

use std::collections::HashMap;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::swarm::network::NetworkId;
use crate::swarm::without_peer;

/// Endpoint records kept, over all networks; past this the one used longest ago goes. The
/// store keeps as many.
pub const MAX_ENDPOINTS: usize = crate::store::MAX_ENDPOINT_ROWS;

/// How long after a failure an endpoint is raced again with the others (after those that
/// work); each further failure in a row doubles it, up to [`MAX_RETRY_AFTER`].
pub const RETRY_AFTER: Duration = Duration::from_secs(10 * 60);

/// The longest an endpoint that keeps failing waits between two tries.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 60 * 60);

/// The wait before an endpoint that failed `failures` times in a row is tried again.
pub fn retry_after(failures: u32) -> Duration {
    RETRY_AFTER.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_RETRY_AFTER)
}

/// The kind of transport an endpoint is reached by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    /// Plain libp2p over TCP (multistream-select and Noise in the clear).
    Tcp,
    /// QUIC (UDP).
    Quic,
    /// libp2p inside TLS on a secret path (`docs/PROTOCOL.md` section 13).
    Stealth,
    /// Anything else (a DNS name the resolver answers for, WebSocket).
    Other,
}

impl TransportKind {
    /// The kind of `endpoint`.
    pub fn of(endpoint: &Multiaddr) -> Self {
        if crate::transport::is_stealth(endpoint) {
            return Self::Stealth;
        }
        let protocols: Vec<Protocol> = endpoint.iter().collect();
        match protocols.as_slice() {
            [Protocol::Ip4(_) | Protocol::Ip6(_), Protocol::Udp(_), Protocol::QuicV1, ..] => {
                Self::Quic
            }
            [
                Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_),
                Protocol::Tcp(_),
            ]
            | [
                Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_),
                Protocol::Tcp(_),
                Protocol::P2p(_),
            ] => Self::Tcp,
            _ => Self::Other,
        }
    }

    /// The name `doctor` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Quic => "QUIC",
            Self::Stealth => "stealth",
            Self::Other => "other",
        }
    }
}

/// Where a dial to `address` sends its packets: the relay's address for a circuit, the
/// address itself otherwise; without `/p2p/`.
pub fn endpoint_of(address: &Multiaddr) -> Multiaddr {
    let relay: Multiaddr = address.iter().take_while(|p| *p != Protocol::P2pCircuit).collect();
    without_peer(&relay)
}

/// What the node knows of one endpoint on one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The network the dials were made on.
    pub network: NetworkId,
    /// The endpoint, without `/p2p/`.
    pub address: Multiaddr,
    /// The peer last reached (or sought) there.
    pub peer: PeerId,
    /// Dials that succeeded, in all.
    pub successes: u32,
    /// Dials that failed since the last success.
    pub failures: u32,
    /// When a dial last succeeded, Unix ms.
    pub last_success_ms: Option<u64>,
    /// When a dial last failed, Unix ms.
    pub last_failure_ms: Option<u64>,
}

impl EndpointRecord {
    /// The record as the store keeps it (`store/endpoints.rs`).
    pub fn to_row(&self) -> crate::store::EndpointRow {
        crate::store::EndpointRow {
            network: self.network.0,
            address: self.address.clone(),
            peer_id: self.peer,
            successes: self.successes,
            failures: self.failures,
            last_success_ms: self.last_success_ms,
            last_failure_ms: self.last_failure_ms,
        }
    }

    /// The record the store kept.
    pub fn from_row(row: crate::store::EndpointRow) -> Self {
        Self {
            network: NetworkId(row.network),
            address: row.address,
            peer: row.peer_id,
            successes: row.successes,
            failures: row.failures,
            last_success_ms: row.last_success_ms,
            last_failure_ms: row.last_failure_ms,
        }
    }

    /// Whether the last dial worked.
    pub fn works(&self) -> bool {
        self.last_success_ms.is_some() && self.failures == 0
    }

    /// When this record was last touched.
    fn last_used_ms(&self) -> u64 {
        self.last_success_ms.unwrap_or(0).max(self.last_failure_ms.unwrap_or(0))
    }

    /// Whether a failed endpoint may be raced again at `now_ms`.
    pub fn retry_due(&self, now_ms: u64) -> bool {
        self.works()
            || self.last_failure_ms.is_none_or(|at| {
                now_ms.saturating_sub(at) >= retry_after(self.failures).as_millis() as u64
            })
    }
}

/// What ranking says of one candidate address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its endpoint worked the last time it was dialed on this network.
    Works,
    /// Its endpoint was never dialed on this network.
    Unknown,
    /// Its endpoint failed the last time; `due` when its retry time has come.
    Failed {
        /// Whether it may be tried again now.
        due: bool,
    },
}

/// The endpoint records, keyed by network and endpoint.
#[derive(Default)]
pub(crate) struct Endpoints {
    records: HashMap<(NetworkId, Multiaddr), EndpointRecord>,
}

impl Endpoints {
    /// The book, from the records the store kept (at most [`MAX_ENDPOINTS`] are taken).
    pub(crate) fn new(records: Vec<EndpointRecord>) -> Self {
        let mut book = Self::default();
        for r in records.into_iter().take(MAX_ENDPOINTS) {
            book.records.insert((r.network, r.address.clone()), r);
        }
        book
    }

    /// Records the outcome of a dial of `address` (its endpoint) to `peer` on `network`, and
    /// returns the record as it is now, for the store.
    pub(crate) fn record(
        &mut self,
        network: NetworkId,
        peer: PeerId,
        address: &Multiaddr,
        success: bool,
        now_ms: u64,
    ) -> EndpointRecord {
        let endpoint = endpoint_of(address);
        let key = (network, endpoint.clone());
        if !self.records.contains_key(&key) && self.records.len() >= MAX_ENDPOINTS {
            let oldest =
                self.records.iter().min_by_key(|(_, r)| r.last_used_ms()).map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.records.remove(&oldest);
            }
        }
        let record = self.records.entry(key).or_insert_with(|| EndpointRecord {
            network,
            address: endpoint,
            peer,
            successes: 0,
            failures: 0,
            last_success_ms: None,
            last_failure_ms: None,
        });
        record.peer = peer;
        if success {
            record.successes = record.successes.saturating_add(1);
            record.failures = 0;
            record.last_success_ms = Some(now_ms);
        } else {
            record.failures = record.failures.saturating_add(1);
            record.last_failure_ms = Some(now_ms);
        }
        record.clone()
    }

    /// The record of `address`'s endpoint on `network`, if it was dialed there.
    pub(crate) fn get(&self, network: NetworkId, address: &Multiaddr) -> Option<&EndpointRecord> {
        self.records.get(&(network, endpoint_of(address)))
    }

    /// What ranking says of `address` on `network` at `now_ms`.
    pub(crate) fn verdict(&self, network: NetworkId, address: &Multiaddr, now_ms: u64) -> Verdict {
        match self.get(network, address) {
            None => Verdict::Unknown,
            Some(r) if r.works() => Verdict::Works,
            Some(r) if r.last_success_ms.is_none() && r.failures == 0 => Verdict::Unknown,
            Some(r) => Verdict::Failed { due: r.retry_due(now_ms) },
        }
    }

    /// Whether any endpoint of `kind` worked on `network` (`Some(true)`), only ever failed
    /// there (`Some(false)`), or was never dialed there (`None`).
    pub(crate) fn kind_works(&self, network: NetworkId, kind: TransportKind) -> Option<bool> {
        let mut seen = None;
        for r in self.records.values() {
            if r.network == network && TransportKind::of(&r.address) == kind {
                if r.works() {
                    return Some(true);
                }
                seen = Some(false);
            }
        }
        seen
    }

    /// `candidates` in the order to dial them on `network` at `now_ms`, with what ranking said
    /// of each; endpoints that failed recently are left out unless nothing else is left.
    /// Duplicates keep their first place.
    pub(crate) fn rank(
        &self,
        network: NetworkId,
        candidates: Vec<Multiaddr>,
        now_ms: u64,
    ) -> Vec<(Multiaddr, Verdict)> {
        let mut unique: Vec<Multiaddr> = Vec::with_capacity(candidates.len());
        for c in candidates {
            if !unique.contains(&c) {
                unique.push(c);
            }
        }
        let mut works = Vec::new();
        let mut unknown = Vec::new();
        let mut due = Vec::new();
        let mut recent = Vec::new();
        for (position, address) in unique.into_iter().enumerate() {
            let record = self.get(network, &address);
            match self.verdict(network, &address, now_ms) {
                Verdict::Works => {
                    let at = record.and_then(|r| r.last_success_ms).unwrap_or(0);
                    works.push((std::cmp::Reverse(at), position, address));
                }
                Verdict::Unknown => {
                    // Untried endpoints of a transport that works on this network go first,
                    // those of one that only ever failed here last.
                    let kind = TransportKind::of(&endpoint_of(&address));
                    let rank = match self.kind_works(network, kind) {
                        Some(true) => 0,
                        None => 1,
                        Some(false) => 2,
                    };
                    unknown.push((rank, position, address));
                }
                Verdict::Failed { due: true } => {
                    let at = record.and_then(|r| r.last_failure_ms).unwrap_or(0);
                    due.push((at, position, address));
                }
                Verdict::Failed { due: false } => {
                    let at = record.and_then(|r| r.last_failure_ms).unwrap_or(0);
                    recent.push((at, position, address));
                }
            }
        }
        works.sort();
        unknown.sort();
        due.sort();
        recent.sort();
        let mut out: Vec<(Multiaddr, Verdict)> = works
            .into_iter()
            .map(|(_, _, a)| (a, Verdict::Works))
            .chain(unknown.into_iter().map(|(_, _, a)| (a, Verdict::Unknown)))
            .chain(due.into_iter().map(|(_, _, a)| (a, Verdict::Failed { due: true })))
            .collect();
        if out.is_empty() {
            out = recent.into_iter().map(|(_, _, a)| (a, Verdict::Failed { due: false })).collect();
        }
        out
    }

    /// The records of `network`, newest first.
    pub(crate) fn on_network(&self, network: NetworkId) -> Vec<EndpointRecord> {
        let mut records: Vec<EndpointRecord> =
            self.records.values().filter(|r| r.network == network).cloned().collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.last_used_ms()));
        records
    }

    /// The endpoints that worked for `peer` on `network`, most recent first: where to look
    /// for a peer no one gave us an address of.
    pub(crate) fn working_addresses(&self, network: NetworkId, peer: &PeerId) -> Vec<Multiaddr> {
        let mut found: Vec<&EndpointRecord> = self
            .records
            .values()
            .filter(|r| r.network == network && r.peer == *peer && r.works())
            .collect();
        found.sort_by_key(|r| std::cmp::Reverse(r.last_success_ms));
        found.into_iter().map(|r| r.address.clone()).collect()
    }

    /// How many records are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests;
