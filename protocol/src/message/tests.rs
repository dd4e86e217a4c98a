//! Numbered texts: their bytes, their bounds, and that they round-trip and chunk like texts.

use proptest::prelude::*;

use crate::chunk::{join, split};
use crate::codec::{decode, encode};
use crate::message::{Body, Content, MAX_TEXT_LEN};

#[test]
fn a_numbered_text_is_variant_six_with_series_seq_and_text() {
    let body = Body::NumberedText { series: 0x0102_0304_0506_0708, seq: 3, text: "hi".into() };
    let bytes = encode(&body).unwrap();
    let mut expected = vec![0, 0, 0, 6];
    expected.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
    expected.extend_from_slice(&3u64.to_be_bytes());
    expected.extend_from_slice(&2u64.to_be_bytes());
    expected.extend_from_slice(b"hi");
    assert_eq!(bytes, expected);
    assert_eq!(body.text(), Some("hi"));
    assert!(body.is_valid());
    assert!(!Body::NumberedText { series: 1, seq: 0, text: "x".into() }.is_valid());
    // A plain text is still variant 0, as older nodes send it.
    assert_eq!(encode(&Body::Text("hi".into())).unwrap()[..4], [0, 0, 0, 0]);
    assert_eq!(Body::Receipt { of: [0; 16] }.text(), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A numbered text round-trips, exactly (no trailing bytes accepted).
    #[test]
    fn numbered_texts_round_trip(series in any::<u64>(), seq in any::<u64>(), text in ".{0,200}") {
        let content = Content { id: [1; 16], sent_at_ms: 5, body: Body::NumberedText { series, seq, text } };
        let bytes = encode(&content).unwrap();
        prop_assert_eq!(decode::<Content>("content", &bytes).unwrap(), content);
        let mut longer = bytes;
        longer.push(0);
        prop_assert!(decode::<Content>("content", &longer).is_err());
    }

    /// The longest numbered text still fits the chunking limits and joins back whole.
    #[test]
    fn long_numbered_texts_chunk_and_join(len in 60_000..=MAX_TEXT_LEN, seq in 1u64..u64::MAX) {
        let text: String = "ж".repeat(len / 2);
        let content = Content { id: [2; 16], sent_at_ms: 7, body: Body::NumberedText { series: 9, seq, text } };
        let chunks = split(&content).unwrap();
        let body_len = match &chunks[0].body {
            Body::Chunk { body_len, .. } => *body_len,
            _ => return Ok(()),
        };
        let data: Vec<&[u8]> = chunks
            .iter()
            .map(|c| match &c.body {
                Body::Chunk { data, .. } => data.as_slice(),
                _ => &[][..],
            })
            .collect();
        prop_assert_eq!(join(data, body_len).unwrap(), content.body);
    }
}
