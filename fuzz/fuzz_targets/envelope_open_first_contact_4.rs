//! Fuzz target: a format 4 first contact opened with a fixed hybrid prekey, on any bytes (the
//! header tag, ML-KEM decapsulation, the Noise read and the payload decoder behind it).

#![no_main]

use std::sync::LazyLock;

use kolokol_protocol::envelope;
use kolokol_protocol::identity::Identity;
use kolokol_protocol::mailbox_key::MailboxKey;
use kolokol_protocol::prekey::{HybridPrekey, HybridPrekeySecret};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

struct Recipient {
    identity: Identity,
    prekey: HybridPrekey,
    secret: HybridPrekeySecret,
    mailbox: MailboxKey,
}

static RECIPIENT: LazyLock<Recipient> = LazyLock::new(|| {
    let identity = Identity::from_secrets([3; 32], [4; 32]);
    let secret = HybridPrekeySecret {
        x25519: zeroize::Zeroizing::new([42; 32]),
        kem_seed: zeroize::Zeroizing::new([43; 64]),
    };
    let prekey = HybridPrekey::sign(&identity, &secret, NOW, NOW + 86_400).expect("signs");
    Recipient { identity, prekey, secret, mailbox: MailboxKey::from_secret(&[44; 32]) }
});

fuzz_target!(|data: &[u8]| {
    let r = &*RECIPIENT;
    let _ = envelope::open_first_contact_4(
        &r.prekey,
        &r.secret,
        r.mailbox.address(),
        r.identity.identity_key(),
        data,
        NOW,
    );
});
