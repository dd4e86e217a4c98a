//! Admission under paused time: junk shuts a peer out for one window, strangers share a budget
//! contacts never touch, and connections are limited per address but not from loopback.

use std::collections::HashSet;
use std::sync::Arc;

use libp2p::PeerId;
use libp2p::core::ConnectedPoint;
use libp2p::swarm::ConnectionId;
use tokio::sync::watch;

use super::{
    Admission, Ask, DELIVERIES_PER_STRANGER, INBOUND_CONNECTIONS_PER_IP, JUNK_PER_PEER,
    MAX_CONNECTIONS_PER_IP, STRANGER_DELIVERIES,
};

fn admission(contacts: &[PeerId]) -> (watch::Sender<Arc<HashSet<PeerId>>>, Admission) {
    let (tx, rx) = watch::channel(Arc::new(contacts.iter().copied().collect()));
    (tx, Admission::new(rx))
}

fn inbound_from(ip: &str) -> ConnectedPoint {
    ConnectedPoint::Listener {
        local_addr: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
        send_back_addr: format!("/ip4/{ip}/tcp/50000").parse().unwrap(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_sends_junk_is_refused_for_one_window_and_a_contact_never_is() {
    let friend = PeerId::random();
    let (_tx, mut admission) = admission(&[friend]);
    let junk = PeerId::random();
    for _ in 0..JUNK_PER_PEER.limit {
        admission.admit(&junk, Ask::Delivery).expect("admitted until it is known for junk");
        admission.junk(&junk);
        admission.junk(&friend);
    }
    let refusal = admission.admit(&junk, Ask::Delivery).expect_err("shut out");
    assert_eq!(refusal.name, "envelopes that did not open");
    admission.admit(&friend, Ask::Delivery).expect("a contact is never shut out");
    tokio::time::advance(JUNK_PER_PEER.window).await;
    admission.admit(&junk, Ask::Delivery).expect("one window later it may try again");
}

#[tokio::test(start_paused = true)]
async fn strangers_share_one_budget_that_contacts_never_draw_on() {
    let friend = PeerId::random();
    let (contacts, mut admission) = admission(&[friend]);
    let per_peer = DELIVERIES_PER_STRANGER.limit;
    let crowd = STRANGER_DELIVERIES.limit / per_peer;
    for _ in 0..crowd {
        let sybil = PeerId::random();
        for _ in 0..per_peer {
            admission.admit(&sybil, Ask::Delivery).expect("within both quotas");
        }
        assert!(admission.admit(&sybil, Ask::Delivery).is_err(), "one stranger's own quota");
    }
    let newcomer = PeerId::random();
    let refusal = admission.admit(&newcomer, Ask::Delivery).expect_err("the shared budget");
    assert_eq!(refusal.name, "deliveries from all strangers");
    for _ in 0..10 * per_peer {
        admission.admit(&friend, Ask::Delivery).expect("contacts skip the stranger quotas");
    }
    // Adding the newcomer as a contact lets it through at once; the window frees the others.
    contacts.send_replace(Arc::new([friend, newcomer].into_iter().collect()));
    admission.admit(&newcomer, Ask::Delivery).expect("now a contact");
    tokio::time::advance(STRANGER_DELIVERIES.window).await;
    admission.admit(&PeerId::random(), Ask::Delivery).expect("a new window");
}

#[tokio::test(start_paused = true)]
async fn connections_are_limited_per_address_except_from_loopback() {
    let (_tx, mut admission) = admission(&[]);
    let mut id = 0;
    let mut next = || {
        id += 1;
        ConnectionId::new_unchecked(id)
    };
    // Churn: open and close, over and over, from one address.
    for _ in 0..INBOUND_CONNECTIONS_PER_IP.limit {
        let c = next();
        admission.connection_opened(c, &inbound_from("198.51.100.7")).expect("within the rate");
        admission.connection_closed(c, &inbound_from("198.51.100.7"));
    }
    let c = next();
    let refusal = admission.connection_opened(c, &inbound_from("198.51.100.7")).unwrap_err();
    assert_eq!(refusal.name, "inbound connections per IP address");
    admission.connection_closed(c, &inbound_from("198.51.100.7"));
    admission.connection_opened(next(), &inbound_from("198.51.100.8")).expect("another address");
    // Loopback (a relay behind a local proxy) is not limited per address.
    for _ in 0..2 * MAX_CONNECTIONS_PER_IP {
        admission.connection_opened(next(), &inbound_from("127.0.0.1")).expect("loopback");
    }
    tokio::time::advance(INBOUND_CONNECTIONS_PER_IP.window).await;
    // Held open: at most so many at once, whatever the rate.
    let held: Vec<ConnectionId> = (0..MAX_CONNECTIONS_PER_IP).map(|_| next()).collect();
    for c in &held {
        admission.connection_opened(*c, &inbound_from("203.0.113.9")).expect("room");
    }
    let refusal = admission.connection_opened(next(), &inbound_from("203.0.113.9")).unwrap_err();
    assert_eq!(refusal.name, "established connections per IP address");
    admission.connection_closed(held[0], &inbound_from("203.0.113.9"));
    admission.connection_opened(next(), &inbound_from("203.0.113.9")).expect("one closed");
}
