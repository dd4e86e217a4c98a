//! A relay's resource limits: over its memory ceiling it refuses new connections, so a flood
//! of peers cannot push a small server into swapping; under it, it takes them.

use futures::StreamExt;
use kolokol_node::{Multiaddr, Role, RunningNode};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, ping, tcp, yamux};

use crate::support::{Net, TIMEOUT};

/// Starts a relay on 127.0.0.1 with the given memory ceiling and returns it with its address.
async fn relay(net: &Net, name: &str, max_memory: Option<u64>) -> (RunningNode, Multiaddr) {
    let mut config = net.config(name, Role::Relay);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    config.max_memory = max_memory;
    let relay = RunningNode::start(config).await.expect("the relay starts");
    let status = relay
        .node()
        .wait_for_net(TIMEOUT, |s| !s.external.is_empty())
        .await
        .expect("the relay confirms its listen address");
    let addr = format!("{}/p2p/{}", status.external[0], relay.node().peer_id());
    (relay, addr.parse().expect("valid multiaddr"))
}

/// Dials `addr` from a plain libp2p peer and says whether the connection was kept long enough
/// to answer a ping, or closed (or refused) first.
async fn answers_a_ping(addr: &Multiaddr) -> bool {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .expect("tcp transport")
        .with_behaviour(|_| ping::Behaviour::default())
        .expect("behaviour")
        .build();
    swarm.dial(addr.clone()).expect("dial");
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(ping::Event { result: Ok(_), .. }) => return true,
                SwarmEvent::ConnectionClosed { .. }
                | SwarmEvent::OutgoingConnectionError { .. } => return false,
                _ => {}
            }
        }
    })
    .await
    .expect("the dial came to an end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_over_its_memory_ceiling_refuses_new_connections_and_one_under_takes_them() {
    let net = Net::new();
    // One byte is below what any process uses: every new connection is over the ceiling.
    let (full, full_addr) = relay(&net, "full", Some(1)).await;
    assert!(!answers_a_ping(&full_addr).await, "a relay over its ceiling took a connection");
    // A ceiling far above anything: the default's 256 MiB would not do here, since the ceiling
    // measures the whole test process, which runs the other tests' nodes at the same time.
    let (roomy, roomy_addr) = relay(&net, "roomy", Some(1 << 40)).await;
    assert!(answers_a_ping(&roomy_addr).await, "a relay under its ceiling refused a connection");
    for n in [full, roomy] {
        n.shutdown().await;
    }
}
