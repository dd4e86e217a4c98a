//! The `kolokol` command. `node`, `relay` and `demo` run a node in this process; every other
//! command talks to the running daemon of the data directory over its control socket.
//!
//! `run` dispatches each command to a function of its own: in the module of its domain, or here
//! for the commands no other module owns (`id`, `invite`, `files`, `peers`, `outbox`,
//! `status`).
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

mod args;
mod backups;
mod chat;
mod client;
mod contacts;
mod demo;
mod doctor;
mod failure;
mod groups;
mod inbox;
mod output;
mod passphrases;
mod send;
mod service;
mod store;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser};
use kolokol_node::Multiaddr;
use kolokol_node::config::CONFIG_FILE;
use kolokol_node::transport;
use kolokol_node::{Config, FileConfig, LogFormat, Role, RunningNode};
use kolokol_protocol::control::{
    BundleInfo, FileTransfer, IdInfo, ImportResult, InviteInfo, MessageStatus, OutboxMessage,
    PeersInfo, Status, method,
};
use serde_json::json;

use crate::args::{
    Cli, Command, LogFormatArg, NetArgs, PeersCommand, ServiceCommand, TransportArg,
};
use crate::client::Client;
use crate::failure::{is_broken_pipe, json_error, report};

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

/// The default listen addresses of a relay: TCP and QUIC on the IPFS-customary port, on every
/// interface; the stealth listener (`transport::default_stealth_listen`) comes on top.
const RELAY_DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"];

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
            // clap's first line already says what is wrong ("error: unexpected argument
            // '--bogus' found"); its kind would only say it again.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
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
    let key_file = cli.key_file.as_deref();
    match &cli.command {
        Command::Node(net) => {
            let mut config = daemon_config(&dir, Role::Node, net, file);
            config.unlock = passphrases::unlock(&dir, key_file)?;
            run_daemon(config, cli.json).await
        }
        Command::Relay(net) => {
            let mut config = daemon_config(&dir, Role::Relay, net, file);
            config.unlock = passphrases::unlock(&dir, key_file)?;
            run_daemon(config, cli.json).await
        }
        Command::Init { encrypt } => store::init(&dir, *encrypt, key_file, cli.json),
        Command::Passphrase { new_key_file } => {
            store::change_passphrase(&dir, key_file, new_key_file.as_deref(), cli.json)
        }
        Command::Demo => demo::run(cli.json).await,
        Command::Doctor => doctor::doctor(&dir, cli.json).await,
        Command::Backup { file } => {
            backups::backup(&dir, file, key_file, cli.json).await?;
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
        Command::Id => identity(&dir, cli.json).await,
        Command::Invite => invite(&dir, cli.json).await,
        Command::Contacts(command) => contacts::contacts(&dir, key_file, command, cli.json).await,
        Command::Group(command) => groups::group(&dir, command, cli.json).await,
        Command::Send { name, file: Some(path), .. } => {
            send::send_file(&dir, name, path, cli.json).await
        }
        Command::Files { limit } => file_transfers(&dir, *limit, cli.json).await,
        Command::Send { name, text, file: None } => {
            let text = send::message_text(text)?;
            send::send(&dir, name, text, cli.json).await
        }
        Command::Inbox { follow: false, messages: false, .. } => {
            inbox::conversations(&dir, key_file, cli.json).await
        }
        Command::Inbox { follow, limit, peek, .. } => {
            inbox::inbox(&dir, key_file, *follow, *limit, !*peek, cli.json).await
        }
        Command::Chat { name } => {
            chat::run(&dir, name.clone()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Read { name, limit, full, peek } => {
            inbox::read_conversation(&dir, key_file, name, *limit, *full, *peek, cli.json).await
        }
        Command::Peers { action } => peers(&dir, action.as_ref(), cli.json).await,
        Command::Outbox { limit } => outbox(&dir, key_file, *limit, cli.json).await,
        Command::Status { message_id: Some(id) } => {
            message_status(&dir, key_file, id, cli.json).await
        }
        Command::Status { message_id: None } => {
            let status: Status = rpc(&dir, method::STATUS, json!({})).await?;
            show(cli.json, &status, output::status)
        }
    }
}

/// `kolokol id`: this node's peer id and device key.
async fn identity(dir: &std::path::Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let id: IdInfo = rpc(dir, method::ID, json!({})).await?;
    show(json_out, &id, |id| format!("peer id:    {}\ndevice key: {}", id.peer_id, id.device_key))
}

/// `kolokol invite`: the invite code others add us with, and a warning on stderr when it
/// carries no address to reach us at.
async fn invite(dir: &std::path::Path, json_out: bool) -> anyhow::Result<ExitCode> {
    let invite: InviteInfo = rpc(dir, method::INVITE, json!({})).await?;
    if !json_out && invite.addresses.is_empty() {
        eprintln!(
            "warning: this invite carries no addresses yet (no relay reservation, no external address); \
             contacts cannot reach you with it. Start the node with --bootstrap <relay address> and try again."
        );
    }
    show(json_out, &invite, |invite| invite.invite.clone())
}

/// `kolokol files`: the file transfers both ways, the newest first.
async fn file_transfers(
    dir: &std::path::Path,
    limit: u32,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let files: Vec<FileTransfer> = rpc(dir, method::FILES, json!({ "limit": limit })).await?;
    show(json_out, &files, |files| {
        if files.is_empty() {
            "no file transfers".into()
        } else {
            files.iter().map(output::file_transfer).collect::<Vec<_>>().join("\n")
        }
    })
}

/// `kolokol peers`: the connected and cached peers and how each is reached; `peers export`
/// writes a signed bootstrap bundle of them (to a file, or standard output), and `peers import`
/// hands one to the daemon.
async fn peers(
    dir: &std::path::Path,
    action: Option<&PeersCommand>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    match action {
        None => {
            let peers: PeersInfo = rpc(dir, method::PEERS, json!({})).await?;
            show(json_out, &peers, output::peers)
        }
        Some(PeersCommand::Export { file }) => {
            let info: BundleInfo = rpc(dir, method::PEERS_EXPORT, json!({})).await?;
            match file {
                Some(path) => {
                    std::fs::write(path, format!("{}\n", info.bundle))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    if json_out {
                        print_json(&info)?;
                    } else {
                        say!(
                            "wrote a bundle of {} to {}",
                            output::count(info.peers as u64, "peer", "peers"),
                            path.display()
                        )?;
                    }
                }
                None if json_out => print_json(&info)?,
                None => say!("{}", info.bundle)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(PeersCommand::Import { file }) => {
            let text = if file.as_os_str() == "-" {
                let mut buf = String::new();
                std::io::stdin().read_to_string(&mut buf).context("cannot read standard input")?;
                buf
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let result: ImportResult =
                rpc(dir, method::PEERS_IMPORT, json!({ "bundle": text })).await?;
            show(json_out, &result, |r| {
                format!(
                    "imported {} from a bundle signed by {}",
                    output::count(r.imported as u64, "peer", "peers"),
                    r.exporter
                )
            })
        }
    }
}

/// `kolokol outbox`: the sent messages and where each one is; read from the database when no
/// daemon runs.
async fn outbox(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    limit: u32,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let messages: Vec<OutboxMessage> =
        match rpc(dir, method::OUTBOX, json!({ "limit": limit })).await {
            Err(e) => offline(dir, key_file, e, json_out)?.outbox(limit)?,
            answer => answer?,
        };
    show(json_out, &messages, |messages| {
        if messages.is_empty() {
            "no sent messages".into()
        } else {
            messages.iter().map(output::outgoing).collect::<Vec<_>>().join("\n")
        }
    })
}

/// `kolokol status MESSAGE_ID`: the state history of one message; read from the database when
/// no daemon runs.
async fn message_status(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    id: &str,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let status: MessageStatus = match rpc(dir, method::MESSAGE, json!({ "id": id })).await {
        Err(e) => offline(dir, key_file, e, json_out)?.message(id)?,
        answer => answer?,
    };
    show(json_out, &status, output::message_status)
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
