//! Two listening nodes that first meet through a relay circuit are upgraded to a direct
//! connection by DCUtR, which loopback TCP allows.

use kolokol_node::{Multiaddr, Role, RunningNode};
use kolokol_protocol::invite::Invite;

use crate::support::{Net, TIMEOUT, wait_message};

async fn listening_user(net: &Net, name: &str, relay: &Multiaddr) -> RunningNode {
    let mut config = net.config(name, Role::Node);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")];
    config.bootstrap = vec![relay.clone()];
    let node = RunningNode::start(config).await.expect("starts");
    node.node()
        .wait_for_net(TIMEOUT, |s| !s.reservations.is_empty())
        .await
        .unwrap_or_else(|| panic!("{name} got no reservation"));
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_conversation_is_upgraded_to_a_direct_connection() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = listening_user(&net, "alice", &relay_addr).await;
    let bob = listening_user(&net, "bob", &relay_addr).await;

    // Alice knows Bob only by his relay circuit, so the first connection is relayed.
    let now = kolokol_node::clock::unix_secs();
    let certificate = net.identity("bob").certify(now - 60, now + 3600).expect("certificate");
    let circuit: Multiaddr = format!("{relay_addr}/p2p-circuit").parse().expect("valid");
    let invite = Invite { certificate, addresses: vec![circuit.to_vec()] };
    alice.node().add_contact("bob", &invite.to_text().expect("text")).await.expect("add");
    let mut b_events = bob.node().subscribe();
    let sent = alice.node().send("bob", "meet me directly").await.expect("send");
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "meet me directly");

    let bob_id = bob.node().peer_id();
    alice
        .node()
        .wait_for_net(TIMEOUT, |s| s.hole_punched.contains(&bob_id))
        .await
        .expect("DCUtR upgraded the relayed connection");
    let peers = alice.node().peers().await.expect("peers");
    assert!(
        peers.connected.iter().any(|c| c.peer_id == bob_id.to_string() && c.via == "hole-punched"),
        "{peers:?}"
    );
    // The relayed connection goes once the direct one is up, so every later envelope takes
    // the short way; the conversation goes on over it.
    alice
        .node()
        .wait_for_net(TIMEOUT, |s| s.hole_punched.contains(&bob_id) && !s.relayed.contains(&bob_id))
        .await
        .expect("the relayed connection to Bob was closed");
    let sent = alice.node().send("bob", "now directly").await.expect("send");
    assert_eq!(sent.state, "delivered", "{:?}", sent.detail);
    assert_eq!(wait_message(&mut b_events, &sent.id).await.text, "now directly");
    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
