//! Store-and-forward mailboxes on DHT servers, for recipients who are offline: deposits
//! ([`deposit`]), fetching our own ([`fetch`]) and serving others' as a replica ([`replica`]).
//!
//! Flow: when direct delivery fails, the sender asks the DHT for the [`REPLICAS`] servers closest
//! to the recipient's mailbox id for the current period and sends each a `Deposit` of the sealed
//! envelope; the message is `stored` once [`REQUIRED_ACKS`] of them (all of them, when fewer
//! exist) answer `Stored`. The mailbox id is version 2 (from the recipient's mailbox address,
//! over `/kolokol/mailbox/2`) when the sender knows that address, and version 1 (from its
//! identity key) otherwise. The recipient, on start, when its reservations come up and every
//! [`FETCH_INTERVAL`], sends `Fetch` with an ownership proof to the servers closest to its
//! mailbox ids of both versions for the current and previous period, opens each envelope
//! through the same path as direct delivery, and then sends `Delete` with a proof. Replicas keep items in SQLite until
//! deleted or expired ([`MAX_ITEM_TTL`]), within [`QUOTAS`]; a full mailbox refuses new deposits
//! and never evicts stored ones. The bytes on the wire are in `crate::wire::mailbox`, the wire
//! types and the proof in `kolokol_protocol::mailbox`.

pub mod deposit;
pub mod fetch;
pub mod handover;
pub mod replica;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kolokol_protocol::mailbox::{MailboxId, Response};
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::keys::Keys;
use crate::presence::{MAX_TRACKED_LOOKUPS, RESOLVE_TIMEOUT};
use crate::quota::{Meter, Quota};
use crate::store::{MailboxQuotas, Store};
use crate::swarm::courier::Courier;
use crate::swarm::{self, MailboxFailure};
use crate::wire::mailbox::MailboxRequest;

/// How many replicas each deposit goes to: the DHT servers closest to the mailbox id.
pub const REPLICAS: usize = 3;

/// Acks that make a message `stored` when [`REPLICAS`] servers exist; with fewer, every one
/// must ack. Two of three survives one replica leaving before the recipient fetches.
pub const REQUIRED_ACKS: usize = 2;

/// Longest a replica keeps an item, whatever the depositor asks: the outbox gives up after
/// the same time.
pub const MAX_ITEM_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How often a node fetches its mailboxes even when nothing prompted it.
pub const FETCH_INTERVAL: Duration = Duration::from_secs(60);

/// How often a replica drops expired items.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Rounds of fetch-then-delete against one replica in one pass: each round takes at most
/// `kolokol_protocol::mailbox::MAX_FETCH_ITEMS` items, so a pass takes at most this many
/// batches, and the next pass continues.
pub const MAX_FETCH_ROUNDS: usize = 64;

/// Items in one mailbox. A user offline for the whole TTL with many contacts must not lose
/// mail, yet one mailbox must not take a replica's disk: 8192 items of at most 64 KiB.
pub const MAX_ITEMS_PER_MAILBOX: u64 = 8192;

/// Envelope bytes in one mailbox (64 MiB).
pub const MAX_BYTES_PER_MAILBOX: u64 = 64 * 1024 * 1024;

/// Items one depositor may hold in one mailbox, so one sender cannot fill a mailbox and lock
/// the others out.
pub const MAX_ITEMS_PER_DEPOSITOR: u64 = 2048;

/// Envelope bytes a replica holds for all mailboxes together (1 GiB).
pub const MAX_STORED_BYTES: u64 = 1024 * 1024 * 1024;

/// The quotas a replica enforces.
pub const QUOTAS: MailboxQuotas = MailboxQuotas {
    items_per_mailbox: MAX_ITEMS_PER_MAILBOX,
    bytes_per_mailbox: MAX_BYTES_PER_MAILBOX,
    items_per_depositor: MAX_ITEMS_PER_DEPOSITOR,
    total_bytes: MAX_STORED_BYTES,
};

/// The window of a replica's deposit quotas.
pub const DEPOSIT_WINDOW: Duration = Duration::from_secs(60 * 60);

/// Deposits one peer may make on this replica, into all mailboxes together, per
/// [`DEPOSIT_WINDOW`]: twice what one depositor may hold in one mailbox, so a backlog of a
/// thousand messages to an offline recipient goes in at once; past it, the deposit is answered
/// `QuotaExceeded` and the sender's outbox tries again.
pub const DEPOSITS_PER_DEPOSITOR: Quota = Quota::new(4096, DEPOSIT_WINDOW);

/// Deposits into one mailbox from all depositors together, per [`DEPOSIT_WINDOW`], half of
/// [`MAX_ITEMS_PER_MAILBOX`]: peer ids cost nothing, so this, not the per-depositor quota, is
/// what bounds how fast a crowd of throwaway identities can fill a mailbox (two windows at
/// least). What they fill stays at most until the mailbox id turns over (a day,
/// `MAILBOX_PERIOD_SECS`), when depositors move to a fresh mailbox.
pub const DEPOSITS_PER_MAILBOX: Quota = Quota::new(4096, DEPOSIT_WINDOW);

/// Deposits from one address range (an IPv4 /24 or IPv6 /48), from all peers there together,
/// into all mailboxes, per [`DEPOSIT_WINDOW`]. Depositors use a fresh peer id per batch
/// (couriers), so the per-depositor quota no longer tells senders apart; an address range
/// does, roughly. Four times [`DEPOSITS_PER_DEPOSITOR`], since a NAT puts many users behind one.
pub const DEPOSITS_PER_SOURCE: Quota = Quota::new(16_384, DEPOSIT_WINDOW);

/// Items another replica may hand this one per [`DEPOSIT_WINDOW`] (`Request::Handover`): a
/// replica that leaves the closest set of a full mailbox hands over at most 8192 items, twice
/// that passes.
pub const HANDOVER_ITEMS_PER_REPLICA: Quota = Quota::new(16_384, DEPOSIT_WINDOW);

/// Depositors and mailboxes a replica meters at once; past this, a new one waits for the
/// oldest window to end.
pub const MAX_METERED: usize = 8192;

/// How long the replicas found for a mailbox id are reused before the DHT is asked again; a
/// backlog of messages to one offline recipient then costs one lookup, not one per message.
pub const REPLICA_CACHE_TTL: Duration = Duration::from_secs(30);

/// Couriers (swarms under fresh identities, for version 2 requests) running at once; a deposit
/// or fetch past this waits for one to finish.
pub const MAX_COURIERS: usize = 64;

/// How long a courier that deposited into one mailbox carries the next deposits into the same
/// mailbox: a backlog to one offline recipient then costs one courier (one key pair, one
/// connection and handshake per replica), not one per message. The replicas see those
/// deposits come from one throwaway peer id, which tells them no more than the address and
/// the timing they come with; deposits into different mailboxes never share a courier.
pub const DEPOSIT_COURIER_REUSE: Duration = Duration::from_secs(10);

/// Mailboxes a depositing courier is kept for at once, at most; past this, a deposit into
/// another mailbox starts a courier of its own that is not kept.
pub const MAX_DEPOSIT_COURIERS: usize = 16;

/// A mailbox replica: a DHT server and its addresses.
pub(crate) type Replica = (PeerId, Vec<Multiaddr>);

/// A cloneable handle to the node's mailbox work: finding replicas and talking to them.
#[derive(Clone)]
pub(crate) struct Mailboxes(Arc<Inner>);

struct Inner {
    swarm: swarm::Client,
    store: Store,
    keys: Keys,
    clock: Clock,
    /// Replicas found per mailbox id, and when; at most [`MAX_TRACKED_LOOKUPS`] ids, cleared
    /// when full.
    replicas: Mutex<HashMap<MailboxId, (Instant, Vec<Replica>)>>,
    /// Deposits counted per depositor and per mailbox, as a replica.
    deposits: Mutex<DepositMeters>,
    /// How far each handover got, per mailbox and replica handed to (a store position); at
    /// most `handover::MAX_TRACKED_HANDOVERS`.
    handed: Mutex<HashMap<(MailboxId, PeerId), i64>>,
    /// Counts changes to the items held as a replica, so a test (or a status page) can wait for
    /// one instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    /// Permits for couriers, [`MAX_COURIERS`] in all.
    couriers: Arc<tokio::sync::Semaphore>,
    /// The courier depositing into each mailbox, kept for [`DEPOSIT_COURIER_REUSE`] after it
    /// started, with its permit; at most [`MAX_DEPOSIT_COURIERS`].
    depositing: Mutex<HashMap<MailboxId, KeptCourier>>,
    /// Held by whoever fetches our own mailboxes (the fetch loop, the doctor's probe), so two
    /// fetches never race for the same items: the doctor's probe, deposited and fetched back
    /// under it, is never taken by a background pass in between.
    fetching: tokio::sync::Mutex<()>,
}

/// A courier kept for the deposits into one mailbox, with the permit it runs under.
pub(crate) struct KeptCourier {
    courier: Courier,
    started: Instant,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// A replica's deposit quotas, per depositor and per mailbox.
struct DepositMeters {
    per_depositor: Meter<PeerId>,
    per_source: Meter<[u8; 7]>,
    per_mailbox: Meter<MailboxId>,
    handovers: Meter<PeerId>,
}

impl DepositMeters {
    fn new(per_depositor: Quota, per_mailbox: Quota) -> Self {
        Self::with_source(per_depositor, DEPOSITS_PER_SOURCE, per_mailbox)
    }

    fn with_source(per_depositor: Quota, per_source: Quota, per_mailbox: Quota) -> Self {
        Self {
            per_depositor: Meter::new("deposits per depositor", per_depositor, MAX_METERED),
            per_source: Meter::new("deposits from one address range", per_source, MAX_METERED),
            per_mailbox: Meter::new("deposits into one mailbox", per_mailbox, MAX_METERED),
            handovers: Meter::new(
                "items handed over per replica",
                HANDOVER_ITEMS_PER_REPLICA,
                MAX_METERED,
            ),
        }
    }
}

impl Default for DepositMeters {
    fn default() -> Self {
        Self::new(DEPOSITS_PER_DEPOSITOR, DEPOSITS_PER_MAILBOX)
    }
}

impl Mailboxes {
    pub(crate) fn new(swarm: swarm::Client, store: Store, keys: Keys, clock: Clock) -> Self {
        Self(Arc::new(Inner {
            swarm,
            store,
            keys,
            clock,
            replicas: Default::default(),
            deposits: Default::default(),
            handed: Default::default(),
            changes: tokio::sync::watch::channel(0).0,
            couriers: Arc::new(tokio::sync::Semaphore::new(MAX_COURIERS)),
            depositing: Default::default(),
            fetching: tokio::sync::Mutex::new(()),
        }))
    }

    /// Replaces the deposit quotas, so a test can reach them with a few deposits instead of
    /// thousands; the code that counts and refuses is the same.
    #[cfg(test)]
    pub(crate) fn set_deposit_quotas(&self, per_depositor: Quota, per_mailbox: Quota) {
        *self.0.deposits.lock().unwrap_or_else(|p| p.into_inner()) =
            DepositMeters::new(per_depositor, per_mailbox);
    }

    /// Replaces the deposit quotas, the per-address-range one included.
    #[cfg(test)]
    pub(crate) fn set_deposit_quotas_by_source(
        &self,
        per_depositor: Quota,
        per_source: Quota,
        per_mailbox: Quota,
    ) {
        *self.0.deposits.lock().unwrap_or_else(|p| p.into_inner()) =
            DepositMeters::with_source(per_depositor, per_source, per_mailbox);
    }

    /// The DHT servers closest to a mailbox id, nearest first, at most [`REPLICAS`]; from the
    /// cache if `cached` and fresh enough.
    pub(crate) async fn replicas(&self, mailbox_id: &MailboxId, cached: bool) -> Vec<Replica> {
        if cached
            && let Some((at, replicas)) =
                self.0.replicas.lock().unwrap_or_else(|p| p.into_inner()).get(mailbox_id)
            && at.elapsed() < REPLICA_CACHE_TTL
        {
            return replicas.clone();
        }
        let mut replicas = self.0.swarm.closest_peers(mailbox_id.to_vec(), RESOLVE_TIMEOUT).await;
        replicas.truncate(REPLICAS);
        if !replicas.is_empty() {
            let mut cache = self.0.replicas.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_TRACKED_LOOKUPS {
                cache.clear();
            }
            cache.insert(*mailbox_id, (Instant::now(), replicas.clone()));
        }
        replicas
    }

    /// Changes to the items this node holds as a replica: the value moves on every deposit,
    /// handover, delete and purge.
    pub(crate) fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changes.subscribe()
    }

    /// How many items this node holds for a mailbox as a replica.
    pub(crate) fn held(&self, mailbox_id: &MailboxId) -> crate::error::Result<u64> {
        self.0.store.mailbox_count(mailbox_id)
    }

    /// Forgets the replicas found for a mailbox id, so the next use asks the DHT again.
    pub(crate) fn forget_replicas(&self, mailbox_id: &MailboxId) {
        self.0.replicas.lock().unwrap_or_else(|p| p.into_inner()).remove(mailbox_id);
    }

    /// Starts a courier for one deposit batch or one fetch pass, once fewer than
    /// [`MAX_COURIERS`] run; it holds its permit until dropped.
    pub(crate) async fn courier(
        &self,
    ) -> crate::error::Result<(Courier, tokio::sync::OwnedSemaphorePermit)> {
        let permit = self
            .0
            .couriers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| crate::error::Error::ShuttingDown)?;
        Ok((self.0.swarm.courier()?, permit))
    }

    /// The courier for deposits into `mailbox_id`: the one that deposited there less than
    /// [`DEPOSIT_COURIER_REUSE`] ago, or a new one, kept for the next deposits if fewer than
    /// [`MAX_DEPOSIT_COURIERS`] are. A kept courier is let go once its time is up, so its
    /// task, connections and permit end then.
    pub(crate) async fn deposit_courier(
        &self,
        mailbox_id: &MailboxId,
    ) -> crate::error::Result<(Courier, Option<tokio::sync::OwnedSemaphorePermit>)> {
        {
            let mut kept = self.0.depositing.lock().unwrap_or_else(|p| p.into_inner());
            kept.retain(|_, k| k.started.elapsed() < DEPOSIT_COURIER_REUSE);
            if let Some(k) = kept.get(mailbox_id) {
                return Ok((k.courier.clone(), None));
            }
        }
        let (courier, permit) = self.courier().await?;
        let mut kept = self.0.depositing.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= MAX_DEPOSIT_COURIERS || kept.contains_key(mailbox_id) {
            return Ok((courier, Some(permit)));
        }
        let k = KeptCourier { courier: courier.clone(), started: Instant::now(), _permit: permit };
        kept.insert(*mailbox_id, k);
        drop(kept);
        // Nothing else may come to take it out: a timer lets it go. It holds the mailboxes
        // weakly, so a node that stops meanwhile closes its store at once.
        let this = Arc::downgrade(&self.0);
        let mailbox_id = *mailbox_id;
        tokio::spawn(async move {
            tokio::time::sleep(DEPOSIT_COURIER_REUSE).await;
            let Some(this) = this.upgrade() else { return };
            let mut kept = this.depositing.lock().unwrap_or_else(|p| p.into_inner());
            if kept.get(&mailbox_id).is_some_and(|k| k.started.elapsed() >= DEPOSIT_COURIER_REUSE) {
                kept.remove(&mailbox_id);
            }
        });
        Ok((courier, None))
    }

    /// Sends one request to a replica and waits for its answer: a version 2 request through
    /// `courier`, under its identity, when there is one; anything else over the main swarm.
    pub(crate) async fn carry(
        &self,
        courier: Option<&Courier>,
        replica: PeerId,
        addresses: Vec<Multiaddr>,
        request: MailboxRequest,
    ) -> Result<Response, MailboxFailure> {
        match (courier, request) {
            (Some(courier), MailboxRequest::V2(request)) => {
                courier.request(replica, addresses, request).await
            }
            (_, request) => self.request(replica, addresses, request).await,
        }
    }

    /// Sends one request to a replica over the main swarm, under this node's identity, and
    /// waits for its answer.
    pub(crate) async fn request(
        &self,
        replica: PeerId,
        addresses: Vec<Multiaddr>,
        request: MailboxRequest,
    ) -> Result<Response, MailboxFailure> {
        self.0.swarm.mailbox(replica, addresses, request).await
    }
}

#[cfg(test)]
mod tests;
