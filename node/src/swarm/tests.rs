//! Tests of the swarm task's small helpers and of the routing table's diversity rule.

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::{Multiaddr, PeerId};

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

#[test]
fn address_groups_are_ipv4_slash_24_and_ipv6_slash_48() {
    use crate::swarm::dht::address_group;
    let group = |a: &str| address_group(&a.parse().unwrap());
    assert_eq!(group("/ip4/198.51.100.7/tcp/1"), group("/ip4/198.51.100.200/tcp/2"));
    assert_ne!(group("/ip4/198.51.100.7/tcp/1"), group("/ip4/198.51.101.7/tcp/1"));
    assert_eq!(group("/ip6/2001:db8:1::1/tcp/1"), group("/ip6/2001:db8:1:ffff::2/tcp/1"));
    assert_ne!(group("/ip6/2001:db8:1::1/tcp/1"), group("/ip6/2001:db8:2::1/tcp/1"));
    // A relayed address belongs to its relay's group; a name or a memory address to none.
    assert_eq!(
        group(
            "/ip4/203.0.113.5/tcp/1/p2p/12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE/p2p-circuit"
        ),
        group("/ip4/203.0.113.9/tcp/9")
    );
    assert_eq!(group("/dns4/example.org/tcp/1"), None);
    assert_eq!(group("/memory/7"), None);
}

#[test]
fn the_diversity_rule_admits_two_of_a_group_per_bucket_and_three_per_table() {
    use crate::config::DHT_DIVERSITY;
    use crate::swarm::dht::diversity_allows;
    let (a, b) = ([4, 198, 51, 100, 0, 0, 0], [4, 203, 0, 113, 0, 0, 0]);
    assert!(diversity_allows(&DHT_DIVERSITY, a, [b, b], [b, b, b]));
    assert!(diversity_allows(&DHT_DIVERSITY, a, [a], [a, a]));
    assert!(!diversity_allows(&DHT_DIVERSITY, a, [a, a], [a, a]), "two in the bucket");
    assert!(!diversity_allows(&DHT_DIVERSITY, a, [], [a, a, a]), "three in the table");
}

#[test]
fn replicas_spread_over_address_groups_in_a_stable_order() {
    use crate::swarm::dht::spread_over_groups;
    let peer = |ip: &str| (PeerId::random(), vec![format!("/ip4/{ip}/tcp/1").parse().unwrap()]);
    let sybil1 = peer("198.51.100.1");
    let sybil2 = peer("198.51.100.2");
    let sybil3 = peer("198.51.100.3");
    let honest1 = peer("203.0.113.1");
    let honest2 = peer("100.64.0.1");
    let by_distance =
        vec![sybil1.clone(), sybil2.clone(), sybil3.clone(), honest1.clone(), honest2.clone()];
    let mut spread = by_distance.clone();
    spread_over_groups(&mut spread);
    let ids: Vec<PeerId> = spread.iter().map(|(p, _)| *p).collect();
    assert_eq!(ids, [sybil1.0, honest1.0, honest2.0, sybil2.0, sybil3.0]);
}

#[test]
fn only_a_stall_after_a_few_kilobytes_sets_a_byte_budget_below_it() {
    use crate::swarm::volume::{
        MAX_FREEZE_BYTES, MIN_BYTE_BUDGET, MIN_FREEZE_BYTES, budget_after_freeze,
    };
    // A connection that froze at about the censor's 16 KB is replaced before it gets there.
    let budget = budget_after_freeze(7_000).expect("a volume freeze");
    assert!((MIN_BYTE_BUDGET..7_000).contains(&budget), "{budget}");
    // Too little to say anything about volume, or too much for the known censors: a dead link.
    assert_eq!(budget_after_freeze(MIN_FREEZE_BYTES - 1), None);
    assert_eq!(budget_after_freeze(MAX_FREEZE_BYTES + 1), None);
    assert!(budget_after_freeze(MIN_FREEZE_BYTES).is_some_and(|b| b >= MIN_BYTE_BUDGET));
}

#[test]
fn stealth_goes_first_and_quic_last_only_into_a_group_where_a_connection_froze() {
    use crate::swarm::dht::address_group;
    use crate::swarm::endpoints::Verdict;
    use crate::swarm::volume::freeze_order;
    let addresses = [
        "/ip4/203.0.113.10/udp/4001/quic-v1",
        "/ip4/198.51.100.7/udp/4001/quic-v1",
        "/ip4/203.0.113.10/tcp/4001",
        "/ip4/203.0.113.10/tcp/443/tls/http",
    ];
    let ranked = || -> Vec<(Multiaddr, Verdict)> {
        addresses.iter().map(|a| (a.parse().expect("address"), Verdict::Works)).collect()
    };
    let order =
        |r: &[(Multiaddr, Verdict)]| r.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>();
    let mut untouched = ranked();
    freeze_order(&[], &mut untouched);
    assert_eq!(order(&untouched), addresses, "no freeze anywhere: the order stays");
    let frozen = [address_group(&"/ip4/203.0.113.10/tcp/4001".parse().expect("address"))];
    let mut reordered = ranked();
    freeze_order(&frozen, &mut reordered);
    assert_eq!(
        order(&reordered),
        [addresses[3], addresses[1], addresses[2], addresses[0]],
        "stealth into the frozen /24 goes first, QUIC there last; the rest keep their order"
    );
}

#[test]
fn a_reservation_made_again_on_the_same_relay_is_the_same_announcement() {
    use crate::swarm::relays::{adds_to, announcement};
    let (a, b) = (PeerId::random(), PeerId::random());
    let at = |s: &str| -> Multiaddr { s.parse().expect("address") };
    let circuit_a = at(&format!("/ip4/203.0.113.10/tcp/4001/p2p/{a}/p2p-circuit"));
    let circuit_b = at(&format!("/ip4/203.0.113.11/tcp/4001/p2p/{b}/p2p-circuit"));
    let before = announcement(
        &[circuit_a.clone(), circuit_b.clone()],
        &[(a, circuit_a.clone()), (b, circuit_b.clone())],
    );
    // Relay a's connection was replaced: its reservation came back after b's.
    let after = announcement(
        &[circuit_b.clone(), circuit_a.clone()],
        &[(b, circuit_b.clone()), (a, circuit_a.clone())],
    );
    assert_eq!(before, after);
    assert!(!adds_to(&before, &after));
    // While it was being replaced, the reservation was missing: that adds nothing either (it
    // waits for the addresses to settle), and coming back to `before` is no news.
    let during = announcement(std::slice::from_ref(&circuit_b), &[(b, circuit_b.clone())]);
    assert!(!adds_to(&before, &during));
    assert!(adds_to(&during, &after), "from the gap, the reservation is new");
    // Over another transport the circuit is another address: that is news.
    let circuit_a_quic = at(&format!("/ip4/203.0.113.10/udp/4001/quic-v1/p2p/{a}/p2p-circuit"));
    let moved = announcement(
        &[circuit_a_quic.clone(), circuit_b.clone()],
        &[(a, circuit_a_quic), (b, circuit_b)],
    );
    assert_ne!(before, moved);
    assert!(adds_to(&before, &moved), "a new address is announced at once");
}

#[test]
fn only_a_publication_after_a_failed_one_wakes_the_mailbox_fetch() {
    use crate::swarm::dht::publication_failed;
    // The first publication is the daemon's start, which fetches anyway; a success after a
    // success changes nothing the fetch could find.
    assert!(!publication_failed(&None));
    assert!(!publication_failed(&Some(Ok(()))));
    assert!(publication_failed(&Some(Err("no other DHT server took it yet".into()))));
}

#[test]
fn failed_publications_in_a_row_wait_twice_as_long_each_time_up_to_a_minute() {
    use crate::swarm::dht::presence_retry_delay;
    let waits: Vec<u64> = (1..=7).map(|n| presence_retry_delay(n).as_secs()).collect();
    assert_eq!(waits, [5, 10, 20, 40, 60, 60, 60]);
    // However many failures in a row, the wait stays at the cap and nothing overflows.
    assert_eq!(presence_retry_delay(u32::MAX), crate::swarm::PRESENCE_RETRY_MAX);
    // Zero failures is not a retry; it waits no less than the first.
    assert_eq!(presence_retry_delay(0).as_secs(), 5);
}
