//! The stealth transport's multiaddrs: what a dialer needs (host, port, TLS server name, the
//! secret path, the certificate pin) and what a listener is told to bind.
//!
//! Dial form (section 13.2 of `docs/PROTOCOL.md`):
//! `<ip4|ip6|dns|dns4|dns6>/tcp/<port>/tls[/sni/<name>]/http/http-path/<secret>[/certhash/<hash>][/p2p/<id>]`.
//! Listen forms: `<ip>/tcp/<port>/tls/http` (the node terminates TLS itself) and
//! `<ip>/tcp/<port>/http` (plain HTTP, behind the operator's own web server).
//!
//! Neither form contains `/ws` or `/wss`, so libp2p's own WebSocket transport, if it is ever
//! enabled, never takes these addresses; libp2p's TCP transport refuses any address with
//! protocols after `/tcp` (it pops `/p2p` only), so it never takes them either.

use libp2p::Multiaddr;
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use libp2p::multihash::Multihash;

/// The multihash code of SHA-256, the only certificate hash accepted.
pub const SHA2_256: u64 = 0x12;

/// A stealth address to dial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialAddress {
    /// The TCP part: host and port, as libp2p's TCP transport takes it.
    pub tcp: Multiaddr,
    /// The host to name in the `Host` header when there is no SNI: the IP address or DNS name.
    pub host: String,
    /// The TLS server name (SNI); `None` sends none, as a browser does for an IP address.
    pub sni: Option<String>,
    /// The secret HTTP path, without its leading `/`.
    pub path: String,
    /// SHA-256 of the listener's certificate (DER); without it the certificate must chain to
    /// a public root and name `sni`.
    pub certhash: Option<[u8; 32]>,
    /// The peer id at the end, if any.
    pub peer: Option<PeerId>,
}

/// How a stealth listener serves: TLS of its own, or plain HTTP behind a reverse proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenMode {
    /// `/tls/http`: the node terminates TLS with its own certificate.
    Tls,
    /// `/http`: plain HTTP from the operator's web server, which terminates TLS.
    Plain,
}

/// A stealth address to listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddress {
    /// The TCP part to bind.
    pub tcp: Multiaddr,
    /// TLS or plain.
    pub mode: ListenMode,
}

/// Splits off the host and TCP port at the start of `addr`, returning them, the host's text
/// and the rest of the protocols.
fn split_tcp<'a>(
    addr: &'a Multiaddr,
) -> Option<(Multiaddr, String, impl Iterator<Item = Protocol<'a>>)> {
    let mut parts = addr.iter();
    let host = parts.next()?;
    let text = match &host {
        Protocol::Ip4(ip) => ip.to_string(),
        Protocol::Ip6(ip) => ip.to_string(),
        Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name) => name.to_string(),
        _ => return None,
    };
    let Some(Protocol::Tcp(port)) = parts.next() else { return None };
    let tcp = Multiaddr::empty().with(host).with(Protocol::Tcp(port));
    Some((tcp, text, parts))
}

/// Whether `addr` is a stealth address of any form: the transport claims exactly these.
pub fn is_stealth(addr: &Multiaddr) -> bool {
    DialAddress::parse(addr).is_some() || ListenAddress::parse(addr).is_some()
}

impl DialAddress {
    /// Reads a dial address; `None` if `addr` is not exactly of the dial form.
    pub fn parse(addr: &Multiaddr) -> Option<Self> {
        let (tcp, host, mut rest) = split_tcp(addr)?;
        if rest.next()? != Protocol::Tls {
            return None;
        }
        let mut next = rest.next()?;
        let mut sni = None;
        if let Protocol::Sni(name) = &next {
            sni = Some(name.to_string());
            next = rest.next()?;
        }
        if next != Protocol::Http {
            return None;
        }
        let Protocol::HttpPath(path) = rest.next()? else { return None };
        let path = path.to_string();
        if !valid_path(&path) {
            return None;
        }
        let mut certhash = None;
        let mut peer = None;
        for p in rest {
            match p {
                Protocol::Certhash(hash) if certhash.is_none() && peer.is_none() => {
                    if hash.code() != SHA2_256 {
                        return None;
                    }
                    certhash = Some(hash.digest().try_into().ok()?);
                }
                Protocol::P2p(id) if peer.is_none() => peer = Some(id),
                _ => return None,
            }
        }
        if sni.is_none() && certhash.is_none() {
            // Without a pin the certificate is checked against public roots, which needs a
            // name to check it for.
            return None;
        }
        Some(Self { tcp, host, sni, path, certhash, peer })
    }

    /// The address as a multiaddr, in the canonical order.
    pub fn to_multiaddr(&self) -> Multiaddr {
        let mut a = self.tcp.clone().with(Protocol::Tls);
        if let Some(sni) = &self.sni {
            a = a.with(Protocol::Sni(sni.clone().into()));
        }
        a = a.with(Protocol::Http).with(Protocol::HttpPath(self.path.clone().into()));
        if let Some(hash) = &self.certhash {
            a = a.with(certhash(hash));
        }
        if let Some(peer) = self.peer {
            a = a.with(Protocol::P2p(peer));
        }
        a
    }
}

impl ListenAddress {
    /// Reads a listen address; `None` if `addr` is not exactly `<ip>/tcp/<port>/tls/http` or
    /// `<ip>/tcp/<port>/http`.
    pub fn parse(addr: &Multiaddr) -> Option<Self> {
        let (tcp, _, mut rest) = split_tcp(addr)?;
        if !matches!(tcp.iter().next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_))) {
            return None;
        }
        let mode = match rest.next()? {
            Protocol::Tls => {
                if rest.next()? != Protocol::Http {
                    return None;
                }
                ListenMode::Tls
            }
            Protocol::Http => ListenMode::Plain,
            _ => return None,
        };
        rest.next().is_none().then_some(Self { tcp, mode })
    }
}

/// A `/certhash/` component for a SHA-256 digest.
pub fn certhash(digest: &[u8; 32]) -> Protocol<'static> {
    #[allow(clippy::unwrap_used)] // 32 bytes always fit the 64-byte multihash.
    Protocol::Certhash(Multihash::wrap(SHA2_256, digest).unwrap())
}

/// Whether `path` is a usable secret path: 16 to 128 characters, none of them needing
/// percent-encoding in a URL path, and not starting with `/` (the leading slash is implied).
pub fn valid_path(path: &str) -> bool {
    (16..=128).contains(&path.len())
        && !path.starts_with('/')
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b))
}
