//! Tests of blinded mailbox keys: depositors and the owner agree on the id, the owner's blinded
//! signature verifies under the blinded key alone, and nothing links periods or identities.

use crate::identity::{Identity, verify_strict};
use crate::mailbox_key::{MailboxKey, blinded_key, mailbox_id, mailbox_id_of_blinded};

#[test]
fn a_depositor_with_the_address_finds_the_owners_id_and_only_the_owner_signs_for_it() {
    let owner = MailboxKey::from_secret(&[7; 32]);
    let address = *owner.address();
    for period in [0, 20_833, 20_834, u64::MAX] {
        let id = mailbox_id(&address, period).unwrap();
        assert_eq!(owner.mailbox_id(period).unwrap(), id);
        let (blinded, signature) = owner.sign_blinded(period, b"fetch").unwrap();
        assert_eq!(blinded, blinded_key(&address, period).unwrap());
        assert_eq!(mailbox_id_of_blinded(&blinded), id);
        assert!(verify_strict(&blinded, b"fetch", &signature).unwrap());
        assert!(!verify_strict(&blinded, b"delete", &signature).unwrap());
        // Someone else's mailbox key signs for its own blinded key, never for this one.
        let (other, other_signature) =
            MailboxKey::from_secret(&[8; 32]).sign_blinded(period, b"fetch").unwrap();
        assert_ne!(other, blinded);
        assert!(!verify_strict(&blinded, b"fetch", &other_signature).unwrap());
    }
}

#[test]
fn ids_and_blinded_keys_of_periods_and_owners_are_unrelated_to_each_other_and_the_identity() {
    let identity = Identity::from_secrets([1; 32], [2; 32]);
    let owner = MailboxKey::from_secret(&[1; 32]);
    let ids: Vec<_> = (0..5).map(|p| owner.mailbox_id(p).unwrap()).collect();
    let keys: Vec<_> = (0..5).map(|p| blinded_key(owner.address(), p).unwrap()).collect();
    for i in 0..5 {
        for j in 0..i {
            assert_ne!(ids[i], ids[j]);
            assert_ne!(keys[i], keys[j]);
        }
        assert_ne!(&keys[i], owner.address());
        assert_ne!(&keys[i], identity.identity_key());
        assert_ne!(ids[i], crate::mailbox::mailbox_id(identity.identity_key(), i as u64));
    }
    // A small-order address is refused rather than blinded to a key anyone signs for.
    let mut neutral = [0u8; 32];
    neutral[0] = 1;
    assert!(mailbox_id(&neutral, 3).is_err());
}
