//! The stranger quotas under paused time: they refill after their window, a flood from throwaway
//! identities locks strangers out for at most one window, and a contact is never limited by it.

use std::sync::Arc;
use std::time::Duration;

use kolokol_protocol::conversation::{Conversation, Randomness};
use kolokol_protocol::identity::Identity;
use kolokol_protocol::message::{Body, Content};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::conversations::Conversations;
use crate::events::Events;
use crate::groups::{Groups, GroupsParts};
use crate::inbox::{
    Arrival, Inbox, InboxParts, Received, STRANGER_MESSAGES, STRANGER_MESSAGES_PER_SENDER,
    STRANGER_WINDOW,
};
use crate::keys::Keys;
use crate::mailbox::Mailboxes;
use crate::outbox::{Outbox, OutboxParts};
use crate::presence::Presence;
use crate::store::{ContactRow, Store};
use crate::workers::Workers;

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Clock,
    me: Identity,
    inbox: Inbox,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
    let clock = Clock::tokio();
    let me = Identity::from_secrets([1; 32], [2; 32]);
    let keys =
        Keys::new(Identity::from_secrets([1; 32], [2; 32]), store.clone(), clock.clone()).unwrap();
    let workers = Workers::per_core();
    let events = Events::new(store.clone());
    let outbox_wake = Arc::new(Notify::new());
    let conversations = Conversations::new(
        store.clone(),
        keys.clone(),
        workers.clone(),
        clock.clone(),
        events.clone(),
        outbox_wake.clone(),
    );
    // The groups room, which the inbox hands group messages to; these tests send none, so its
    // outbox never reaches a network.
    let swarm = crate::swarm::Client::detached();
    let presence = Presence::new(
        swarm.clone(),
        false,
        store.clone(),
        keys.clone(),
        workers.clone(),
        clock.clone(),
    );
    let outbox = Outbox::new(OutboxParts {
        conversations: conversations.clone(),
        presence: presence.clone(),
        mailboxes: Mailboxes::new(swarm.clone(), store.clone(), keys.clone(), clock.clone()),
        swarm,
        store: store.clone(),
        events: events.clone(),
        clock: clock.clone(),
        wake: outbox_wake.clone(),
        in_flight: Default::default(),
        paths: Default::default(),
        numbering: Default::default(),
        max_file_size: crate::files::DEFAULT_MAX_FILE_SIZE,
        acknowledgements: Default::default(),
    });
    let groups = Groups::new(GroupsParts {
        store: store.clone(),
        keys: keys.clone(),
        conversations: conversations.clone(),
        outbox,
        presence,
        events: events.clone(),
        clock: clock.clone(),
    });
    let downloads = crate::files::Downloads::new(crate::files::DownloadsParts {
        store: store.clone(),
        events: events.clone(),
        clock: clock.clone(),
        dir: dir.path().join(crate::files::DOWNLOADS_DIR),
        partial: dir.path().join(crate::files::PARTIAL_DIR),
        max_size: crate::files::DEFAULT_MAX_FILE_SIZE,
        finishing: Default::default(),
    });
    let inbox = Inbox::new(InboxParts {
        downloads,
        conversations,
        store: store.clone(),
        keys,
        events,
        workers,
        clock: clock.clone(),
        groups,
        outbox_wake,
        quota_log: Default::default(),
        verified_certificates: Default::default(),
    });
    Setup { _dir: dir, store, clock, me, inbox }
}

/// The `n`th throwaway identity of a flood.
fn stranger(n: u32) -> Identity {
    let mut secret = [9u8; 32];
    secret[..4].copy_from_slice(&n.to_be_bytes());
    let mut device = [10u8; 32];
    device[..4].copy_from_slice(&n.to_be_bytes());
    Identity::from_secrets(secret, device)
}

/// A text from `from` to us, sealed as any node can seal one: a format 3 first contact to our
/// device key, from a conversation of its own (format 1 is only for legacy contacts now).
fn text(setup: &Setup, from: &Identity, seq: u32) -> Vec<u8> {
    let now = setup.clock.now_secs();
    let certificate = from.certify(now - 60, now + 365 * 24 * 3600).unwrap();
    let mine = setup.me.certify(now - 60, now + 365 * 24 * 3600).unwrap();
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&seq.to_be_bytes());
    id[4..8].copy_from_slice(&from.identity_key()[..4]);
    let content =
        Content { id, sent_at_ms: setup.clock.now_ms(), body: Body::Text(format!("hello {seq}")) };
    let mut random = [0u8; Randomness::LEN];
    random[..4].copy_from_slice(&seq.to_be_bytes());
    random[4..8].copy_from_slice(&from.identity_key()[..4]);
    random[8] = 1;
    random[40] = 2;
    let mut conversation = Conversation::new(mine, now).unwrap();
    conversation
        .seal(from.device(), &certificate, &content, Randomness::from_bytes(random), now)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_strangers_quota_refills_after_its_window() {
    let setup = setup();
    let alice = stranger(0);
    let limit = STRANGER_MESSAGES_PER_SENDER.limit;
    for seq in 0..limit {
        assert_eq!(
            setup.inbox.open_and_store(text(&setup, &alice, seq), Arrival::Direct).await,
            Received::Accepted
        );
    }
    // Past the quota: not stored, and answered busy (so her node tries again), not rejected.
    let over = text(&setup, &alice, limit);
    assert_eq!(
        setup.inbox.open_and_store(over.clone(), Arrival::Direct).await,
        Received::OverQuota
    );
    assert_eq!(
        setup.inbox.open_and_accept(over.clone(), Arrival::Direct).await.to_byte(),
        0x02,
        "busy"
    );
    assert_eq!(setup.store.inbox_count().unwrap(), u64::from(limit));

    // Still refused a second before the window ends; taken once it has.
    tokio::time::advance(STRANGER_WINDOW - Duration::from_secs(1)).await;
    assert_eq!(
        setup.inbox.open_and_store(over.clone(), Arrival::Direct).await,
        Received::OverQuota
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(setup.inbox.open_and_store(over, Arrival::Direct).await, Received::Accepted);
    assert_eq!(setup.store.inbox_count().unwrap(), u64::from(limit) + 1);
}

#[tokio::test(start_paused = true)]
async fn throwaway_identities_delay_strangers_for_one_window_and_never_a_contact() {
    let setup = setup();
    let per_sender = STRANGER_MESSAGES_PER_SENDER.limit;
    let identities = STRANGER_MESSAGES.limit / per_sender;
    // A contact, added before the flood.
    let friend = Identity::from_secrets([5; 32], [6; 32]);
    setup
        .store
        .add_contact(&ContactRow {
            name: "friend".into(),
            peer_id: friend.peer_id(),
            device_key: *friend.device().public(),
            addresses: Vec::new(),
            added_at_ms: setup.clock.now_ms(),
            verified_at_ms: None,
            invite: None,
            rekeyed: None,
        })
        .unwrap();

    // Ten throwaway identities use up what all strangers together may store in a window.
    for n in 0..identities {
        let sybil = stranger(n);
        for seq in 0..per_sender {
            let received =
                setup.inbox.open_and_store(text(&setup, &sybil, seq), Arrival::Direct).await;
            assert_eq!(received, Received::Accepted, "identity {n}, message {seq}");
        }
    }
    // An honest stranger with no message yet is held off...
    let honest = stranger(1_000);
    let first = text(&setup, &honest, 0);
    assert_eq!(
        setup.inbox.open_and_store(first.clone(), Arrival::Direct).await,
        Received::OverQuota
    );
    // ...but the contact is not, however much the strangers sent.
    for seq in 0..3 * per_sender {
        let received =
            setup.inbox.open_and_store(text(&setup, &friend, seq), Arrival::Direct).await;
        assert_eq!(received, Received::Accepted, "the contact's message {seq}");
    }

    // One window later the honest stranger gets in: the flood delayed it, it did not lock it
    // out. (Its node was told busy, so it kept trying.)
    tokio::time::advance(STRANGER_WINDOW).await;
    assert_eq!(setup.inbox.open_and_store(first, Arrival::Direct).await, Received::Accepted);
    let stored = setup.inbox_count_from(&honest);
    assert_eq!(stored, 1);
}

impl Setup {
    fn inbox_count_from(&self, who: &Identity) -> usize {
        let peer = who.peer_id();
        self.store.inbox(u32::MAX).unwrap().into_iter().filter(|m| m.peer_id == peer).count()
    }
}
