//! Why a dial or a request to a peer failed, in a few words a user can act on: libp2p's own
//! text nests every layer that passed an error on ("Failed to negotiate transport protocol(s):
//! [(…: : Failed to connect to destination.: Failed to connect to destination.: Relay has no
//! reservation for destination.)]"), which says little to a user and fills `outbox` and
//! `status ID`. [`of_dial`] and [`of_request`] sort an error into a [`Reason`], matching on
//! libp2p's error types where it exposes them; [`summary`] says what a race's addresses ran
//! into, path by path. No I/O here: the caller logs the raw error (`tracing::debug!`), so
//! nothing is lost for diagnosis.

use std::error::Error as StdError;
use std::io;

use libp2p::PeerId;
use libp2p::TransportError;
use libp2p::core::transport::timeout::TransportTimeoutError;
use libp2p::core::upgrade::NegotiationError;
use libp2p::relay::client::transport::Error as CircuitError;
use libp2p::relay::outbound::hop::ConnectError;
use libp2p::request_response::OutboundFailure;
use libp2p::swarm::DialError;

use crate::swarm::{innermost, one_line};

/// The most characters of libp2p's own text kept for an error no [`Reason`] names: enough for
/// its innermost cause ("Connection reset by peer (os error 104)"), not for the chain.
pub const MAX_OTHER_CHARS: usize = 100;

/// The most distinct reasons [`summary`] lists; the rest are counted.
pub const MAX_REASONS: usize = 3;

/// The characters of a peer id shown in a failure's text, as `kolokol chat` shows an unnamed
/// peer: enough to tell peers apart and to type as the start of one.
pub const SHORT_PEER_CHARS: usize = 16;

/// How deep [`of_error`] looks into an error's causes.
const MAX_DEPTH: usize = 16;

/// Why one address, or one request, failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The relay holds no reservation for the peer: it is offline, or on other relays now.
    NoReservation,
    /// The relay refused the circuit, limited it, or could not open it to the peer; the text
    /// says which.
    Relay(&'static str),
    /// The relay itself could not be reached (or its connection closed before the circuit
    /// was asked for).
    RelayUnreachable,
    /// The address refused the connection.
    Refused,
    /// No answer in time.
    TimedOut,
    /// No route to the address.
    NoRoute,
    /// No address to dial.
    NoAddress,
    /// Another node answered at the address.
    WrongPeer,
    /// The connection closed while being set up, or before the answer came.
    Cut,
    /// No protocol in common.
    Unsupported,
    /// The peer's node, connected, did not answer a request in time.
    NoAnswer,
    /// This node's own limits (connection limits, the dial cool-down) stopped the dial.
    OwnLimits,
    /// Anything else: libp2p's innermost cause, at most [`MAX_OTHER_CHARS`] characters.
    Other(String),
}

impl Reason {
    /// The words for the user.
    pub(crate) fn text(&self) -> &str {
        match self {
            Reason::NoReservation => {
                "their relay holds no reservation for them (offline, or on another relay now)"
            }
            Reason::Relay(why) => why,
            Reason::RelayUnreachable => "their relay cannot be reached",
            Reason::Refused => "connection refused",
            Reason::TimedOut => "timed out",
            Reason::NoRoute => "no route to their address",
            Reason::NoAddress => "no address known for them",
            Reason::WrongPeer => "another node answered at their address",
            Reason::Cut => "the connection closed meanwhile",
            Reason::Unsupported => "their node does not speak our protocol (another version?)",
            Reason::NoAnswer => "their node did not answer in time",
            Reason::OwnLimits => "this node's own connection limits held the dial back",
            Reason::Other(text) => text,
        }
    }

    /// Whether the reason names the relay, so that the path need not be said.
    fn says_relay(&self) -> bool {
        matches!(self, Reason::NoReservation | Reason::Relay(_) | Reason::RelayUnreachable)
    }

    /// What comes first in a summary: what says most about where the peer is.
    fn rank(&self) -> u8 {
        match self {
            Reason::NoReservation => 0,
            Reason::Relay(_) => 1,
            Reason::WrongPeer => 2,
            Reason::Unsupported => 3,
            Reason::Refused => 4,
            Reason::NoRoute => 5,
            Reason::TimedOut => 6,
            Reason::NoAnswer => 7,
            Reason::Cut => 8,
            Reason::RelayUnreachable => 9,
            Reason::NoAddress => 10,
            Reason::OwnLimits => 11,
            Reason::Other(_) => 12,
        }
    }

    /// The reason with the path it was met on, unless the reason says it.
    fn on_path(&self, relayed: bool) -> String {
        if self.says_relay() {
            self.text().to_owned()
        } else if relayed {
            format!("through a relay: {}", self.text())
        } else {
            format!("directly: {}", self.text())
        }
    }
}

/// A peer id as a failure's text shows it: its first [`SHORT_PEER_CHARS`] characters and `…`.
pub(crate) fn short_peer(peer: &PeerId) -> String {
    cut(&peer.to_string(), SHORT_PEER_CHARS)
}

/// `text`'s first `chars` characters and `…`, or the whole of it when it is no longer.
fn cut(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Why a dial failed. A dial of several addresses says what the most telling one ran into.
pub(crate) fn of_dial(error: &DialError) -> Reason {
    match error {
        DialError::NoAddresses => Reason::NoAddress,
        DialError::WrongPeerId { .. } => Reason::WrongPeer,
        DialError::Denied { .. } => Reason::OwnLimits,
        DialError::Aborted => Reason::Cut,
        DialError::Transport(errors) => errors
            .iter()
            .map(|(_, e)| of_transport(e))
            .min_by_key(Reason::rank)
            .unwrap_or(Reason::NoAddress),
        other => shortened(other),
    }
}

/// Why a transport could not dial an address.
pub(crate) fn of_transport(error: &TransportError<io::Error>) -> Reason {
    match error {
        TransportError::MultiaddrNotSupported(_) => {
            Reason::Other("this node has no transport for their address".into())
        }
        TransportError::Other(e) => of_error(e),
    }
}

/// Why a request to a peer failed.
pub(crate) fn of_request(error: &OutboundFailure) -> Reason {
    match error {
        OutboundFailure::Timeout => Reason::NoAnswer,
        // The request-response behaviour dials only when the connection the request was for
        // is gone.
        OutboundFailure::DialFailure | OutboundFailure::ConnectionClosed => Reason::Cut,
        OutboundFailure::UnsupportedProtocols => Reason::Unsupported,
        OutboundFailure::Io(e) => of_error(e),
    }
}

/// Why an error happened, from the first of its causes that names a [`Reason`]. An
/// `io::Error` wrapping another error is looked into through `get_ref` as well as `source`:
/// its `source` skips the error it wraps, and so does that of the `Either` libp2p's
/// `OrTransport` wraps the relay's error in.
pub(crate) fn of_error(error: &(dyn StdError + 'static)) -> Reason {
    let mut stack: Vec<&(dyn StdError + 'static)> = vec![error];
    let mut looked = 0;
    while let Some(e) = stack.pop() {
        looked += 1;
        if looked > MAX_DEPTH {
            break;
        }
        if let Some(reason) = known(e) {
            return reason;
        }
        if let Some(next) = e.source() {
            stack.push(next);
        }
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            stack.push(inner);
        }
    }
    by_text(error).unwrap_or_else(|| shortened(error))
}

/// The reason one error (not its causes) names, if any.
fn known(e: &(dyn StdError + 'static)) -> Option<Reason> {
    if let Some(connect) = e.downcast_ref::<ConnectError>() {
        return Some(of_connect(connect));
    }
    if let Some(circuit) = e.downcast_ref::<CircuitError>() {
        return match circuit {
            CircuitError::Connect(connect) => Some(of_connect(connect)),
            // The relay client's behaviour drops the dial's answer when the dial of the relay
            // failed, or its connection closed, before the circuit was asked for.
            CircuitError::ResponseFromBehaviourCanceled(_) => Some(Reason::RelayUnreachable),
            _ => None,
        };
    }
    // The same as above, when only the relay error's own source is in the chain.
    if e.downcast_ref::<futures::channel::oneshot::Canceled>().is_some() {
        return Some(Reason::RelayUnreachable);
    }
    if let Some(TransportTimeoutError::Timeout) =
        e.downcast_ref::<TransportTimeoutError<io::Error>>()
    {
        return Some(Reason::TimedOut);
    }
    if let Some(negotiation) = e.downcast_ref::<NegotiationError>() {
        return Some(match negotiation {
            NegotiationError::Failed => Reason::Unsupported,
            NegotiationError::ProtocolError(_) => Reason::Cut,
        });
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        use io::ErrorKind::*;
        return match io.kind() {
            ConnectionRefused => Some(Reason::Refused),
            TimedOut => Some(Reason::TimedOut),
            HostUnreachable | NetworkUnreachable => Some(Reason::NoRoute),
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected
            | WriteZero => Some(Reason::Cut),
            _ => None,
        };
    }
    None
}

/// What the relay's answer to a circuit request means.
fn of_connect(error: &ConnectError) -> Reason {
    match error {
        ConnectError::NoReservation => Reason::NoReservation,
        ConnectError::ResourceLimitExceeded => {
            Reason::Relay("their relay refused the circuit (at its limits)")
        }
        ConnectError::PermissionDenied => Reason::Relay("their relay refused the circuit"),
        ConnectError::ConnectionFailed => {
            Reason::Relay("their relay could not reach them (gone offline just now?)")
        }
        ConnectError::Unsupported => Reason::Relay("that relay does not relay circuits"),
        ConnectError::Io(_) | ConnectError::Protocol(_) => Reason::Cut,
    }
}

/// libp2p's words for the reasons its types do not carry where the chain reaches us (an error
/// type generic over what it wraps, a layer whose `source` skips its inner error), each with
/// the libp2p source it comes from. Matched only when no type in the chain named a reason.
const TEXTS: [(&str, Reason); 4] = [
    // libp2p-relay 0.22, protocol/outbound_hop.rs, `ConnectError::NoReservation`.
    ("Relay has no reservation for destination", Reason::NoReservation),
    // libp2p-relay 0.22, priv_client/transport.rs, `Error::ResponseFromBehaviourCanceled`.
    ("Response from behaviour was canceled", Reason::RelayUnreachable),
    // libp2p-core 0.44, transport/timeout.rs, `TransportTimeoutError::Timeout`.
    ("Timeout has been reached", Reason::TimedOut),
    // The operating system's text for ECONNREFUSED, as Rust's io::Error shows it.
    ("Connection refused", Reason::Refused),
];

/// The reason libp2p's text names, if any (see [`TEXTS`]).
fn by_text(error: &dyn StdError) -> Option<Reason> {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    TEXTS.iter().find(|(words, _)| text.contains(words)).map(|(_, reason)| reason.clone())
}

/// An error no [`Reason`] names: its innermost cause, on one line, at most
/// [`MAX_OTHER_CHARS`] characters.
fn shortened(error: &(dyn StdError + 'static)) -> Reason {
    let mut text = innermost(error);
    if text.trim_start_matches([':', ' ']).is_empty() {
        text = one_line(error);
    }
    // The `…` is one of the characters allowed.
    Reason::Other(cut(text.trim_start_matches([':', ' ']), MAX_OTHER_CHARS - 1))
}

/// What the addresses of a lost race ran into, each reason once with its path (`relayed` or
/// not), the most telling first, at most [`MAX_REASONS`] of them.
pub(crate) fn summary(failures: &[(bool, Reason)]) -> String {
    let mut sorted: Vec<&(bool, Reason)> = failures.iter().collect();
    sorted.sort_by_key(|(_, reason)| reason.rank());
    let mut parts: Vec<String> = Vec::new();
    for (relayed, reason) in sorted {
        let part = reason.on_path(*relayed);
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    if parts.is_empty() {
        return "every address failed".into();
    }
    let more = parts.len().saturating_sub(MAX_REASONS);
    parts.truncate(MAX_REASONS);
    let mut text = parts.join("; ");
    if more > 0 {
        text.push_str(&format!("; {more} more"));
    }
    text
}

#[cfg(test)]
mod tests;
