//! The domestic mesh with no community relay at all: a user node that listens somewhere relays
//! for its contacts, and only for them. Two of its contacts who listen on nothing hold
//! reservations on it and talk to each other through it, both ways; a stranger's reservation
//! is refused, and a node told not to relay for its contacts speaks no relay protocol at all.
//! With no mailbox replica anywhere, a message to a contact who is away waits on that node.

use futures::StreamExt;
use kolokol_node::{Multiaddr, Node, PeerId, Role, RunningNode};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, relay, tcp, yamux};

use kolokol_protocol::mailbox::period_of;

use crate::support::{
    Net, TIMEOUT, fetch_until_taken, introduce, wait_message, wait_message_at, wait_state,
    wait_state_at,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_talk_through_a_third_contacts_node_and_a_stranger_cannot_reserve_on_it() {
    let net = Net::new();
    let (anna, anna_addr, boris, clara) = three_users(&net).await;
    let (a, b, c) = (anna.node(), boris.node(), clara.node());
    let anna_id = a.peer_id();
    for (name, node) in [("boris", &b), ("clara", &c)] {
        let status = node
            .wait_for_net(TIMEOUT, |s| s.contact_relays == [anna_id])
            .await
            .unwrap_or_else(|| panic!("{name} holds no reservation on anna's node"));
        // The circuit through a contact's node is kept from identify (so it makes nobody a DHT
        // server) and from the public part of the presence record.
        assert!(!status.public, "{name}: {status:?}");
        assert!(status.external.iter().all(|e| !e.to_string().contains(&anna_id.to_string())));
        let (relay, circuit) = &status.reservations[0];
        assert_eq!(*relay, anna_id);
        assert!(circuit.to_string().starts_with(&anna_addr.to_string()), "{circuit}");
    }

    // Boris and Clara become contacts now, so their invites carry their circuits through Anna.
    introduce(&b, "boris", &c, "clara").await;
    let mut b_events = b.subscribe();
    let mut c_events = c.subscribe();
    let sent = b.send("clara", "through anna").await.expect("send");
    assert_eq!(wait_message(&mut c_events, &sent.id).await.text, "through anna");
    wait_state(&mut b_events, &sent.id, "delivered").await;
    let reply = c.send("boris", "back through anna").await.expect("send");
    assert_eq!(wait_message(&mut b_events, &reply.id).await.text, "back through anna");
    wait_state(&mut c_events, &reply.id, "delivered").await;
    for (node, other) in [(&b, c.peer_id()), (&c, b.peer_id())] {
        assert_relayed_through(node, other, anna_id).await;
    }

    // A stranger to Anna asks her node for a reservation and is refused, as too much of what
    // it has (libp2p's RESOURCE_LIMIT_EXCEEDED): her node does relay, for contacts only.
    let refusal = stranger_reservation(&anna_addr).await;
    assert!(refusal.to_lowercase().contains("resource limit exceeded"), "{refusal}");

    for n in [boris, clara, anna] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_contact_who_is_away_waits_on_the_relaying_contacts_node() {
    let net = Net::new();
    let (anna, anna_addr, boris, clara) = three_users(&net).await;
    let (a, b) = (anna.node(), boris.node());
    let anna_id = a.peer_id();
    for node in [&b, &clara.node()] {
        node.wait_for_net(TIMEOUT, |s| s.contact_relays == [anna_id])
            .await
            .expect("a reservation on anna's node");
    }
    introduce(&b, "boris", &clara.node(), "clara").await;
    clara.shutdown().await;

    // No DHT server anywhere, so no mailbox replica: Boris leaves the message with the node
    // Clara's circuit goes through, Anna's, which keeps mailboxes for her contacts.
    let mut b_events = b.subscribe();
    let sent = b.send("clara", "while you were away").await.expect("send");
    wait_state_at(&b, &mut b_events, &sent.id, "stored").await;
    let now = kolokol_node::clock::unix_secs();
    let mailbox = net.mailbox_key("clara").mailbox_id(period_of(now)).expect("a mailbox id");
    assert_eq!(a.mailbox_items_held(&mailbox).expect("count"), 1);

    // Back, Clara reserves on Anna's node again and takes the message from it.
    let clara = net.start("clara", Role::Node, std::slice::from_ref(&anna_addr)).await;
    let c = clara.node();
    let mut c_events = c.subscribe();
    c.wait_for_net(TIMEOUT, |s| s.contact_relays == [anna_id])
        .await
        .expect("clara holds a reservation on anna's node again");
    fetch_until_taken(&c, &a, &mailbox).await;
    let got = wait_message_at(&c, &mut c_events, &sent.id).await;
    assert_eq!(got.text, "while you were away");
    wait_state_at(&b, &mut b_events, &sent.id, "delivered").await;

    for n in [boris, clara, anna] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_told_not_to_relay_for_contacts_does_not_speak_the_relay_protocol() {
    let net = Net::new();
    let (anna, anna_addr) = anna(&net, false).await;
    // Not a refusal of this peer, as with the relay on: no relay to ask at all.
    let refusal = stranger_reservation(&anna_addr).await;
    assert!(refusal.contains("does not support"), "{refusal}");
    anna.shutdown().await;
}

/// Anna's node, listening on 127.0.0.1 and relaying for her contacts if `relay_for_contacts`,
/// with its full address (`.../p2p/<anna>`).
async fn anna(net: &Net, relay_for_contacts: bool) -> (RunningNode, Multiaddr) {
    let mut config = net.config("anna", Role::Node);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    config.relay_for_contacts = relay_for_contacts;
    let anna = RunningNode::start(config).await.expect("anna starts");
    let anna_net =
        anna.node().wait_for_net(TIMEOUT, |s| !s.listen.is_empty()).await.expect("anna listens");
    let anna_addr: Multiaddr = format!("{}/p2p/{}", anna_net.listen[0], anna.node().peer_id())
        .parse()
        .expect("valid multiaddr");
    (anna, anna_addr)
}

/// Anna, who listens on 127.0.0.1 (a LAN address or a domestic public one, in life), and Boris
/// and Clara, who listen on nothing and know Anna's address; each is Anna's contact, and Anna
/// adds them first, so her node admits their reservations from the start. There is no community
/// relay, no DHT server and no external address anywhere. Returns Anna, her address, Boris and
/// Clara.
async fn three_users(net: &Net) -> (RunningNode, Multiaddr, RunningNode, RunningNode) {
    let (anna, anna_addr) = anna(net, true).await;
    let boris = net.start("boris", Role::Node, std::slice::from_ref(&anna_addr)).await;
    let clara = net.start("clara", Role::Node, std::slice::from_ref(&anna_addr)).await;
    introduce(&boris.node(), "boris", &anna.node(), "anna").await;
    introduce(&clara.node(), "clara", &anna.node(), "anna").await;
    (anna, anna_addr, boris, clara)
}

/// Checks that `node` has a relayed connection to `other` through `relay`.
async fn assert_relayed_through(node: &Node, other: PeerId, relay: PeerId) {
    let peers = node.peers().await.expect("peers").connected;
    let link = peers
        .iter()
        .find(|p| p.peer_id == other.to_string() && p.via == "relayed")
        .unwrap_or_else(|| panic!("no relayed connection to {other}: {peers:?}"));
    assert!(link.address.contains(&relay.to_string()), "{link:?}");
}

/// A bare relay client, written with libp2p alone, that nobody has as a contact.
#[derive(NetworkBehaviour)]
struct Stranger {
    relay: relay::client::Behaviour,
}

/// Asks the node at `relay` for a reservation from a fresh identity; returns why it was
/// refused, the whole chain of causes on one line, and fails the test if it was granted.
async fn stranger_reservation(relay: &Multiaddr) -> String {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .expect("relay client")
        .with_behaviour(|_, relay| Stranger { relay })
        .expect("behaviour")
        .build();
    swarm.listen_on(relay.clone().with(Protocol::P2pCircuit)).expect("listen through the relay");
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => {
                    panic!("a stranger got a reservation: {address}")
                }
                SwarmEvent::ListenerClosed { reason: Err(e), .. } => {
                    let mut causes = vec![e.to_string()];
                    let mut source = std::error::Error::source(&e);
                    while let Some(cause) = source {
                        causes.push(cause.to_string());
                        source = cause.source();
                    }
                    return causes.join(": ");
                }
                SwarmEvent::ListenerClosed { reason: Ok(()), .. } => {
                    panic!("the stranger never reached the relay")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the relay answered the stranger's reservation")
}
