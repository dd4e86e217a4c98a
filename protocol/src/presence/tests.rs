//! Tests of presence records: valid ones pass, forged, expired, misplaced and overlong ones fail.

use crate::Error;
use crate::identity::Identity;
use crate::presence::{MAX_PRESENCE_LIFETIME_SECS, PresenceRecord, peer_of_key, record_key};

const NOW: u64 = 1_800_000_000;

fn identity(seed: u8) -> Identity {
    Identity::from_secrets([seed; 32], [seed + 50; 32])
}

fn record(id: &Identity, seq: u64, expires_at: u64) -> PresenceRecord {
    let cert = id.certify(NOW - 100, NOW + 100_000).unwrap();
    PresenceRecord::sign(id, &cert, vec![vec![4, 127, 0, 0, 1]], seq, expires_at, None).unwrap()
}

#[track_caller]
fn check_rejected(key: &[u8], bytes: &[u8], needle: &str) {
    let err = PresenceRecord::from_dht(key, bytes, NOW).unwrap_err().to_string();
    assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
}

#[test]
fn a_valid_record_round_trips_under_its_own_key() {
    let id = identity(1);
    let r = record(&id, 7, NOW + 60);
    let key = record_key(&id.peer_id());
    assert_eq!(peer_of_key(&key), Some(id.peer_id()));
    let (back, peer) = PresenceRecord::from_dht(&key, &r.to_bytes().unwrap(), NOW).unwrap();
    assert_eq!((back, peer), (r, id.peer_id()));
}

#[test]
fn forged_expired_misplaced_and_overlong_records_are_rejected() {
    let id = identity(1);
    let key = record_key(&id.peer_id());
    let mut forged = record(&id, 7, NOW + 60);
    forged.body.addresses = vec![vec![4, 6, 6, 6, 6]];
    check_rejected(&key, &forged.to_bytes().unwrap(), "signature");
    check_rejected(&key, &record(&id, 7, NOW - 1).to_bytes().unwrap(), "expired");
    let long = record(&id, 7, NOW + MAX_PRESENCE_LIFETIME_SECS + 1);
    check_rejected(&key, &long.to_bytes().unwrap(), "lifetime");
    let other = record_key(&identity(2).peer_id());
    check_rejected(&other, &record(&id, 7, NOW + 60).to_bytes().unwrap(), "another peer");
    // Mallory signs a record with her own key around Alice's certificate.
    let mallory = identity(3);
    let alice_cert = id.certify(NOW - 100, NOW + 100_000).unwrap();
    let swapped = PresenceRecord::sign(&mallory, &alice_cert, vec![], 9, NOW + 60, None).unwrap();
    check_rejected(&key, &swapped.to_bytes().unwrap(), "signature");
    assert!(matches!(
        PresenceRecord::from_dht(&key, b"garbage", NOW),
        Err(Error::Malformed { .. })
    ));
}

#[test]
fn only_a_higher_sequence_number_supersedes() {
    let id = identity(1);
    let (old, new) = (record(&id, 1, NOW + 60), record(&id, 2, NOW + 60));
    assert!(new.supersedes(&old));
    assert!(!old.supersedes(&new));
    assert!(!new.supersedes(&new));
}
