//! The swarm task's Kademlia side: checking records peers ask us to store, presence lookups,
//! closest-peer queries for mailboxes, the DHT mode, and relay announcements.

use std::time::Duration;

use kolokol_protocol::presence::PresenceRecord;
use libp2p::{Multiaddr, PeerId, kad};
use tokio::time::Instant;

use crate::config::Role;
use crate::swarm::event_loop::{
    EventLoop, MAX_KNOWN_RELAYS, PRESENCE_RETRY, RELAY_DISCOVERY_INTERVAL,
};
use crate::swarm::{RELAYS_KEY, is_relayed};

impl EventLoop {
    /// Checks a record a peer asks us to store. Only presence records are stored, only if they
    /// verify and are not older than the one we hold.
    pub(super) fn on_put_record(&mut self, source: PeerId, mut record: kad::Record) {
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
            } if record.key.as_ref() == RELAYS_KEY.as_bytes() => {
                let store = self.swarm.behaviour_mut().kad.store_mut();
                let _ = kad::store::RecordStore::add_provider(store, record);
            }
            kad::Event::OutboundQueryProgressed { id, result, step, .. } => match result {
                kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                    let now = self.clock.now_secs();
                    let mut found_valid = false;
                    if let Some(lookup) = self.lookups.get_mut(&id)
                        && let Ok((record, peer)) = PresenceRecord::from_dht(
                            found.record.key.as_ref(),
                            &found.record.value,
                            now,
                        )
                        && peer == lookup.peer
                        && (found.peer.is_some() || !lookup.remote_only)
                        && lookup.best.as_ref().is_none_or(|b| record.supersedes(b))
                    {
                        lookup.best = Some(record);
                        // A record found on the network (not our own copy) is an answer; a
                        // node republishes every few minutes, so waiting for every replica
                        // to answer buys little freshness for much latency.
                        found_valid = found.peer.is_some();
                    }
                    if step.last || found_valid {
                        self.finish_lookup(id);
                    }
                }
                kad::QueryResult::GetRecord(_) => self.finish_lookup(id),
                kad::QueryResult::GetClosestPeers(result) => {
                    let peers = match result {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                    if let Some((key, reply)) = self.closest.remove(&id) {
                        let target = kad::KBucketKey::new(key);
                        let mut peers: Vec<(PeerId, Vec<Multiaddr>)> =
                            peers.into_iter().map(|p| (p.peer_id, p.addrs)).collect();
                        peers.sort_by_key(|(p, _)| kad::KBucketKey::from(*p).distance(&target));
                        let _ = reply.send(peers);
                    }
                }
                kad::QueryResult::PutRecord(result)
                    if self.presence_query.is_some_and(|(q, _)| q == id) =>
                {
                    self.presence = Some(match result {
                        Ok(_) => {
                            self.presence_routing_table =
                                self.presence_query.map(|(_, t)| t).unwrap_or(0);
                            Ok(())
                        }
                        Err(e) => {
                            self.presence_retry_at = Some(Instant::now() + PRESENCE_RETRY);
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
            _ => {}
        }
    }

    pub(super) fn finish_lookup(&mut self, id: kad::QueryId) {
        if let Some(lookup) = self.lookups.remove(&id) {
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

    /// Whether Kademlia's routing table holds `peer`, which it does only for DHT servers.
    pub(super) fn in_routing_table(&mut self, peer: &PeerId) -> bool {
        self.swarm
            .behaviour_mut()
            .kad
            .kbucket(*peer)
            .is_some_and(|bucket| bucket.iter().any(|e| e.node.key.preimage() == peer))
    }
}
