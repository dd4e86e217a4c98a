//! Node configuration: what the daemon is told at start, by flags, by the config file
//! (`kolokol.toml`), or by the embedding program.
//!
//! The file is parsed here rather than in the CLI so that every mistake in it becomes one
//! [`Error::Config`] naming the file and the line, and so that its addresses are checked by the
//! same rules as the flags'.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde::Deserialize;
use toml::Spanned;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::swarm::behaviour::{IDLE_CONNECTION_TIMEOUT, PING_INTERVAL};

/// What kind of node to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A user's node: relay client, DHT client, reachable through relays.
    Node,
    /// A community relay: circuit relay v2 server and DHT server, on a public address.
    Relay,
}

impl Role {
    /// The name shown in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Relay => "relay",
        }
    }
}

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory: identity, database, control socket.
    pub data_dir: PathBuf,
    /// Node or relay.
    pub role: Role,
    /// Addresses to listen on. A user node with none makes only outbound connections and is
    /// reachable through its relays alone, which keeps its IP address from its contacts.
    pub listen: Vec<Multiaddr>,
    /// Peers to bootstrap from; each must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses this node is reachable at from outside (relays must have one, or they can
    /// grant no reservations). When empty, a relay uses its concrete listen addresses.
    pub external_addresses: Vec<Multiaddr>,
    /// Where to serve Prometheus metrics over HTTP (`GET /metrics`); `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// Whether reading messages (`inbox.read`) sends read receipts to senders who are
    /// contacts. Off, messages are still marked read, and nobody is told.
    pub read_receipts: bool,
    /// Whether to find peers on the local network with mDNS, which also announces this node's
    /// peer id and listen addresses there to anyone listening. Off in [`Config::new`], so a
    /// program that embeds a node (the tests, the demo, the benchmark) never multicasts unless
    /// it asks to; `kolokol node` turns it on unless told `--no-mdns` or `mdns = false`.
    pub mdns: bool,
    /// Above this much memory in use by the process, in bytes, new connections are refused
    /// (`None`: no limit). [`Config::new`] sets [`RELAY_MAX_MEMORY`] for a relay, none for a
    /// user node.
    pub max_memory: Option<u64>,
    /// Which transports to dial and listen with: all of them, or the stealth transport only.
    pub transport: Policy,
    /// A relay only: run as a bridge, an unlisted relay. It never announces itself in the DHT,
    /// publishes no presence record and is never a DHT server (whose address routing tables
    /// hand out), so nobody finds it there; its users learn it from invites, bundles and
    /// their contacts.
    pub bridge: bool,
    /// A user node only: listen on every private LAN address of the machine's interfaces
    /// (a random TCP port each), following them as they come and go, so that mDNS announces
    /// the node to its neighbours and they can reach it with no relay. Off in
    /// [`Config::new`]; `kolokol node` turns it on with mDNS when no `--listen` is given.
    pub listen_lan: bool,
    /// A user node only: while it listens somewhere (`listen`, or its LAN addresses), run a
    /// circuit relay server for its contacts, and only them (`swarm::relay_server`). On in
    /// [`Config::new`]; `kolokol node --no-relay-for-contacts` or `relay_for_contacts = false`
    /// turns it off.
    pub relay_for_contacts: bool,
    /// The stealth listener's certificate, cover and secrets (used only when `listen` has a
    /// stealth address).
    pub stealth: StealthOptions,
    /// The wall clock the node reads: the system clock, or in tests of the slow timers a clock
    /// that follows tokio's paused time ([`Clock::tokio`]).
    pub clock: Clock,
    /// How often a mailbox replica checks whether the servers closest to the mailboxes it holds
    /// changed, and hands their items on ([`crate::mailbox::handover::HANDOVER_INTERVAL`]).
    pub mailbox_handover_interval: std::time::Duration,
    /// How often the node fetches its mailboxes when nothing prompted it
    /// ([`crate::mailbox::FETCH_INTERVAL`] unless the scale simulation stretches it). No
    /// command-line flag or config file option sets it: an owner that came online fetches at
    /// once whatever it is, and the interval bounds how long a message deposited while it was
    /// online, by a sender that could not reach it directly, waits.
    pub mailbox_fetch_interval: std::time::Duration,
    /// Whether a user node looks for relays in the DHT (`get_providers` under the relays' key)
    /// while it holds fewer reservations than it wants; `true` but in the scale simulation,
    /// which runs no relay. No command-line flag or config file option sets it: on a network
    /// with relays the first search finds them, but on one without, every node would search
    /// again and again (at 2, 4, 8 s and on, up to every 10 minutes), each search a DHT walk.
    pub relay_discovery: bool,
    /// Who may enter the DHT routing table: at most so many peers of one address range per
    /// bucket and per table ([`DHT_DIVERSITY`] unless a test relaxes it).
    pub dht_diversity: Diversity,
    /// Where received files are saved; `None`: `downloads` in the data directory
    /// ([`crate::files::DOWNLOADS_DIR`]).
    pub download_dir: Option<PathBuf>,
    /// The largest file this node sends or takes, in bytes
    /// ([`crate::files::DEFAULT_MAX_FILE_SIZE`] unless configured).
    pub max_file_size: u64,
    /// Run the swarm over libp2p's in-memory transport (`/memory/<port>` addresses, Noise and
    /// Yamux as over TCP) instead of TCP, QUIC and stealth, so that one process can hold
    /// hundreds of real nodes: only the scale simulation (`kolokol-scale` and its test in the
    /// `tests` crate) sets it. No command-line flag or config file option does, and a node that
    /// has it reaches no other process.
    pub in_memory: bool,
    /// How often each end pings every connection ([`PING_INTERVAL`] unless the scale
    /// simulation stretches it); a connection that received nothing for this plus a few
    /// seconds counts as stalled (`swarm::volume`). No command-line flag or config file option
    /// sets it: the interval is what detects a censor freezing a connection.
    pub ping_interval: Duration,
    /// How long a connection with no streams stays open ([`IDLE_CONNECTION_TIMEOUT`] unless
    /// the scale simulation shortens it). No command-line flag or config file option sets it.
    pub idle_connection_timeout: Duration,
    /// What unlocks an encrypted store (`kolokol init --encrypt`): its passphrase or key
    /// file. `None` for a plain store; an encrypted one then refuses to start.
    pub unlock: Option<crate::store_key::Unlock>,
}

/// The routing table's diversity rule: how many peers of one address group (an IPv4 /24, an
/// IPv6 /48) it holds at most, per bucket and in all, so that many identities on few addresses
/// cannot fill it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Diversity {
    /// Peers of one group in one bucket.
    pub per_bucket: usize,
    /// Peers of one group in the whole table.
    pub per_table: usize,
    /// Loopback addresses skip the rule. Only tests set this, to run many nodes on 127.0.0.1;
    /// a node that has it logs a warning at start, and no command-line flag or config file
    /// option sets it.
    pub exempt_loopback: bool,
}

/// The diversity rule of every node: go-libp2p-kad-dht's limits (2 per bucket, 3 per table),
/// applied to loopback like any other address.
pub const DHT_DIVERSITY: Diversity =
    Diversity { per_bucket: 2, per_table: 3, exempt_loopback: false };

/// Which transports a node dials and listens with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// TCP, QUIC and stealth.
    #[default]
    Any,
    /// The stealth transport only (and relay circuits over it): nothing this node sends
    /// carries a cleartext libp2p identifier, and addresses of other transports are not
    /// dialed at all.
    Stealth,
}

/// The operator's stealth settings; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StealthOptions {
    /// The certificate chain (PEM) to serve; with `key`. Without both, a self-signed one is
    /// generated once and kept in the data directory.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// The domain dialers name in TLS (SNI) and in the `Host` header: the cover site's.
    pub sni: Option<String>,
    /// A directory the built-in cover web server serves.
    pub cover_dir: Option<PathBuf>,
    /// The operator's own web server, to splice connections without the secret to.
    pub cover_backend: Option<SocketAddr>,
    /// The secret path to use (a generated one otherwise).
    pub secret: Option<String>,
    /// Retire the current secret and make a new one current at this start.
    pub rotate_secret: bool,
    /// How long a retired secret keeps working; `transport::secret::DEFAULT_GRACE` (14 days) if `None`.
    pub secret_grace: Option<Duration>,
}

/// A relay's default memory ceiling for taking new connections: 256 MiB, an eighth of a small
/// server's worth, and some sixteen times what an idle relay uses.
pub const RELAY_MAX_MEMORY: u64 = 256 * 1024 * 1024;

/// The config file's name inside the data directory.
pub const CONFIG_FILE: &str = "kolokol.toml";

/// The largest config file read, so a wrong `--config` path (a disk image, a log) fails fast
/// instead of being read whole.
pub const MAX_CONFIG_FILE_LEN: u64 = 1024 * 1024;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The contents of `kolokol.toml`. Every field is optional; a flag given on the command line
/// replaces the file's value (a list flag replaces the whole list).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileConfig {
    /// `listen`: addresses to listen on.
    pub listen: Option<Vec<Multiaddr>>,
    /// `bootstrap`: peers to bootstrap from, each ending in `/p2p/<peer id>`.
    pub bootstrap: Option<Vec<Multiaddr>>,
    /// `external_addresses`: addresses others reach this node at.
    pub external_addresses: Option<Vec<Multiaddr>>,
    /// `log_format`: `"text"` or `"json"`.
    pub log_format: Option<LogFormat>,
    /// `metrics`: the address to serve Prometheus metrics on, such as `"127.0.0.1:9464"`.
    pub metrics: Option<SocketAddr>,
    /// `read_receipts`: `false` to send no read receipts.
    pub read_receipts: Option<bool>,
    /// `mdns`: `false` to neither look for peers on the local network nor announce this node
    /// there, `true` to do both (a relay does neither unless told to).
    pub mdns: Option<bool>,
    /// `transport`: `"any"` (TCP, QUIC and stealth) or `"stealth"` (stealth only).
    pub transport: Option<Policy>,
    /// `bridge`: `true` to run a relay as a bridge (unlisted).
    pub bridge: Option<bool>,
    /// The `[stealth]` table: certificate, cover and secret settings.
    pub stealth: StealthOptions,
    /// `download_dir`: where received files are saved.
    pub download_dir: Option<PathBuf>,
    /// `max_file_mib`: the largest file sent or taken, in MiB.
    pub max_file_mib: Option<u64>,
    /// `relay_for_contacts`: `false` for a user node not to relay for its contacts.
    pub relay_for_contacts: Option<bool>,
}

/// The file's `[stealth]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStealth {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    sni: Option<String>,
    cover_dir: Option<PathBuf>,
    cover_backend: Option<Spanned<String>>,
    secret: Option<String>,
    secret_grace_days: Option<u64>,
}

/// The file as written, with the position of every value so that errors can name its line.
/// `deny_unknown_fields` turns a misspelt option into an error instead of a silent default.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileConfig {
    listen: Option<AddressList>,
    bootstrap: Option<AddressList>,
    external_addresses: Option<AddressList>,
    log_format: Option<LogFormat>,
    metrics: Option<Spanned<String>>,
    read_receipts: Option<bool>,
    mdns: Option<bool>,
    transport: Option<Policy>,
    bridge: Option<bool>,
    stealth: Option<RawStealth>,
    download_dir: Option<PathBuf>,
    max_file_mib: Option<u64>,
    relay_for_contacts: Option<bool>,
}

/// A list of multiaddr strings, each with its position in the file.
struct AddressList(Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for AddressList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AddressList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of multiaddr strings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<AddressList, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(AddressList(items))
            }
        }
        d.deserialize_seq(Visitor)
    }
}

impl FileConfig {
    /// Reads the config file at `path`. A missing file is an empty configuration unless
    /// `required` (the user named it with `--config`).
    pub fn load(path: &Path, required: bool) -> Result<Self> {
        let config_error = |detail: String| Error::Config { path: path.to_owned(), detail };
        let text = match std::fs::metadata(path) {
            // A data dir that is not a directory has no config; opening it reports the problem.
            Err(e)
                if !required
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) =>
            {
                return Ok(Self::default());
            }
            Err(e) => return Err(config_error(format!("cannot read it: {e}"))),
            Ok(meta) if meta.len() > MAX_CONFIG_FILE_LEN => {
                return Err(config_error(format!(
                    "is {} bytes, over the limit of {MAX_CONFIG_FILE_LEN}; is it really a kolokol config file?",
                    meta.len()
                )));
            }
            Ok(_) => std::fs::read_to_string(path)
                .map_err(|e| config_error(format!("cannot read it: {e}")))?,
        };
        Self::parse(&text).map_err(config_error)
    }

    /// Parses the text of a config file; the error is one line, starting with the line number
    /// where one is known.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let raw: RawFileConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().replace('\n', "; ");
            match e.span() {
                Some(span) => {
                    let key = key_on_line(text, span.start);
                    match key {
                        Some(key) if message.starts_with("invalid type") => {
                            format!("{}: {message} for `{key}`", line_of(text, span.start))
                        }
                        _ => format!("{}: {message}", line_of(text, span.start)),
                    }
                }
                None => message,
            }
        })?;
        let addresses = |list: Option<AddressList>,
                         key: &str|
         -> std::result::Result<Option<Vec<Multiaddr>>, String> {
            let Some(AddressList(items)) = list else { return Ok(None) };
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let addr: Multiaddr = item.get_ref().parse().map_err(|e| {
                    format!(
                        "{}: `{key}` entry {:?} is not a multiaddr ({e}); write addresses like \"/ip4/203.0.113.7/tcp/4001\"",
                        line_of(text, item.span().start),
                        item.get_ref()
                    )
                })?;
                if key == "bootstrap" {
                    peer_id_of(&addr)
                        .map_err(|e| format!("{}: {e}", line_of(text, item.span().start)))?;
                }
                out.push(addr);
            }
            Ok(Some(out))
        };
        let metrics = match raw.metrics {
            None => None,
            Some(m) => Some(m.get_ref().parse::<SocketAddr>().map_err(|_| {
                format!(
                    "{}: `metrics` is {:?}, not an IP address and port such as \"127.0.0.1:9464\"",
                    line_of(text, m.span().start),
                    m.get_ref()
                )
            })?),
        };
        let stealth = match raw.stealth {
            None => StealthOptions::default(),
            Some(st) => {
                let cover_backend = match st.cover_backend {
                    None => None,
                    Some(b) => Some(b.get_ref().parse::<SocketAddr>().map_err(|_| {
                        format!(
                            "{}: `stealth.cover_backend` is {:?}, not an IP address and port such as \"127.0.0.1:8080\"",
                            line_of(text, b.span().start),
                            b.get_ref()
                        )
                    })?),
                };
                StealthOptions {
                    cert: st.cert,
                    key: st.key,
                    sni: st.sni,
                    cover_dir: st.cover_dir,
                    cover_backend,
                    secret: st.secret,
                    rotate_secret: false,
                    secret_grace: st
                        .secret_grace_days
                        .map(|d| Duration::from_secs(d.saturating_mul(86_400))),
                }
            }
        };
        Ok(Self {
            transport: raw.transport,
            bridge: raw.bridge,
            stealth,
            listen: addresses(raw.listen, "listen")?,
            bootstrap: addresses(raw.bootstrap, "bootstrap")?,
            external_addresses: addresses(raw.external_addresses, "external_addresses")?,
            log_format: raw.log_format,
            metrics,
            read_receipts: raw.read_receipts,
            mdns: raw.mdns,
            download_dir: raw.download_dir,
            max_file_mib: raw.max_file_mib,
            relay_for_contacts: raw.relay_for_contacts,
        })
    }
}

/// "line N" for a byte offset into `text`.
fn line_of(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line = text.as_bytes()[..offset].iter().filter(|b| **b == b'\n').count() + 1;
    format!("line {line}")
}

/// The key assigned on the line holding `offset`, if the line reads `key = ...`.
fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text.as_bytes()[..offset].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .then(|| key.to_owned())
}

impl Config {
    /// A configuration with defaults for everything but the data directory and role.
    pub fn new(data_dir: impl Into<PathBuf>, role: Role) -> Self {
        Self {
            data_dir: data_dir.into(),
            role,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            external_addresses: Vec::new(),
            metrics: None,
            read_receipts: true,
            mdns: false,
            max_memory: (role == Role::Relay).then_some(RELAY_MAX_MEMORY),
            transport: Policy::Any,
            bridge: false,
            listen_lan: false,
            relay_for_contacts: true,
            stealth: StealthOptions::default(),
            clock: Clock::system(),
            dht_diversity: DHT_DIVERSITY,
            mailbox_handover_interval: crate::mailbox::handover::HANDOVER_INTERVAL,
            mailbox_fetch_interval: crate::mailbox::FETCH_INTERVAL,
            relay_discovery: true,
            download_dir: None,
            max_file_size: crate::files::DEFAULT_MAX_FILE_SIZE,
            in_memory: false,
            ping_interval: PING_INTERVAL,
            idle_connection_timeout: IDLE_CONNECTION_TIMEOUT,
            unlock: None,
        }
    }

    /// Checks what can be checked before anything starts.
    pub fn validate(&self) -> Result<()> {
        if self.bridge && self.role != Role::Relay {
            return Err(Error::Config {
                path: self.data_dir.join(CONFIG_FILE),
                detail: "`bridge` is for a relay (`kolokol relay --bridge`), not a user's node"
                    .into(),
            });
        }
        for addr in &self.bootstrap {
            peer_id_of(addr)?;
        }
        Ok(())
    }
}

/// The peer id at the end of a bootstrap address.
pub fn peer_id_of(addr: &Multiaddr) -> Result<libp2p::PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok(peer),
        _ => Err(Error::Address(format!(
            "bootstrap address {addr} has no /p2p/<peer id> at its end (ask the relay operator for its full address)"
        ))),
    }
}

#[cfg(test)]
mod tests;
