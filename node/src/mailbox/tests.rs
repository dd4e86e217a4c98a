//! A replica's expiry under paused time: an item goes once its time is up (at the next purge),
//! and never outlives the longest TTL a replica grants, whatever the depositor asked.

use std::time::Duration;

use kolokol_protocol::identity::Identity;
use kolokol_protocol::mailbox::{Request, Response};
use libp2p::PeerId;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{Config, Role};
use crate::keys::Keys;
use crate::mailbox::{MAX_ITEM_TTL, Mailboxes, PURGE_INTERVAL};
use crate::store::Store;
use crate::swarm;

const HOUR: Duration = Duration::from_secs(60 * 60);

fn deposit(item: u8, expires_at: u64) -> Request {
    Request::Deposit {
        mailbox_id: [5; 32],
        item_id: [item; 16],
        envelope: vec![item; 1024],
        expires_at,
    }
}

/// Lets the replica task run (long enough to purge whatever it would purge now), then until the
/// mailbox holds `expected` items, or fails the test.
async fn settle(store: &Store, expected: u64) {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    for _ in 0..1000 {
        if store.mailbox_count(&[5; 32]).unwrap() == expected {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the mailbox holds {} items, not {expected}", store.mailbox_count(&[5; 32]).unwrap());
}

#[tokio::test(start_paused = true)]
async fn items_expire_at_their_time_and_never_outlive_the_longest_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
    let clock = Clock::tokio();
    let keys =
        Keys::new(Identity::from_secrets([3; 32], [4; 32]), store.clone(), clock.clone()).unwrap();
    let mut config = Config::new(dir.path(), Role::Relay);
    config.clock = clock.clone();
    // The swarm is built but never run: the replica answers no one here, it only purges.
    let (swarm, _event_loop, channels) =
        swarm::new(keys.identity().keypair(), &config, Vec::new()).unwrap();
    let mailboxes = Mailboxes::new(swarm, store.clone(), keys, clock.clone());

    let depositor = PeerId::random();
    let now = clock.now_secs();
    assert_eq!(mailboxes.serve(depositor, deposit(1, now + HOUR.as_secs())), Response::Stored);
    // Asked to keep one for a year, the replica keeps it for MAX_ITEM_TTL.
    assert_eq!(mailboxes.serve(depositor, deposit(2, now + 365 * 24 * 3600)), Response::Stored);
    assert!(matches!(mailboxes.serve(depositor, deposit(3, now - 1)), Response::Refused { .. }));
    settle(&store, 2).await;

    let (_stop, shutdown) = watch::channel(false);
    let replica = tokio::spawn(mailboxes.run_replica(channels.mailbox_requests, shutdown));
    // The first hour's item goes at the first purge after its hour.
    tokio::time::advance(HOUR - Duration::from_secs(1)).await;
    settle(&store, 2).await;
    tokio::time::advance(PURGE_INTERVAL + Duration::from_secs(1)).await;
    settle(&store, 1).await;
    // The other stays to the day it was capped at, then goes too.
    tokio::time::advance(MAX_ITEM_TTL - HOUR - PURGE_INTERVAL - Duration::from_secs(60)).await;
    settle(&store, 1).await;
    tokio::time::advance(PURGE_INTERVAL + Duration::from_secs(120)).await;
    settle(&store, 0).await;
    replica.abort();
}
