//! Tests of invite codes: round trip and every way a pasted code can be wrong.

use crate::identity::Identity;
use crate::invite::{INVITE_PREFIX, Invite, MAX_INVITE_ADDRESSES};

const NOW: u64 = 1_800_000_000;

fn invite() -> (Invite, Identity) {
    let id = Identity::from_secrets([1; 32], [2; 32]);
    let certificate = id.certify(NOW - 10, NOW + 1000).unwrap();
    (Invite { certificate, addresses: vec![vec![4, 127, 0, 0, 1, 6, 0x0f, 0xa1]] }, id)
}

#[track_caller]
fn check_error(text: &str, needle: &str) {
    let err = Invite::from_text(text, NOW).unwrap_err().to_string();
    assert!(err.contains(needle), "error {err:?} does not mention {needle:?}");
}

#[test]
fn round_trip_with_whitespace_around() {
    let (inv, id) = invite();
    let text = inv.to_text().unwrap();
    assert!(text.starts_with(INVITE_PREFIX));
    let (back, peer) = Invite::from_text(&format!("  {text}\n"), NOW).unwrap();
    assert_eq!(back, inv);
    assert_eq!(peer, id.peer_id());
}

#[test]
fn mistakes_are_named() {
    let (inv, _) = invite();
    let text = inv.to_text().unwrap();
    check_error("hello", "does not start with");
    check_error(&format!("{text}0"), "character '0'");
    check_error(&text[..text.len() - 3], "checksum");
    check_error(INVITE_PREFIX, "too short");
    let mut typo: Vec<char> = text.chars().collect();
    let i = INVITE_PREFIX.len() + 5;
    typo[i] = if typo[i] == 'a' { 'b' } else { 'a' };
    check_error(&typo.into_iter().collect::<String>(), "checksum");
    check_error(&"x".repeat(9000), "longer than");
}

#[test]
fn expired_invite_is_refused() {
    let (inv, _) = invite();
    let text = inv.to_text().unwrap();
    let err = Invite::from_text(&text, NOW + 2000).unwrap_err().to_string();
    assert!(err.contains("certificate"), "{err}");
}

#[test]
fn too_many_addresses_are_refused_on_both_sides() {
    let (mut inv, _) = invite();
    inv.addresses = vec![vec![1]; MAX_INVITE_ADDRESSES + 1];
    assert!(inv.to_text().is_err());
}

#[test]
fn whitespace_inside_from_wrapping_is_ignored() {
    let (inv, _) = invite();
    let text = inv.to_text().unwrap();
    let (head, tail) = text.split_at(30);
    let (middle, tail) = tail.split_at(25);
    for wrapped in [format!("{head}\n{middle}\n{tail}"), format!("{head} {middle}\r\n\t{tail}")] {
        assert_eq!(Invite::from_text(&wrapped, NOW).unwrap().0, inv, "{wrapped:?}");
    }
}
