//! The swarm task's Kademlia side: publishing our presence record (with room for it kept in
//! our own record store), checking records peers ask us to store, presence lookups,
//! closest-peer queries for mailboxes, the DHT mode, relay announcements, and who may enter the
//! routing table.
//!
//! Kademlia runs with manual bucket inserts: libp2p never adds a peer to the routing table by
//! itself, it reports peers it could add (`RoutablePeer`), and every insert goes through
//! [`EventLoop::add_to_routing_table`], which applies a diversity rule after
//! go-libp2p-kad-dht's: at most [`Diversity::per_bucket`] peers of one address group (an IPv4
//! /24 or an IPv6 /48) in one bucket, and [`Diversity::per_table`] in the whole table. Someone
//! who runs many identities from few addresses, to surround a key or a victim (a Sybil or
//! eclipse attack), then fills at most a few slots however many identities they make.

use std::net::IpAddr;
use std::time::Duration;

use kolokol_protocol::presence::PresenceRecord;
use libp2p::{Multiaddr, PeerId, kad};
use tokio::time::Instant;

use crate::config::{Diversity, Role};
use crate::swarm::admission::Ask;
use crate::swarm::admission::ip_of;
use crate::swarm::behaviour::{MAX_DHT_RECORD_BYTES, MAX_DHT_RECORDS};
use crate::swarm::event_loop::{
    DIVERSITY_LOG_INTERVAL, EventLoop, MAX_KNOWN_RELAYS, PRESENCE_RETRY, PRESENCE_RETRY_MAX,
    RELAY_DISCOVERY_INTERVAL,
};

/// Valid records from distinct peers a presence lookup waits for before it ends with the
/// newest (or until the query ends, when fewer peers hold one), unless one is fresh
/// ([`FRESH_RECORD`]).
pub const RECORD_ANSWERS: usize = 2;

/// A record signed at most this long ago ends a presence lookup at once. A node republishes
/// at least every 20 minutes (`presence::PRESENCE_REFRESH`), so such a record is its newest or
/// nearly; an older one may be stale (a replica that missed the newer ones, or a Sybil that
/// kept an old one), so the lookup waits for a second answer and keeps the newer.
pub const FRESH_RECORD: Duration = Duration::from_secs(20 * 60);
use crate::swarm::{Link, NetEvent, RELAYS_KEY, is_relayed, without_peer};

/// The group an address belongs to for the diversity rule: its IPv4 /24 or its IPv6 /48, as
/// go-libp2p-kad-dht groups them (it uses /16 for IPv4 by default; a /24 is what one cheap
/// server or home network gets, so it is the tighter choice). `None` for an address without an
/// IP (a DNS name resolved later, the memory transport), which no group limits.
pub(crate) fn address_group(addr: &Multiaddr) -> Option<[u8; 7]> {
    match ip_of(addr)? {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            Some([4, o[0], o[1], o[2], 0, 0, 0])
        }
        IpAddr::V6(ip) => {
            let o = ip.octets();
            Some([6, o[0], o[1], o[2], o[3], o[4], o[5]])
        }
    }
}

/// Whether the diversity rule lets a peer whose address is in `group` in, given the groups of
/// the peers already in its bucket and in the whole table.
pub(crate) fn diversity_allows(
    rule: &Diversity,
    group: [u8; 7],
    bucket: impl IntoIterator<Item = [u8; 7]>,
    table: impl IntoIterator<Item = [u8; 7]>,
) -> bool {
    bucket.into_iter().filter(|g| *g == group).count() < rule.per_bucket
        && table.into_iter().filter(|g| *g == group).count() < rule.per_table
}

/// Orders peers sorted by distance so that each address group's nearest comes first, keeping
/// the order otherwise: the replicas of a mailbox (the first few) are then spread over as many
/// groups as the closest peers allow, and whoever computes it from the same peers gets the same
/// answer.
pub(crate) fn spread_over_groups(peers: &mut Vec<(PeerId, Vec<Multiaddr>)>) {
    let mut seen = std::collections::HashSet::new();
    let (first, rest): (Vec<_>, Vec<_>) = std::mem::take(peers).into_iter().partition(|(_, a)| {
        match a.iter().find_map(address_group) {
            Some(group) => seen.insert(group),
            None => true,
        }
    });
    *peers = first;
    peers.extend(rest);
}

/// Whether the last publication of our presence record failed (`None`: none has ended yet). A
/// success after a failure is the sign that the DHT answers again.
pub(crate) fn publication_failed(last: &Option<Result<(), String>>) -> bool {
    matches!(last, Some(Err(_)))
}

/// The wait before publishing again after `failures` publications in a row that no DHT
/// server accepted: [`PRESENCE_RETRY`] after the first, doubling with each further one, at most
/// [`PRESENCE_RETRY_MAX`].
pub(crate) fn presence_retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    PRESENCE_RETRY.saturating_mul(1 << doublings).min(PRESENCE_RETRY_MAX)
}

/// The record to remove from our record store, holding `records` with room for `capacity`, so
/// that our own presence record, under `ours`, fits: `None` when the store has room or already
/// holds our key (the new record then replaces the old one in place).
///
/// Strangers' valid presence records fill the store (`on_put_record`), so a censor with enough
/// identities could otherwise keep our own record out of it, and libp2p's `put_record`, which
/// stores the record locally before sending it anywhere, would then publish nothing. The record
/// removed is the one that expires soonest, which the store would lose first anyway, so making
/// room costs its owner the least: one replica of a record it republishes before it expires. A
/// record without an expiry never leaves the store by itself, so it is removed only when every
/// other record lacks one too; none does in practice, since every record we store is given the
/// expiry its signature states. Ours is never chosen.
pub(crate) fn record_to_evict<R: std::borrow::Borrow<kad::Record>>(
    records: impl IntoIterator<Item = R>,
    ours: &kad::RecordKey,
    capacity: usize,
) -> Option<kad::RecordKey> {
    let mut held = 0usize;
    // Ranked by (no expiry, expiry): every record that expires comes before every one that
    // does not, and among those that expire the soonest comes first.
    let mut soonest: Option<((bool, Option<std::time::Instant>), kad::RecordKey)> = None;
    for record in records {
        let record = record.borrow();
        if record.key == *ours {
            return None;
        }
        held += 1;
        let rank = (record.expires.is_none(), record.expires);
        if soonest.as_ref().is_none_or(|(best, _)| rank < *best) {
            soonest = Some((rank, record.key.clone()));
        }
    }
    if held < capacity {
        return None;
    }
    soonest.map(|(_, key)| key)
}

impl EventLoop {
    /// Stores our presence record locally and starts its publication to the DHT servers
    /// closest to its key, first making room for it in a full record store.
    ///
    /// Room is made here, at publication, rather than by refusing strangers' records one short
    /// of [`MAX_DHT_RECORDS`] so that a slot always stays free for ours: the store keeps
    /// serving others at its full size, the guarantee sits in the one place that needs it, and
    /// it holds whatever else may come to occupy the store. Once our record is in the store it
    /// keeps its slot, since each publication replaces it in place, so room is made at most
    /// once per time the store lost it (a restart, a first address).
    pub(super) fn publish_presence(&mut self, record: Vec<u8>, ttl: Duration) {
        let key = kad::RecordKey::new(&kolokol_protocol::presence::record_key(
            self.swarm.local_peer_id(),
        ));
        let store = self.swarm.behaviour_mut().kad.store_mut();
        // Once our record is held the new one replaces it in place; only otherwise is the
        // store walked (libp2p's `RecordStore` does not say how many records it holds).
        let held = kad::store::RecordStore::get(store, &key).is_some();
        if !held
            && let Some(evicted) =
                record_to_evict(kad::store::RecordStore::records(store), &key, MAX_DHT_RECORDS)
        {
            tracing::debug!(
                evicted = %String::from_utf8_lossy(evicted.as_ref()),
                "the DHT record store is full: removed the record that expires soonest to make room for our own"
            );
            kad::store::RecordStore::remove(store, &evicted);
        }
        let len = record.len();
        let mut record = kad::Record::new(key, record);
        record.expires = Some(std::time::Instant::now() + ttl);
        let table = self.routing_table_size();
        match self.swarm.behaviour_mut().kad.put_record(record, kad::Quorum::One) {
            Ok(id) => self.presence_query = Some((id, table)),
            // A record too large for the store is too large at every retry, and for every DHT
            // server, which all have the same limit: retrying would only repeat the failure.
            // It cannot happen unless the record and the store disagree on the limit
            // (`MAX_PRESENCE_RECORD_LEN` is one byte under it), so it is said once per
            // publication, loudly, for someone to report.
            Err(kad::store::Error::ValueTooLarge) => {
                tracing::warn!(
                    bytes = len,
                    limit = MAX_DHT_RECORD_BYTES,
                    "cannot publish our presence record: it is larger than any DHT server stores, so it is not retried; this is a bug, please report it with the output of `kolokol status`"
                );
                self.presence = Some(Err(format!(
                    "it is {len} bytes, and the DHT stores values under {MAX_DHT_RECORD_BYTES} bytes (a bug: please report it)"
                )));
            }
            // libp2p's store has no other failure for a record once room is made, but one that
            // may pass must not leave the node unpublished until its next refresh: it is
            // retried as a publication that no server acknowledged is.
            Err(e) => {
                self.schedule_presence_retry();
                self.presence = Some(Err(format!("cannot store it locally: {e} (it is retried)")));
            }
        }
    }

    /// Counts one more publication that failed in a row and sets when the next is tried
    /// ([`presence_retry_delay`]); a success resets the count.
    fn schedule_presence_retry(&mut self) {
        self.presence_failures = self.presence_failures.saturating_add(1);
        self.presence_retry_at =
            Some(Instant::now() + presence_retry_delay(self.presence_failures));
    }

    /// Checks a record a peer asks us to store. Only presence records are stored, only if they
    /// verify and are not older than the one we hold.
    pub(super) fn on_put_record(&mut self, source: PeerId, mut record: kad::Record) {
        if let Err(refusal) = self.admission.admit(&source, Ask::DhtStore) {
            tracing::debug!(%source, %refusal, "refused a DHT record");
            return;
        }
        let now = self.clock.now_secs();
        let presence = match PresenceRecord::from_dht(record.key.as_ref(), &record.value, now) {
            Ok((presence, _)) => presence,
            Err(e) => {
                tracing::debug!(%source, %e, "refused a DHT record");
                return;
            }
        };
        let store = self.swarm.behaviour_mut().kad.store_mut();
        if let Some(held) = kad::store::RecordStore::get(store, &record.key)
            && let Ok((old, _)) = PresenceRecord::from_dht(held.key.as_ref(), &held.value, now)
            && !presence.supersedes(&old)
            && presence != old
        {
            tracing::debug!(%source, "refused an older presence record");
            return;
        }
        let ttl = Duration::from_secs(presence.body.expires_at.saturating_sub(now));
        record.expires = Some(std::time::Instant::now() + ttl);
        if let Err(e) = kad::store::RecordStore::put(store, record) {
            tracing::debug!(%source, %e, "cannot store a presence record");
        }
    }

    pub(super) fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request: kad::InboundRequest::PutRecord { source, record: Some(record), .. },
            } => self.on_put_record(source, record),
            // Only relay announcements are kept; they are hints, checked by identify when a
            // user dials the relay.
            kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { record: Some(record) },
            } if record.key.as_ref() == RELAYS_KEY.as_bytes()
                && self.admission.admit(&record.provider, Ask::DhtStore).is_ok() =>
            {
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let _ = kad::store::RecordStore::add_provider(store, record);
            }
            kad::Event::OutboundQueryProgressed { id, result, step, stats } => match result {
                kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                    let now = self.clock.now_secs();
                    let fresh_since =
                        self.clock.now_ms().saturating_sub(FRESH_RECORD.as_millis() as u64);
                    let mut enough = false;
                    if let Some(lookup) = self.lookups.get_mut(&id)
                        && let Ok((record, peer)) = PresenceRecord::from_dht(
                            found.record.key.as_ref(),
                            &found.record.value,
                            now,
                        )
                        && peer == lookup.peer
                        && (found.peer.is_some() || !lookup.remote_only)
                    {
                        // Valid answers from the network (not our own copy) are counted; the
                        // lookup keeps the newest and ends at a fresh one, or at the second, so
                        // one peer that serves an old record (a Sybil next to the key, a replica
                        // that missed the newest) cannot decide the answer alone. Waiting for
                        // every replica would buy little more freshness for much latency.
                        let remote = found.peer.is_some();
                        if remote {
                            lookup.answers += 1;
                        }
                        let fresh = remote && record.body.seq >= fresh_since;
                        if lookup.best.as_ref().is_none_or(|b| record.supersedes(b)) {
                            lookup.best = Some(record);
                        }
                        enough = fresh || lookup.answers >= RECORD_ANSWERS;
                    }
                    if step.last || enough {
                        self.finish_lookup(id, &stats);
                    }
                }
                kad::QueryResult::GetRecord(_) => self.finish_lookup(id, &stats),
                kad::QueryResult::GetClosestPeers(result) => {
                    let peers = match result {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    if let Some((key, reply)) = self.closest.remove(&id) {
                        let target = kad::KBucketKey::new(key);
                        let mut peers: Vec<(PeerId, Vec<Multiaddr>)> = peers
                            .into_iter()
                            .map(|p| {
                                let addresses = self.direct_addresses(&p.peer_id, p.addrs);
                                (p.peer_id, addresses)
                            })
                            .collect();
                        peers.sort_by_key(|(p, _)| kad::KBucketKey::from(*p).distance(&target));
                        spread_over_groups(&mut peers);
                        let _ = reply.send(peers);
                    }
                }
                kad::QueryResult::PutRecord(result)
                    if self.presence_query.is_some_and(|(q, _)| q == id) =>
                {
                    let after_failure = publication_failed(&self.presence);
                    self.presence = Some(match result {
                        Ok(_) => {
                            self.presence_failures = 0;
                            self.presence_routing_table =
                                self.presence_query.map(|(_, t)| t).unwrap_or(0);
                            if after_failure {
                                // The DHT takes our record again, so it can find our
                                // mailboxes again too: the fetches since the failure may
                                // have found none, and the next is up to a fetch interval
                                // away (a retry publishes only).
                                let _ = self.events.try_send(NetEvent::DhtBack);
                            }
                            Ok(())
                        }
                        Err(e) => {
                            self.schedule_presence_retry();
                            // libp2p's own wording ("the quorum failed; needed 1
                            // peers") says nothing to a user; a failed store has one cause
                            // they can act on: no other DHT server took it.
                            Err(match e {
                                kad::PutRecordError::QuorumFailed { .. } => "no other DHT server took it yet (it is retried; a lone relay has none to give it to)".to_owned(),
                                other => format!("no DHT server took it yet: {other}"),
                            })
                        }
                    });
                }
                kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) => {
                    let local = *self.swarm.local_peer_id();
                    if providers.iter().any(|p| *p != local && !self.relays.contains_key(p)) {
                        self.relay_discovery_wait = RELAY_DISCOVERY_INTERVAL;
                        self.next_relay_discovery = self
                            .next_relay_discovery
                            .min(Instant::now() + RELAY_DISCOVERY_INTERVAL);
                    }
                    for peer in providers {
                        if peer != local
                            && !self.relays.contains_key(&peer)
                            && self.relays.len() < MAX_KNOWN_RELAYS
                            && !self.swarm.is_connected(&peer)
                        {
                            tracing::debug!(relay = %peer, "found a relay in the DHT");
                            let _ = self.swarm.dial(peer);
                        }
                    }
                }
                _ => {}
            },
            // Manual bucket inserts: a peer libp2p would have added goes through our rule.
            kad::Event::RoutablePeer { peer, address }
            | kad::Event::PendingRoutablePeer { peer, address } => {
                self.add_to_routing_table(peer, address);
            }
            _ => {}
        }
    }

    /// Adds `peer` at `address` to the routing table if the diversity rule lets it in (a peer
    /// already there just gains the address); returns whether it is there now.
    pub(super) fn add_to_routing_table(&mut self, peer: PeerId, address: Multiaddr) -> bool {
        if !self.in_routing_table(&peer)
            && let Some(group) = address_group(&address)
            && !(self.diversity.exempt_loopback
                && ip_of(&address).is_some_and(|ip| ip.is_loopback()))
        {
            let groups = |addresses: &kad::Addresses| -> Option<[u8; 7]> {
                addresses.iter().find_map(address_group)
            };
            let kad = &mut self.swarm.behaviour_mut().kad;
            let bucket: Vec<[u8; 7]> = kad
                .kbucket(peer)
                .map(|b| b.iter().filter_map(|e| groups(e.node.value)).collect())
                .unwrap_or_default();
            let table: Vec<[u8; 7]> = kad
                .kbuckets()
                .flat_map(|b| b.iter().filter_map(|e| groups(e.node.value)).collect::<Vec<_>>())
                .collect();
            if !diversity_allows(&self.diversity, group, bucket, table) {
                if let Some(not_logged_before) = self.diversity_log.allow(DIVERSITY_LOG_INTERVAL) {
                    tracing::info!(%peer, %address, not_logged_before, "kept a peer out of the routing table: too many from its address range (diversity rule); further ones are not logged for a minute");
                }
                return false;
            }
        }
        !matches!(
            self.swarm.behaviour_mut().kad.add_address(&peer, address),
            kad::RoutingUpdate::Failed
        )
    }

    /// Ends a presence lookup with the best record found so far, and counts what Kademlia did
    /// for it up to now (`stats`, the query's own counts) in [`LookupStats`].
    pub(super) fn finish_lookup(&mut self, id: kad::QueryId, stats: &kad::QueryStats) {
        if let Some(lookup) = self.lookups.remove(&id) {
            let counts = &mut self.lookup_stats;
            if lookup.best.is_some() {
                counts.found += 1;
            } else {
                counts.not_found += 1;
            }
            counts.requests += u64::from(stats.num_requests());
            counts.successes += u64::from(stats.num_successes());
            let _ = lookup.reply.send(lookup.best);
        }
        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            query.finish();
        }
    }

    /// A user node is a DHT server only while it has a direct external address; a relay always,
    /// except a bridge, which never is: a DHT server is in other peers' routing tables, which
    /// hand out its address to anyone who asks, and a bridge's address is for its users alone.
    pub(super) fn update_kad_mode(&mut self) {
        let public = self.swarm.external_addresses().any(|a| !is_relayed(a));
        let mode = if self.bridge {
            kad::Mode::Client
        } else if self.role == Role::Relay || public {
            kad::Mode::Server
        } else {
            kad::Mode::Client
        };
        if self.swarm.behaviour_mut().kad.mode() != mode {
            tracing::info!(?mode, "DHT mode changed");
            self.swarm.behaviour_mut().kad.set_mode(Some(mode));
        }
        if self.role == Role::Relay
            && !self.bridge
            && !self.providing
            && self.swarm.external_addresses().next().is_some()
        {
            self.announce_relay();
        }
    }

    /// Announces this relay under [`RELAYS_KEY`] (again), remembering the routing-table size.
    /// A bridge never does.
    pub(super) fn announce_relay(&mut self) {
        if self.bridge {
            return;
        }
        let table = self.routing_table_size();
        let key = kad::RecordKey::new(&RELAYS_KEY);
        if self.swarm.behaviour_mut().kad.start_providing(key).is_ok() {
            self.providing = true;
            self.providing_routing_table = table;
        }
    }

    /// The distinct peers among the bootstrap addresses.
    pub(super) fn bootstrap_peers(&self) -> std::collections::HashSet<PeerId> {
        self.bootstrap.iter().map(|b| b.peer).collect()
    }

    pub(super) fn routing_table_size(&mut self) -> usize {
        self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum()
    }

    /// The direct addresses a courier, which shares none of the node's state, dials to reach
    /// `peer`: the addresses of the direct connections we dialed to it when there are any (they
    /// work on this network now, and dialing the peer's other addresses would show a censor
    /// flows the node itself does not make); otherwise `given` (what a lookup returned, often
    /// nothing for a peer already in the routing table), the routing table's, and those that
    /// worked before.
    pub(super) fn direct_addresses(
        &mut self,
        peer: &PeerId,
        given: Vec<Multiaddr>,
    ) -> Vec<Multiaddr> {
        let connected: Vec<Multiaddr> = self
            .connections
            .values()
            .filter(|c| c.peer == *peer && c.via == Link::Direct && c.dialed)
            .map(|c| c.address.clone())
            .collect();
        let all = if connected.is_empty() {
            let mut all = given;
            if let Some(bucket) = self.swarm.behaviour_mut().kad.kbucket(*peer) {
                for entry in bucket.iter().filter(|e| e.node.key.preimage() == peer) {
                    all.extend(entry.node.value.iter().cloned());
                }
            }
            all.extend(self.known_addresses(peer));
            all
        } else {
            connected
        };
        let mut unique: Vec<Multiaddr> = Vec::with_capacity(all.len());
        for address in all.iter().filter(|a| !is_relayed(a)).map(without_peer) {
            if !unique.contains(&address) {
                unique.push(address);
            }
        }
        unique
    }

    /// Whether Kademlia's routing table holds `peer`, which it does only for DHT servers.
    pub(super) fn in_routing_table(&mut self, peer: &PeerId) -> bool {
        self.swarm
            .behaviour_mut()
            .kad
            .kbucket(*peer)
            .is_some_and(|bucket| bucket.iter().any(|e| e.node.key.preimage() == peer))
    }
}

#[cfg(test)]
mod tests;
