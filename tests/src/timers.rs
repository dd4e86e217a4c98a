//! The outbox's slow timers on a real node under tokio's paused time: the retry schedule of a
//! message nobody can take, and its give-up after fourteen days. The node runs with a clock that
//! follows paused time, and with no listen address, no bootstrap and no peer, so nothing waits
//! on the network and virtual time only moves when every task is idle.

use std::time::Duration;

use kolokol_node::clock::Clock;
use kolokol_node::outbox::{MESSAGE_TTL, retry_delay};
use kolokol_node::{Role, RunningNode};
use kolokol_protocol::control::{Event, MessageState};
use kolokol_protocol::identity::Identity;
use kolokol_protocol::invite::Invite;
use tokio::sync::broadcast;

use crate::support::Net;

/// Waits (in virtual time) for the next state event of message `id`.
async fn next_state(
    events: &mut broadcast::Receiver<Event>,
    id: &str,
) -> (MessageState, Option<String>) {
    tokio::time::timeout(Duration::from_secs(24 * 60 * 60), async {
        loop {
            match events.recv().await {
                Ok(Event::State(s)) if s.id == id => return (s.state, s.detail),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("the node stopped"),
            }
        }
    })
    .await
    .expect("a state change within a virtual day")
}

#[tokio::test(start_paused = true)]
async fn an_undeliverable_message_is_retried_on_schedule_then_fails_after_fourteen_days() {
    let net = Net::new();
    let clock = Clock::tokio();
    let mut config = net.config("alice", Role::Node);
    config.clock = clock.clone();
    let alice = RunningNode::start(config).await.expect("alice starts");
    let node = alice.node();

    // Bob's invite carries no address and Bob never runs: every attempt fails at once.
    let bob = Identity::from_secrets([7; 32], [8; 32]);
    let now = clock.now_secs();
    let certificate = bob.certify(now - 60, now + 365 * 24 * 60 * 60).expect("certificate");
    let invite = Invite { certificate, addresses: Vec::new() }.to_text().expect("invite");
    node.add_contact("bob", &invite).await.expect("bob added");

    let mut events = node.subscribe();
    let created = clock.now_ms();
    let sent = node.send("bob", "are you there?").await.expect("send");
    assert_eq!(sent.state, MessageState::Queued, "{:?}", sent.detail);
    // The detail says why in the user's words, with the peer id cut as `kolokol chat` cuts it
    // (`kolokol_node::swarm::SHORT_PEER_CHARS`), not in libp2p's.
    let detail = sent.detail.clone().unwrap_or_default();
    let short = &bob.peer_id().to_string()[..kolokol_node::swarm::SHORT_PEER_CHARS];
    assert!(
        detail.starts_with(&format!("cannot reach {short}…: no address known for them")),
        "{detail}"
    );
    // Written to the outbox, then the first attempt failed.
    assert_eq!(next_state(&mut events, &sent.id).await, (MessageState::Queued, None));
    assert_eq!(next_state(&mut events, &sent.id).await.0, MessageState::Queued);

    // Each failed attempt announces `queued` again, after the wait the schedule gives.
    let mut last = clock.now_ms();
    for attempts in 2..=11u32 {
        let (state, detail) = next_state(&mut events, &sent.id).await;
        assert_eq!(state, MessageState::Queued);
        assert!(detail.is_some_and(|d| !d.is_empty()), "a retry says why it waits");
        let waited = Duration::from_millis(clock.now_ms() - last);
        let due = retry_delay(attempts - 1);
        assert!(
            waited >= due && waited < due + Duration::from_secs(6),
            "attempt {attempts} came {waited:?} after the one before; the schedule says {due:?}"
        );
        last = clock.now_ms();
        let status = node.message(&sent.id).expect("status");
        assert_eq!(status.message.attempts, attempts, "attempts counted");
    }

    // Fourteen days after it was written, the next attempt gives up and says why.
    let ttl_left = created + MESSAGE_TTL.as_millis() as u64 - clock.now_ms();
    tokio::time::advance(Duration::from_millis(ttl_left + 1)).await;
    let (state, detail) = loop {
        let change = next_state(&mut events, &sent.id).await;
        if change.0 != MessageState::Queued {
            break change;
        }
    };
    assert_eq!(state, MessageState::Failed);
    let detail = detail.expect("a reason");
    assert!(detail.starts_with("not delivered within 14 days"), "{detail}");
    assert!(clock.now_ms() - created > MESSAGE_TTL.as_millis() as u64);
    let status = node.message(&sent.id).expect("status");
    assert_eq!(status.message.state, MessageState::Failed);
    alice.shutdown().await;
}
