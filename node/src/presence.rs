//! Presence: our signed record in the DHT (where we are reachable, our prekeys), and what we
//! learn of others' from theirs (fresh addresses after a failed delivery, a prekey before a
//! first contact).
//!
//! Our direct addresses and circuits through listed relays are public (those relays announce
//! themselves in the DHT anyway, and group members who are not our contacts reach us through
//! them); circuits through bridges and through our contacts' nodes (which relay for their
//! contacts, `swarm::relay_server`) and our hybrid prekey go into the record's part for
//! contacts, sealed to our mailbox address, so a censor crawling the DHT harvests no bridge and
//! learns no contact of ours while our contacts still follow us from relay to relay. A contact's record is opened with
//! the mailbox address its invite or first contact gave us.
//!
//! Lookups are rate-limited per peer ([`RESOLVE_INTERVAL`]) and what we learn of strangers is
//! held in a bounded map; contacts' addresses go into the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kolokol_protocol::mailbox_key::MailboxAddress;
use kolokol_protocol::presence::{ForContacts, PresenceRecord};
use libp2p::{Multiaddr, PeerId};
use rand::RngCore as _;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::conversations::{Conversations, PeerPrekeys};
use crate::error::Result;
use crate::keys::Keys;
use crate::store::Store;
use crate::swarm::{self, NetStatus};
use crate::workers::Workers;

/// How long a presence record is valid; it is republished every [`PRESENCE_REFRESH`], so a
/// node that goes away stops being advertised within this time.
pub const PRESENCE_TTL: Duration = Duration::from_secs(60 * 60);

/// How often, at the longest, the presence record is republished even if nothing changed.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(20 * 60);

/// How much sooner than [`PRESENCE_REFRESH`] a periodic republication may come. Each period is
/// drawn anew between the two, so nodes that started together (a relay's users after it
/// restarted, a region's devices when its network came back) do not republish together for
/// ever after: with a fixed period every node keeps the phase of its start, and a herd that
/// started in one minute walks the DHT in one minute every 20.
pub const PRESENCE_REFRESH_SPREAD: Duration = Duration::from_secs(5 * 60);

/// The wait before the next periodic republication, from a uniformly random `random`: between
/// `PRESENCE_REFRESH - PRESENCE_REFRESH_SPREAD` and `PRESENCE_REFRESH`, never longer, so a
/// running node's newest record is never older than `PRESENCE_REFRESH` (what a lookup's
/// `FRESH_RECORD` counts on).
pub(crate) fn refresh_period(random: u64) -> Duration {
    let spread = PRESENCE_REFRESH_SPREAD.as_millis() as u64;
    PRESENCE_REFRESH - Duration::from_millis(random % (spread + 1))
}

/// How long one presence lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// A peer's presence is looked up at most this often after a failed delivery.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// Peers whose lookup times (and, for non-contacts, resolved addresses) are remembered; the
/// maps are cleared when they reach it.
pub const MAX_TRACKED_LOOKUPS: usize = 1024;

/// How long a sender waits for a presence lookup that may bring the recipient's prekey
/// before it seals the first contact to the device key instead.
pub const PREKEY_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// A cloneable handle to presence publishing and lookups.
#[derive(Clone)]
pub(crate) struct Presence(Arc<Inner>);

struct Inner {
    swarm: swarm::Client,
    /// Whether this node is a bridge, which publishes no record.
    bridge: bool,
    store: Store,
    keys: Keys,
    workers: Workers,
    clock: Clock,
    /// When each peer's presence was last looked up, to rate-limit lookups, and the prekeys
    /// that lookup found: a first contact sealed within the interval uses them (a lookup made
    /// to refresh addresses after a failed delivery may be what found a current one).
    resolved_at: Mutex<HashMap<PeerId, (Instant, PeerPrekeys)>>,
    /// Addresses resolved for peers who are not contacts (contacts' go into the store).
    stranger_addresses: Mutex<HashMap<PeerId, Vec<Multiaddr>>>,
}

impl Presence {
    pub(crate) fn new(
        swarm: swarm::Client,
        bridge: bool,
        store: Store,
        keys: Keys,
        workers: Workers,
        clock: Clock,
    ) -> Self {
        Self(Arc::new(Inner {
            swarm,
            bridge,
            store,
            keys,
            workers,
            clock,
            resolved_at: Default::default(),
            stranger_addresses: Default::default(),
        }))
    }

    /// Signs and publishes a presence record with the current addresses (nothing to publish
    /// while there are none).
    pub(crate) async fn publish(&self) -> Result<()> {
        let net = self.0.swarm.status().await?;
        // A bridge publishes nothing: a presence record is readable by anyone who asks the
        // DHT, and a bridge's address is for the users it was given to.
        if self.0.bridge {
            return Ok(());
        }
        let (public, circuits) = split_private(reachable_addresses(&net), &private_relays(&net));
        if public.is_empty() && circuits.is_empty() {
            return Ok(());
        }
        let now = self.0.clock.now_secs();
        let seq = self.0.clock.now_ms();
        let keys = self.0.keys.clone();
        let public: Vec<Vec<u8>> = public.iter().map(|a| a.to_vec()).collect();
        let part = ForContacts {
            addresses: circuits.iter().map(|a| a.to_vec()).collect(),
            hybrid_prekey: self.0.keys.hybrid_prekey()?,
        };
        let prekey = self.0.store.newest_prekey()?;
        let mut nonce = [0u8; kolokol_protocol::presence::FOR_CONTACTS_NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let record = self
            .0
            .workers
            .run(move || {
                let certificate = keys.certificate();
                let sealed =
                    part.seal(&keys.mailbox_address(), &certificate.identity_key, seq, nonce)?;
                PresenceRecord::sign(
                    keys.identity(),
                    &certificate,
                    public,
                    seq,
                    now + PRESENCE_TTL.as_secs(),
                    prekey,
                    sealed,
                )
                .and_then(|r| r.to_bytes())
            })
            .await??;
        self.0.swarm.publish_presence(record, PRESENCE_TTL).await
    }

    /// Looks up a peer's presence record in the DHT; `None` if nobody has a valid one. With
    /// `remote_only`, our own copy does not count (the doctor asks whether others find us).
    pub(crate) async fn lookup(
        &self,
        peer: PeerId,
        remote_only: bool,
    ) -> Result<Option<PresenceRecord>> {
        self.0.swarm.resolve(peer, remote_only, RESOLVE_TIMEOUT).await
    }

    /// Refreshes a peer's addresses from its presence record, at most once per
    /// [`RESOLVE_INTERVAL`]; returns true if it found addresses we did not have.
    pub(crate) async fn refresh_addresses(
        &self,
        peer: &PeerId,
        conversations: &Conversations,
    ) -> bool {
        self.refresh(peer, conversations.peer_mailbox(peer), RESOLVE_TIMEOUT).await.0
    }

    /// The peer's prekeys from its presence record, looked up only when the next envelope to it
    /// would be a first contact without a valid one, at most once per [`RESOLVE_INTERVAL`].
    /// For a format 3 peer the wait is at most [`PREKEY_LOOKUP_TIMEOUT`]: its first contact is
    /// sealed to the device key rather than wait longer. A format 4 peer whose hybrid prekey
    /// expired has no such fallback (its first contact waits for a current prekey), so the
    /// lookup gets the whole [`RESOLVE_TIMEOUT`]. The lookup also refreshes the addresses.
    pub(crate) async fn prekey_for_first_contact(
        &self,
        peer: &PeerId,
        conversations: &Conversations,
    ) -> PeerPrekeys {
        let stale = conversations.stale_prekey(peer).is_some();
        if !stale && !conversations.wants_prekey(peer) {
            return PeerPrekeys::default();
        }
        let timeout = if stale { RESOLVE_TIMEOUT } else { PREKEY_LOOKUP_TIMEOUT };
        self.refresh(peer, conversations.peer_mailbox(peer), timeout).await.1
    }

    /// Looks the peer's presence record up (at most once per [`RESOLVE_INTERVAL`], waiting at
    /// most `timeout`), merges its addresses into what we know, and returns whether they were
    /// new, with the record's prekeys. With the peer's `mailbox` address, the record's part for
    /// contacts is opened too: its circuits and its hybrid prekey.
    async fn refresh(
        &self,
        peer: &PeerId,
        mailbox: Option<MailboxAddress>,
        timeout: Duration,
    ) -> (bool, PeerPrekeys) {
        {
            let mut last = self.0.resolved_at.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if let Some((at, prekeys)) = last.get(peer)
                && now.duration_since(*at) < RESOLVE_INTERVAL
            {
                return (false, prekeys.clone());
            }
            if last.len() >= MAX_TRACKED_LOOKUPS {
                last.clear();
            }
            last.insert(*peer, (now, PeerPrekeys::default()));
        }
        let record = match tokio::time::timeout(timeout, self.lookup(*peer, false)).await {
            Ok(Ok(Some(record))) => record,
            Ok(_) => return (false, PeerPrekeys::default()),
            Err(_) => {
                // A lookup cut short by a caller in a hurry (the prekey's 3 s) did not answer
                // the question, so it must not hold back a patient one.
                self.0.resolved_at.lock().unwrap_or_else(|p| p.into_inner()).remove(peer);
                return (false, PeerPrekeys::default());
            }
        };
        let part = match mailbox.map(|m| record.open_for_contacts(&m, self.0.clock.now_secs())) {
            Some(Ok(part)) => part,
            Some(Err(e)) => {
                // A contact's record we cannot open: the mailbox address we hold is not the
                // one it was sealed to (an old invite of someone who started afresh), or the part
                // is broken; its public part still counts.
                tracing::debug!(%peer, %e, "cannot open a contact's presence part for contacts");
                None
            }
            None => None,
        };
        let (circuits, hybrid) = match part {
            Some(p) => (p.addresses, p.hybrid_prekey),
            None => (Vec::new(), None),
        };
        // Direct addresses first, as the record lists them, then the circuits.
        let found: Vec<Multiaddr> = record
            .body
            .addresses
            .iter()
            .chain(circuits.iter())
            .filter_map(|b| Multiaddr::try_from(b.clone()).ok())
            .collect();
        let known = self.known_addresses(peer);
        let new = found.iter().any(|a| !known.contains(a));
        let mut merged = found.clone();
        merged.extend(known.into_iter().filter(|a| !found.contains(a)));
        merged.truncate(kolokol_protocol::invite::MAX_INVITE_ADDRESSES);
        if let Ok(Some(_)) = self.0.store.contact_name(peer) {
            if let Err(e) = self.0.store.set_contact_addresses(peer, &merged) {
                tracing::error!(%e, "cannot update a contact's addresses");
            }
        } else {
            let mut others = self.0.stranger_addresses.lock().unwrap_or_else(|p| p.into_inner());
            if others.len() >= MAX_TRACKED_LOOKUPS {
                others.clear();
            }
            others.insert(*peer, merged);
        }
        let prekeys = PeerPrekeys { signed: record.body.prekey, hybrid };
        if let Some(entry) =
            self.0.resolved_at.lock().unwrap_or_else(|p| p.into_inner()).get_mut(peer)
        {
            entry.1 = prekeys.clone();
        }
        (new, prekeys)
    }

    /// Remembers addresses for a peer who is not a contact (from an invite code that added
    /// them to a group), until a lookup finds fresher ones.
    pub(crate) fn remember(&self, peer: &PeerId, addresses: Vec<Multiaddr>) {
        if addresses.is_empty() {
            return;
        }
        let mut others = self.0.stranger_addresses.lock().unwrap_or_else(|p| p.into_inner());
        if others.len() >= MAX_TRACKED_LOOKUPS {
            others.clear();
        }
        others.insert(*peer, addresses);
    }

    /// The addresses we know for a peer: a contact's stored ones, else those last resolved.
    pub(crate) fn known_addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        match self.0.store.contact_by_peer(peer) {
            Ok(Some(c)) => c.addresses,
            _ => self
                .0
                .stranger_addresses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(peer)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// The addresses this node is reachable at: confirmed direct external addresses first, then
/// relay circuits (a direct connection costs no relay and no extra hop, so a sender tries it
/// before a circuit), within the limits of invites and presence records. These go to
/// contacts (invites); circuits through bridges among them must not go anywhere else.
pub(crate) fn reachable_addresses(net: &NetStatus) -> Vec<Multiaddr> {
    let mut addresses: Vec<Multiaddr> =
        net.external.iter().filter(|a| !swarm::is_relayed(a)).cloned().collect();
    addresses.extend(net.reservations.iter().map(|(_, c)| swarm::without_peer(c)));
    addresses.retain(|a| a.len() <= kolokol_protocol::invite::MAX_ADDRESS_LEN);
    addresses.truncate(kolokol_protocol::invite::MAX_INVITE_ADDRESSES);
    addresses
}

/// The relays whose circuits only contacts may read: bridges, and contacts' nodes that relay
/// for their contacts (naming one in public would tell everyone who our contacts are).
pub(crate) fn private_relays(net: &NetStatus) -> Vec<PeerId> {
    net.bridges.iter().chain(&net.contact_relays).copied().collect()
}

/// Splits `addresses` into those anyone may read in the presence record and the circuits
/// through `bridges` (bridges and contacts' nodes), which only contacts may read (its part for contacts; `docs/PROTOCOL.md`
/// sections 10.1.1 and 10.9).
pub(crate) fn split_private(
    addresses: Vec<Multiaddr>,
    bridges: &[libp2p::PeerId],
) -> (Vec<Multiaddr>, Vec<Multiaddr>) {
    addresses.into_iter().partition(|a| {
        let relay = a
            .iter()
            .take_while(|p| *p != libp2p::multiaddr::Protocol::P2pCircuit)
            .filter_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
                _ => None,
            })
            .last();
        !(swarm::is_relayed(a) && relay.is_some_and(|r| bridges.contains(&r)))
    })
}

#[cfg(test)]
mod tests;
