//! The relay for contacts: who may reserve, and which addresses it offers.

use std::collections::HashSet;
use std::sync::Arc;

use libp2p::core::transport::ListenerId;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::{
    ExpiredListenAddr, ExternalAddrConfirmed, ExternalAddrExpired, FromSwarm, NewListenAddr,
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::watch;

use super::{MAX_OFFERED_ADDRESSES, RelayServer, Serve, contacts_only};

fn addr(text: &str) -> Multiaddr {
    text.parse().expect("multiaddr")
}

fn listen(server: &mut RelayServer, a: &Multiaddr) {
    server.on_swarm_event(FromSwarm::NewListenAddr(NewListenAddr {
        listener_id: ListenerId::next(),
        addr: a,
    }));
}

fn unlisten(server: &mut RelayServer, a: &Multiaddr) {
    server.on_swarm_event(FromSwarm::ExpiredListenAddr(ExpiredListenAddr {
        listener_id: ListenerId::next(),
        addr: a,
    }));
}

fn contacts_server() -> RelayServer {
    let (_, contacts) = watch::channel(Arc::new(HashSet::new()));
    RelayServer::new(PeerId::random(), Serve::Contacts(contacts))
}

#[test]
fn only_contacts_may_reserve_as_the_contact_book_changes() {
    let (friend, stranger) = (PeerId::random(), PeerId::random());
    let (book, contacts) = watch::channel(Arc::new(HashSet::from([friend])));
    let mut gate = contacts_only(contacts);
    let a = addr("/ip4/127.0.0.1/tcp/4001");
    // libp2p takes `web_time::Instant`, which off the web is the standard one.
    let now = std::time::Instant::now();
    assert!(gate.try_next(friend, &a, now));
    assert!(!gate.try_next(stranger, &a, now));
    // Asking again changes nothing: the gate is a set, not a budget.
    assert!(!gate.try_next(stranger, &a, now));
    book.send_replace(Arc::new(HashSet::from([stranger])));
    assert!(gate.try_next(stranger, &a, now));
    assert!(!gate.try_next(friend, &a, now));
}

#[test]
fn a_user_nodes_relay_offers_its_dialable_listen_addresses_and_no_circuit() {
    let mut server = contacts_server();
    let lan = addr("/ip4/192.168.1.5/tcp/40001");
    listen(&mut server, &lan);
    listen(&mut server, &addr("/ip4/0.0.0.0/tcp/4001"));
    let circuit = format!("/ip4/203.0.113.1/tcp/4001/p2p/{}/p2p-circuit", PeerId::random());
    listen(&mut server, &addr(&circuit));
    server.on_swarm_event(FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed {
        addr: &addr(&format!("{circuit}/p2p/{}", PeerId::random())),
    }));
    assert_eq!(server.listen, vec![lan.clone()]);
    assert!(server.external.is_empty());

    // An address both listened on and confirmed stays offered until both are gone.
    server.on_swarm_event(FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed { addr: &lan }));
    unlisten(&mut server, &lan);
    assert!(server.offered(&lan));
    server.on_swarm_event(FromSwarm::ExternalAddrExpired(ExternalAddrExpired { addr: &lan }));
    assert!(!server.offered(&lan));
}

#[test]
fn offered_addresses_are_bounded() {
    let mut server = contacts_server();
    for port in 0..(MAX_OFFERED_ADDRESSES as u16 + 5) {
        listen(&mut server, &addr(&format!("/ip4/10.0.0.1/tcp/{}", 40000 + port)));
    }
    assert_eq!(server.listen.len(), MAX_OFFERED_ADDRESSES);
}

#[test]
fn a_community_relay_offers_no_listen_address_of_its_own_accord() {
    let mut server = RelayServer::new(PeerId::random(), Serve::Public);
    listen(&mut server, &addr("/ip4/192.168.1.5/tcp/40001"));
    assert!(server.listen.is_empty());
}
