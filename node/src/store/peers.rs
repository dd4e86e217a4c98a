//! The `peers` table: the peer cache, every peer reached or imported, the first bootstrap source.

use rusqlite::{OptionalExtension, params};

use super::{CachedStatements, Store};
use crate::error::Result;

/// Peers remembered in the peer cache; past this, the ones heard from longest ago are dropped.
pub const MAX_CACHED_PEERS: usize = 512;

/// Addresses remembered per cached peer.
pub const MAX_CACHED_ADDRESSES: usize = 8;

/// A peer in the peer cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPeer {
    /// Peer id, base58.
    pub peer_id: String,
    /// Dialable addresses, multiaddr text without `/p2p/`.
    pub addresses: Vec<String>,
    /// Whether it served as (or advertised) a relay.
    pub relay: bool,
    /// Where we learned of it: `connection`, `bundle`.
    pub source: String,
    /// When last seen or imported, Unix ms.
    pub last_seen_ms: u64,
    /// When we last had a working connection to it, Unix ms.
    pub last_success_ms: Option<u64>,
}

impl Store {
    /// Records a working connection to `peer_id` at `address` (merged into its known addresses,
    /// newest first), then trims the cache to [`MAX_CACHED_PEERS`].
    pub fn peer_seen(&self, peer_id: &str, address: &str, relay: bool, now_ms: u64) -> Result<()> {
        self.upsert_peer(peer_id, &[address.to_owned()], relay, "connection", now_ms, true)
    }

    /// Adds peers from an imported bundle, without claiming a successful contact.
    pub fn peer_imported(
        &self,
        peer_id: &str,
        addresses: &[String],
        relay: bool,
        now_ms: u64,
    ) -> Result<()> {
        self.upsert_peer(peer_id, addresses, relay, "bundle", now_ms, false)
    }

    fn upsert_peer(
        &self,
        peer_id: &str,
        addresses: &[String],
        relay: bool,
        source: &str,
        now_ms: u64,
        success: bool,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let old: Option<(String, bool, String)> = tx
            .row("SELECT addresses, relay, source FROM peers WHERE peer_id = ?1", [peer_id], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?))
            })
            .optional()
            .map_err(|e| self.err(e))?;
        let mut merged: Vec<String> = addresses.to_vec();
        let mut old_source = None;
        let mut was_relay = false;
        if let Some((old_addresses, old_relay, src)) = old {
            merged.extend(
                old_addresses.lines().map(str::to_owned).filter(|a| !addresses.contains(a)),
            );
            was_relay = old_relay;
            old_source = Some(src);
        }
        merged.truncate(MAX_CACHED_ADDRESSES);
        let source = if success {
            source.to_owned()
        } else {
            old_source.unwrap_or_else(|| source.to_owned())
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
                let addresses: String = r.get(1)?;
                Ok(CachedPeer {
                    peer_id: r.get(0)?,
                    addresses: addresses.lines().map(str::to_owned).collect(),
                    relay: r.get::<_, i64>(2)? != 0,
                    source: r.get(3)?,
                    last_seen_ms: r.get::<_, i64>(4)? as u64,
                    last_success_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }
}
