//! `kolokol-bench-daemons`: delivery as users meet it. A relay and two user daemons run as
//! separate `kolokol` processes on 127.0.0.1; every message goes in through Alice's control
//! socket exactly as `kolokol send` sends it, and is timed to the `message` event on Bob's
//! subscription. Beside it, in the same run, the raw reference: one loopback TCP connection
//! carrying an envelope of the same size (4 KiB) and a one-byte ack.
//!
//! Figures: latency p50/p90/p99 (direct and relayed, 4 KiB and 64 KiB, one message in flight),
//! sustained throughput with 32 concurrent senders, CPU per message per process (from
//! `/proc/<pid>/stat`), RSS per process, mailbox deposit and fetch of 1 000 messages, and cold
//! start to a first relay reservation.
//!
//! Run (release builds of both binaries):
//! `cargo build --release -p kolokol-cli && cargo build --release -p kolokol-tests --bin
//! kolokol-bench-daemons && ./target/release/kolokol-bench-daemons [N]`. `kolokol` is built alone,
//! as users build it: built together with the tests crate its dependencies' features, and so its
//! symbols, differ, and its code is not laid out by `cli/symbol-order/kolokol.txt`.
//! The `kolokol` binary is taken from `KOLOKOL_BIN`, else from next to this one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kolokol_protocol::invite::Invite;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// A text that seals into exactly one 4 KiB envelope, the size of every short text
/// (`envelope::TEXT_BUCKET`).
const SMALL: usize = 700;

/// A text that seals into exactly one 65 535-byte envelope.
const LARGE: usize = 60_000;

/// Concurrent senders in the sustained run, each on its own control connection.
const SENDERS: usize = 32;

/// How long any one expected thing may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let warmup = (n / 10).max(10);
    let bin = kolokol_binary();
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!("kolokol-bench-daemons: {} messages per latency run, binary {}", n, bin.display());

    let relay = Daemon::start(
        &bin,
        &dir.path().join("relay"),
        &["relay", "--listen", "/ip4/127.0.0.1/tcp/0"],
        &[],
    )
    .await;
    let relay_addr = relay.bootstrap_address().await;

    // Direct: Alice and Bob listen on 127.0.0.1 and know each other only by that address.
    let listen = ["--listen", "/ip4/127.0.0.1/tcp/0"];
    let alice =
        Daemon::start(&bin, &dir.path().join("alice"), &["node", "--no-mdns"], &listen).await;
    let bob = Daemon::start(&bin, &dir.path().join("bob"), &["node", "--no-mdns"], &listen).await;
    let alice_at = alice.listen_address().await;
    let bob_at = bob.listen_address().await;
    alice.add_contact("bob", &bob, &bob_at).await;
    bob.add_contact("alice", &alice, &alice_at).await;
    let processes = [("relay", &relay), ("alice", &alice), ("bob", &bob)];

    let tcp = raw_tcp(n, warmup).await;
    report("raw TCP, 4 KiB envelope + 1-byte ack, 1 in flight", &tcp);

    for (label, size) in [("4 KiB", SMALL), ("64 KiB", LARGE)] {
        let runs = if size == LARGE { (n / 10).max(50) } else { n };
        let before = cpu(&processes);
        let samples = latency(&alice, &bob, "bob", &"k".repeat(size), runs, warmup).await;
        report(&format!("direct, {label}, 1 in flight"), &samples);
        cpu_report(&before, &cpu(&processes), runs + warmup);
        if size == SMALL {
            ratio("direct / raw TCP", &samples, &tcp);
        }
    }

    let before = cpu(&processes);
    let (count, elapsed) = sustained(&alice, &bob, "bob", &"k".repeat(SMALL), n * 2).await;
    println!(
        "direct, 4 KiB, {SENDERS} concurrent senders: {count} messages in {:.2} s = {:.0} msg/s",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    cpu_report(&before, &cpu(&processes), count);
    rss_report(&processes);

    // Relayed: Carol and Dave listen nowhere and know each other by their circuits.
    let bootstrap = ["--bootstrap", relay_addr.as_str()];
    let carol =
        Daemon::start(&bin, &dir.path().join("carol"), &["node", "--no-mdns"], &bootstrap).await;
    let dave =
        Daemon::start(&bin, &dir.path().join("dave"), &["node", "--no-mdns"], &bootstrap).await;
    carol.wait_for_reservation().await;
    dave.wait_for_reservation().await;
    let circuit = format!("{relay_addr}/p2p-circuit");
    carol.add_contact("dave", &dave, &circuit).await;
    dave.add_contact("carol", &carol, &circuit).await;
    let relayed_processes = [("relay", &relay), ("carol", &carol), ("dave", &dave)];
    for (label, size) in [("4 KiB", SMALL), ("64 KiB", LARGE)] {
        let runs = if size == LARGE { (n / 10).max(50) } else { n };
        let before = cpu(&relayed_processes);
        let samples = latency(&carol, &dave, "dave", &"k".repeat(size), runs, warmup).await;
        report(&format!("relayed, {label}, 1 in flight"), &samples);
        cpu_report(&before, &cpu(&relayed_processes), runs + warmup);
        if size == SMALL {
            ratio("relayed / raw TCP", &samples, &tcp);
        }
    }
    let via = carol.call("peers", json!({})).await;
    let links: Vec<String> = via["connected"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} via {}", short(c["peer_id"].as_str().unwrap_or("")), c["via"]))
        .collect();
    println!("carol's connections after the relayed runs: {}", links.join(", "));

    // Mailbox: Dave goes away; Carol's messages wait on the relay; Dave comes back for them.
    dave.stop();
    let count = 1000;
    let started = Instant::now();
    let stored = send_many(&carol, "dave", &"k".repeat(SMALL), count, SENDERS).await;
    let deposit = started.elapsed();
    println!(
        "mailbox deposit of {count} messages ({stored} stored): {:.2} s",
        deposit.as_secs_f64()
    );
    let started = Instant::now();
    let dave =
        Daemon::start(&bin, &dir.path().join("dave"), &["node", "--no-mdns"], &bootstrap).await;
    let mut events = dave.subscribe().await;
    let mut received = 0;
    while received < stored {
        match tokio::time::timeout(PATIENCE, events.recv()).await {
            Ok(Some((Kind::Message, _, _))) => received += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    println!(
        "mailbox fetch: {received} of {stored} messages {:.2} s after Dave's start",
        started.elapsed().as_secs_f64()
    );

    // Cold start: process start to the first relay reservation.
    let mut starts = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        let eve = Daemon::start(
            &bin,
            &dir.path().join(format!("eve{i}")),
            &["node", "--no-mdns"],
            &bootstrap,
        )
        .await;
        eve.wait_for_reservation().await;
        starts.push(started.elapsed());
        eve.stop();
    }
    starts.sort();
    println!(
        "cold start to first relay reservation: median {:.0} ms (min {:.0}, max {:.0}, 5 runs)",
        ms(starts[2]),
        ms(starts[0]),
        ms(starts[4])
    );
    for d in [&alice, &bob, &carol, &dave, &relay] {
        d.stop();
    }
}

/// The environment variable that runs the user nodes on encrypted stores.
const ENCRYPT_VARIABLE: &str = "KOLOKOL_BENCH_ENCRYPT";

/// Makes `dir` a data directory with an encrypted store, its passphrase in the file
/// `passphrase`.
fn encrypt(bin: &Path, dir: &Path, passphrase: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new(bin)
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "error")
            .env("KOLOKOL_NEW_PASSPHRASE_FILE", passphrase)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("kolokol runs");
        assert!(status.success(), "kolokol {args:?} failed");
    };
    std::fs::write(passphrase, "a benchmark passphrase\n").expect("passphrase file");
    run(&["init", "--encrypt"]);
}

fn kolokol_binary() -> PathBuf {
    if let Ok(path) = std::env::var("KOLOKOL_BIN") {
        return path.into();
    }
    let me = std::env::current_exe().expect("own path");
    let beside = me.with_file_name("kolokol");
    assert!(
        beside.exists(),
        "no kolokol binary at {} (build it: cargo build --release -p kolokol-cli, or set KOLOKOL_BIN)",
        beside.display()
    );
    beside
}

/// A `kolokol` process and its control socket.
struct Daemon {
    child: std::cell::RefCell<Child>,
    dir: PathBuf,
    name: String,
}

impl Daemon {
    /// Starts `kolokol --data-dir DIR ARGS EXTRA` and waits until its control socket answers.
    /// With `KOLOKOL_BENCH_ENCRYPT=1` in the environment, a user node runs on an encrypted
    /// store (`kolokol init --encrypt`, the passphrase from `KOLOKOL_PASSPHRASE_FILE`), to
    /// measure what the encryption costs.
    async fn start(bin: &Path, dir: &Path, args: &[&str], extra: &[&str]) -> Self {
        std::fs::create_dir_all(dir).expect("data dir");
        let mut command = Command::new(bin);
        if args.first() == Some(&"node") && std::env::var_os(ENCRYPT_VARIABLE).is_some() {
            let passphrase = dir.with_extension("passphrase");
            if !passphrase.exists() {
                encrypt(bin, dir, &passphrase);
            }
            command.env("KOLOKOL_PASSPHRASE_FILE", &passphrase);
        }
        let log = std::fs::File::create(dir.join("daemon.log")).expect("log file");
        let child = command
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("kolokol starts");
        let daemon = Self {
            child: std::cell::RefCell::new(child),
            dir: dir.to_owned(),
            name: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let deadline = Instant::now() + PATIENCE;
        while UnixStream::connect(daemon.socket()).await.is_err() {
            assert!(Instant::now() < deadline, "{} did not open its control socket", daemon.name);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        daemon
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(kolokol_node::data_dir::CONTROL_SOCKET)
    }

    fn pid(&self) -> u32 {
        self.child.borrow().id()
    }

    /// Stops the process (SIGTERM, then waits).
    fn stop(&self) {
        let mut child = self.child.borrow_mut();
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }

    async fn connect(&self) -> Rpc {
        Rpc::connect(&self.socket()).await
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        self.connect().await.call(method, params).await
    }

    /// A relay's own address with its peer id, to bootstrap from.
    async fn bootstrap_address(&self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.call("status", json!({})).await;
            if let Some(a) = status["external_addresses"].as_array().and_then(|a| a.first()) {
                return format!(
                    "{}/p2p/{}",
                    a.as_str().unwrap_or(""),
                    status["peer_id"].as_str().unwrap_or("")
                );
            }
            assert!(Instant::now() < deadline, "the relay has no external address");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// This user node's TCP listen address.
    async fn listen_address(&self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.call("status", json!({})).await;
            if let Some(a) = status["listen_addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|a| a.contains("/tcp/") && !a.contains("p2p-circuit"))
            {
                return a.to_owned();
            }
            assert!(Instant::now() < deadline, "{} is not listening", self.name);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn wait_for_reservation(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.call("status", json!({})).await;
            if status["relay_reservations"].as_array().is_some_and(|r| !r.is_empty()) {
                return;
            }
            assert!(Instant::now() < deadline, "{} got no reservation", self.name);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Adds `whose` as contact `name`, reachable at `address` only: its own invite (with its
    /// mailbox address, so deposits go to its version 2 mailbox through couriers, as between
    /// users) with its addresses replaced, so the benchmark decides which path messages take.
    async fn add_contact(&self, name: &str, whose: &Daemon, address: &str) {
        let made = whose.call("invite", json!({})).await;
        let text = made.get("invite").and_then(Value::as_str).expect("an invite");
        let now = kolokol_node::clock::unix_secs();
        let (mut invite, keys, _) = Invite::from_text_with_keys(text, now).expect("invite");
        let address: kolokol_node::Multiaddr = address.parse().expect("multiaddr");
        invite.addresses = vec![address.to_vec()];
        let keys = keys.expect("a version 2 invite, with the mailbox address");
        let added = self
            .call(
                "contacts.add",
                json!({ "name": name, "invite": invite.to_text_v2(&keys).expect("text") }),
            )
            .await;
        assert!(added.get("peer_id").is_some(), "contact not added: {added}");
    }

    /// A subscription: every event, as (kind, message id, state), with its arrival time.
    async fn subscribe(&self) -> mpsc::Receiver<(Kind, String, Instant)> {
        let mut rpc = self.connect().await;
        rpc.call("subscribe", json!({})).await;
        let (tx, rx) = mpsc::channel(65_536);
        tokio::spawn(async move {
            loop {
                let Some(line) = rpc.line().await else { return };
                let at = Instant::now();
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                let event = &v["params"];
                let kind = match event["type"].as_str() {
                    Some("message") => Kind::Message,
                    Some("state") => Kind::State(event["state"].as_str().unwrap_or("").to_owned()),
                    _ => Kind::Other,
                };
                let id = event["id"].as_str().unwrap_or("").to_owned();
                if tx.send((kind, id, at)).await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.borrow_mut().kill();
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Message,
    State(String),
    Other,
}

/// A JSON-RPC connection to a control socket.
struct Rpc {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next: u64,
}

impl Rpc {
    async fn connect(socket: &Path) -> Self {
        let stream = UnixStream::connect(socket).await.expect("control socket");
        let (read, writer) = stream.into_split();
        Self { reader: BufReader::new(read), writer, next: 1 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await.expect("write");
        loop {
            let line = self.line().await.expect("the daemon answers");
            let v: Value = serde_json::from_str(&line).expect("JSON");
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method} failed: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    }
}

/// One message in flight: each is sent through `from`'s socket and timed to its `message`
/// event on `to`'s subscription.
async fn latency(
    from: &Daemon,
    to: &Daemon,
    name: &str,
    text: &str,
    n: usize,
    warmup: usize,
) -> Vec<Duration> {
    let mut events = to.subscribe().await;
    let mut rpc = from.connect().await;
    let mut early: HashMap<String, Instant> = HashMap::new();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + warmup {
        let start = Instant::now();
        let sent = rpc.call("send", json!({ "to": name, "text": text })).await;
        let id = sent["id"].as_str().expect("an id").to_owned();
        assert_eq!(sent["state"], "delivered", "message {i} not delivered: {sent}");
        let arrived = match early.remove(&id) {
            Some(at) => at,
            None => loop {
                match tokio::time::timeout(PATIENCE, events.recv()).await {
                    Ok(Some((Kind::Message, got, at))) if got == id => break at,
                    Ok(Some((Kind::Message, other, at))) => {
                        early.insert(other, at);
                    }
                    Ok(Some(_)) => {}
                    _ => panic!("message {i} did not arrive"),
                }
            },
        };
        if i >= warmup {
            samples.push(arrived.saturating_duration_since(start));
        }
    }
    samples.sort();
    samples
}

/// [`SENDERS`] connections sending at once; until `to` has received `n` messages.
async fn sustained(
    from: &Daemon,
    to: &Daemon,
    name: &str,
    text: &str,
    n: usize,
) -> (usize, Duration) {
    let mut events = to.subscribe().await;
    let start = Instant::now();
    let sender = {
        let socket = from.socket();
        let (name, text) = (name.to_owned(), text.to_owned());
        tokio::spawn(async move {
            let mut senders = tokio::task::JoinSet::new();
            for s in 0..SENDERS {
                let count = n / SENDERS + usize::from(s < n % SENDERS);
                let (socket, name, text) = (socket.clone(), name.clone(), text.clone());
                senders.spawn(async move {
                    let mut rpc = Rpc::connect(&socket).await;
                    for _ in 0..count {
                        rpc.call("send", json!({ "to": name, "text": text })).await;
                    }
                });
            }
            while senders.join_next().await.is_some() {}
        })
    };
    let mut received = 0;
    while received < n {
        match tokio::time::timeout(PATIENCE, events.recv()).await {
            Ok(Some((Kind::Message, _, _))) => received += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let elapsed = start.elapsed();
    let _ = sender.await;
    (received, elapsed)
}

/// Sends `n` messages over `senders` connections at once; returns how many ended `stored`.
async fn send_many(from: &Daemon, name: &str, text: &str, n: usize, senders: usize) -> usize {
    let socket = from.socket();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..senders {
        let count = n / senders + usize::from(s < n % senders);
        let (socket, name, text) = (socket.clone(), name.to_owned(), text.to_owned());
        tasks.spawn(async move {
            let mut rpc = Rpc::connect(&socket).await;
            let mut stored = 0;
            for _ in 0..count {
                let sent = rpc.call("send", json!({ "to": name, "text": text })).await;
                if sent["state"] == "stored" {
                    stored += 1;
                }
            }
            stored
        });
    }
    let mut stored = 0;
    while let Some(Ok(n)) = tasks.join_next().await {
        stored += n;
    }
    stored
}

/// The floor: an envelope of the same size (4 KiB) over one loopback TCP connection, answered
/// by one byte.
async fn raw_tcp(n: usize, warmup: usize) -> Vec<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; kolokol_protocol::envelope::TEXT_BUCKET];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&[0]).await.is_err() {
                break;
            }
        }
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let frame = vec![7u8; kolokol_protocol::envelope::TEXT_BUCKET];
    let mut ack = [0u8; 1];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + warmup {
        let start = Instant::now();
        c.write_all(&frame).await.expect("write");
        c.read_exact(&mut ack).await.expect("read");
        if i >= warmup {
            samples.push(start.elapsed());
        }
    }
    drop(c);
    let _ = server.await;
    samples.sort();
    samples
}

/// CPU time (user + system) of each process so far, from `/proc/<pid>/stat`.
fn cpu(processes: &[(&str, &Daemon)]) -> Vec<(String, Duration)> {
    // Clock ticks per second (USER_HZ): 100 on every Linux this runs on.
    const TICKS: u64 = 100;
    processes
        .iter()
        .map(|(name, d)| {
            let stat =
                std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap_or_default();
            // Fields after the command name (which is in parentheses and may hold spaces).
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks: u64 =
                [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
            (name.to_string(), Duration::from_millis(ticks * 1000 / TICKS))
        })
        .collect()
}

fn cpu_report(before: &[(String, Duration)], after: &[(String, Duration)], messages: usize) {
    let mut parts = Vec::new();
    let mut total = Duration::ZERO;
    for ((name, b), (_, a)) in before.iter().zip(after) {
        let used = a.saturating_sub(*b);
        total += used;
        parts.push(format!("{name} {:.3}", ms(used) / messages as f64));
    }
    println!(
        "  CPU per message: {:.3} ms in all ({}; ms, 10 ms clock ticks over {messages} messages)",
        ms(total) / messages as f64,
        parts.join(", ")
    );
}

fn rss_report(processes: &[(&str, &Daemon)]) {
    let parts: Vec<String> = processes
        .iter()
        .map(|(name, d)| {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap_or_default();
            let field = |key: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
                    .map_or(0.0, |kb| kb / 1024.0)
            };
            // The resident size counts the pages of the binary's code it has mapped, which
            // every `kolokol` process maps from the same file and shares; the anonymous part
            // (heap, stacks, SQLite's cache) is what this process alone costs. The proportional
            // size (PSS) charges each shared page to its processes in equal parts.
            let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", d.pid()))
                .unwrap_or_default();
            let pss = rollup
                .lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0);
            format!(
                "{name} {:.1} MB (peak {:.1}; anonymous {:.1}, file-backed {:.1}, proportional {pss:.1})",
                field("VmRSS:"),
                field("VmHWM:"),
                field("RssAnon:"),
                field("RssFile:")
            )
        })
        .collect();
    println!("RSS after the sustained run: {}", parts.join(", "));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn short(peer: &str) -> &str {
    &peer[peer.len().saturating_sub(6)..]
}

fn p(sorted: &[Duration], pct: usize) -> Duration {
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}

fn ratio(what: &str, samples: &[Duration], tcp: &[Duration]) {
    println!("  {what}: p50 {:.1}x", p(samples, 50).as_secs_f64() / p(tcp, 50).as_secs_f64());
}

fn report(what: &str, samples: &[Duration]) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what}: n={} p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs",
        samples.len(),
        us(p(samples, 50)),
        us(p(samples, 90)),
        us(p(samples, 99))
    );
}
