//! Tests of bootstrap bundles: round trip, tampering, and text mistakes.

use crate::bundle::{BUNDLE_PREFIX, Bundle, BundlePeer, MAX_BUNDLE_TEXT_LEN};
use crate::codec::MAX_DECODE_LEN;
use crate::identity::Identity;

fn bundle() -> (Bundle, Identity) {
    let id = Identity::from_secrets([1; 32], [2; 32]);
    let peer = Identity::from_secrets([3; 32], [4; 32]).peer_id();
    let peers = vec![BundlePeer {
        peer_id: peer.to_bytes(),
        addresses: vec![vec![4, 127, 0, 0, 1]],
        relay: true,
    }];
    (Bundle::sign(&id, peers, 1_800_000_000).unwrap(), id)
}

#[test]
fn round_trip_names_the_exporter() {
    let (b, id) = bundle();
    let (back, exporter) = Bundle::from_text(&b.to_text().unwrap()).unwrap();
    assert_eq!(back, b);
    assert_eq!(exporter, id.peer_id());
}

#[test]
fn altered_or_garbled_bundles_are_refused() {
    let (mut b, _) = bundle();
    b.body.peers[0].addresses[0] = vec![4, 6, 6, 6, 6];
    let err = Bundle::from_text(&b.to_text().unwrap()).unwrap_err().to_string();
    assert!(err.contains("altered"), "{err}");
    assert!(Bundle::from_text("hello").unwrap_err().to_string().contains(BUNDLE_PREFIX));
    assert!(Bundle::from_text(&format!("{BUNDLE_PREFIX}0OIl")).is_err());
    assert!(Bundle::from_text(&format!("{BUNDLE_PREFIX}abc")).is_err());
}

#[test]
fn whitespace_inside_is_ignored() {
    let (b, _) = bundle();
    let text = b.to_text().unwrap();
    let wrapped: String = text
        .as_bytes()
        .chunks(20)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n  ");
    assert_eq!(Bundle::from_text(&format!("\t{wrapped} \n")).unwrap().0, b);
}

#[test]
fn a_cut_bundle_is_called_corrupted_not_named_in_bincode_terms() {
    let (b, _) = bundle();
    let text = b.to_text().unwrap();
    let err = Bundle::from_text(&text[..text.len() - 10]).unwrap_err().to_string();
    assert_eq!(err, "bootstrap bundle is corrupted or cut short");
}

#[test]
fn the_text_limit_can_hold_the_largest_decodable_bundle() {
    // Base58 spends log(256)/log(58) characters per byte; encoding 64 KiB to check it directly
    // would take the quadratic base58 coder most of a minute in a debug build.
    let per_byte = 256f64.ln() / 58f64.ln();
    let largest = BUNDLE_PREFIX.len() + (MAX_DECODE_LEN as f64 * per_byte).ceil() as usize;
    assert!(largest <= MAX_BUNDLE_TEXT_LEN, "{largest}");
    let small = bs58::encode(vec![0xff; 1000]).into_string().len();
    assert!(small <= (1000.0 * per_byte).ceil() as usize, "{small}");
}
