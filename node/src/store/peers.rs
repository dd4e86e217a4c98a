//! The `peers` table: the peer cache, every peer reached or imported, the first bootstrap source.

use libp2p::{Multiaddr, PeerId};
use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, Store, addresses_column, peer_column, peer_text};
use crate::error::Result;

/// Peers remembered in the peer cache; past this, the ones heard from longest ago are dropped.
pub const MAX_CACHED_PEERS: usize = 512;

/// Addresses remembered per cached peer.
pub const MAX_CACHED_ADDRESSES: usize = 8;

/// A peer in the peer cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPeer {
    /// The peer.
    pub peer_id: PeerId,
    /// Dialable addresses, without `/p2p/`.
    pub addresses: Vec<Multiaddr>,
    /// Whether it served as (or advertised) a relay.
    pub relay: bool,
    /// Where we learned of it.
    pub source: PeerSource,
    /// When last seen or imported, Unix ms.
    pub last_seen_ms: u64,
    /// When we last had a working connection to it, Unix ms.
    pub last_success_ms: Option<u64>,
}

/// Where the peer cache learned of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerSource {
    /// We dialed it and it answered.
    Connection,
    /// An imported bootstrap bundle named it.
    Bundle,
}

impl PeerSource {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerSource::Connection => "connection",
            PeerSource::Bundle => "bundle",
        }
    }
}

impl Store {
    /// Records a working connection to `peer` at `address` (merged into its known addresses,
    /// newest first), then trims the cache to [`MAX_CACHED_PEERS`].
    pub fn peer_seen(
        &self,
        peer: &PeerId,
        address: &Multiaddr,
        relay: bool,
        now_ms: u64,
    ) -> Result<()> {
        let address = [address.to_string()];
        self.upsert_peer(peer, &address, relay, PeerSource::Connection, now_ms, true)
    }

    /// Adds peers from an imported bundle, without claiming a successful contact.
    pub fn peer_imported(
        &self,
        peer: &PeerId,
        addresses: &[Multiaddr],
        relay: bool,
        now_ms: u64,
    ) -> Result<()> {
        let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        self.upsert_peer(peer, &addresses, relay, PeerSource::Bundle, now_ms, false)
    }

    fn upsert_peer(
        &self,
        peer: &PeerId,
        addresses: &[String],
        relay: bool,
        source: PeerSource,
        now_ms: u64,
        success: bool,
    ) -> Result<()> {
        let peer_id = peer_text(peer);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let old: Option<(String, bool, String)> = tx
            .row("SELECT addresses, relay, source FROM peers WHERE peer_id = ?1", [&peer_id], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let mut merged: Vec<String> = addresses.to_vec();
        let mut old_source = None;
        let mut was_relay = false;
        let was_known = old.is_some();
        if let Some((old_addresses, old_relay, src)) = old {
            merged.extend(
                old_addresses.lines().map(str::to_owned).filter(|a| !addresses.contains(a)),
            );
            was_relay = old_relay;
            old_source = Some(src);
        }
        merged.truncate(MAX_CACHED_ADDRESSES);
        let source = match old_source {
            Some(old) if !success => old,
            _ => source.as_str().to_owned(),
        };
        tx.exec(
            "INSERT INTO peers (peer_id, addresses, relay, source, last_seen_ms, last_success_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (peer_id) DO UPDATE SET
                addresses = excluded.addresses, relay = excluded.relay, source = excluded.source,
                last_seen_ms = excluded.last_seen_ms,
                last_success_ms = COALESCE(excluded.last_success_ms, peers.last_success_ms)",
            params![
                peer_id,
                merged.join("\n"),
                relay || was_relay,
                source,
                now_ms as i64,
                success.then_some(now_ms as i64)
            ],
        )
        .map_err(|e| self.err(e))?;
        // Only a new peer can push the cache past its bound, and only then is it sorted and
        // cut: this runs for every peer the node dials and identifies (each DHT peer a lookup
        // reaches), and sorting the whole cache each time was about a twentieth of the CPU of
        // a node filling its routing table (the scale simulation's profile, docs/BENCHMARKS.md).
        if was_known {
            return tx.commit().map_err(|e| self.err(e));
        }
        let rows: i64 =
            tx.row("SELECT COUNT(*) FROM peers", [], |r| r.get(0)).map_err(|e| self.err(e))?;
        if rows <= MAX_CACHED_PEERS as i64 {
            return tx.commit().map_err(|e| self.err(e));
        }
        // An imported peer was never reached, but it counts as recent at its import time:
        // ordering by success alone would evict every import the moment the cache is full.
        tx.exec(
            "DELETE FROM peers WHERE peer_id NOT IN (
                SELECT peer_id FROM peers
                ORDER BY COALESCE(last_success_ms, last_seen_ms) DESC, last_seen_ms DESC LIMIT ?1)",
            [MAX_CACHED_PEERS as i64],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Cached peers, relays first, then most recently successful first, at most `limit`.
    pub fn cached_peers(&self, limit: usize) -> Result<Vec<CachedPeer>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT peer_id, addresses, relay, source, last_seen_ms, last_success_ms FROM peers
                 ORDER BY relay DESC, COALESCE(last_success_ms, 0) DESC, last_seen_ms DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                let source: String = r.get(3)?;
                Ok(CachedPeer {
                    peer_id: peer_column(r, 0)?,
                    addresses: addresses_column(r, 1)?,
                    relay: r.get::<_, i64>(2)? != 0,
                    source: if source == PeerSource::Bundle.as_str() {
                        PeerSource::Bundle
                    } else {
                        PeerSource::Connection
                    },
                    last_seen_ms: r.get::<_, i64>(4)? as u64,
                    last_success_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }
}
