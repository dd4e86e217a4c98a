//! Tests of splitting a large body into chunks and joining them: round trips at every size,
//! the envelope size of every chunk, and refusal of every inconsistent chunk or set of chunks.

use proptest::prelude::*;

use crate::Error;
use crate::chunk::{
    CHUNK_LEN, CHUNK_LEN_4, MAX_CHUNKED_LEN, MAX_CHUNKS, MAX_UNCHUNKED_LEN, check, join, split,
    split_with,
};
use crate::codec;
use crate::envelope::{self, Advertisement, Payload};
use crate::identity::Identity;
use crate::message::{Body, Content, MAX_TEXT_LEN};

const NOW: u64 = 1_800_000_000;

fn text(len: usize, seed: u8) -> Content {
    let text: String =
        (0..len).map(|i| char::from(b'a' + ((i + seed as usize) % 26) as u8)).collect();
    Content { id: [seed; 16], sent_at_ms: NOW * 1000, body: Body::Text(text) }
}

fn chunk_fields(content: &Content) -> (u32, u32, u32, &[u8]) {
    match &content.body {
        Body::Chunk { index, count, body_len, data } => (*index, *count, *body_len, data),
        other => panic!("not a chunk: {other:?}"),
    }
}

fn join_all(chunks: &[Content]) -> Result<Body, Error> {
    let body_len = chunk_fields(&chunks[0]).2;
    join(chunks.iter().map(|c| chunk_fields(c).3), body_len)
}

#[test]
fn a_body_that_fits_one_envelope_is_not_chunked() {
    let small = text(100, 1);
    assert_eq!(split(&small).unwrap(), vec![small]);
    // The encoded text body is 12 bytes longer than the text.
    let edge = text(MAX_UNCHUNKED_LEN - 12, 2);
    assert_eq!(split(&edge).unwrap().len(), 1);
    let receipt = Content { body: Body::Receipt { of: [3; 16] }, ..text(0, 3) };
    assert_eq!(split(&receipt).unwrap(), vec![receipt]);
}

#[test]
fn a_large_text_splits_into_full_chunks_that_join_back() {
    // Just over the single-envelope limit: one chunk.
    let content = text(MAX_UNCHUNKED_LEN - 11, 4);
    let chunks = split(&content).unwrap();
    assert_eq!(chunks.len(), 1);
    assert!(matches!(chunks[0].body, Body::Chunk { index: 0, count: 1, .. }));
    assert_eq!(join_all(&chunks).unwrap(), content.body);
    // Just over one chunk: two.
    let content = text(CHUNK_LEN - 11, 4);
    let chunks = split(&content).unwrap();
    assert_eq!(chunks.len(), 2);
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!((chunk.id, chunk.sent_at_ms), (content.id, content.sent_at_ms));
        let (index, count, body_len, data) = chunk_fields(chunk);
        assert_eq!((index as usize, count), (i, 2));
        assert_eq!(data.len(), CHUNK_LEN);
        check(index, count, body_len, data).unwrap();
        assert!(chunk.body.is_valid());
    }
    assert_eq!(join_all(&chunks).unwrap(), content.body);

    let largest = text(MAX_TEXT_LEN, 5);
    let chunks = split(&largest).unwrap();
    assert!(chunks.len() <= MAX_CHUNKS as usize);
    assert_eq!(join_all(&chunks).unwrap(), largest.body);
}

#[test]
fn a_body_over_the_chunked_limit_and_a_chunk_are_refused() {
    let too_large = text(MAX_CHUNKED_LEN - 11, 6);
    assert!(matches!(split(&too_large), Err(Error::TooLarge { .. })));
    let chunk = split(&text(100_000, 7)).unwrap().remove(0);
    assert_eq!(split(&chunk), Err(Error::Envelope("a chunk cannot be chunked again")));
}

#[test]
fn every_chunk_travels_in_a_full_size_envelope_of_either_kind() {
    let (alice, bob) =
        (Identity::from_secrets([1; 32], [2; 32]), Identity::from_secrets([3; 32], [4; 32]));
    let certificate = alice.certify(NOW - 10, NOW + 10).unwrap();
    let advertisement = Advertisement { seq: u32::MAX, public: [9; 32], seed: [9; 32] };
    // The last chunk of a body just over one chunk is mostly padding: it must not shrink.
    for content in split(&text(CHUNK_LEN + 1, 8)).unwrap() {
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
        let content = payload.content().clone();
        assert_eq!(opened.content, content);
    }
}

/// Finding 4 of issue 15, long messages: a format 4 first contact (the ML-KEM ciphertext, the
/// sender's certificate, advertisement, hybrid prekey and mailbox address) has room for a
/// [`CHUNK_LEN_4`] chunk, not a [`CHUNK_LEN`] one, so a long message can be the first one on a
/// format 4 conversation; and every such chunk envelope is full size.
#[test]
fn a_format_4_chunk_fits_a_format_4_first_contact_with_every_field() {
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
    let bob_mailbox = MailboxKey::from_secret(&[7; 32]);
    let alice_mailbox = MailboxKey::from_secret(&[8; 32]);
    let seal = |content: Content| {
        let payload = Payload::V2 {
            certificate: Some(certificate.clone()),
            advertisement: Some(advertisement.clone()),
            prekey: Some(alice_prekey.clone()),
            mailbox: Some(*alice_mailbox.address()),
            content,
        };
        envelope::seal_first_contact_4(
            alice.device(),
            &bob_prekey,
            bob_mailbox.address(),
            bob.identity_key(),
            &payload,
            [5; 32],
            [6; 32],
        )
    };
    let longest = text(MAX_TEXT_LEN, 3);
    let chunks = split_with(&longest, CHUNK_LEN_4).unwrap();
    assert!(chunks.len() <= MAX_CHUNKS as usize, "the longest text fits in {MAX_CHUNKS} chunks");
    for content in [chunks[0].clone(), chunks[chunks.len() - 1].clone()] {
        let sealed = seal(content.clone()).unwrap();
        assert_eq!(sealed.len(), envelope::MAX_ENVELOPE_LEN);
        let opened = envelope::open_first_contact_4(
            &bob_prekey,
            &secret(5),
            bob_mailbox.address(),
            bob.identity_key(),
            &sealed,
            NOW,
        )
        .unwrap();
        assert_eq!(opened.content, content);
        assert!(opened.content.body.is_valid());
    }
    assert_eq!(join_all(&chunks).unwrap(), longest.body);
    // A chunk of the older length does not fit, which is why the shorter one exists.
    assert!(seal(split(&longest).unwrap()[0].clone()).is_err());
    // Nor does one of 14 bytes more than the format 4 length: the margin is 13.
    let mut over = chunks[0].clone();
    if let Body::Chunk { data, .. } = &mut over.body {
        data.resize(CHUNK_LEN_4 + 14, 0);
    }
    assert!(seal(over).is_err());
}

#[test]
fn chunks_of_either_length_check_and_mixed_lengths_do_not_join() {
    let len = (CHUNK_LEN + 1) as u32;
    check(1, 2, len, &vec![0u8; CHUNK_LEN_4]).unwrap();
    check(1, 2, len, &vec![0u8; CHUNK_LEN]).unwrap();
    assert!(check(0, 2, len, &vec![0u8; CHUNK_LEN_4 + 1]).is_err(), "not a chunk length");
    // The count is that of chunks of the data's own length.
    let len = (2 * CHUNK_LEN_4 + 100) as u32;
    check(0, 3, len, &vec![0u8; CHUNK_LEN_4]).unwrap();
    assert!(check(0, 3, len, &vec![0u8; CHUNK_LEN]).is_err());
    let content = text(CHUNK_LEN_4 * 2, 4);
    let short = split_with(&content, CHUNK_LEN_4).unwrap();
    let long = split_with(&content, CHUNK_LEN).unwrap();
    assert_eq!(join_all(&short).unwrap(), content.body);
    assert_eq!(join_all(&long).unwrap(), content.body);
    let mixed = [short[0].clone(), long[1].clone(), short[2].clone()];
    assert!(join_all(&mixed).is_err());
    assert!(split_with(&content, 1000).is_err(), "only the chunk lengths");
}

#[test]
fn inconsistent_chunks_are_refused() {
    let data = vec![0u8; CHUNK_LEN];
    let len = (CHUNK_LEN + 1) as u32;
    check(1, 2, len, &data).unwrap();
    assert!(check(0, 0, len, &data).is_err(), "no chunks");
    assert!(check(0, 1, len, &data).is_err(), "one chunk cannot hold it");
    assert!(check(0, MAX_CHUNKS + 1, len, &data).is_err());
    assert!(check(2, 2, len, &data).is_err(), "index beyond the count");
    assert!(check(0, 3, len, &data).is_err(), "a count the length does not need");
    assert!(check(0, 2, MAX_UNCHUNKED_LEN as u32, &data).is_err(), "would fit one envelope");
    assert!(check(0, 2, len, &data[1..]).is_err(), "short data");
}

#[test]
fn joining_refuses_missing_extra_padded_and_nested_chunks() {
    let chunks = split(&text(150_000, 9)).unwrap();
    let (_, _, body_len, _) = chunk_fields(&chunks[0]);
    let data: Vec<&[u8]> = chunks.iter().map(|c| chunk_fields(c).3).collect();
    assert!(join(data[..2].iter().copied(), body_len).is_err(), "a chunk missing");
    let mut extra = data.clone();
    extra.push(data[0]);
    assert!(join(extra.iter().copied(), body_len).is_err(), "a chunk too many");
    let mut swapped = data.clone();
    swapped.swap(0, 1);
    assert!(join(swapped.iter().copied(), body_len).is_err(), "out of order");
    let mut last = data[2].to_vec();
    *last.last_mut().unwrap() = 1;
    let padded = [data[0], data[1], last.as_slice()];
    assert_eq!(join(padded, body_len), Err(Error::Envelope("chunk padding is not zero")));

    // A body that decodes to a chunk is refused: chunks do not nest.
    let inner = codec::encode(&Body::Chunk {
        index: 0,
        count: 2,
        body_len: 0,
        data: vec![7; MAX_UNCHUNKED_LEN],
    })
    .unwrap();
    let mut first = inner.clone();
    first.resize(CHUNK_LEN, 0);
    let nested = join([first.as_slice(), data[1]], inner.len() as u32);
    assert!(nested.is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// join(split(m)) = m for texts of every size up to the limit, and every chunk is valid.
    #[test]
    fn join_of_split_is_the_identity(len in 0..=MAX_TEXT_LEN, seed in any::<u8>()) {
        let content = text(len, seed);
        let chunks = split(&content).unwrap();
        if !matches!(chunks[0].body, Body::Chunk { .. }) {
            prop_assert_eq!(&chunks, &vec![content]);
        } else {
            prop_assert!(chunks.iter().all(|c| c.body.is_valid()));
            prop_assert_eq!(join_all(&chunks).unwrap(), content.body);
        }
    }

    /// Arbitrary chunk data never panics the joiner, whatever length it claims.
    #[test]
    fn joining_arbitrary_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        body_len in any::<u32>(),
        count in 0usize..3,
    ) {
        let mut data = bytes.clone();
        data.resize(CHUNK_LEN, 0);
        let _ = join(std::iter::repeat_n(data.as_slice(), count), body_len);
    }
}
