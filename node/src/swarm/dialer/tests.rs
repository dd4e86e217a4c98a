//! Tests of the dialer's address rules; its races run in `tests/src/reach.rs` and the netns
//! lab (`cli/tests/reach_lab.rs`).

use libp2p::{Multiaddr, PeerId};

use super::{allowed, relay_of};
use crate::config::Policy;

fn a(text: &str) -> Multiaddr {
    text.parse().expect("a multiaddr")
}

#[test]
fn a_circuit_names_its_relay_and_a_direct_address_none() {
    let relay = PeerId::random();
    let user = PeerId::random();
    assert_eq!(
        relay_of(&a(&format!("/ip4/203.0.113.10/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{user}"))),
        Some(relay)
    );
    assert_eq!(
        relay_of(&a(&format!("/ip4/203.0.113.10/tcp/4001/p2p/{relay}/p2p-circuit"))),
        Some(relay)
    );
    assert_eq!(relay_of(&a(&format!("/ip4/203.0.113.10/tcp/4001/p2p/{user}"))), None);
    assert_eq!(relay_of(&a("/ip4/203.0.113.10/tcp/4001")), None);
}

#[test]
fn the_stealth_policy_dials_only_stealth_endpoints_circuits_included() {
    let relay = PeerId::random();
    let stealth = "/ip4/203.0.113.10/tcp/443/tls/http/http-path/abcdefghijklmnop/certhash/uEiBq15oRdKXFKkgw90rDlypnopX4ECmPar3z2lcDIl0orA";
    for (address, any, stealth_only) in [
        ("/ip4/203.0.113.10/tcp/4001".to_owned(), true, false),
        ("/ip4/203.0.113.10/udp/4001/quic-v1".to_owned(), true, false),
        (stealth.to_owned(), true, true),
        (format!("{stealth}/p2p/{relay}/p2p-circuit"), true, true),
        (format!("/ip4/203.0.113.10/tcp/4001/p2p/{relay}/p2p-circuit"), true, false),
    ] {
        assert_eq!(allowed(Policy::Any, &a(&address)), any, "{address}");
        assert_eq!(allowed(Policy::Stealth, &a(&address)), stealth_only, "{address}");
    }
}
