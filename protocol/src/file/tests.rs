//! Tests of file messages: chunks of any file check and put the file back together, every chunk
//! envelope is full size even as a format 4 first contact, and every inconsistent chunk is
//! refused.

use proptest::prelude::*;

use crate::codec;
use crate::envelope::{self, Advertisement, Payload};
use crate::file::{
    FILE_CHUNK_LEN, FileMessage, FileOffer, MAX_FILE_LEN, MAX_FILE_NAME_LEN, check_chunk, chunk,
    chunk_count, chunk_span,
};
use crate::identity::Identity;
use crate::message::{Body, Content};

const NOW: u64 = 1_800_000_000;

/// The chunks of `file`, as their contents, by [`chunk`].
fn chunks_of(file: &[u8]) -> Vec<Content> {
    let count = chunk_count(file.len() as u64);
    (0..count)
        .map(|index| {
            let (offset, len) = chunk_span(file.len() as u64, index).unwrap();
            let bytes = &file[offset as usize..offset as usize + len];
            Content {
                id: [7; 16],
                sent_at_ms: NOW * 1000,
                body: Body::File(chunk(index, bytes).unwrap()),
            }
        })
        .collect()
}

#[test]
fn offers_are_bounded_by_name_and_size() {
    let offer = |name: &str, size| FileOffer { name: name.into(), size, sha256: [1; 32] };
    assert!(offer("a.txt", 1).is_valid());
    assert!(offer(&"n".repeat(MAX_FILE_NAME_LEN), MAX_FILE_LEN).is_valid());
    assert!(!offer("", 1).is_valid());
    assert!(!offer(&"n".repeat(MAX_FILE_NAME_LEN + 1), 1).is_valid());
    assert!(!offer("a", 0).is_valid());
    assert!(!offer("a", MAX_FILE_LEN + 1).is_valid());
    assert_eq!(offer("a", FILE_CHUNK_LEN as u64).chunks(), 1);
    assert_eq!(offer("a", FILE_CHUNK_LEN as u64 + 1).chunks(), 2);
}

#[test]
fn chunks_out_of_range_or_with_padding_are_refused() {
    let size = FILE_CHUNK_LEN as u64 + 10;
    let FileMessage::Chunk { data, .. } = chunk(1, &[5; 10]).unwrap() else { panic!() };
    assert_eq!(check_chunk(size, 1, &data).unwrap(), (FILE_CHUNK_LEN as u64, 10));
    // Past the last chunk, and far past it.
    assert!(check_chunk(size, 2, &data).is_err());
    assert!(check_chunk(size, u32::MAX, &data).is_err());
    // A byte of padding that is not zero.
    let mut padded = data.clone();
    padded[10] = 1;
    assert!(check_chunk(size, 1, &padded).is_err());
    // Short and long data.
    assert!(check_chunk(size, 1, &data[..FILE_CHUNK_LEN - 1]).is_err());
    let mut long = data.clone();
    long.push(0);
    assert!(check_chunk(size, 1, &long).is_err());
    assert!(!FileMessage::Chunk { index: 0, data: long }.is_valid());
    assert!(chunk(0, &vec![0; FILE_CHUNK_LEN + 1]).is_err());
}

#[test]
fn every_file_chunk_fills_the_largest_bucket_of_a_first_contact() {
    let (alice, bob) =
        (Identity::from_secrets([1; 32], [2; 32]), Identity::from_secrets([3; 32], [4; 32]));
    let certificate = alice.certify(NOW - 10, NOW + 10).unwrap();
    let advertisement = Advertisement { seq: u32::MAX, public: [9; 32], seed: [9; 32] };
    // The last chunk of a file just over one chunk is mostly padding: it must not shrink.
    for content in chunks_of(&vec![0xab; FILE_CHUNK_LEN + 1]) {
        let payload = Payload::V1 {
            certificate: Some(certificate.clone()),
            advertisement: Some(advertisement.clone()),
            content,
        };
        let sealed = envelope::seal_first_contact(
            alice.device(),
            bob.device().public(),
            bob.identity_key(),
            &payload,
            [5; 32],
        )
        .unwrap();
        assert_eq!(sealed.len(), envelope::MAX_ENVELOPE_LEN);
        let opened =
            envelope::open_first_contact(bob.device(), bob.identity_key(), &sealed, NOW).unwrap();
        assert!(opened.content.body.is_valid());
        assert_eq!(&opened.content, payload.content());
    }
}

#[test]
fn a_file_chunk_fits_a_format_4_first_contact_with_every_field() {
    use crate::kem;
    use crate::mailbox_key::MailboxKey;
    use crate::prekey::{HybridPrekey, HybridPrekeySecret};
    let (alice, bob) =
        (Identity::from_secrets([1; 32], [2; 32]), Identity::from_secrets([3; 32], [4; 32]));
    let certificate = alice.certify(NOW - 10, NOW + 10).unwrap();
    let advertisement = Advertisement { seq: u32::MAX, public: [9; 32], seed: [9; 32] };
    let secret = |n: u8| HybridPrekeySecret {
        x25519: zeroize::Zeroizing::new([n; 32]),
        kem_seed: zeroize::Zeroizing::new([n; kem::SEED_LEN]),
    };
    let bob_prekey = HybridPrekey::sign(&bob, &secret(5), NOW - 10, NOW + 1000).unwrap();
    let alice_prekey = HybridPrekey::sign(&alice, &secret(6), NOW - 10, NOW + 1000).unwrap();
    let (bob_mailbox, alice_mailbox) =
        (MailboxKey::from_secret(&[7; 32]), MailboxKey::from_secret(&[8; 32]));
    let content = chunks_of(&[0x11; 100]).remove(0);
    let payload = Payload::V2 {
        certificate: Some(certificate),
        advertisement: Some(advertisement),
        prekey: Some(alice_prekey),
        mailbox: Some(*alice_mailbox.address()),
        content: Content { id: [0xff; 16], sent_at_ms: u64::MAX, ..content },
    };
    let sealed = envelope::seal_first_contact_4(
        alice.device(),
        &bob_prekey,
        bob_mailbox.address(),
        bob.identity_key(),
        &payload,
        [5; 32],
        [6; 32],
    )
    .unwrap();
    assert_eq!(sealed.len(), envelope::MAX_ENVELOPE_LEN);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Any file, cut into chunks that go through the codec and are checked against its size,
    /// comes back byte for byte.
    #[test]
    fn chunks_of_any_file_check_and_rebuild_it(
        len in 1usize..(3 * FILE_CHUNK_LEN + 7),
        seed in any::<u8>(),
    ) {
        let file: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let mut rebuilt = vec![0u8; len];
        for content in chunks_of(&file) {
            let decoded: Content = codec::decode("c", &codec::encode(&content).unwrap()).unwrap();
            prop_assert!(decoded.body.is_valid());
            let Body::File(FileMessage::Chunk { index, data }) = decoded.body else {
                panic!("not a file chunk")
            };
            let (offset, n) = check_chunk(len as u64, index, &data).unwrap();
            rebuilt[offset as usize..offset as usize + n].copy_from_slice(&data[..n]);
        }
        prop_assert_eq!(rebuilt, file);
    }

    /// Any index and any data are checked without panicking, and whatever passes lies inside
    /// the file.
    #[test]
    fn checking_arbitrary_chunks_never_panics(
        size in 0u64..=MAX_FILE_LEN + 1,
        index in any::<u32>(),
        short in any::<bool>(),
        tail in any::<u8>(),
    ) {
        let mut data = vec![0u8; if short { 100 } else { FILE_CHUNK_LEN }];
        if let Some(last) = data.last_mut() {
            *last = tail;
        }
        if let Ok((offset, len)) = check_chunk(size, index, &data) {
            prop_assert!(offset + len as u64 <= size);
            prop_assert!(len <= FILE_CHUNK_LEN);
        }
    }
}
