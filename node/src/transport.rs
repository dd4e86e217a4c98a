//! The transports the swarm runs on: TCP and QUIC, and the stealth transport
//! ([`stealth`]), which carries libp2p inside TLS on a listener that is an ordinary HTTPS web
//! server to anyone without its secret (`docs/PROTOCOL.md` section 13).
//!
//! [`build`] assembles them for the swarm builder's `with_other_transport`; [`prepare`] loads
//! what a stealth listener needs (its secrets and certificate) from the data directory before
//! that, so that a mistake there is one error line at start.

pub mod address;
pub mod batch;
pub mod cooldown;
pub mod cover;
pub mod first_record;
pub mod http;
pub mod meter;
pub mod secret;
pub mod session;
pub mod stealth;
pub mod tls;

use std::sync::Arc;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Transport as _, noise};

use crate::config::{Config, Policy, Role};
use crate::error::{Error, Result};

pub use address::{DialAddress, ListenAddress, ListenMode, is_stealth};

/// How long a connection may take, from the first packet to a negotiated libp2p connection
/// (TCP, TLS and the HTTP upgrade for stealth, Noise, Yamux). A dial that a censor silently
/// drops would otherwise wait for the kernel to give up on TCP, about two minutes; the racing
/// dialer starts other addresses long before this, and this ends the hopeless one. A handshake
/// over a throttled link (130 kbit/s, 300 ms round trips) takes two or three seconds. Ten
/// seconds is what every lab figure was measured with (libp2p's swarm builder imposed it).
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The swarm builder's own limit on a whole dial, from the moment it is asked for: DNS, the
/// wait for the cool-down's turn (at most one [`CONNECT_TIMEOUT`] of the dial before it) and
/// the dial itself, and a relay circuit's dial, which the cool-down does not see. A backstop:
/// the cool-down's [`CONNECT_TIMEOUT`] ends a direct dial first.
pub const DIAL_BACKSTOP: std::time::Duration =
    std::time::Duration::from_secs(2 * CONNECT_TIMEOUT.as_secs());

/// The port a relay's stealth listener takes unless told otherwise, when it may bind it.
pub const STEALTH_PORT: u16 = 443;

/// The port it takes when it may not bind [`STEALTH_PORT`] (not root, no
/// `CAP_NET_BIND_SERVICE`, or the port is taken) and the operator named none.
pub const STEALTH_FALLBACK_PORT: u16 = 4443;

/// A relay's default stealth listen address on every IPv4 interface: on `port` if given, else
/// on [`STEALTH_PORT`] if this process may bind it, else on [`STEALTH_FALLBACK_PORT`], with
/// a line for the operator saying why.
pub fn default_stealth_listen(port: Option<u16>) -> (Multiaddr, Option<String>) {
    let addr = |port: u16| {
        Multiaddr::empty()
            .with(Protocol::Ip4(std::net::Ipv4Addr::UNSPECIFIED))
            .with(Protocol::Tcp(port))
            .with(Protocol::Tls)
            .with(Protocol::Http)
    };
    if let Some(port) = port {
        return (addr(port), None);
    }
    match std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, STEALTH_PORT)) {
        Ok(probe) => {
            drop(probe);
            (addr(STEALTH_PORT), None)
        }
        Err(e) => (
            addr(STEALTH_FALLBACK_PORT),
            Some(format!(
                "cannot bind port {STEALTH_PORT} for the stealth transport ({e}); it listens on {STEALTH_FALLBACK_PORT} instead. \
                 Run the relay with CAP_NET_BIND_SERVICE to get {STEALTH_PORT}, or choose a port with --stealth-port"
            )),
        ),
    }
}

/// What the stealth listeners of a node need, loaded from the data directory; `None` when the
/// node listens on no stealth address.
pub fn prepare(config: &Config, now: u64) -> Result<Option<stealth::ListenerConfig>> {
    let modes: Vec<ListenMode> =
        config.listen.iter().filter_map(ListenAddress::parse).map(|l| l.mode).collect();
    if modes.is_empty() {
        return Ok(None);
    }
    let o = &config.stealth;
    if o.cover_dir.is_some() && o.cover_backend.is_some() {
        return Err(Error::Address(
            "choose one cover: --stealth-cover-dir (a directory served by Kolokol) or --stealth-cover-backend (your own web server), not both".into(),
        ));
    }
    if let Some(dir) = &o.cover_dir
        && !dir.is_dir()
    {
        return Err(Error::Address(format!(
            "the stealth cover directory {} is not a directory",
            dir.display()
        )));
    }
    let grace = o.secret_grace.unwrap_or(secret::DEFAULT_GRACE);
    let secrets =
        secret::Secrets::load(&config.data_dir, o.rotate_secret, o.secret.as_deref(), grace, now)?;
    let (tls, certhash) = if modes.contains(&ListenMode::Tls) {
        let name = o.sni.as_deref().unwrap_or(tls::DEFAULT_NAME);
        let identity =
            tls::Identity::load(&config.data_dir, o.cert.as_deref(), o.key.as_deref(), name, now)?;
        // A generated certificate has no public root to vouch for it, and without an SNI
        // there is no name to check any certificate against: then dialers pin it.
        let pin = (identity.generated || o.sni.is_none()).then(|| identity.hash());
        (Some(identity.server_config()?), pin)
    } else {
        (None, None)
    };
    let cover = match o.cover_backend {
        Some(addr) => cover::Cover::Backend(addr),
        None => cover::Cover::Site(Arc::new(cover::Site { root: o.cover_dir.clone() })),
    };
    Ok(Some(stealth::ListenerConfig {
        tls,
        secrets: secrets.accepted(now),
        cover,
        advertised: stealth::Advertised { sni: o.sni.clone(), path: secrets.current, certhash },
    }))
}

/// The swarm's transports for `policy`, each upgraded with Noise and Yamux (QUIC brings its
/// own): TCP, QUIC and stealth for [`Policy::Any`], stealth alone for [`Policy::Stealth`].
/// Multistream-select runs as `V1Lazy`, as libp2p's own `with_tcp` does, so the dialer's
/// protocol proposals do not each wait a round trip. The TCP-based ones give up on an inbound
/// connection that is not negotiated within [`CONNECT_TIMEOUT`]; every direct dial is given up
/// after it by the [`cooldown::Cooldown`] in front of them all, which starts the clock when the
/// dial goes out (not while it waits for its turn); the swarm's [`DIAL_BACKSTOP`] covers the
/// rest. Every direct dial but a hole punch (known through `shared`) passes the cool-down, so an
/// endpoint that left a dial unanswered is not dialed again at once by whichever part of the
/// node asks next.
pub fn build(
    key: &libp2p::identity::Keypair,
    policy: Policy,
    listener: Option<stealth::ListenerConfig>,
    shared: cooldown::Shared,
    meters: meter::Meters,
) -> std::result::Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>>
{
    let stealth = upgraded(stealth::Transport::new(listener).counted(meters.clone()), key)?;
    if policy == Policy::Stealth {
        return Ok(cooldown::Cooldown::new(meter::metered(stealth, meters), shared).boxed());
    }
    let tcp = upgraded(
        meter::OnTheWire::new(
            libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true)),
            meters.clone(),
        ),
        key,
    )?;
    let quic = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
        .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)));
    let all = tcp
        .or_transport(quic)
        .map(|either, _| either.into_inner())
        .or_transport(stealth)
        .map(|either, _| either.into_inner())
        .boxed();
    Ok(cooldown::Cooldown::new(meter::metered(all, meters), shared).boxed())
}

/// A byte-stream transport with the upgrades every one of ours gets: multistream-select as
/// `V1Lazy`, Noise, Yamux (writing what it has ready together as one Noise frame,
/// [`batch::BatchedYamux`]), and [`CONNECT_TIMEOUT`] on inbound connections (the cool-down
/// keeps the dials' own).
fn upgraded<T>(
    inner: T,
    key: &libp2p::identity::Keypair,
) -> std::result::Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error>
where
    T: libp2p::core::Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    Ok(inner
        .upgrade(Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(batch::BatchedYamux::default())
        .inbound_timeout(CONNECT_TIMEOUT)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// The swarm's one transport when the config asks for the in-memory one (`Config::in_memory`,
/// the scale simulation): libp2p's `MemoryTransport` with the same upgrades as TCP (Noise,
/// Yamux, `V1Lazy`, [`CONNECT_TIMEOUT`]) and the same [`cooldown::Cooldown`] in front (which
/// keeps the dials' timeout; a memory address names no endpoint, so nothing cools down), so a
/// node on it differs from one on TCP only in how bytes move between processes' worth of nodes.
pub fn memory(
    key: &libp2p::identity::Keypair,
    shared: cooldown::Shared,
    meters: meter::Meters,
) -> std::result::Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>>
{
    let memory = upgraded(libp2p::core::transport::MemoryTransport::default(), key)?;
    Ok(cooldown::Cooldown::new(meter::metered(memory, meters), shared).boxed())
}

/// Whether a listen address of ours is one others can dial: not a stealth listener behind a
/// reverse proxy, whose public address is the proxy's.
pub fn is_dialable_listen_address(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| p == Protocol::Http) || DialAddress::parse(addr).is_some()
}

/// For a relay with configured external addresses and a stealth listener: the stealth form of
/// each, so that the relay's bootstrap line, invites and bundles carry it. A plain TCP
/// external address gets the listener's port; a stealth external address without a secret
/// (`.../tls[/sni/<name>]/http`, typical behind a reverse proxy) gets the current secret.
pub(crate) fn stealth_external_addresses(
    external: &[Multiaddr],
    listen: &[Multiaddr],
    listener: &stealth::ListenerConfig,
) -> Vec<Multiaddr> {
    let port = listen
        .iter()
        .filter_map(ListenAddress::parse)
        .find(|l| l.mode == ListenMode::Tls)
        .and_then(|l| {
            l.tcp.iter().find_map(|p| match p {
                Protocol::Tcp(port) => Some(port),
                _ => None,
            })
        });
    let a = &listener.advertised;
    let mut out = Vec::new();
    for e in external {
        let mut parts = e.iter();
        let (Some(host), Some(Protocol::Tcp(tcp_port))) = (parts.next(), parts.next()) else {
            continue;
        };
        if !matches!(
            host,
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
        ) {
            continue;
        }
        let rest: Vec<Protocol> = parts.collect();
        let (port, sni) = match rest.as_slice() {
            [] => match port {
                Some(p) => (p, a.sni.clone()),
                None => continue,
            },
            [Protocol::Tls, Protocol::Http] => (tcp_port, a.sni.clone()),
            [Protocol::Tls, Protocol::Sni(name), Protocol::Http] => {
                (tcp_port, Some(name.to_string()))
            }
            _ => continue,
        };
        let host_text = match &host {
            Protocol::Ip4(ip) => ip.to_string(),
            Protocol::Ip6(ip) => ip.to_string(),
            Protocol::Dns(n) | Protocol::Dns4(n) | Protocol::Dns6(n) => n.to_string(),
            _ => continue,
        };
        let dial = DialAddress {
            tcp: Multiaddr::empty().with(host).with(Protocol::Tcp(port)),
            host: host_text,
            sni,
            path: a.path.clone(),
            certhash: a.certhash,
            peer: None,
        };
        // An address without a pin and without a name could not be checked by a dialer.
        if dial.sni.is_some() || dial.certhash.is_some() {
            out.push(dial.to_multiaddr());
        }
    }
    out
}

/// A peer's announced addresses worth remembering besides `dialed`, the one that worked:
/// direct ones (no relay circuit), without `/p2p/`, not `dialed` itself, and loopback or
/// unspecified ones only when `dialed` is loopback too (a test on one machine). At most
/// [`MAX_OTHER_ADDRESSES`].
pub fn other_addresses(dialed: &Multiaddr, announced: &[Multiaddr]) -> Vec<Multiaddr> {
    let local = |a: &Multiaddr| {
        a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_loopback() || ip.is_unspecified() || ip.is_link_local(),
            Protocol::Ip6(ip) => ip.is_loopback() || ip.is_unspecified(),
            _ => false,
        })
    };
    let dialed_local = local(dialed);
    let mut out: Vec<Multiaddr> = Vec::new();
    for a in announced {
        let mut a = a.clone();
        if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
            a.pop();
        }
        if a != *dialed
            && !a.iter().any(|p| p == Protocol::P2pCircuit)
            && (dialed_local || !local(&a))
            && !out.contains(&a)
            && out.len() < MAX_OTHER_ADDRESSES
        {
            out.push(a);
        }
    }
    out
}

/// How many of a relay's other addresses are remembered (the peer cache keeps eight per peer).
pub const MAX_OTHER_ADDRESSES: usize = 6;

/// Whether `role` listens on a stealth address by default.
pub fn listens_by_default(role: Role) -> bool {
    role == Role::Relay
}

/// The proleptic Gregorian date (year, month, day) of a day count since 1970-01-01, after
/// Howard Hinnant's `civil_from_days`.
pub(crate) fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

#[cfg(test)]
mod tests;
