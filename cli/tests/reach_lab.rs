//! Staying reachable while a censor escalates (issue 13), with real `kolokol` processes in
//! network namespaces this test creates: two users on one LAN (namespaces `a` and `b`, joined
//! by a bridge in the router namespace `c`), and abroad (namespace `r`) a relay and a contact.
//! The router's nftables rules are the censor.
//!
//! - `users_on_one_lan_keep_talking_while_the_border_is_cut`: the censor drops everything
//!   that crosses the border. Alice and Bob, with default settings (no `--listen`), keep
//!   talking over their LAN; a message Alice queues for Dave abroad waits (the negative
//!   control: the cut bites) and arrives once the border opens again, none lost.
//! - `a_network_that_lets_only_tcp_443_out_still_reaches_the_relay`: the censor drops
//!   everything but TCP port 443. Alice, with default settings and the relay's bootstrap lines
//!   (TCP and QUIC on 4001 first, the stealth listener on 443 last), reaches the relay on 443
//!   and talks with Dave both ways; a TCP connection to the relay's port 4001 from her
//!   namespace does not get through (the negative control).
//! - `a_relay_with_one_address_blocked_is_reached_at_its_other_address`: the relay has two IP
//!   addresses and the censor drops everything to the first, the one Alice's first bootstrap
//!   line names. Alice reaches the relay at the second and talks with Dave both ways; a TCP
//!   connection to the first from her namespace does not get through, and one to the second
//!   does (the controls).
//! - `a_reset_endpoint_gives_way_to_another_within_seconds`: Alice is connected to the relay on
//!   TCP 4001 when the censor starts resetting every packet to that port. Her next message to
//!   Dave goes out through the relay's stealth listener on 443 instead; a TCP connection to
//!   4001 from her namespace is reset (the negative control).
//!
//! They need root (to create namespaces), iproute2's `ip` and nftables' `nft`, and fail with
//! one line saying so without them; they sit in `mod netns_lab`, so that
//! `cargo test -- --skip netns_lab::` leaves them out where they cannot run.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a daemon's start, a reservation or a delivery may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The pause between two polls of a daemon's state; polls always wait for a state, with a
/// deadline.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Numbers the labs of one test run, so tests running at once get their own namespaces.
static LABS: AtomicUsize = AtomicUsize::new(0);

/// Fails with one line when the lab cannot run here. A test cannot report itself skipped at
/// run time, so where there is no root the tests are left out by name instead:
/// `cargo test -- --skip netns_lab::` (as `.ci/run` does).
fn require_lab() {
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
        "the reachability lab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces; run it as root, or leave it out with `cargo test -- --skip netns_lab::`"
    );
    for (tool, arg) in [("ip", "-V"), ("nft", "--version")] {
        assert!(
            Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success()),
            "the reachability lab needs `{tool}` (apt-get install iproute2 nftables), or leave it out with `cargo test -- --skip netns_lab::`"
        );
    }
}

/// The namespaces, by index.
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const R: usize = 3;

/// Alice (`a`) and Bob (`b`) on a LAN `10.65.<n>.0/24` whose gateway is the router (`c`),
/// and abroad (`r`, `10.66.<n>.2`) the relay and Dave.
struct Lab {
    namespaces: Vec<String>,
    n: usize,
    daemons: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        let n = LABS.fetch_add(1, Ordering::Relaxed) + 1;
        let name = |side: &str| format!("krl-{}-{n}-{side}", std::process::id());
        let mut lab = Self {
            namespaces: Vec::new(),
            n,
            daemons: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for side in ["a", "b", "c", "r"] {
            ip(&["netns", "add", &name(side)]);
            lab.namespaces.push(name(side));
        }
        let (a, b, c, r) = (lab.ns(A), lab.ns(B), lab.ns(C), lab.ns(R));
        ip(&["-n", &c, "link", "add", "lan", "type", "bridge"]);
        ip(&["-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "pa", "netns", &c]);
        ip(&["-n", &b, "link", "add", "eth0", "type", "veth", "peer", "name", "pb", "netns", &c]);
        ip(&["-n", &r, "link", "add", "eth0", "type", "veth", "peer", "name", "pr", "netns", &c]);
        for port in ["pa", "pb"] {
            ip(&["-n", &c, "link", "set", port, "master", "lan", "up"]);
        }
        ip(&["-n", &c, "link", "set", "pr", "up"]);
        ip(&["-n", &c, "addr", "add", &format!("10.65.{n}.1/24"), "dev", "lan"]);
        ip(&["-n", &c, "addr", "add", &format!("10.66.{n}.1/24"), "dev", "pr"]);
        ip(&["-n", &c, "link", "set", "lan", "up"]);
        for (ns, address, gateway) in [
            (&a, format!("10.65.{n}.2/24"), format!("10.65.{n}.1")),
            (&b, format!("10.65.{n}.3/24"), format!("10.65.{n}.1")),
            (&r, format!("10.66.{n}.2/24"), format!("10.66.{n}.1")),
        ] {
            ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "multicast", "on", "up"]);
            ip(&["-n", ns, "route", "add", "default", "via", &gateway]);
        }
        for ns in [&a, &b, &c, &r] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        run_in(&c, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab
    }

    fn ns(&self, i: usize) -> String {
        self.namespaces[i].clone()
    }

    /// The relay's address abroad (IP only).
    fn relay_ip(&self) -> String {
        format!("10.66.{}.2", self.n)
    }

    /// Loads the censor's `rules` (the body of its forward chain) into the router.
    fn censor(&self, rules: &str) {
        let table = format!(
            "table inet censor {{\n chain forward {{\n  type filter hook forward priority filter; policy accept;\n{rules}\n }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(C), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft runs");
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(table.as_bytes()).expect("rules");
        assert!(child.wait().expect("nft").success(), "nft refused the censor's rules");
    }

    /// Cuts the border: nothing crosses between the LAN and abroad (the router's link `pr`).
    /// The rules name that link, since with `br_netfilter` loaded the LAN's bridged traffic
    /// passes the forward hook too, and the LAN is not the censor's to cut.
    fn cut_border(&self) {
        self.censor(
            "  iifname \"pr\" counter drop comment \"border\"\n\
               oifname \"pr\" counter drop comment \"border-out\"",
        );
    }

    /// Only TCP to and from port 443 crosses the border.
    fn only_443(&self) {
        self.censor(
            "  oifname \"pr\" tcp dport 443 counter accept comment \"to-443\"\n\
               iifname \"pr\" tcp sport 443 counter accept comment \"from-443\"\n\
               iifname \"pr\" counter drop comment \"dropped-in\"\n\
               oifname \"pr\" counter drop comment \"dropped\"",
        );
    }

    /// Drops everything between the LAN and the relay's first address, as a censor that
    /// blocked that one address would.
    fn block_address(&self, blocked: &str) {
        self.censor(&format!(
            "  oifname \"pr\" ip daddr {blocked} counter drop comment \"blocked\"\n\
               iifname \"pr\" ip saddr {blocked} counter drop comment \"blocked-in\""
        ));
    }

    /// Answers every packet from the LAN to `ip:port` with a TCP reset, established
    /// connections included (the censor's RST injection).
    fn reset_endpoint(&self, ip: &str, port: u16) {
        self.censor(&format!(
            "  oifname \"pr\" ip daddr {ip} tcp dport {port} counter reject with tcp reset comment \"reset\""
        ));
    }

    /// The relay's second address abroad (IP only), added to its namespace.
    fn second_relay_ip(&self) -> String {
        let second = format!("10.66.{}.3", self.n);
        ip(&["-n", &self.ns(R), "addr", "add", &format!("{second}/24"), "dev", "eth0"]);
        second
    }

    /// Lifts the censor's rules.
    fn heal(&self) {
        run_in(&self.ns(C), &["nft", "delete", "table", "inet", "censor"]);
    }

    /// The packet count of the censor rule with `comment`.
    fn counter(&self, comment: &str) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(C),
                "nft",
                "list",
                "chain",
                "inet",
                "censor",
                "forward",
            ])
            .output()
            .expect("nft runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains(&format!("comment \"{comment}\"")))
            .unwrap_or_else(|| panic!("no rule {comment:?} in:\n{text}"));
        let after = line.split("packets ").nth(1).expect("a counter");
        after.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a count")
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `kolokol --data-dir <dir of name> <args>` in namespace `ns` and waits for its
    /// "running" line.
    fn daemon(&mut self, ns: usize, name: &str, args: &[&str]) -> PathBuf {
        let dir = self.data_dir(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .expect("log");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.namespaces[ns]])
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
        let stdout = child.stdout.take().expect("stdout");
        self.daemons.push((name.to_owned(), child));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        loop {
            match lines.recv_timeout(TIMEOUT) {
                Ok(line) if line.contains(" running, peer id ") => return dir,
                Ok(_) => {}
                Err(_) => panic!("{name} did not start in time; its log:\n{}", self.logs()),
            }
        }
    }

    fn logs(&self) -> String {
        let mut logs = String::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("lab dir").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                logs.push_str(&format!("--- {}\n{text}", path.display()));
            }
        }
        logs
    }

    #[track_caller]
    fn eventually<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; the daemons' logs:\n{}",
                self.logs()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Starts the relay abroad with `listen` and returns its data dir and its addresses, each
    /// with `/p2p/<id>`, in the order of `listen`.
    fn relay(&mut self, listen: &[String]) -> (PathBuf, Vec<String>) {
        let mut args = vec!["relay".to_owned()];
        for l in listen {
            args.extend(["--listen".to_owned(), l.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let relay = self.daemon(R, "relay", &args);
        let id = peer_id(&relay);
        let addresses = listen
            .iter()
            .map(|l| {
                self.eventually(&format!("the relay listens on {l}"), || {
                    let status = json(&relay, &["status"]);
                    let prefix = l.trim_end_matches("/http");
                    status["external_addresses"]
                        .as_array()?
                        .iter()
                        .chain(status["listen_addresses"].as_array()?.iter())
                        .filter_map(|a| a.as_str())
                        .find(|a| a.starts_with(prefix))
                        .map(|a| {
                            let a = a.split("/p2p/").next().unwrap_or(a);
                            format!("{a}/p2p/{id}")
                        })
                })
            })
            .collect();
        (relay, addresses)
    }

    /// Starts a user called `name` in namespace `ns` with `args` after `node`, and waits for
    /// its relay reservation.
    fn user(&mut self, ns: usize, name: &str, args: &[&str]) -> PathBuf {
        let mut full = vec!["node"];
        full.extend_from_slice(args);
        let dir = self.daemon(ns, name, &full);
        self.eventually(&format!("{name} holds a relay reservation"), || {
            let status = json(&dir, &["status"]);
            (!status["relay_reservations"].as_array()?.is_empty()).then_some(())
        });
        dir
    }

    /// Waits until `recipient` has `text` from `sender_name`.
    fn arrives(&self, recipient: &Path, sender_name: &str, text: &str) {
        self.eventually(&format!("{text:?} arrives"), || {
            let inbox = json(recipient, &["inbox", "--messages", "--peek"]);
            inbox
                .as_array()?
                .iter()
                .any(|m| m["text"] == text && m["from"] == sender_name)
                .then_some(())
        });
    }

    /// Sends `text` from `from` to the contact `to` and waits until `recipient` has it.
    fn exchange(&self, from: &Path, to: &str, recipient: &Path, sender_name: &str, text: &str) {
        let sent = check_ok(&kolokol(from, &["send", to, text]));
        println!("sent {text:?}: {}", sent.trim());
        self.arrives(recipient, sender_name, text);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

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

#[track_caller]
fn run_in(ns: &str, args: &[&str]) {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("runs");
    assert!(out.status.success(), "{args:?} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
}

fn kolokol(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kolokol"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("KOLOKOL_HOME")
        .output()
        .expect("the binary runs")
}

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

fn introduce(a: &Path, a_name: &str, b: &Path, b_name: &str) {
    let a_invite = json(a, &["invite"])["invite"].as_str().expect("an invite").to_owned();
    let b_invite = json(b, &["invite"])["invite"].as_str().expect("an invite").to_owned();
    check_ok(&kolokol(a, &["contacts", "add", b_name, &b_invite]));
    check_ok(&kolokol(b, &["contacts", "add", a_name, &a_invite]));
}

/// The state of the message `id` in the outbox of `dir`.
fn state(dir: &Path, id: &str) -> String {
    let outbox = json(dir, &["outbox"]);
    let m = outbox.as_array().and_then(|o| o.iter().find(|m| m["id"] == id)).cloned();
    m.and_then(|m| m["state"].as_str().map(str::to_owned)).unwrap_or_default()
}

/// Whether a TCP connection from namespace `ns` to `ip:port` is made within three seconds.
fn tcp_connects(ns: &str, ip: &str, port: u16) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "3", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
        .status()
        .is_ok_and(|s| s.success())
}

/// The tests, in one module so that `--skip netns_lab::` leaves them out by name.
mod netns_lab {
    use super::*;

    #[test]
    fn users_on_one_lan_keep_talking_while_the_border_is_cut() {
        require_lab();
        let mut lab = Lab::new();
        let relay_ip = lab.relay_ip();
        let (_relay, addresses) = lab.relay(&[format!("/ip4/{relay_ip}/tcp/4001")]);
        let relay = addresses[0].clone();
        let dave = lab.user(R, "dave", &["--no-mdns", "--bootstrap", &relay]);
        // Alice and Bob run with the defaults a user gets: mDNS on, no --listen.
        let alice = lab.user(A, "alice", &["--bootstrap", &relay]);
        let bob = lab.user(B, "bob", &["--bootstrap", &relay]);
        introduce(&alice, "alice", &bob, "bob");
        introduce(&alice, "alice", &dave, "dave");
        lab.exchange(&alice, "dave", &dave, "alice", "before the cut");
        lab.exchange(&alice, "bob", &bob, "alice", "on the LAN before the cut");

        lab.cut_border();
        // The negative control: Dave is abroad, and what Alice sends him now waits.
        let sent = json(&alice, &["send", "dave", "queued during the cut"]);
        let to_dave = sent["id"].as_str().expect("an id").to_owned();
        println!("sent to dave during the cut: {sent}");
        for i in 0..3 {
            lab.exchange(&alice, "bob", &bob, "alice", &format!("over the LAN {i}"));
            lab.exchange(&bob, "alice", &alice, "bob", &format!("and back over the LAN {i}"));
        }
        lab.eventually("the cut drops the border's traffic", || {
            (lab.counter("border-out") > 0).then_some(())
        });
        assert_ne!(state(&alice, &to_dave), "delivered", "a message crossed the cut border");
        let dave_inbox = json(&dave, &["inbox", "--messages", "--peek"]);
        assert!(
            !dave_inbox.to_string().contains("queued during the cut"),
            "dave got a message across the cut border: {dave_inbox}"
        );

        lab.heal();
        let healed = Instant::now();
        lab.arrives(&dave, "alice", "queued during the cut");
        println!(
            "the message queued during the cut arrived {:.1} s after the border opened",
            healed.elapsed().as_secs_f64()
        );
        lab.eventually("alice's message to dave is delivered", || {
            (state(&alice, &to_dave) == "delivered").then_some(())
        });
        // None lost: every message of the test is in its recipient's inbox.
        let bob_inbox = json(&bob, &["inbox", "--messages", "--peek"]).to_string();
        let alice_inbox = json(&alice, &["inbox", "--messages", "--peek"]).to_string();
        for i in 0..3 {
            assert!(bob_inbox.contains(&format!("over the LAN {i}")), "{bob_inbox}");
            assert!(alice_inbox.contains(&format!("and back over the LAN {i}")), "{alice_inbox}");
        }
    }

    #[test]
    fn a_network_that_lets_only_tcp_443_out_still_reaches_the_relay() {
        require_lab();
        let mut lab = Lab::new();
        lab.only_443();
        let relay_ip = lab.relay_ip();
        // What `kolokol relay` listens on by default, in the order it prints its bootstrap lines.
        let (_relay, addresses) = lab.relay(&[
            format!("/ip4/{relay_ip}/tcp/4001"),
            format!("/ip4/{relay_ip}/udp/4001/quic-v1"),
            format!("/ip4/{relay_ip}/tcp/443/tls/http"),
        ]);
        let dave = lab.user(R, "dave", &["--no-mdns", "--bootstrap", &addresses[0]]);
        // Alice has every bootstrap line and the default settings (every transport).
        let mut args = vec!["--no-mdns"];
        for a in &addresses {
            args.extend(["--bootstrap", a.as_str()]);
        }
        let alice = lab.user(A, "alice", &args);
        introduce(&alice, "alice", &dave, "dave");
        lab.exchange(&alice, "dave", &dave, "alice", "out through 443");
        lab.exchange(&dave, "alice", &alice, "dave", "and in through 443");
        assert!(lab.counter("to-443") > 0 && lab.counter("from-443") > 0);

        // The negative control: the relay's TCP port 4001 is closed to Alice's network, and the
        // rule that closes it has dropped her node's own attempts too.
        assert!(tcp_connects(&lab.ns(R), &relay_ip, 4001), "the relay listens on 4001");
        assert!(!tcp_connects(&lab.ns(A), &relay_ip, 4001), "4001 got through the censor");
        assert!(lab.counter("dropped") > 0);
        let doctor = kolokol(&alice, &["doctor"]);
        println!("alice's doctor:\n{}", String::from_utf8_lossy(&doctor.stdout));
    }

    #[test]
    fn a_relay_with_one_address_blocked_is_reached_at_its_other_address() {
        require_lab();
        let mut lab = Lab::new();
        let blocked = lab.relay_ip();
        let open = lab.second_relay_ip();
        lab.block_address(&blocked);
        let (_relay, addresses) =
            lab.relay(&[format!("/ip4/{blocked}/tcp/4001"), format!("/ip4/{open}/tcp/4001")]);
        let dave = lab.user(R, "dave", &["--no-mdns", "--bootstrap", &addresses[0]]);
        // Alice's first bootstrap line is the blocked address.
        let started = Instant::now();
        let alice = lab.user(
            A,
            "alice",
            &["--no-mdns", "--bootstrap", &addresses[0], "--bootstrap", &addresses[1]],
        );
        println!(
            "alice held a reservation {:.1} s after her start",
            started.elapsed().as_secs_f64()
        );
        introduce(&alice, "alice", &dave, "dave");
        lab.exchange(&alice, "dave", &dave, "alice", "around the blocked address");
        lab.exchange(&dave, "alice", &alice, "dave", "and back around it");

        // The controls: the blocked address is blocked (and Alice's node ran into it), the
        // other is open.
        assert!(tcp_connects(&lab.ns(R), &blocked, 4001), "the relay listens on {blocked}");
        assert!(!tcp_connects(&lab.ns(A), &blocked, 4001), "{blocked} got through the censor");
        assert!(tcp_connects(&lab.ns(A), &open, 4001), "{open} is open to the LAN");
        assert!(lab.counter("blocked") > 0, "alice's node never tried the blocked address");
        let peers = json(&alice, &["peers"]);
        let relay_id = peer_id(&_relay);
        let via: Vec<&str> = peers["connected"]
            .as_array()
            .expect("connections")
            .iter()
            .filter(|c| c["peer_id"] == relay_id.as_str())
            .filter_map(|c| c["address"].as_str())
            .collect();
        println!("alice's connections to the relay: {via:?}");
        assert!(via.iter().all(|a| !a.contains(&format!("/{blocked}/"))), "{via:?}");
    }

    #[test]
    fn a_reset_endpoint_gives_way_to_another_within_seconds() {
        require_lab();
        let mut lab = Lab::new();
        let relay_ip = lab.relay_ip();
        let (relay, addresses) = lab.relay(&[
            format!("/ip4/{relay_ip}/tcp/4001"),
            format!("/ip4/{relay_ip}/tcp/443/tls/http"),
        ]);
        let relay_id = peer_id(&relay);
        let dave = lab.user(R, "dave", &["--no-mdns", "--bootstrap", &addresses[0]]);
        let alice = lab.user(
            A,
            "alice",
            &["--no-mdns", "--bootstrap", &addresses[0], "--bootstrap", &addresses[1]],
        );
        introduce(&alice, "alice", &dave, "dave");
        lab.exchange(&alice, "dave", &dave, "alice", "before the resets");
        // Alice's connection to the relay is on 4001, the endpoint the censor is about to
        // reset: her first bootstrap line, which answers at once.
        let on_4001 = || {
            let peers = json(&alice, &["peers"]);
            peers["connected"].as_array().is_some_and(|c| {
                c.iter().any(|c| {
                    c["peer_id"] == relay_id.as_str()
                        && c["address"].as_str().is_some_and(|a| a.contains("/tcp/4001"))
                })
            })
        };
        assert!(
            on_4001(),
            "alice is not connected to the relay on 4001: {}",
            json(&alice, &["peers"])
        );

        lab.reset_endpoint(&relay_ip, 4001);
        let reset = Instant::now();
        lab.exchange(&alice, "dave", &dave, "alice", "after the resets began");
        println!(
            "the first message after the resets began arrived {:.1} s later",
            reset.elapsed().as_secs_f64()
        );
        lab.exchange(&dave, "alice", &alice, "dave", "and back after them");
        // The negative control: 4001 is reset for everyone on the LAN, and the rule bit
        // Alice's own connection.
        assert!(tcp_connects(&lab.ns(R), &relay_ip, 4001), "the relay listens on 4001");
        assert!(!tcp_connects(&lab.ns(A), &relay_ip, 4001), "4001 got through the resets");
        assert!(lab.counter("reset") > 0);
        assert!(!on_4001(), "alice still has a connection on the reset endpoint");
    }
}
