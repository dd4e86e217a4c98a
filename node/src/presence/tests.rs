//! Which of a node's addresses anyone may read, and which only its contacts.

use libp2p::{Multiaddr, PeerId};

use super::{public_addresses, split_private};
use crate::swarm::NetStatus;

fn circuit(relay: &PeerId) -> Multiaddr {
    format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit").parse().expect("multiaddr")
}

#[test]
fn circuits_through_bridges_stay_out_of_the_public_record_and_in_the_invite() {
    let (bridge, relay) = (PeerId::random(), PeerId::random());
    let direct: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().expect("multiaddr");
    let all = vec![direct.clone(), circuit(&relay), circuit(&bridge)];
    let (public, private) = split_private(all.clone(), &[bridge]);
    assert_eq!(public, vec![direct.clone(), circuit(&relay)]);
    assert_eq!(private, vec![circuit(&bridge)]);
    // With no bridge, everything is public.
    assert_eq!(split_private(all, &[]).0.len(), 3);

    let net = NetStatus {
        external: vec![direct.clone()],
        reservations: vec![(relay, circuit(&relay)), (bridge, circuit(&bridge))],
        bridges: vec![bridge],
        ..NetStatus::default()
    };
    let invite = super::reachable_addresses(&net);
    assert!(invite.contains(&circuit(&bridge)), "{invite:?}");
    let record = public_addresses(&net);
    assert!(!record.contains(&circuit(&bridge)), "{record:?}");
    assert!(record.contains(&circuit(&relay)) && record.contains(&direct), "{record:?}");
}
