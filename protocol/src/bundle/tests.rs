//! Tests of bootstrap bundles: round trip, tampering, and text mistakes.

use crate::bundle::{BUNDLE_PREFIX, Bundle, BundlePeer};
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
