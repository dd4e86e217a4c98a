//! Tests that each kind of libp2p dial or request error, built as libp2p builds it, reads as its
//! reason, and that a lost race's summary stays short and says the path.

use std::io;

use libp2p::core::transport::timeout::TransportTimeoutError;
use libp2p::core::upgrade::NegotiationError;
use libp2p::relay::client::transport::Error as CircuitError;
use libp2p::relay::outbound::hop::ConnectError;
use libp2p::request_response::OutboundFailure;
use libp2p::swarm::{ConnectionDenied, DialError};
use libp2p::{Multiaddr, PeerId, TransportError};

use super::{MAX_OTHER_CHARS, MAX_REASONS, Reason, of_dial, of_request, short_peer, summary};

const DIRECT: &str = "/ip4/127.0.0.1/tcp/4001";

fn circuit() -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/4001/p2p/{}/p2p-circuit", PeerId::random()).parse().unwrap()
}

/// A failed dial of `address`, with `error` wrapped the way the swarm's boxed transports wrap
/// it (an `io::Error` of kind `Other` around it, twice: the transport's box, the builder's).
fn dial(address: Multiaddr, error: impl std::error::Error + Send + Sync + 'static) -> DialError {
    let boxed = io::Error::other(io::Error::other(error));
    DialError::Transport(vec![(address, TransportError::Other(boxed))])
}

fn direct(error: impl std::error::Error + Send + Sync + 'static) -> Reason {
    of_dial(&dial(DIRECT.parse().unwrap(), error))
}

fn relayed(error: impl std::error::Error + Send + Sync + 'static) -> Reason {
    of_dial(&dial(circuit(), error))
}

#[test]
fn a_relay_without_a_reservation_for_the_peer_says_so() {
    let reason = relayed(CircuitError::Connect(ConnectError::NoReservation));
    assert_eq!(reason, Reason::NoReservation);
    assert_eq!(
        reason.text(),
        "their relay holds no reservation for them (offline, or on another relay now)"
    );
    // The same when only the relay's answer itself is in the chain.
    assert_eq!(relayed(ConnectError::NoReservation), Reason::NoReservation);
}

#[test]
fn a_relay_that_refuses_or_limits_the_circuit_says_which() {
    let limit = relayed(CircuitError::Connect(ConnectError::ResourceLimitExceeded));
    assert_eq!(limit, Reason::Relay("their relay refused the circuit (at its limits)"));
    let denied = relayed(CircuitError::Connect(ConnectError::PermissionDenied));
    assert_eq!(denied, Reason::Relay("their relay refused the circuit"));
    let failed = relayed(CircuitError::Connect(ConnectError::ConnectionFailed));
    assert_eq!(failed, Reason::Relay("their relay could not reach them (gone offline just now?)"));
    let unsupported = relayed(CircuitError::Connect(ConnectError::Unsupported));
    assert_eq!(unsupported, Reason::Relay("that relay does not relay circuits"));
}

#[test]
fn a_relay_that_cannot_be_reached_is_named() {
    let canceled = futures::channel::oneshot::Canceled;
    assert_eq!(
        relayed(CircuitError::ResponseFromBehaviourCanceled(canceled)),
        Reason::RelayUnreachable
    );
    // As the user saw it: the relay's error behind a layer whose `source` skips it.
    assert_eq!(relayed(futures::channel::oneshot::Canceled), Reason::RelayUnreachable);
}

#[test]
fn a_refused_connection_and_a_timeout_are_said_as_such() {
    let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused");
    assert_eq!(direct(refused), Reason::Refused);
    assert_eq!(direct(TransportTimeoutError::<io::Error>::Timeout), Reason::TimedOut);
    assert_eq!(direct(io::Error::new(io::ErrorKind::TimedOut, "cooling down")), Reason::TimedOut);
    let unreachable = io::Error::new(io::ErrorKind::NetworkUnreachable, "Network is unreachable");
    assert_eq!(direct(unreachable), Reason::NoRoute);
}

#[test]
fn no_address_a_wrong_peer_and_our_own_limits_are_told_apart() {
    assert_eq!(of_dial(&DialError::NoAddresses), Reason::NoAddress);
    let wrong =
        DialError::WrongPeerId { obtained: PeerId::random(), address: DIRECT.parse().unwrap() };
    assert_eq!(of_dial(&wrong), Reason::WrongPeer);
    let denied = DialError::Denied { cause: ConnectionDenied::new(io::Error::other("limit")) };
    assert_eq!(of_dial(&denied), Reason::OwnLimits);
}

#[test]
fn a_negotiation_that_failed_or_was_cut_is_said_as_such() {
    assert_eq!(direct(NegotiationError::Failed), Reason::Unsupported);
    let reset = io::Error::new(io::ErrorKind::ConnectionReset, "Connection reset by peer");
    assert_eq!(direct(reset), Reason::Cut);
    assert_eq!(of_dial(&DialError::Aborted), Reason::Cut);
    assert_eq!(
        relayed(CircuitError::Connect(ConnectError::Io(io::ErrorKind::UnexpectedEof.into()))),
        Reason::Cut
    );
}

#[test]
fn a_failed_request_says_whether_the_peer_was_silent_or_the_connection_went() {
    assert_eq!(of_request(&OutboundFailure::Timeout), Reason::NoAnswer);
    assert_eq!(of_request(&OutboundFailure::ConnectionClosed), Reason::Cut);
    assert_eq!(of_request(&OutboundFailure::DialFailure), Reason::Cut);
    assert_eq!(of_request(&OutboundFailure::UnsupportedProtocols), Reason::Unsupported);
    let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset");
    assert_eq!(of_request(&OutboundFailure::Io(reset)), Reason::Cut);
}

#[test]
fn libp2p_words_are_read_when_no_type_carries_the_reason() {
    // An error type the chain does not let us reach, only its text.
    let text = io::Error::other(
        "Failed to connect to destination.: Relay has no reservation for destination.",
    );
    assert_eq!(relayed(text), Reason::NoReservation);
}

#[test]
fn anything_else_is_its_innermost_cause_and_never_long() {
    let short = io::Error::other("noise handshake failed");
    assert_eq!(direct(short), Reason::Other("noise handshake failed".into()));
    let long = io::Error::other("x".repeat(500));
    let Reason::Other(text) = direct(long) else { panic!("not another reason") };
    assert_eq!(text.chars().count(), MAX_OTHER_CHARS);
    assert!(text.ends_with('…'), "{text}");
}

#[test]
fn a_lost_race_is_summed_up_path_by_path_most_telling_first() {
    let failures = [
        (false, Reason::Refused),
        (true, Reason::NoReservation),
        (true, Reason::NoReservation),
        (true, Reason::TimedOut),
    ];
    assert_eq!(
        summary(&failures),
        "their relay holds no reservation for them (offline, or on another relay now); \
         directly: connection refused; through a relay: timed out"
    );
    assert_eq!(summary(&[]), "every address failed");
    let many: Vec<(bool, Reason)> =
        (0..10).map(|i| (false, Reason::Other(format!("cause {i}")))).collect();
    let text = summary(&many);
    assert_eq!(text.matches("directly:").count(), MAX_REASONS, "{text}");
    assert!(text.ends_with("; 7 more"), "{text}");
}

#[test]
fn what_the_new_user_saw_now_reads_in_a_few_words() {
    // `cannot reach 12D3KooW…: /ip4/…/p2p-circuit: Failed to negotiate transport protocol(s):
    // [(…: : Failed to connect to destination.: Failed to connect to destination.: Relay has
    // no reservation for destination.)]`, built as the relay client builds it.
    let error = dial(circuit(), CircuitError::Connect(ConnectError::NoReservation));
    let libp2p = crate::swarm::one_line(&error);
    assert!(libp2p.contains("Relay has no reservation for destination."), "{libp2p}");
    let said = summary(&[(true, of_dial(&error))]);
    assert_eq!(said, Reason::NoReservation.text());
    assert!(said.len() * 2 < libp2p.len(), "{said} / {libp2p}");
}

#[test]
fn a_peer_id_is_shortened_as_the_cli_shows_an_unnamed_peer() {
    let peer = PeerId::random();
    let short = short_peer(&peer);
    assert!(short.ends_with('…'));
    assert!(peer.to_string().starts_with(short.trim_end_matches('…')));
    assert_eq!(short.trim_end_matches('…').len(), super::SHORT_PEER_CHARS);
}
