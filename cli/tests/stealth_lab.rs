//! The stealth transport against a censor, with real `kolokol` processes in network namespaces
//! this test creates: users in one namespace, a relay in another, and between them a router
//! namespace whose nftables rules are the censor.
//!
//! - `capture_of_a_stealth_exchange_holds_nothing_but_tls`: the users talk through the relay
//!   over the stealth transport only while tcpdump records everything on their link; the
//!   capture contains none of libp2p's identifiers, and every TCP payload, from the first on,
//!   is TLS records.
//! - `a_censor_allowing_only_tcp_443_and_resetting_multistream_stops_nothing`: the censor drops
//!   everything but TCP port 443 and resets any flow that starts with the multistream header;
//!   the users exchange messages both ways, one goes offline and gets its message from the
//!   relay's mailbox, and a plain libp2p TCP connection to the same relay on port 443 is reset
//!   (the negative control: the rule bites).
//!
//! These tests need root (to create namespaces), iproute2's `ip`, nftables' `nft` and
//! `tcpdump`, and fail with one line saying so without them; they sit in `mod netns_lab`, so
//! that `cargo test -- --skip netns_lab::` leaves them out where they cannot run and libtest
//! counts them as filtered out, never as passed.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a daemon's start, a reservation or a delivery may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(90);

/// The pause between two polls of a daemon's state; polls always wait for a state, with a
/// deadline.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Numbers the labs of one test run, so tests running at once get their own namespaces.
static LABS: AtomicUsize = AtomicUsize::new(0);

/// Strings that must never cross the wire in the clear (issue 12, threat model T17).
const FORBIDDEN: [&str; 7] =
    ["/multistream/1.0.0", "/multistream", "/noise", "/yamux", "/kolokol", "/ipfs", "libp2p"];

/// Fails with one line when the lab cannot run here. A test cannot report itself skipped at
/// run time (libtest would count it passed), so a machine without root or these tools leaves
/// the tests out by name instead: `cargo test -- --skip netns_lab::` (as `.ci/run` does).
fn lab_can_run() {
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
        "the stealth lab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces; run it as root, or leave it out with `cargo test -- --skip netns_lab::`"
    );
    for (tool, arg) in [("ip", "-V"), ("nft", "--version"), ("tcpdump", "--version")] {
        assert!(
            Command::new(tool).arg(arg).output().is_ok_and(|o| o.status.success()),
            "the stealth lab needs `{tool}` (apt-get install iproute2 nftables tcpdump), or leave it out with `cargo test -- --skip netns_lab::`"
        );
    }
}

/// Users (`u`) behind a censor router (`c`) in front of a relay (`r`). The relay's link has
/// two addresses: `.2` for the stealth listener, `.3` for a plain libp2p TCP listener.
struct Lab {
    namespaces: Vec<String>,
    n: usize,
    daemons: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Self {
        let n = LABS.fetch_add(1, Ordering::Relaxed) + 1;
        let name = |side: &str| format!("kst-{}-{n}-{side}", std::process::id());
        let mut lab = Self {
            namespaces: Vec::new(),
            n,
            daemons: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for side in ["u", "c", "r"] {
            ip(&["netns", "add", &name(side)]);
            lab.namespaces.push(name(side));
        }
        let (u, c, r) = (lab.ns(0), lab.ns(1), lab.ns(2));
        ip(&["-n", &u, "link", "add", "u0", "type", "veth", "peer", "name", "c0", "netns", &c]);
        ip(&["-n", &r, "link", "add", "r0", "type", "veth", "peer", "name", "c1", "netns", &c]);
        for (ns, link, addrs) in [
            (&u, "u0", vec![format!("10.61.{n}.2/24")]),
            (&c, "c0", vec![format!("10.61.{n}.1/24")]),
            (&c, "c1", vec![format!("10.62.{n}.1/24")]),
            (&r, "r0", vec![format!("10.62.{n}.2/24"), format!("10.62.{n}.3/24")]),
        ] {
            for a in addrs {
                ip(&["-n", ns, "addr", "add", &a, "dev", link]);
            }
            ip(&["-n", ns, "link", "set", link, "up"]);
        }
        for ns in [&u, &c, &r] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", &u, "route", "add", "default", "via", &format!("10.61.{n}.1")]);
        ip(&["-n", &r, "route", "add", "default", "via", &format!("10.62.{n}.1")]);
        run_in(&c, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab
    }

    fn ns(&self, i: usize) -> String {
        self.namespaces[i].clone()
    }

    /// The relay's stealth and plain addresses (IP only).
    fn relay_ips(&self) -> (String, String) {
        (format!("10.62.{}.2", self.n), format!("10.62.{}.3", self.n))
    }

    /// The censor: only TCP port 443 passes, and a flow whose payload starts with the
    /// multistream header (in one packet, or its `0x13` alone first) is reset.
    fn censor(&self) {
        let rules = "table inet censor {\n\
            chain forward {\n\
              type filter hook forward priority filter; policy drop;\n\
              meta l4proto tcp @ih,0,64 0x132f6d756c746973 counter reject with tcp reset comment \"multistream\"\n\
              meta l4proto tcp @ih,0,96 0x2f6d756c746973747265616d counter reject with tcp reset comment \"multistream-split\"\n\
              tcp dport 443 counter accept comment \"to-443\"\n\
              tcp sport 443 counter accept comment \"from-443\"\n\
              counter comment \"dropped\"\n\
            }\n\
          }\n";
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(1), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft runs");
        use std::io::Write as _;
        child.stdin.take().expect("stdin").write_all(rules.as_bytes()).expect("rules");
        assert!(child.wait().expect("nft").success(), "nft refused the censor's rules");
    }

    /// The packet count of the censor rule with `comment`.
    fn counter(&self, comment: &str) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(1),
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

    /// Stops the daemon called `name` with SIGTERM, as an operator would, and waits for it.
    fn stop(&mut self, name: &str) {
        let i = self.daemons.iter().position(|(n, _)| n == name).expect("a daemon of that name");
        let (_, mut child) = self.daemons.remove(i);
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
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

    /// Starts the relay with `args` after `relay` and returns its data dir and its stealth
    /// address on `.2:443`, with its peer id.
    fn relay(&mut self, args: &[&str]) -> (PathBuf, String) {
        let (stealth_ip, _) = self.relay_ips();
        let mut full = vec!["relay"];
        full.extend_from_slice(args);
        let relay = self.daemon(2, "relay", &full);
        let id = peer_id(&relay);
        let prefix = format!("/ip4/{stealth_ip}/tcp/443/tls/");
        let address = self.eventually("the relay has a stealth address", || {
            let status = json(&relay, &["status"]);
            status["external_addresses"]
                .as_array()?
                .iter()
                .filter_map(|a| a.as_str())
                .find(|a| a.starts_with(&prefix) && a.contains("/http-path/"))
                .map(str::to_owned)
        });
        let address =
            if address.contains("/p2p/") { address } else { format!("{address}/p2p/{id}") };
        (relay, address)
    }

    /// Starts a user with only the stealth transport, bootstrapping from `relay`, and waits
    /// for its reservation.
    fn stealth_user(&mut self, name: &str, relay: &str) -> PathBuf {
        let dir = self.daemon(
            0,
            name,
            &["node", "--no-mdns", "--transport", "stealth", "--bootstrap", relay],
        );
        self.eventually(&format!("{name} holds a relay reservation"), || {
            let status = json(&dir, &["status"]);
            (!status["relay_reservations"].as_array()?.is_empty()).then_some(())
        });
        dir
    }

    /// Sends `text` from `from` to the contact `to` and waits until `recipient` has it.
    fn exchange(&self, from: &Path, to: &str, recipient: &Path, sender_name: &str, text: &str) {
        check_ok(&kolokol(from, &["send", to, text]));
        self.eventually(&format!("{to} has {text:?}"), || {
            let inbox = json(recipient, &["inbox", "--messages", "--peek"]);
            inbox
                .as_array()?
                .iter()
                .any(|m| m["text"] == text && m["from"] == sender_name)
                .then_some(())
        });
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

/// A TCP flow in one direction: source address and port, destination address and port.
type Flow = (u32, u16, u32, u16);

/// One TCP segment from a capture.
struct Segment {
    flow: Flow,
    seq: u32,
    payload: Vec<u8>,
}

/// The IPv4 packets of a pcap file (Ethernet link type): TCP segments with their payload,
/// and a description of every packet that is not TCP.
fn read_pcap(bytes: &[u8]) -> (Vec<Segment>, Vec<String>) {
    assert!(bytes.len() >= 24, "not a pcap file");
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "not a little-endian pcap file: {magic:x}"
    );
    let link = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    assert_eq!(link, 1, "expected an Ethernet capture");
    let (mut segments, mut other) = (Vec::new(), Vec::new());
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
        let frame = &bytes[at + 16..(at + 16 + len).min(bytes.len())];
        at += 16 + len;
        if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
            continue; // ARP, IPv6 neighbour discovery: not traffic between the nodes.
        }
        let ip = &frame[14..];
        // A packet cut short (the file read while tcpdump writes it) is left for the next read.
        if ip.len() < 20 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        let (src, dst) = (
            u32::from_be_bytes(ip[12..16].try_into().expect("4 bytes")),
            u32::from_be_bytes(ip[16..20].try_into().expect("4 bytes")),
        );
        if ip[9] != 6 {
            other.push(format!("IP protocol {} from {src:x} to {dst:x}", ip[9]));
            continue;
        }
        let Some(tcp) = ip.get(ihl..total).filter(|t| t.len() >= 20) else { continue };
        let (sport, dport) =
            (u16::from_be_bytes([tcp[0], tcp[1]]), u16::from_be_bytes([tcp[2], tcp[3]]));
        let seq = u32::from_be_bytes(tcp[4..8].try_into().expect("4 bytes"));
        let offset = usize::from(tcp[12] >> 4) * 4;
        let payload = tcp[offset.min(tcp.len())..].to_vec();
        if !payload.is_empty() {
            segments.push(Segment { flow: (src, sport, dst, dport), seq, payload });
        }
    }
    (segments, other)
}

/// Each direction of each TCP flow, reassembled in sequence order (retransmissions dropped).
fn streams(segments: &[Segment]) -> Vec<(Flow, Vec<u8>)> {
    let mut flows: Vec<(Flow, Vec<&Segment>)> = Vec::new();
    for s in segments {
        match flows.iter_mut().find(|(f, _)| *f == s.flow) {
            Some((_, list)) => list.push(s),
            None => flows.push((s.flow, vec![s])),
        }
    }
    flows
        .into_iter()
        .map(|(flow, mut list)| {
            let base = list.iter().map(|s| s.seq).min().expect("a segment");
            list.sort_by_key(|s| s.seq.wrapping_sub(base));
            let mut stream: Vec<u8> = Vec::new();
            for s in list {
                let start = s.seq.wrapping_sub(base) as usize;
                assert!(start <= stream.len(), "a gap in the capture of flow {flow:x?}");
                let skip = stream.len() - start;
                if skip < s.payload.len() {
                    stream.extend_from_slice(&s.payload[skip..]);
                }
            }
            (flow, stream)
        })
        .collect()
}

/// Checks that `stream` is a sequence of whole TLS records; returns how many.
fn tls_records(flow: &Flow, stream: &[u8]) -> usize {
    let mut rest = stream;
    let mut count = 0;
    while !rest.is_empty() {
        assert!(
            rest.len() >= 5,
            "flow {flow:x?}: {} stray bytes after {count} TLS records",
            rest.len()
        );
        let (kind, version) = (rest[0], u16::from_be_bytes([rest[1], rest[2]]));
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        assert!(
            (20..=23).contains(&kind)
                && (0x0301..=0x0303).contains(&version)
                && len <= 16_384 + 256,
            "flow {flow:x?}: record {count} is not a TLS record: {:02x?}",
            &rest[..5]
        );
        assert!(rest.len() >= 5 + len, "flow {flow:x?}: record {count} is cut short");
        rest = &rest[5 + len..];
        count += 1;
    }
    count
}

/// The tests, in one module so that `--skip netns_lab::` leaves them out by name.
mod netns_lab {
    use super::*;

    #[test]
    fn capture_of_a_stealth_exchange_holds_nothing_but_tls() {
        lab_can_run();
        let mut lab = Lab::new();
        let pcap = lab.dir.path().join("users.pcap");
        let mut tcpdump = Command::new("ip")
            .args(["netns", "exec", &lab.ns(0), "tcpdump", "-i", "u0", "-s", "0", "-U", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump starts");
        // tcpdump says "listening on u0" once it captures.
        let stderr = tcpdump.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        assert!(
            lines.next().and_then(Result::ok).is_some_and(|l| l.contains("listening on")),
            "tcpdump did not start"
        );
        std::thread::spawn(move || for _ in lines {});

        // `kolokol relay` with no --listen: TCP and QUIC on 4001, stealth on 443.
        let (relay, address) = lab.relay(&[]);
        let status = json(&relay, &["status"]);
        let listen: Vec<&str> = status["listen_addresses"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        for expected in ["/tcp/4001", "/udp/4001/quic-v1", "/tcp/443/tls/http/http-path/"] {
            assert!(listen.iter().any(|a| a.contains(expected)), "no {expected} in {listen:?}");
        }
        let alice = lab.stealth_user("alice", &address);
        let bob = lab.stealth_user("bob", &address);
        introduce(&alice, "alice", &bob, "bob");
        lab.exchange(&alice, "bob", &bob, "alice", "hello through the stealth transport");
        lab.exchange(&bob, "alice", &alice, "bob", "and hello back");
        // The users end their connections, so every stream in the capture ends with its last
        // record; then the capture stops.
        lab.stop("alice");
        lab.stop("bob");
        // tcpdump writes each packet as it captures it (-U); wait until the file holds the
        // exchange (both users' connections, both ways) before stopping it.
        lab.eventually("the capture holds the exchange", || {
            let bytes = std::fs::read(&pcap).ok()?;
            (bytes.len() >= 24 && streams(&read_pcap(&bytes).0).len() >= 4).then_some(())
        });
        let _ = Command::new("kill").args(["-TERM", &tcpdump.id().to_string()]).status();
        let _ = tcpdump.wait();

        let bytes = std::fs::read(&pcap).expect("the capture");
        for needle in FORBIDDEN {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle:?} crossed the wire in the clear"
            );
        }
        let (segments, other) = read_pcap(&bytes);
        println!(
            "the capture holds {} bytes, {} TCP segments with a payload",
            bytes.len(),
            segments.len()
        );
        assert!(other.is_empty(), "traffic other than TCP: {other:?}");
        let (stealth_ip, _) = lab.relay_ips();
        let relay: u32 = u32::from(stealth_ip.parse::<std::net::Ipv4Addr>().expect("ip"));
        for s in &segments {
            let (src, sport, dst, dport) = s.flow;
            assert!(
                (dst == relay && dport == 443) || (src == relay && sport == 443),
                "a TCP segment not to or from the stealth listener: {:x?}",
                s.flow
            );
        }
        let flows = streams(&segments);
        assert!(flows.len() >= 4, "expected both users' connections, both ways: {}", flows.len());
        let mut records = 0;
        for (flow, stream) in &flows {
            // A client's first byte is a TLS handshake record (its ClientHello).
            if flow.3 == 443 {
                assert_eq!(
                    stream.first(),
                    Some(&0x16),
                    "flow {flow:x?} does not start with a handshake"
                );
            }
            records += tls_records(flow, stream);
        }
        println!(
            "captured {} TCP segments in {} streams, {records} TLS records",
            segments.len(),
            flows.len()
        );
    }

    #[test]
    fn a_censor_allowing_only_tcp_443_and_resetting_multistream_stops_nothing() {
        lab_can_run();
        let mut lab = Lab::new();
        lab.censor();
        let (stealth_ip, plain_ip) = lab.relay_ips();
        let (relay, address) = lab.relay(&[
            "--listen",
            &format!("/ip4/{stealth_ip}/tcp/443/tls/http"),
            "--listen",
            &format!("/ip4/{plain_ip}/tcp/443"),
        ]);
        let alice = lab.stealth_user("alice", &address);
        let bob = lab.stealth_user("bob", &address);
        introduce(&alice, "alice", &bob, "bob");
        lab.exchange(&alice, "bob", &bob, "alice", "through the censor");
        lab.exchange(&bob, "alice", &alice, "bob", "and back through it");

        // Bob goes offline; Alice's message waits in the relay's mailbox until he is back.
        lab.stop("bob");
        let sent = json(&alice, &["send", "bob", "while you were away"]);
        let id = sent["id"].as_str().expect("an id").to_owned();
        lab.eventually("alice's message is stored in a mailbox", || {
            let outbox = json(&alice, &["outbox"]);
            let m = outbox.as_array()?.iter().find(|m| m["id"] == id.as_str())?.clone();
            (m["state"] == "stored").then_some(())
        });
        lab.daemon(
            0,
            "bob",
            &["node", "--no-mdns", "--transport", "stealth", "--bootstrap", &address],
        );
        lab.exchange_wait(&bob, "alice", "while you were away");
        assert_eq!(lab.counter("multistream") + lab.counter("multistream-split"), 0);
        assert!(lab.counter("to-443") > 0 && lab.counter("from-443") > 0);

        // The negative control: plain libp2p over TCP to the same relay, on port 443 too, is
        // reset by the rule, and never connects.
        let relay_id = peer_id(&relay);
        let carol = lab.daemon(
            0,
            "carol",
            &[
                "node",
                "--no-mdns",
                "--bootstrap",
                &format!("/ip4/{plain_ip}/tcp/443/p2p/{relay_id}"),
            ],
        );
        lab.eventually("the censor resets carol's multistream header", || {
            (lab.counter("multistream") + lab.counter("multistream-split") > 0).then_some(())
        });
        let status = json(&carol, &["status"]);
        assert_eq!(status["connected_peers"], 0, "carol got through: {status}");
        println!(
            "censor counters: multistream resets {} + {}, to 443 {}, from 443 {}, dropped {}",
            lab.counter("multistream"),
            lab.counter("multistream-split"),
            lab.counter("to-443"),
            lab.counter("from-443"),
            lab.counter("dropped")
        );
    }

    impl Lab {
        /// Waits until `recipient` has `text` from `sender_name`.
        fn exchange_wait(&self, recipient: &Path, sender_name: &str, text: &str) {
            self.eventually(&format!("{text:?} arrives"), || {
                let inbox = json(recipient, &["inbox", "--messages", "--peek"]);
                inbox
                    .as_array()?
                    .iter()
                    .any(|m| m["text"] == text && m["from"] == sender_name)
                    .then_some(())
            });
        }
    }
}
