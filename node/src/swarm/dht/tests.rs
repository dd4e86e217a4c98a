//! Our own presence record always has room in our record store: the record that makes room is
//! the one of someone else that expires soonest (the rule alone), a node whose store strangers
//! filled with valid records still stores its own (the swarm task, no network), and still
//! publishes it to a DHT server over 127.0.0.1 (two swarm tasks running). A record too large
//! for any store is reported and not retried.
//!
//! The store is filled through `on_put_record`, the handler every `PUT_VALUE` from a peer goes
//! through, rather than over the network: a peer may ask for 64 stores per 10 minutes
//! (`DHT_STORES_PER_PEER`), so filling 8 192 slots takes 128 identities, which the test gives
//! as the sources of the requests instead of running 128 swarms.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kolokol_protocol::identity::Identity;
use kolokol_protocol::presence::{PresenceRecord, record_key};
use libp2p::{Multiaddr, PeerId, kad};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{Config, Role};
use crate::presence::PRESENCE_TTL;
use crate::swarm::admission::DHT_STORES_PER_PEER;
use crate::swarm::behaviour::{MAX_DHT_RECORD_BYTES, MAX_DHT_RECORDS};
use crate::swarm::dht::record_to_evict;
use crate::swarm::{self, Command, EventLoop};

/// How long the test waits for a connection, a publication or a lookup over loopback.
const WAIT: Duration = Duration::from_secs(30);

/// A record under `key` with a local expiry `expires` (as the store keeps it).
fn held(key: &str, expires: Option<Instant>) -> kad::Record {
    let mut record = kad::Record::new(kad::RecordKey::new(&key), vec![1]);
    record.expires = expires;
    record
}

#[test]
fn the_record_that_expires_soonest_makes_room_for_our_own_and_ours_never_does() {
    let now = Instant::now();
    let minutes = |m: u64| Some(now + Duration::from_secs(60 * m));
    let ours = kad::RecordKey::new(&"ours");
    let key = |k: &str| Some(kad::RecordKey::new(&k));
    let store = vec![held("late", minutes(50)), held("soon", minutes(5)), held("never", None)];
    assert_eq!(record_to_evict(&store, &ours, 4), None, "the store has room");
    assert_eq!(record_to_evict(&store, &ours, 3), key("soon"), "full: the soonest goes");
    assert_eq!(record_to_evict(store.clone(), &ours, 2), key("soon"), "over full too");
    // A record past its expiry (libp2p removes those only now and then) goes first.
    let mut stale = store.clone();
    stale.push(held("expired", Some(now - Duration::from_secs(1))));
    assert_eq!(record_to_evict(&stale, &ours, 4), key("expired"));
    // Our own record is replaced in place: nothing needs to go, even when ours expires first.
    let mut with_ours = store.clone();
    with_ours.push(held("ours", Some(now)));
    assert_eq!(record_to_evict(&with_ours, &ours, 4), None, "ours is held");
    // A record without an expiry goes last, but it goes: our record must fit.
    let timeless = vec![held("never", None), held("nor", None)];
    let chosen = record_to_evict(&timeless, &ours, 2).expect("a record to remove");
    assert!(chosen != ours && timeless.iter().any(|r| r.key == chosen));
    assert_eq!(record_to_evict(Vec::<kad::Record>::new(), &ours, 0), None, "nothing to remove");
}

/// An empty contact book that never changes.
fn no_contacts() -> watch::Receiver<std::sync::Arc<std::collections::HashSet<PeerId>>> {
    watch::channel(Default::default()).1
}

/// A presence record of `identity`, valid from now until `expires_at` (Unix seconds), and its
/// DHT key.
fn signed(identity: &Identity, expires_at: u64) -> kad::Record {
    let now = Clock::system().now_secs();
    let certificate = identity.certify(now - 60, now + 2 * 24 * 3600).expect("a certificate");
    let address = "/ip4/127.0.0.1/tcp/9".parse::<Multiaddr>().expect("address").to_vec();
    let record = PresenceRecord::sign(
        identity,
        &certificate,
        vec![address],
        Clock::system().now_ms(),
        expires_at,
        None,
        Vec::new(),
    )
    .expect("a presence record");
    kad::Record::new(
        kad::RecordKey::new(&record_key(&identity.peer_id())),
        record.to_bytes().expect("encoded"),
    )
}

/// A store's worth of valid presence records, each of its own Sybil identity, all valid for an
/// hour but the first, which expires in ten minutes; signed once for every test that needs them.
fn sybil_records() -> &'static [kad::Record] {
    static RECORDS: OnceLock<Vec<kad::Record>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let now = Clock::system().now_secs();
        (0..MAX_DHT_RECORDS as u64)
            .map(|i| {
                let mut identity_secret = [0x5b; 32];
                identity_secret[..8].copy_from_slice(&i.to_le_bytes());
                let sybil = Identity::from_secrets(identity_secret, [0x5c; 32]);
                signed(&sybil, now + if i == 0 { 600 } else { 3600 })
            })
            .collect()
    })
}

/// Fills `node`'s record store with [`sybil_records`] as `PUT_VALUE` requests would, from 128
/// peers each within its quota.
fn fill(node: &mut EventLoop) {
    let per_peer = DHT_STORES_PER_PEER.limit as usize;
    for chunk in sybil_records().chunks(per_peer) {
        let source = PeerId::random();
        for record in chunk {
            node.on_put_record(source, record.clone());
        }
    }
    let store = node.swarm.behaviour_mut().kad.store_mut();
    assert_eq!(kad::store::RecordStore::records(store).count(), MAX_DHT_RECORDS, "store full");
}

/// Whether `node`'s record store holds a record under `key`.
fn holds(node: &mut EventLoop, key: &kad::RecordKey) -> bool {
    kad::store::RecordStore::get(node.swarm.behaviour_mut().kad.store_mut(), key).is_some()
}

/// Our own identity and its presence record, valid for [`PRESENCE_TTL`].
fn ours() -> (Identity, kad::Record) {
    let identity = Identity::from_secrets([7; 32], [8; 32]);
    let record = signed(&identity, Clock::system().now_secs() + PRESENCE_TTL.as_secs());
    (identity, record)
}

#[tokio::test]
async fn a_node_whose_record_store_strangers_filled_still_stores_its_own_record() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (identity, record) = ours();
    let config = Config::new(dir.path(), Role::Node);
    let (_client, mut node, _channels) =
        swarm::new(identity.keypair(), &config, Vec::new(), no_contacts()).expect("a swarm");
    fill(&mut node);
    let soonest = sybil_records()[0].key.clone();
    assert!(holds(&mut node, &soonest));

    node.on_command(Command::PublishPresence { record: record.value, ttl: PRESENCE_TTL });
    assert_eq!(node.presence, None, "no local failure: {:?}", node.presence);
    assert!(node.presence_query.is_some(), "the publication started");
    assert!(holds(&mut node, &record.key), "our record is in the store");
    assert!(!holds(&mut node, &soonest), "the record that expired soonest made room");
    let store = node.swarm.behaviour_mut().kad.store_mut();
    assert_eq!(kad::store::RecordStore::records(store).count(), MAX_DHT_RECORDS);
}

#[tokio::test]
async fn a_record_too_large_for_any_store_is_reported_and_not_retried() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (identity, _) = ours();
    let config = Config::new(dir.path(), Role::Node);
    let (_client, mut node, _channels) =
        swarm::new(identity.keypair(), &config, Vec::new(), no_contacts()).expect("a swarm");
    let record = vec![0; MAX_DHT_RECORD_BYTES];
    node.on_command(Command::PublishPresence { record, ttl: PRESENCE_TTL });
    let failure = node.presence.clone().and_then(|p| p.err()).expect("a failed publication");
    assert!(failure.contains("8192 bytes") && failure.contains("report"), "{failure}");
    assert!(node.presence_query.is_none(), "nothing went out");
    // Every retry would fail the same, at every DHT server.
    assert_eq!(node.presence_retry_at, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_record_store_strangers_filled_still_publishes_its_presence() {
    // A relay on 127.0.0.1, a DHT server that takes the record.
    let server_dir = tempfile::tempdir().expect("a temporary directory");
    let server_identity = Identity::from_secrets([9; 32], [10; 32]);
    let mut server_config = Config::new(server_dir.path(), Role::Relay);
    server_config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
    // The memory ceiling is the test process's, which other tests share.
    server_config.max_memory = None;
    let (server, server_loop, _server_channels) =
        swarm::new(server_identity.keypair(), &server_config, Vec::new(), no_contacts())
            .expect("a swarm");
    let (stop, shutdown) = watch::channel(false);
    let server_task = tokio::spawn(server_loop.run(shutdown.clone()));
    let listening = server.wait_for(WAIT, |s| !s.listen.is_empty()).await.expect("listening");
    let address = listening.listen[0]
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(server_identity.peer_id()));

    // The node, which has the relay as its bootstrap peer and a store strangers filled.
    let node_dir = tempfile::tempdir().expect("a temporary directory");
    let (identity, record) = ours();
    let mut config = Config::new(node_dir.path(), Role::Node);
    config.bootstrap = vec![address];
    let (client, mut node_loop, _channels) =
        swarm::new(identity.keypair(), &config, Vec::new(), no_contacts()).expect("a swarm");
    fill(&mut node_loop);
    let node_task = tokio::spawn(node_loop.run(shutdown));
    client.wait_for(WAIT, |s| s.bootstrap_connected == 1).await.expect("connected to the relay");

    client.publish_presence(record.value.clone(), PRESENCE_TTL).await.expect("published");
    let status = client.wait_for(WAIT, |s| s.presence.is_some()).await;
    assert_eq!(status.and_then(|s| s.presence), Some(Ok(())), "the relay took the record");
    // The relay acknowledges records it refuses too: it must hold ours.
    let found = server.resolve(identity.peer_id(), false, WAIT).await.expect("a lookup");
    let expected =
        PresenceRecord::from_dht(record.key.as_ref(), &record.value, Clock::system().now_secs())
            .expect("our record verifies")
            .0;
    assert_eq!(found, Some(expected), "the relay serves our record");

    stop.send(true).expect("the tasks are running");
    server_task.await.expect("the relay's task ends");
    node_task.await.expect("the node's task ends");
}
