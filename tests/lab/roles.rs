//! The command line of every role in the lab, in one place. When the stealth transport (issue
//! 12) or the reachability work (issue 13) changes how relays listen or how users are told
//! about them, this is the file to change; `--relay-arg` and `--node-arg` add flags to the
//! protected roles for one run without editing anything.
//!
//! The protected path (what the lab measures) always drives whatever a relay advertises: users
//! bootstrap from every address of the relay's start line (`kolokol --json relay` prints them,
//! the same list as its "users bootstrap from this relay with" lines), and the probes and the
//! capture checks look at every endpoint in that list. The control path is stock libp2p over
//! TCP on purpose, whatever the defaults become: it is what every censor rule must block.
//!
//! When the stealth transport lands (its branch, at the time of writing, gives `kolokol relay`
//! TCP and QUIC on 4001 and a stealth listener on 443 by default, and the flags `--no-stealth`,
//! `--stealth-sni`, `--stealth-cover-backend` and, for users, `--transport stealth`), the changes
//! here are: protected relays stop passing the plain `tcp/443` listen (it would take the stealth
//! listener's port) and pass `--stealth-sni cover.example --stealth-cover-backend
//! 203.0.113.80:443`, so that T11 compares the relay's cover with the decoy it fronts; the
//! control relay passes `--no-stealth`; and T17's users may pass `--transport stealth`. Check the
//! flag names against the merged code; everything else follows from the advertised addresses.

use std::net::Ipv4Addr;

/// The roles a daemon can have in the lab.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// The well-known bootstrap node users are shipped with (a Kolokol relay).
    Bootstrap,
    /// A listed foreign relay: in the DHT, bootstrapped from.
    Relay,
    /// An unlisted relay (a bridge): users learn it only from contacts.
    Bridge,
    /// A relay inside the censored country.
    DomesticRelay,
    /// A user's node, censored or foreign.
    User,
    /// The relay of the control path: stock libp2p TCP, no stealth, ever.
    ControlRelay,
    /// A user on the control path.
    ControlUser,
}

/// The ports a relay listens on. Today both are plain libp2p TCP; 443 is there so that the
/// 443-only censor (T6) meets a relay that does listen on 443, as issue 13 describes.
pub const RELAY_PORTS: [u16; 2] = [4001, 443];

/// Flags added to every relay, bridge and bootstrap node of the protected path, and to every
/// protected user node, for one run (`--relay-arg`, `--node-arg`); `{ip}` becomes the host's
/// address. Empty unless given.
#[derive(Clone, Default, Debug)]
pub struct ExtraArgs {
    pub relay: Vec<String>,
    pub node: Vec<String>,
}

/// The arguments after `kolokol --data-dir D --json` for a daemon of `role` on `ip`, which
/// bootstraps from `bootstrap`.
pub fn args(role: Role, ip: Ipv4Addr, bootstrap: &[String], extra: &ExtraArgs) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let listen = |args: &mut Vec<String>| {
        for port in RELAY_PORTS {
            args.push("--listen".into());
            args.push(format!("/ip4/{ip}/tcp/{port}"));
        }
    };
    match role {
        Role::Bootstrap | Role::Relay | Role::Bridge | Role::DomesticRelay => {
            args.push("relay".into());
            listen(&mut args);
            // Issue 13 adds unlisted relays; until a flag for it exists, a bridge is a relay
            // that users are simply not told about, and it announces itself in the DHT like any
            // other (T12 measures what that costs).
            args.extend(extra.relay.iter().map(|a| a.replace("{ip}", &ip.to_string())));
        }
        Role::ControlRelay => {
            args.push("relay".into());
            listen(&mut args);
        }
        Role::User => {
            args.push("node".into());
            args.extend(extra.node.iter().map(|a| a.replace("{ip}", &ip.to_string())));
        }
        Role::ControlUser => {
            // No mDNS, so that the control users never find the protected ones on the LAN.
            args.push("node".into());
            args.push("--no-mdns".into());
        }
    }
    for address in bootstrap {
        args.push("--bootstrap".into());
        args.push(address.clone());
    }
    args
}

/// The addresses of a relay's start line that users are given: every advertised address but
/// loopback ones, which lead nowhere from another namespace.
pub fn for_users(advertised: &[String]) -> Vec<String> {
    advertised
        .iter()
        .filter(|a| !a.starts_with("/ip4/127.") && !a.starts_with("/ip6/::1/"))
        .cloned()
        .collect()
}

/// The control path's address of the control relay: plain TCP on port 4001.
pub fn control_address(advertised: &[String]) -> Option<String> {
    advertised
        .iter()
        .find(|a| endpoint(a).is_some_and(|e| e.port == 4001 && e.tcp && plain_tcp(a)))
        .cloned()
}

/// Whether a multiaddr is plain TCP (`/ip4/X/tcp/P/p2p/ID`), with no other protocol.
pub fn plain_tcp(address: &str) -> bool {
    let parts: Vec<&str> = address.trim_start_matches('/').split('/').collect();
    matches!(parts.as_slice(), ["ip4", _, "tcp", _] | ["ip4", _, "tcp", _, "p2p", _])
}

/// Where a multiaddr leads at the IP level.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub struct IpEndpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// TCP (else UDP).
    pub tcp: bool,
}

/// The IPv4 address and TCP or UDP port a multiaddr starts with, if it does.
pub fn endpoint(address: &str) -> Option<IpEndpoint> {
    let parts: Vec<&str> = address.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["ip4", ip, proto @ ("tcp" | "udp"), port, ..] => Some(IpEndpoint {
            ip: ip.parse().ok()?,
            port: port.parse().ok()?,
            tcp: *proto == "tcp",
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_from_any_transport_address() {
        let e = endpoint("/ip4/203.0.113.10/tcp/443/tls/ws/p2p/12D3KooW").expect("tcp");
        assert_eq!((e.ip, e.port, e.tcp), (Ipv4Addr::new(203, 0, 113, 10), 443, true));
        let q = endpoint("/ip4/203.0.113.10/udp/4001/quic-v1").expect("udp");
        assert!(!q.tcp);
        assert_eq!(endpoint("/dns/example.org/tcp/443"), None);
        assert!(plain_tcp("/ip4/1.2.3.4/tcp/4001/p2p/12D3"));
        assert!(!plain_tcp("/ip4/1.2.3.4/tcp/443/tls/ws/p2p/12D3"));
    }

    #[test]
    fn users_get_every_advertised_address_but_loopback() {
        let advertised = vec![
            "/ip4/127.0.0.1/tcp/4001/p2p/X".to_owned(),
            "/ip4/203.0.113.10/tcp/443/p2p/X".to_owned(),
        ];
        assert_eq!(for_users(&advertised), vec!["/ip4/203.0.113.10/tcp/443/p2p/X".to_owned()]);
    }
}
