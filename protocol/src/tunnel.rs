//! The resumable stealth tunnel's wire format (`docs/PROTOCOL.md` section 13.8): the offer a
//! client makes in its upgrade request, the listener's answer in its `101`, and the frames
//! both sides send after it.
//!
//! A censor that freezes every TCP connection to a foreign host after some kilobytes (T10)
//! counts per connection. A session outlives its TCP connections: when one freezes or nears
//! the count at which one froze, the client opens another (a "carrier"), names the session and
//! how much of it it has received, and both sides go on from there, resending what the other
//! lacks. libp2p above never sees the change. The offer travels as a WebSocket subprotocol
//! (`Sec-WebSocket-Protocol`), which a listener that does not know sessions ignores: its `101`
//! then names no subprotocol, and the client falls back to the plain tunnel. A listener that
//! takes it names it back and gives its own count in [`ANSWER_HEADER`].
//!
//! Frames, each a type byte and its body:
//! - `0x00 len:u16be data[len]`: the next `len` bytes of the stream (1 to [`MAX_DATA`]);
//! - `0x01 offset:u64be`: the sender has received the stream's first `offset` bytes;
//! - `0x02`: the sender closed its side; nothing follows from it.
//!
//! When the client's offer names a limit, the listener sends at most that many frame bytes on
//! the connection and then waits for the next one: the client sets it below the count at which
//! a connection to that address group froze before, so that no connection freezes at all.

use crate::error::Error;

/// Largest data frame body: a TLS record's worth, so that a frame never waits for a second
/// record.
pub const MAX_DATA: usize = 16 * 1024;

/// Length of a data frame's header (type and length).
pub const DATA_HEADER_LEN: usize = 3;

/// Length of an acknowledgement frame.
pub const ACK_LEN: usize = 9;

/// Length of a session id.
pub const SESSION_ID_LEN: usize = 16;

/// The subprotocol name's prefix, with the format's version.
pub const SUBPROTOCOL: &str = "kolokol-session-1";

const DATA: u8 = 0x00;
const ACK: u8 = 0x01;
const FIN: u8 = 0x02;

/// One frame, borrowing its data from the buffer it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The next bytes of the stream.
    Data(&'a [u8]),
    /// The sender has received this many bytes of the stream.
    Ack(u64),
    /// The sender closed its side.
    Fin,
}

fn malformed(detail: impl Into<String>) -> Error {
    Error::Malformed { what: "tunnel frame", detail: detail.into() }
}

/// Decodes the frame at the start of `buf`: the frame and its length, `None` if `buf` holds
/// only the start of one, or an error for bytes that are no frame.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, Error> {
    let Some((&kind, rest)) = buf.split_first() else { return Ok(None) };
    match kind {
        DATA => {
            let Some(len) = rest.get(..2) else { return Ok(None) };
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len == 0 || len > MAX_DATA {
                return Err(malformed(format!(
                    "a data frame of {len} bytes (1 to {MAX_DATA} allowed)"
                )));
            }
            Ok(rest.get(2..2 + len).map(|data| (Frame::Data(data), DATA_HEADER_LEN + len)))
        }
        ACK => Ok(rest.get(..8).map(|b| {
            let mut offset = [0u8; 8];
            offset.copy_from_slice(b);
            (Frame::Ack(u64::from_be_bytes(offset)), ACK_LEN)
        })),
        FIN => Ok(Some((Frame::Fin, 1))),
        other => Err(malformed(format!("unknown frame type {other:#04x}"))),
    }
}

/// Appends a data frame carrying the first bytes of `data` (at most [`MAX_DATA`]) to `out`, and
/// returns how many it carries; an empty `data` appends nothing.
pub fn encode_data(out: &mut Vec<u8>, data: &[u8]) -> usize {
    let len = data.len().min(MAX_DATA);
    if len == 0 {
        return 0;
    }
    out.push(DATA);
    // `len` is at most MAX_DATA, which fits in a u16.
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&data[..len]);
    len
}

/// Appends an acknowledgement of the stream's first `offset` bytes to `out`.
pub fn encode_ack(out: &mut Vec<u8>, offset: u64) {
    out.push(ACK);
    out.extend_from_slice(&offset.to_be_bytes());
}

/// Appends the frame that closes the sender's side to `out`.
pub fn encode_fin(out: &mut Vec<u8>) {
    out.push(FIN);
}

/// What a client asks for in its upgrade request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The session, a random id the client chose when it opened it.
    pub id: [u8; SESSION_ID_LEN],
    /// `None` to open the session; else resume it, having received this many bytes of it.
    pub resume: Option<u64>,
    /// The most frame bytes the listener may send on this connection, if the client knows
    /// the count at which the censor freezes one; the client opens the next before it.
    pub limit: Option<u64>,
}

impl Offer {
    /// The `Sec-WebSocket-Protocol` value:
    /// `kolokol-session-1.<id in hex>.<new, or the received count>[.<limit>]`.
    pub fn to_header(&self) -> String {
        let id: String = self.id.iter().map(|b| format!("{b:02x}")).collect();
        let resume = self.resume.map_or_else(|| "new".to_string(), |r| r.to_string());
        match self.limit {
            None => format!("{SUBPROTOCOL}.{id}.{resume}"),
            Some(limit) => format!("{SUBPROTOCOL}.{id}.{resume}.{limit}"),
        }
    }

    /// The offer among the comma-separated subprotocols of a request's header, if there is
    /// one; an error for one that names this format but is malformed.
    pub fn find(header: &str) -> Result<Option<Self>, Error> {
        let Some(offer) = header
            .split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix(SUBPROTOCOL).and_then(|rest| rest.strip_prefix('.')))
        else {
            return Ok(None);
        };
        let bad = |detail: &str| Error::Malformed { what: "tunnel offer", detail: detail.into() };
        let mut parts = offer.split('.');
        let id = parts
            .next()
            .and_then(parse_id)
            .ok_or_else(|| bad("the session id is not 32 hex digits"))?;
        let resume = match parts.next().ok_or_else(|| bad("no received count"))? {
            "new" => None,
            count => {
                Some(parse_count(count).ok_or_else(|| bad("the received count is no number"))?)
            }
        };
        let limit = match parts.next() {
            None => None,
            Some(limit) => Some(parse_count(limit).ok_or_else(|| bad("the limit is no number"))?),
        };
        if parts.next().is_some() {
            return Err(bad("more than an id, a count and a limit"));
        }
        Ok(Some(Offer { id, resume, limit }))
    }
}

/// The listener's answer: it took the offer, and has received this many bytes of the session.
///
/// Its `101` names the offer's subprotocol exactly as the client sent it (RFC 6455: a server
/// selects one of the client's values, and a proxy that checks the handshake wants that), and
/// gives the count in a header of its own, [`ANSWER_HEADER`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Bytes of the session the listener has received.
    pub received: u64,
}

/// The header of the `101` that carries the listener's count.
pub const ANSWER_HEADER: &str = "Kolokol-Session";

impl Answer {
    /// The value of [`ANSWER_HEADER`]: the count in decimal.
    pub fn to_header(&self) -> String {
        self.received.to_string()
    }

    /// The answer in a `101` whose `Sec-WebSocket-Protocol` is `subprotocol` and whose
    /// [`ANSWER_HEADER`] is `count`, to an offer sent as `offered`: `None` if the listener did
    /// not take the offer (it names another subprotocol or none, or gives no count).
    pub fn parse(offered: &str, subprotocol: Option<&str>, count: Option<&str>) -> Option<Self> {
        if subprotocol.map(str::trim) != Some(offered) {
            return None;
        }
        parse_count(count?.trim()).map(|received| Answer { received })
    }
}

fn parse_id(hex: &str) -> Option<[u8; SESSION_ID_LEN]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * SESSION_ID_LEN {
        return None;
    }
    let mut id = [0u8; SESSION_ID_LEN];
    for (byte, pair) in id.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(id)
}

/// A decimal count without sign or leading `+` (`u64::from_str` takes a `+`).
fn parse_count(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_frames() {
        let mut out = Vec::new();
        assert_eq!(encode_data(&mut out, b"abc"), 3);
        encode_ack(&mut out, 0x0102_0304_0506_0708);
        encode_fin(&mut out);
        assert_eq!(
            out,
            [
                0x00, 0x00, 0x03, b'a', b'b', b'c', //
                0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, //
                0x02,
            ]
        );
        assert_eq!(decode(&out), Ok(Some((Frame::Data(b"abc"), 6))));
        assert_eq!(decode(&out[6..]), Ok(Some((Frame::Ack(0x0102_0304_0506_0708), 9))));
        assert_eq!(decode(&out[15..]), Ok(Some((Frame::Fin, 1))));
    }

    #[test]
    fn golden_offer_and_answer() {
        let mut id = [0u8; SESSION_ID_LEN];
        id[0] = 0xab;
        id[15] = 0x01;
        let new = Offer { id, resume: None, limit: None };
        assert_eq!(new.to_header(), "kolokol-session-1.ab000000000000000000000000000001.new");
        let resume = Offer { id, resume: Some(12_345), limit: Some(9_000) };
        assert_eq!(
            resume.to_header(),
            "kolokol-session-1.ab000000000000000000000000000001.12345.9000"
        );
        assert_eq!(Offer::find(&format!("chat, {}", resume.to_header())), Ok(Some(resume)));
        assert_eq!(Offer::find("chat, superchat"), Ok(None));
        let offered = resume.to_header();
        assert_eq!(Answer { received: 7 }.to_header(), "7");
        assert_eq!(
            Answer::parse(&offered, Some(&offered), Some("7")),
            Some(Answer { received: 7 })
        );
        assert_eq!(Answer::parse(&offered, Some("chat"), Some("7")), None);
        assert_eq!(Answer::parse(&offered, None, Some("7")), None);
        assert_eq!(Answer::parse(&offered, Some(&offered), None), None);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(decode(&[0x00, 0x00, 0x00]).is_err(), "an empty data frame");
        assert!(decode(&[0x00, 0x40, 0x01]).is_err(), "a data frame over MAX_DATA");
        assert!(decode(&[0x07]).is_err(), "an unknown type");
        assert_eq!(decode(&[0x00, 0x00, 0x02, 1]), Ok(None), "a data frame cut short");
        assert_eq!(decode(&[0x01, 0, 0]), Ok(None), "an acknowledgement cut short");
        assert!(Offer::find("kolokol-session-1.abc.new").is_err());
        assert!(Offer::find("kolokol-session-1.ab000000000000000000000000000001.+5").is_err());
        assert!(Offer::find("kolokol-session-1.ab000000000000000000000000000001").is_err());
        assert!(Offer::find("kolokol-session-1.ab000000000000000000000000000001.new.1.2").is_err());
        assert!(Offer::find("kolokol-session-1.zz000000000000000000000000000001.new").is_err());
        assert_eq!(Answer::parse("a", Some("a"), Some("99999999999999999999999")), None);
    }

    proptest! {
        #[test]
        fn frames_round_trip(chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..2000).prop_map(Ok),
                any::<u64>().prop_map(|a| Err(Some(a))),
                Just(Err(None)),
            ],
            0..20,
        )) {
            let mut wire = Vec::new();
            for c in &chunks {
                match c {
                    Ok(data) => { encode_data(&mut wire, data); }
                    Err(Some(offset)) => encode_ack(&mut wire, *offset),
                    Err(None) => encode_fin(&mut wire),
                }
            }
            let mut at = 0;
            for c in &chunks {
                let (frame, len) = decode(&wire[at..]).unwrap().unwrap();
                match (c, frame) {
                    (Ok(data), Frame::Data(d)) => prop_assert_eq!(&data[..], d),
                    (Err(Some(offset)), Frame::Ack(a)) => prop_assert_eq!(*offset, a),
                    (Err(None), Frame::Fin) => {}
                    _ => prop_assert!(false, "a different frame came back"),
                }
                // Every strict prefix of a frame asks for more bytes.
                for cut in 0..len {
                    prop_assert_eq!(decode(&wire[at..at + cut]), Ok(None));
                }
                at += len;
            }
            prop_assert_eq!(at, wire.len());
        }

        #[test]
        fn offers_round_trip(
            id in any::<[u8; SESSION_ID_LEN]>(),
            resume in any::<Option<u64>>(),
            limit in any::<Option<u64>>(),
        ) {
            let offer = Offer { id, resume, limit };
            prop_assert_eq!(Offer::find(&offer.to_header()), Ok(Some(offer)));
        }

        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), text in ".{0,80}") {
            let _ = decode(&bytes);
            let _ = Offer::find(&text);
            let _ = Answer::parse(&text, Some(&text), Some(&text));
        }
    }
}
