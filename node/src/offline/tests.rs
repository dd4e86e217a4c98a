//! A stopped node's database can be read; a running one's cannot, and says why.

use crate::data_dir::DataDir;
use crate::error::Error;
use crate::offline::Offline;
use crate::store::{ContactRow, Store};

#[test]
fn a_stopped_nodes_data_is_readable_and_a_running_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("node");
    assert!(Offline::open(&root, None).is_err(), "no data dir, nothing to read");
    {
        let running = DataDir::open(&root).unwrap();
        let store = Store::open(&running.path("kolokol.db")).unwrap();
        let peer = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
        store
            .add_contact(&ContactRow {
                name: "Bob".into(),
                peer_id: peer,
                device_key: [1; 32],
                addresses: vec![],
                added_at_ms: 1,
                verified_at_ms: None,
                invite: None,
                rekeyed: None,
            })
            .unwrap();
        // While the daemon holds the directory, reading it is refused, saying why.
        assert!(matches!(Offline::open(&root, None), Err(Error::AlreadyRunning(_))));
    }
    let offline = Offline::open(&root, None).unwrap();
    assert_eq!(offline.contacts().unwrap()[0].name, "Bob");
    assert!(offline.inbox(10).unwrap().is_empty());
    assert!(matches!(offline.message("abcd"), Err(Error::UnknownMessage(_))));
    // While it is read, no daemon can start on it.
    assert!(matches!(DataDir::open(&root), Err(Error::AlreadyRunning(_))));
}
