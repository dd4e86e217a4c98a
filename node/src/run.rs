//! The running node: [`RunningNode::start`] opens the data directory, builds every room, wires
//! them together and spawns their tasks; it is the only place that spawns a long-lived task, and
//! every one of them lives in one `JoinSet` that [`RunningNode::shutdown`] drains, so nothing
//! outlives the node.
//!
//! The tasks: the swarm task; the opener workers (`Inbox::run`); the outbox; the network
//! bookkeeping below (peer cache, presence, key schedules); the store's upkeep (WAL
//! checkpoints); the mailbox fetcher and the replica; the control socket; metrics when asked
//! for.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::bootstrap::{self, PeerBook};
use crate::config::Config;
use crate::contacts::Contacts;
use crate::conversations::Conversations;
use crate::data_dir::{CONTROL_SOCKET, DataDir};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::groups::{Groups, GroupsParts};
use crate::inbox::{Inbox, InboxParts};
use crate::keys::Keys;
use crate::mailbox::Mailboxes;
use crate::node::{Node, Parts};
use crate::outbox::{Outbox, OutboxParts};
use crate::presence::{self, Presence};
use crate::store::Store;
use crate::swarm::{self, NetEvent};
use crate::workers::Workers;

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
    pub async fn start(mut config: Config) -> Result<Self> {
        config.validate()?;
        let clock = config.clock.clone();
        let data_dir = DataDir::open(&config.data_dir)?;
        // The passphrase (or key file name) is needed once: taken out of the configuration,
        // which lives as long as the node, and wiped when dropped here.
        let unlock = config.unlock.take();
        let (store, identity) = data_dir.open_node_store(unlock.as_ref())?;
        drop(unlock);
        let config = Config { bootstrap: bootstrap::sources(&store, &config)?, ..config };
        // What worked on which network, from earlier runs: the racing dialer starts from it.
        let endpoints =
            store.endpoints()?.into_iter().map(swarm::EndpointRecord::from_row).collect();
        // The swarm task spares contacts every quota meant for strangers, and relays for them
        // alone; it follows the contact book as it changes.
        let (contact_peers, watched) = tokio::sync::watch::channel(Arc::new(
            store.contacts()?.into_iter().map(|c| c.peer_id).collect(),
        ));
        let (swarm, mut event_loop, channels) =
            swarm::new(identity.keypair(), &config, endpoints, watched)?;
        // The metrics address is bound before anything else starts, so a port in use fails the
        // start with a clear error instead of leaving a node without the metrics it was asked for.
        let metrics = match config.metrics {
            Some(addr) => {
                let listener = crate::metrics::bind(addr).await?;
                let mut registry = prometheus_client::registry::Registry::default();
                event_loop.record_metrics(libp2p::metrics::Metrics::new(&mut registry));
                Some((listener, Arc::new(registry)))
            }
            None => None,
        };

        let keys = Keys::new(identity, store.clone(), clock.clone())?;
        let workers = Workers::per_core();
        let events = Events::new(store.clone());
        let outbox_wake = Arc::new(Notify::new());
        let fetch_wake = Arc::new(Notify::new());
        let conversations = Conversations::new(
            store.clone(),
            keys.clone(),
            workers.clone(),
            clock.clone(),
            events.clone(),
            outbox_wake.clone(),
        );
        let presence = Presence::new(
            swarm.clone(),
            config.bridge,
            store.clone(),
            keys.clone(),
            workers.clone(),
            clock.clone(),
        );
        let mailboxes = Mailboxes::new(swarm.clone(), store.clone(), keys.clone(), clock.clone());
        let outbox = Outbox::new(OutboxParts {
            conversations: conversations.clone(),
            presence: presence.clone(),
            mailboxes: mailboxes.clone(),
            swarm: swarm.clone(),
            store: store.clone(),
            events: events.clone(),
            clock: clock.clone(),
            wake: outbox_wake.clone(),
            in_flight: Default::default(),
            numbering: Default::default(),
            paths: Default::default(),
            max_file_size: config.max_file_size,
            acknowledgements: Default::default(),
        });
        let groups = Groups::new(GroupsParts {
            store: store.clone(),
            keys: keys.clone(),
            conversations: conversations.clone(),
            outbox: outbox.clone(),
            presence: presence.clone(),
            events: events.clone(),
            clock: clock.clone(),
        });
        let downloads = crate::files::Downloads::new(crate::files::DownloadsParts {
            store: store.clone(),
            events: events.clone(),
            clock: clock.clone(),
            dir: config
                .download_dir
                .clone()
                .unwrap_or_else(|| data_dir.path(crate::files::DOWNLOADS_DIR)),
            partial: data_dir.path(crate::files::PARTIAL_DIR),
            max_size: config.max_file_size,
            finishing: Default::default(),
        });
        let inbox = Inbox::new(InboxParts {
            downloads,
            conversations: conversations.clone(),
            store: store.clone(),
            keys: keys.clone(),
            events: events.clone(),
            workers: workers.clone(),
            clock: clock.clone(),
            groups: groups.clone(),
            outbox_wake: outbox_wake.clone(),
            quota_log: Default::default(),
            verified_certificates: Default::default(),
        });
        let contacts = Contacts {
            peers: Arc::new(contact_peers),
            store: store.clone(),
            keys: keys.clone(),
            conversations: conversations.clone(),
            clock: clock.clone(),
        };
        let chats = crate::chats::Chats { store: store.clone(), clock: clock.clone() };
        let peers = PeerBook {
            swarm: swarm.clone(),
            store: store.clone(),
            keys: keys.clone(),
            workers: workers.clone(),
            clock: clock.clone(),
        };
        // Messages left queued by a previous run are due now, not at their old retry time; the
        // sealed envelopes of items that ended while the node stopped are dropped.
        store.wake_all(clock.now_ms())?;
        store.wake_file_sends(None, clock.now_ms())?;
        store.purge_parts()?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(event_loop.run(shutdown_rx.clone()));
        tasks.spawn(inbox.clone().run(
            channels.inbound,
            channels.inbound_contacts,
            swarm.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(outbox.clone().run(shutdown_rx.clone()));
        tasks.spawn(
            Bookkeeping {
                keys: keys.clone(),
                store: store.clone(),
                clock: clock.clone(),
                conversations,
                presence: presence.clone(),
                outbox: outbox.clone(),
                fetch_wake: fetch_wake.clone(),
            }
            .run(channels.net_events, shutdown_rx.clone()),
        );
        tasks.spawn(upkeep(store.clone(), workers.clone(), shutdown_rx.clone()));
        tasks.spawn(mailboxes.clone().run_replica(channels.mailbox_requests, shutdown_rx.clone()));
        tasks.spawn(mailboxes.clone().run_fetch(
            inbox.clone(),
            config.mailbox_fetch_interval,
            fetch_wake,
            shutdown_rx.clone(),
        ));
        tasks.spawn(
            mailboxes.clone().run_handover(config.mailbox_handover_interval, shutdown_rx.clone()),
        );
        let mut metrics_address = None;
        if let Some((listener, registry)) = metrics {
            let address =
                listener.local_addr().map_err(|e| Error::Network(format!("metrics: {e}")))?;
            tracing::info!(%address, "serving metrics at /metrics");
            metrics_address = Some(address);
            let source = crate::metrics::Source { store: store.clone(), swarm: swarm.clone() };
            tasks.spawn(crate::metrics::serve(source, listener, registry, shutdown_rx.clone()));
        }
        let node = Node::new(Parts {
            keys,
            store,
            swarm,
            events,
            contacts,
            chats,
            groups,
            outbox,
            outbox_wake,
            inbox,
            presence,
            mailboxes,
            peers,
            workers,
            clock,
            role: config.role,
            data_dir: config.data_dir.clone(),
            has_bootstrap: !config.bootstrap.is_empty(),
            read_receipts: config.read_receipts,
        });
        let socket = data_dir.path(CONTROL_SOCKET);
        let listener = crate::control::bind(&socket)?;
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

/// The node's reactions to the network and to time passing: retry what waits for a peer that
/// connected, remember peers in the peer cache, fetch and republish when our addresses change,
/// and every [`presence::PRESENCE_REFRESH`] or up to five minutes sooner
/// (`presence::refresh_period`) renew the certificate, rotate prekeys, delete expired receive
/// keys and republish the presence record before it expires.
struct Bookkeeping {
    keys: Keys,
    store: Store,
    clock: crate::clock::Clock,
    conversations: Conversations,
    presence: Presence,
    outbox: Outbox,
    fetch_wake: Arc<Notify>,
}

impl Bookkeeping {
    async fn run(self, mut net: mpsc::Receiver<NetEvent>, mut shutdown: watch::Receiver<bool>) {
        // The first refresh comes at once, at start; each next one after a period drawn anew
        // (`presence::refresh_period`), so nodes that started together drift apart.
        let refresh = tokio::time::sleep(std::time::Duration::ZERO);
        tokio::pin!(refresh);
        loop {
            let result = tokio::select! {
                event = net.recv() => match event {
                    Some(NetEvent::PeerConnected(peer)) => self.outbox.wake_peer(&peer).map(drop),
                    Some(NetEvent::PeerSeen { peer, address, relay }) => {
                        self.store.peer_seen(&peer, &address, relay, self.clock.now_ms())
                    }
                    Some(NetEvent::AddressesChanged) => {
                        // New reservations mean we are back online: look in our mailboxes.
                        self.fetch_wake.notify_one();
                        self.presence.publish().await
                    }
                    Some(NetEvent::Republish) => self.presence.publish().await,
                    Some(NetEvent::DhtBack) => {
                        self.fetch_wake.notify_one();
                        Ok(())
                    }
                    Some(NetEvent::Reconnected) => {
                        // The path may be back for everything that waits: try it all now
                        // instead of at each message's next retry.
                        self.fetch_wake.notify_one();
                        self.outbox.wake_all().map(drop)
                    }
                    Some(NetEvent::Endpoint(record)) => self.store.save_endpoint(&record.to_row()),
                    None => return,
                },
                _ = &mut refresh => {
                    let period = presence::refresh_period(rand::random());
                    refresh.as_mut().reset(tokio::time::Instant::now() + period);
                    self.refresh().await
                }
                _ = shutdown.changed() => return,
            };
            if let Err(e) = result {
                tracing::error!(%e, "network bookkeeping failed");
            }
        }
    }

    /// The periodic part: keys first, then the record that advertises them.
    async fn refresh(&self) -> Result<()> {
        self.keys.renew_certificate()?;
        self.keys.rotate_prekeys()?;
        self.conversations.expire_keys().await?;
        self.presence.publish().await
    }
}

/// How often the store's upkeep looks at the write-ahead log.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Checkpoints the store's write-ahead log off the delivery path: once the store has been idle
/// for `IDLE_BEFORE_CHECKPOINT` with more than `IDLE_CHECKPOINT_BYTES` in the log, or at once
/// past `MAX_WAL_BYTES`; and once more at shutdown, so a stopped node leaves an empty log.
/// A write that deleted a receive key (`Store::erasure_pending`) makes the next idle moment
/// checkpoint whatever the log's size: the log's old frames hold the key, and only a truncating
/// checkpoint erases them (issue 15, finding 1).
async fn upkeep(store: Store, workers: Workers, mut shutdown: watch::Receiver<bool>) {
    use crate::store::{IDLE_BEFORE_CHECKPOINT, IDLE_CHECKPOINT_BYTES, MAX_WAL_BYTES};
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        let wal = store.wal_bytes();
        let due = wal > MAX_WAL_BYTES
            || ((wal > IDLE_CHECKPOINT_BYTES || store.erasure_pending())
                && store.idle_for() >= IDLE_BEFORE_CHECKPOINT)
            || (stopping && (wal > 0 || store.erasure_pending()));
        if due {
            let store = store.clone();
            match workers.run_blocking(move || store.checkpoint()).await {
                Ok(Ok(pages)) => tracing::debug!(pages, wal, "checkpointed the store"),
                Ok(Err(e)) => tracing::warn!(%e, "cannot checkpoint the store"),
                Err(_) => {}
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
