//! The running node: starts the swarm task, the opener workers, the outbox and the control
//! server, and offers the operations the control API and the demo use.
//!
//! Each operation that sends commits to the store first, then seals on a worker thread (X25519
//! costs hundreds of microseconds per envelope, which must not stall the swarm task), then asks
//! the swarm task to deliver. Every spawned task lives in one `JoinSet` that [`RunningNode::shutdown`]
//! drains, so nothing outlives the node.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use kolokol_protocol::bundle::{
    Bundle, BundlePeer, MAX_BUNDLE_ADDRESS_LEN, MAX_BUNDLE_ADDRESSES, MAX_BUNDLE_PEERS,
};
use kolokol_protocol::codec;
use kolokol_protocol::control::{self, Event, InboxMessage, MessageState, StateChange};
use kolokol_protocol::conversation::{Conversation, Randomness};
use kolokol_protocol::envelope;
use kolokol_protocol::identity::{DeviceCertificate, Identity};
use kolokol_protocol::invite::Invite;
use kolokol_protocol::mailbox as mailbox_proto;
use kolokol_protocol::message::{
    Body, Content, MAX_RECEIPT_IDS, MAX_TEXT_LEN, MessageId, format_id,
};
use kolokol_protocol::presence::PresenceRecord;
use libp2p::{Multiaddr, PeerId};
use rand::RngCore;
use tokio::sync::{Notify, Semaphore, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{Config, Role};
use crate::data_dir::{CONTROL_SOCKET, DATABASE_FILE, DataDir};
use crate::delivery::Ack;
use crate::error::{Error, Result};
use crate::mailbox;
use crate::store::{
    ChunkOutcome, ContactRow, InboxRow, MAX_CACHED_PEERS, MAX_STRANGER_CONVERSATIONS,
    MailboxDeposit, OutboxBody, OutboxRow, Store,
};
use crate::swarm::{self, Command, DeliveryFailure, Inbound, MailboxInbound, NetEvent, NetStatus};

/// Events kept for subscribers that are slow to read; a subscriber that falls further behind
/// gets a `lagged` event and must re-read the inbox.
pub const EVENT_BUFFER: usize = 1024;

/// Conversation states kept decoded in memory. Past this, the cache is emptied and refilled
/// from the store as peers write; each entry is at most about 100 KB (the state and its
/// stored encoding).
pub const MAX_CACHED_CONVERSATIONS: usize = 64;

/// A conversation state between uses, with the bytes the store holds for it, so a state that
/// did not change is not written again.
struct CachedConversation {
    conversation: Conversation,
    stored: zeroize::Zeroizing<Vec<u8>>,
}

/// How long an outgoing message is retried before it is marked failed.
pub const MESSAGE_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How long an attempt owns its outbox row: the outbox loop leaves a row alone for this long
/// after an attempt starts, so one message is not sent twice at once. It must outlast the
/// longest attempt, a delivery ([`swarm::DELIVERY_TIMEOUT`], 10 s), a presence lookup
/// ([`RESOLVE_TIMEOUT`], 15 s) and a second delivery (10 s), with room for a slow store and
/// crypto workers busy with other envelopes.
const ATTEMPT_CLAIM: Duration = Duration::from_secs(60);

/// Longest wait between two delivery attempts of one message.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5 * 60);

/// The outbox looks for due messages at least this often even without a wake-up.
const OUTBOX_POLL: Duration = Duration::from_secs(5);

/// Lifetime of the device certificate issued at start; it is re-issued on every start.
const CERTIFICATE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A certificate with less than this left is re-issued (checked at every presence refresh).
const CERTIFICATE_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Clock skew tolerated by backdating the certificate's start.
const CERTIFICATE_BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);

/// Messages kept from any one sender who is not a contact. First contact needs strangers to be
/// able to write, but a stranger must not be able to fill the disk.
pub const MAX_MESSAGES_PER_STRANGER: u64 = 100;

/// Messages kept from all non-contacts together.
pub const MAX_STRANGER_MESSAGES: u64 = 1000;

/// How long a presence record is valid; it is republished every [`PRESENCE_REFRESH`], so a
/// node that goes away stops being advertised within this time.
pub const PRESENCE_TTL: Duration = Duration::from_secs(60 * 60);

/// How often the presence record is republished even if nothing changed.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(20 * 60);

/// How long one presence lookup may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// A peer's presence is looked up at most this often after a failed delivery.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// Peers whose lookup times (and, for non-contacts, resolved addresses) are remembered; the
/// maps are cleared when they reach it.
pub const MAX_TRACKED_LOOKUPS: usize = 1024;

/// A new signed prekey is made when the newest is this old.
pub const PREKEY_ROTATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How long a signed prekey is valid for senders (it overlaps the next one by a rotation).
pub const PREKEY_LIFETIME: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How long after a prekey expires its secret is kept: a first contact sealed just before the
/// expiry may sit in a mailbox or outbox for up to the first-contact age limit.
pub const PREKEY_SECRET_GRACE: Duration =
    Duration::from_secs(kolokol_protocol::conversation::MAX_FIRST_CONTACT_AGE_SECS);

/// How long a sender waits for a presence lookup that may bring the recipient's prekey
/// before it seals the first contact to the device key instead.
pub const PREKEY_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Peers from the peer cache dialed at start.
pub const MAX_BOOTSTRAP_FROM_CACHE: usize = 16;

/// How long `invite` waits for a first relay reservation.
pub const INVITE_WAIT: Duration = Duration::from_secs(10);

/// Longest contact name, in bytes.
pub const MAX_CONTACT_NAME_LEN: usize = 64;

/// How long the replicas found for a mailbox id are reused before the DHT is asked again; a
/// backlog of messages to one offline recipient then costs one lookup, not one per message.
pub const REPLICA_CACHE_TTL: Duration = Duration::from_secs(30);

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    identity: Identity,
    /// The current device certificate; re-issued by [`Node::renew_certificate`] before it
    /// expires, so a daemon that runs for a year keeps working.
    certificate: std::sync::RwLock<DeviceCertificate>,
    role: Role,
    data_dir: std::path::PathBuf,
    has_bootstrap: bool,
    /// Whether [`Node::mark_read`] queues read receipts ([`Config::read_receipts`]).
    read_receipts: bool,
    store: Store,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    outbox_wake: Notify,
    net_status: watch::Receiver<NetStatus>,
    /// One lock per peer, held while its conversation state is loaded, used and stored.
    conversation_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Conversation states in use, kept decoded between messages (write-through: the store
    /// always has the same state), at most [`MAX_CACHED_CONVERSATIONS`].
    conversations: std::sync::Mutex<HashMap<String, CachedConversation>>,
    /// When each peer's presence was last looked up, to rate-limit lookups.
    resolved_at: std::sync::Mutex<HashMap<String, Instant>>,
    /// Addresses resolved for peers who are not contacts (contacts' go into the store).
    stranger_addresses: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// Bounds the envelopes being sealed or opened at once to the number of cores, so a flood
    /// of inbound envelopes queues (and then gets `Busy`) instead of spawning without limit.
    crypto: Arc<Semaphore>,
    /// Worker threads for crypto: the number of cores.
    workers: usize,
    /// Wakes the mailbox task to fetch now (our reservations changed).
    fetch_wake: Notify,
    /// Replicas found per mailbox id, and when; at most [`MAX_TRACKED_LOOKUPS`] ids, cleared
    /// when full.
    replicas: std::sync::Mutex<HashMap<mailbox_proto::MailboxId, (Instant, Vec<Replica>)>>,
}

/// A mailbox replica: a DHT server and its addresses.
type Replica = (PeerId, Vec<Multiaddr>);

/// A node and the tasks that run it.
pub struct RunningNode {
    node: Node,
    tasks: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    /// Where metrics are served, once bound (the configured port may be 0).
    metrics_address: Option<std::net::SocketAddr>,
    _data_dir: DataDir,
}

impl RunningNode {
    /// Starts a node: locks the data dir, loads or creates the identity, opens the store,
    /// builds the swarm and starts every task, the control socket included.
    pub async fn start(config: Config) -> Result<Self> {
        config.validate()?;
        let data_dir = DataDir::open(&config.data_dir)?;
        let identity = data_dir.load_or_create_identity()?;
        let store = Store::open(&data_dir.path(DATABASE_FILE))?;
        // The database holds messages in plaintext: the owner's alone, like the identity key.
        for suffix in ["", "-wal", "-shm"] {
            data_dir.restrict(&format!("{DATABASE_FILE}{suffix}"))?;
        }
        let now = unix_secs();
        let certificate = identity.certify(
            now.saturating_sub(CERTIFICATE_BACKDATE.as_secs()),
            now + CERTIFICATE_LIFETIME.as_secs(),
        )?;
        let config = Config { bootstrap: bootstrap_sources(&store, &config)?, ..config };
        let swarm = swarm::build(identity.keypair(), &config)?;

        let (command_tx, command_rx) = mpsc::channel(swarm::COMMAND_QUEUE_LEN);
        let (inbound_tx, inbound_rx) = mpsc::channel(swarm::INBOUND_QUEUE_LEN);
        let (net_tx, net_rx) = mpsc::channel(swarm::NET_EVENT_QUEUE_LEN);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (status_tx, status_rx) = watch::channel(NetStatus::default());
        let (mailbox_tx, mailbox_rx) = mpsc::channel(mailbox::INBOUND_QUEUE_LEN);
        let mut event_loop = swarm::EventLoop::new(
            swarm, &config, command_rx, inbound_tx, net_tx, status_tx, mailbox_tx,
        )?;
        // The metrics address is bound before anything else starts, so a port in use fails the
        // start with a clear error instead of leaving a node without the metrics it was asked for.
        let metrics = match config.metrics {
            Some(addr) => {
                let listener = crate::metrics::bind(addr).await?;
                let mut registry = prometheus_client::registry::Registry::default();
                event_loop.metrics = Some(libp2p::metrics::Metrics::new(&mut registry));
                Some((listener, Arc::new(registry)))
            }
            None => None,
        };

        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let node = Node {
            inner: Arc::new(Inner {
                identity,
                certificate: std::sync::RwLock::new(certificate),
                role: config.role,
                data_dir: config.data_dir.clone(),
                has_bootstrap: !config.bootstrap.is_empty(),
                read_receipts: config.read_receipts,
                store,
                commands: command_tx,
                events: broadcast::channel(EVENT_BUFFER).0,
                outbox_wake: Notify::new(),
                net_status: status_rx,
                conversation_locks: Default::default(),
                conversations: Default::default(),
                resolved_at: Default::default(),
                stranger_addresses: Default::default(),
                crypto: Arc::new(Semaphore::new(workers)),
                workers,
                fetch_wake: Notify::new(),
                replicas: Default::default(),
            }),
        };
        // Messages left queued by a previous run are due now, not at their old retry time.
        node.inner.store.wake_all(unix_ms())?;
        node.rotate_prekeys()?;

        let mut tasks = JoinSet::new();
        tasks.spawn(event_loop.run(shutdown_rx.clone()));
        tasks.spawn(node.clone().open_inbound(inbound_rx, shutdown_rx.clone()));
        tasks.spawn(node.clone().run_outbox(shutdown_rx.clone()));
        tasks.spawn(node.clone().run_network(net_rx, shutdown_rx.clone()));
        tasks.spawn(node.clone().serve_mailboxes(mailbox_rx, shutdown_rx.clone()));
        tasks.spawn(node.clone().run_mailboxes(shutdown_rx.clone()));
        let socket = data_dir.path(CONTROL_SOCKET);
        let listener = crate::control::bind(&socket)?;
        let mut metrics_address = None;
        if let Some((listener, registry)) = metrics {
            let address =
                listener.local_addr().map_err(|e| Error::Network(format!("metrics: {e}")))?;
            tracing::info!(%address, "serving metrics at /metrics");
            metrics_address = Some(address);
            tasks.spawn(crate::metrics::serve(
                node.clone(),
                listener,
                registry,
                shutdown_rx.clone(),
            ));
        }
        tasks.spawn(crate::control::serve(node.clone(), listener, socket, shutdown_rx));
        tracing::info!(peer_id = %node.peer_id(), role = config.role.as_str(), data_dir = %data_dir.root().display(), "node started");
        Ok(Self { node, tasks, shutdown, metrics_address, _data_dir: data_dir })
    }

    /// A handle to the node.
    pub fn node(&self) -> Node {
        self.node.clone()
    }

    /// The address metrics are served at, if `--metrics` was given.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics_address
    }

    /// Stops every task and waits for them; the data dir lock is released when this returns.
    /// Queued messages stay in the outbox and go out on the next start.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while let Some(result) = self.tasks.join_next().await {
            if let Err(e) = result
                && e.is_panic()
            {
                tracing::error!(%e, "a node task panicked");
            }
        }
    }

    /// Waits until a task ends on its own, which means the node cannot go on.
    pub async fn wait(&mut self) {
        let _ = self.tasks.join_next().await;
    }
}

impl Node {
    /// The current device certificate.
    fn certificate(&self) -> DeviceCertificate {
        self.inner.certificate.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-issues the device certificate when less than [`CERTIFICATE_RENEW_BEFORE`] of its
    /// life is left.
    fn renew_certificate(&self) -> Result<()> {
        let now = unix_secs();
        if self.certificate().not_after > now + CERTIFICATE_RENEW_BEFORE.as_secs() {
            return Ok(());
        }
        let fresh = self.inner.identity.certify(
            now.saturating_sub(CERTIFICATE_BACKDATE.as_secs()),
            now + CERTIFICATE_LIFETIME.as_secs(),
        )?;
        *self.inner.certificate.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        tracing::info!("renewed the device certificate");
        Ok(())
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.identity.peer_id()
    }

    /// The answer to `id`.
    pub fn id(&self) -> control::IdInfo {
        control::IdInfo {
            peer_id: self.peer_id().to_string(),
            device_key: kolokol_protocol::identity::hex(self.inner.identity.device().public()),
        }
    }

    /// Subscribes to new-message and state-change events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Waits until the network state satisfies `ready`, for at most `timeout`; returns the
    /// state that satisfied it, or `None` on timeout.
    pub async fn wait_for_net(
        &self,
        timeout: Duration,
        mut ready: impl FnMut(&NetStatus) -> bool,
    ) -> Option<NetStatus> {
        let mut rx = self.inner.net_status.clone();
        let result = tokio::time::timeout(timeout, rx.wait_for(|s| ready(s))).await;
        match result {
            Ok(Ok(status)) => Some(status.clone()),
            _ => None,
        }
    }

    /// The network state.
    pub async fn net_status(&self) -> Result<NetStatus> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Status { reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// The answer to `status`.
    pub async fn status(&self) -> Result<control::Status> {
        let net = self.net_status().await?;
        Ok(control::Status {
            peer_id: self.peer_id().to_string(),
            role: self.inner.role.as_str().into(),
            listen_addresses: net.listen.iter().map(ToString::to_string).collect(),
            external_addresses: net.external.iter().map(ToString::to_string).collect(),
            relay_reservations: net.reservations.iter().map(|(p, _)| p.to_string()).collect(),
            connected_peers: net.connected,
            routing_table_size: net.routing_table,
            queued_messages: self.inner.store.queued_count()?,
            reachability: if net.public {
                "public".into()
            } else if !net.reservations.is_empty() {
                "relayed".into()
            } else {
                "unreachable".into()
            },
            known_relays: net.known_relays,
            bootstrap: if net.bootstrap_peers == 0 && self.inner.role == Role::Relay {
                // As `doctor` says it: a relay is where others bootstrap from.
                "none configured: this relay is a bootstrap peer for others".into()
            } else if net.bootstrap_peers == 0 {
                "no bootstrap source (no --bootstrap, peer cache empty, no invite addresses)".into()
            } else if net.bootstrap_connected > 0 {
                format!(
                    "connected to {} of {} bootstrap peers",
                    net.bootstrap_connected, net.bootstrap_peers
                )
            } else {
                format!("not connected to any of {} bootstrap peers", net.bootstrap_peers)
            },
            presence: match &net.presence {
                None => "not published yet".into(),
                Some(Ok(())) => "published".into(),
                Some(Err(e)) => format!("not published: {e}"),
            },
            local_network: if net.mdns {
                format!("mDNS on, {} found", count(net.lan.len(), "peer", "peers"))
            } else {
                "mDNS off".into()
            },
        })
    }

    /// The values of the metrics endpoint's own gauges.
    pub(crate) async fn metrics_snapshot(&self) -> Result<crate::metrics::Snapshot> {
        let net = self.net_status().await?;
        Ok(crate::metrics::Snapshot {
            messages: self.inner.store.message_counts()?,
            inbox: self.inner.store.inbox_count()?,
            reservations: net.reservations.len() as u64,
            connected_peers: net.connected as u64,
            routing: net.routing_table as u64,
            mailbox_items: self.inner.store.mailbox_items_total()?,
        })
    }

    /// An invite carrying this node's certificate and the addresses it is reachable at:
    /// confirmed direct external addresses first, then relay circuits. A user node that has
    /// bootstrap peers but no reservation yet (it was just started) waits up to [`INVITE_WAIT`]
    /// for one, since an invite without addresses is of no use to the person receiving it.
    pub async fn invite(&self) -> Result<control::InviteInfo> {
        let mut net = self.net_status().await?;
        if self.inner.role == Role::Node
            && self.inner.has_bootstrap
            && net.reservations.is_empty()
            && net.external.is_empty()
            && let Some(ready) =
                self.wait_for_net(INVITE_WAIT, |s| !s.reservations.is_empty()).await
        {
            net = ready;
        }
        let addresses = Self::reachable_addresses(&net);
        let invite = Invite {
            certificate: self.certificate(),
            addresses: addresses.iter().map(|a| a.to_vec()).collect(),
        };
        Ok(control::InviteInfo {
            invite: invite.to_text()?,
            addresses: addresses.iter().map(ToString::to_string).collect(),
        })
    }

    /// Adds a contact from their invite code.
    pub fn add_contact(&self, name: &str, invite_text: &str) -> Result<control::Contact> {
        check_contact_name(name)?;
        let (invite, peer) = Invite::from_text(invite_text, unix_secs())?;
        if peer == self.peer_id() {
            return Err(Error::ContactExists("that invite is your own".into()));
        }
        let mut addresses = Vec::new();
        for bytes in &invite.addresses {
            let addr = Multiaddr::try_from(bytes.clone()).map_err(|e| {
                Error::Protocol(kolokol_protocol::Error::Invite(format!(
                    "carries an unreadable address: {e}"
                )))
            })?;
            addresses.push(addr.to_string());
        }
        let row = ContactRow {
            name: name.to_owned(),
            peer_id: peer.to_string(),
            device_key: invite.certificate.device_key,
            addresses,
            added_at_ms: unix_ms(),
        };
        self.inner.store.add_contact(&row)?;
        // The conversation starts now, from the invite's certificate, unless the peer wrote
        // first (then it exists already and holds their receive key). Creating it involves no
        // key work, so it is done here rather than on a worker; if the peer's conversation is
        // busy, it is busy because it exists.
        let lock = {
            let mut locks = self.inner.conversation_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(row.peer_id.clone()).or_default().clone()
        };
        if let Ok(_guard) = lock.try_lock()
            && !self.has_conversation(&row.peer_id)?
        {
            let conversation = Conversation::new(invite.certificate, unix_secs())?;
            let bytes = conversation.to_bytes()?;
            self.inner.store.save_conversation(
                &row.peer_id,
                &bytes,
                Some(&conversation.receive_key_ids()),
                unix_ms(),
            )?;
        }
        Ok(contact_view(row))
    }

    /// All contacts.
    pub fn contacts(&self) -> Result<Vec<control::Contact>> {
        Ok(self.inner.store.contacts()?.into_iter().map(contact_view).collect())
    }

    /// Removes a contact.
    pub fn remove_contact(&self, name: &str) -> Result<control::Contact> {
        self.inner
            .store
            .remove_contact(name)?
            .map(contact_view)
            .ok_or_else(|| Error::UnknownContact(name.to_owned()))
    }

    /// The safety number shared with a contact, from both identity keys.
    pub fn verify_contact(&self, name: &str) -> Result<control::SafetyNumber> {
        let contact = self
            .inner
            .store
            .contact(name)?
            .ok_or_else(|| Error::UnknownContact(name.to_owned()))?;
        let peer: PeerId = contact.peer_id.parse().map_err(|_| {
            Error::Protocol(kolokol_protocol::Error::InvalidKey {
                what: "Ed25519 identity",
                detail: "the stored peer id is unreadable",
            })
        })?;
        let own = self.peer_id();
        Ok(control::SafetyNumber {
            name: contact.name,
            peer_id: contact.peer_id,
            own_peer_id: own.to_string(),
            safety_number: kolokol_protocol::safety::safety_number_of_peers(&own, &peer)?,
        })
    }

    /// The newest `limit` received messages, oldest first.
    pub fn inbox(&self, limit: u32) -> Result<Vec<InboxMessage>> {
        Ok(self.inner.store.inbox(limit)?.into_iter().map(inbox_view).collect())
    }

    /// Marks received messages read, the way the CLI does once it has shown them; `ids` are in
    /// the 32-hex-digit form. Each message is marked once, and the first time queues a read
    /// receipt through the outbox: one per sender who is a contact, none to strangers (see
    /// [`Store::mark_read`]), so they survive restarts and are retried like delivery receipts;
    /// with read receipts turned off, nothing is queued.
    pub fn mark_read(&self, ids: &[String]) -> Result<control::InboxReadResult> {
        let raw = ids
            .iter()
            .map(|id| {
                kolokol_protocol::message::parse_id(id.trim())
                    .ok_or_else(|| Error::UnknownMessage(id.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        let (marked, receipts) =
            self.inner.store.mark_read(&raw, unix_ms(), self.inner.read_receipts, random_id)?;
        if !receipts.is_empty() {
            self.inner.outbox_wake.notify_one();
        }
        Ok(control::InboxReadResult { marked, receipts: receipts.len() as u32 })
    }

    /// The state history of one of our messages.
    pub fn history(&self, id: &MessageId) -> Result<Vec<(MessageState, Option<String>, u64)>> {
        self.inner.store.history(id)
    }

    /// The newest `limit` outgoing text messages, oldest first.
    pub fn outbox(&self, limit: u32) -> Result<Vec<control::OutboxMessage>> {
        Ok(self.inner.store.outbox(limit)?.into_iter().map(outbox_view).collect())
    }

    /// One outgoing message with its full state history; `id` is the 32-hex-digit form.
    pub fn message(&self, id: &str) -> Result<control::MessageStatus> {
        let unknown = || Error::UnknownMessage(id.to_owned());
        let raw = kolokol_protocol::message::parse_id(id.trim()).ok_or_else(unknown)?;
        let message = self.inner.store.outgoing(&raw)?.ok_or_else(unknown)?;
        let history = self
            .inner
            .store
            .history(&raw)?
            .into_iter()
            .map(|(state, detail, at_ms)| control::StateEntry { state, detail, at_ms })
            .collect();
        Ok(control::MessageStatus { message: outbox_view(message), history })
    }

    /// Sends a text to a contact: commits it to the outbox, then makes the first delivery
    /// attempt. Returns when that attempt has an answer; if it failed, the outbox keeps trying.
    pub async fn send(&self, to: &str, text: &str) -> Result<control::SendResult> {
        if text.trim().is_empty() {
            return Err(Error::BadMessage("the message is empty".into()));
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(Error::BadMessage(format!(
                "the message is {} bytes, over the limit of {MAX_TEXT_LEN}",
                text.len()
            )));
        }
        let contact =
            self.inner.store.contact(to)?.ok_or_else(|| Error::UnknownContact(to.to_owned()))?;
        let now = unix_ms();
        let row = OutboxRow {
            id: random_id(),
            peer_id: contact.peer_id.clone(),
            device_key: contact.device_key,
            body: OutboxBody::Text(text.to_owned()),
            created_at_ms: now,
            attempts: 0,
        };
        let claim = ATTEMPT_CLAIM.as_millis() as u64 * crate::store::attempt_envelopes(&row.body);
        self.inner.store.enqueue(&row, now + claim)?;
        self.emit_state(&row.id, &row.peer_id, MessageState::Queued, None, now);
        let (state, detail) = self.attempt(&row).await;
        Ok(control::SendResult { id: format_id(&row.id), state, detail })
    }

    /// One delivery attempt of an outbox row; records the outcome and returns the state it
    /// leaves the row in (`sent`, `stored`, `queued` or `failed`) with its detail.
    async fn attempt(&self, row: &OutboxRow) -> (MessageState, Option<String>) {
        let mut stored = None;
        let outcome = match self.seal(row).await {
            Err(failure) => Err(failure),
            Ok(envelopes) => {
                let mut outcome = self.deliver_all(&row.peer_id, &envelopes).await;
                // The addresses we had did not work: the peer may have moved to other relays.
                // Its presence record says where it is now; if it names new addresses, try
                // them at once.
                if matches!(&outcome, Err(f) if !f.permanent)
                    && self.refresh_addresses(&row.peer_id).await
                {
                    outcome = self.deliver_all(&row.peer_id, &envelopes).await;
                }
                // A first contact sealed to the peer's prekey was refused: the peer no longer
                // holds its secret (a reinstall, say). Forget the prekey, seal again to the
                // device key and send that at once.
                let mut envelopes = envelopes;
                if matches!(&outcome, Err(f) if f.permanent) && self.drop_prekey(&row.peer_id).await
                {
                    match self.seal(row).await {
                        Ok(resealed) => {
                            envelopes = resealed;
                            outcome = self.deliver_all(&row.peer_id, &envelopes).await;
                        }
                        Err(failure) => outcome = Err(failure),
                    }
                }
                // Still unreachable: leave the envelope in the recipient's mailbox. Direct
                // delivery goes on being retried, since it is faster when both are online.
                if matches!(&outcome, Err(f) if !f.permanent) {
                    stored = Some(self.deposit(row, envelopes).await);
                }
                outcome
            }
        };
        let now = unix_ms();
        let expired = now.saturating_sub(row.created_at_ms) > MESSAGE_TTL.as_millis() as u64;
        let mut result = match &outcome {
            Ok(()) => (MessageState::Sent, None),
            Err(f) if f.permanent || expired => (MessageState::Failed, Some(f.reason.clone())),
            Err(f) => (MessageState::Queued, Some(f.reason.clone())),
        };
        let recorded = match &outcome {
            Ok(()) => {
                self.inner.store.set_state(&row.id, MessageState::Sent, None, now).map(|changed| {
                    if changed {
                        self.emit_outgoing(row, MessageState::Sent, None, now);
                    }
                })
            }
            Err(failure) if failure.permanent || expired => {
                let detail = if failure.permanent {
                    failure.reason.clone()
                } else {
                    format!(
                        "not delivered within {} days: {}",
                        MESSAGE_TTL.as_secs() / 86_400,
                        failure.reason
                    )
                };
                self.inner.store.set_state(&row.id, MessageState::Failed, Some(&detail), now).map(
                    |_| {
                        self.emit_outgoing(row, MessageState::Failed, Some(detail.clone()), now);
                    },
                )
            }
            Err(failure) => {
                let attempts = row.attempts + 1;
                let delay = Duration::from_secs(1u64 << attempts.min(9)).min(MAX_RETRY_DELAY);
                match &stored {
                    Some(Ok(detail)) => result = (MessageState::Stored, Some(detail.clone())),
                    Some(Err(why)) => result.1 = Some(format!("{}; {why}", failure.reason)),
                    None => {}
                }
                // A message stored by an earlier attempt stays stored whatever this one did;
                // its user sees no step back to `queued`.
                let stored_before = matches!(
                    self.inner.store.outgoing(&row.id),
                    Ok(Some(view)) if view.state == MessageState::Stored
                );
                let reason = result.1.clone().unwrap_or_default();
                let changed = if result.0 == MessageState::Stored {
                    self.inner.store.set_state(
                        &row.id,
                        MessageState::Stored,
                        result.1.as_deref(),
                        now,
                    )
                } else {
                    Ok(false)
                };
                changed
                    .and_then(|changed| {
                        self.inner
                            .store
                            .reschedule(&row.id, attempts, now + delay.as_millis() as u64, &reason)
                            .map(|()| changed)
                    })
                    .map(|changed| {
                        if changed || (result.0 == MessageState::Queued && !stored_before) {
                            self.emit_outgoing(row, result.0, result.1.clone(), now)
                        }
                    })
            }
        };
        if let Err(e) = recorded {
            tracing::error!(%e, "cannot record a delivery outcome");
        }
        if result.0 == MessageState::Queued
            && let Ok(Some(view)) = self.inner.store.outgoing(&row.id)
            && view.state == MessageState::Stored
        {
            result = (MessageState::Stored, view.detail);
        }
        result
    }

    /// Deposits the message's envelopes (one, or one per chunk) on the replicas of the
    /// recipient's current mailbox that do not hold them yet; returns the detail of the `stored`
    /// state ("stored on N of M mailbox replicas") once enough hold all of them, else why not.
    async fn deposit(
        &self,
        row: &OutboxRow,
        envelopes: Vec<Vec<u8>>,
    ) -> std::result::Result<String, String> {
        let peer: PeerId = row.peer_id.parse().map_err(|e| format!("bad peer id: {e}"))?;
        let key = kolokol_protocol::safety::identity_key(&peer).map_err(|e| e.to_string())?;
        let now = unix_secs();
        let mailbox_id = mailbox_proto::mailbox_id(&key, mailbox_proto::period_of(now));
        let replicas = self.replicas(&mailbox_id, true).await;
        if replicas.is_empty() {
            return Err("no mailbox replica found in the DHT".into());
        }
        // Replicas that acked an earlier deposit into this same mailbox and are still among the
        // closest keep their copy; the others (new closest peers, or a new period) get one.
        let record = self.inner.store.deposited(&row.id).map_err(|e| e.to_string())?;
        let mut words = record.split_whitespace();
        let same_mailbox =
            words.next() == Some(kolokol_protocol::identity::hex(&mailbox_id).as_str());
        let before: Vec<String> =
            if same_mailbox { words.map(str::to_owned).collect() } else { Vec::new() };
        let mut acked: Vec<PeerId> =
            replicas.iter().map(|(p, _)| *p).filter(|p| before.contains(&p.to_string())).collect();
        // A chunked message is one item per chunk; a replica holds the message once it has
        // stored every chunk.
        let chunked = envelopes.len() > 1;
        let deposits: Arc<Vec<mailbox_proto::Request>> = Arc::new(
            envelopes
                .into_iter()
                .enumerate()
                .map(|(index, envelope)| mailbox_proto::Request::Deposit {
                    mailbox_id,
                    item_id: if chunked {
                        mailbox_proto::chunk_item_id(&row.id, index as u32)
                    } else {
                        mailbox_proto::item_id(&row.id)
                    },
                    envelope,
                    // The replica keeps it no longer than the outbox would go on trying.
                    expires_at: (row.created_at_ms / 1000).saturating_add(MESSAGE_TTL.as_secs()),
                })
                .collect(),
        );
        let mut pending = JoinSet::new();
        for (replica, addresses) in replicas.iter().filter(|(p, _)| !acked.contains(p)) {
            let node = self.clone();
            let (replica, addresses, deposits) = (*replica, addresses.clone(), deposits.clone());
            pending.spawn(async move {
                let mut answer = Ok(mailbox_proto::Response::Stored);
                for deposit in deposits.iter() {
                    answer =
                        node.mailbox_request(replica, addresses.clone(), deposit.clone()).await;
                    if !matches!(answer, Ok(mailbox_proto::Response::Stored)) {
                        break;
                    }
                }
                (replica, answer)
            });
        }
        let mut reasons = Vec::new();
        while let Some(joined) = pending.join_next().await {
            let Ok((replica, answer)) = joined else { continue };
            match answer {
                Ok(mailbox_proto::Response::Stored) => acked.push(replica),
                Ok(
                    mailbox_proto::Response::QuotaExceeded { reason }
                    | mailbox_proto::Response::Refused { reason },
                ) => reasons.push(format!("mailbox replica {replica} refused it: {reason}")),
                Ok(other) => reasons.push(format!("mailbox replica {replica} answered {other:?}")),
                Err(e) => {
                    // The replica may be gone: look the closest peers up afresh next time.
                    self.forget_replicas(&mailbox_id);
                    reasons.push(e)
                }
            }
        }
        let mut record = kolokol_protocol::identity::hex(&mailbox_id);
        for p in &acked {
            record.push(' ');
            record.push_str(&p.to_string());
        }
        self.inner.store.set_deposited(&row.id, &record).map_err(|e| e.to_string())?;
        let required = if replicas.len() >= mailbox::REPLICAS {
            mailbox::REQUIRED_ACKS
        } else {
            replicas.len()
        };
        if acked.len() >= required {
            Ok(format!("stored on {} of {} mailbox replicas", acked.len(), replicas.len()))
        } else {
            Err(format!(
                "stored on only {} of {} mailbox replicas ({})",
                acked.len(),
                replicas.len(),
                reasons.join("; ")
            ))
        }
    }

    /// The DHT servers closest to a mailbox id, nearest first, at most [`mailbox::REPLICAS`];
    /// from the cache if `cached` and fresh enough.
    async fn replicas(&self, mailbox_id: &mailbox_proto::MailboxId, cached: bool) -> Vec<Replica> {
        if cached
            && let Some((at, replicas)) =
                self.inner.replicas.lock().unwrap_or_else(|p| p.into_inner()).get(mailbox_id)
            && at.elapsed() < REPLICA_CACHE_TTL
        {
            return replicas.clone();
        }
        let (reply, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::ClosestPeers { key: mailbox_id.to_vec(), reply })
            .await
            .is_err()
        {
            return Vec::new();
        }
        let mut replicas = tokio::time::timeout(RESOLVE_TIMEOUT, rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        replicas.truncate(mailbox::REPLICAS);
        if !replicas.is_empty() {
            let mut cache = self.inner.replicas.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_TRACKED_LOOKUPS {
                cache.clear();
            }
            cache.insert(*mailbox_id, (Instant::now(), replicas.clone()));
        }
        replicas
    }

    fn forget_replicas(&self, mailbox_id: &mailbox_proto::MailboxId) {
        self.inner.replicas.lock().unwrap_or_else(|p| p.into_inner()).remove(mailbox_id);
    }

    /// Sends one mailbox request to a replica and waits for its answer.
    async fn mailbox_request(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: mailbox_proto::Request,
    ) -> std::result::Result<mailbox_proto::Response, String> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Mailbox { peer, addresses, request, reply })
            .await
            .map_err(|_| "the node is shutting down".to_owned())?;
        rx.await.map_err(|_| "the node is shutting down".to_owned())?
    }

    /// Seals an outbox row for its recipient: one envelope, or one per chunk when the body does
    /// not fit one (`kolokol_protocol::chunk`), all sealed in one hold of the conversation.
    async fn seal(&self, row: &OutboxRow) -> std::result::Result<Vec<Vec<u8>>, DeliveryFailure> {
        let content = Content {
            id: row.id,
            sent_at_ms: row.created_at_ms,
            body: match &row.body {
                OutboxBody::Text(t) => Body::Text(t.clone()),
                OutboxBody::Receipt(of) => Body::Receipt { of: *of },
                OutboxBody::Read(ids) => Body::Read { of: ids.clone() },
            },
        };
        self.seal_content(&row.peer_id, row.device_key, content).await
    }

    /// Seals `content` for the peer, through its conversation on a worker thread (or in a
    /// format 1 envelope to `device_key` if there is none).
    async fn seal_content(
        &self,
        peer_id: &str,
        device_key: [u8; 32],
        content: Content,
    ) -> std::result::Result<Vec<Vec<u8>>, DeliveryFailure> {
        let fail = |reason: String| DeliveryFailure { reason, permanent: false };
        let contents = kolokol_protocol::chunk::split(&content).map_err(|e| DeliveryFailure {
            reason: format!("cannot seal: {e}"),
            permanent: true,
        })?;
        let now = unix_secs();
        let prekey = self.prekey_for_first_contact(peer_id, now).await;
        let node = self.clone();
        // Through the peer's conversation when there is one (every contact added by this
        // version, and every stranger who wrote to us): a Kpsk1 envelope to their newest receive
        // key, or a first contact carrying our own. A contact added before conversations existed
        // gets a format 1 envelope to its device key, which every version opens.
        let envelopes = self
            .with_conversation(peer_id, move |conversation| {
                let certificate = node.certificate();
                if let (Some(c), Some(p)) = (conversation.as_mut(), prekey)
                    && let Err(e) = c.set_peer_prekey(p, now)
                {
                    tracing::debug!(%e, "ignored a signed prekey");
                }
                let mut envelopes = Vec::with_capacity(contents.len());
                for content in &contents {
                    let mut random = [0u8; Randomness::LEN];
                    rand::rngs::OsRng.fill_bytes(&mut random);
                    envelopes.push(match conversation.as_mut() {
                        Some(c) => c.seal(
                            node.inner.identity.device(),
                            &certificate,
                            content,
                            Randomness::from_bytes(random),
                            now,
                        )?,
                        None => {
                            let mut ephemeral = [0u8; 32];
                            ephemeral.copy_from_slice(&random[..32]);
                            zeroize::Zeroize::zeroize(&mut random);
                            envelope::seal(
                                &node.inner.identity,
                                &certificate,
                                &device_key,
                                content,
                                ephemeral,
                            )?
                        }
                    });
                }
                Ok(envelopes)
            })
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| DeliveryFailure {
                reason: format!("cannot seal: {e}"),
                permanent: true,
            })?;
        Ok(envelopes)
    }

    /// Delivers a message's envelopes directly, one after the other; the first failure is the
    /// attempt's outcome (the next attempt sends them all again, and the receiver keeps each
    /// chunk once).
    async fn deliver_all(
        &self,
        peer_id: &str,
        envelopes: &[Vec<u8>],
    ) -> std::result::Result<(), DeliveryFailure> {
        for envelope in envelopes {
            self.deliver(peer_id, envelope.clone()).await?;
        }
        Ok(())
    }

    /// Hands a sealed envelope to the swarm task for direct delivery.
    async fn deliver(
        &self,
        peer_id: &str,
        envelope: Vec<u8>,
    ) -> std::result::Result<(), DeliveryFailure> {
        let fail = |reason: String| DeliveryFailure { reason, permanent: false };
        let peer: PeerId =
            peer_id.parse().map_err(|e| fail(format!("stored peer id is unreadable: {e}")))?;
        let addresses =
            self.known_addresses(peer_id).iter().filter_map(|a| a.parse().ok()).collect();
        let (reply, rx) = oneshot::channel();
        let shutting_down = || fail("the node is shutting down".into());
        self.inner
            .commands
            .send(Command::Deliver { peer, addresses, envelope, reply })
            .await
            .map_err(|_| shutting_down())?;
        rx.await.map_err(|_| shutting_down())?
    }

    /// The peer's signed prekey from its presence record, looked up only when the next envelope
    /// to it would be a first contact without one, at most once per [`RESOLVE_INTERVAL`] and
    /// waiting at most [`PREKEY_LOOKUP_TIMEOUT`]: a first contact is sealed to the device key
    /// rather than wait longer. The lookup also refreshes the peer's addresses.
    async fn prekey_for_first_contact(
        &self,
        peer_id: &str,
        now: u64,
    ) -> Option<kolokol_protocol::prekey::SignedPrekey> {
        // Only a hint, so a plain read is enough: no lock and no worker thread, which keeps an
        // established conversation (the common case) at one locked load per message.
        let cached =
            self.cached_conversations().get(peer_id).map(|c| c.conversation.wants_prekey(now));
        let wants = match cached {
            Some(wants) => wants,
            None => match self.inner.store.conversation(peer_id) {
                Ok(Some(bytes)) => {
                    Conversation::from_bytes(&bytes).is_ok_and(|c| c.wants_prekey(now))
                }
                _ => false,
            },
        };
        if !wants {
            return None;
        }
        self.refresh_from_presence(peer_id, PREKEY_LOOKUP_TIMEOUT).await.1
    }

    /// Forgets the peer's prekey if the next envelope to it would be a first contact sealed to
    /// it; returns whether it did.
    async fn drop_prekey(&self, peer_id: &str) -> bool {
        let dropped = self
            .with_conversation(peer_id, |c| {
                Ok(c.as_mut().is_some_and(|c| c.drop_prekey_for_first_contact()))
            })
            .await;
        matches!(dropped, Ok(Ok(true)))
    }

    /// Runs `f` on a blocking worker thread, at most one per core at a time.
    async fn on_worker<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit =
            self.inner.crypto.clone().acquire_owned().await.map_err(|_| Error::ShuttingDown)?;
        tokio::task::spawn_blocking(f).await.map_err(|_| Error::ShuttingDown)
    }

    /// Emits a state change for an outbox row, unless it is a receipt: receipts are plumbing,
    /// not messages the user sent, so subscribers never hear of them.
    fn emit_outgoing(
        &self,
        row: &OutboxRow,
        state: MessageState,
        detail: Option<String>,
        at_ms: u64,
    ) {
        if matches!(row.body, OutboxBody::Text(_)) {
            self.emit_state(&row.id, &row.peer_id, state, detail, at_ms);
        }
    }

    fn emit_state(
        &self,
        id: &MessageId,
        peer_id: &str,
        state: MessageState,
        detail: Option<String>,
        at_ms: u64,
    ) {
        let to = match self.inner.store.contact_by_peer(peer_id) {
            Ok(Some(c)) => c.name,
            _ => peer_id.to_owned(),
        };
        // Nobody listening is fine: events are a convenience, the store is the record.
        let _ = self.inner.events.send(Event::State(StateChange {
            id: format_id(id),
            to,
            state,
            detail,
            at_ms,
        }));
    }

    /// Takes envelopes from the swarm task and opens each on a worker. At most one opener per
    /// core runs at a time; while they are all busy, envelopes wait in the bounded inbound queue,
    /// and once that is full the swarm task answers new ones [`Ack::Busy`].
    async fn open_inbound(
        self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut openers = JoinSet::new();
        loop {
            tokio::select! {
                next = inbound.recv(), if openers.len() < self.inner.workers => match next {
                    Some(i) => { openers.spawn(self.clone().handle_inbound(i)); }
                    None => break,
                },
                Some(_) = openers.join_next(), if !openers.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        openers.shutdown().await;
    }

    async fn handle_inbound(self, inbound: Inbound) {
        let ack = self.open_and_accept(inbound.envelope).await;
        let _ = self.inner.commands.send(Command::Respond { channel: inbound.channel, ack }).await;
    }

    /// Opens an envelope and accepts it: the one path for envelopes that arrive directly and
    /// those fetched from mailboxes, so both get the same checks, the same duplicate detection
    /// and the same receipts.
    async fn open_and_accept(&self, envelope: Vec<u8>) -> Ack {
        match self.receive_envelope(envelope).await {
            Ok(ack) => ack,
            Err(e) => {
                tracing::error!(%e, "cannot store a received message");
                Ack::Busy
            }
        }
    }

    /// Opens one envelope, whatever brought it, and stores what it says. The header says which
    /// way to open it: a format 1 envelope to the device key (older senders); a conversation
    /// envelope with the receive key its id names, through that peer's conversation; or a first
    /// contact to the device key, which starts or continues the sender's conversation.
    async fn receive_envelope(&self, envelope: Vec<u8>) -> Result<Ack> {
        use kolokol_protocol::Error as P;
        let now = unix_secs();
        let header = match envelope::peek(&envelope) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(%e, "rejected an envelope");
                return Ok(Ack::Rejected);
            }
        };
        let node = self.clone();
        // The envelope's name in the replay caches, to take it back out if what it says cannot
        // be stored now (below).
        let ephemeral = (header.version == envelope::ENVELOPE_VERSION_3)
            .then(|| envelope::ephemeral_key(&envelope).ok())
            .flatten();
        let opened: std::result::Result<(PeerId, [u8; 32], Content), P> =
            match (header.version, header.kind, header.key_id) {
                (envelope::ENVELOPE_VERSION, _, _) => self
                    .on_worker(move || envelope::open(node.inner.identity.device(), &envelope, now))
                    .await?
                    .map(|o| (o.sender, o.certificate.device_key, o.content)),
                (_, envelope::KIND_CONVERSATION, Some(key_id)) => {
                    let Some(peer_id) = self.inner.store.peer_for_key(&key_id)? else {
                        tracing::debug!("rejected an envelope for an unknown receive key");
                        return Ok(Ack::Rejected);
                    };
                    self.with_conversation(&peer_id, move |conversation| {
                        let c = conversation
                            .as_mut()
                            .ok_or(P::Envelope("no conversation for this key"))?;
                        let content = match c.open(&node.inner.identity, &envelope, now) {
                            // Accepted before. The replay cache is stored before the message
                            // is, so a node killed in between meets it again here: acting on
                            // it again (idempotent, by message id) is how it still arrives.
                            Err(P::Replayed) => c
                                .reopen(&node.inner.identity, &envelope)
                                .map_err(|_| P::Replayed)?,
                            other => other?,
                        };
                        Ok((c.peer_id()?, c.peer_certificate().device_key, content))
                    })
                    .await?
                }
                (_, envelope::KIND_FIRST_CONTACT, key_id) => {
                    // Sealed to one of our signed prekeys if its id names one, else to the
                    // device key.
                    let prekey = match key_id {
                        Some(id) => self.inner.store.prekey_secret(&id)?,
                        None => None,
                    };
                    let first = match self
                        .on_worker(move || match prekey {
                            Some(secret) => envelope::open_first_contact(
                                &kolokol_protocol::identity::DeviceKey::from_secret(*secret),
                                node.inner.identity.identity_key(),
                                &envelope,
                                now,
                            ),
                            None => envelope::open_first_contact(
                                node.inner.identity.device(),
                                node.inner.identity.identity_key(),
                                &envelope,
                                now,
                            ),
                        })
                        .await?
                    {
                        Ok(first) => first,
                        Err(e) => {
                            tracing::debug!(%e, "rejected a first-contact envelope");
                            return Ok(Ack::Rejected);
                        }
                    };
                    let sender = first.sender.to_string();
                    let known = self.has_conversation(&sender)?;
                    if !known
                        && self.inner.store.contact_by_peer(&sender)?.is_none()
                        && self.inner.store.stranger_conversations()? >= MAX_STRANGER_CONVERSATIONS
                    {
                        tracing::info!(%sender, "refused a first contact: too many strangers");
                        return Ok(Ack::Rejected);
                    }
                    self.with_conversation(&sender, move |conversation| {
                        let (peer, device_key) = (first.sender, first.certificate.device_key);
                        let content = match conversation {
                            // A replay is acted on again, as for conversation envelopes above.
                            Some(c) => {
                                let again = first.content.clone();
                                match c.accept_first_contact(first, now) {
                                    Err(P::Replayed) => again,
                                    other => other?,
                                }
                            }
                            None => {
                                let (c, content) = Conversation::from_first_contact(first, now)?;
                                *conversation = Some(c);
                                content
                            }
                        };
                        Ok((peer, device_key, content))
                    })
                    .await?
                }
                _ => Err(P::Envelope("unknown envelope kind")),
            };
        match opened {
            Ok((sender, device_key, content)) => {
                let ack = self.accept(sender, device_key, content);
                // Opened, but not stored: the conversation already counts the envelope as seen,
                // and a mailbox hands over the very same bytes again, which would then be
                // taken for a replay and deleted unread. So it is forgotten as seen, and opens
                // again next time. (Refused for good is different: it stays seen.)
                if !matches!(ack, Ok(Ack::Accepted | Ack::Rejected))
                    && let Some(ephemeral) = ephemeral
                {
                    let unseen = self
                        .with_conversation(&sender.to_string(), move |c| {
                            Ok(c.as_mut().is_some_and(|c| c.unsee(&ephemeral)))
                        })
                        .await;
                    if !matches!(unseen, Ok(Ok(true))) {
                        tracing::warn!(%sender, "could not forget an envelope it did not store");
                    }
                }
                ack
            }
            // A replay whose content could not be had again: it was acted on before.
            Err(P::Replayed) => Ok(Ack::Accepted),
            Err(e) => {
                tracing::debug!(%e, "rejected an envelope");
                Ok(Ack::Rejected)
            }
        }
    }

    /// Runs `f` on the conversation state with `peer_id` (`None` if there is none yet) on a
    /// worker thread, holding that peer's lock so no two seals or opens of one conversation
    /// interleave; then stores the state if `f` succeeded. The state is written before the
    /// caller sends what was sealed or acknowledges what was opened, so a crash can lose neither
    /// a receive key we advertised nor a replay-cache entry.
    async fn with_conversation<T: Send + 'static>(
        &self,
        peer_id: &str,
        f: impl FnOnce(&mut Option<Conversation>) -> std::result::Result<T, kolokol_protocol::Error>
        + Send
        + 'static,
    ) -> Result<std::result::Result<T, kolokol_protocol::Error>> {
        let lock = {
            let mut locks = self.inner.conversation_locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() >= MAX_TRACKED_LOOKUPS {
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(peer_id.to_owned()).or_default().clone()
        };
        let _guard = lock.lock().await;
        // Taken out of the cache while in use: if anything below fails, the next use reloads
        // the state from the store, which is never behind the cache.
        let cached = self.cached_conversations().remove(peer_id);
        let (mut conversation, stored) = match cached {
            Some(c) => (Some(c.conversation), Some(c.stored)),
            None => {
                let stored = self.inner.store.conversation(peer_id)?;
                let conversation = match stored.as_ref().map(|b| Conversation::from_bytes(b)) {
                    Some(Ok(c)) => Some(c),
                    Some(Err(e)) => {
                        // An unreadable state cannot be repaired; starting afresh costs one
                        // first-contact round trip, keeping it would block the conversation for
                        // good.
                        tracing::error!(peer = peer_id, %e, "conversation state unreadable; starting a new one");
                        None
                    }
                    None => None,
                };
                (conversation, stored)
            }
        };
        // The receive-key index is rewritten only when the keys changed (about once per round
        // trip), not with every state.
        let ids_before = conversation.as_ref().map(Conversation::receive_key_ids);
        let (result, conversation) = self
            .on_worker(move || {
                let result = f(&mut conversation);
                (result, conversation)
            })
            .await?;
        if result.is_ok()
            && let Some(c) = conversation
        {
            let bytes = c.to_bytes()?;
            // Only a changed state is written: a look at the state costs no disk write.
            if stored.as_deref().map(Vec::as_slice) != Some(bytes.as_slice()) {
                let ids: Vec<[u8; 8]> = c.receive_key_ids();
                let changed = (ids_before.as_ref() != Some(&ids)).then_some(ids.as_slice());
                self.inner.store.save_conversation(peer_id, &bytes, changed, unix_ms())?;
            }
            let mut cache = self.cached_conversations();
            if cache.len() >= MAX_CACHED_CONVERSATIONS {
                cache.clear();
            }
            cache.insert(peer_id.to_owned(), CachedConversation { conversation: c, stored: bytes });
        }
        Ok(result)
    }

    fn cached_conversations(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, CachedConversation>> {
        self.inner.conversations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether we hold conversation state with the peer, in the cache or the store.
    fn has_conversation(&self, peer_id: &str) -> Result<bool> {
        if self.cached_conversations().contains_key(peer_id) {
            return Ok(true);
        }
        Ok(self.inner.store.conversation(peer_id)?.is_some())
    }

    /// Makes a new signed prekey when the newest is older than [`PREKEY_ROTATION`], and deletes
    /// the secrets of those expired longer than [`PREKEY_SECRET_GRACE`] ago.
    fn rotate_prekeys(&self) -> Result<()> {
        let now = unix_secs();
        let fresh = self
            .inner
            .store
            .newest_prekey()?
            .is_some_and(|p| now.saturating_sub(p.created_at) < PREKEY_ROTATION.as_secs());
        if !fresh {
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(secret.as_mut());
            let prekey = kolokol_protocol::prekey::SignedPrekey::sign(
                &self.inner.identity,
                &secret,
                now,
                now + PREKEY_LIFETIME.as_secs(),
            )?;
            let id = envelope::key_id(&prekey.public);
            self.inner.store.save_prekey(&id, &secret, &prekey)?;
            tracing::info!("made a new signed prekey");
        }
        self.inner
            .store
            .delete_prekeys_expired_before(now.saturating_sub(PREKEY_SECRET_GRACE.as_secs()))?;
        Ok(())
    }

    /// Deletes receive keys whose time is up in every conversation, so forward secrecy does not
    /// wait for the next message.
    async fn expire_keys(&self) -> Result<()> {
        let now = unix_secs();
        // One conversation that cannot be read or written must not keep the others' keys
        // alive: each is swept on its own, and the first error is reported after all.
        let mut first_error = None;
        for peer in self.inner.store.conversation_peers()? {
            let swept = self
                .with_conversation(&peer, move |c| {
                    if let Some(c) = c.as_mut() {
                        c.expire(now);
                    }
                    Ok(())
                })
                .await;
            match swept {
                Ok(Ok(())) => {}
                Ok(Err(e)) => _ = first_error.get_or_insert(Error::from(e)),
                Err(e) => _ = first_error.get_or_insert(e),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stores an opened envelope and reacts to it: a text is put in the inbox and answered by a
    /// receipt, a receipt marks our message delivered, a read receipt marks our messages read.
    fn accept(&self, sender_id: PeerId, device_key: [u8; 32], content: Content) -> Result<Ack> {
        let sender = sender_id.to_string();
        let now = unix_ms();
        // Decoding bounds only the size; a read receipt naming no ids, or more than any of our
        // nodes puts in one, is refused before anything acts on it.
        if !content.body.is_valid() {
            tracing::info!(%sender, "refused a body out of bounds");
            return Ok(Ack::Rejected);
        }
        match content.body {
            Body::Text(text) => {
                if self.stranger_over_quota(&sender)? {
                    return Ok(Ack::Rejected);
                }
                let row = InboxRow {
                    id: content.id,
                    peer_id: sender.clone(),
                    contact: None,
                    text,
                    sent_at_ms: content.sent_at_ms,
                    received_at_ms: now,
                    read_at_ms: None,
                };
                let receipt = OutboxRow {
                    id: random_id(),
                    peer_id: sender.clone(),
                    device_key,
                    body: OutboxBody::Receipt(content.id),
                    created_at_ms: now,
                    attempts: 0,
                };
                // The message and the receipt that answers it are committed together: a crash
                // between the two would leave a stored message whose sender never hears of it.
                if self.inner.store.receive(&row, &receipt)? {
                    let contact = self.inner.store.contact_by_peer(&sender)?.map(|c| c.name);
                    let _ = self
                        .inner
                        .events
                        .send(Event::Message(event_view(InboxRow { contact, ..row })));
                    self.inner.outbox_wake.notify_one();
                }
            }
            Body::Receipt { of } => self.delivered(&of, &sender, now)?,
            Body::Receipts { of } => {
                for id in &of {
                    self.delivered(id, &sender, now)?;
                }
            }
            Body::Chunk { index, count, body_len, data } => {
                // Long messages are for contacts: a stranger's first messages fit one envelope,
                // so nobody we never added can make us keep megabytes of halves or of text.
                if self.inner.store.contact_by_peer(&sender)?.is_none() {
                    tracing::info!(%sender, "refused a chunk from a peer who is not a contact");
                    return Ok(Ack::Rejected);
                }
                let kept = self.inner.store.add_chunk(
                    &sender,
                    &content.id,
                    index,
                    count,
                    body_len,
                    content.sent_at_ms,
                    &data,
                    now,
                )?;
                let chunks = match kept {
                    ChunkOutcome::Kept | ChunkOutcome::AlreadyReceived => return Ok(Ack::Accepted),
                    ChunkOutcome::Full => {
                        tracing::info!(%sender, "deferred a chunk: too many partial messages");
                        return Ok(Ack::Busy);
                    }
                    ChunkOutcome::Inconsistent => {
                        tracing::info!(%sender, "refused a chunk that contradicts its message");
                        return Ok(Ack::Rejected);
                    }
                    ChunkOutcome::Complete(chunks) => chunks,
                };
                let joined =
                    kolokol_protocol::chunk::join(chunks.iter().map(Vec::as_slice), body_len);
                drop(chunks);
                let ack = match joined {
                    Ok(body) => {
                        let whole =
                            Content { id: content.id, sent_at_ms: content.sent_at_ms, body };
                        self.accept(sender_id, device_key, whole)?
                    }
                    Err(e) => {
                        tracing::info!(%sender, %e, "refused a message whose chunks do not join");
                        Ack::Rejected
                    }
                };
                // Stored (or refused for good): the chunks have served. A crash before this
                // line leaves them until the purge, and the inbox already answers repeats.
                self.inner.store.delete_chunks(&sender, &content.id)?;
                return Ok(ack);
            }
            // Only the recipient of a message can say it was read, as with delivery receipts;
            // ids of other messages, and repeats, change nothing.
            Body::Read { of } => {
                for id in of {
                    if self.inner.store.outgoing_text_peer(&id)?.as_deref() == Some(sender.as_str())
                        && self.inner.store.set_state(&id, MessageState::Read, None, now)?
                    {
                        self.emit_state(&id, &sender, MessageState::Read, None, now);
                    }
                }
            }
        }
        Ok(Ack::Accepted)
    }

    /// Sends the delivery receipts of several messages to one peer in one envelope
    /// ([`Body::Receipts`]) and marks them all sent. If that cannot be done directly, each goes
    /// its own usual way (one envelope, retries, the mailbox), so batching never costs a receipt.
    async fn attempt_receipts(&self, rows: Vec<OutboxRow>) {
        if let [row] = rows.as_slice() {
            let _ = self.attempt(row).await;
            return;
        }
        let (peer_id, device_key) = (rows[0].peer_id.clone(), rows[0].device_key);
        let of: Vec<MessageId> = rows
            .iter()
            .filter_map(|r| match r.body {
                OutboxBody::Receipt(of) => Some(of),
                _ => None,
            })
            .collect();
        let content =
            Content { id: random_id(), sent_at_ms: unix_ms(), body: Body::Receipts { of } };
        let sent = match self.seal_content(&peer_id, device_key, content).await {
            Ok(envelopes) => self.deliver_all(&peer_id, &envelopes).await.is_ok(),
            Err(_) => false,
        };
        if sent {
            let ids: Vec<MessageId> = rows.iter().map(|r| r.id).collect();
            match self.inner.store.set_sent(&ids, unix_ms()) {
                Ok(()) => return,
                Err(e) => tracing::error!(%e, "cannot record receipts sent"),
            }
        }
        let mut attempts = JoinSet::new();
        for row in rows {
            let node = self.clone();
            attempts.spawn(async move {
                let _ = node.attempt(&row).await;
            });
        }
        while attempts.join_next().await.is_some() {}
    }

    /// Marks our text `of` delivered if `sender` is the peer we sent it to.
    fn delivered(&self, of: &MessageId, sender: &str, now: u64) -> Result<()> {
        if self.inner.store.outgoing_text_peer(of)?.as_deref() == Some(sender)
            && self.inner.store.set_state(of, MessageState::Delivered, None, now)?
        {
            self.emit_state(of, sender, MessageState::Delivered, None, now);
        }
        Ok(())
    }

    /// The ids of our receive keys for the peer, as stored: what its envelopes may be sealed
    /// to. The store is opened in exclusive mode, so this is how tests and diagnostics see it.
    pub fn receive_key_ids(&self, peer_id: &str) -> Result<Vec<[u8; 8]>> {
        self.inner.store.receive_key_ids(peer_id)
    }

    /// Strangers may write (that is how first contact works) but not without bound: past the
    /// quota their messages are refused, and contacts are never affected.
    fn stranger_over_quota(&self, sender: &str) -> Result<bool> {
        if self.inner.store.contact_by_peer(sender)?.is_some() {
            return Ok(false);
        }
        let (from_sender, from_all) = self.inner.store.stranger_messages(sender)?;
        let over = from_sender >= MAX_MESSAGES_PER_STRANGER || from_all >= MAX_STRANGER_MESSAGES;
        if over {
            tracing::info!(%sender, "refused a message: stranger quota reached");
        }
        Ok(over)
    }

    /// Retries queued messages: when they fall due, when their peer connects, and when told to.
    async fn run_outbox(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let now = unix_ms();
            match self.inner.store.due(now, now + ATTEMPT_CLAIM.as_millis() as u64) {
                Ok(rows) => {
                    let mut attempts = JoinSet::new();
                    // Delivery receipts due together for one peer go in one envelope.
                    let mut receipts: HashMap<String, Vec<OutboxRow>> = HashMap::new();
                    for row in rows {
                        // Only first attempts: a receipt that failed before goes alone, so a
                        // peer that stays away costs one failed batch, not one per pass.
                        if matches!(row.body, OutboxBody::Receipt(_)) && row.attempts == 0 {
                            receipts.entry(row.peer_id.clone()).or_default().push(row);
                            continue;
                        }
                        let node = self.clone();
                        attempts.spawn(async move {
                            let _ = node.attempt(&row).await;
                        });
                    }
                    for (_, group) in receipts {
                        for group in group.chunks(MAX_RECEIPT_IDS) {
                            let (node, group) = (self.clone(), group.to_vec());
                            attempts.spawn(async move { node.attempt_receipts(group).await });
                        }
                    }
                    tokio::select! {
                        _ = async { while attempts.join_next().await.is_some() {} } => {}
                        _ = shutdown.changed() => return,
                    }
                }
                Err(e) => tracing::error!(%e, "cannot read the outbox"),
            }
            let wait = match self.inner.store.next_due() {
                Ok(Some(at)) => {
                    Duration::from_millis(at.saturating_sub(unix_ms())).min(OUTBOX_POLL)
                }
                _ => OUTBOX_POLL,
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.outbox_wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Reacts to the network: retries what waits for a peer that connected, remembers peers in
    /// the peer cache, and publishes the presence record when addresses change and before it
    /// expires.
    async fn run_network(
        self,
        mut net: mpsc::Receiver<NetEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                event = net.recv() => match event {
                    Some(NetEvent::PeerConnected(peer)) => {
                        let woken = self.inner.store.wake_peer(&peer.to_string(), unix_ms());
                        if matches!(woken, Ok(n) if n > 0) {
                            self.inner.outbox_wake.notify_one();
                        }
                        woken.map(drop)
                    }
                    Some(NetEvent::PeerSeen { peer, address, relay }) => {
                        self.inner.store.peer_seen(&peer.to_string(), &address.to_string(), relay, unix_ms())
                    }
                    Some(NetEvent::AddressesChanged) => {
                        // New reservations mean we are back online: look in our mailboxes.
                        self.inner.fetch_wake.notify_one();
                        self.publish_presence().await
                    }
                    None => return,
                },
                _ = refresh.tick() => match self.renew_certificate().and_then(|()| self.rotate_prekeys()) {
                    Ok(()) => match self.expire_keys().await {
                        Ok(()) => self.publish_presence().await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                _ = shutdown.changed() => return,
            };
            if let Err(e) = result {
                tracing::error!(%e, "network bookkeeping failed");
            }
        }
    }

    /// Answers mailbox requests as a replica (the swarm task forwards them only while this
    /// node is a DHT server), one at a time: each is a short SQLite call.
    async fn serve_mailboxes(
        self,
        mut requests: mpsc::Receiver<MailboxInbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                next = requests.recv() => match next {
                    Some(MailboxInbound { peer, request, channel }) => {
                        let response = self.serve_mailbox(peer, request);
                        let _ = self.inner.commands.send(Command::MailboxRespond { channel, response }).await;
                    }
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The replica's answer to one mailbox request from `peer`.
    pub(crate) fn serve_mailbox(
        &self,
        peer: PeerId,
        request: mailbox_proto::Request,
    ) -> mailbox_proto::Response {
        use mailbox_proto::{Operation, Request, Response};
        let now = unix_secs();
        let refused = |reason: String| Response::Refused { reason };
        let trouble = |e: Error| {
            tracing::error!(%e, "mailbox store failed");
            refused("the replica cannot serve it now".into())
        };
        match request {
            Request::Deposit { mailbox_id, item_id, envelope, expires_at } => {
                if expires_at < now {
                    return refused("the item has already expired".into());
                }
                let deposit = MailboxDeposit {
                    mailbox_id,
                    item_id,
                    depositor: peer.to_string(),
                    envelope,
                    expires_at: expires_at.min(now + mailbox::MAX_ITEM_TTL.as_secs()),
                };
                match self.inner.store.mailbox_deposit(&deposit, &mailbox::QUOTAS, unix_ms()) {
                    Ok(None) => Response::Stored,
                    Ok(Some(reason)) => Response::QuotaExceeded { reason },
                    Err(e) => trouble(e),
                }
            }
            Request::Fetch { mailbox_id, proof } => {
                if let Err(e) = proof.verify(&mailbox_id, Operation::Fetch, &[], now) {
                    return refused(e.to_string());
                }
                match self.inner.store.mailbox_items(
                    &mailbox_id,
                    now,
                    mailbox_proto::MAX_FETCH_ITEMS,
                    mailbox_proto::MAX_FETCH_BYTES,
                ) {
                    Ok((items, more)) => Response::Items {
                        items: items
                            .into_iter()
                            .map(|(item_id, envelope)| mailbox_proto::Item { item_id, envelope })
                            .collect(),
                        more,
                    },
                    Err(e) => trouble(e),
                }
            }
            Request::Delete { mailbox_id, item_ids, proof } => {
                if let Err(e) = proof.verify(&mailbox_id, Operation::Delete, &item_ids, now) {
                    return refused(e.to_string());
                }
                match self.inner.store.mailbox_delete(&mailbox_id, &item_ids) {
                    Ok(count) => Response::Deleted { count: count as u32 },
                    Err(e) => trouble(e),
                }
            }
        }
    }

    /// Fetches our mailboxes on start, every [`mailbox::FETCH_INTERVAL`] and when our
    /// reservations change; as a replica, purges expired items every
    /// [`mailbox::PURGE_INTERVAL`].
    async fn run_mailboxes(self, mut shutdown: watch::Receiver<bool>) {
        let mut fetch = tokio::time::interval(mailbox::FETCH_INTERVAL);
        fetch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(mailbox::PURGE_INTERVAL);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let fetch_now = tokio::select! {
                _ = fetch.tick() => true,
                _ = self.inner.fetch_wake.notified() => true,
                _ = purge.tick() => false,
                _ = shutdown.changed() => return,
            };
            if fetch_now {
                tokio::select! {
                    fetched = self.fetch_mailboxes() => {
                        if fetched > 0 {
                            tracing::info!(fetched, "fetched messages from our mailboxes");
                        }
                    }
                    _ = shutdown.changed() => return,
                }
            } else {
                match self.inner.store.mailbox_purge(unix_secs()) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "dropped expired mailbox items"),
                    Err(e) => tracing::error!(%e, "cannot purge mailbox items"),
                }
                // Chunks of a message the sender stopped sending before it was complete.
                let before = unix_ms().saturating_sub(MESSAGE_TTL.as_millis() as u64);
                match self.inner.store.purge_chunks(before) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "dropped chunks of incomplete messages"),
                    Err(e) => tracing::error!(%e, "cannot purge chunks"),
                }
            }
        }
    }

    /// Fetches from the replicas of our mailboxes for the current and the previous period,
    /// accepts every envelope through the inbound path, then deletes what was accepted;
    /// returns how many items were taken.
    pub async fn fetch_mailboxes(&self) -> usize {
        let key = *self.inner.identity.identity_key();
        let period = mailbox_proto::period_of(unix_secs());
        let mut taken = 0;
        for period in [period, period.saturating_sub(1)] {
            let mailbox_id = mailbox_proto::mailbox_id(&key, period);
            for (replica, addresses) in self.replicas(&mailbox_id, false).await {
                match self.fetch_from(replica, addresses, mailbox_id).await {
                    Ok(n) => taken += n,
                    Err(e) => tracing::debug!(%replica, %e, "mailbox fetch failed"),
                }
            }
        }
        taken
    }

    /// Fetch-then-delete rounds against one replica until it has no more.
    async fn fetch_from(
        &self,
        replica: PeerId,
        addresses: Vec<Multiaddr>,
        mailbox_id: mailbox_proto::MailboxId,
    ) -> std::result::Result<usize, String> {
        use mailbox_proto::{Operation, Proof, Request, Response};
        let mut taken = 0;
        for _ in 0..mailbox::MAX_FETCH_ROUNDS {
            let proof =
                Proof::sign(&self.inner.identity, &mailbox_id, Operation::Fetch, unix_secs(), &[])
                    .map_err(|e| e.to_string())?;
            let request = Request::Fetch { mailbox_id, proof };
            let (items, more) =
                match self.mailbox_request(replica, addresses.clone(), request).await? {
                    Response::Items { items, more } => (items, more),
                    Response::Refused { reason } => return Err(format!("refused: {reason}")),
                    other => return Err(format!("unexpected answer {other:?}")),
                };
            let mut done = Vec::with_capacity(items.len());
            for item in items {
                // An envelope that does not open is deleted too: it never will.
                if self.open_and_accept(item.envelope).await != Ack::Busy {
                    done.push(item.item_id);
                }
            }
            if done.is_empty() {
                return Ok(taken);
            }
            taken += done.len();
            let proof = Proof::sign(
                &self.inner.identity,
                &mailbox_id,
                Operation::Delete,
                unix_secs(),
                &done,
            )
            .map_err(|e| e.to_string())?;
            let request = Request::Delete { mailbox_id, item_ids: done, proof };
            match self.mailbox_request(replica, addresses.clone(), request).await? {
                Response::Deleted { .. } => {}
                other => return Err(format!("delete not done: {other:?}")),
            }
            if !more {
                break;
            }
        }
        Ok(taken)
    }

    /// The addresses this node is reachable at: confirmed direct external addresses first,
    /// then relay circuits (DESIGN.md §5: a direct connection costs no relay and no extra hop,
    /// so a sender tries it before a circuit), within the limits of invites and presence
    /// records.
    fn reachable_addresses(net: &NetStatus) -> Vec<Multiaddr> {
        let mut addresses: Vec<Multiaddr> =
            net.external.iter().filter(|a| !swarm::is_relayed(a)).cloned().collect();
        addresses.extend(net.reservations.iter().map(|(_, c)| swarm::without_peer(c)));
        addresses.retain(|a| a.len() <= kolokol_protocol::invite::MAX_ADDRESS_LEN);
        addresses.truncate(kolokol_protocol::invite::MAX_INVITE_ADDRESSES);
        addresses
    }

    /// Signs and publishes a presence record with the current addresses (nothing to publish
    /// while there are none).
    async fn publish_presence(&self) -> Result<()> {
        let net = self.net_status().await?;
        let addresses = Self::reachable_addresses(&net);
        if addresses.is_empty() {
            return Ok(());
        }
        let now = unix_secs();
        let node = self.clone();
        let bytes: Vec<Vec<u8>> = addresses.iter().map(|a| a.to_vec()).collect();
        let prekey = self.inner.store.newest_prekey()?;
        let record = self
            .on_worker(move || {
                PresenceRecord::sign(
                    &node.inner.identity,
                    &node.certificate(),
                    bytes,
                    unix_ms(),
                    now + PRESENCE_TTL.as_secs(),
                    prekey,
                )
                .and_then(|r| r.to_bytes())
            })
            .await??;
        self.inner
            .commands
            .send(Command::PublishPresence { record, ttl: PRESENCE_TTL })
            .await
            .map_err(|_| Error::ShuttingDown)
    }

    /// Looks up a peer's presence record in the DHT; `None` if nobody has a valid one.
    pub async fn resolve(&self, peer: PeerId) -> Result<Option<PresenceRecord>> {
        self.lookup(peer, false).await
    }

    async fn lookup(&self, peer: PeerId, remote_only: bool) -> Result<Option<PresenceRecord>> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Resolve { peer, remote_only, reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        Ok(tokio::time::timeout(RESOLVE_TIMEOUT, rx).await.ok().and_then(Result::ok).flatten())
    }

    /// Refreshes a peer's addresses from its presence record, at most once per
    /// [`RESOLVE_INTERVAL`]; returns true if it found addresses we did not have.
    async fn refresh_addresses(&self, peer_id: &str) -> bool {
        self.refresh_from_presence(peer_id, RESOLVE_TIMEOUT).await.0
    }

    /// Looks the peer's presence record up (at most once per [`RESOLVE_INTERVAL`], waiting at
    /// most `timeout`), merges its addresses into what we know, and returns whether they were
    /// new, with the record's signed prekey.
    async fn refresh_from_presence(
        &self,
        peer_id: &str,
        timeout: Duration,
    ) -> (bool, Option<kolokol_protocol::prekey::SignedPrekey>) {
        let Ok(peer) = peer_id.parse::<PeerId>() else { return (false, None) };
        {
            let mut last = self.inner.resolved_at.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if last.get(peer_id).is_some_and(|t| now.duration_since(*t) < RESOLVE_INTERVAL) {
                return (false, None);
            }
            if last.len() >= MAX_TRACKED_LOOKUPS {
                last.clear();
            }
            last.insert(peer_id.to_owned(), now);
        }
        let record = match tokio::time::timeout(timeout, self.resolve(peer)).await {
            Ok(Ok(Some(record))) => record,
            Ok(_) => return (false, None),
            Err(_) => {
                // A lookup cut short by a caller in a hurry (the prekey's 3 s) did not answer
                // the question, so it must not hold back a patient one.
                self.inner.resolved_at.lock().unwrap_or_else(|p| p.into_inner()).remove(peer_id);
                return (false, None);
            }
        };
        let found: Vec<String> = record
            .body
            .addresses
            .iter()
            .filter_map(|b| Multiaddr::try_from(b.clone()).ok())
            .map(|a| a.to_string())
            .collect();
        let known = self.known_addresses(peer_id);
        let new = found.iter().any(|a| !known.contains(a));
        let mut merged = found.clone();
        merged.extend(known.into_iter().filter(|a| !found.contains(a)));
        merged.truncate(kolokol_protocol::invite::MAX_INVITE_ADDRESSES);
        if let Ok(Some(_)) = self.inner.store.contact_by_peer(peer_id) {
            if let Err(e) = self.inner.store.set_contact_addresses(peer_id, &merged) {
                tracing::error!(%e, "cannot update a contact's addresses");
            }
        } else {
            let mut others =
                self.inner.stranger_addresses.lock().unwrap_or_else(|p| p.into_inner());
            if others.len() >= MAX_TRACKED_LOOKUPS {
                others.clear();
            }
            others.insert(peer_id.to_owned(), merged);
        }
        (new, record.body.prekey)
    }

    /// The addresses we know for a peer: a contact's stored ones, else those last resolved.
    fn known_addresses(&self, peer_id: &str) -> Vec<String> {
        match self.inner.store.contact_by_peer(peer_id) {
            Ok(Some(c)) => c.addresses,
            _ => self
                .inner
                .stranger_addresses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(peer_id)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Checks, in order, everything a message depends on, each with a one-line result and a
    /// hint when something is wrong. (That the daemon runs is the CLI's check: it is talking
    /// to it.)
    pub async fn doctor(&self) -> Result<control::DoctorReport> {
        use control::DoctorCheck as Check;
        let check = |name: &str, status: &str, detail: String, hint: Option<&str>| Check {
            name: name.into(),
            status: status.into(),
            detail,
            hint: hint.map(Into::into),
        };
        let mut checks = Vec::new();
        let key = self.inner.data_dir.join(crate::data_dir::IDENTITY_FILE);
        checks.push(match std::fs::metadata(&key) {
            Ok(m) if std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o077 == 0 => {
                check(
                    "identity",
                    "ok",
                    format!("{} (peer id {})", key.display(), self.peer_id()),
                    None,
                )
            }
            Ok(_) => check(
                "identity",
                "warn",
                format!("{} is readable by other users", key.display()),
                Some("run: chmod 600 on it"),
            ),
            Err(e) => check(
                "identity",
                "fail",
                format!("cannot read {}: {e}", key.display()),
                Some(
                    "restore identity.key from a backup; without it your contacts cannot reach you",
                ),
            ),
        });
        let net = self.net_status().await?;
        let direct: Vec<String> =
            net.listen.iter().filter(|a| !swarm::is_relayed(a)).map(ToString::to_string).collect();
        checks.push(if direct.is_empty() {
            check(
                "listen addresses",
                "ok",
                "none: outbound connections only, reachable through relays".into(),
                None,
            )
        } else {
            check("listen addresses", "ok", direct.join(", "), None)
        });
        let relay = self.inner.role == Role::Relay;
        checks.push(if net.bootstrap_peers == 0 && relay {
            check(
                "bootstrap",
                "ok",
                "none configured: this relay is a bootstrap peer for others".into(),
                None,
            )
        } else if net.bootstrap_peers == 0 && !net.lan.is_empty() {
            check(
                "bootstrap",
                "warn",
                format!(
                    "no bootstrap source, but mDNS found {} on the local network: only those can be reached",
                    count(net.lan.len(), "peer", "peers")
                ),
                Some("to reach contacts elsewhere, start the node with --bootstrap <relay address>, or import a bundle: kolokol peers import FILE"),
            )
        } else if net.bootstrap_peers == 0 {
            check(
                "bootstrap",
                "fail",
                "no bootstrap source: no --bootstrap, empty peer cache, no invite addresses".into(),
                Some("start the node with --bootstrap <relay address>, or import a bundle: kolokol peers import FILE"),
            )
        } else if net.bootstrap_connected == 0 {
            check(
                "bootstrap",
                "fail",
                format!("none of {} bootstrap peers is reachable", net.bootstrap_peers),
                Some("check the addresses and your network; ask a contact for a bundle (kolokol peers export)"),
            )
        } else {
            check(
                "bootstrap",
                "ok",
                format!("connected to {} of {} bootstrap peers", net.bootstrap_connected, net.bootstrap_peers),
                None,
            )
        });
        checks.push(if net.public {
            check("reachability", "ok", "public: a direct address is confirmed reachable".into(), None)
        } else if !net.reservations.is_empty() {
            check("reachability", "ok", "behind NAT or firewall, reachable through relays".into(), None)
        } else {
            check(
                "reachability",
                "fail",
                "unreachable: no confirmed direct address and no relay reservation".into(),
                Some("make sure a bootstrap peer is a relay, or run with --listen and --external-address on a public host"),
            )
        });
        checks.push(match net.reservations.len() {
            n if n >= swarm::TARGET_RESERVATIONS => check(
                "relay reservations",
                "ok",
                format!("{n} relays hold a reservation for you"),
                None,
            ),
            0 if net.public => {
                check("relay reservations", "ok", "none needed: directly reachable".into(), None)
            }
            0 => check(
                "relay reservations",
                "fail",
                format!("none ({} known)", count(net.known_relays, "relay", "relays")),
                Some("bootstrap from a community relay: kolokol node --bootstrap <relay address>"),
            ),
            n => check(
                "relay reservations",
                "warn",
                format!(
                    "{n} of {} wanted ({} known): one relay going down makes you unreachable",
                    swarm::TARGET_RESERVATIONS,
                    count(net.known_relays, "relay", "relays")
                ),
                Some("add a second relay with --bootstrap, or import a bundle that lists one"),
            ),
        });
        checks.push(match self.lookup(self.peer_id(), true).await? {
            Some(record) => check(
                "presence record",
                "ok",
                format!(
                    "found in the DHT with {}",
                    count(record.body.addresses.len(), "address", "addresses")
                ),
                None,
            ),
            // A relay that started alone has nobody to store its record; that is where every
            // network begins, not a fault.
            None if relay && net.routing_table == 0 => check(
                "presence record",
                "warn",
                "not found in the DHT: no other DHT server knows this relay yet".into(),
                Some("nothing to fix alone; a second relay started with --bootstrap <this relay's address> will hold it"),
            ),
            None => check(
                "presence record",
                "fail",
                match &net.presence {
                    Some(Err(e)) => format!("not found in the DHT; last publication: {e}"),
                    _ => "not found in the DHT".into(),
                },
                Some("contacts whose invite addresses go stale cannot find you; check bootstrap and wait a minute"),
            ),
        });
        checks.extend(self.doctor_mailbox().await);
        Ok(control::DoctorReport { checks })
    }

    /// The doctor's mailbox checks: which replicas of our own mailbox answer (fetching what
    /// waits there, as a fetch always does), and a probe deposited in our own mailbox and
    /// fetched back, the whole store-and-forward path a contact's message takes while we are
    /// offline.
    async fn doctor_mailbox(&self) -> Vec<control::DoctorCheck> {
        use mailbox_proto::{Request, Response};
        let check =
            |name: &str, status: &str, detail: String, hint: Option<&str>| control::DoctorCheck {
                name: name.into(),
                status: status.into(),
                detail,
                hint: hint.map(Into::into),
            };
        let now = unix_secs();
        let mailbox_id = mailbox_proto::mailbox_id(
            self.inner.identity.identity_key(),
            mailbox_proto::period_of(now),
        );
        let replicas = self.replicas(&mailbox_id, false).await;
        if replicas.is_empty() {
            // A relay alone is every user's replica but has none of its own until a second DHT
            // server joins; for a user node it means offline messages cannot wait anywhere.
            let (status, hint) = if self.inner.role == Role::Relay {
                (
                    "warn",
                    "a relay needs another DHT server to hold its own mailbox; users' mailboxes are unaffected",
                )
            } else {
                (
                    "fail",
                    "messages to you while you are offline have nowhere to wait; connect to a relay or DHT server",
                )
            };
            return vec![
                check(
                    "mailbox replicas",
                    status,
                    "no other DHT server found for your mailbox".into(),
                    Some(hint),
                ),
                check("mailbox round trip", status, "skipped: no replica".into(), None),
            ];
        }
        let mut answered = 0;
        let mut waiting = 0;
        let mut errors = Vec::new();
        for (replica, addresses) in &replicas {
            match self.fetch_from(*replica, addresses.clone(), mailbox_id).await {
                Ok(n) => {
                    answered += 1;
                    waiting += n;
                }
                Err(e) => errors.push(format!("{replica}: {e}")),
            }
        }
        let taken = if waiting > 0 {
            format!(", took {waiting} waiting message(s)")
        } else {
            String::new()
        };
        let replicas_check = match answered {
            0 => check(
                "mailbox replicas",
                "fail",
                format!("none of {} replicas answered ({})", replicas.len(), errors.join("; ")),
                Some("check your connection to the DHT (bootstrap and relay checks above)"),
            ),
            n if n < replicas.len().min(mailbox::REQUIRED_ACKS) => check(
                "mailbox replicas",
                "warn",
                format!("{n} of {} replicas answered{taken}", replicas.len()),
                Some("a mailbox with one live replica loses messages if that replica goes"),
            ),
            n => check(
                "mailbox replicas",
                "ok",
                format!("{n} of {} replicas answered{taken}", replicas.len()),
                None,
            ),
        };

        // The probe is a delivery receipt for a message that never existed, sealed to our own
        // device key: fetched back, it opens, is recognised as nobody's receipt, and leaves no
        // trace in the inbox.
        let mut random = [0u8; 48];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let (of, rest) = random.split_at(16);
        let probe = Content {
            id: random_id(),
            sent_at_ms: unix_ms(),
            body: Body::Receipt { of: of.try_into().unwrap_or([0; 16]) },
        };
        let ephemeral: [u8; 32] = rest.try_into().unwrap_or([0; 32]);
        let node = self.clone();
        let sealed = self
            .on_worker(move || {
                let own_key = *node.inner.identity.device().public();
                envelope::seal(
                    &node.inner.identity,
                    &node.certificate(),
                    &own_key,
                    &probe,
                    ephemeral,
                )
            })
            .await;
        let Ok(Ok(envelope)) = sealed else {
            return vec![
                replicas_check,
                check("mailbox round trip", "fail", "cannot seal the probe".into(), None),
            ];
        };
        let item_id = mailbox_proto::item_id(&random_id());
        let mut stored = 0;
        for (replica, addresses) in &replicas {
            let deposit = Request::Deposit {
                mailbox_id,
                item_id,
                envelope: envelope.clone(),
                expires_at: now + 3600,
            };
            if let Ok(Response::Stored) =
                self.mailbox_request(*replica, addresses.clone(), deposit).await
            {
                stored += 1;
            }
        }
        let mut fetched = 0;
        for (replica, addresses) in &replicas {
            if let Ok(n) = self.fetch_from(*replica, addresses.clone(), mailbox_id).await {
                fetched += n;
            }
        }
        let round_trip = if stored > 0 && fetched >= stored {
            check(
                "mailbox round trip",
                "ok",
                format!("a probe was stored on {stored} replica(s) and fetched back"),
                None,
            )
        } else if stored == 0 {
            check(
                "mailbox round trip",
                "fail",
                "no replica stored the probe".into(),
                Some("the replicas refuse deposits (full, or not serving mailboxes)"),
            )
        } else {
            check(
                "mailbox round trip",
                "fail",
                format!("the probe was stored on {stored} replica(s) but {fetched} came back"),
                Some("the replicas do not hand your items back; check the mailbox replicas line"),
            )
        };
        vec![replicas_check, round_trip]
    }

    /// Connected and cached peers.
    pub async fn peers(&self) -> Result<control::PeersInfo> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Peers { reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        let connected = rx.await.map_err(|_| Error::ShuttingDown)?;
        let net = self.net_status().await?;
        Ok(control::PeersInfo {
            connected: connected
                .into_iter()
                .map(|c| control::ConnectedPeerInfo {
                    peer_id: c.peer.to_string(),
                    via: c.via.into(),
                    // A dialed address may end in the peer's id and an accepted one not; the
                    // peer id is its own field, so every address is shown without it.
                    address: swarm::without_peer(&c.address).to_string(),
                })
                .collect(),
            cached: self
                .inner
                .store
                .cached_peers(MAX_CACHED_PEERS)?
                .into_iter()
                .map(|p| control::CachedPeerInfo {
                    peer_id: p.peer_id,
                    addresses: p.addresses,
                    relay: p.relay,
                    source: p.source,
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
    pub fn export_peers(&self) -> Result<control::BundleInfo> {
        let mut peers: Vec<BundlePeer> = self
            .inner
            .store
            .cached_peers(MAX_BUNDLE_PEERS)?
            .into_iter()
            .filter(|p| p.last_success_ms.is_some())
            .filter_map(|p| {
                let peer: PeerId = p.peer_id.parse().ok()?;
                let addresses: Vec<Vec<u8>> = p
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<Multiaddr>().ok())
                    .map(|a| a.to_vec())
                    .filter(|a| a.len() <= MAX_BUNDLE_ADDRESS_LEN)
                    .take(MAX_BUNDLE_ADDRESSES)
                    .collect();
                (!addresses.is_empty()).then(|| BundlePeer {
                    peer_id: peer.to_bytes(),
                    addresses,
                    relay: p.relay,
                })
            })
            .collect();
        let now = unix_secs();
        let bundle = loop {
            let bundle = Bundle::sign(&self.inner.identity, peers.clone(), now)?;
            if peers.is_empty() || codec::encode(&bundle)?.len() <= codec::MAX_DECODE_LEN {
                break bundle;
            }
            peers.pop();
        };
        Ok(control::BundleInfo { bundle: bundle.to_text()?, peers: bundle.body.peers.len() })
    }

    /// Imports a bootstrap bundle: verifies it, caches its peers and dials them. Peers without
    /// a readable address are skipped and not counted.
    pub async fn import_peers(&self, text: &str) -> Result<control::ImportResult> {
        // Base58 decoding takes time quadratic in the length (about a second for the largest
        // bundle), so it runs on a worker rather than on the async threads.
        let text = text.to_owned();
        let (bundle, exporter) = self.on_worker(move || Bundle::from_text(&text)).await??;
        let now = unix_ms();
        let mut imported = 0;
        for p in &bundle.body.peers {
            let Ok(peer) = PeerId::from_bytes(&p.peer_id) else { continue };
            if peer == self.peer_id() {
                continue;
            }
            let addresses: Vec<Multiaddr> =
                p.addresses.iter().filter_map(|b| Multiaddr::try_from(b.clone()).ok()).collect();
            if addresses.is_empty() {
                continue;
            }
            let texts: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            self.inner.store.peer_imported(&peer.to_string(), &texts, p.relay, now)?;
            for address in addresses {
                let address = address.with(libp2p::multiaddr::Protocol::P2p(peer));
                let _ = self.inner.commands.send(Command::AddBootstrap { address }).await;
            }
            imported += 1;
        }
        Ok(control::ImportResult { imported, exporter: exporter.to_string() })
    }
}

/// Every bootstrap address, in the order of DESIGN.md §8: the peer cache (relays and recent
/// successes first), then the configured addresses, then the relays named in contacts' invite
/// addresses. Imported bundles feed the peer cache. Each address appears once, but a peer may
/// appear with several: a relay that moved is given with its new address by `--bootstrap`
/// while the cache still holds the old one, and only dialing both finds it. The swarm does
/// not redial a peer it is connected to, whichever address got it there.
fn bootstrap_sources(store: &Store, config: &Config) -> Result<Vec<Multiaddr>> {
    use libp2p::multiaddr::Protocol;
    let mut out: Vec<Multiaddr> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut push = |addr: Multiaddr, out: &mut Vec<Multiaddr>| {
        if crate::config::peer_id_of(&addr).is_ok() && seen.insert(addr.clone()) {
            out.push(addr);
        }
    };
    for p in store.cached_peers(MAX_BOOTSTRAP_FROM_CACHE)? {
        let Ok(peer) = p.peer_id.parse::<PeerId>() else { continue };
        if let Some(addr) = p.addresses.iter().find_map(|a| a.parse::<Multiaddr>().ok()) {
            push(addr.with(Protocol::P2p(peer)), &mut out);
        }
    }
    for addr in &config.bootstrap {
        push(addr.clone(), &mut out);
    }
    for contact in store.contacts()? {
        for addr in contact.addresses.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
            // The relay is the part of a circuit address before `/p2p-circuit`.
            let relay: Multiaddr = addr.iter().take_while(|p| *p != Protocol::P2pCircuit).collect();
            if relay != addr {
                push(relay, &mut out);
            }
        }
    }
    Ok(out)
}

/// `n` and the noun in the form that goes with it: "1 relay", "2 relays".
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn check_contact_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::BadMessage("a contact name cannot be empty".into()));
    }
    if name.len() > MAX_CONTACT_NAME_LEN {
        return Err(Error::BadMessage(format!(
            "a contact name can be at most {MAX_CONTACT_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::BadMessage("a contact name cannot contain control characters".into()));
    }
    Ok(())
}

fn contact_view(c: ContactRow) -> control::Contact {
    control::Contact {
        name: c.name,
        peer_id: c.peer_id,
        addresses: c.addresses,
        added_at_ms: c.added_at_ms,
    }
}

fn outbox_view(m: crate::store::OutboxView) -> control::OutboxMessage {
    control::OutboxMessage {
        id: format_id(&m.id),
        to: m.contact.unwrap_or(m.peer_id),
        text: m.text,
        state: m.state,
        detail: m.detail,
        attempts: m.attempts,
        created_at_ms: m.created_at_ms,
    }
}

fn inbox_view(m: InboxRow) -> InboxMessage {
    InboxMessage {
        id: format_id(&m.id),
        from: m.contact,
        from_peer_id: m.peer_id,
        text: m.text,
        sent_at_ms: m.sent_at_ms,
        received_at_ms: m.received_at_ms,
        read_at_ms: m.read_at_ms,
        truncated: false,
    }
}

/// The view of a received message that goes into a `message` event: its text cut to
/// [`control::EVENT_TEXT_LEN`] bytes, so the event buffer stays small.
fn event_view(m: InboxRow) -> InboxMessage {
    let mut view = inbox_view(m);
    if view.text.len() > control::EVENT_TEXT_LEN {
        let mut end = control::EVENT_TEXT_LEN;
        while !view.text.is_char_boundary(end) {
            end -= 1;
        }
        view.text.truncate(end);
        view.truncated = true;
    }
    view
}

fn random_id() -> MessageId {
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    id
}

/// Unix seconds now.
pub fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests;
