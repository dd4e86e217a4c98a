//! Tests of the swarm task's small helpers.

use libp2p::Multiaddr;
use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};

use crate::swarm::{connection_address, one_line, without_peer};

#[test]
fn multi_line_errors_become_one_line() {
    let dial = "Failed to negotiate transport protocol(s): [\n    (/ip4/10.0.0.1/tcp/1: Connection refused)\r\n    (/ip4/10.0.0.2/tcp/1: timed out)\n]";
    assert_eq!(
        one_line(&dial),
        "Failed to negotiate transport protocol(s): [ (/ip4/10.0.0.1/tcp/1: Connection refused) (/ip4/10.0.0.2/tcp/1: timed out) ]"
    );
    assert_eq!(one_line(&"already one line"), "already one line");
}

#[test]
fn an_inbound_relayed_connection_shows_the_relay_it_came_through() {
    let relay = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    let circuit: Multiaddr = format!("{relay}/p2p-circuit").parse().unwrap();
    let peer: Multiaddr =
        "/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo".parse().unwrap();
    // What libp2p's relay client reports for a circuit the peer opened to us.
    let inbound = ConnectedPoint::Listener { local_addr: circuit.clone(), send_back_addr: peer };
    assert_eq!(connection_address(&inbound), circuit);
    assert!(!without_peer(&connection_address(&inbound)).is_empty());
    // Every other connection shows its remote address, as before.
    let direct: Multiaddr = "/ip4/127.0.0.1/tcp/5000".parse().unwrap();
    let accepted = ConnectedPoint::Listener {
        local_addr: "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
        send_back_addr: direct.clone(),
    };
    assert_eq!(connection_address(&accepted), direct);
    let dialed = ConnectedPoint::Dialer {
        address: circuit.clone(),
        role_override: Endpoint::Dialer,
        port_use: PortUse::Reuse,
    };
    assert_eq!(connection_address(&dialed), circuit);
}

#[test]
fn a_failed_dial_is_said_in_a_few_words() {
    use libp2p::TransportError;
    use libp2p::swarm::DialError;
    // How a refused TCP dial reaches the swarm: an I/O error wrapped by the transport's layers.
    let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
    let wrapped = std::io::Error::other(refused);
    let address: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let error = DialError::Transport(vec![(address, TransportError::Other(wrapped))]);
    let full = one_line(&error);
    let brief = crate::swarm::brief_dial_error(&error);
    assert_eq!(brief, "/ip4/127.0.0.1/tcp/4001: Connection refused");
    assert!(brief.len() < full.len(), "{full}");
}
