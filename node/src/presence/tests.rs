//! Which of a node's addresses anyone may read in its presence record, and which only its
//! contacts; and when it is republished.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use proptest::prelude::*;

use super::{
    PRESENCE_REFRESH, PRESENCE_REFRESH_SPREAD, private_relays, reachable_addresses, refresh_period,
    split_private,
};
use crate::swarm::NetStatus;

fn circuit(relay: &PeerId) -> Multiaddr {
    format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit").parse().expect("multiaddr")
}

#[test]
fn circuits_through_bridges_are_for_contacts_only() {
    let (bridge, relay) = (PeerId::random(), PeerId::random());
    let direct: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().expect("multiaddr");
    let net = NetStatus {
        external: vec![direct.clone()],
        reservations: vec![(relay, circuit(&relay)), (bridge, circuit(&bridge))],
        bridges: vec![bridge],
        ..NetStatus::default()
    };
    // The invite (for a contact) carries everything, the direct address first.
    let invite = reachable_addresses(&net);
    assert_eq!(invite, vec![direct.clone(), circuit(&relay), circuit(&bridge)]);
    let (public, for_contacts) = split_private(invite.clone(), &net.bridges);
    assert_eq!(public, vec![direct, circuit(&relay)]);
    assert_eq!(for_contacts, vec![circuit(&bridge)]);
    // With no bridge, everything is public.
    assert_eq!(split_private(invite, &[]).0.len(), 3);
}

#[test]
fn circuits_through_contacts_nodes_are_for_contacts_only() {
    let (bridge, relay, contact) = (PeerId::random(), PeerId::random(), PeerId::random());
    let net = NetStatus {
        reservations: vec![
            (relay, circuit(&relay)),
            (contact, circuit(&contact)),
            (bridge, circuit(&bridge)),
        ],
        bridges: vec![bridge],
        contact_relays: vec![contact],
        ..NetStatus::default()
    };
    let (public, for_contacts) = split_private(reachable_addresses(&net), &private_relays(&net));
    assert_eq!(public, vec![circuit(&relay)]);
    assert_eq!(for_contacts, vec![circuit(&contact), circuit(&bridge)]);
}

#[test]
fn republication_periods_span_the_last_five_minutes_of_twenty() {
    let spread = PRESENCE_REFRESH_SPREAD.as_millis() as u64;
    assert_eq!(refresh_period(0), PRESENCE_REFRESH);
    assert_eq!(refresh_period(spread), PRESENCE_REFRESH - PRESENCE_REFRESH_SPREAD);
    assert_eq!(refresh_period(spread + 1), PRESENCE_REFRESH);
    // Evenly spaced draws land evenly over the window: nodes that started together end up
    // spread over it, not in one instant.
    let quarters: Vec<Duration> = (0..4).map(|q| refresh_period(q * spread / 4)).collect();
    let step = PRESENCE_REFRESH_SPREAD / 4;
    for pair in quarters.windows(2) {
        assert_eq!(pair[0] - pair[1], step);
    }
}

proptest! {
    #[test]
    fn a_republication_never_waits_longer_than_the_refresh_or_comes_sooner_than_the_spread(
        random in any::<u64>()
    ) {
        let period = refresh_period(random);
        prop_assert!(period <= PRESENCE_REFRESH);
        prop_assert!(period >= PRESENCE_REFRESH - PRESENCE_REFRESH_SPREAD);
    }
}
