//! The swarm task's local network: peers mDNS finds, and the LAN addresses a delivery tries
//! first.

use libp2p::mdns;

use crate::swarm::dialer::Reach;
use crate::swarm::event_loop::EventLoop;
use crate::swarm::without_peer;

/// Peers found on the local network by mDNS that the node remembers at once. libp2p's own list
/// has no bound, and anyone on the LAN can announce as many peer ids as they like; past this,
/// a newly announced peer is neither remembered nor dialed.
pub const MAX_LAN_PEERS: usize = 64;

/// Addresses remembered per peer found on the local network; a host has few interfaces.
pub const MAX_LAN_ADDRESSES: usize = 8;

impl EventLoop {
    /// Peers found or gone on the local network.
    ///
    /// A found peer's addresses go to the swarm, so that dialing its peer id (a delivery, a
    /// mailbox request) tries them, and the peer is dialed once as a bootstrap source. Kademlia
    /// gets them only for a peer already in its routing table; any other peer is fed to it, as
    /// every peer is, by identify once connected, and only if it serves the DHT: a DHT client
    /// on the LAN would only fail every query sent to it.
    pub(super) fn on_mdns(&mut self, event: mdns::Event) {
        match event {
            mdns::Event::Discovered(found) => {
                let mut new_peers = Vec::new();
                for (peer, addr) in found {
                    let addr = without_peer(&addr);
                    if !self.lan.contains_key(&peer) {
                        if self.lan.len() >= MAX_LAN_PEERS {
                            tracing::debug!(%peer, "too many peers on the local network; ignoring one");
                            continue;
                        }
                        new_peers.push(peer);
                    }
                    let known = self.lan.entry(peer).or_default();
                    if known.contains(&addr) || known.len() >= MAX_LAN_ADDRESSES {
                        continue;
                    }
                    known.push(addr.clone());
                    tracing::info!(%peer, address = %addr, "found a peer on the local network (mDNS)");
                    self.swarm.add_peer_address(peer, addr.clone());
                    if self.in_routing_table(&peer) {
                        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    }
                }
                for peer in new_peers {
                    if let Reach::Unreachable(why) = self.reach(peer, Vec::new()) {
                        tracing::debug!(%peer, %why, "cannot dial a peer found on the local network");
                    }
                }
            }
            mdns::Event::Expired(gone) => {
                for (peer, addr) in gone {
                    let addr = without_peer(&addr);
                    if let Some(known) = self.lan.get_mut(&peer) {
                        known.retain(|a| *a != addr);
                        if known.is_empty() {
                            self.lan.remove(&peer);
                            tracing::debug!(%peer, "a peer on the local network expired (mDNS)");
                        }
                    }
                }
            }
        }
    }
}
