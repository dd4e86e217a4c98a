//! Fuzz target: a conversation with live receive keys opening any bytes.
//!
//! The state is the one of the golden vectors (Alice after one round trip with Bob), rebuilt
//! from bytes for every input so runs are reproducible.

#![no_main]

use std::sync::LazyLock;

use kolokol_protocol::conversation::{Conversation, Randomness};
use kolokol_protocol::identity::Identity;
use kolokol_protocol::message::{Body, Content};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

static STATE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let alice = Identity::from_secrets([1; 32], [2; 32]);
    let bob = Identity::from_secrets([3; 32], [4; 32]);
    let (alice_cert, bob_cert) = (
        alice.certify(NOW - 10, NOW + 1000).expect("signing works"),
        bob.certify(NOW - 10, NOW + 1000).expect("signing works"),
    );
    let content = Content { id: [7; 16], sent_at_ms: NOW * 1000, body: Body::Text("hi".into()) };
    let mut a = Conversation::new(bob_cert.clone(), NOW).expect("valid certificate");
    let mut b = Conversation::new(alice_cert.clone(), NOW).expect("valid certificate");
    let first = a
        .seal(alice.device(), &alice_cert, &content, Randomness::from_bytes([11; 128]), NOW)
        .expect("seals");
    b.open(&bob, &first, NOW).expect("opens");
    let reply = b
        .seal(bob.device(), &bob_cert, &content, Randomness::from_bytes([12; 128]), NOW)
        .expect("seals");
    a.open(&alice, &reply, NOW).expect("opens");
    a.to_bytes().expect("encodes").to_vec()
});

fuzz_target!(|data: &[u8]| {
    let alice = Identity::from_secrets([1; 32], [2; 32]);
    let mut state = Conversation::from_bytes(&STATE).expect("the state decodes");
    let _ = state.open(&alice, data, NOW);
});
