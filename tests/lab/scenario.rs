//! What every scenario is built from: a fresh lab network, the daemons of the cast, the censor's
//! controls (nftables, tc, the censor proxy), the helpers, traffic and captures, and the
//! scenario's outcome. A [`Ctx`] owns all of it; dropping it stops every process and deletes
//! every namespace, whether the scenario passed, failed or panicked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::capture::Capture;
use crate::clock::{POLL, now_ms};
use crate::daemon::{Daemon, reservations};
use crate::registry;
use crate::report::{Control, Criterion, Outcome, Timeline};
use crate::roles::{self, ExtraArgs, Role};
use crate::topology::Topology;
use crate::traffic::{Stream, Traffic};

/// The port the censor proxy listens on in the censor's namespace.
pub const PROXY_PORT: u16 = 15000;

/// The echo and source servers of the controls, in the decoy's namespace.
pub const ECHO_PORT: u16 = 7000;
pub const SOURCE_PORT: u16 = 7001;
pub const UDP_ECHO_PORT: u16 = 443;

/// How long the cast may take to get its relay reservations.
const CAST_TIMEOUT: Duration = Duration::from_secs(90);

/// What a run is asked to do, shared by every scenario.
pub struct Env {
    pub kolokol: PathBuf,
    pub lab_exe: PathBuf,
    pub run_dir: PathBuf,
    pub prefix: String,
    /// The threat model's durations instead of short ones.
    pub long: bool,
    pub extra: ExtraArgs,
}

/// One scenario's world.
pub struct Ctx {
    pub env: Arc<Env>,
    pub dir: PathBuf,
    /// Run the negative and collateral controls only (the CI subset while the protected path
    /// cannot pass yet).
    pub controls_only: bool,
    pub start_ms: u64,
    pub traffic: Traffic,
    pub marks: Vec<(u64, String)>,
    pub outcome: Outcome,
    // Dropped in this order: daemons, then helpers and captures, then the network.
    pub daemons: BTreeMap<String, Daemon>,
    helpers: Vec<Helper>,
    captures: Vec<Capture>,
    pub topo: Topology,
}

/// A long-running helper process (proxy, sink, decoy server).
struct Helper {
    child: Child,
}

impl Drop for Helper {
    fn drop(&mut self) {
        registry::stop_pid(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        registry::remove_pid(self.child.id());
    }
}

impl Ctx {
    /// A fresh lab network for scenario `id`, its files in the run's directory `dir_name`, with
    /// the cover web server the protected relays splice strangers to already up.
    pub fn new(
        id: &'static str,
        dir_name: &str,
        env: Arc<Env>,
        controls_only: bool,
    ) -> anyhow::Result<Self> {
        let dir = env.run_dir.join(dir_name);
        std::fs::create_dir_all(&dir)?;
        let topo = Topology::build(&env.prefix)?;
        let mut ctx = Self {
            dir,
            controls_only,
            start_ms: now_ms(),
            traffic: Traffic::new(id),
            marks: Vec::new(),
            outcome: Outcome::default(),
            daemons: BTreeMap::new(),
            helpers: Vec::new(),
            captures: Vec::new(),
            topo,
            env,
        };
        // A stealth listener closes every connection whose cover server cannot be reached,
        // so the cover site runs from the start, before any relay.
        ctx.spawn_helper("decoy", &["http-site", &roles::COVER_PORT.to_string()])?;
        Ok(ctx)
    }

    /// Scales a duration for `--long` runs.
    pub fn dur(&self, short_s: u64, long_s: u64) -> Duration {
        Duration::from_secs(if self.env.long { long_s } else { short_s })
    }

    /// The daemon called `name`.
    pub fn d(&self, name: &str) -> &Daemon {
        self.daemons.get(name).unwrap_or_else(|| panic!("no daemon {name} in this scenario"))
    }

    /// Starts a daemon of `role` on host `name` that bootstraps from `bootstrap`.
    pub fn start(&mut self, name: &str, role: Role, bootstrap: &[String]) -> anyhow::Result<()> {
        let args = roles::args(role, Topology::ip(name), bootstrap, &self.env.extra);
        let listens = args.iter().filter(|a| *a == "--listen").count();
        let mut daemon =
            Daemon::start(&self.env.kolokol, &self.topo.ns(name), name, self.dir.join(name), args)?;
        if args_role_is_relay(role) {
            daemon.settle_addresses(listens)?;
        }
        self.daemons.insert(name.to_owned(), daemon);
        Ok(())
    }

    /// The addresses users are given for relay `name` (its advertised ones).
    pub fn relay_addrs(&self, name: &str) -> Vec<String> {
        roles::for_users(&self.d(name).addresses)
    }

    /// Waits until each of `names` holds at least one relay reservation.
    pub fn wait_reserved(&self, names: &[&str], timeout: Duration) -> anyhow::Result<()> {
        for name in names {
            if self.d(name).wait_status(timeout, |s| reservations(s) >= 1).is_none() {
                bail!(
                    "{name} got no relay reservation within {timeout:?}; its log:\n{}",
                    self.d(name).log_tail()
                );
            }
        }
        Ok(())
    }

    /// Makes `a` and `b` contacts of each other through their invites (each named as its host).
    pub fn introduce(&self, a: &str, b: &str) -> anyhow::Result<()> {
        let invite_a =
            self.d(a).call("invite", json!({}))?["invite"].as_str().context("invite")?.to_owned();
        let invite_b =
            self.d(b).call("invite", json!({}))?["invite"].as_str().context("invite")?.to_owned();
        self.d(a).call("contacts.add", json!({"name": b, "invite": invite_b}))?;
        self.d(b).call("contacts.add", json!({"name": a, "invite": invite_a}))?;
        Ok(())
    }

    /// Records a moment of the timeline (the censor acting, a heal).
    pub fn mark(&mut self, label: &str) -> u64 {
        let at = now_ms();
        self.marks.push((at, label.to_owned()));
        crate::note(&format!("  [{:>6.1} s] {label}", (at - self.start_ms) as f64 / 1000.0));
        at
    }

    /// Prints a progress line.
    pub fn say(&self, text: &str) {
        crate::note(&format!("  [{:>6.1} s] {text}", (now_ms() - self.start_ms) as f64 / 1000.0));
    }

    /// Applies nftables commands in the censor's namespace.
    pub fn censor(&self, script: &str) -> anyhow::Result<()> {
        self.topo.censor_nft(script)
    }

    /// Kills every TCP connection established before now at the censor: a censor switching a
    /// rule on does not spare connections that are already open (a box that reloads, a
    /// policy applied to live sessions), and without this a rule that only inspects new
    /// connections would never meet a node that already had its connections. New connections
    /// get conntrack mark 2; every other established one is reset on its next packet.
    pub fn flush_sessions(&self) -> anyhow::Result<()> {
        self.censor(
            "add rule inet censor forward ct state new ct mark set 0x2\n\
             add rule inet censor forward meta l4proto tcp ct state established ct mark != 0x2 counter reject with tcp reset comment \"flush\"\n",
        )
    }

    /// The packets counted so far by the censor's rules whose comment is `comment`.
    pub fn counter(&self, comment: &str) -> anyhow::Result<u64> {
        let out = self.topo.exec("tspu", "nft", &["-j", "list", "table", "inet", "censor"])?;
        let v: Value = serde_json::from_slice(&out.stdout).context("nft -j output")?;
        let mut total = 0;
        for item in v["nftables"].as_array().into_iter().flatten() {
            let rule = &item["rule"];
            if rule["comment"] == comment {
                for expr in rule["expr"].as_array().into_iter().flatten() {
                    total += expr["counter"]["packets"].as_u64().unwrap_or(0);
                }
            }
        }
        Ok(total)
    }

    /// Starts a long-running helper (`kolokol-lab --helper ARGS`) on `host` and waits for its
    /// "ready" line.
    pub fn spawn_helper(&mut self, host: &str, args: &[&str]) -> anyhow::Result<()> {
        let log = self.dir.join(format!("helper-{host}-{}.log", args[0]));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.topo.ns(host)])
            .arg(&self.env.lab_exe)
            .arg("--helper")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        registry::add_pid(child.id());
        let stdout = child.stdout.take().context("helper stdout")?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let helper = Helper { child };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line == "ready" => {
                self.helpers.push(helper);
                Ok(())
            }
            _ => bail!(
                "helper {} on {host} did not start: {}",
                args[0],
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }

    /// Starts a helper on `host` that reads lines from its standard input (T16's reference
    /// flow), waits for its "ready" line, and returns the pipe to write them to.
    pub fn spawn_fed_helper(
        &mut self,
        host: &str,
        args: &[&str],
    ) -> anyhow::Result<std::process::ChildStdin> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.topo.ns(host)])
            .arg(&self.env.lab_exe)
            .arg("--helper")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        registry::add_pid(child.id());
        let stdin = child.stdin.take().context("helper stdin")?;
        let stdout = child.stdout.take().context("helper stdout")?;
        self.helpers.push(Helper { child });
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("helper {} on {host} did not start", args[0]);
        }
        Ok(stdin)
    }

    /// Runs a one-shot helper on `host` and returns the JSON it prints.
    pub fn run_helper(&self, host: &str, args: &[&str]) -> anyhow::Result<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.topo.ns(host)])
            .arg(&self.env.lab_exe)
            .arg("--helper")
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "helper {} on {host} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("helper {} printed no JSON", args[0]))
    }

    /// A raw probe from `host`: sends `payload` (see `probe::payload`) to `to` and waits up to
    /// `wait_ms` for the answer and the close.
    pub fn probe(
        &self,
        host: &str,
        to: &str,
        payload: &str,
        wait_ms: u64,
    ) -> anyhow::Result<crate::probe::ProbeResult> {
        let v = self.run_helper(host, &["probe", to, payload, &wait_ms.to_string()])?;
        Ok(serde_json::from_value(v)?)
    }

    /// Starts the echo server (TCP `ECHO_PORT`), the bulk source (TCP `SOURCE_PORT`, 1 MiB) and
    /// the UDP echo server in the decoy's namespace, for the raw controls.
    pub fn start_sinks(&mut self) -> anyhow::Result<()> {
        self.spawn_helper("decoy", &["sink", &ECHO_PORT.to_string(), "echo"])?;
        self.spawn_helper("decoy", &["sink", &SOURCE_PORT.to_string(), "source:1048576"])?;
        self.spawn_helper("decoy", &["udp-echo", &UDP_ECHO_PORT.to_string()])
    }

    /// Starts the decoy HTTPS site (openssl s_server with a self-signed certificate for
    /// `cover.example`) on 203.0.113.80:443: the benign flow of the collateral controls and the
    /// reference server of the probes.
    pub fn start_decoy(&mut self) -> anyhow::Result<()> {
        let key = self.dir.join("decoy.key");
        let cert = self.dir.join("decoy.crt");
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
            ])
            .args([
                "-subj",
                "/CN=cover.example",
                "-addext",
                "subjectAltName=DNS:cover.example",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .context("cannot run openssl (apt-get install openssl)")?;
        if !out.status.success() {
            bail!("openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let log = self.dir.join("decoy.log");
        // Relative paths: s_server's status page shows its command line, and the lab's own
        // directory names must not appear in what the decoy answers.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.topo.ns("decoy"),
                "openssl",
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                "443",
            ])
            .args(["-cert", "decoy.crt", "-key", "decoy.key"])
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()?;
        registry::add_pid(child.id());
        // Its standard input stays open as long as the child handle holds the pipe: s_server
        // stops at the end of its input.
        self.helpers.push(Helper { child });
        // It listens once a probe from its own namespace connects.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let r = self.probe("decoy", "127.0.0.1:443", "none", 100)?;
            if r.connected {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        bail!("the decoy HTTPS server did not start")
    }

    /// Fetches the decoy site with curl from `host`; true if the page came back.
    pub fn curl_decoy(&self, host: &str) -> bool {
        self.topo
            .exec(
                host,
                "curl",
                &[
                    "-sk",
                    "--max-time",
                    "8",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "https://203.0.113.80/",
                ],
            )
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "200")
    }

    /// Starts the censor proxy with its policy file (written by [`Ctx::policy`]).
    pub fn start_proxy(&mut self) -> anyhow::Result<()> {
        let policy = self.dir.join("policy.json");
        self.policy(&crate::proxy::Policy { mode: "pass".into(), ..Default::default() })?;
        let log = self.verdict_log();
        let (port, policy, log) =
            (PROXY_PORT.to_string(), policy.display().to_string(), log.display().to_string());
        self.spawn_helper("tspu", &["proxy", &port, &policy, &log])
    }

    /// Rewrites the censor proxy's policy (atomically: new connections see the old or the new).
    pub fn policy(&self, policy: &crate::proxy::Policy) -> anyhow::Result<()> {
        let tmp = self.dir.join("policy.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(policy)?)?;
        std::fs::rename(&tmp, self.dir.join("policy.json"))?;
        Ok(())
    }

    /// The censor proxy's verdict log.
    pub fn verdict_log(&self) -> PathBuf {
        self.dir.join("verdicts.jsonl")
    }

    /// Every verdict the proxy logged so far.
    pub fn verdicts(&self) -> Vec<crate::proxy::Verdict> {
        std::fs::read_to_string(self.verdict_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Captures on both of the censor's user-facing links: the LAN side (every censored user's
    /// flow, with its real address) and the border (everything crossing it).
    pub fn capture(&mut self) -> anyhow::Result<()> {
        let ns = self.topo.ns("tspu");
        for (interface, name) in [(self.topo.lan_if(), "lan"), (self.topo.uplink_if(), "border")] {
            let file = self.dir.join(format!("{name}.pcap"));
            self.captures.push(Capture::start(&ns, &interface, file)?);
        }
        Ok(())
    }

    /// Stops the captures and returns their files.
    pub fn stop_captures(&mut self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for c in &mut self.captures {
            c.stop();
            files.push(c.file.clone());
        }
        files
    }

    /// Polls `check` until it returns true or `timeout` passes; returns the time it took.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check(self) {
                return Some(start.elapsed());
            }
            std::thread::sleep(POLL);
        }
        None
    }

    /// Starts one stream of messages per (sender, recipient, class, bytes), each sending one
    /// message per `interval`. Each pair has a thread of its own, so that a pair whose sends
    /// block (its path is cut) does not hold up the others.
    pub fn stream(&self, pairs: &[(&str, &str, &str, usize)], interval: Duration) -> Streams {
        Streams(
            pairs
                .iter()
                .map(|(from, to, class, bytes)| {
                    let pair = vec![(
                        self.d(from).endpoint(),
                        (*to).to_owned(),
                        (*class).to_owned(),
                        *bytes,
                    )];
                    Stream::start(&self.traffic, pair, interval)
                })
                .collect(),
        )
    }

    /// Lets traffic run for `duration` while collecting arrivals (so the timeline sees them as
    /// they happen).
    pub fn run_for(&self, duration: Duration) {
        let end = Instant::now() + duration;
        while Instant::now() < end {
            self.traffic.collect(&self.daemons);
            std::thread::sleep(POLL.min(end.saturating_duration_since(Instant::now())));
        }
    }

    /// Waits until every message of `classes` has arrived, or `timeout`.
    pub fn drain(&self, classes: &[&str], timeout: Duration) {
        self.wait_until(timeout, |c| {
            c.traffic.collect(&c.daemons);
            c.traffic.all_delivered(classes)
        });
    }

    /// A negative control.
    pub fn negative(&mut self, what: &str, expected: &str, observed: String, ok: bool) {
        self.say(&format!(
            "negative control: {what}: {observed} ({})",
            if ok { "bites" } else { "DOES NOT BITE" }
        ));
        self.outcome.controls.push(Control {
            kind: "negative".into(),
            what: what.into(),
            expected: expected.into(),
            observed,
            ok,
        });
    }

    /// A collateral control.
    pub fn collateral(&mut self, what: &str, expected: &str, observed: String, ok: bool) {
        self.say(&format!(
            "collateral control: {what}: {observed} ({})",
            if ok { "as expected" } else { "NOT AS EXPECTED" }
        ));
        self.outcome.controls.push(Control {
            kind: "collateral".into(),
            what: what.into(),
            expected: expected.into(),
            observed,
            ok,
        });
    }

    /// A pass criterion of the threat model.
    pub fn criterion(&mut self, what: &str, observed: String, ok: bool) {
        self.say(&format!(
            "criterion: {what}: {observed} ({})",
            if ok { "met" } else { "NOT MET" }
        ));
        self.outcome.criteria.push(Criterion { what: what.into(), observed, ok });
    }

    /// A timeline of deliveries per class (and sends of the first class), with the marks.
    pub fn timeline(&mut self, classes: &[(&str, &str)]) {
        let msgs = self.traffic.snapshot();
        let end_ms = now_ms();
        self.outcome.timeline =
            Some(Timeline::build(self.start_ms, end_ms, &msgs, classes, &self.marks));
    }

    /// The standard cast (see [`Cast`]), with each user holding a reservation and the contacts
    /// introduced.
    pub fn cast(&mut self, cast: Cast) -> anyhow::Result<()> {
        let protected = !self.controls_only;
        let infrastructure = protected || cast.infrastructure;
        if infrastructure {
            self.start("boot", Role::Bootstrap, &[])?;
        }
        let boot =
            if self.daemons.contains_key("boot") { self.relay_addrs("boot") } else { Vec::new() };
        if infrastructure {
            self.start("relay", Role::Relay, &boot)?;
            if cast.bridge {
                self.start("bridge", Role::Bridge, &boot)?;
            }
            if cast.domestic {
                self.start("dom", Role::DomesticRelay, &boot)?;
            }
        }
        if cast.control {
            self.start("crelay", Role::ControlRelay, &[])?;
        }
        let mut users = Vec::new();
        if protected {
            let mut dave_relays = self.relay_addrs("relay");
            if cast.bridge {
                // Dave's own relay is the bridge: his invite carries it to his contacts.
                dave_relays = self.relay_addrs("bridge");
                dave_relays.extend(self.relay_addrs("relay"));
            }
            self.start("dave", Role::User, &dave_relays)?;
            let relay = self.relay_addrs("relay");
            self.start("alice", Role::User, &relay)?;
            users.extend(["dave", "alice"]);
            if cast.bob {
                self.start("bob", Role::User, &relay)?;
                users.push("bob");
            }
        }
        if cast.control {
            let address = roles::control_address(&self.d("crelay").addresses)
                .context("the control relay advertises no plain TCP address on port 4001")?;
            self.start("cx", Role::ControlUser, std::slice::from_ref(&address))?;
            self.start("cz", Role::ControlUser, &[address])?;
            users.extend(["cx", "cz"]);
        }
        self.wait_reserved(&users, CAST_TIMEOUT)?;
        if protected {
            self.introduce("alice", "dave")?;
            if cast.bob {
                self.introduce("alice", "bob")?;
            }
        }
        if cast.control {
            self.introduce("cx", "cz")?;
        }
        self.say(&format!(
            "cast ready: {}",
            self.daemons.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        Ok(())
    }

    /// Waits until a first message between each pair arrives (the baseline: the path works
    /// before the censor acts), sending one per pair.
    pub fn baseline(&self, pairs: &[(&str, &str, &str)], timeout: Duration) -> anyhow::Result<()> {
        let mut seqs = Vec::new();
        for (from, to, class) in pairs {
            seqs.push(self.traffic.send(&self.d(from).endpoint(), to, class, 200).context("send")?);
        }
        let ok = self.wait_until(timeout, |c| {
            c.traffic.collect(&c.daemons);
            let msgs = c.traffic.snapshot();
            seqs.iter().all(|s| msgs[*s as usize].delivered_ms.is_some())
        });
        if ok.is_none() {
            let msgs = self.traffic.snapshot();
            let missing: Vec<String> = seqs
                .iter()
                .filter(|s| msgs[**s as usize].delivered_ms.is_none())
                .map(|s| format!("{}->{}", msgs[*s as usize].from, msgs[*s as usize].to))
                .collect();
            bail!(
                "the baseline failed before the censor acted: no delivery {}",
                missing.join(", ")
            );
        }
        Ok(())
    }

    /// The first arrival of a message of `class` sent at or after `from_ms`, as seconds after
    /// `from_ms` (None: none arrived).
    pub fn recovery(&self, class: &str, from_ms: u64) -> Option<f64> {
        self.traffic
            .snapshot()
            .iter()
            .filter(|m| m.class == class && m.sent_ms >= from_ms)
            .filter_map(|m| m.delivered_ms)
            .min()
            .map(|at| crate::clock::secs(from_ms, at))
    }

    /// The relays holding a reservation for `user` now, by host name.
    pub fn reservation_names(&self, user: &str) -> String {
        let status = self.d(user).call("status", json!({})).unwrap_or_default();
        let names: Vec<String> = status["relay_reservations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|id| id.as_str())
            .map(|id| {
                self.daemons
                    .values()
                    .find(|d| d.peer_id == id)
                    .map_or_else(|| id.to_owned(), |d| d.name.clone())
            })
            .collect();
        if names.is_empty() { "none".into() } else { names.join(", ") }
    }

    /// The endpoint (address and port) of the connection that `user` has to the daemon
    /// `peer`, from the user's `peers` list.
    pub fn connected_endpoint(&self, user: &str, peer: &str) -> Option<roles::IpEndpoint> {
        let peers = self.d(user).call("peers", json!({})).ok()?;
        let id = &self.d(peer).peer_id;
        peers["connected"]
            .as_array()?
            .iter()
            .filter(|c| c["peer_id"].as_str() == Some(id.as_str()) && c["via"] != "relayed")
            .find_map(|c| roles::endpoint(c["address"].as_str()?))
    }

    /// The scenario's own directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// Whether a role runs `kolokol relay`.
fn args_role_is_relay(role: Role) -> bool {
    !matches!(role, Role::User | Role::ControlUser)
}

/// Several message streams, stopped together.
pub struct Streams(Vec<Stream>);

impl Streams {
    /// Stops sending (messages already sent go on).
    pub fn stop(self) {
        for s in self.0 {
            s.stop();
        }
    }
}

/// Who takes part in a scenario. The protected path is always alice (censored LAN) and dave
/// (abroad) through `relay`, bootstrapped from `boot`; the rest is optional.
#[derive(Clone, Copy, Default)]
pub struct Cast {
    /// The control path: `crelay` (stock libp2p TCP), `cx` (censored) and `cz` (abroad).
    pub control: bool,
    /// A second censored user on alice's LAN, a contact of alice's.
    pub bob: bool,
    /// The relay inside the country.
    pub domestic: bool,
    /// Dave's unlisted relay abroad.
    pub bridge: bool,
    /// Start the bootstrap node and the relays even in a controls-only run.
    pub infrastructure: bool,
}
