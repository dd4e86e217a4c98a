//! Tests of presence records: valid ones pass, forged, expired, misplaced and overlong ones fail.

use proptest::prelude::*;

use crate::Error;
use crate::identity::Identity;
use crate::mailbox_key::MailboxKey;
use crate::prekey::{HybridPrekey, HybridPrekeySecret};
use crate::presence::{
    ForContacts, MAX_FOR_CONTACTS_LEN, MAX_PRESENCE_LIFETIME_SECS, PresenceRecord, peer_of_key,
    record_key,
};

const NOW: u64 = 1_800_000_000;

fn identity(seed: u8) -> Identity {
    Identity::from_secrets([seed; 32], [seed + 50; 32])
}

fn record(id: &Identity, seq: u64, expires_at: u64) -> PresenceRecord {
    let cert = id.certify(NOW - 100, NOW + 100_000).unwrap();
    PresenceRecord::sign(id, &cert, vec![vec![4, 127, 0, 0, 1]], seq, expires_at, None, vec![])
        .unwrap()
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
    let swapped =
        PresenceRecord::sign(&mallory, &alice_cert, vec![], 9, NOW + 60, None, vec![]).unwrap();
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

/// A relay circuit of `/ip4/203.0.113.7/tcp/443/p2p/<relay>/p2p-circuit`, in bytes (the shape
/// does not matter to the record, only the length).
fn circuit() -> Vec<u8> {
    vec![4, 203, 0, 113, 7, 6, 1, 0xbb, 0xa3, 0x02]
}

fn hybrid(id: &Identity, expires_at: u64) -> HybridPrekey {
    let secret = HybridPrekeySecret {
        x25519: zeroize::Zeroizing::new([7; 32]),
        kem_seed: zeroize::Zeroizing::new([8; 64]),
    };
    HybridPrekey::sign(id, &secret, NOW - 10, expires_at).unwrap()
}

/// Alice's record with a part for contacts sealed to her mailbox address.
fn sealed_record(
    id: &Identity,
    mailbox: &MailboxKey,
    part: &ForContacts,
    seq: u64,
) -> PresenceRecord {
    let cert = id.certify(NOW - 100, NOW + 100_000).unwrap();
    let sealed = part.seal(mailbox.address(), &cert.identity_key, seq, [3; 24]).unwrap();
    PresenceRecord::sign(id, &cert, vec![vec![4, 127, 0, 0, 1]], seq, NOW + 60, None, sealed)
        .unwrap()
}

#[test]
fn the_part_for_contacts_opens_only_with_the_owners_mailbox_address() {
    let alice = identity(1);
    let mailbox = MailboxKey::from_secret(&[9; 32]);
    let part =
        ForContacts { addresses: vec![circuit()], hybrid_prekey: Some(hybrid(&alice, NOW + 3600)) };
    let sealed = sealed_record(&alice, &mailbox, &part, 7);
    // A DHT server verifies the whole record without opening anything.
    let key = record_key(&alice.peer_id());
    let (read, _) = PresenceRecord::from_dht(&key, &sealed.to_bytes().unwrap(), NOW).unwrap();
    assert_eq!(read.open_for_contacts(mailbox.address(), NOW).unwrap(), Some(part.clone()));
    // Whoever lacks the mailbox address (a crawler) reads no circuit, nor the relay's address.
    let stranger = MailboxKey::from_secret(&[10; 32]);
    assert!(read.open_for_contacts(stranger.address(), NOW).is_err());
    let bytes = sealed.to_bytes().unwrap();
    assert!(!bytes.windows(5).any(|w| w == [203, 0, 113, 7, 6]));
    // Nor how many circuits: no circuit, one, or eight, the part has one length.
    let cert = alice.certify(NOW - 100, NOW + 100_000).unwrap();
    let lengths: Vec<usize> = [0, 1, 8]
        .iter()
        .map(|n| {
            let p = ForContacts {
                addresses: vec![vec![7; 256]; *n],
                hybrid_prekey: part.hybrid_prekey.clone(),
            };
            p.seal(mailbox.address(), &cert.identity_key, 7, [3; 24]).unwrap().len()
        })
        .collect();
    assert!(lengths.iter().all(|l| *l == lengths[0]), "{lengths:?}");
    // A record without the part opens to nothing.
    assert_eq!(
        record(&alice, 7, NOW + 60).open_for_contacts(mailbox.address(), NOW).unwrap(),
        None
    );
}

#[test]
fn a_part_for_contacts_cannot_be_moved_to_another_record_or_carry_a_bad_prekey() {
    let alice = identity(1);
    let mailbox = MailboxKey::from_secret(&[9; 32]);
    let part = ForContacts { addresses: vec![circuit()], hybrid_prekey: None };
    // Sealed for sequence number 7, signed into record 8 (the owner's own mistake, or a
    // replay of an old part): it does not open.
    let cert = alice.certify(NOW - 100, NOW + 100_000).unwrap();
    let old = part.seal(mailbox.address(), &cert.identity_key, 7, [3; 24]).unwrap();
    let moved = PresenceRecord::sign(&alice, &cert, vec![], 8, NOW + 60, None, old).unwrap();
    assert!(moved.open_for_contacts(mailbox.address(), NOW).is_err());
    // An expired hybrid prekey, or one signed by someone else, is dropped; the circuits stay.
    let expired =
        ForContacts { addresses: vec![circuit()], hybrid_prekey: Some(hybrid(&alice, NOW - 1)) };
    let record = sealed_record(&alice, &mailbox, &expired, 9);
    let opened = record.open_for_contacts(mailbox.address(), NOW).unwrap().unwrap();
    assert_eq!((opened.addresses, opened.hybrid_prekey), (vec![circuit()], None));
    let foreign = ForContacts {
        addresses: vec![circuit()],
        hybrid_prekey: Some(hybrid(&identity(2), NOW + 3600)),
    };
    let record = sealed_record(&alice, &mailbox, &foreign, 10);
    let opened = record.open_for_contacts(mailbox.address(), NOW).unwrap().unwrap();
    assert_eq!(opened.hybrid_prekey, None);
    // Too many circuits are refused when sealing.
    let many = ForContacts { addresses: vec![circuit(); 17], hybrid_prekey: None };
    assert!(many.seal(mailbox.address(), &cert.identity_key, 11, [3; 24]).is_err());
    // The largest part with the largest public addresses makes a record no DHT server would
    // store: refused when signing.
    let full = ForContacts {
        addresses: vec![vec![0; 256]; 16],
        hybrid_prekey: Some(hybrid(&alice, NOW + 3600)),
    };
    let sealed = full.seal(mailbox.address(), &cert.identity_key, 12, [3; 24]).unwrap();
    assert!(sealed.len() <= MAX_FOR_CONTACTS_LEN);
    let err =
        PresenceRecord::sign(&alice, &cert, vec![vec![0; 256]; 16], 12, NOW + 60, None, sealed)
            .unwrap_err();
    assert!(err.to_string().contains("longer than a DHT server stores"), "{err}");
}

proptest! {
    /// Any part within the limits seals and opens back to itself, and stays within the sealed
    /// length limit; any change to the sealed bytes is refused, never a panic.
    #[test]
    fn any_part_for_contacts_round_trips(
        addresses in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=256), 0..=16),
        flip in any::<usize>(),
        nonce in any::<[u8; 24]>(),
    ) {
        let alice = identity(1);
        let mailbox = MailboxKey::from_secret(&[9; 32]);
        let part = ForContacts { addresses, hybrid_prekey: None };
        let cert = alice.certify(NOW - 100, NOW + 100_000).unwrap();
        let sealed = part.seal(mailbox.address(), &cert.identity_key, 5, nonce).unwrap();
        prop_assert!(sealed.len() <= MAX_FOR_CONTACTS_LEN);
        let mut record =
            PresenceRecord::sign(&alice, &cert, vec![], 5, NOW + 60, None, sealed).unwrap();
        prop_assert_eq!(record.open_for_contacts(mailbox.address(), NOW).unwrap(), Some(part));
        let i = flip % record.body.for_contacts.len();
        record.body.for_contacts[i] ^= 1;
        prop_assert!(record.open_for_contacts(mailbox.address(), NOW).is_err());
    }
}
