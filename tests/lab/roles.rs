//! The command line of every role in the lab, in one place. When the reachability work (issue
//! 13) changes how relays listen or how users are told about them, this is the file to change;
//! `--relay-arg` and `--node-arg` add flags to the protected roles for one run without editing
//! anything.
//!
//! The protected path (what the lab measures) always drives whatever a relay advertises: users
//! bootstrap from every address of the relay's start line (`kolokol --json relay` prints them,
//! the same list as its "users bootstrap from this relay with" lines), and the probes and the
//! capture checks look at every endpoint in that list. The control path is stock libp2p over
//! TCP on purpose, whatever the defaults become: it is what every censor rule must block.
//!
//! The stealth transport (issue 12) is on: protected relays listen on what `kolokol relay`
//! listens on by default (TCP and QUIC on 4001, the stealth listener `tcp/443/tls/http`), bound
//! to their own address so that loopback is never advertised, with the cover site's name
//! (`--stealth-sni cover.example`) and a cover web server of their own (`--stealth-cover-backend`,
//! the lab's plain HTTP site on the decoy host), as RELAY.md tells an operator to run one.
//! Protected users run with the default `--transport any`: what a user who changes nothing
//! gets. A scenario named with `:stealth` (`T3:stealth`) measures instead what RELAY.md
//! recommends behind a censor: users with `--transport stealth` and relays listening on their
//! stealth address alone. The control relay passes `--no-stealth` and listens on plain TCP only.

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

/// The ports the control relay listens on, both plain libp2p TCP: 443 is there so that the
/// 443-only censor (T6) meets a stock libp2p listener on 443.
pub const CONTROL_PORTS: [u16; 2] = [4001, 443];

/// The TLS server name of the protected relays' stealth listeners: the decoy site's.
pub const COVER_SNI: &str = "cover.example";

/// The port of the cover web server (plain HTTP, `kolokol-lab --helper http-site`) on the
/// decoy host, which every protected relay splices strangers to. The decoy's HTTPS site (443)
/// is the reference T11 compares the relays with.
pub const COVER_PORT: u16 = 80;

/// Flags added to every relay, bridge and bootstrap node of the protected path, and to every
/// protected user node, for one run (`--relay-arg`, `--node-arg`); `{ip}` becomes the host's
/// address. Empty unless given. `stealth_only` is the `:stealth` variant: users pass
/// `--transport stealth` and relays listen on their stealth address alone.
#[derive(Clone, Default, Debug)]
pub struct ExtraArgs {
    pub relay: Vec<String>,
    pub node: Vec<String>,
    pub stealth_only: bool,
}

/// The listen addresses of a protected relay on `ip`: `kolokol relay`'s defaults (TCP and QUIC
/// on 4001, the stealth listener on 443), or the stealth listener alone.
pub fn relay_listen(ip: Ipv4Addr, stealth_only: bool) -> Vec<String> {
    let stealth = format!("/ip4/{ip}/tcp/443/tls/http");
    if stealth_only {
        vec![stealth]
    } else {
        vec![format!("/ip4/{ip}/tcp/4001"), format!("/ip4/{ip}/udp/4001/quic-v1"), stealth]
    }
}

/// The arguments after `kolokol --data-dir D --json` for a daemon of `role` on `ip`, which
/// bootstraps from `bootstrap`.
pub fn args(role: Role, ip: Ipv4Addr, bootstrap: &[String], extra: &ExtraArgs) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    match role {
        Role::Bootstrap | Role::Relay | Role::Bridge | Role::DomesticRelay => {
            args.push("relay".into());
            for address in relay_listen(ip, extra.stealth_only) {
                args.push("--listen".into());
                args.push(address);
            }
            args.push("--stealth-sni".into());
            args.push(COVER_SNI.into());
            args.push("--stealth-cover-backend".into());
            args.push(format!("{}:{COVER_PORT}", crate::topology::Topology::ip("decoy")));
            // Issue 13 adds unlisted relays; until a flag for it exists, a bridge is a relay
            // that users are simply not told about, and it announces itself in the DHT like any
            // other (T12 measures what that costs).
            args.extend(extra.relay.iter().map(|a| a.replace("{ip}", &ip.to_string())));
        }
        Role::ControlRelay => {
            args.push("relay".into());
            args.push("--no-stealth".into());
            for port in CONTROL_PORTS {
                args.push("--listen".into());
                args.push(format!("/ip4/{ip}/tcp/{port}"));
            }
        }
        Role::User => {
            args.push("node".into());
            if extra.stealth_only {
                args.push("--transport".into());
                args.push("stealth".into());
            }
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
    fn protected_relays_run_the_default_listeners_and_the_control_relay_stock_tcp() {
        let ip = Ipv4Addr::new(203, 0, 113, 10);
        let listens = |args: &[String]| -> Vec<String> {
            args.windows(2).filter(|w| w[0] == "--listen").map(|w| w[1].clone()).collect()
        };
        let default = args(Role::Relay, ip, &[], &ExtraArgs::default());
        assert_eq!(
            listens(&default),
            [
                "/ip4/203.0.113.10/tcp/4001",
                "/ip4/203.0.113.10/udp/4001/quic-v1",
                "/ip4/203.0.113.10/tcp/443/tls/http"
            ]
        );
        assert!(default.windows(2).any(|w| w == ["--stealth-sni", COVER_SNI]));
        assert!(default.windows(2).any(|w| w == ["--stealth-cover-backend", "203.0.113.80:80"]));
        let stealth = ExtraArgs { stealth_only: true, ..ExtraArgs::default() };
        assert_eq!(
            listens(&args(Role::Bridge, ip, &[], &stealth)),
            ["/ip4/203.0.113.10/tcp/443/tls/http"]
        );
        let user = args(Role::User, Ipv4Addr::new(10, 1, 0, 2), &[], &stealth);
        assert!(user.windows(2).any(|w| w == ["--transport", "stealth"]));
        assert!(!args(Role::User, ip, &[], &ExtraArgs::default()).contains(&"--transport".into()));
        // The control path stays stock libp2p TCP whatever the protected roles are given.
        let control = args(Role::ControlRelay, Ipv4Addr::new(203, 0, 113, 50), &[], &stealth);
        assert!(control.contains(&"--no-stealth".into()));
        assert!(listens(&control).iter().all(|a| plain_tcp(a)));
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
