//! Conversations as a person reads them: every message to and from one peer, in the order it
//! was written, with the gaps where a message its writer numbered has not arrived yet; and the
//! list of conversations with their unread counts.
//!
//! Arrival order is not writing order: a sender that restarts with messages queued and in the
//! mailbox delivers them in no particular order. A numbered text (docs/PROTOCOL.md section
//! 6.9) says its place; [`order`] puts a peer's texts of one series in number order, keeps
//! each at or after the time of the one before it, and merges them with ours by time.

use std::collections::HashMap;

use kolokol_protocol::control::{self, CHAT_PREVIEW_CHARS};
use kolokol_protocol::message::format_id;
use libp2p::PeerId;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::outbox::MESSAGE_TTL;
use crate::store::{ChatPeer, InboxRow, Number, OutboxView, Store};

/// The fewest characters of a peer id that name it by its start (`12D3KooW` alone is shared by
/// every Ed25519 peer id, so this is that and 4 more).
pub const MIN_PEER_PREFIX: usize = 12;

/// The most conversations `chats` lists.
pub const MAX_LISTED_CHATS: u32 = 1000;

/// `text` as a whole peer id: one that parses and names a key, an identity multihash whose
/// digest decodes as a public key or a SHA-256 multihash of one. A start of a peer id often
/// parses too (`12D3KooW` and a few more characters can make a short identity multihash), and
/// would then name a peer that does not exist: a block given by the start of a spammer's id
/// would block nobody.
pub(crate) fn whole_peer_id(text: &str) -> Option<PeerId> {
    let peer: PeerId = text.parse().ok()?;
    let hash = peer.as_ref();
    match hash.code() {
        IDENTITY_MULTIHASH => {
            libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).ok().map(|_| peer)
        }
        SHA256_MULTIHASH if hash.digest().len() == 32 => Some(peer),
        _ => None,
    }
}

/// The multihash code of a peer id that holds its public key itself (Ed25519's).
const IDENTITY_MULTIHASH: u64 = 0x00;

/// The multihash code of a peer id that is the SHA-256 of a longer key (RSA's).
const SHA256_MULTIHASH: u64 = 0x12;

/// The conversations of this node.
#[derive(Clone)]
pub(crate) struct Chats {
    pub(crate) store: Store,
    pub(crate) clock: Clock,
}

impl Chats {
    /// The peer `with` names: a contact's name in any case, a peer id, or a unique start of
    /// the peer id of someone there is a conversation with (at least [`MIN_PEER_PREFIX`]
    /// characters).
    pub(crate) fn peer(&self, with: &str) -> Result<PeerId> {
        if let Some(contact) = self.store.contact(with)? {
            return Ok(contact.peer_id);
        }
        let with = with.trim();
        if let Some(peer) = whole_peer_id(with) {
            return Ok(peer);
        }
        if with.len() >= MIN_PEER_PREFIX {
            let matches: Vec<PeerId> = self
                .store
                .chat_peers(MAX_LISTED_CHATS)?
                .into_iter()
                .map(|c| c.peer_id)
                .chain(self.store.blocked()?.into_iter().map(|(p, _)| p))
                .filter(|p| p.to_string().starts_with(with))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            match matches[..] {
                [one] => return Ok(one),
                [] => {}
                _ => return Err(Error::AmbiguousId(with.to_owned())),
            }
        }
        Err(Error::UnknownPeer(with.to_owned()))
    }

    /// Every conversation, the most recent first, with unread and missing counts.
    pub(crate) fn list(&self) -> Result<Vec<control::ChatSummary>> {
        let now = self.clock.now_ms();
        self.store
            .chat_peers(MAX_LISTED_CHATS)?
            .into_iter()
            .map(|ChatPeer { peer_id: peer, contact: name, unread, last_at_ms: last }| {
                let incoming = self.store.chat_incoming(&peer, 1)?.pop();
                let incoming_any = incoming.is_some();
                let outgoing = self.store.chat_outgoing(&peer, 1)?.pop();
                let numbers = self.store.incoming_numbers(&peer)?;
                let waiting = gaps(&numbers)
                    .into_iter()
                    .filter(|(_, (missing, received))| *missing > 0 && !given_up(*received, now))
                    .map(|(_, (missing, _))| missing)
                    .sum();
                let (last_text, last_from_me) = match (incoming, outgoing) {
                    (Some(i), Some(o)) if o.created_at_ms >= i.received_at_ms => {
                        (Some(o.text), true)
                    }
                    (Some(i), _) => (Some(i.text), false),
                    (None, Some(o)) => (Some(o.text), true),
                    (None, None) => (None, false),
                };
                let verified = name.is_some()
                    && self
                        .store
                        .contact_by_peer(&peer)?
                        .is_some_and(|c| c.verified_at_ms.is_some());
                Ok(control::ChatSummary {
                    request: name.is_none() && incoming_any,
                    verified,
                    name,
                    peer_id: peer.to_string(),
                    unread,
                    waiting,
                    last_at_ms: (last > 0).then_some(last),
                    last_text: last_text.map(|t| preview(&t)),
                    last_from_me,
                })
            })
            .collect()
    }

    /// The newest `limit` messages with `peer`, either way, in the order they were written.
    pub(crate) fn chat(&self, peer: &PeerId, limit: u32) -> Result<control::Chat> {
        let incoming = self.store.chat_incoming(peer, limit)?;
        let outgoing = self.store.chat_outgoing(peer, limit)?;
        let numbers = self.store.incoming_numbers(peer)?;
        let contact = self.store.contact_by_peer(peer)?;
        let verified = contact.as_ref().is_some_and(|c| c.verified_at_ms.is_some());
        let name = contact.map(|c| c.name);
        let mut entries = order(incoming, outgoing, &gaps(&numbers), self.clock.now_ms());
        let skip = entries.len().saturating_sub(limit as usize);
        entries.drain(..skip);
        Ok(control::Chat { name, peer_id: peer.to_string(), entries, verified })
    }
}

/// Whether a gap before a message received at `received_ms` is over: its writer retries a
/// message for [`MESSAGE_TTL`], so what has not come by then will not.
fn given_up(received_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(received_ms) > MESSAGE_TTL.as_millis() as u64
}

/// For every numbered message received, how many numbers of its series just before it are
/// missing (from the one before it that did arrive, or from 1), and when it was received.
pub(crate) fn gaps(numbers: &[(Number, u64)]) -> HashMap<Number, (u64, u64)> {
    let mut sorted: Vec<(Number, u64)> = numbers.to_vec();
    sorted.sort();
    let mut out = HashMap::with_capacity(sorted.len());
    let mut previous: Option<Number> = None;
    for (number, received) in sorted {
        let before = match previous {
            Some(p) if p.series == number.series => p.seq,
            _ => 0,
        };
        out.insert(number, (number.seq.saturating_sub(before).saturating_sub(1), received));
        previous = Some(number);
    }
    out
}

/// Received and sent messages merged in the order they were written: a peer's numbered texts
/// in number order within their series, each placed at its send time or, if an earlier number
/// was sent later by the writer's clock, right after that one; texts without a number and ours
/// at their send time.
pub(crate) fn order(
    incoming: Vec<InboxRow>,
    outgoing: Vec<OutboxView>,
    gaps: &HashMap<Number, (u64, u64)>,
    now_ms: u64,
) -> Vec<control::ChatEntry> {
    // (time to sort by, number within the series, the entry)
    let mut keyed: Vec<(u64, u64, control::ChatEntry)> = Vec::new();
    let mut incoming = incoming;
    incoming.sort_by_key(|m| (m.number.map(|n| (n.series, n.seq)), m.sent_at_ms));
    let mut series_time: HashMap<u64, u64> = HashMap::new();
    for m in incoming {
        let (at, seq) = match m.number {
            Some(n) => {
                let at = series_time.get(&n.series).map_or(m.sent_at_ms, |t| m.sent_at_ms.max(*t));
                series_time.insert(n.series, at);
                (at, n.seq)
            }
            None => (m.sent_at_ms, 0),
        };
        let (missing_before, received) =
            m.number.and_then(|n| gaps.get(&n).copied()).unwrap_or((0, m.received_at_ms));
        keyed.push((
            at,
            seq,
            control::ChatEntry {
                id: format_id(&m.id),
                from_me: false,
                text: m.text,
                sent_at_ms: m.sent_at_ms,
                received_at_ms: Some(m.received_at_ms),
                read_at_ms: m.read_at_ms,
                state: None,
                detail: None,
                seq: m.number.map(|n| n.seq),
                missing_before,
                missing_for_good: missing_before > 0 && given_up(received, now_ms),
            },
        ));
    }
    for m in outgoing {
        keyed.push((
            m.created_at_ms,
            0,
            control::ChatEntry {
                id: format_id(&m.id),
                from_me: true,
                text: m.text,
                sent_at_ms: m.created_at_ms,
                received_at_ms: None,
                read_at_ms: None,
                state: Some(m.state),
                detail: m.detail,
                seq: None,
                missing_before: 0,
                missing_for_good: false,
            },
        ));
    }
    keyed.sort_by_key(|a| (a.0, a.1, a.2.from_me));
    keyed.into_iter().map(|(_, _, e)| e).collect()
}

/// A text cut after [`CHAT_PREVIEW_CHARS`] characters, with `…` when it was cut.
fn preview(text: &str) -> String {
    match text.char_indices().nth(CHAT_PREVIEW_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests;
