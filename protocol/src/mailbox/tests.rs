//! Tests of mailbox ids and ownership proofs: golden vectors pin the derivation and the wire
//! bytes; forged, foreign, stale and misapplied proofs are refused.

use crate::codec::MAX_BATCH_DECODE_LEN;
use crate::envelope::BUCKETS;
use crate::identity::{Identity, hex};
use crate::mailbox::{
    Item, MAILBOX_PERIOD_SECS, MAX_FETCH_BYTES, MAX_FETCH_ITEMS, Operation, PROOF_WINDOW_SECS,
    Proof, Request, Response, item_id, mailbox_id, period_of,
};

const NOW: u64 = 1_800_000_000;

fn identity(seed: u8) -> Identity {
    Identity::from_secrets([seed; 32], [seed + 50; 32])
}

/// Verifies `proof` at `now` and returns the error text, or "ok".
#[track_caller]
fn check(proof: &Proof, id: &[u8; 32], op: Operation, items: &[[u8; 16]], now: u64) -> String {
    match proof.verify(id, op, items, now) {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_mailbox_id_is_pinned_and_rotates_each_period() {
    let alice = identity(1);
    let period = period_of(NOW);
    assert_eq!(period, 20_833);
    let id = mailbox_id(alice.identity_key(), period);
    assert_eq!(hex(&id), "7f681eab5595cc76cbd8a68f41f80d773fe52d0452991cd85507c8c7727b5756");
    assert_ne!(id, mailbox_id(alice.identity_key(), period + 1));
    assert_ne!(id, mailbox_id(identity(2).identity_key(), period));
    // Also computed outside Rust, with Python's `hashlib.blake2s`.
    assert_eq!(hex(&item_id(&[7; 16])), "7a0d9fb7b5255847883b2a6a134321e5");
}

#[test]
fn fetch_request_bytes_are_pinned() {
    let alice = identity(1);
    let id = mailbox_id(alice.identity_key(), period_of(NOW));
    let proof = Proof::sign(&alice, &id, Operation::Fetch, NOW, &[]).unwrap();
    let bytes = Request::Fetch { mailbox_id: id, proof }.to_bytes().unwrap();
    // Variant 1 (u32), the mailbox id, then the proof: key, timestamp (u64), signature.
    // Ed25519 signatures are deterministic, so the whole frame is fixed.
    assert_eq!(
        hex(&bytes),
        concat!(
            "00000001",
            "7f681eab5595cc76cbd8a68f41f80d773fe52d0452991cd85507c8c7727b5756",
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            "000000006b49d200",
            "7c977ed2e3bd6995068f04863ffccda623893e672d41828015133d7a23728950",
            "75674a805b2a8c136d0010d4df0511570e73856371442ae08a932865c457660b",
        )
    );
    assert_eq!(hex(&Response::Stored.to_bytes().unwrap()), "00000000");
}

#[test]
fn a_genuine_proof_passes_for_the_current_and_previous_period() {
    let alice = identity(1);
    let now_id = mailbox_id(alice.identity_key(), period_of(NOW));
    let prev_id = mailbox_id(alice.identity_key(), period_of(NOW) - 1);
    for id in [now_id, prev_id] {
        let proof = Proof::sign(&alice, &id, Operation::Fetch, NOW, &[]).unwrap();
        assert_eq!(check(&proof, &id, Operation::Fetch, &[], NOW + 10), "ok");
    }
    let old_id = mailbox_id(alice.identity_key(), period_of(NOW) - 2);
    let proof = Proof::sign(&alice, &old_id, Operation::Fetch, NOW, &[]).unwrap();
    assert!(check(&proof, &old_id, Operation::Fetch, &[], NOW).contains("does not own"));
}

#[test]
fn forged_foreign_stale_and_misapplied_proofs_are_refused() {
    let alice = identity(1);
    let mallory = identity(3);
    let id = mailbox_id(alice.identity_key(), period_of(NOW));
    let items = [[1u8; 16], [2u8; 16]];

    // Mallory signs with her own key: her key does not hash to Alice's mailbox.
    let foreign = Proof::sign(&mallory, &id, Operation::Fetch, NOW, &[]).unwrap();
    assert!(check(&foreign, &id, Operation::Fetch, &[], NOW).contains("does not own"));
    // She puts Alice's key on her signature.
    let forged = Proof { identity_key: *alice.identity_key(), ..foreign };
    assert!(check(&forged, &id, Operation::Fetch, &[], NOW).contains("signature"));

    let genuine = Proof::sign(&alice, &id, Operation::Fetch, NOW, &[]).unwrap();
    let late = NOW + PROOF_WINDOW_SECS + 1;
    assert!(check(&genuine, &id, Operation::Fetch, &[], late).contains("stale"));
    let early = NOW - PROOF_WINDOW_SECS - 1;
    assert!(check(&genuine, &id, Operation::Fetch, &[], early).contains("stale"));
    // A fetch proof does not authorise a delete, and a delete proof covers only its items.
    assert!(check(&genuine, &id, Operation::Delete, &[], NOW).contains("signature"));
    let delete = Proof::sign(&alice, &id, Operation::Delete, NOW, &items).unwrap();
    assert_eq!(check(&delete, &id, Operation::Delete, &items, NOW), "ok");
    assert!(check(&delete, &id, Operation::Delete, &items[..1], NOW).contains("signature"));
    // A proof for another mailbox (a later period) does not carry over.
    let next = mailbox_id(alice.identity_key(), period_of(NOW + MAILBOX_PERIOD_SECS * 2));
    assert!(check(&genuine, &next, Operation::Fetch, &[], NOW).contains("does not own"));
}

#[test]
fn deposits_of_odd_sizes_and_oversized_deletes_do_not_decode() {
    let deposit = |len| Request::Deposit {
        mailbox_id: [0; 32],
        item_id: [0; 16],
        envelope: vec![0; len],
        expires_at: NOW,
    };
    let ok = deposit(1024).to_bytes().unwrap();
    assert_eq!(Request::from_bytes(&ok).unwrap(), deposit(1024));
    let odd = deposit(1000).to_bytes().unwrap();
    assert!(Request::from_bytes(&odd).unwrap_err().to_string().contains("envelope sizes"));
    let alice = identity(1);
    let proof = Proof::sign(&alice, &[0; 32], Operation::Delete, NOW, &[]).unwrap();
    let delete = Request::Delete { mailbox_id: [0; 32], item_ids: vec![[0; 16]; 1025], proof };
    assert!(Request::from_bytes(&delete.to_bytes().unwrap()).is_err());
    assert!(Request::from_bytes(b"garbage").is_err());
}

#[test]
fn the_largest_fetch_answer_fits_the_batch_limit() {
    // The worst answer a replica may build: as many items as allowed, as many of them as large
    // as the byte budget lets through.
    let mut lens = vec![BUCKETS[0]; MAX_FETCH_ITEMS];
    for i in 0..MAX_FETCH_ITEMS {
        let total: usize = lens.iter().sum();
        if total - lens[i] + BUCKETS[3] > MAX_FETCH_BYTES {
            break;
        }
        lens[i] = BUCKETS[3];
    }
    let items = lens.iter().map(|len| Item { item_id: [0; 16], envelope: vec![0; *len] });
    let answer = Response::Items { items: items.collect(), more: true };
    let encoded = answer.to_bytes().unwrap();
    assert!(encoded.len() <= MAX_BATCH_DECODE_LEN, "{} bytes", encoded.len());
    assert_eq!(Response::from_bytes(&encoded).unwrap(), answer);
    // One largest envelope alone, the exception to the budget, fits too.
    let one = Response::Items {
        items: vec![Item { item_id: [0; 16], envelope: vec![0; BUCKETS[3]] }],
        more: true,
    };
    assert!(Response::from_bytes(&one.to_bytes().unwrap()).is_ok());
}

/// Version 2: the proof names a blinded key, never the identity, and is refused for another
/// mailbox, another operation, other items, or out of its window.
#[test]
fn a_blinded_proof_opens_only_its_own_mailbox_and_names_no_identity() {
    use crate::mailbox::{BlindedProof, Operation, RequestV2, item_id_v2};
    use crate::mailbox_key::MailboxKey;
    let now = 1_800_000_000;
    let period = crate::mailbox::period_of(now);
    let key = MailboxKey::from_secret(&[4; 32]);
    let items = [[1u8; 16], [2; 16]];
    let (id, proof) = BlindedProof::sign(&key, period, Operation::Delete, now, &items).unwrap();
    proof.verify(&id, Operation::Delete, &items, now).unwrap();
    assert!(proof.verify(&id, Operation::Fetch, &items, now).is_err());
    assert!(proof.verify(&id, Operation::Delete, &items[..1], now).is_err());
    assert!(proof.verify(&id, Operation::Delete, &items, now + 301).is_err());
    let other = MailboxKey::from_secret(&[5; 32]).mailbox_id(period).unwrap();
    assert!(proof.verify(&other, Operation::Delete, &items, now).is_err());
    let request = RequestV2::Delete { mailbox_id: id, item_ids: items.to_vec(), proof };
    let bytes = request.to_bytes().unwrap();
    assert_eq!(RequestV2::from_bytes(&bytes).unwrap(), request);
    assert!(!bytes.windows(32).any(|w| w == key.address()), "the address never travels");
    // Item ids of one message differ between the mailbox ids of two periods.
    let next = key.mailbox_id(period + 1).unwrap();
    assert_ne!(item_id_v2(&id, &[9; 16], None), item_id_v2(&next, &[9; 16], None));
    assert_ne!(item_id_v2(&id, &[9; 16], None), item_id_v2(&id, &[9; 16], Some(0)));
}

mod handover {
    //! The replica-to-replica handover: its bytes are pinned by a golden vector, its proof
    //! covers exactly the items, mailbox and time it was made for, and its limits are checked
    //! before anything else.

    use super::{NOW, identity};
    use crate::envelope::BUCKETS;
    use crate::identity::hex;
    use crate::mailbox::{
        HandoverItem, HandoverProof, MAX_FETCH_BYTES, MAX_HANDOVER_ITEMS, PROOF_WINDOW_SECS,
        Request, mailbox_id, period_of,
    };

    fn item(n: u8, len: usize) -> HandoverItem {
        HandoverItem { item_id: [n; 16], expires_at: NOW + 86_400, envelope: vec![n; len] }
    }

    /// The handover of section 11.1's mailbox by the replica with secret bytes 2, at `NOW`.
    fn handover() -> Request {
        let owner = identity(1);
        let id = mailbox_id(owner.identity_key(), period_of(NOW));
        let items = vec![item(6, 1024), item(7, 4096)];
        let proof = HandoverProof::sign(&identity(2), &id, NOW, &items).unwrap();
        Request::Handover { mailbox_id: id, items, proof }
    }

    fn vector_path() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/mailbox_handover.hex")
    }

    #[test]
    fn handover_bytes_are_pinned_by_a_golden_vector() {
        let bytes = handover().to_bytes().unwrap();
        let lines: String = bytes.chunks(64).map(|l| hex(l) + "\n").collect();
        if std::env::var_os("KOLOKOL_UPDATE_VECTORS").is_some() {
            std::fs::write(vector_path(), &lines).unwrap();
        }
        let stored = std::fs::read_to_string(vector_path()).unwrap();
        assert_eq!(lines, stored, "the encoding of a handover changed");
        // Variant 3, then the mailbox id.
        assert_eq!(
            hex(&bytes[..36]),
            "000000037f681eab5595cc76cbd8a68f41f80d773fe52d0452991cd85507c8c7727b5756"
        );
        assert_eq!(Request::from_bytes(&bytes).unwrap(), handover());
    }

    #[test]
    fn a_handover_proof_covers_exactly_its_items_mailbox_and_time() {
        let Request::Handover { mailbox_id: id, items, proof } = handover() else { unreachable!() };
        assert_eq!(proof.verify(&id, &items, NOW + 10).unwrap(), *identity(2).identity_key());
        let refused = |id: &[u8; 32], items: &[HandoverItem], now: u64| {
            proof.verify(id, items, now).unwrap_err().to_string()
        };
        // Another mailbox, a changed, dropped or reordered item, an envelope byte flipped.
        assert!(refused(&[0; 32], &items, NOW).contains("does not verify"));
        let mut changed = items.clone();
        changed[0].expires_at += 1;
        assert!(refused(&id, &changed, NOW).contains("does not verify"));
        assert!(refused(&id, &items[..1], NOW).contains("does not verify"));
        let reordered = vec![items[1].clone(), items[0].clone()];
        assert!(refused(&id, &reordered, NOW).contains("does not verify"));
        let mut flipped = items.clone();
        flipped[1].envelope[4000] ^= 1;
        assert!(refused(&id, &flipped, NOW).contains("does not verify"));
        // Replayed after the window, or a signature by another key under this one's name.
        assert!(refused(&id, &items, NOW + PROOF_WINDOW_SECS + 1).contains("stale"));
        let mut forged = proof.clone();
        forged.replica_key = *identity(3).identity_key();
        assert!(forged.verify(&id, &items, NOW).is_err());
    }

    #[test]
    fn a_handover_out_of_bounds_does_not_decode() {
        let Request::Handover { mailbox_id: id, proof, .. } = handover() else { unreachable!() };
        let encode = |items: Vec<HandoverItem>| {
            Request::Handover { mailbox_id: id, items, proof: proof.clone() }.to_bytes().unwrap()
        };
        assert!(Request::from_bytes(&encode(Vec::new())).is_err(), "no items");
        let many = (0..=MAX_HANDOVER_ITEMS).map(|n| item(n as u8, 1024)).collect();
        assert!(Request::from_bytes(&encode(many)).is_err(), "too many items");
        assert!(Request::from_bytes(&encode(vec![item(1, 1000)])).is_err(), "an odd size");
        let heavy = (0..=MAX_FETCH_BYTES / BUCKETS[3]).map(|n| item(n as u8, BUCKETS[3])).collect();
        assert!(Request::from_bytes(&encode(heavy)).is_err(), "too many bytes");
        let full = (0..MAX_HANDOVER_ITEMS).map(|n| item(n as u8, 1024)).collect();
        assert!(Request::from_bytes(&encode(full)).is_ok(), "the largest count is fine");
    }
}
