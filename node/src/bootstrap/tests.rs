//! Tests of the bootstrap order.

use libp2p::{Multiaddr, PeerId};

use crate::bootstrap::sources;
use crate::config::{Config, Role};
use crate::store::Store;

#[test]
fn a_relay_that_moved_is_dialed_at_its_new_address_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kolokol.db")).unwrap();
    let relay = PeerId::random();
    store.peer_seen(&relay, &"/ip4/127.0.0.1/tcp/1".parse().unwrap(), true, 10).unwrap();
    let moved: Multiaddr = format!("/ip4/127.0.0.1/tcp/2/p2p/{relay}").parse().unwrap();
    let old: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}").parse().unwrap();
    let mut config = Config::new(dir.path(), Role::Node);
    config.bootstrap = vec![moved.clone(), old.clone()];
    assert_eq!(sources(&store, &config).unwrap(), [old, moved]);
}
