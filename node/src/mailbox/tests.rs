//! A replica under paused time: an item goes once its time is up (at the next purge) and never
//! outlives the longest TTL a replica grants, whatever the depositor asked; deposit quotas
//! refill after their window and keep depositors apart; version 2 deposits, fetches and deletes
//! name neither the owner nor its identity, and the replica serves them; deposits into one
//! mailbox share a courier for a few seconds, and deposits into different ones never do.

use std::time::Duration;

use kolokol_protocol::identity::Identity;
use kolokol_protocol::mailbox::{Request, Response};
use libp2p::PeerId;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{Config, Role};
use crate::keys::Keys;
use crate::mailbox::{DEPOSIT_COURIER_REUSE, MAX_ITEM_TTL, Mailboxes, PURGE_INTERVAL};
use crate::store::Store;
use crate::swarm;
use crate::wire::mailbox::MailboxRequest;

const HOUR: Duration = Duration::from_secs(60 * 60);

/// A relay's replica with its own store in a temporary directory, on paused time. The swarm
/// is built but never run: the replica answers no one through it.
struct Replica {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Clock,
    keys: Keys,
    mailboxes: Mailboxes,
    _event_loop: swarm::EventLoop,
    channels: swarm::Channels,
}

impl Replica {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
        let clock = Clock::tokio();
        let keys =
            Keys::new(Identity::from_secrets([3; 32], [4; 32]), store.clone(), clock.clone())
                .unwrap();
        let mut config = Config::new(dir.path(), Role::Relay);
        config.clock = clock.clone();
        let (swarm, event_loop, channels) =
            swarm::new(keys.identity().keypair(), &config, Vec::new(), no_contacts()).unwrap();
        let mailboxes = Mailboxes::new(swarm, store.clone(), keys.clone(), clock.clone());
        Self { _dir: dir, store, clock, keys, mailboxes, _event_loop: event_loop, channels }
    }
}

/// An empty contact book that never changes.
fn no_contacts()
-> tokio::sync::watch::Receiver<std::sync::Arc<std::collections::HashSet<libp2p::PeerId>>> {
    tokio::sync::watch::channel(Default::default()).1
}

fn deposit(item: u8, expires_at: u64) -> MailboxRequest {
    MailboxRequest::V1(Request::Deposit {
        mailbox_id: [5; 32],
        item_id: [item; 16],
        envelope: vec![item; 1024],
        expires_at,
    })
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
    let replica = Replica::new();
    let (store, clock, mailboxes) =
        (replica.store.clone(), replica.clock.clone(), replica.mailboxes.clone());
    let channels = replica.channels;

    let depositor = PeerId::random();
    let now = clock.now_secs();
    assert_eq!(
        mailboxes.serve(depositor, None, deposit(1, now + HOUR.as_secs())),
        Response::Stored
    );
    // Asked to keep one for a year, the replica keeps it for MAX_ITEM_TTL.
    assert_eq!(
        mailboxes.serve(depositor, None, deposit(2, now + 365 * 24 * 3600)),
        Response::Stored
    );
    assert!(matches!(
        mailboxes.serve(depositor, None, deposit(3, now - 1)),
        Response::Refused { .. }
    ));
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

#[tokio::test(start_paused = true)]
async fn deposit_quotas_refill_after_their_window_and_keep_depositors_apart() {
    use crate::mailbox::DEPOSIT_WINDOW;
    use crate::quota::Quota;
    // The real quotas are thousands of deposits; the same meters with small limits and the real
    // window keep the test short.
    let per_depositor = Quota::new(40, DEPOSIT_WINDOW);
    let per_mailbox = Quota::new(100, DEPOSIT_WINDOW);
    let replica = Replica::new();
    let (clock, mailboxes) = (replica.clock.clone(), replica.mailboxes.clone());
    mailboxes.set_deposit_quotas(per_depositor, per_mailbox);
    let expires = |clock: &Clock| clock.now_secs() + HOUR.as_secs();
    let deposit_into = |mailbox: u8, n: u32, expires_at: u64| {
        MailboxRequest::V1(Request::Deposit {
            mailbox_id: [mailbox; 32],
            item_id: {
                let mut id = [mailbox; 16];
                id[..4].copy_from_slice(&n.to_be_bytes());
                id
            },
            envelope: vec![0; 1024],
            expires_at,
        })
    };

    // One depositor spreads its quota over many mailboxes, then is told to wait.
    let flooder = PeerId::random();
    for n in 0..per_depositor.limit {
        let answer =
            mailboxes.serve(flooder, None, deposit_into((n % 7) as u8, n, expires(&clock)));
        assert_eq!(answer, Response::Stored, "deposit {n}");
    }
    let Response::QuotaExceeded { reason } =
        mailboxes.serve(flooder, None, deposit_into(9, 0, expires(&clock)))
    else {
        panic!("past the depositor's quota")
    };
    assert!(reason.starts_with("rate limited: deposits per depositor"), "{reason}");
    // Another depositor is not held back by it.
    let honest = PeerId::random();
    assert_eq!(
        mailboxes.serve(honest, None, deposit_into(9, 1, expires(&clock))),
        Response::Stored
    );

    // Many throwaway depositors together fill one mailbox's window; then everyone waits, for
    // one window only.
    let mut sent = 0;
    while sent < per_mailbox.limit {
        let sybil = PeerId::random();
        for _ in 0..8 {
            if sent == per_mailbox.limit {
                break;
            }
            let answer =
                mailboxes.serve(sybil, None, deposit_into(7, 10_000 + sent, expires(&clock)));
            assert_eq!(answer, Response::Stored);
            sent += 1;
        }
    }
    let late = PeerId::random();
    let Response::QuotaExceeded { reason } =
        mailboxes.serve(late, None, deposit_into(7, 99_999, expires(&clock)))
    else {
        panic!("past the mailbox's quota")
    };
    assert!(reason.starts_with("rate limited: deposits into one mailbox"), "{reason}");
    tokio::time::advance(DEPOSIT_WINDOW).await;
    assert_eq!(
        mailboxes.serve(late, None, deposit_into(7, 99_999, expires(&clock))),
        Response::Stored
    );
    assert_eq!(
        mailboxes.serve(flooder, None, deposit_into(9, 2, expires(&clock))),
        Response::Stored
    );
}

#[tokio::test(start_paused = true)]
async fn a_handover_is_taken_once_and_only_from_the_replica_that_signed_it() {
    use kolokol_protocol::mailbox::{HandoverItem, HandoverProof};
    let replica = Replica::new();
    let (store, clock, mailboxes) =
        (replica.store.clone(), replica.clock.clone(), replica.mailboxes.clone());

    let old_replica = Identity::from_secrets([8; 32], [9; 32]);
    let now = clock.now_secs();
    let items: Vec<HandoverItem> = (0..3u8)
        .map(|n| HandoverItem { item_id: [n; 16], expires_at: now + 3600, envelope: vec![n; 1024] })
        .collect();
    let handover = |items: Vec<HandoverItem>| {
        let proof = HandoverProof::sign(&old_replica, &[5; 32], now, &items).unwrap();
        MailboxRequest::V1(Request::Handover { mailbox_id: [5; 32], items, proof })
    };
    // Sent by someone else, the old replica's signature does not make it a handover.
    let Response::Refused { reason } =
        mailboxes.serve(PeerId::random(), None, handover(items.clone()))
    else {
        panic!("a handover from another peer than its signer")
    };
    assert!(reason.contains("signed by another peer"), "{reason}");
    assert_eq!(store.mailbox_count(&[5; 32]).unwrap(), 0);
    // From the replica itself: stored, and again: nothing more (deduplicated by item id).
    let from = old_replica.peer_id();
    assert_eq!(mailboxes.serve(from, None, handover(items.clone())), Response::Stored);
    assert_eq!(mailboxes.serve(from, None, handover(items.clone())), Response::Stored);
    assert_eq!(store.mailbox_count(&[5; 32]).unwrap(), 3);
    // A proof over other items does not carry these.
    let mut tampered = handover(items[..2].to_vec());
    if let MailboxRequest::V1(Request::Handover { items: carried, .. }) = &mut tampered {
        carried[0].envelope[0] ^= 1;
    }
    assert!(matches!(mailboxes.serve(from, None, tampered), Response::Refused { .. }));
}

#[tokio::test(start_paused = true)]
async fn version_2_frames_name_neither_the_owner_nor_its_identity_and_the_replica_serves_them() {
    use kolokol_protocol::mailbox::{Operation, mailbox_id, period_of};

    use crate::mailbox::deposit::deposits;

    // The replica is the owner here: its keys are the owner's.
    let replica = Replica::new();
    let (store, clock, mailboxes, keys) = (
        replica.store.clone(),
        replica.clock.clone(),
        replica.mailboxes.clone(),
        replica.keys.clone(),
    );
    let owner_peer = keys.identity().peer_id();
    let identity_key = *keys.identity().identity_key();
    let address = keys.mailbox_address();
    let now = clock.now_secs();
    let period = period_of(now);
    let v1 = mailbox_id(&identity_key, period);

    // What a depositor that knows the address sends, and what the owner sends to fetch and
    // delete: version 2 frames under the version 2 id.
    let (id, deposit) = deposits(
        &owner_peer,
        Some(&address),
        &[9; 16],
        now + 3600,
        vec![(0, vec![9; 1024])],
        false,
        now,
    )
    .unwrap();
    assert_eq!(id, keys.mailbox_key().mailbox_id(period).unwrap());
    assert_ne!(id, v1);
    let own = mailboxes.own_mailboxes(period);
    assert_eq!(own.iter().map(|m| m.id).collect::<Vec<_>>(), [id, v1]);
    let fetch = mailboxes.owner_request(&own[0], Operation::Fetch, Vec::new()).unwrap();
    let MailboxRequest::V2(kolokol_protocol::mailbox::RequestV2::Deposit { item_id, .. }) =
        deposit[0]
    else {
        panic!("not a version 2 deposit: {:?}", deposit[0])
    };
    let delete = mailboxes.owner_request(&own[0], Operation::Delete, vec![item_id]).unwrap();
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    for frame in [&deposit[0], &fetch, &delete] {
        assert!(matches!(frame, MailboxRequest::V2(_)), "{frame:?}");
        let bytes = frame.to_bytes().unwrap();
        for needle in [&identity_key[..], &owner_peer.to_bytes()[..], &address[..], &v1[..]] {
            assert!(!contains(&bytes, needle), "a version 2 frame names the owner: {frame:?}");
        }
    }
    // The same search finds the identity key in a version 1 fetch: it does look.
    let v1_fetch = mailboxes.owner_request(&own[1], Operation::Fetch, Vec::new()).unwrap();
    assert!(contains(&v1_fetch.to_bytes().unwrap(), &identity_key));

    // The replica stores the deposit and serves the owner's blinded fetch and delete.
    let depositor = PeerId::random();
    assert_eq!(mailboxes.serve(depositor, None, deposit[0].clone()), Response::Stored);
    let Response::Items { items, more: false } = mailboxes.serve(depositor, None, fetch) else {
        panic!("the owner's blinded fetch was refused")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(mailboxes.serve(depositor, None, delete), Response::Deleted { count: 1 });
    assert_eq!(store.mailbox_count(&id).unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn throwaway_depositors_from_one_address_range_share_its_window() {
    use crate::quota::Quota;
    let replica = Replica::new();
    let (clock, mailboxes) = (replica.clock.clone(), replica.mailboxes.clone());
    let roomy = Quota::new(1000, HOUR);
    let per_source = Quota::new(3, HOUR);
    mailboxes.set_deposit_quotas_by_source(roomy, per_source, roomy);
    let range = Some([4, 198, 51, 100, 0, 0, 0]);
    let now = clock.now_secs();

    // Each deposit from a peer id never seen before (a courier), all from one /24.
    for item in 0..3 {
        assert_eq!(
            mailboxes.serve(PeerId::random(), range, deposit(item, now + 3600)),
            Response::Stored
        );
    }
    let Response::QuotaExceeded { reason } =
        mailboxes.serve(PeerId::random(), range, deposit(3, now + 3600))
    else {
        panic!("a fourth deposit from the range was taken")
    };
    assert!(reason.contains("address range"), "{reason}");
    // Another range, and a connection without an IP address, are not held back by it.
    let other = Some([4, 203, 0, 113, 0, 0, 0]);
    assert_eq!(mailboxes.serve(PeerId::random(), other, deposit(4, now + 3600)), Response::Stored);
    assert_eq!(mailboxes.serve(PeerId::random(), None, deposit(5, now + 3600)), Response::Stored);
    // The window refills.
    tokio::time::advance(HOUR).await;
    assert_eq!(mailboxes.serve(PeerId::random(), range, deposit(6, now + 7200)), Response::Stored);
}

#[tokio::test(start_paused = true)]
async fn deposits_into_one_mailbox_share_a_courier_for_a_while_and_other_mailboxes_never_do() {
    let r = Replica::new();
    let (first, second) = ([1u8; 32], [2u8; 32]);
    let (a, _) = r.mailboxes.deposit_courier(&first).await.expect("a courier");
    let (again, _) = r.mailboxes.deposit_courier(&first).await.expect("a courier");
    assert!(a.same(&again), "a second deposit into the mailbox reuses its courier");
    let (other, _) = r.mailboxes.deposit_courier(&second).await.expect("a courier");
    assert!(!a.same(&other), "another mailbox gets a courier of its own");
    tokio::time::sleep(DEPOSIT_COURIER_REUSE).await;
    let (later, _) = r.mailboxes.deposit_courier(&first).await.expect("a courier");
    assert!(!a.same(&later), "past its time a mailbox gets a fresh courier");
}
