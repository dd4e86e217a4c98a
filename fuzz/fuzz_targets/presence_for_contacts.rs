//! Fuzz target: a presence record's part for contacts, decoded from any bytes, sealed into a
//! signed record and opened again by a contact: what opens is what was sealed, or an error,
//! never a panic.

#![no_main]

use std::sync::LazyLock;

use kolokol_protocol::identity::{DeviceCertificate, Identity};
use kolokol_protocol::mailbox_key::MailboxKey;
use kolokol_protocol::presence::{ForContacts, PresenceRecord};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

/// Made once: key derivation and certification cost more than what is fuzzed.
static KEYS: LazyLock<(Identity, DeviceCertificate, MailboxKey)> = LazyLock::new(|| {
    let identity = Identity::from_secrets([1; 32], [2; 32]);
    let certificate = identity.certify(NOW - 100, NOW + 100_000).expect("certificate");
    (identity, certificate, MailboxKey::from_secret(&[3; 32]))
});

fuzz_target!(|data: &[u8]| {
    let Ok(part) = kolokol_protocol::codec::decode::<ForContacts>("part", data) else { return };
    let (identity, certificate, mailbox) = &*KEYS;
    let Ok(sealed) = part.seal(mailbox.address(), &certificate.identity_key, 5, [9; 24]) else {
        return;
    };
    let Ok(record) =
        PresenceRecord::sign(identity, certificate, vec![], 5, NOW + 60, None, sealed)
    else {
        return;
    };
    let opened = record.open_for_contacts(mailbox.address(), NOW).expect("a sealed part opens");
    let opened = opened.expect("a part");
    assert_eq!(opened.addresses, part.addresses);
});
