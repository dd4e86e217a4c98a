//! mDNS on a LAN of its own: two network namespaces joined by a veth pair, a real `kolokol
//! node` daemon in each (started through `ip netns exec`), no relay and no bootstrap peer. With
//! mDNS on, the nodes find each other and deliver a message; with `--no-mdns`, they neither
//! announce themselves nor find anyone.
//!
//! mDNS multicasts on every non-loopback interface, so it is never turned on anywhere else in
//! the tests: here it only ever sees the veth pair, inside namespaces this test creates and
//! deletes. The test process stays in the root namespace and drives the daemons through the
//! CLI; their control sockets are files in their data dirs, which every namespace can reach.
//!
//! It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN, to create namespaces) and iproute2's `ip`,
//! and fails with one line saying so without them. A test cannot report itself skipped at run
//! time (libtest would count it passed), so on a machine without them leave these tests out by
//! name instead: `cargo test --workspace -- --skip netns_lab::`, which libtest then reports as
//! "filtered out", never as passed (`.ci/run` does this and says so).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long discovery, delivery or a daemon's start may take before the test fails. mDNS
/// answers at once when a node starts, so this is only for slow machines.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The pause between two polls of a daemon's state. Polls only ever wait for a state with a
/// deadline; nothing here sleeps to let something happen.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Numbers the labs of one test run, so that tests running at once get their own namespaces.
static LABS: AtomicUsize = AtomicUsize::new(0);

/// Fails with one line when the lab cannot run here.
fn lab_can_run() {
    // CapEff in /proc/self/status is the effective capability set, in hex; the bits are
    // CAP_NET_ADMIN (12) for links and addresses and CAP_SYS_ADMIN (21) for `ip netns add`.
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim().to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .unwrap_or(0);
    let needed = (1 << 12) | (1 << 21);
    assert!(
        effective & needed == needed,
        "the mDNS lab test needs root (CAP_NET_ADMIN) to create network namespaces; run it as root, or leave it out with `cargo test -- --skip netns_lab::`"
    );
    assert!(
        Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success()),
        "the mDNS lab test needs iproute2's `ip` (apt-get install iproute2), or leave it out with `cargo test -- --skip netns_lab::`"
    );
}

/// Two network namespaces joined by a veth pair, and the daemons running in them. Dropping it
/// kills the daemons and deletes the namespaces (which deletes the veth pair), whether the
/// test passed or not.
struct Lab {
    /// The namespaces created so far, `[a, b]` once both exist.
    namespaces: Vec<String>,
    /// The two ends' addresses, in `a` and in `b`.
    addresses: [String; 2],
    daemons: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Creates the namespaces `kolokol-lab-<pid>-<n>-a` and `-b`, with `10.77.<n>.1/24` and
    /// `10.77.<n>.2/24` on the two ends of a veth pair, multicast on, and `lo` up in each.
    fn new() -> Self {
        let n = LABS.fetch_add(1, Ordering::Relaxed) + 1;
        let name = |side: &str| format!("kolokol-lab-{}-{n}-{side}", std::process::id());
        let mut lab = Self {
            namespaces: Vec::new(),
            addresses: [format!("10.77.{n}.1"), format!("10.77.{n}.2")],
            daemons: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for side in ["a", "b"] {
            ip(&["netns", "add", &name(side)]);
            lab.namespaces.push(name(side));
        }
        let [a, b] = [lab.namespaces[0].clone(), lab.namespaces[1].clone()];
        ip(&["-n", &a, "link", "add", "lab0", "type", "veth", "peer", "name", "lab1", "netns", &b]);
        for (ns, link, address) in
            [(&a, "lab0", &lab.addresses[0]), (&b, "lab1", &lab.addresses[1])]
        {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{address}/24"), "dev", link]);
            ip(&["-n", ns, "link", "set", link, "multicast", "on", "up"]);
        }
        lab
    }

    /// The data dir of the daemon called `name`.
    fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `kolokol --data-dir <dir of name> <args>` in namespace `side` (0 or 1) and waits
    /// for its "running" line, which it prints once its control socket is bound.
    fn daemon(&mut self, side: usize, name: &str, args: &[&str]) -> PathBuf {
        let dir = self.data_dir(name);
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).expect("log");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[side]])
            .arg(env!("CARGO_BIN_EXE_kolokol"))
            .arg("--data-dir")
            .arg(&dir)
            .args(args)
            .env_remove("KOLOKOL_HOME")
            .env("RUST_LOG", "warn,kolokol_node=info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("ip netns exec starts");
        let stdout = child.stdout.take().expect("piped stdout");
        self.daemons.push(child);
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            // Read to the end even when nobody listens any more: a closed pipe would make the
            // daemon's next line fail and stop it.
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            match lines.recv_timeout(TIMEOUT) {
                Ok(line) if line.contains(" running, peer id ") => return dir,
                Ok(_) => {}
                Err(_) => panic!("{name} did not start in time; its log:\n{}", self.log(name)),
            }
        }
    }

    /// The log of the daemon called `name`, for failure messages.
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Polls `check` until it returns a value, failing with `what` and the daemons' logs after
    /// [`TIMEOUT`].
    #[track_caller]
    fn eventually<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() > deadline {
                let mut logs = String::new();
                for entry in std::fs::read_dir(self.dir.path()).expect("lab dir").flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "log") {
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        logs.push_str(&format!("--- {}\n{text}", path.display()));
                    }
                }
                panic!("timed out waiting until {what}; the daemons' logs:\n{logs}");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `ip <args>`, failing the test with its error if it fails.
#[track_caller]
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs a CLI command against the daemon of `dir`, from the root namespace.
fn kolokol(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kolokol"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("KOLOKOL_HOME")
        .output()
        .expect("the binary runs")
}

/// The standard output of a command that must succeed.
#[track_caller]
fn check_ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `--json` answer of a command that must succeed.
#[track_caller]
fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = check_ok(&kolokol(dir, &full));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn peer_id(dir: &Path) -> String {
    json(dir, &["id"])["peer_id"].as_str().expect("a peer id").to_owned()
}

/// The peer ids that `peers` on the daemon of `dir` lists as found on the local network.
fn found_on_lan(dir: &Path) -> Vec<String> {
    let peers = json(dir, &["peers"]);
    let lan = peers["lan"].as_array().expect("a lan list");
    for peer in lan {
        assert_eq!(peer["source"], "mdns", "{peers}");
    }
    lan.iter().map(|p| p["peer_id"].as_str().expect("a peer id").to_owned()).collect()
}

/// Makes the two daemons contacts of each other, through their invites.
fn introduce(a: &Path, a_name: &str, b: &Path, b_name: &str) {
    let a_invite = json(a, &["invite"])["invite"].as_str().expect("an invite").to_owned();
    let b_invite = json(b, &["invite"])["invite"].as_str().expect("an invite").to_owned();
    check_ok(&kolokol(a, &["contacts", "add", b_name, &b_invite]));
    check_ok(&kolokol(b, &["contacts", "add", a_name, &a_invite]));
}

/// The tests, in a module of their own so that one name leaves them all out where they cannot
/// run: `cargo test -- --skip netns_lab::`.
mod netns_lab {
    use super::*;

    #[test]
    fn nodes_on_one_lan_find_each_other_by_mdns_and_deliver() {
        lab_can_run();
        let mut lab = Lab::new();
        let [a_ip, b_ip] = lab.addresses.clone();
        // mDNS is on by default for `node`: no flag asks for it.
        let bob = lab.daemon(1, "bob", &["node", "--listen", &format!("/ip4/{b_ip}/tcp/0")]);
        let alice = lab.daemon(0, "alice", &["node", "--listen", &format!("/ip4/{a_ip}/tcp/0")]);
        let (alice_id, bob_id) = (peer_id(&alice), peer_id(&bob));

        lab.eventually("alice finds bob on the LAN", || {
            found_on_lan(&alice).contains(&bob_id).then_some(())
        });
        lab.eventually("bob finds alice on the LAN", || {
            found_on_lan(&bob).contains(&alice_id).then_some(())
        });
        let peers = json(&alice, &["peers"]);
        assert_eq!(peers["mdns"], true, "{peers}");
        let lan = &peers["lan"][0];
        assert_eq!(lan["peer_id"], bob_id.as_str(), "{peers}");
        assert!(
            lan["addresses"]
                .as_array()
                .expect("addresses")
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.starts_with(&format!("/ip4/{b_ip}/tcp/")))),
            "bob is announced at his veth address: {peers}"
        );
        let text = check_ok(&kolokol(&alice, &["peers"]));
        assert!(text.contains(&format!("{bob_id}  found via mdns  /ip4/{b_ip}/tcp/")), "{text}");
        let status = json(&alice, &["status"]);
        assert_eq!(status["local_network"], "mDNS on, 1 peer found", "{status}");

        // Neither invite carries an address (no relay, no external address): the only way either
        // node can reach the other is what mDNS found.
        introduce(&alice, "alice", &bob, "bob");
        let sent = json(&alice, &["send", "bob", "hello over the LAN"]);
        let id = sent["id"].as_str().expect("an id").to_owned();
        lab.eventually("bob has the message", || {
            let inbox = json(&bob, &["inbox", "--messages", "--peek"]);
            inbox
                .as_array()
                .expect("a list")
                .iter()
                .any(|m| m["text"] == "hello over the LAN" && m["from"] == "alice")
                .then_some(())
        });
        lab.eventually("alice's message is delivered", || {
            let outbox = json(&alice, &["outbox"]);
            let message = outbox.as_array()?.iter().find(|m| m["id"] == id.as_str())?.clone();
            (message["state"] == "delivered").then_some(())
        });
    }

    #[test]
    fn with_no_mdns_nodes_neither_announce_nor_find_each_other() {
        lab_can_run();
        let mut lab = Lab::new();
        let [a_ip, b_ip] = lab.addresses.clone();
        let bob =
            lab.daemon(1, "bob", &["node", "--no-mdns", "--listen", &format!("/ip4/{b_ip}/tcp/0")]);
        let alice = lab.daemon(
            0,
            "alice",
            &["node", "--no-mdns", "--listen", &format!("/ip4/{a_ip}/tcp/0")],
        );
        let bob_id = peer_id(&bob);
        for dir in [&alice, &bob] {
            lab.eventually("the node listens", || {
                let status = json(dir, &["status"]);
                (!status["listen_addresses"].as_array()?.is_empty()).then_some(())
            });
        }

        // That nothing is found proves little unless something could have been: Dave, next to
        // Bob with mDNS on, answers the first query of Carol, next to Alice with mDNS on, and Bob,
        // already listening, would answer the same query at the same moment if he announced
        // himself. So once Carol has found Dave, she would have found Bob too.
        let dave = lab.daemon(1, "dave", &["node", "--listen", &format!("/ip4/{b_ip}/tcp/0")]);
        let dave_id = peer_id(&dave);
        lab.eventually("dave listens", || {
            let status = json(&dave, &["status"]);
            (!status["listen_addresses"].as_array()?.is_empty()).then_some(())
        });
        let carol = lab.daemon(0, "carol", &["node"]);
        let carol_found = lab.eventually("carol finds dave", || {
            Some(found_on_lan(&carol)).filter(|f| f.contains(&dave_id))
        });
        assert!(!carol_found.contains(&bob_id), "bob announced himself with --no-mdns");

        // With --no-mdns Alice looks for nobody: she has found no one, and her message to Bob,
        // whose invite has no address, has nowhere to go.
        for dir in [&alice, &bob] {
            let peers = json(dir, &["peers"]);
            assert_eq!(peers["mdns"], false, "{peers}");
            assert_eq!(peers["lan"], serde_json::json!([]), "{peers}");
            assert_eq!(json(dir, &["status"])["local_network"], "mDNS off");
        }
        let text = check_ok(&kolokol(&alice, &["peers"]));
        assert!(
            text.contains("found on the local network (mDNS):\n  none (mDNS is off)"),
            "{text}"
        );
        introduce(&alice, "alice", &bob, "bob");
        let sent = json(&alice, &["send", "bob", "nobody can carry this"]);
        assert_eq!(sent["state"], "queued", "{sent}");
    }
}
