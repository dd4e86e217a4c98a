//! The `kolokol` binary as a user runs it: a relay and two node daemons as real processes, each
//! with its own data dir, driven by the CLI commands of the README walk-through, plus the
//! mistakes a user makes.
//!
//! These live here rather than in the `tests` crate because they need the built binary, which
//! cargo provides only to the binary's own package (`CARGO_BIN_EXE_kolokol`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn kolokol(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kolokol"));
    c.arg("--data-dir").arg(dir).env_remove("KOLOKOL_HOME").env("RUST_LOG", "warn");
    c
}

/// A daemon process, killed when dropped.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `kolokol <args>` and waits for its "running" line (the control socket is bound
    /// before that line is printed).
    fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_until(dir, args, |l| l.contains(" running, peer id "))
    }

    /// Starts `kolokol <args>` and waits for the first line that satisfies `ready`.
    fn start_until(dir: &Path, args: &[&str], ready: impl Fn(&str) -> bool) -> Self {
        Self::start_with(kolokol(dir), dir, args, ready)
    }

    /// Starts `command` (`kolokol` on `dir`, with its environment) with `args` and waits for
    /// the first line that satisfies `ready`.
    fn start_with(
        mut command: Command,
        dir: &Path,
        args: &[&str],
        ready: impl Fn(&str) -> bool,
    ) -> Self {
        assert_no_mdns(dir, args);
        let mut child = command
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Self { child, lines };
        daemon.wait_line(ready);
        daemon
    }

    fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let line =
                self.lines.recv_timeout(TIMEOUT).expect("the daemon printed the line in time");
            if pred(&line) {
                return line;
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails unless a `node` or `relay` daemon about to start in `dir` runs without mDNS, by the
/// flag or by its config file: mDNS would multicast on every network interface of the machine
/// running the tests, and test traffic stays on 127.0.0.1. (The mDNS tests, in `lab.rs`, run
/// their daemons in network namespaces of their own.)
#[track_caller]
fn assert_no_mdns(dir: &Path, args: &[&str]) {
    let daemon = args.iter().any(|a| *a == "node" || *a == "relay");
    let by_file = std::fs::read_to_string(dir.join("kolokol.toml"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "mdns = false"));
    assert!(!daemon || args.contains(&"--no-mdns") || by_file, "{args:?} would run mDNS");
}

fn run(dir: &Path, args: &[&str]) -> Output {
    kolokol(dir).args(args).output().expect("the binary runs")
}

/// Runs the binary with `input` on its standard input.
fn run_with_input(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = kolokol(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).expect("written");
    }
    child.wait_with_output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn check_ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status.code(), stderr(o));
    stdout(o)
}

/// Fails with exit `code` and exactly one line on stderr that contains `needle`.
#[track_caller]
fn check_error(o: &Output, code: i32, needle: &str) {
    assert_eq!(o.status.code(), Some(code), "stdout: {} stderr: {}", stdout(o), stderr(o));
    let err = stderr(o);
    if code == 1 {
        assert_eq!(err.trim_end().lines().count(), 1, "one line, got: {err}");
    }
    assert!(err.contains(needle), "stderr {err:?} does not mention {needle:?}");
}

/// Fails with exit `code` and, on stderr, exactly one JSON error object whose stable `code`
/// is `name`; returns it.
#[track_caller]
fn check_json_error(o: &Output, code: i32, name: &str) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(code), "stdout: {} stderr: {}", stdout(o), stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line, got: {err}");
    let value: serde_json::Value =
        serde_json::from_str(&err).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"));
    assert_eq!(value["error"]["code"], name, "{value}");
    assert!(value["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
    value
}

/// One HTTP/1.1 request, written as is, and the whole response (the server closes after it).
fn http(addr: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the metrics port accepts");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    stream.write_all(request.as_bytes()).expect("request written");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    response
}

/// The value of one sample line in a metrics body.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in {body}"))
}

/// The request lines of the marked example block in docs/USAGE.md.
fn documented_control_requests() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/USAGE.md");
    let usage = std::fs::read_to_string(&path).expect("docs/USAGE.md is readable");
    let mut lines = usage.lines().skip_while(|l| !l.starts_with("<!-- control-api-examples"));
    assert!(lines.next().is_some(), "docs/USAGE.md has the control-api-examples marker");
    assert_eq!(lines.next(), Some("```jsonl"), "the marker is followed by a jsonl block");
    let requests: Vec<String> = lines.take_while(|l| *l != "```").map(str::to_owned).collect();
    assert!(requests.len() >= 5, "{requests:?}");
    requests
}

/// Sends each documented request over the control socket of `dir`, as a bot would, and checks
/// that each gets its own answer with a `result`, whatever notifications come in between.
fn run_documented_requests(dir: &Path) {
    use std::io::Write;
    let stream = std::os::unix::net::UnixStream::connect(dir.join("control.sock"))
        .expect("the control socket accepts");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    for request in documented_control_requests() {
        let sent: serde_json::Value = serde_json::from_str(&request)
            .unwrap_or_else(|e| panic!("documented request is not JSON ({e}): {request}"));
        writer.write_all(format!("{request}\n").as_bytes()).expect("request written");
        let response = loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("the daemon answers in time");
            assert!(!line.is_empty(), "the daemon closed the connection after {request}");
            let value: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
            if value.get("method").is_none() {
                break value;
            }
        };
        assert_eq!(response["id"], sent["id"], "{request} -> {response}");
        assert!(response.get("error").is_none(), "{request} -> {response}");
        assert!(response.get("result").is_some(), "{request} -> {response}");
    }
}

#[test]
fn the_readme_walk_through_delivers_hello() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, a, b) = (tmp.path().join("relay"), tmp.path().join("alice"), tmp.path().join("bob"));
    let mut relay = Daemon::start(
        &r,
        &["relay", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--metrics", "127.0.0.1:0"],
    );
    let relay_metrics = relay.wait_line(|l| l.starts_with("metrics: "));
    let relay_metrics =
        relay_metrics.trim_start_matches("metrics: http://").replace("/metrics", "");
    let line = relay.wait_line(|l| l.trim_start().starts_with("kolokol node --bootstrap "));
    let bootstrap = line.trim().trim_start_matches("kolokol node --bootstrap ").to_owned();
    // Alice is configured by her kolokol.toml alone; Bob by flags, and prints JSON.
    std::fs::create_dir_all(&a).expect("alice's dir");
    std::fs::write(
        a.join("kolokol.toml"),
        format!(
            "# Alice's node\nbootstrap = [\"{bootstrap}\"]\nmetrics = \"127.0.0.1:0\"\nlog_format = \"json\"\nmdns = false\n"
        ),
    )
    .expect("config written");
    let mut alice = Daemon::start(&a, &["node"]);
    let alice_metrics = alice.wait_line(|l| l.starts_with("metrics: "));
    let alice_metrics =
        alice_metrics.trim_start_matches("metrics: http://").replace("/metrics", "");
    let bob_args = ["--json", "node", "--no-mdns", "--bootstrap", &bootstrap];
    let _bob = Daemon::start_until(&b, &bob_args, |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["role"] == "node")
    });

    let invite = check_ok(&run(&b, &["invite"]));
    let invite = invite.trim();
    assert!(invite.starts_with("kolokol1"), "{invite}");
    check_ok(&run(&a, &["contacts", "add", "bob", invite]));
    let alice_invite = check_ok(&run(&a, &["invite"]));
    check_ok(&run(&b, &["contacts", "add", "alice", alice_invite.trim()]));
    assert!(check_ok(&run(&a, &["contacts", "list"])).starts_with("bob\t"));

    // Both sides see the same safety number, and it is not shown for a stranger.
    let json_of = |dir: &Path, args: &[&str]| -> serde_json::Value {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        serde_json::from_str(&check_ok(&run(dir, &full))).expect("JSON")
    };
    let alice_sees = json_of(&a, &["contacts", "verify", "bob"]);
    let bob_sees = json_of(&b, &["contacts", "verify", "alice"]);
    let number = alice_sees["safety_number"].as_str().expect("a safety number");
    assert_eq!(number.split(' ').count(), 12, "{number}");
    assert!(number.split(' ').all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit())));
    assert_eq!(Some(number), bob_sees["safety_number"].as_str());
    let text = check_ok(&run(&a, &["contacts", "verify", "bob"]));
    assert!(text.contains(&number[..23]), "{text}");
    check_error(&run(&a, &["contacts", "verify", "carol"]), 1, "no contact named \"carol\"");

    let sent = check_ok(&run(&a, &["send", "bob", "hello"]));
    assert!(sent.trim().ends_with(" delivered"), "{sent}");
    let inbox = check_ok(&run(&b, &["inbox", "--messages", "--peek"]));
    assert!(inbox.contains("alice: hello"), "{inbox}");
    // The conversation list says one unread from alice; reading the conversation shows it,
    // with its id, and marks it read.
    let chats = check_ok(&run(&b, &["inbox"]));
    assert!(
        chats.starts_with("alice") && chats.contains(" 1 unread") && chats.contains("] hello"),
        "{chats}"
    );
    let id = sent.split_whitespace().next().expect("an id");
    let read = check_ok(&run(&b, &["read", "ALICE"]));
    assert!(read.starts_with("conversation with alice (12D3KooW"), "{read}");
    assert!(read.contains(&format!("* alice    {}  hello", &id[..8])), "{read}");
    assert!(check_ok(&run(&b, &["inbox"])).contains(" 0 unread"));
    let chat: serde_json::Value =
        serde_json::from_str(&check_ok(&run(&b, &["--json", "read", "alice"]))).expect("JSON");
    assert_eq!(chat["entries"][0]["id"], id, "{chat}");
    assert_eq!(chat["entries"][0]["seq"], 1, "{chat}");
    assert!(chat["entries"][0]["read_at_ms"].is_u64(), "{chat}");
    let mine = check_ok(&run(&a, &["read", "bob"]));
    assert!(mine.contains(&format!("you      {}  hello  (✓", &id[..8])), "{mine}");
    // Unquoted words are one message.
    check_ok(&run(&a, &["send", "bob", "hello", "big", "world"]));
    assert!(check_ok(&run(&b, &["inbox", "--messages"])).contains("alice: hello big world\n"));
    let id = sent.split_whitespace().next().expect("an id");
    let outbox = check_ok(&run(&a, &["outbox"]));
    assert!(outbox.contains(id) && outbox.contains("to bob: hello"), "{outbox}");
    // A reader that goes away (`kolokol outbox | head`) ends a command quietly: the read end
    // is closed before the command has connected to its daemon, so its first write fails.
    let mut early = kolokol(&a)
        .args(["outbox"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    drop(early.stdout.take());
    let early = early.wait_with_output().expect("the binary runs");
    assert!(early.status.success(), "exit {:?}: {}", early.status.code(), stderr(&early));
    assert!(!stderr(&early).contains("panicked"), "{}", stderr(&early));
    let piped = run_with_input(&a, &["send", "bob", "-"], b"from a pipe\n");
    assert!(check_ok(&piped).trim().ends_with(" delivered"));
    assert!(check_ok(&run(&b, &["inbox", "--messages"])).contains("alice: from a pipe\n"));
    // A text too long for one envelope (and for one command-line argument) goes in chunks.
    let long = format!("{}the end", "a long letter. ".repeat(20_000));
    let piped = run_with_input(&a, &["send", "bob", "-"], long.as_bytes());
    assert!(check_ok(&piped).trim().ends_with(" delivered"));
    let inbox = check_ok(&run(&b, &["--json", "inbox", "--messages", "--limit", "1"]));
    assert!(inbox.contains(&long), "the long text arrived whole");

    // A sender cannot forge inbox lines or drive the terminal: text output shows line breaks
    // and escapes visibly, --json keeps the exact text.
    let forged = "ok\n[2026-01-01 00:00:00] carol: pay me\u{1b}[2J\u{9b}";
    check_ok(&run(&a, &["send", "bob", forged]));
    let inbox = check_ok(&run(&b, &["inbox", "--messages"]));
    assert!(
        inbox.contains("alice: ok⏎ [2026-01-01 00:00:00] carol: pay me\\u{1b}[2J\\u{9b}\n"),
        "{inbox}"
    );
    assert!(!inbox.lines().any(|l| l.starts_with("[2026-01-01")), "{inbox}");
    assert!(!inbox.contains('\u{1b}') && !inbox.contains('\u{9b}'), "{inbox}");
    let outbox = check_ok(&run(&a, &["outbox"]));
    assert!(outbox.contains("to bob: ok⏎ [2026-01-01"), "{outbox}");
    assert!(!outbox.contains('\u{1b}'), "{outbox}");
    let exact: serde_json::Value =
        serde_json::from_str(&check_ok(&run(&b, &["--json", "inbox", "--messages"])))
            .expect("JSON");
    assert!(exact.as_array().expect("a list").iter().any(|m| m["text"] == forged), "{exact}");

    // Metrics: Alice's own gauges, and the relay's libp2p metrics.
    let body = http(&alice_metrics, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    // Bob's `inbox` marked what it showed read, so some may already be `read`.
    let acknowledged = sample(&body, "kolokol_messages{state=\"sent\"}")
        + sample(&body, "kolokol_messages{state=\"delivered\"}")
        + sample(&body, "kolokol_messages{state=\"read\"}");
    assert_eq!(acknowledged, 5, "{body}");
    assert_eq!(sample(&body, "kolokol_relay_reservations"), 1, "{body}");
    assert!(sample(&body, "kolokol_connected_peers") >= 1, "{body}");
    let body = http(&relay_metrics, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(body.contains("libp2p_swarm_connections_established_total"), "{body}");
    assert!(body.contains("libp2p_relay"), "{body}");
    assert!(http(&relay_metrics, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(http(&relay_metrics, "DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(16 * 1024));
    assert!(http(&relay_metrics, &huge).starts_with("HTTP/1.1 431 "));

    run_documented_requests(&a);

    let history = check_ok(&run(&a, &["status", id]));
    assert!(history.contains("queued") && history.contains("sent"), "{history}");
    check_error(&run(&a, &["status", "0123xyz"]), 1, "no message has the id");
    // An id may be abbreviated to a unique start of at least 4 digits, in any case.
    let short = check_ok(&run(&a, &["status", &id[..8].to_uppercase()]));
    assert!(short.starts_with(&format!("message {id} ")), "{short}");
    check_json_error(&run(&a, &["--json", "status", "abc"]), 1, "unknown_message");

    // The secrets and the socket are the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    for f in ["identity.key", "control.sock", "kolokol.db"] {
        let mode = std::fs::metadata(a.join(f)).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f} has mode {mode:o}");
    }

    // --json output parses, for the commands a script uses most.
    for args in [
        &["status"][..],
        &["id"],
        &["invite"],
        &["inbox"],
        &["contacts", "list"],
        &["contacts", "verify", "bob"],
        &["outbox"],
        &["status", id],
        &["send", "bob", "in JSON"],
        &["peers"],
        &["peers", "export"],
    ] {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let out = check_ok(&run(&a, &full));
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("kolokol {args:?} --json is not JSON ({e}): {out}"));
    }

    // The doctor runs every check; which pass depends on timing (a single relay is only a
    // warning), but the daemon, identity and bootstrap checks must pass and it must be JSON.
    let doctor = run(&a, &["--json", "doctor"]);
    assert!(matches!(doctor.status.code(), Some(0 | 1)), "{}", stderr(&doctor));
    let report: serde_json::Value = serde_json::from_str(&stdout(&doctor)).expect("JSON");
    let checks = report["checks"].as_array().expect("checks");
    for (i, name) in ["daemon", "identity", "listen addresses", "bootstrap"].iter().enumerate() {
        assert_eq!(checks[i]["name"], *name, "{report}");
        assert_eq!(checks[i]["status"], "ok", "{report}");
    }
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    for name in [
        "reachability",
        "relay reservations",
        "presence record",
        "mailbox replicas",
        "mailbox round trip",
    ] {
        assert!(names.contains(&name), "doctor has no {name:?} check: {report}");
    }
    // A healthy standalone relay passes: it needs no bootstrap peer, and that no other DHT
    // server holds its record yet is only a warning.
    let relay_doctor = check_ok(&run(&r, &["doctor"]));
    assert!(relay_doctor.contains("[ok]   bootstrap"), "{relay_doctor}");
    assert!(relay_doctor.contains("[warn] presence record"), "{relay_doctor}");
    assert!(!relay_doctor.contains("[FAIL]"), "{relay_doctor}");
    assert!(check_ok(&run(&a, &["peers"])).contains("relay"), "the relay is a cached peer");
    let bundle = check_ok(&run(&a, &["peers", "export"]));
    let imported = check_ok(&run(
        &b,
        &["peers", "import", &{
            let path = tmp.path().join("bundle.txt");
            std::fs::write(&path, &bundle).expect("write bundle");
            path.to_string_lossy().into_owned()
        }],
    ));
    assert!(imported.starts_with("imported 1 peer from a bundle signed by "), "{imported}");
    check_error(&run(&b, &["peers", "import", "/nonexistent/bundle"]), 1, "cannot read");

    // A file goes too: `send --file` waits until Bob's node has it whole (the progress bar is
    // drawn only on a terminal), and Bob's node saves it in his download directory under its
    // own name, with a line in his inbox.
    let file = tmp.path().join("notes.bin");
    let bytes: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
    std::fs::write(&file, &bytes).expect("file written");
    let file_arg = file.to_str().expect("a UTF-8 path");
    let sent = json_of(&a, &["send", "bob", "--file", file_arg]);
    assert_eq!(sent["state"], "delivered", "{sent}");
    assert_eq!(sent["done"], bytes.len(), "{sent}");
    let listed = json_of(&b, &["files"]);
    let saved = listed[0]["path"].as_str().expect("a saved path");
    assert_eq!(Path::new(saved), b.join("downloads").join("notes.bin"));
    assert!(std::fs::read(saved).expect("the saved file") == bytes, "the file arrived changed");
    let listing = check_ok(&run(&b, &["files"]));
    assert!(listing.contains("from alice  notes.bin") && listing.contains("received"), "{listing}");
    assert!(check_ok(&run(&b, &["inbox", "--messages", "--peek"])).contains("file notes.bin"));
    let shown = check_ok(&run(&a, &["send", "bob", "--file", file_arg]));
    assert!(shown.ends_with(&format!(" delivered ({} bytes)\n", bytes.len())), "{shown}");
    check_error(&run(&a, &["send", "bob", "--file", "/nonexistent/notes"]), 1, "cannot read");
    check_error(&run(&a, &["send", "nobody", "--file", file_arg]), 1, "no contact named");

    // The mistakes of a new user, each one line and the documented exit code.
    check_error(&run(&a, &["contacts", "add", "carol", "kolokol1notaninvite"]), 1, "invite");
    check_error(&run(&a, &["contacts", "add", "carol", "hello"]), 1, "invite");
    check_error(&run(&a, &["send", "nobody", "hi"]), 1, "no contact or group named \"nobody\"");
    check_error(&run(&a, &["send", "bob", ""]), 1, "empty");
    let long = "x".repeat(1_000_001);
    check_error(
        &run_with_input(&a, &["send", "bob", "-"], long.as_bytes()),
        1,
        "1000001 bytes, over the limit of 1000000",
    );
    check_error(&run(&a, &["frobnicate"]), 2, "frobnicate");
    // The same mistakes with --json: one JSON object each, with a stable code.
    let unknown =
        check_json_error(&run(&a, &["--json", "send", "nobody", "hi"]), 1, "unknown_contact");
    assert_eq!(unknown["error"]["rpc_code"], 1, "{unknown}");
    check_json_error(&run(&a, &["--json", "send", "bob", ""]), 1, "bad_message");
    check_json_error(&run(&a, &["--json", "contacts", "add", "carol", "hello"]), 1, "bad_invite");
    let usage = check_json_error(&run(&a, &["--json", "frobnicate"]), 2, "bad_usage");
    assert_eq!(usage["error"]["message"], "unrecognized subcommand 'frobnicate'", "{usage}");
    check_json_error(&run(&a, &["--json", "node"]), 1, "already_running");
    check_error(&run(&a, &["inbox", "--limit", "0"]), 2, "--limit");
    check_error(&run(&a, &["outbox", "--limit", "10001"]), 2, "--limit");
    check_error(&run(&a, &["send", "--colour", "bob", "x"]), 2, "--colour");
    check_error(&run(&a, &["node"]), 1, "already running");
    // A second relay on the relay's port is refused, although libp2p would share it.
    let taken = bootstrap.split("/p2p/").next().expect("an address").to_owned();
    check_error(
        &run(&tmp.path().join("relay2"), &["relay", "--no-mdns", "--listen", &taken]),
        1,
        &format!("cannot listen on {taken}: address already in use (is another kolokol running?)"),
    );
    // The daemon still serves after all of that.
    assert!(check_ok(&run(&b, &["inbox", "--messages"])).contains("alice: hello"));

    // The verified mark, and renaming, from the command line.
    assert_eq!(
        check_ok(&run(&a, &["contacts", "verify", "BOB", "--mark"])).trim(),
        "marked Bob verified"
    );
    assert!(check_ok(&run(&a, &["contacts", "list"])).trim_end().ends_with("\tverified"));
    assert!(check_ok(&run(&a, &["read", "bob"])).starts_with("conversation with Bob (12D3KooW"));
    check_json_error(
        &run(&a, &["--json", "contacts", "replace", "bob", "kolokol1x"]),
        1,
        "confirm",
    );

    // Removing a contact keeps the messages and forgets the name.
    assert_eq!(check_ok(&run(&b, &["contacts", "remove", "alice"])).trim(), "removed alice");
    assert!(check_ok(&run(&b, &["contacts", "list"])).starts_with("no contacts yet"));
    check_error(&run(&b, &["send", "alice", "hi"]), 1, "no contact or group named \"alice\"");
    check_error(&run(&b, &["contacts", "remove", "alice"]), 1, "no contact named \"alice\"");
    // Accepting what is neither a name nor a peer id, and a peer that never wrote.
    check_error(
        &run(&b, &["contacts", "accept", "garbage", "Bobby"]),
        1,
        "no contact named \"garbage\", and no peer id or start of one from `kolokol inbox`",
    );
    let relay_id = bootstrap.rsplit("/p2p/").next().expect("the relay's peer id");
    check_error(
        &run(&b, &["contacts", "accept", relay_id, "Relay"]),
        1,
        &format!("{relay_id} has not written to you, so there is no request to accept"),
    );
    assert!(
        check_ok(&run(&b, &["inbox", "--messages", "--peek"])).contains("hello"),
        "messages stay"
    );
}

#[test]
fn commands_without_a_daemon_say_how_to_start_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("nobody-home");
    for args in [&["status"][..], &["send", "bob", "hi"], &["inbox"], &["invite"], &["peers"]] {
        check_error(&run(&dir, args), 1, "no kolokol daemon is running");
    }
    // The chat screen says first that it needs a terminal, which a script never gives it.
    check_error(&run(&dir, &["chat"]), 1, "kolokol chat needs a terminal; from a script");
    // KOLOKOL_HOME names the data dir; set but empty, it counts as unset.
    let bare = |home: &std::ffi::OsStr| {
        Command::new(env!("CARGO_BIN_EXE_kolokol"))
            .arg("status")
            .env("KOLOKOL_HOME", home)
            .env("XDG_DATA_HOME", tmp.path().join("xdg"))
            .output()
            .expect("the binary runs")
    };
    let expected = format!("running for {}", dir.display());
    check_error(&bare(dir.as_os_str()), 1, &expected);
    let expected = format!("running for {}", tmp.path().join("xdg/kolokol").display());
    check_error(&bare("".as_ref()), 1, &expected);
    // Completions need no daemon.
    for shell in ["bash", "zsh", "fish"] {
        let script = check_ok(&run(&dir, &["completions", shell]));
        assert!(script.contains("kolokol") && script.contains("contacts"), "{shell}: {script}");
    }
    check_error(&run(&dir, &["completions", "tcsh"]), 2, "tcsh");
    check_json_error(&run(&dir, &["--json", "status"]), 1, "daemon_not_running");
    check_json_error(&run(&dir, &["status", "--json", "--limit"]), 2, "bad_usage");
    let doctor = run(&dir, &["doctor"]);
    assert_eq!(doctor.status.code(), Some(1));
    assert!(stdout(&doctor).starts_with("[FAIL] daemon"), "{}", stdout(&doctor));
    assert!(stdout(&doctor).contains("(or: relay --listen ...)"), "{}", stdout(&doctor));
    check_error(&run(&dir, &["node", "--bootstrap", "/ip4/127.0.0.1/tcp/1"]), 1, "/p2p/");
    check_error(&run(&dir, &["node", "--listen", "not-an-address"]), 2, "not-an-address");
    // The mistakes of someone following the README: the placeholder pasted as is, an unset
    // variable, each said in words that say what to do.
    check_error(
        &run(&dir, &["node", "--bootstrap", "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW..."]),
        2,
        "the documentation's placeholder, not an address: use the one your relay printed",
    );
    check_error(&run(&dir, &["node", "--bootstrap", ""]), 2, "RELAY is not set in this terminal");

    // A data dir that cannot be created: its parent is a regular file. (Tests run as root,
    // where a chmod 500 directory would not stop anything.)
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("file written");
    check_error(&run(&file.join("kolokol"), &["node"]), 1, "cannot create data dir");

    // A corrupt config file: one line naming the file, the line and the mistake.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).expect("dir");
    let toml = broken.join("kolokol.toml");
    std::fs::write(&toml, "log_format = \"text\"\n\nbootstrap = \"/ip4/1.2.3.4/tcp/1\"\n")
        .expect("written");
    let expected = format!(
        "config {}: line 3: invalid type: string \"/ip4/1.2.3.4/tcp/1\", expected a list of multiaddr strings for `bootstrap`",
        toml.display()
    );
    check_error(&run(&broken, &["node"]), 1, &expected);
    check_error(&run(&broken, &["relay"]), 1, &expected);
    std::fs::write(&toml, "listen = [\"/ip4/0.0.0.0/tcp/4001\"]\nlisten_address = []\n")
        .expect("written");
    check_error(&run(&broken, &["node"]), 1, "line 2: unknown field `listen_address`");
    // --config names a file that must exist; other commands do not read the config at all.
    check_error(&run(&dir, &["--config", "/nonexistent/k.toml", "node"]), 1, "/nonexistent/k.toml");
    check_error(&run(&broken, &["status"]), 1, "no kolokol daemon is running");
    check_error(&run(&dir, &["--log-format", "xml", "node"]), 2, "xml");
}

/// A bad `TOKIO_WORKER_THREADS` is bad usage with one line saying so, never tokio's panic.
#[test]
fn a_bad_worker_thread_count_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["abc", "0", "-1"] {
        let out = kolokol(dir.path()).env("TOKIO_WORKER_THREADS", value).arg("status").output();
        let out = out.expect("kolokol runs");
        check_error(&out, 2, "TOKIO_WORKER_THREADS");
        assert_eq!(stderr(&out).trim_end().lines().count(), 1, "{}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
    let out = kolokol(dir.path())
        .env("TOKIO_WORKER_THREADS", "abc")
        .args(["--json", "status"])
        .output()
        .expect("kolokol runs");
    check_json_error(&out, 2, "bad_usage");
    // A good count, or an empty one (unset), runs the command: no daemon, so it says how to start one.
    for value in ["2", ""] {
        let out = kolokol(dir.path()).env("TOKIO_WORKER_THREADS", value).arg("status").output();
        let out = out.expect("kolokol runs");
        check_error(&out, 1, "no kolokol daemon is running");
    }
}

#[test]
fn the_demo_delivers_everything() {
    let out = kolokol(Path::new("/nonexistent")).arg("demo").output().expect("runs");
    let text = check_ok(&out);
    assert!(text.contains("bob received and decrypted"), "{text}");
    assert!(text.contains("alice received and decrypted"), "{text}");
    assert!(text.contains("stored (stored on 1 of 1 mailbox replicas)"), "{text}");
    assert!(text.contains("bob came back"), "{text}");
    assert!(text.contains("every message arrived"), "{text}");
    let out = kolokol(Path::new("/nonexistent")).args(["--json", "demo"]).output().expect("runs");
    for line in check_ok(&out).lines() {
        let step: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(step["step"].is_string(), "{line}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = kolokol(&tmp.path().join("node"))
        .env("RUST_LOG", "info")
        .args(["--log-format", "json", "node", "--no-mdns"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first start always logs the new identity first.
    let line = lines.recv_timeout(TIMEOUT).expect("a log line in time");
    let _ = child.kill();
    let _ = child.wait();
    let entry: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(entry["level"], "INFO", "{line}");
    assert_eq!(entry["fields"]["message"], "created a new identity", "{line}");
}

#[test]
fn a_recipient_killed_mid_fetch_loses_nothing_and_shows_nothing_twice() {
    const MESSAGES: usize = 300;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, a, b) = (tmp.path().join("relay"), tmp.path().join("alice"), tmp.path().join("bob"));
    let mut relay = Daemon::start(&r, &["relay", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    let line = relay.wait_line(|l| l.trim_start().starts_with("kolokol node --bootstrap "));
    let bootstrap = line.trim().trim_start_matches("kolokol node --bootstrap ").to_owned();
    let node = ["node", "--no-mdns", "--bootstrap", bootstrap.as_str()];
    let alice = Daemon::start(&a, &node);
    let bob = Daemon::start(&b, &node);
    let bob_invite = check_ok(&run(&b, &["invite"]));
    check_ok(&run(&a, &["contacts", "add", "bob", bob_invite.trim()]));
    let alice_invite = check_ok(&run(&a, &["invite"]));
    check_ok(&run(&b, &["contacts", "add", "alice", alice_invite.trim()]));

    // Bob is killed; Alice's messages wait in his mailbox on the relay, and Alice goes too, so
    // the mailbox is the only way they can reach Bob.
    drop(bob);
    for i in 0..MESSAGES {
        let sent = check_ok(&run(&a, &["send", "bob", &format!("message {i}")]));
        assert!(sent.contains(" stored (stored on 1 of 1 mailbox replicas)"), "{sent}");
    }
    drop(alice);

    // Bob comes back and starts fetching; he is killed with SIGKILL as soon as the first
    // message shows, in the middle of the fetch.
    let bob = Daemon::start(&b, &node);
    let follow = ["--json", "inbox", "--follow", "--limit", "1000"];
    let first = Daemon::start_until(&b, &follow, |l| l.starts_with('{'));
    drop(bob);
    drop(first);

    // After a restart every message is there, each once. The replica hands items over oldest
    // first, so the last one sent is the last to show.
    let _bob = Daemon::start(&b, &node);
    let last = format!("\"message {}\"", MESSAGES - 1);
    let _follow = Daemon::start_until(&b, &follow, |l| l.contains(&last));
    let inbox: Vec<serde_json::Value> = serde_json::from_str(&check_ok(&run(
        &b,
        &["--json", "inbox", "--messages", "--limit", "1000"],
    )))
    .expect("JSON");
    assert_eq!(inbox.len(), MESSAGES);
    let seen: std::collections::HashSet<&str> =
        inbox.iter().map(|m| m["text"].as_str().expect("a text")).collect();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("message {i}")).collect();
    assert!(expected.iter().all(|t| seen.contains(t.as_str())), "messages lost");
}

/// Waits on the control socket of `dir` until the message `id` is `delivered` or `read` (the
/// recipient's `inbox` may have sent its read receipt too, and that may even arrive first):
/// subscribes, then reads its state (so a change between the two is not missed), then reads
/// events.
fn wait_delivered(dir: &Path, id: &str) -> Vec<String> {
    use std::io::Write;
    let stream = std::os::unix::net::UnixStream::connect(dir.join("control.sock"))
        .expect("the control socket accepts");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let requests = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"subscribe\"}}\n\
         {{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"message\",\"params\":{{\"id\":\"{id}\"}}}}\n"
    );
    writer.write_all(requests.as_bytes()).expect("requests written");
    let mut delivered = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("the daemon answers in time");
        assert!(!line.is_empty(), "the daemon closed the connection");
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        if value["id"] == 2 {
            let history = value["result"]["history"].as_array().expect("a history");
            let states: Vec<String> =
                history.iter().map(|h| h["state"].as_str().unwrap_or("").to_owned()).collect();
            if delivered || matches!(states.last().map(String::as_str), Some("delivered" | "read"))
            {
                return states;
            }
        } else if value["params"]["type"] == "state"
            && value["params"]["id"] == id
            && matches!(value["params"]["state"].as_str(), Some("delivered" | "read"))
        {
            delivered = true;
            let again = format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"message\",\"params\":{{\"id\":\"{id}\"}}}}\n"
            );
            writer.write_all(again.as_bytes()).expect("request written");
        }
    }
}

#[test]
fn a_sender_killed_after_send_returned_delivers_once_after_its_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, a, b) = (tmp.path().join("relay"), tmp.path().join("alice"), tmp.path().join("bob"));
    let mut relay = Daemon::start(&r, &["relay", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    let line = relay.wait_line(|l| l.trim_start().starts_with("kolokol node --bootstrap "));
    let bootstrap = line.trim().trim_start_matches("kolokol node --bootstrap ").to_owned();
    let node = ["node", "--no-mdns", "--bootstrap", bootstrap.as_str()];
    let alice = Daemon::start(&a, &node);
    let bob = Daemon::start(&b, &node);
    let bob_invite = check_ok(&run(&b, &["invite"]));
    check_ok(&run(&a, &["contacts", "add", "bob", bob_invite.trim()]));
    let alice_invite = check_ok(&run(&a, &["invite"]));
    check_ok(&run(&b, &["contacts", "add", "alice", alice_invite.trim()]));
    drop(bob);

    // `send` returns, and Alice's daemon is killed with SIGKILL at once.
    let sent = check_ok(&run(&a, &["send", "bob", "before the crash"]));
    assert!(sent.contains(" stored "), "{sent}");
    let id = sent.split_whitespace().next().expect("an id").to_owned();
    drop(alice);

    // Bob comes back and gets it from his mailbox; Alice comes back and learns it arrived.
    let _bob = Daemon::start(&b, &node);
    let _follow =
        Daemon::start_until(&b, &["inbox", "--follow"], |l| l.contains("before the crash"));
    let _alice = Daemon::start(&a, &node);
    let states = wait_delivered(&a, &id);
    assert_eq!(states[..2], ["queued", "stored"], "{states:?}");
    let inbox = check_ok(&run(&b, &["inbox", "--messages"]));
    assert_eq!(inbox.matches("before the crash").count(), 1, "{inbox}");
}

/// Waits on the control socket of `dir` until the answer to `method` with `params` satisfies
/// `done`: subscribes, asks, and asks again after every event (every change to a group or its
/// texts is announced), so a change between two questions is not missed. Returns the answer.
fn wait_answer(
    dir: &Path,
    method: &str,
    params: serde_json::Value,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    use std::io::Write;
    let stream = std::os::unix::net::UnixStream::connect(dir.join("control.sock"))
        .expect("the control socket accepts");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let ask = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": params});
    writer
        .write_all(
            format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"subscribe\"}}\n{ask}\n")
                .as_bytes(),
        )
        .expect("requests written");
    let mut last = serde_json::Value::Null;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("no answer in time ({e}); last answer to {method}: {last}"));
        assert!(!line.is_empty(), "the daemon closed the connection");
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        if value["id"] == 2 {
            assert!(value.get("error").is_none(), "{method} -> {value}");
            if done(&value["result"]) {
                return value["result"].clone();
            }
            last = value["result"].clone();
        } else if value.get("method").is_some() {
            writer.write_all(format!("{ask}\n").as_bytes()).expect("request written");
        }
    }
}

/// Subscribes to the events of the daemon of `dir` and returns the reader, once the daemon has
/// answered the subscription.
fn subscribe(dir: &Path) -> BufReader<std::os::unix::net::UnixStream> {
    use std::io::Write;
    let stream = std::os::unix::net::UnixStream::connect(dir.join("control.sock"))
        .expect("the control socket accepts");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    writer
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"subscribe\"}\n")
        .expect("request written");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("the daemon answers in time");
    assert!(line.contains("\"result\":true"), "{line}");
    reader
}

/// The next event notification's params that `pick` accepts.
fn next_event(
    events: &mut BufReader<std::os::unix::net::UnixStream>,
    pick: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    loop {
        let mut line = String::new();
        events.read_line(&mut line).expect("an event in time");
        assert!(!line.is_empty(), "the daemon closed the connection");
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        if pick(&value["params"]) {
            return value["params"].clone();
        }
    }
}

/// An invite of a made-up Bob whose only address is a TCP port that accepts connections and
/// never answers, so a delivery to him hangs until the network stack's timeouts: the first
/// attempt of a message to him lasts seconds, whatever the machine's speed. The listener is
/// returned to be kept open.
fn black_hole_invite() -> (String, std::net::TcpListener) {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = hole.local_addr().expect("an address").port();
    let bob = kolokol_protocol::identity::Identity::from_secrets([3; 32], [4; 32]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let certificate = bob.certify(now - 60, now + 3600).expect("certificate");
    let address: kolokol_node::Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", bob.peer_id()).parse().expect("valid");
    let invite =
        kolokol_protocol::invite::Invite { certificate, addresses: vec![address.to_vec()] };
    (invite.to_text().expect("text"), hole)
}

#[test]
fn ctrl_c_during_send_says_the_message_is_committed_and_will_still_go_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("alice");
    let alice = Daemon::start(&a, &["node", "--no-mdns"]);
    let (invite, _hole) = black_hole_invite();
    check_ok(&run(&a, &["contacts", "add", "bob", &invite]));

    let mut events = subscribe(&a);
    let child = kolokol(&a)
        .args(["send", "bob", "are you there?"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // The message is committed (its first state event), and its first attempt hangs.
    let queued = next_event(&mut events, |e| e["type"] == "state" && e["state"] == "queued");
    let id = queued["id"].as_str().expect("an id").to_owned();
    let interrupted =
        Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(interrupted.success());
    let out = child.wait_with_output().expect("the send command ends");
    assert_eq!(out.status.code(), Some(130), "stdout: {} stderr: {}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), format!("{id} queued\n"));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("message {id} is committed to the outbox and will still go out")),
        "{err}"
    );
    assert!(err.contains(&format!("status {id}")), "{err}");
    // It is in the outbox indeed, and the daemon goes on with it.
    assert!(check_ok(&run(&a, &["outbox"])).contains(&id));

    // With the daemon stopped, what only reads still works, from the database.
    drop(alice);
    let outbox = run(&a, &["outbox"]);
    assert!(check_ok(&outbox).contains(&format!("{id} queued")), "{}", stdout(&outbox));
    assert!(stderr(&outbox).contains("no daemon is running: read from the database"));
    assert!(check_ok(&run(&a, &["contacts", "list"])).starts_with("bob\t"));
    assert!(check_ok(&run(&a, &["status", &id[..6]])).contains("queued"));
    assert_eq!(check_ok(&run(&a, &["inbox", "--messages"])).trim(), "no messages");
    let listed: serde_json::Value =
        serde_json::from_str(&check_ok(&run(&a, &["--json", "outbox"]))).expect("JSON");
    assert_eq!(listed[0]["id"], id.as_str());
    // What needs the daemon still says so.
    check_error(&run(&a, &["send", "bob", "hi"]), 1, "no kolokol daemon is running");
}

#[test]
fn service_install_prints_its_unit_and_says_when_there_is_no_systemd() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("node");
    let config = tmp.path().join("config");
    let dry = kolokol(&dir)
        .env("XDG_CONFIG_HOME", &config)
        .args([
            "service",
            "install",
            "--dry-run",
            "--",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWx",
        ])
        .output()
        .expect("runs");
    let unit = check_ok(&dry);
    let path = config.join("systemd/user/kolokol.service");
    assert!(
        unit.starts_with(&format!("# {} (not written: --dry-run)\n[Unit]\n", path.display())),
        "{unit}"
    );
    let exec = format!(
        "ExecStart={} --data-dir {} node --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooWx\n",
        env!("CARGO_BIN_EXE_kolokol"),
        dir.display()
    );
    assert!(unit.contains(&exec), "{unit}");
    assert!(!path.exists(), "a dry run writes nothing");
    // Where there is no systemd, it says so and writes nothing.
    let empty = tmp.path().join("empty-path");
    std::fs::create_dir_all(&empty).expect("dir");
    let none = kolokol(&dir)
        .env("XDG_CONFIG_HOME", &config)
        .env("PATH", &empty)
        .args(["--json", "service", "install"])
        .output()
        .expect("runs");
    let err = check_json_error(&none, 1, "no_systemd");
    assert!(
        err["error"]["message"].as_str().is_some_and(|m| m.contains("nothing was written")),
        "{err}"
    );
    assert!(!path.exists());
    // The relay's system unit is the hardened one of docs/RELAY.md.
    let relay = check_ok(&run(&dir, &["service", "install", "--relay", "--dry-run"]));
    assert!(
        relay.starts_with("# /etc/systemd/system/kolokol-relay.service (not written"),
        "{relay}"
    );
    assert!(
        relay.contains("\nProtectSystem=strict\n") && relay.contains("\nUser=kolokol\n"),
        "{relay}"
    );
}

#[test]
fn a_backup_restores_on_a_new_machine_and_the_conversation_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, a, b) = (tmp.path().join("relay"), tmp.path().join("alice"), tmp.path().join("bob"));
    let mut relay = Daemon::start(&r, &["relay", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    let line = relay.wait_line(|l| l.trim_start().starts_with("kolokol node --bootstrap "));
    let bootstrap = line.trim().trim_start_matches("kolokol node --bootstrap ").to_owned();
    let node = ["node", "--no-mdns", "--bootstrap", bootstrap.as_str()];
    let alice = Daemon::start(&a, &node);
    let _bob = Daemon::start(&b, &node);
    let bob_invite = check_ok(&run(&b, &["invite"]));
    check_ok(&run(&a, &["contacts", "add", "bob", bob_invite.trim()]));
    let alice_invite = check_ok(&run(&a, &["invite"]));
    check_ok(&run(&b, &["contacts", "add", "alice", alice_invite.trim()]));
    check_ok(&run(&a, &["contacts", "verify", "bob", "--mark"]));
    assert!(
        check_ok(&run(&a, &["send", "bob", "before the backup"])).trim().ends_with(" delivered")
    );
    let alice_id = check_ok(&run(&a, &["id"]));

    // The backup is taken while Alice's daemon runs; a short passphrase is refused.
    let file = tmp.path().join("alice.kolokol-backup");
    let short =
        run_with_input(&a, &["--json", "backup", file.to_str().expect("utf-8")], b"short\n");
    check_json_error(&short, 1, "bad_passphrase");
    // None at all (standard input empty, as under a script) is said as such.
    let none = run_with_input(&a, &["--json", "backup", file.to_str().expect("utf-8")], b"");
    check_json_error(&none, 1, "no_passphrase");
    let passphrase = b"correct horse battery staple\n";
    let made = run_with_input(&a, &["backup", file.to_str().expect("utf-8")], passphrase);
    assert!(check_ok(&made).starts_with(&format!("wrote {}", file.display())), "{}", stdout(&made));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("written").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!a.join("backup-snapshot.db").exists(), "the plaintext snapshot is gone");
    let again = run_with_input(&a, &["backup", file.to_str().expect("utf-8")], passphrase);
    check_error(&again, 1, "never overwrites");
    drop(alice);

    // A new machine: a wrong passphrase is refused, the right one brings Alice back.
    let new = tmp.path().join("alice-new");
    let wrong =
        run_with_input(&new, &["restore", file.to_str().expect("utf-8")], b"incorrect horse\n");
    check_error(&wrong, 1, "wrong passphrase");
    let restored = run_with_input(&new, &["restore", file.to_str().expect("utf-8")], passphrase);
    let said = check_ok(&restored);
    let peer = alice_id.lines().next().expect("a line").trim_start_matches("peer id:").trim();
    assert!(said.starts_with(&format!("restored {peer} into ")), "{said}");
    assert!(said.contains("1 contact"), "{said}");
    let twice = run_with_input(&new, &["restore", file.to_str().expect("utf-8")], passphrase);
    check_error(&twice, 1, "already has an identity");

    let _alice = Daemon::start(&new, &node);
    assert_eq!(check_ok(&run(&new, &["id"])), alice_id, "the same identity");
    assert!(check_ok(&run(&new, &["contacts", "list"])).trim_end().ends_with("\tverified"));
    assert!(check_ok(&run(&new, &["read", "bob"])).contains("before the backup"));
    let sent = check_ok(&run(&new, &["send", "bob", "after the restore"]));
    assert!(sent.trim().ends_with(" delivered"), "{sent}");
    let chat: serde_json::Value =
        serde_json::from_str(&check_ok(&run(&b, &["--json", "read", "alice"]))).expect("JSON");
    let texts: Vec<&str> = chat["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(texts, ["before the backup", "after the restore"], "{chat}");
}

/// The texts of a group's `group.messages` answer, as `writer: text`.
fn group_texts(chat: &serde_json::Value) -> Vec<String> {
    chat["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    format!(
                        "{}: {}",
                        m["from"].as_str().unwrap_or(""),
                        m["text"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_group_of_daemons_chats_catches_up_and_shuts_a_removed_member_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = |n: &str| tmp.path().join(n);
    let (a, b, c) = (dir("alice"), dir("bob"), dir("carol"));
    let mut relay =
        Daemon::start(&dir("relay"), &["relay", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    let line = relay.wait_line(|l| l.trim_start().starts_with("kolokol node --bootstrap "));
    let bootstrap = line.trim().trim_start_matches("kolokol node --bootstrap ").to_owned();
    let node = ["node", "--no-mdns", "--bootstrap", bootstrap.as_str()];
    let _alice = Daemon::start(&a, &node);
    let _bob = Daemon::start(&b, &node);
    let carol = Daemon::start(&c, &node);
    // Alice knows Bob and Carol; they do not know each other.
    for (other, name) in [(&b, "bob"), (&c, "carol")] {
        let invite = check_ok(&run(other, &["invite"]));
        check_ok(&run(&a, &["contacts", "add", name, invite.trim()]));
        let alice_invite = check_ok(&run(&a, &["invite"]));
        check_ok(&run(other, &["contacts", "add", "alice", alice_invite.trim()]));
    }

    let created = check_ok(&run(&a, &["group", "create", "family", "--as", "alice"]));
    assert!(created.starts_with("created family (") && created.contains("1 member)"), "{created}");
    // What Alice writes while alone is hers: nobody invited later gets it or waits for it.
    check_ok(&run(&a, &["send", "family", "a note to self"]));
    let added = check_ok(&run(&a, &["group", "invite", "family", "bob", "carol"]));
    assert!(added.contains("3 members"), "{added}");
    let id = created.split(['(', ',']).nth(1).expect("the group id").trim().to_owned();
    check_error(&run(&b, &["group", "invite", "family", "alice"]), 1, "only an admin");
    for d in [&b, &c] {
        wait_answer(d, "group.list", serde_json::json!({}), |groups| {
            groups.as_array().is_some_and(|gs| {
                gs.iter()
                    .any(|g| g["id"] == id.as_str() && g["status"] == "member" && g["members"] == 3)
            })
        });
    }
    // Carol is not Bob's contact: he sees her under the name Alice listed her under.
    let members = check_ok(&run(&b, &["group", "members", "family"]));
    assert!(members.starts_with("family (3 members)"), "{members}");
    assert!(members.contains("alice\t") && members.contains("\tadmin"), "{members}");
    assert!(members.contains("carol\t") && members.contains("(you)"), "{members}");

    // Bob writes; both others read it, with his name.
    let sent = check_ok(&run(&b, &["send", "family", "hello", "everyone"]));
    assert!(sent.trim().ends_with(" delivered"), "{sent}");
    for d in [&a, &c] {
        let chat = wait_answer(d, "group.messages", serde_json::json!({"group": id}), |chat| {
            group_texts(chat).contains(&"bob: hello everyone".to_owned())
        });
        let expected = if *d == a { 2 } else { 1 };
        assert_eq!(group_texts(&chat).len(), expected, "{chat}");
    }
    // Carol's conversation list has the group, with Bob's text unread, until she reads it.
    let conversations = check_ok(&run(&c, &["inbox"]));
    assert!(
        conversations
            .lines()
            .any(|l| l.starts_with("# family") && l.contains(" 1 unread  3 members")),
        "{conversations}"
    );
    let shown = check_ok(&run(&c, &["group", "show", "family"]));
    assert!(shown.contains("] bob: hello everyone"), "{shown}");
    // The name in another case finds the group, as a contact's name finds the contact.
    let shown = check_ok(&run(&c, &["group", "show", "FAMILY"]));
    assert!(shown.contains("] bob: hello everyone"), "{shown}");
    let conversations = check_ok(&run(&c, &["inbox"]));
    assert!(
        conversations.lines().any(|l| l.starts_with("# family") && l.contains(" 0 unread")),
        "{conversations}"
    );
    let inbox = check_ok(&run(&a, &["inbox", "--messages"]));
    assert!(inbox.contains("family / bob: hello everyone"), "{inbox}");

    // Carol goes offline; Alice renames the group and writes; Carol catches up from her mailbox.
    drop(carol);
    check_ok(&run(&a, &["group", "rename", "family", "the family"]));
    let status_of = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&check_ok(&run(dir, &["--json", "status"]))).expect("JSON")
    };
    let stored_before = status_of(&a)["stored_messages"].as_u64().expect("a count");
    let sent = check_ok(&run(&a, &["send", "the family", "while you were away"]));
    assert!(sent.contains(" stored (delivered to 1 of 2 members; 1 stored"), "{sent}");
    // Carol's copy waits in her mailbox, and `status` counts it.
    let status = status_of(&a);
    assert_eq!(status["stored_messages"], stored_before + 1, "{status}");
    assert_eq!(status["queued_files"], 0, "{status}");
    let carol = Daemon::start(&c, &node);
    let chat = wait_answer(&c, "group.messages", serde_json::json!({"group": id}), |chat| {
        chat["group"]["name"] == "the family"
            && group_texts(chat).contains(&"alice: while you were away".to_owned())
    });
    assert_eq!(group_texts(&chat).len(), 2, "each text once: {chat}");
    // Alice's second text is the first Carol could get: her note before the invitation is
    // no gap for Carol.
    let waiting = chat["messages"]
        .as_array()
        .expect("texts")
        .iter()
        .any(|m| m["missing_before"].as_u64().unwrap_or(0) > 0);
    assert!(!waiting, "a gap before the invitation: {chat}");

    // Alice removes Carol, and Carol learns it. She goes offline: Bob's next text is
    // `delivered` at once, so no copy of it waits for her; back, she has not got it, and can no
    // longer write to the group.
    let removed = check_ok(&run(&a, &["group", "remove", "the family", "carol"]));
    assert!(removed.contains("2 members"), "{removed}");
    wait_answer(&c, "group.list", serde_json::json!({}), |groups| {
        groups
            .as_array()
            .is_some_and(|gs| gs.iter().any(|g| g["id"] == id.as_str() && g["status"] == "removed"))
    });
    wait_answer(&b, "group.members", serde_json::json!({"group": id}), |m| {
        m["members"].as_array().is_some_and(|ms| ms.len() == 2)
    });
    drop(carol);
    let after: serde_json::Value = serde_json::from_str(&check_ok(&run(
        &b,
        &["--json", "send", "the family", "after the removal"],
    )))
    .expect("JSON");
    assert_eq!(after["state"], "delivered", "only Alice is sent a copy: {after}");
    wait_answer(&a, "group.messages", serde_json::json!({"group": id}), |chat| {
        group_texts(chat).contains(&"bob: after the removal".to_owned())
    });
    let _carol = Daemon::start(&c, &node);
    let at_carol = check_ok(&run(&c, &["group", "show", &id]));
    assert!(at_carol.contains("removed") && !at_carol.contains("after the removal"), "{at_carol}");
    check_error(&run(&c, &["send", "the family", "still here?"]), 1, "not a member");

    // Alice, the only admin, may not leave Bob without one: one line that says what to do,
    // exit 1 (`group_refused` in JSON). She makes Bob an admin (Bob may not make himself one)
    // and then leaves without force; Bob is alone, and an admin.
    check_error(
        &run(&a, &["group", "leave", "the family"]),
        1,
        "error: you are the last admin of \"the family\": make another member an admin first \
         (kolokol group admin 'the family' NAME), or leave anyway with --force",
    );
    check_json_error(&run(&a, &["--json", "group", "leave", "the family"]), 1, "group_refused");
    check_error(&run(&b, &["group", "admin", "the family", "me"]), 1, "only an admin");
    let made = check_ok(&run(&a, &["group", "admin", "the family", "bob"]));
    assert!(
        made.starts_with("bob is now an admin of the family (") && made.contains("2 admins)"),
        "{made}"
    );
    check_error(&run(&a, &["group", "admin", "the family", "bob"]), 1, "bob is already an admin");
    wait_answer(&b, "group.list", serde_json::json!({}), |groups| {
        groups
            .as_array()
            .is_some_and(|gs| gs.iter().any(|g| g["id"] == id.as_str() && g["admin"] == true))
    });
    let left = check_ok(&run(&a, &["group", "leave", "the family"]));
    assert!(left.starts_with("left the family ("), "{left}");
    wait_answer(&b, "group.members", serde_json::json!({"group": id}), |m| {
        m["members"].as_array().is_some_and(|ms| ms.len() == 1)
    });
    check_error(&run(&a, &["group", "show", "nonesuch"]), 1, "no group named \"nonesuch\"");
}

/// Whether any of the files of the database in `dir` (the database, its WAL, its index) holds
/// `needle`.
fn database_holds(dir: &Path, needle: &str) -> bool {
    ["kolokol.db", "kolokol.db-wal", "kolokol.db-shm"].iter().any(|name| {
        std::fs::read(dir.join(name))
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

/// `kolokol` on `dir` with the passphrase of its encrypted store in the file `passphrase`.
fn unlocked(dir: &Path, passphrase: &Path) -> Command {
    let mut command = kolokol(dir);
    command.env("KOLOKOL_PASSPHRASE_FILE", passphrase);
    command
}

#[test]
fn daemons_on_encrypted_stores_talk_and_a_wrong_passphrase_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, a, b) = (tmp.path().join("relay"), tmp.path().join("alice"), tmp.path().join("bob"));
    let write = |name: &str, text: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).expect("written");
        path
    };
    let right = write("right", "correct horse battery staple\n");
    let wrong = write("wrong", "incorrect horse battery staple\n");
    let new = write("new", "a new passphrase for a new week\n");
    let mut relay = Daemon::start(&r, &["relay", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"]);
    let line = relay.wait_line(|l| l.trim_start().starts_with("kolokol node --bootstrap "));
    let bootstrap = line.trim().trim_start_matches("kolokol node --bootstrap ").to_owned();
    let node = ["node", "--no-mdns", "--bootstrap", bootstrap.as_str()];

    // Alice starts encrypted; Bob starts plain and is encrypted later, his messages kept.
    let made = run_with_input(&a, &["init", "--encrypt"], b"correct horse battery staple\n");
    assert!(check_ok(&made).starts_with("created "), "{}", stdout(&made));
    assert!(!a.join("identity.key").exists(), "the identity is inside the encrypted store");
    let alice = Daemon::start_with(unlocked(&a, &right), &a, &node, |l| l.contains(" running, "));
    let bob = Daemon::start(&b, &node);
    let bob_invite = check_ok(&run(&b, &["invite"]));
    check_ok(&run(&a, &["contacts", "add", "bob", bob_invite.trim()]));
    let alice_invite = check_ok(&run(&a, &["invite"]));
    check_ok(&run(&b, &["contacts", "add", "alice", alice_invite.trim()]));
    let sent = check_ok(&run(&a, &["send", "bob", "the bell rings at nine"]));
    assert!(sent.trim().ends_with(" delivered"), "{sent}");
    let sent = check_ok(&run(&b, &["send", "alice", "the tower is quiet tonight"]));
    assert!(sent.trim().ends_with(" delivered"), "{sent}");
    assert!(check_ok(&run(&a, &["read", "bob"])).contains("the tower is quiet tonight"));
    let alice_id = check_ok(&run(&a, &["id"]));
    // A backup of the encrypted store while its daemon runs: the snapshot goes encrypted under
    // a key of its own and is decrypted only in the CLI's memory.
    let passphrase = b"correct horse battery staple\n";
    let running = tmp.path().join("alice-running.kolokol-backup");
    let made = run_with_input(&a, &["backup", running.to_str().expect("utf-8")], passphrase);
    assert!(check_ok(&made).starts_with("wrote "), "{}", stdout(&made));
    assert!(!a.join("backup-snapshot.db").exists(), "the snapshot is gone");
    drop(alice);
    drop(bob);

    // Neither text is in Alice's files; both are in Bob's plain ones.
    for text in ["the bell rings at nine", "the tower is quiet tonight"] {
        assert!(!database_holds(&a, text), "{text:?} is in Alice's encrypted store");
        assert!(database_holds(&b, text), "{text:?} is in Bob's plain store");
    }

    // A wrong passphrase: one line, exit 1, the files as they were. No passphrase and no
    // terminal: one line saying how to give it.
    let files = |dir: &Path| {
        ["kolokol.db", "kolokol.db-wal"].map(|name| std::fs::read(dir.join(name)).ok())
    };
    let before = files(&a);
    let refused = unlocked(&a, &wrong).args(node).output().expect("runs");
    check_error(&refused, 1, "wrong passphrase or key");
    let refused = unlocked(&a, &wrong).args(["--json", "read", "bob"]).output().expect("runs");
    check_json_error(&refused, 1, "wrong_key");
    check_error(&run(&a, &["read", "bob"]), 1, "KOLOKOL_PASSPHRASE_FILE");
    assert!(files(&a) == before, "a refused passphrase changed nothing");
    // The right one reads the stopped node's messages.
    let read = unlocked(&a, &right).args(["read", "bob"]).output().expect("runs");
    assert!(check_ok(&read).contains("the tower is quiet tonight"));
    // A backup of the stopped encrypted store (its passphrase from the file, the backup's
    // from standard input) changes nothing in its files.
    let before = files(&a);
    let stopped = tmp.path().join("alice-stopped.kolokol-backup");
    let mut child = unlocked(&a, &right)
        .args(["backup", stopped.to_str().expect("utf-8")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    {
        use std::io::Write;
        child.stdin.take().expect("piped stdin").write_all(passphrase).expect("written");
    }
    let made = child.wait_with_output().expect("runs");
    assert!(check_ok(&made).starts_with("wrote "), "{}", stdout(&made));
    assert!(!a.join("backup-snapshot.db").exists(), "the snapshot is gone");
    assert!(files(&a) == before, "a backup changed nothing");
    // Both backups restore on a new machine, with the identity and the messages.
    for (name, file) in [("running", &running), ("stopped", &stopped)] {
        let new_dir = tmp.path().join(format!("alice-restored-{name}"));
        let restored =
            run_with_input(&new_dir, &["restore", file.to_str().expect("utf-8")], passphrase);
        let peer = alice_id.lines().next().expect("a line").trim_start_matches("peer id:").trim();
        assert!(check_ok(&restored).starts_with(&format!("restored {peer} into ")), "{name}");
        let history = check_ok(&run(&new_dir, &["read", "bob"]));
        assert!(history.contains("the tower is quiet tonight"), "{name}: {history}");
    }
    // What does not apply says so, and changes nothing: encrypting twice, a passphrase change
    // on a plain store.
    let twice = kolokol(&a)
        .env("KOLOKOL_NEW_PASSPHRASE_FILE", &new)
        .args(["--json", "init", "--encrypt"])
        .output()
        .expect("runs");
    check_json_error(&twice, 1, "already_encrypted");
    let plain = run_with_input(&b, &["--json", "passphrase"], b"a new passphrase for bob\n");
    check_json_error(&plain, 1, "not_encrypted");
    assert!(files(&a) == before, "none of these changed anything");

    // A new passphrase for Alice; Bob's plain store is encrypted with his messages.
    let changed = unlocked(&a, &right)
        .env("KOLOKOL_NEW_PASSPHRASE_FILE", &new)
        .arg("passphrase")
        .output()
        .expect("runs");
    assert!(check_ok(&changed).starts_with("changed the key"), "{}", stdout(&changed));
    check_error(&unlocked(&a, &right).args(["read", "bob"]).output().expect("runs"), 1, "wrong");
    let bob_made = kolokol(&b)
        .env("KOLOKOL_NEW_PASSPHRASE_FILE", &right)
        .args(["init", "--encrypt"])
        .output()
        .expect("runs");
    assert!(check_ok(&bob_made).starts_with("encrypted the store"), "{}", stdout(&bob_made));
    assert!(!database_holds(&b, "the bell rings at nine"), "Bob's store is encrypted now");

    // Both come back, each with its passphrase, and go on talking.
    let _alice = Daemon::start_with(unlocked(&a, &new), &a, &node, |l| l.contains(" running, "));
    let _bob = Daemon::start_with(unlocked(&b, &right), &b, &node, |l| l.contains(" running, "));
    assert_eq!(check_ok(&run(&a, &["id"])), alice_id, "the same identity");
    let history = check_ok(&run(&b, &["read", "alice"]));
    assert!(history.contains("the bell rings at nine"), "{history}");
    assert!(history.contains("the tower is quiet tonight"), "{history}");
    let sent = check_ok(&run(&b, &["send", "alice", "after the encryption"]));
    assert!(sent.trim().ends_with(" delivered"), "{sent}");
    assert!(check_ok(&run(&a, &["read", "bob"])).contains("after the encryption"));
}
