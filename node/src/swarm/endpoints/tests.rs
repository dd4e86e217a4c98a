//! Tests of the endpoint book: what worked is tried first, what failed rarely, per network.

use libp2p::{Multiaddr, PeerId};

use super::{
    EndpointRecord, Endpoints, MAX_ENDPOINTS, RETRY_AFTER, TransportKind, Verdict, endpoint_of,
    retry_after,
};
use crate::swarm::network::NetworkId;

const HOME: NetworkId = NetworkId([1; 8]);
const CAFE: NetworkId = NetworkId([2; 8]);
const STEALTH: &str = "/ip4/203.0.113.10/tcp/443/tls/http/http-path/abcdefghijklmnop/certhash/uEiBq15oRdKXFKkgw90rDlypnopX4ECmPar3z2lcDIl0orA";

fn a(text: &str) -> Multiaddr {
    text.parse().expect("a multiaddr")
}

fn order(ranked: &[(Multiaddr, Verdict)]) -> Vec<String> {
    ranked.iter().map(|(a, _)| a.to_string()).collect()
}

#[test]
fn what_worked_goes_first_and_what_failed_waits_its_turn() {
    let relay = PeerId::random();
    let (tcp, quic, stealth) =
        (a("/ip4/203.0.113.10/tcp/4001"), a("/ip4/203.0.113.10/udp/4001/quic-v1"), a(STEALTH));
    let mut book = Endpoints::default();
    let all = vec![tcp.clone(), quic.clone(), stealth.clone()];
    // Nothing known: the order given.
    assert_eq!(order(&book.rank(HOME, all.clone(), 0)), order(&book.rank(CAFE, all.clone(), 0)));
    assert_eq!(book.rank(HOME, all.clone(), 0)[0], (tcp.clone(), Verdict::Unknown));

    // At home TCP and QUIC are blocked and stealth works.
    book.record(HOME, relay, &tcp, false, 1_000);
    book.record(HOME, relay, &quic, false, 2_000);
    book.record(HOME, relay, &stealth, true, 3_000);
    let ranked = book.rank(HOME, all.clone(), 4_000);
    assert_eq!(ranked, vec![(stealth.clone(), Verdict::Works)], "the failed ones wait");
    // Their retry time comes: after what works, the oldest failure first.
    let later = 2_000 + RETRY_AFTER.as_millis() as u64;
    assert_eq!(
        book.rank(HOME, all.clone(), later),
        vec![
            (stealth.clone(), Verdict::Works),
            (tcp.clone(), Verdict::Failed { due: true }),
            (quic.clone(), Verdict::Failed { due: true }),
        ]
    );
    // When nothing else is left, even a recent failure is tried.
    assert_eq!(
        book.rank(HOME, vec![quic.clone(), tcp.clone()], 4_000),
        vec![
            (tcp.clone(), Verdict::Failed { due: false }),
            (quic.clone(), Verdict::Failed { due: false })
        ]
    );
    // Another network knows none of this.
    assert_eq!(book.rank(CAFE, all.clone(), 4_000)[0], (tcp.clone(), Verdict::Unknown));

    // A new relay's stealth address comes before its TCP one at home: stealth works there,
    // TCP only failed.
    let other_tcp = a("/ip4/198.51.100.20/tcp/4001");
    let other_stealth = a(&STEALTH.replace("203.0.113.10", "198.51.100.20"));
    assert_eq!(
        order(&book.rank(HOME, vec![other_tcp.clone(), other_stealth.clone()], 4_000)),
        [other_stealth.to_string(), other_tcp.to_string()]
    );

    // A success after failures makes it work again.
    book.record(HOME, relay, &tcp, true, 5_000);
    assert_eq!(book.verdict(HOME, &tcp, 5_000), Verdict::Works);
    assert_eq!(book.rank(HOME, all, 5_000)[0].0, tcp, "the most recent success first");
}

#[test]
fn failures_in_a_row_wait_longer_and_circuits_count_for_their_relay() {
    assert_eq!(retry_after(1), RETRY_AFTER);
    assert_eq!(retry_after(2), RETRY_AFTER * 2);
    assert_eq!(retry_after(40), super::MAX_RETRY_AFTER);

    let relay = PeerId::random();
    let user = PeerId::random();
    let circuit = a(&format!("/ip4/203.0.113.10/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{user}"));
    assert_eq!(endpoint_of(&circuit), a("/ip4/203.0.113.10/tcp/4001"));
    let mut book = Endpoints::default();
    book.record(HOME, relay, &a(&format!("/ip4/203.0.113.10/tcp/4001/p2p/{relay}")), false, 0);
    assert_eq!(book.verdict(HOME, &circuit, 1), Verdict::Failed { due: false });
    assert_eq!(TransportKind::of(&a(STEALTH)), TransportKind::Stealth);
    assert_eq!(TransportKind::of(&a("/ip4/1.2.3.4/udp/1/quic-v1")), TransportKind::Quic);
    assert_eq!(TransportKind::of(&a("/ip4/1.2.3.4/tcp/1")), TransportKind::Tcp);
}

#[test]
fn the_book_is_bounded_and_forgets_the_oldest() {
    let peer = PeerId::random();
    let mut book = Endpoints::new(vec![EndpointRecord {
        network: HOME,
        address: a("/ip4/10.0.0.1/tcp/1"),
        peer,
        successes: 1,
        failures: 0,
        last_success_ms: Some(0),
        last_failure_ms: None,
    }]);
    for i in 0..MAX_ENDPOINTS as u64 + 10 {
        let address = a(&format!("/ip4/10.1.{}.{}/tcp/4001", i / 250, i % 250));
        book.record(HOME, peer, &address, true, 1 + i);
    }
    assert_eq!(book.len(), MAX_ENDPOINTS);
    assert!(book.get(HOME, &a("/ip4/10.0.0.1/tcp/1")).is_none(), "the oldest went first");
    assert_eq!(book.working_addresses(HOME, &peer)[0], a("/ip4/10.1.4.33/tcp/4001"));
    assert_eq!(book.on_network(CAFE), vec![]);
}
