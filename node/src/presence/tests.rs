//! Which of a node's addresses anyone may read in its presence record, and which only its
//! contacts.

use libp2p::{Multiaddr, PeerId};

use super::{private_relays, reachable_addresses, split_private};
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
