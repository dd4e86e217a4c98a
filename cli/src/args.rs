//! The command line: clap's definitions of `kolokol`'s flags and subcommands, whose doc comments
//! are the help text, and the checks clap runs on their values. It only parses: nothing here
//! reads the config file, the environment or the data directory, or does what a command asks
//! (`run` in `main.rs` does, and the modules it calls).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kolokol_node::Multiaddr;

/// The largest `--limit` of `inbox` and `outbox`: more than anyone reads on a terminal, and
/// small enough that one answer stays well within what the control socket carries at once.
pub(crate) const MAX_LIST_LIMIT: i64 = 10_000;

/// Kolokol: a peer-to-peer, end-to-end encrypted messenger with no server to block.
#[derive(Parser)]
#[command(name = "kolokol", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Data directory (identity, database, control socket). Default: $KOLOKOL_HOME if set and
    /// not empty, else the XDG data directory (~/.local/share/kolokol).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Print results as JSON (the control API's own objects) instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Only errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,

    /// The config file of `node` and `relay`. Default: kolokol.toml in the data directory,
    /// if it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Log line format: text, or json (one object per line). Default: the config file's
    /// `log_format`, else text.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub(crate) log_format: Option<LogFormatArg>,

    /// The key file of an encrypted store (32 random bytes, mode 0600), for the commands that
    /// open the data directory themselves; with `init --encrypt`, the store is encrypted under
    /// it instead of a passphrase.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) key_file: Option<PathBuf>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--log-format` values.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormatArg {
    Text,
    Json,
}

/// Where the daemons listen, serve metrics and bootstrap from: flags override the config file.
#[derive(clap::Args)]
pub(crate) struct NetArgs {
    /// Listen here (repeatable); replaces the config file's `listen`.
    #[arg(long, value_name = "MULTIADDR", value_parser = parse_multiaddr)]
    pub(crate) listen: Vec<Multiaddr>,
    /// A peer to bootstrap from, ending in /p2p/<peer id> (repeatable); replaces the config
    /// file's `bootstrap`.
    #[arg(long, value_name = "MULTIADDR", value_parser = parse_multiaddr)]
    pub(crate) bootstrap: Vec<Multiaddr>,
    /// An address others can reach this node at (repeatable); replaces the config file's
    /// `external_addresses`.
    #[arg(long, value_name = "MULTIADDR", value_parser = parse_multiaddr)]
    pub(crate) external_address: Vec<Multiaddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Send no read receipts: messages you read are marked read, and their senders are not
    /// told; replaces the config file's `read_receipts`.
    #[arg(long)]
    pub(crate) no_read_receipts: bool,
    /// node: do not relay for contacts: by default a node that listens somewhere (its LAN
    /// addresses, --listen) lets its contacts, and nobody else, hold a relay reservation on it,
    /// so that they reach each other through it with no foreign relay. Replaces the config
    /// file's `relay_for_contacts`.
    #[arg(long)]
    pub(crate) no_relay_for_contacts: bool,
    /// Save received files in DIR (default: `downloads` in the data directory); replaces the
    /// config file's `download_dir`.
    #[arg(long, value_name = "DIR")]
    pub(crate) download_dir: Option<PathBuf>,
    /// Look for peers on the local network with mDNS, announcing this node's peer id and
    /// listen addresses there; the default for `node`, not for `relay`. Replaces the config
    /// file's `mdns`.
    #[arg(long, overrides_with = "no_mdns")]
    pub(crate) mdns: bool,
    /// Neither look for peers on the local network nor announce this node there (mDNS), so
    /// nobody on the LAN learns from multicast that it runs Kolokol; replaces the config
    /// file's `mdns`.
    #[arg(long, overrides_with = "mdns")]
    pub(crate) no_mdns: bool,
    /// Refuse new connections while this process uses more than MIB mebibytes of memory
    /// (connections already made go on); 0 means no limit. Default: 256 for `relay`, no limit
    /// for `node`.
    #[arg(long, value_name = "MIB")]
    pub(crate) max_memory: Option<u64>,
    /// Which transports to use: `any` (TCP, QUIC and stealth) or `stealth` (only the stealth
    /// transport: the node dials nothing but stealth addresses, so nothing it sends carries a
    /// cleartext libp2p identifier). Replaces the config file's `transport`. Default: any.
    #[arg(long, value_name = "POLICY")]
    pub(crate) transport: Option<TransportArg>,
    /// relay: run as a bridge, an unlisted relay: never announced in the DHT, no presence
    /// record, never a DHT server, so a censor crawling the DHT never finds it. Give its
    /// address only to the people it is for (their invites and bundles carry it on).
    /// Replaces the config file's `bridge`.
    #[arg(long)]
    pub(crate) bridge: bool,
    #[command(flatten)]
    pub(crate) stealth: StealthArgs,
}

/// `--transport` values.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum TransportArg {
    Any,
    Stealth,
}

/// The stealth listener's settings (docs/RELAY.md); each replaces the config file's
/// `[stealth]` value.
#[derive(clap::Args)]
pub(crate) struct StealthArgs {
    /// relay: the port of the default stealth listener. Default: 443 when the relay may bind
    /// it, else 4443 (with a warning).
    #[arg(long, value_name = "PORT")]
    pub(crate) stealth_port: Option<u16>,
    /// relay: no default stealth listener.
    #[arg(long)]
    pub(crate) no_stealth: bool,
    /// The stealth listener's certificate chain (PEM), with --stealth-key. Default: a
    /// self-signed certificate generated once in the data directory, pinned in the addresses.
    #[arg(long, value_name = "FILE", requires = "stealth_key")]
    pub(crate) stealth_cert: Option<PathBuf>,
    /// The private key (PEM) of --stealth-cert.
    #[arg(long, value_name = "FILE", requires = "stealth_cert")]
    pub(crate) stealth_key: Option<PathBuf>,
    /// The domain name dialers send in TLS (SNI) and HTTP: your cover site's.
    #[arg(long, value_name = "NAME")]
    pub(crate) stealth_sni: Option<String>,
    /// Serve this directory as the cover web site to everyone without the secret.
    #[arg(long, value_name = "DIR", conflicts_with = "stealth_cover_backend")]
    pub(crate) stealth_cover_dir: Option<PathBuf>,
    /// Splice everyone without the secret to this web server (plain HTTP), e.g.
    /// 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub(crate) stealth_cover_backend: Option<std::net::SocketAddr>,
    /// Use this secret path (16 to 128 characters of A-Z a-z 0-9 - . _ ~ /) instead of a
    /// generated one; the previous one keeps working for the grace period.
    #[arg(long, value_name = "PATH")]
    pub(crate) stealth_secret: Option<String>,
    /// Retire the current secret and make a new one at this start; the old one keeps working
    /// for the grace period.
    #[arg(long)]
    pub(crate) stealth_rotate_secret: bool,
    /// How many days a retired secret keeps working. Default: 14.
    #[arg(long, value_name = "DAYS")]
    pub(crate) stealth_secret_grace_days: Option<u64>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) enum ServiceCommand {
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
pub(crate) enum PeersCommand {
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
pub(crate) enum GroupCommand {
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
    /// Make a member an admin (admins only), or with --revoke a plain member again. Admins add,
    /// remove and rename; make another member one before you, the last admin, leave.
    Admin {
        /// The group's name or id.
        group: String,
        /// The member: a contact name, the name the group lists them under, or a peer id.
        member: String,
        /// Take their admin rights away instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Leave a group. Its last admin is refused while other members remain: make another
    /// member an admin first (`kolokol group admin`), or leave anyway with --force.
    Leave {
        /// The group's name or id.
        group: String,
        /// Leave even as the last admin; then nobody can add, remove or rename.
        #[arg(long)]
        force: bool,
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
pub(crate) enum ContactsCommand {
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
