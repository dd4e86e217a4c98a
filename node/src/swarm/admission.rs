//! The swarm task's admission control: what any one peer, address or all strangers together may
//! ask of the node per window, decided before anything costly (opening an envelope, a store
//! write) happens. Every limit is a [`Quota`] with a window, so a flood delays others for at
//! most one window; a contact is never limited by strangers' traffic: its envelopes skip the
//! stranger quotas and wait in a queue of their own.
//!
//! libp2p enforces the rest of the limits (connections in total and per peer, streams per
//! connection, relay reservations and circuits, DHT record sizes); they are in
//! `swarm::behaviour` and `docs/ROBUSTNESS.md` lists them all.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::watch;

use crate::quota::{Meter, Quota, Refusal};

const MINUTE: Duration = Duration::from_secs(60);

/// Envelopes one peer that is not a contact may deliver per window (`/kolokol/msg/1`).
pub const DELIVERIES_PER_STRANGER: Quota = Quota::new(120, MINUTE);

/// Envelopes all peers that are not contacts may deliver together per window: however many
/// identities a flood uses, the openers spend at most this on strangers, and contacts have a
/// queue of their own.
pub const STRANGER_DELIVERIES: Quota = Quota::new(1200, MINUTE);

/// Envelopes from one peer that did not open, or said something out of bounds, per window;
/// past this the peer's envelopes are refused before they are opened, until the window ends.
pub const JUNK_PER_PEER: Quota = Quota::new(16, Duration::from_secs(10 * 60));

/// Mailbox requests one peer may make of this node per window: a backlog of a thousand
/// messages deposited at once passes; a peer that sends requests as fast as it can is held to
/// about 80 a second, which the replica's store keeps up with.
pub const MAILBOX_REQUESTS_PER_PEER: Quota = Quota::new(5000, MINUTE);

/// DHT records and provider announcements one peer may ask this node to store per window
/// (each is still verified before it is stored).
pub const DHT_STORES_PER_PEER: Quota = Quota::new(64, Duration::from_secs(10 * 60));

/// New inbound connections from one IP address per window: connection churn from one host
/// costs it a wait, not us a Noise handshake a millisecond.
pub const INBOUND_CONNECTIONS_PER_IP: Quota = Quota::new(120, MINUTE);

/// Established inbound connections from one IP address at once. Loopback is exempt from this and
/// from [`INBOUND_CONNECTIONS_PER_IP`]: a relay behind a local reverse proxy sees every user
/// arrive from 127.0.0.1.
pub const MAX_CONNECTIONS_PER_IP: usize = 64;

/// Peers and addresses metered at once per quota; past this a new one waits for the oldest
/// window to end.
pub const MAX_METERED: usize = 4096;

/// Envelopes from contacts waiting for an opener, in a queue strangers cannot fill.
pub const CONTACT_INBOUND_QUEUE_LEN: usize = 256;

/// What a request is, for the quota that applies to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// An envelope over `/kolokol/msg/1`.
    Delivery,
    /// A request over `/kolokol/mailbox/1`.
    Mailbox,
    /// A DHT record or provider record to store.
    DhtStore,
}

/// The swarm task's quotas, and the contacts they never apply to.
pub(crate) struct Admission {
    contacts: watch::Receiver<Arc<HashSet<PeerId>>>,
    deliveries: Meter<PeerId>,
    stranger_deliveries: Meter<()>,
    junk: Meter<PeerId>,
    mailbox: Meter<PeerId>,
    dht: Meter<PeerId>,
    connections_per_ip: Meter<IpAddr>,
    /// Established inbound connections per IP address (loopback not counted).
    established: HashMap<IpAddr, usize>,
    /// Connections refused here and being closed, so their close is not counted twice; each
    /// leaves when its close arrives.
    refused: HashSet<libp2p::swarm::ConnectionId>,
}

impl Admission {
    pub(crate) fn new(contacts: watch::Receiver<Arc<HashSet<PeerId>>>) -> Self {
        Self {
            contacts,
            deliveries: Meter::new("deliveries per stranger", DELIVERIES_PER_STRANGER, MAX_METERED),
            stranger_deliveries: Meter::new(
                "deliveries from all strangers",
                STRANGER_DELIVERIES,
                1,
            ),
            junk: Meter::new("envelopes that did not open", JUNK_PER_PEER, MAX_METERED),
            mailbox: Meter::new(
                "mailbox requests per peer",
                MAILBOX_REQUESTS_PER_PEER,
                MAX_METERED,
            ),
            dht: Meter::new("DHT stores per peer", DHT_STORES_PER_PEER, MAX_METERED),
            connections_per_ip: Meter::new(
                "inbound connections per IP address",
                INBOUND_CONNECTIONS_PER_IP,
                MAX_METERED,
            ),
            established: HashMap::new(),
            refused: HashSet::new(),
        }
    }

    /// Whether `peer` is one of the user's contacts.
    pub(crate) fn is_contact(&self, peer: &PeerId) -> bool {
        self.contacts.borrow().contains(peer)
    }

    /// Counts one request of `peer`, or says why it is refused.
    pub(crate) fn admit(&mut self, peer: &PeerId, ask: Ask) -> Result<(), Refusal> {
        match ask {
            Ask::Delivery => {
                if self.is_contact(peer) {
                    return Ok(());
                }
                if !self.junk.allows(peer, 1) {
                    // Counting it again logs it (once per window) and says when to come back.
                    return self.junk.take(peer);
                }
                self.deliveries.take(peer)?;
                self.stranger_deliveries.take(&()).inspect_err(|_| self.deliveries.give_back(peer))
            }
            Ask::Mailbox => self.mailbox.take(peer),
            Ask::DhtStore => self.dht.take(peer),
        }
    }

    /// Records that an envelope from `peer` was refused for good (it did not open).
    pub(crate) fn junk(&mut self, peer: &PeerId) {
        if !self.is_contact(peer) {
            let _ = self.junk.take(peer);
        }
    }

    /// Whether a new inbound connection from `endpoint` may stay; counts it if so. Relayed and
    /// loopback connections are not limited per address.
    pub(crate) fn connection_opened(
        &mut self,
        id: libp2p::swarm::ConnectionId,
        endpoint: &ConnectedPoint,
    ) -> Result<(), Refusal> {
        let Some(ip) = limited_ip(endpoint) else { return Ok(()) };
        let open = self.established.get(&ip).copied().unwrap_or(0);
        let admitted = if open >= MAX_CONNECTIONS_PER_IP {
            Err(Refusal {
                name: "established connections per IP address",
                quota: Quota::new(MAX_CONNECTIONS_PER_IP as u32, Duration::ZERO),
                retry_after: Duration::ZERO,
            })
        } else {
            self.connections_per_ip.take(&ip)
        };
        match admitted {
            Ok(()) => *self.established.entry(ip).or_default() += 1,
            Err(_) => {
                self.refused.insert(id);
            }
        }
        admitted
    }

    /// A connection closed: it no longer counts against its address.
    pub(crate) fn connection_closed(
        &mut self,
        id: libp2p::swarm::ConnectionId,
        endpoint: &ConnectedPoint,
    ) {
        if self.refused.remove(&id) {
            return;
        }
        let Some(ip) = limited_ip(endpoint) else { return };
        if let Some(open) = self.established.get_mut(&ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.established.remove(&ip);
            }
        }
    }
}

/// The remote IP address of an inbound, direct, non-loopback connection: the ones limited per
/// address.
fn limited_ip(endpoint: &ConnectedPoint) -> Option<IpAddr> {
    let ConnectedPoint::Listener { send_back_addr, .. } = endpoint else { return None };
    if endpoint.is_relayed() {
        return None;
    }
    ip_of(send_back_addr).filter(|ip| !ip.is_loopback())
}

/// The first IP address in a multiaddr.
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
