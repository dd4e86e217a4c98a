//! Where a node finds the network: the bootstrap addresses it dials at start (DESIGN.md §8's
//! order: peer cache, configured addresses, relays named in contacts' invites), the peer cache
//! as `kolokol peers` shows it, and signed bootstrap bundles to hand to others and to import.
//! Bootstrap answers are hints, never trust: peers are authenticated by their keys.

use kolokol_protocol::bundle::{
    Bundle, BundlePeer, MAX_BUNDLE_ADDRESS_LEN, MAX_BUNDLE_ADDRESSES, MAX_BUNDLE_PEERS,
};
use kolokol_protocol::codec;
use kolokol_protocol::control;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::Result;
use crate::keys::Keys;
use crate::store::{MAX_CACHED_PEERS, Store};
use crate::swarm;
use crate::workers::Workers;

/// Peers from the peer cache dialed at start.
pub const MAX_BOOTSTRAP_FROM_CACHE: usize = 16;

/// Every bootstrap address, in the order of DESIGN.md §8: the peer cache (relays and recent
/// successes first), then the configured addresses, then the relays named in contacts' invite
/// addresses. Imported bundles feed the peer cache. Each address appears once, but a peer may
/// appear with several: a relay that moved is given with its new address by `--bootstrap`
/// while the cache still holds the old one, and only dialing both finds it. The swarm does
/// not redial a peer it is connected to, whichever address got it there.
pub(crate) fn sources(store: &Store, config: &Config) -> Result<Vec<Multiaddr>> {
    let mut out: Vec<Multiaddr> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut push = |addr: Multiaddr, out: &mut Vec<Multiaddr>| {
        if crate::config::peer_id_of(&addr).is_ok() && seen.insert(addr.clone()) {
            out.push(addr);
        }
    };
    for p in store.cached_peers(MAX_BOOTSTRAP_FROM_CACHE)? {
        if let Some(addr) = p.addresses.first() {
            push(addr.clone().with(Protocol::P2p(p.peer_id)), &mut out);
        }
    }
    for addr in &config.bootstrap {
        push(addr.clone(), &mut out);
    }
    for contact in store.contacts()? {
        for relay in contact.addresses.iter().filter_map(relay_of) {
            push(relay, &mut out);
        }
    }
    Ok(out)
}

/// The relay a circuit address goes through: the part before `/p2p-circuit`, if there is one.
pub(crate) fn relay_of(addr: &Multiaddr) -> Option<Multiaddr> {
    let relay: Multiaddr = addr.iter().take_while(|p| *p != Protocol::P2pCircuit).collect();
    (relay != *addr).then_some(relay)
}

/// The peer cache and bundles, as the control API sees them.
#[derive(Clone)]
pub(crate) struct PeerBook {
    pub(crate) swarm: swarm::Client,
    pub(crate) store: Store,
    pub(crate) keys: Keys,
    pub(crate) workers: Workers,
    pub(crate) clock: Clock,
}

impl PeerBook {
    /// Connected, cached and local-network peers.
    pub(crate) async fn peers(&self) -> Result<control::PeersInfo> {
        let connected = self.swarm.peers().await?;
        let net = self.swarm.status().await?;
        Ok(control::PeersInfo {
            connected: connected
                .into_iter()
                .map(|c| control::ConnectedPeerInfo {
                    peer_id: c.peer.to_string(),
                    via: c.via.as_str().into(),
                    // A dialed address may end in the peer's id and an accepted one not; the
                    // peer id is its own field, so every address is shown without it.
                    address: swarm::without_peer(&c.address).to_string(),
                })
                .collect(),
            cached: self
                .store
                .cached_peers(MAX_CACHED_PEERS)?
                .into_iter()
                .map(|p| control::CachedPeerInfo {
                    peer_id: p.peer_id.to_string(),
                    addresses: p.addresses.iter().map(ToString::to_string).collect(),
                    relay: p.relay,
                    source: p.source.as_str().into(),
                    last_seen_ms: p.last_seen_ms,
                    last_success_ms: p.last_success_ms,
                })
                .collect(),
            mdns: net.mdns,
            lan: net
                .lan
                .into_iter()
                .map(|(peer, addresses)| control::LanPeerInfo {
                    peer_id: peer.to_string(),
                    addresses: addresses.iter().map(ToString::to_string).collect(),
                    source: "mdns".into(),
                })
                .collect(),
        })
    }

    /// A signed bootstrap bundle of the peers this node has reached, relays first. Peers are
    /// dropped from the end until the encoded bundle fits [`codec::MAX_DECODE_LEN`], so every
    /// bundle exported can be imported.
    pub(crate) fn export(&self) -> Result<control::BundleInfo> {
        let mut peers: Vec<BundlePeer> = self
            .store
            .cached_peers(MAX_BUNDLE_PEERS)?
            .into_iter()
            .filter(|p| p.last_success_ms.is_some())
            .filter_map(|p| {
                let addresses: Vec<Vec<u8>> = p
                    .addresses
                    .iter()
                    .map(|a| a.to_vec())
                    .filter(|a| a.len() <= MAX_BUNDLE_ADDRESS_LEN)
                    .take(MAX_BUNDLE_ADDRESSES)
                    .collect();
                (!addresses.is_empty()).then(|| BundlePeer {
                    peer_id: p.peer_id.to_bytes(),
                    addresses,
                    relay: p.relay,
                })
            })
            .collect();
        let now = self.clock.now_secs();
        let bundle = loop {
            let bundle = Bundle::sign(self.keys.identity(), peers.clone(), now)?;
            if peers.is_empty() || codec::encode(&bundle)?.len() <= codec::MAX_DECODE_LEN {
                break bundle;
            }
            peers.pop();
        };
        Ok(control::BundleInfo { bundle: bundle.to_text()?, peers: bundle.body.peers.len() })
    }

    /// Makes the relays named in a new contact's addresses bootstrap peers now, as they will be
    /// at the next start (the third source of [`sources`]): a node that learned its relay from
    /// an invite alone then counts it as such, and keeps redialling it.
    pub(crate) async fn learn_relays(&self, addresses: &[Multiaddr]) {
        for relay in addresses.iter().filter_map(relay_of) {
            if crate::config::peer_id_of(&relay).is_ok() {
                self.swarm.add_bootstrap(relay).await;
            }
        }
    }

    /// Imports a bootstrap bundle: verifies it, caches its peers and dials them. Peers without
    /// a readable address are skipped and not counted.
    pub(crate) async fn import(&self, text: &str) -> Result<control::ImportResult> {
        // Base58 decoding takes time quadratic in the length (about a second for the largest
        // bundle), so it runs on a worker rather than on the async threads.
        let text = text.to_owned();
        let (bundle, exporter) =
            self.workers.run_blocking(move || Bundle::from_text(&text)).await??;
        let now = self.clock.now_ms();
        let own = self.keys.peer_id();
        let mut imported = 0;
        for p in &bundle.body.peers {
            let Ok(peer) = PeerId::from_bytes(&p.peer_id) else { continue };
            if peer == own {
                continue;
            }
            let addresses: Vec<Multiaddr> =
                p.addresses.iter().filter_map(|b| Multiaddr::try_from(b.clone()).ok()).collect();
            if addresses.is_empty() {
                continue;
            }
            self.store.peer_imported(&peer, &addresses, p.relay, now)?;
            for address in addresses {
                self.swarm.add_bootstrap(address.with(Protocol::P2p(peer))).await;
            }
            imported += 1;
        }
        Ok(control::ImportResult { imported, exporter: exporter.to_string() })
    }
}

#[cfg(test)]
mod tests;
