//! Which network the node is on, and the local addresses it has there.
//!
//! What works on one network (a transport, a relay's address) says little about another: a
//! censored home connection blocks what a café's does not. So the swarm remembers the outcome of
//! each dial per network ([`NetworkId`]), and the identity of a network is what the kernel's
//! routing table says about where packets leave: the default gateways, the interfaces they are
//! on and the prefixes connected to those interfaces (`/proc/net/route` and
//! `/proc/net/ipv6_route` on Linux). It is read synchronously, so it is known at start, and
//! again whenever an interface address comes or goes and every [`NETWORK_CHECK_INTERVAL`]
//! (a new default route raises no interface event). Where there is no routing table to read,
//! the prefixes of the interfaces' addresses stand in for it.
//!
//! The interfaces' addresses themselves come from `if-watch` (netlink on Linux), as libp2p's
//! own TCP listener and mDNS learn them: the node listens on its LAN addresses with them
//! (`lan`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use if_watch::{IfEvent, IpNet};

/// How often the routing table is read again when no interface changed.
pub const NETWORK_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// A network's identity: the first 8 bytes of SHA-256 over its description (below), shown
/// in hex. Two networks that route the same way through the same gateway address on an
/// interface of the same name with the same prefixes are one network to the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(pub [u8; 8]);

impl NetworkId {
    /// The identity of the network described by `routes` (see [`describe_routes`]), or, when
    /// that is empty, by the interface prefixes `prefixes`.
    pub fn of(routes: &[String], prefixes: &BTreeSet<IpNet>) -> Self {
        let mut text = String::from("kolokol-network:v1\n");
        if routes.is_empty() {
            for p in prefixes.iter().filter(|p| is_global_or_private(&p.addr())) {
                text.push_str(&format!("prefix {}\n", p.trunc()));
            }
        } else {
            for r in routes {
                text.push_str(r);
                text.push('\n');
            }
        }
        let digest = crate::transport::tls::sha256(text.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }

    /// The identity in hex, as stored and shown.
    pub fn to_hex(self) -> String {
        kolokol_protocol::identity::hex(&self.0)
    }

    /// Reads [`NetworkId::to_hex`]'s form; anything else is `None`.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 16 || !text.is_ascii() {
            return None;
        }
        let mut id = [0u8; 8];
        for (byte, pair) in id.iter_mut().zip(text.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(Self(id))
    }
}

impl std::fmt::Display for NetworkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Whether an address says anything about the network: not loopback, link-local, multicast
/// or unspecified.
fn is_global_or_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            !(ip.is_loopback() || ip.is_link_local() || ip.is_multicast() || ip.is_unspecified())
        }
        IpAddr::V6(ip) => {
            !(ip.is_loopback()
                || ip.is_multicast()
                || ip.is_unspecified()
                || (ip.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Whether an IPv4 address is a private LAN address (RFC 1918): one a user's node listens on
/// for its neighbours when it looks for them with mDNS.
pub fn is_lan(ip: &Ipv4Addr) -> bool {
    ip.is_private()
}

/// The lines that identify the network from the kernel's routing tables, sorted: one per
/// default route (`default4 <gateway> <interface>`, `default6 <gateway> <interface>`) and one
/// per prefix connected to an interface that carries a default route (`net4 <prefix>
/// <interface>`, `net6 <prefix> <interface>`). `route` is the text of `/proc/net/route`,
/// `route6` that of `/proc/net/ipv6_route`; unreadable lines are skipped.
pub fn describe_routes(route: &str, route6: &str) -> Vec<String> {
    let mut defaults = Vec::new();
    let mut connected = Vec::new();
    for line in route.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [iface, dest, gateway, flags, _, _, _, mask, ..] = f.as_slice() else { continue };
        let (Some(dest), Some(gateway), Some(mask), Ok(flags)) =
            (hex_v4(dest), hex_v4(gateway), hex_v4(mask), u16::from_str_radix(flags, 16))
        else {
            continue;
        };
        // RTF_UP is 0x1, RTF_GATEWAY 0x2.
        if flags & 0x1 == 0 {
            continue;
        }
        if dest.is_unspecified() && mask.is_unspecified() {
            defaults.push(("4", gateway.to_string(), iface.to_string()));
        } else if flags & 0x2 == 0 {
            let prefix = u32::from(mask).count_ones();
            connected.push(("4", format!("{dest}/{prefix}"), iface.to_string()));
        }
    }
    for line in route6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [dest, dest_len, _, _, next_hop, _, _, _, flags, iface] = f.as_slice() else {
            continue;
        };
        let (Some(dest), Ok(len), Some(next_hop), Ok(flags)) = (
            hex_v6(dest),
            u8::from_str_radix(dest_len, 16),
            hex_v6(next_hop),
            u32::from_str_radix(flags, 16),
        ) else {
            continue;
        };
        if flags & 0x1 == 0 || *iface == "lo" {
            continue;
        }
        if dest.is_unspecified() && len == 0 {
            if !next_hop.is_unspecified() {
                defaults.push(("6", next_hop.to_string(), iface.to_string()));
            }
        } else if len < 128 && is_global_or_private(&IpAddr::V6(dest)) {
            connected.push(("6", format!("{dest}/{len}"), iface.to_string()));
        }
    }
    let default_ifaces: BTreeSet<String> = defaults.iter().map(|(_, _, i)| i.clone()).collect();
    let mut lines: Vec<String> =
        defaults.iter().map(|(v, gw, iface)| format!("default{v} {gw} {iface}")).collect();
    lines.extend(
        connected
            .iter()
            .filter(|(_, _, iface)| default_ifaces.contains(iface))
            .map(|(v, net, iface)| format!("net{v} {net} {iface}")),
    );
    lines.sort();
    lines.dedup();
    lines
}

/// An IPv4 address as `/proc/net/route` writes it: 8 hex digits, in the host's byte order
/// (little-endian on every machine Kolokol runs on).
fn hex_v4(text: &str) -> Option<Ipv4Addr> {
    if text.len() != 8 {
        return None;
    }
    let value = u32::from_str_radix(text, 16).ok()?;
    Some(Ipv4Addr::from(value.swap_bytes()))
}

/// An IPv6 address as `/proc/net/ipv6_route` writes it: 32 hex digits.
fn hex_v6(text: &str) -> Option<Ipv6Addr> {
    if text.len() != 32 {
        return None;
    }
    Some(Ipv6Addr::from(u128::from_str_radix(text, 16).ok()?))
}

/// The routing tables' description of the network this machine is on now, empty where
/// they cannot be read.
pub fn read_routes() -> Vec<String> {
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let route6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    describe_routes(&route, &route6)
}

/// The node's view of its network: the interface addresses if-watch reports, and the
/// network's identity.
pub(crate) struct Network {
    watcher: Option<if_watch::tokio::IfWatcher>,
    /// Interface addresses up now, bounded by the machine's interfaces.
    pub(crate) addresses: BTreeSet<IpNet>,
    /// The routing tables' description at the last check.
    routes: Vec<String>,
    /// The identity of the network now.
    pub(crate) id: NetworkId,
}

impl Network {
    /// Starts watching the interfaces; where that is impossible (no netlink in a sandbox),
    /// the network is identified by its routes alone and no LAN listener is opened.
    pub(crate) fn new() -> Self {
        let watcher = match if_watch::tokio::IfWatcher::new() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::debug!(%e, "cannot watch the network interfaces");
                None
            }
        };
        let routes = read_routes();
        let addresses = BTreeSet::new();
        let id = NetworkId::of(&routes, &addresses);
        Self { watcher, addresses, routes, id }
    }

    /// The next interface event; never resolves when interfaces are not watched.
    pub(crate) async fn next_event(&mut self) -> IfEvent {
        use futures::StreamExt;
        loop {
            match &mut self.watcher {
                Some(w) => match w.next().await {
                    Some(Ok(event)) => return event,
                    Some(Err(e)) => {
                        tracing::debug!(%e, "interface watcher failed; interfaces are no longer watched");
                        self.watcher = None;
                    }
                    None => self.watcher = None,
                },
                None => futures::future::pending::<()>().await,
            }
        }
    }

    /// Takes an interface event into account.
    pub(crate) fn apply(&mut self, event: IfEvent) {
        match event {
            IfEvent::Up(net) => {
                self.addresses.insert(net);
            }
            IfEvent::Down(net) => {
                self.addresses.remove(&net);
            }
        }
    }

    /// Reads the routing tables again; returns the new identity if the network changed.
    pub(crate) fn check(&mut self) -> Option<NetworkId> {
        self.routes = read_routes();
        let id = NetworkId::of(&self.routes, &self.addresses);
        (id != self.id).then(|| {
            self.id = id;
            id
        })
    }

    /// The private LAN (RFC 1918) IPv4 addresses of the interfaces.
    pub(crate) fn lan_addresses(&self) -> Vec<Ipv4Addr> {
        self.addresses
            .iter()
            .filter_map(|n| match n.addr() {
                IpAddr::V4(ip) if is_lan(&ip) => Some(ip),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
