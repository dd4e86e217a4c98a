//! The `endpoints` table: what the racing dialer learned of each address it dialed, per
//! network (`swarm/endpoints.rs` decides what the records mean).

use libp2p::{Multiaddr, PeerId};
use rusqlite::params;

use super::{CachedStatements, Store, peer_column, peer_text};
use crate::error::Result;

/// Endpoint records kept; past this the one used longest ago is deleted. The swarm task holds
/// the same number in memory.
pub const MAX_ENDPOINT_ROWS: usize = 1024;

/// One endpoint on one network, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRow {
    /// The network's identity.
    pub network: [u8; 8],
    /// The endpoint, without `/p2p/`.
    pub address: Multiaddr,
    /// The peer last reached or sought there.
    pub peer_id: PeerId,
    /// Dials that succeeded.
    pub successes: u32,
    /// Dials that failed since the last success.
    pub failures: u32,
    /// Last success, Unix ms.
    pub last_success_ms: Option<u64>,
    /// Last failure, Unix ms.
    pub last_failure_ms: Option<u64>,
}

/// An `endpoints` row as read, before its columns are checked: network, address, peer,
/// successes, failures, last success and last failure.
type RawEndpoint = (Vec<u8>, String, rusqlite::Result<PeerId>, u32, u32, Option<i64>, Option<i64>);

impl Store {
    /// Writes one endpoint record (replacing the one of the same network and address), then
    /// trims the table to [`MAX_ENDPOINT_ROWS`].
    pub fn save_endpoint(&self, row: &EndpointRow) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.exec(
            "INSERT INTO endpoints (network, address, peer_id, successes, failures,
                                    last_success_ms, last_failure_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (network, address) DO UPDATE SET
                peer_id = excluded.peer_id, successes = excluded.successes,
                failures = excluded.failures, last_success_ms = excluded.last_success_ms,
                last_failure_ms = excluded.last_failure_ms",
            params![
                row.network.as_slice(),
                row.address.to_string(),
                peer_text(&row.peer_id),
                row.successes,
                row.failures,
                row.last_success_ms.map(|v| v as i64),
                row.last_failure_ms.map(|v| v as i64),
            ],
        )
        .map_err(|e| self.err(e))?;
        // Most writes update a row that exists: the table is only sorted and cut when it has
        // grown past its bound (a sort of every row on every write cost a group's writer a
        // tenth of its CPU).
        let rows: i64 = tx
            .query_row("SELECT COUNT(*) FROM endpoints", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if rows <= MAX_ENDPOINT_ROWS as i64 {
            return tx.commit().map_err(|e| self.err(e));
        }
        tx.exec(
            "DELETE FROM endpoints WHERE rowid NOT IN (
                SELECT rowid FROM endpoints
                ORDER BY MAX(COALESCE(last_success_ms, 0), COALESCE(last_failure_ms, 0)) DESC
                LIMIT ?1)",
            [MAX_ENDPOINT_ROWS as i64],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every endpoint record, most recently used first; rows that cannot be read (nothing this
    /// version writes) are skipped.
    pub fn endpoints(&self) -> Result<Vec<EndpointRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT network, address, peer_id, successes, failures, last_success_ms,
                        last_failure_ms
                 FROM endpoints
                 ORDER BY MAX(COALESCE(last_success_ms, 0), COALESCE(last_failure_ms, 0)) DESC
                 LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([MAX_ENDPOINT_ROWS as i64], |r| {
                let network: Vec<u8> = r.get(0)?;
                let address: String = r.get(1)?;
                Ok((
                    network,
                    address,
                    peer_column(r, 2),
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (network, address, peer, successes, failures, success, failure): RawEndpoint =
                row.map_err(|e| self.err(e))?;
            let (Ok(network), Ok(address), Ok(peer_id)) =
                (<[u8; 8]>::try_from(network), address.parse::<Multiaddr>(), peer)
            else {
                continue;
            };
            out.push(EndpointRow {
                network,
                address,
                peer_id,
                successes,
                failures,
                last_success_ms: success.map(|v| v as u64),
                last_failure_ms: failure.map(|v| v as u64),
            });
        }
        Ok(out)
    }
}
