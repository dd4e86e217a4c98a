//! The `kolokol` command. `node`, `relay` and `demo` run a node in this process; every other
//! command talks to the running daemon of the data directory over its control socket.
//!
//! This binary is the only place that prints to the terminal and the only user of `anyhow`.
//! Exit codes: 0 success, 1 failure, 2 bad usage (clap's own code for argument errors).

/// Prints a line on standard output. Unlike `println!`, it returns the error when the reader
/// has gone (`kolokol outbox | head`), and `main` then ends quietly instead of panicking.
/// Defined before the modules, which use it too.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod backups;
mod chat;
mod client;
mod demo;
mod output;
mod passphrases;
mod send;
mod service;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use kolokol_node::Multiaddr;
use kolokol_node::config::CONFIG_FILE;
use kolokol_node::transport;
use kolokol_node::{Config, FileConfig, LogFormat, Role, RunningNode};
use kolokol_protocol::control::{
    BlockResult, Blocked, BundleInfo, Chat, ChatSummary, Contact, ContactReplaced, DoctorCheck,
    DoctorReport, Event, FileTransfer, IdInfo, ImportResult, InboxMessage, InboxReadResult,
    InviteInfo, MessageStatus, OutboxMessage, PeersInfo, SafetyNumber, Status, method,
};
use kolokol_protocol::control::{GroupChat, GroupInfo, GroupMembers, GroupReadResult, GroupText};
use kolokol_protocol::message::MAX_READ_IDS;
use serde_json::json;

use crate::client::Client;

/// Kolokol: a peer-to-peer, end-to-end encrypted messenger with no server to block.
#[derive(Parser)]
#[command(name = "kolokol", version, about, propagate_version = true)]
struct Cli {
    /// Data directory (identity, database, control socket). Default: $KOLOKOL_HOME if set and
    /// not empty, else the XDG data directory (~/.local/share/kolokol).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Print results as JSON (the control API's own objects) instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Only errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,

    /// The config file of `node` and `relay`. Default: kolokol.toml in the data directory,
    /// if it exists.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log line format: text, or json (one object per line). Default: the config file's
    /// `log_format`, else text.
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormatArg>,

    /// The key file of an encrypted store (32 random bytes, mode 0600), for the commands that
    /// open the data directory themselves; with `init --encrypt`, the store is encrypted under
    /// it instead of a passphrase.
    #[arg(long, global = true, value_name = "FILE")]
    key_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// `--log-format` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// Where the daemons listen, serve metrics and bootstrap from: flags override the config file.
#[derive(clap::Args)]
struct NetArgs {
    /// Listen here (repeatable); replaces the config file's `listen`.
    #[arg(long, value_name = "MULTIADDR", value_parser = parse_multiaddr)]
    listen: Vec<Multiaddr>,
    /// A peer to bootstrap from, ending in /p2p/<peer id> (repeatable); replaces the config
    /// file's `bootstrap`.
    #[arg(long, value_name = "MULTIADDR", value_parser = parse_multiaddr)]
    bootstrap: Vec<Multiaddr>,
    /// An address others can reach this node at (repeatable); replaces the config file's
    /// `external_addresses`.
    #[arg(long, value_name = "MULTIADDR", value_parser = parse_multiaddr)]
    external_address: Vec<Multiaddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Send no read receipts: messages you read are marked read, and their senders are not
    /// told; replaces the config file's `read_receipts`.
    #[arg(long)]
    no_read_receipts: bool,
    /// node: do not relay for contacts: by default a node that listens somewhere (its LAN
    /// addresses, --listen) lets its contacts, and nobody else, hold a relay reservation on it,
    /// so that they reach each other through it with no foreign relay. Replaces the config
    /// file's `relay_for_contacts`.
    #[arg(long)]
    no_relay_for_contacts: bool,
    /// Save received files in DIR (default: `downloads` in the data directory); replaces the
    /// config file's `download_dir`.
    #[arg(long, value_name = "DIR")]
    download_dir: Option<PathBuf>,
    /// Look for peers on the local network with mDNS, announcing this node's peer id and
    /// listen addresses there; the default for `node`, not for `relay`. Replaces the config
    /// file's `mdns`.
    #[arg(long, overrides_with = "no_mdns")]
    mdns: bool,
    /// Neither look for peers on the local network nor announce this node there (mDNS), so
    /// nobody on the LAN learns from multicast that it runs Kolokol; replaces the config
    /// file's `mdns`.
    #[arg(long, overrides_with = "mdns")]
    no_mdns: bool,
    /// Refuse new connections while this process uses more than MIB mebibytes of memory
    /// (connections already made go on); 0 means no limit. Default: 256 for `relay`, no limit
    /// for `node`.
    #[arg(long, value_name = "MIB")]
    max_memory: Option<u64>,
    /// Which transports to use: `any` (TCP, QUIC and stealth) or `stealth` (only the stealth
    /// transport: the node dials nothing but stealth addresses, so nothing it sends carries a
    /// cleartext libp2p identifier). Replaces the config file's `transport`. Default: any.
    #[arg(long, value_name = "POLICY")]
    transport: Option<TransportArg>,
    /// relay: run as a bridge, an unlisted relay: never announced in the DHT, no presence
    /// record, never a DHT server, so a censor crawling the DHT never finds it. Give its
    /// address only to the people it is for (their invites and bundles carry it on).
    /// Replaces the config file's `bridge`.
    #[arg(long)]
    bridge: bool,
    #[command(flatten)]
    stealth: StealthArgs,
}

/// `--transport` values.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    Any,
    Stealth,
}

/// The stealth listener's settings (docs/RELAY.md); each replaces the config file's
/// `[stealth]` value.
#[derive(clap::Args)]
struct StealthArgs {
    /// relay: the port of the default stealth listener. Default: 443 when the relay may bind
    /// it, else 4443 (with a warning).
    #[arg(long, value_name = "PORT")]
    stealth_port: Option<u16>,
    /// relay: no default stealth listener.
    #[arg(long)]
    no_stealth: bool,
    /// The stealth listener's certificate chain (PEM), with --stealth-key. Default: a
    /// self-signed certificate generated once in the data directory, pinned in the addresses.
    #[arg(long, value_name = "FILE", requires = "stealth_key")]
    stealth_cert: Option<PathBuf>,
    /// The private key (PEM) of --stealth-cert.
    #[arg(long, value_name = "FILE", requires = "stealth_cert")]
    stealth_key: Option<PathBuf>,
    /// The domain name dialers send in TLS (SNI) and HTTP: your cover site's.
    #[arg(long, value_name = "NAME")]
    stealth_sni: Option<String>,
    /// Serve this directory as the cover web site to everyone without the secret.
    #[arg(long, value_name = "DIR", conflicts_with = "stealth_cover_backend")]
    stealth_cover_dir: Option<PathBuf>,
    /// Splice everyone without the secret to this web server (plain HTTP), e.g.
    /// 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    stealth_cover_backend: Option<std::net::SocketAddr>,
    /// Use this secret path (16 to 128 characters of A-Z a-z 0-9 - . _ ~ /) instead of a
    /// generated one; the previous one keeps working for the grace period.
    #[arg(long, value_name = "PATH")]
    stealth_secret: Option<String>,
    /// Retire the current secret and make a new one at this start; the old one keeps working
    /// for the grace period.
    #[arg(long)]
    stealth_rotate_secret: bool,
    /// How many days a retired secret keeps working. Default: 14.
    #[arg(long, value_name = "DAYS")]
    stealth_secret_grace_days: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a user's node daemon in the foreground (Ctrl-C stops it). Without --listen the
    /// node makes only outbound connections and is reachable through its relays. mDNS finds
    /// peers on the local network unless --no-mdns.
    Node(NetArgs),
    /// Run a community relay (circuit relay v2 server and DHT server) in the foreground.
    /// Default --listen: TCP and QUIC on port 4001 and the stealth transport on 443 (4443 when
    /// 443 cannot be bound; see --stealth-port), all on 0.0.0.0. Without --external-address,
    /// concrete listen
    /// addresses are used; a relay with no external address grants no usable reservations.
    /// mDNS is off unless --mdns: a relay serves the internet, not its LAN.
    Relay(NetArgs),
    /// Start a relay and two users on 127.0.0.1 in this process and send messages both ways.
    Demo,
    /// Create the data directory and its identity (the daemon does this on its first start
    /// too); with --encrypt, encrypt its store, the identity inside it, under a passphrase (or
    /// --key-file): a new store, or the plain one it has, every message kept. The daemon must
    /// not run.
    Init {
        /// Encrypt the store (SQLCipher, the key from the passphrase through Argon2id); the
        /// daemon then asks for the passphrase at each start.
        #[arg(long)]
        encrypt: bool,
    },
    /// Change the passphrase of an encrypted store (the daemon must not run): the current one
    /// (or --key-file) opens it, and every page is encrypted again under the new one.
    Passphrase {
        /// Encrypt it under this key file (32 random bytes, mode 0600) instead of a new
        /// passphrase.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
    /// Show this node's peer id and device key.
    Id,
    /// Print an invite code others can add you with.
    Invite,
    /// Manage contacts.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Private groups: create one, add and remove members, rename, leave, read it.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Send a text message to a contact, or to a group; TEXT `-` reads it from standard input;
    /// --file PATH sends a file to a contact instead, with a progress bar.
    Send {
        /// The contact's name, or a group's (a contact's name wins if both match).
        name: String,
        /// The message: the remaining arguments, joined with single spaces (quote it to keep
        /// several spaces; put `--` before a text that starts with `-`), or `-` alone to read
        /// standard input.
        #[arg(required_unless_present = "file", conflicts_with = "file", num_args = 1.., value_name = "TEXT")]
        text: Vec<String>,
        /// Send this file (to a contact, up to 256 MiB unless max_file_mib says otherwise);
        /// waits until the recipient has it whole, or until an attempt fails without moving it
        /// on (the daemon goes on trying, as for texts).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Show file transfers, both ways, the newest first: how far each got, and where received
    /// files were saved.
    Files {
        /// Show at most this many of the newest transfers (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT))]
        limit: u32,
    },
    /// Show your conversations and groups with their unread counts; with --messages, the
    /// received messages themselves.
    Inbox {
        /// Keep running and print messages as they arrive.
        #[arg(long)]
        follow: bool,
        /// List the received messages (newest last) instead of the conversations, marking
        /// them read.
        #[arg(long)]
        messages: bool,
        /// Show at most this many of the newest messages (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT))]
        limit: u32,
        /// Show the messages without marking them read, so their senders get no read receipt.
        #[arg(long)]
        peek: bool,
    },
    /// Show one conversation, both ways, in the order it was written, and mark it read.
    Read {
        /// The contact's name (any case), or the peer id of someone who is not a contact.
        name: String,
        /// Show at most this many of the newest messages (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT))]
        limit: u32,
        /// Show long messages whole instead of cut after 20 lines or 2000 characters.
        #[arg(long)]
        full: bool,
        /// Show the messages without marking them read, so their writer gets no read receipt.
        #[arg(long)]
        peek: bool,
    },
    /// A chat screen in the terminal: conversations and groups with unread counts, the open one
    /// with each message's writer and delivery state, a line to type in, and how the node is
    /// connected.
    Chat {
        /// Open the conversation with this contact (or peer id), or else this group, at once.
        name: Option<String>,
    },
    /// Show your sent messages and where each one is (queued, stored, sent, delivered, read,
    /// failed).
    Outbox {
        /// Show at most this many of the newest messages (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT))]
        limit: u32,
    },
    /// Show the node's network state, or with MESSAGE_ID the state history of one message.
    Status {
        /// A message id as printed by `kolokol send`.
        message_id: Option<String>,
    },
    /// List connected and cached peers and how each is reached; export or import a signed
    /// bootstrap bundle.
    Peers {
        #[command(subcommand)]
        action: Option<PeersCommand>,
    },
    /// Check, in order, everything delivery depends on and say what to fix.
    Doctor,
    /// Write one file, sealed with a passphrase, that holds your identity, contacts,
    /// conversations and messages (works with the daemon running or stopped).
    Backup {
        /// The file to write; it must not exist.
        file: PathBuf,
    },
    /// Bring a backup back into the data directory (a new one, on a new machine); the daemon
    /// must not run there.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Replace the identity the data directory has already (it is lost for good).
        #[arg(long)]
        replace: bool,
    },
    /// Run the node as a service that starts by itself.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Print a shell completion script.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Write a systemd user unit that runs `kolokol node` on this data directory, then enable
    /// and start it (with --relay: a system unit for a community relay, as root). Arguments
    /// after `--` go to `node` (or `relay`), e.g. `-- --bootstrap ADDR`.
    Install {
        /// Print the unit and where it would go; write and run nothing.
        #[arg(long)]
        dry_run: bool,
        /// A hardened system unit for a community relay (/etc/systemd/system), not a user's
        /// node.
        #[arg(long)]
        relay: bool,
        /// Arguments for `kolokol node` (or `relay`) in the unit.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PeersCommand {
    /// Write a signed bootstrap bundle of the peers this node has reached (stdout, or FILE).
    Export {
        /// Write here instead of standard output.
        file: Option<PathBuf>,
    },
    /// Read a bootstrap bundle (from FILE, or `-` for standard input), cache its peers and dial
    /// them.
    Import {
        /// The bundle file, or `-`.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group with you as its only member and admin.
    Create {
        /// The group's name, 1 to 64 bytes.
        name: String,
        /// The name members see you under until they have a contact name for you.
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
    },
    /// List your groups.
    List,
    /// Add members (admins only): contact names, or invite codes of people who are not
    /// contacts. They get the group's whole membership record, none of its earlier messages.
    Invite {
        /// The group's name or id.
        group: String,
        /// Contact names or invite codes (`kolokol1…`).
        #[arg(required = true, num_args = 1.., value_name = "CONTACT|INVITE")]
        members: Vec<String>,
        /// The name members see someone added by invite code under.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Make them admins too.
        #[arg(long)]
        admin: bool,
    },
    /// Remove a member (admins only); they can read nothing sent after it.
    Remove {
        /// The group's name or id.
        group: String,
        /// The member: a contact name, the name the group lists them under, or a peer id.
        member: String,
    },
    /// Leave a group.
    Leave {
        /// The group's name or id.
        group: String,
    },
    /// Rename a group (admins only).
    Rename {
        /// The group's name or id.
        group: String,
        /// The new name.
        name: String,
    },
    /// List a group's members.
    Members {
        /// The group's name or id.
        group: String,
    },
    /// Show a group's messages, each with its writer's name, and mark them read.
    Show {
        /// The group's name or id.
        group: String,
        /// Show at most this many of the newest messages (1 to 10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST_LIMIT))]
        limit: u32,
        /// Do not mark them read.
        #[arg(long)]
        peek: bool,
    },
}

#[derive(Subcommand)]
enum ContactsCommand {
    /// Add a contact from their invite code.
    Add {
        /// The name you will use for them.
        name: String,
        /// Their invite code (from `kolokol invite`).
        invite: String,
    },
    /// List contacts.
    List,
    /// Show the safety number to compare with a contact, to confirm nobody swapped your keys;
    /// --mark once it matched.
    Verify {
        /// The contact's name.
        name: String,
        /// The numbers matched: mark the contact verified (shown beside the name).
        #[arg(long)]
        mark: bool,
        /// Take the verified mark away.
        #[arg(long, conflicts_with = "mark")]
        unmark: bool,
    },
    /// Give a contact another name.
    Rename {
        /// The contact's name now.
        name: String,
        /// The new name.
        new_name: String,
    },
    /// Put a contact's new invite in place of the old one after they started over with a new
    /// identity (the verified mark goes; compare safety numbers again).
    Replace {
        /// The contact's name.
        name: String,
        /// Their new invite code.
        invite: String,
        /// Confirm: without it, the command only says what would change.
        #[arg(long)]
        yes: bool,
    },
    /// Accept a request: make someone who wrote to you a contact.
    Accept {
        /// Their peer id, or a unique start of it (at least 12 characters).
        peer_id: String,
        /// The name you will use for them.
        name: String,
    },
    /// Block someone who is not a contact: their messages are deleted, and what they send
    /// from now on is dropped.
    Block {
        /// Their peer id, or a unique start of it.
        peer_id: String,
    },
    /// Unblock a peer.
    Unblock {
        /// The peer id.
        peer_id: String,
    },
    /// List the blocked peers.
    Blocked,
    /// Remove a contact (messages stay).
    Remove {
        /// The contact's name.
        name: String,
    },
}

/// Reads a multiaddr from the command line, saying what went wrong in terms a person who just
/// copied an address can act on: an empty value (an unset shell variable), the documentation's
/// placeholder pasted as is, or something that is not an address at all.
fn parse_multiaddr(text: &str) -> Result<Multiaddr, String> {
    if text.trim().is_empty() {
        return Err("the address is empty (if you wrote --bootstrap \"$RELAY\", RELAY is not set in this terminal: set it to the address the relay printed)".into());
    }
    if text.contains("...") || text.contains('…') {
        return Err(format!(
            "{text:?} is the documentation's placeholder, not an address: use the one your relay printed, which ends in /p2p/12D3KooW and 44 more characters"
        ));
    }
    text.trim().parse().map_err(|e| {
        format!(
            "{text:?} is not a multiaddr ({e}); it looks like /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..., as `kolokol relay` prints it"
        )
    })
}

/// How many async threads a user's daemon (`kolokol node`) runs. One: a user node carries one
/// person's traffic, a text costs well under a millisecond of CPU, and a second thread mostly
/// costs wake-ups between the two (a task woken on the other thread, the scheduler's stealing);
/// with one, the CPU per message fell by a sixth to a fifth and the sustained rate rose on the
/// two-core machine of docs/BENCHMARKS.md ("One tokio worker for a user node"). The price: when
/// other processes keep every core busy, the daemon waits whole for its turn, and its latency
/// tail grows (p99 about 1.4 ms quiet, up to 4.7 ms at load 3 to 5 there). The crypto runs one
/// job at a time, on that thread, and the store's checkpoint still goes to the blocking pool.
/// A relay (`kolokol relay`) serves many users' connections at once, so it keeps tokio's
/// default of one thread per core. `TOKIO_WORKER_THREADS` in the environment overrides this
/// for either ([`worker_threads`]), so a device with other needs, or a benchmark, can choose.
const USER_NODE_WORKER_THREADS: usize = 1;

/// The environment variable that sets how many async threads a daemon runs, as tokio names it.
const WORKER_THREADS_VARIABLE: &str = "TOKIO_WORKER_THREADS";

/// The async threads `TOKIO_WORKER_THREADS` asks for: `None` when it is unset or empty (as
/// with `KOLOKOL_HOME`), an error line when it is not a positive number. Read here, because
/// tokio would panic on a bad value.
fn worker_threads(value: Option<std::ffi::OsString>) -> Result<Option<usize>, String> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match value.to_str().and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!(
            "{WORKER_THREADS_VARIABLE} is {value:?}: give a positive number of async threads, or leave it unset"
        )),
    }
}

/// The largest `--limit` of `inbox` and `outbox`: more than anyone reads on a terminal, and
/// small enough that one answer stays well within what the control socket carries at once.
pub(crate) const MAX_LIST_LIMIT: i64 = 10_000;

/// The default listen addresses of a relay: TCP and QUIC on the IPFS-customary port, on every
/// interface; the stealth listener (`transport::default_stealth_listen`) comes on top.
const RELAY_DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];

/// Whether the error is standard output's reader having gone away.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Bad usage with --json anywhere on the line is said as JSON too; help and version
        // are what was asked for, not errors.
        Err(e)
            if std::env::args().any(|a| a == "--json")
                && !matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp
                        | clap::error::ErrorKind::DisplayVersion
                        | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) =>
        {
            let message = e.kind().as_str().map_or_else(
                || e.to_string().lines().next().unwrap_or_default().to_owned(),
                |kind| format!("{kind}: {}", e.to_string().lines().next().unwrap_or_default()),
            );
            eprintln!("{}", json_error("bad_usage", None, &message));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let json_out = cli.json;
    // The config file is read before logging starts, since it may choose the log format; a
    // broken one is reported like any other error.
    let file = match load_file_config(&cli) {
        Ok(f) => f,
        Err(e) => {
            report(&e, json_out);
            return ExitCode::FAILURE;
        }
    };
    init_logging(&cli, file.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match worker_threads(std::env::var_os(WORKER_THREADS_VARIABLE)) {
        Ok(Some(n)) => {
            builder.worker_threads(n);
        }
        Ok(None) if matches!(cli.command, Command::Node(_)) => {
            builder.worker_threads(USER_NODE_WORKER_THREADS);
        }
        // tokio's own default, one per core, set here so that it never reads the variable
        // itself (an empty one, which counts as unset, would make it panic).
        Ok(None) => {
            builder.worker_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
        }
        Err(message) => {
            if json_out {
                eprintln!("{}", json_error("bad_usage", None, &message));
            } else {
                eprintln!("error: {message}");
            }
            return ExitCode::from(2);
        }
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, file)) {
        Ok(code) => code,
        // Whoever read our output stopped (a pager quit, `head` had enough): nothing is wrong.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, json_out);
            ExitCode::FAILURE
        }
    }
}

/// Says a failed command's error on stderr: one line `error: ...`, or with `--json` one JSON
/// object `{"error": {"code": ..., "message": ..., "rpc_code"?: ...}}` whose `code` is stable
/// (documented in docs/USAGE.md) for scripts to match on.
fn report(e: &anyhow::Error, json_out: bool) {
    if json_out {
        let (code, rpc_code) = error_code(e);
        eprintln!("{}", json_error(code, rpc_code, &one_line(e)));
    } else {
        eprintln!("error: {}", one_line(e));
    }
}

/// The `--json` error line.
pub(crate) fn json_error(code: &str, rpc_code: Option<i64>, message: &str) -> String {
    let mut error = json!({ "code": code, "message": message });
    if let Some(rpc) = rpc_code {
        error["rpc_code"] = json!(rpc);
    }
    json!({ "error": error }).to_string()
}

/// A command that refused its input before asking the daemon, with the stable code the daemon
/// would have used.
#[derive(Debug)]
struct Refused {
    code: &'static str,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// The stable code of an error (see docs/USAGE.md, "Errors as JSON"), and the daemon's
/// JSON-RPC code when the daemon refused the request.
fn error_code(e: &anyhow::Error) -> (&'static str, Option<i64>) {
    for cause in e.chain() {
        if let Some(rpc) = cause.downcast_ref::<client::RpcFailure>() {
            return (kolokol_protocol::control::code::name(rpc.code), Some(rpc.code));
        }
        if cause.downcast_ref::<client::NoDaemon>().is_some() {
            return ("daemon_not_running", None);
        }
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return (refused.code, None);
        }
        if let Some(node) = cause.downcast_ref::<kolokol_node::Error>() {
            return (
                match node {
                    kolokol_node::Error::AlreadyRunning(_) => "already_running",
                    kolokol_node::Error::Config { .. } => "bad_config",
                    kolokol_node::Error::Address(_) => "bad_address",
                    kolokol_node::Error::Network(_) => "network",
                    kolokol_node::Error::Store { .. } => "store",
                    kolokol_node::Error::Io { .. } => "io",
                    kolokol_node::Error::WrongKey(_) => "wrong_key",
                    kolokol_node::Error::Locked { .. } => "locked",
                    kolokol_node::Error::WeakPassphrase(_) => "bad_passphrase",
                    kolokol_node::Error::AlreadyEncrypted(_) => "already_encrypted",
                    kolokol_node::Error::NotEncrypted(_) => "not_encrypted",
                    _ => "failed",
                },
                None,
            );
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return ("io", None);
        }
    }
    ("failed", None)
}

/// The error and its causes on one line, without repeating a cause already in the message.
fn one_line(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text = format!("{text}: {c}");
        }
    }
    text
}

/// The config file of `node` and `relay` (other commands do not read it): `--config`, which
/// must exist, else `kolokol.toml` in the data directory, if it exists.
fn load_file_config(cli: &Cli) -> anyhow::Result<FileConfig> {
    if !matches!(cli.command, Command::Node(_) | Command::Relay(_)) {
        return Ok(FileConfig::default());
    }
    if let Some(path) = &cli.config {
        return Ok(FileConfig::load(path, true)?);
    }
    Ok(FileConfig::load(&data_dir(cli)?.join(CONFIG_FILE), false)?)
}

fn init_logging(cli: &Cli, file_format: Option<LogFormat>) {
    // The demo prints its own steps; the daemons log what they do.
    let quiet_by_default = matches!(cli.command, Command::Demo);
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        // libp2p-kad warns "Failed to trigger bootstrap: No known peers" on every lone relay,
        // which is normal there; its errors still show.
        (false, 0) if quiet_by_default => "warn,libp2p_kad=error",
        (false, 0) => "warn,kolokol_node=info,libp2p_kad=error",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = match (cli.log_format, file_format) {
        (Some(LogFormatArg::Json), _) | (None, Some(LogFormat::Json)) => true,
        (Some(LogFormatArg::Text), _) | (None, Some(LogFormat::Text) | None) => false,
    };
    // Colour codes are for people at a terminal; in a file or a journal they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The environment variable that names the data directory when `--data-dir` is not given.
const HOME_VARIABLE: &str = "KOLOKOL_HOME";

fn data_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(d) = &cli.data_dir {
        return Ok(d.clone());
    }
    // Read here rather than by clap's `env`, which turns `KOLOKOL_HOME=` (set but empty, as a
    // shell script easily leaves it) into "a value is required for '--data-dir'". Empty means
    // unset.
    if let Some(home) = std::env::var_os(HOME_VARIABLE).filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    directories::ProjectDirs::from("", "", "kolokol")
        .map(|p| p.data_dir().to_owned())
        .context("no data directory: pass --data-dir or set KOLOKOL_HOME (no home directory found)")
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// One control-API call on a fresh connection to the daemon of `dir`: every command but
/// `node`, `relay`, `demo` and `completions` is one of these.
async fn rpc<T: serde::de::DeserializeOwned>(
    dir: &std::path::Path,
    method: &str,
    params: serde_json::Value,
) -> anyhow::Result<T> {
    Client::connect(dir).await?.call(method, params).await
}

/// Shows a command's answer: the control API's own object as JSON with `--json`, else the
/// text `human` makes of it; the command succeeded.
fn show<T: serde::Serialize>(
    json_out: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if json_out {
        print_json(value)?;
    } else {
        say!("{}", human(value))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The daemon's configuration: each flag given replaces the config file's value, and what
/// neither sets keeps its default.
fn daemon_config(dir: &std::path::Path, role: Role, net: &NetArgs, file: FileConfig) -> Config {
    let pick = |flag: &Vec<Multiaddr>, file: Option<Vec<Multiaddr>>| {
        if flag.is_empty() { file } else { Some(flag.clone()) }
    };
    let mut config = Config::new(dir, role);
    config.listen = pick(&net.listen, file.listen).unwrap_or_else(|| match role {
        Role::Relay => {
            let mut listen: Vec<Multiaddr> =
                RELAY_DEFAULT_LISTEN.iter().filter_map(|a| a.parse().ok()).collect();
            if !net.stealth.no_stealth {
                let (stealth, warning) =
                    transport::default_stealth_listen(net.stealth.stealth_port);
                if let Some(warning) = warning {
                    tracing::warn!("{warning}");
                }
                listen.push(stealth);
            }
            listen
        }
        Role::Node => Vec::new(),
    });
    config.transport = match net.transport {
        Some(TransportArg::Any) => kolokol_node::config::Policy::Any,
        Some(TransportArg::Stealth) => kolokol_node::config::Policy::Stealth,
        None => file.transport.unwrap_or_default(),
    };
    let (st, fs) = (&net.stealth, file.stealth);
    config.stealth = kolokol_node::config::StealthOptions {
        cert: st.stealth_cert.clone().or(fs.cert),
        key: st.stealth_key.clone().or(fs.key),
        sni: st.stealth_sni.clone().or(fs.sni),
        cover_dir: st.stealth_cover_dir.clone().or(fs.cover_dir),
        cover_backend: st.stealth_cover_backend.or(fs.cover_backend),
        secret: st.stealth_secret.clone().or(fs.secret),
        rotate_secret: st.stealth_rotate_secret,
        secret_grace: st
            .stealth_secret_grace_days
            .map(|d| std::time::Duration::from_secs(d.saturating_mul(86_400)))
            .or(fs.secret_grace),
    };
    config.bootstrap = pick(&net.bootstrap, file.bootstrap).unwrap_or_default();
    config.external_addresses =
        pick(&net.external_address, file.external_addresses).unwrap_or_default();
    config.metrics = net.metrics.or(file.metrics);
    config.read_receipts = !net.no_read_receipts && file.read_receipts.unwrap_or(true);
    config.relay_for_contacts =
        !net.no_relay_for_contacts && file.relay_for_contacts.unwrap_or(true);
    config.download_dir = net.download_dir.clone().or(file.download_dir.clone());
    if let Some(mib) = file.max_file_mib {
        config.max_file_size = mib.saturating_mul(1024 * 1024);
    }
    // A user node looks for contacts on its LAN by default, as the issue asks. A relay does
    // not: it runs on a public server, where multicast reaches nobody who needs it, and an
    // operator who does want it (a relay for one household or office) says `--mdns`. A node
    // told `--transport stealth` does not either: mDNS multicasts `_p2p._udp.local` in the
    // clear, which is exactly the kind of libp2p identifier that node is meant never to send.
    config.mdns = match (net.mdns, net.no_mdns) {
        (true, _) => true,
        (_, true) => false,
        _ => file.mdns.unwrap_or(
            role == Role::Node && config.transport != kolokol_node::config::Policy::Stealth,
        ),
    };
    if let Some(mib) = net.max_memory {
        config.max_memory = (mib > 0).then(|| mib.saturating_mul(1024 * 1024));
    }
    config.bridge = net.bridge || file.bridge.unwrap_or(false);
    // A user node that looks for its neighbours with mDNS also listens where they can reach
    // it: on its private LAN addresses (not on every interface, so a public address, if the
    // machine has one, stays closed), unless --listen says where.
    config.listen_lan = role == Role::Node && config.mdns && config.listen.is_empty();
    config
}

async fn run(cli: Cli, file: FileConfig) -> anyhow::Result<ExitCode> {
    let dir = data_dir(&cli)?;
    match &cli.command {
        Command::Node(net) => {
            let mut config = daemon_config(&dir, Role::Node, net, file);
            config.unlock = passphrases::unlock(&dir, cli.key_file.as_deref())?;
            run_daemon(config, cli.json).await
        }
        Command::Relay(net) => {
            let mut config = daemon_config(&dir, Role::Relay, net, file);
            config.unlock = passphrases::unlock(&dir, cli.key_file.as_deref())?;
            run_daemon(config, cli.json).await
        }
        Command::Init { encrypt } => init(&dir, *encrypt, cli.key_file.as_deref(), cli.json),
        Command::Passphrase { new_key_file } => {
            change_passphrase(&dir, cli.key_file.as_deref(), new_key_file.as_deref(), cli.json)
        }
        Command::Demo => demo::run(cli.json).await,
        Command::Doctor => doctor(&dir, cli.json).await,
        Command::Backup { file } => {
            backups::backup(&dir, file, cli.key_file.as_deref(), cli.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { file, replace } => {
            backups::restore(&dir, file, *replace, cli.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Service(ServiceCommand::Install { dry_run, relay, args }) => {
            service::install(&dir, *relay, *dry_run, args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "kolokol", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Id => {
            let id: IdInfo = rpc(&dir, method::ID, json!({})).await?;
            show(cli.json, &id, |id| {
                format!("peer id:    {}\ndevice key: {}", id.peer_id, id.device_key)
            })
        }
        Command::Invite => {
            let invite: InviteInfo = rpc(&dir, method::INVITE, json!({})).await?;
            if !cli.json && invite.addresses.is_empty() {
                eprintln!(
                    "warning: this invite carries no addresses yet (no relay reservation, no external address); \
                     contacts cannot reach you with it. Start the node with --bootstrap <relay address> and try again."
                );
            }
            show(cli.json, &invite, |invite| invite.invite.clone())
        }
        Command::Contacts(ContactsCommand::Add { name, invite }) => {
            let contact: Contact =
                rpc(&dir, method::CONTACTS_ADD, json!({ "name": name, "invite": invite })).await?;
            show(cli.json, &contact, |c| format!("added {} ({})", c.name, c.peer_id))
        }
        Command::Contacts(ContactsCommand::List) => {
            let contacts: Vec<Contact> = match rpc(&dir, method::CONTACTS_LIST, json!({})).await {
                Err(e) => offline(&dir, cli.key_file.as_deref(), e, cli.json)?.contacts()?,
                answer => answer?,
            };
            show(cli.json, &contacts, |contacts| {
                if contacts.is_empty() {
                    "no contacts yet (add one with: kolokol contacts add NAME INVITE)".into()
                } else {
                    contacts.iter().map(output::contact).collect::<Vec<_>>().join("\n")
                }
            })
        }
        Command::Contacts(ContactsCommand::Verify { name, mark: false, unmark: false }) => {
            let number: SafetyNumber =
                rpc(&dir, method::CONTACTS_VERIFY, json!({ "name": name })).await?;
            show(cli.json, &number, output::safety_number)
        }
        Command::Contacts(ContactsCommand::Verify { name, mark, .. }) => {
            let contact: Contact =
                rpc(&dir, method::CONTACTS_MARK, json!({ "name": name, "verified": mark })).await?;
            show(cli.json, &contact, |c| {
                if c.verified {
                    format!("marked {} verified", output::visible(&c.name))
                } else {
                    format!("{} is no longer marked verified", output::visible(&c.name))
                }
            })
        }
        Command::Contacts(ContactsCommand::Rename { name, new_name }) => {
            let contact: Contact =
                rpc(&dir, method::CONTACTS_RENAME, json!({ "name": name, "new_name": new_name }))
                    .await?;
            show(cli.json, &contact, |c| format!("renamed {name} to {}", output::visible(&c.name)))
        }
        Command::Contacts(ContactsCommand::Replace { name, invite, yes }) => {
            if !*yes {
                let new = kolokol_protocol::invite::Invite::from_text(
                    invite,
                    kolokol_node::clock::unix_secs(),
                )
                .map(|(_, peer)| peer.to_string())
                .unwrap_or_else(|_| "an unreadable invite".into());
                return Err(Refused {
                    code: "confirm",
                    message: format!(
                        "this replaces {name}'s identity with {new}: do it only if {name} told you, in person or over a channel you trust, that they started over; someone handing you an invite in their name could be impersonating them. Messages stay with the old identity, and the verified mark goes. Run again with --yes to replace"
                    ),
                }
                .into());
            }
            let replaced: ContactReplaced =
                rpc(&dir, method::CONTACTS_REPLACE, json!({ "name": name, "invite": invite }))
                    .await?;
            if !cli.json {
                eprintln!(
                    "warning: {}'s identity changed from {} to {}; compare safety numbers again (kolokol contacts verify {}){}",
                    output::visible(&replaced.contact.name),
                    replaced.old_peer_id,
                    replaced.contact.peer_id,
                    output::visible(&replaced.contact.name),
                    if replaced.was_verified {
                        ": the old one was marked verified, the new one is not"
                    } else {
                        ""
                    }
                );
            }
            show(cli.json, &replaced, |r| {
                format!("replaced {} ({})", output::visible(&r.contact.name), r.contact.peer_id)
            })
        }
        Command::Contacts(ContactsCommand::Accept { peer_id, name }) => {
            let contact: Contact =
                rpc(&dir, method::CONTACTS_ACCEPT, json!({ "peer_id": peer_id, "name": name }))
                    .await?;
            show(cli.json, &contact, |c| {
                format!("accepted {} ({}) as a contact", output::visible(&c.name), c.peer_id)
            })
        }
        Command::Contacts(ContactsCommand::Block { peer_id }) => {
            let result: BlockResult =
                rpc(&dir, method::CONTACTS_BLOCK, json!({ "peer_id": peer_id })).await?;
            show(cli.json, &result, |r| {
                format!(
                    "blocked {} (deleted {})",
                    r.peer_id,
                    output::count(r.removed_messages, "message", "messages")
                )
            })
        }
        Command::Contacts(ContactsCommand::Unblock { peer_id }) => {
            let result: BlockResult =
                rpc(&dir, method::CONTACTS_UNBLOCK, json!({ "peer_id": peer_id })).await?;
            show(cli.json, &result, |r| format!("unblocked {}", r.peer_id))
        }
        Command::Contacts(ContactsCommand::Blocked) => {
            let list: Vec<Blocked> = rpc(&dir, method::CONTACTS_BLOCKED, json!({})).await?;
            show(cli.json, &list, |list| {
                if list.is_empty() {
                    "nobody is blocked".into()
                } else {
                    list.iter()
                        .map(|b| {
                            format!("{}\tblocked {}", b.peer_id, output::time(b.blocked_at_ms))
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            })
        }
        Command::Contacts(ContactsCommand::Remove { name }) => {
            let contact: Contact =
                rpc(&dir, method::CONTACTS_REMOVE, json!({ "name": name })).await?;
            show(cli.json, &contact, |c| format!("removed {}", c.name))
        }
        Command::Group(command) => group(&dir, command, cli.json).await,
        Command::Send { name, file: Some(path), .. } => {
            send::send_file(&dir, name, path, cli.json).await
        }
        Command::Files { limit } => {
            let files: Vec<FileTransfer> =
                rpc(&dir, method::FILES, json!({ "limit": limit })).await?;
            show(cli.json, &files, |files| {
                if files.is_empty() {
                    "no file transfers".into()
                } else {
                    files.iter().map(output::file_transfer).collect::<Vec<_>>().join("\n")
                }
            })
        }
        Command::Send { name, text, file: None } => {
            let text = if text.len() == 1 && text[0] == "-" {
                if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                    eprintln!("type the message, then Ctrl-D");
                }
                let mut buf = String::new();
                std::io::stdin()
                    .read_to_string(&mut buf)
                    .context("cannot read the message from standard input")?;
                buf.trim_end_matches('\n').to_owned()
            } else {
                text.join(" ")
            };
            if text.trim().is_empty() {
                return Err(Refused {
                    code: "bad_message",
                    message: "the message is empty".into(),
                }
                .into());
            }
            send::send(&dir, name, text, cli.json).await
        }
        Command::Inbox { follow: false, messages: false, .. } => {
            // Groups are listed with the one-to-one conversations; `--json` keeps the `chats`
            // answer as documented (groups are `group.list`'s), and a stopped node's groups
            // are not read from its database (resolving them needs the daemon's group code).
            let (chats, groups): (Vec<ChatSummary>, Vec<GroupInfo>) =
                match rpc(&dir, method::CHATS, json!({})).await {
                    Err(e) => {
                        (offline(&dir, cli.key_file.as_deref(), e, cli.json)?.chats()?, Vec::new())
                    }
                    Ok(chats) if cli.json => (chats, Vec::new()),
                    Ok(chats) => (chats, rpc(&dir, method::GROUP_LIST, json!({})).await?),
                };
            show(cli.json, &chats, |c| output::chats(c, &groups))
        }
        Command::Inbox { follow, limit, peek, .. } => {
            inbox(&dir, cli.key_file.as_deref(), *follow, *limit, !*peek, cli.json).await
        }
        Command::Chat { name } => {
            chat::run(&dir, name.clone()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Read { name, limit, full, peek } => {
            let params = json!({ "with": name, "limit": limit });
            let mut client = match Client::connect(&dir).await {
                Ok(client) => client,
                Err(e) => {
                    let chat =
                        offline(&dir, cli.key_file.as_deref(), e, cli.json)?.chat(name, *limit)?;
                    return show(cli.json, &chat, |c| output::chat(c, *full));
                }
            };
            let chat: Chat = client.call(method::CHAT, params).await?;
            let code = show(cli.json, &chat, |c| output::chat(c, *full))?;
            // What was shown has been read: the daemon marks it and tells the writer, if a
            // contact, once per message.
            if !*peek {
                let unread: Vec<&str> = chat
                    .entries
                    .iter()
                    .filter(|e| !e.from_me && e.read_at_ms.is_none())
                    .map(|e| e.id.as_str())
                    .collect();
                for ids in unread.chunks(MAX_READ_IDS) {
                    let _: InboxReadResult =
                        client.call(method::INBOX_READ, json!({ "ids": ids })).await?;
                }
            }
            Ok(code)
        }
        Command::Peers { action: None } => {
            let peers: PeersInfo = rpc(&dir, method::PEERS, json!({})).await?;
            show(cli.json, &peers, output::peers)
        }
        Command::Peers { action: Some(PeersCommand::Export { file }) } => {
            let info: BundleInfo = rpc(&dir, method::PEERS_EXPORT, json!({})).await?;
            match file {
                Some(path) => {
                    std::fs::write(path, format!("{}\n", info.bundle))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    if cli.json {
                        print_json(&info)?;
                    } else {
                        say!(
                            "wrote a bundle of {} to {}",
                            output::count(info.peers as u64, "peer", "peers"),
                            path.display()
                        )?;
                    }
                }
                None if cli.json => print_json(&info)?,
                None => say!("{}", info.bundle)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Peers { action: Some(PeersCommand::Import { file }) } => {
            let text = if file.as_os_str() == "-" {
                let mut buf = String::new();
                std::io::stdin().read_to_string(&mut buf).context("cannot read standard input")?;
                buf
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let result: ImportResult =
                rpc(&dir, method::PEERS_IMPORT, json!({ "bundle": text })).await?;
            show(cli.json, &result, |r| {
                format!(
                    "imported {} from a bundle signed by {}",
                    output::count(r.imported as u64, "peer", "peers"),
                    r.exporter
                )
            })
        }
        Command::Outbox { limit } => {
            let messages: Vec<OutboxMessage> =
                match rpc(&dir, method::OUTBOX, json!({ "limit": limit })).await {
                    Err(e) => {
                        offline(&dir, cli.key_file.as_deref(), e, cli.json)?.outbox(*limit)?
                    }
                    answer => answer?,
                };
            show(cli.json, &messages, |messages| {
                if messages.is_empty() {
                    "no sent messages".into()
                } else {
                    messages.iter().map(output::outgoing).collect::<Vec<_>>().join("\n")
                }
            })
        }
        Command::Status { message_id: Some(id) } => {
            let status: MessageStatus = match rpc(&dir, method::MESSAGE, json!({ "id": id })).await
            {
                Err(e) => offline(&dir, cli.key_file.as_deref(), e, cli.json)?.message(id)?,
                answer => answer?,
            };
            show(cli.json, &status, output::message_status)
        }
        Command::Status { message_id: None } => {
            let status: Status = rpc(&dir, method::STATUS, json!({})).await?;
            show(cli.json, &status, output::status)
        }
    }
}

async fn group(
    dir: &std::path::Path,
    command: &GroupCommand,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let changed = |info: &GroupInfo, what: &str| {
        format!(
            "{what} {} ({}, {})",
            output::visible(&info.name),
            info.id,
            output::count(u64::from(info.members), "member", "members")
        )
    };
    match command {
        GroupCommand::Create { name, as_name } => {
            let info: GroupInfo =
                rpc(dir, method::GROUP_CREATE, json!({ "name": name, "as": as_name })).await?;
            show(json_out, &info, |i| changed(i, "created"))
        }
        GroupCommand::List => {
            let groups: Vec<GroupInfo> = rpc(dir, method::GROUP_LIST, json!({})).await?;
            show(json_out, &groups, |groups| {
                if groups.is_empty() {
                    "no groups yet (create one with: kolokol group create NAME)".into()
                } else {
                    groups.iter().map(output::group).collect::<Vec<_>>().join("\n")
                }
            })
        }
        GroupCommand::Invite { group, members, name, admin } => {
            let params =
                json!({ "group": group, "members": members, "name": name, "admin": admin });
            let info: GroupInfo = rpc(dir, method::GROUP_INVITE, params).await?;
            show(json_out, &info, |i| changed(i, "added to"))
        }
        GroupCommand::Remove { group, member } => {
            let info: GroupInfo =
                rpc(dir, method::GROUP_REMOVE, json!({ "group": group, "member": member })).await?;
            show(json_out, &info, |i| changed(i, "removed from"))
        }
        GroupCommand::Leave { group } => {
            let info: GroupInfo = rpc(dir, method::GROUP_LEAVE, json!({ "group": group })).await?;
            show(json_out, &info, |i| format!("left {} ({})", output::visible(&i.name), i.id))
        }
        GroupCommand::Rename { group, name } => {
            let info: GroupInfo =
                rpc(dir, method::GROUP_RENAME, json!({ "group": group, "name": name })).await?;
            show(json_out, &info, |i| changed(i, "renamed"))
        }
        GroupCommand::Members { group } => {
            let members: GroupMembers =
                rpc(dir, method::GROUP_MEMBERS, json!({ "group": group })).await?;
            show(json_out, &members, output::group_members)
        }
        GroupCommand::Show { group, limit, peek } => {
            let mut client = Client::connect(dir).await?;
            let chat: GroupChat = client
                .call(method::GROUP_MESSAGES, json!({ "group": group, "limit": limit }))
                .await?;
            let code = show(json_out, &chat, output::group_chat)?;
            if !peek {
                let _: GroupReadResult =
                    client.call(method::GROUP_READ, json!({ "group": chat.group.id })).await?;
            }
            Ok(code)
        }
    }
}

async fn doctor(dir: &std::path::Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let daemon = match Client::connect(dir).await {
        Ok(client) => Ok(client),
        Err(e) => Err(DoctorCheck {
            name: "daemon".into(),
            status: "fail".into(),
            detail: one_line(&e),
            hint: Some(format!(
                "start it: kolokol --data-dir {} node --bootstrap <relay address> (or: relay --listen ...)",
                dir.display()
            )),
        }),
    };
    let mut checks = Vec::new();
    match daemon {
        Ok(mut client) => {
            checks.push(DoctorCheck {
                name: "daemon".into(),
                status: "ok".into(),
                detail: format!("running, control socket in {}", dir.display()),
                hint: None,
            });
            let report: DoctorReport = client.call(method::DOCTOR, json!({})).await?;
            checks.extend(report.checks);
        }
        Err(check) => checks.push(check),
    }
    let failed = checks.iter().any(|c| c.status == "fail");
    if json_out {
        print_json(&DoctorReport { checks })?;
    } else {
        say!("{}", output::doctor(&checks))?;
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `kolokol init [--encrypt]`.
fn init(
    dir: &std::path::Path,
    encrypt: bool,
    key_file: Option<&std::path::Path>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    if !encrypt {
        let unlock = passphrases::unlock(dir, key_file)?;
        let data_dir = kolokol_node::data_dir::DataDir::open(dir)?;
        let (_, identity) = data_dir.open_node_store(unlock.as_ref())?;
        let peer_id = identity.peer_id().to_string();
        return show(json_out, &json!({ "peer_id": peer_id, "data_dir": dir }), |_| {
            format!(
                "{} is ready, peer id {peer_id}; start it with: kolokol --data-dir {} node",
                dir.display(),
                dir.display()
            )
        });
    }
    let unlock = passphrases::new_unlock(key_file)?;
    let done = kolokol_node::data_dir::encrypt(dir, &unlock)?;
    let value = json!({ "peer_id": done.peer_id, "data_dir": dir, "migrated": done.migrated });
    show(json_out, &value, |_| {
        let shown = dir.display();
        let what = if done.migrated {
            format!(
                "encrypted the store in {shown}: every message and the identity are in it, and the plaintext database and identity.key are overwritten and gone"
            )
        } else {
            format!("created {shown} with an encrypted store and a new identity in it")
        };
        format!(
            "{what}; peer id {}. Start it with: kolokol --data-dir {shown} node (it asks for the passphrase). A forgotten passphrase cannot be recovered.",
            done.peer_id
        )
    })
}

/// `kolokol passphrase`.
fn change_passphrase(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    new_key_file: Option<&std::path::Path>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let database = dir.join(kolokol_node::data_dir::DATABASE_FILE);
    if !kolokol_node::store_key::is_encrypted(&database)? {
        return Err(kolokol_node::Error::NotEncrypted(dir.to_owned()).into());
    }
    let old = passphrases::unlock(dir, key_file)?
        .ok_or_else(|| kolokol_node::Error::NotEncrypted(dir.to_owned()))?;
    let new = passphrases::new_unlock(new_key_file)?;
    kolokol_node::data_dir::change_key(dir, &old, &new)?;
    show(json_out, &json!({ "data_dir": dir, "changed": true }), |_| {
        format!(
            "changed the key of the store in {}; the old passphrase no longer opens it",
            dir.display()
        )
    })
}

/// Where a command that only reads goes when no daemon runs: the data directory's database,
/// opened while the daemon is stopped (`kolokol_node::offline`). Any other failure `e` of the
/// call is returned as it was. Says on stderr (not with `--json`) that the answer comes from
/// the database and that nothing was marked read.
fn offline(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    e: anyhow::Error,
    json_out: bool,
) -> anyhow::Result<kolokol_node::offline::Offline> {
    if e.downcast_ref::<client::NoDaemon>().is_none() {
        return Err(e);
    }
    let unlock = passphrases::unlock(dir, key_file)?;
    let offline = match kolokol_node::offline::Offline::open(dir, unlock.as_ref()) {
        Ok(offline) => offline,
        // An encrypted store the passphrase did not open is what to report.
        Err(
            locked @ (kolokol_node::Error::WrongKey(_)
            | kolokol_node::Error::Locked { .. }
            | kolokol_node::Error::Config { .. }),
        ) => return Err(locked.into()),
        // No database either: the daemon's absence is the error to report.
        Err(_) => return Err(e),
    };
    if !json_out {
        eprintln!(
            "(no daemon is running: read from the database in {}; nothing is marked read until the daemon runs)",
            dir.display()
        );
    }
    Ok(offline)
}

async fn inbox(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    follow: bool,
    limit: u32,
    mark_read: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = match Client::connect(dir).await {
        Ok(client) => client,
        Err(e) if !follow => {
            let messages = offline(dir, key_file, e, json_out)?.inbox(limit)?;
            return show(json_out, &messages, |messages| {
                if messages.is_empty() {
                    "no messages".into()
                } else {
                    messages.iter().map(output::message).collect::<Vec<_>>().join("\n")
                }
            });
        }
        Err(e) => return Err(e),
    };
    // Subscribing before reading the inbox means nothing arrives unseen in between; a message
    // that is in both is shown once.
    if follow {
        let _: bool = client.call(method::SUBSCRIBE, json!({})).await?;
    }
    let messages: Vec<InboxMessage> = client.call(method::INBOX, json!({ "limit": limit })).await?;
    // Group texts are shown with the one-to-one messages, each line naming its group; `--json`
    // keeps the `inbox` answer as documented (group texts are `group.inbox`'s).
    let group_texts: Vec<GroupText> = if json_out {
        Vec::new()
    } else {
        client.call(method::GROUP_INBOX, json!({ "limit": limit })).await?
    };
    if json_out && !follow {
        print_json(&messages)?;
        if mark_read {
            read(&mut client, &messages).await?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let show = |m: &InboxMessage| -> anyhow::Result<()> {
        if json_out {
            say!("{}", serde_json::to_string(m)?)?;
        } else {
            say!("{}", output::message(m))?;
        }
        Ok(())
    };
    if messages.is_empty() && group_texts.is_empty() && !follow && !json_out {
        say!("no messages")?;
    }
    let mut seen: std::collections::HashSet<String> =
        messages.iter().map(|m| m.id.clone()).collect();
    seen.extend(group_texts.iter().map(|m| m.id.clone()));
    // Both kinds, in the order they were written (by the sender's send time, then arrival), as
    // the daemon orders the one-to-one messages.
    let mut lines: Vec<((u64, u64), String)> = group_texts
        .iter()
        .map(|m| ((m.sent_at_ms, m.received_at_ms), output::group_message(m)))
        .collect();
    for m in &messages {
        if json_out {
            show(m)?;
        } else {
            lines.push(((m.sent_at_ms, m.received_at_ms), output::message(m)));
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    for (_, line) in &lines {
        say!("{line}")?;
    }
    // What was shown has been read: the daemon marks it, and tells the senders who are
    // contacts, once per message (group texts are marked read without telling anyone).
    if mark_read {
        read(&mut client, &messages).await?;
        read_groups(&mut client, &group_texts).await?;
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::select! {
            event = client.next_event() => match event? {
                Event::Message(m) if !seen.contains(&m.id) => {
                    // A long text comes cut short in the event; the inbox has all of it.
                    let m = if m.truncated {
                        let recent: Vec<InboxMessage> = client.call(method::INBOX, json!({ "limit": 64 })).await?;
                        recent.into_iter().find(|r| r.id == m.id).unwrap_or(m)
                    } else {
                        m
                    };
                    show(&m)?;
                    if mark_read {
                        read(&mut client, std::slice::from_ref(&m)).await?;
                    }
                }
                Event::GroupMessage(m) if !seen.contains(&m.id) && !m.from_me => {
                    if json_out {
                        say!("{}", serde_json::to_string(&m)?)?;
                    } else {
                        say!("{}", output::group_message(&m))?;
                    }
                    if mark_read {
                        read_groups(&mut client, std::slice::from_ref(&m)).await?;
                    }
                }
                Event::Lagged { missed } => eprintln!("warning: {} missed; run kolokol inbox to see everything", output::count(missed, "event was", "events were")),
                Event::Rekeyed(r) => println!("{}", output::rekey(&r)),
                _ => {}
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Marks the messages read through `inbox.read`, in requests of at most [`MAX_READ_IDS`] ids
/// so that even the longest listing stays far below the control API's line limit. Messages
/// that are already read are skipped here, saving the daemon a lookup; it would skip them too.
async fn read(client: &mut Client, messages: &[InboxMessage]) -> anyhow::Result<()> {
    let unread: Vec<&str> =
        messages.iter().filter(|m| m.read_at_ms.is_none()).map(|m| m.id.as_str()).collect();
    for ids in unread.chunks(MAX_READ_IDS) {
        let _: InboxReadResult = client.call(method::INBOX_READ, json!({ "ids": ids })).await?;
    }
    Ok(())
}

/// Marks read the groups these texts belong to, once each.
async fn read_groups(client: &mut Client, texts: &[GroupText]) -> anyhow::Result<()> {
    let groups: std::collections::BTreeSet<&str> = texts
        .iter()
        .filter(|t| t.read_at_ms.is_none() && !t.from_me)
        .map(|t| t.group.as_str())
        .collect();
    for group in groups {
        let _: GroupReadResult = client.call(method::GROUP_READ, json!({ "group": group })).await?;
    }
    Ok(())
}

async fn run_daemon(config: Config, json_out: bool) -> anyhow::Result<ExitCode> {
    let role = config.role;
    let bridge = config.bridge;
    let data_dir = config.data_dir.clone();
    // Every listener (TCP, QUIC, stealth) reports its address on its own; the bootstrap line
    // printed below should carry all of them.
    let listeners = config.listen.len();
    let mut running = RunningNode::start(config).await?;
    let node = running.node();
    let metrics = running.metrics_address().map(|a| format!("http://{a}/metrics"));
    // Listening starts asynchronously; give it a moment so the printed addresses are real.
    let net = node
        .wait_for_net(std::time::Duration::from_secs(5), |s| {
            role == Role::Node || s.listen.len() >= listeners.max(1)
        })
        .await
        .unwrap_or_default();
    let peer_id = node.peer_id();
    let shareable: Vec<String> = net
        .external
        .iter()
        .chain(if net.external.is_empty() { net.listen.iter() } else { [].iter() })
        .map(|a| format!("{a}/p2p/{peer_id}"))
        .collect();
    if json_out {
        say!(
            "{}",
            json!({ "peer_id": peer_id.to_string(), "role": role.as_str(), "bridge": bridge, "data_dir": data_dir, "addresses": shareable, "metrics": metrics })
        )?;
    } else {
        say!("kolokol {} running, peer id {peer_id}", role.as_str())?;
        say!("data dir: {}", data_dir.display())?;
        if let Some(url) = &metrics {
            say!("metrics: {url}")?;
        }
        if bridge {
            say!(
                "this relay is a bridge: it is not announced in the DHT; give these lines only to the people it is for"
            )?;
        }
        if role == Role::Relay {
            say!("users bootstrap from this relay with (each line a command to paste as is):")?;
            for a in &shareable {
                say!("  kolokol node --bootstrap {a}")?;
            }
            if net.external.is_empty() {
                say!(
                    "(no external address set: pass --external-address /ip4/<public ip>/tcp/<port> on a public server)"
                )?;
            }
        }
        say!("stop with Ctrl-C")?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = running.wait() => {
            running.shutdown().await;
            bail!("the node stopped unexpectedly; see the log above");
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
