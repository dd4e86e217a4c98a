//! A real `kolokol` daemon (`kolokol --data-dir D --json node|relay ...`) running in one of the
//! lab's namespaces, started through `ip netns exec`, and driven through its control socket the
//! way the CLI drives it (newline-delimited JSON-RPC on `D/control.sock`, which the lab reaches
//! from the host namespace since it is a file).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::registry;

/// How long a daemon may take to print its start line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one control call may take: `send` waits for the first delivery attempt, which can
/// take up to about 55 s when the recipient cannot be reached (docs/USAGE.md, `send`).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The most message arrivals the lab keeps per daemon; far above what a scenario sends.
pub const MAX_ARRIVALS: usize = 100_000;

/// One message as it arrived at a daemon (from its `message` events).
#[derive(Clone, Debug)]
pub struct Arrival {
    /// The first line of the text, which carries the lab's tag.
    pub head: String,
    pub received_at_ms: u64,
}

/// The control socket of a daemon: what threads need to call it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub name: String,
    pub socket: PathBuf,
}

impl Endpoint {
    /// One JSON-RPC call on a fresh connection (the daemon serves up to 64 at once).
    pub fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let mut stream = UnixStream::connect(&self.socket).with_context(|| {
            format!("{}: cannot connect to {}", self.name, self.socket.display())
        })?;
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        writeln!(stream, "{request}")?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .with_context(|| format!("{}: no answer to {method}", self.name))?;
        let answer: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: answer to {method} is not JSON: {line}", self.name))?;
        if let Some(error) = answer.get("error") {
            bail!("{}: {method} failed: {}", self.name, error["message"]);
        }
        Ok(answer["result"].clone())
    }
}

/// A running daemon.
pub struct Daemon {
    pub name: String,
    pub dir: PathBuf,
    /// Everything after `--data-dir D --json`.
    pub args: Vec<String>,
    pub peer_id: String,
    /// The addresses of its start line (with `/p2p/<peer id>`): what a relay tells users to
    /// bootstrap from.
    pub addresses: Vec<String>,
    pub log: PathBuf,
    child: Option<Child>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    kolokol: PathBuf,
    namespace: String,
}

impl Daemon {
    /// Starts `kolokol --data-dir DIR --json ARGS` in `namespace` and returns once it printed its
    /// start line (its control socket is bound then). Its log goes to `DIR.log`.
    pub fn start(
        kolokol: &Path,
        namespace: &str,
        name: &str,
        dir: PathBuf,
        args: Vec<String>,
    ) -> anyhow::Result<Self> {
        let log = dir.with_extension("log");
        let mut daemon = Self {
            name: name.to_owned(),
            dir,
            args,
            peer_id: String::new(),
            addresses: Vec::new(),
            log,
            child: None,
            arrivals: Arc::new(Mutex::new(Vec::new())),
            kolokol: kolokol.to_owned(),
            namespace: namespace.to_owned(),
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .arg(&self.kolokol)
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--json")
            .args(&self.args)
            .env_remove("KOLOKOL_HOME")
            // `KOLOKOL_LAB_LOG` replaces the daemons' log filter, to follow one mechanism.
            .env(
                "RUST_LOG",
                std::env::var("KOLOKOL_LAB_LOG")
                    .unwrap_or_else(|_| "warn,kolokol_node=info,libp2p_kad=error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        registry::add_pid(child.id());
        let stdout = child.stdout.take().context("piped stdout")?;
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            // Read to the end even when nobody listens any more: a closed pipe would make the
            // daemon's next line fail and stop it.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.try_send(line);
            }
        });
        let line = rx.recv_timeout(START_TIMEOUT).map_err(|_| {
            anyhow::anyhow!(
                "{} did not start within {START_TIMEOUT:?}; its log:\n{}",
                self.name,
                self.log_tail()
            )
        })?;
        let start: Value = serde_json::from_str(&line)
            .with_context(|| format!("{}: start line is not JSON: {line}", self.name))?;
        self.peer_id = start["peer_id"].as_str().context("start line has no peer_id")?.to_owned();
        self.addresses = start["addresses"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        self.subscribe()?;
        Ok(())
    }

    /// Subscribes to the daemon's events on a connection of its own, recording every message
    /// that arrives, until the daemon stops.
    fn subscribe(&self) -> anyhow::Result<()> {
        let stream = UnixStream::connect(self.endpoint().socket)?;
        let mut writer = stream.try_clone()?;
        writeln!(writer, "{}", json!({"jsonrpc": "2.0", "id": "sub", "method": "subscribe"}))?;
        let arrivals = Arc::clone(&self.arrivals);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                let params = &v["params"];
                if v["method"] == "event" && params["type"] == "message" {
                    let text = params["text"].as_str().unwrap_or_default();
                    let head = text.split('\n').next().unwrap_or_default().to_owned();
                    let at = params["received_at_ms"].as_u64().unwrap_or_else(crate::clock::now_ms);
                    let mut list = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                    if list.len() < MAX_ARRIVALS {
                        list.push(Arrival { head, received_at_ms: at });
                    }
                }
            }
        });
        Ok(())
    }

    /// Re-reads the addresses a relay advertises once all of its `listens` listen addresses are
    /// up (at most 10 s): its start line is printed as soon as the first one is, so it may name
    /// fewer. Advertised are the external addresses, else the listen addresses, as the start line
    /// does.
    pub fn settle_addresses(&mut self, listens: usize) -> anyhow::Result<()> {
        let direct = |list: &Value| -> Vec<String> {
            list.as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .filter(|a| !a.contains("/p2p-circuit"))
                .map(str::to_owned)
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.call("status", json!({}))?;
            let listen = direct(&status["listen_addresses"]);
            if listen.len() >= listens || Instant::now() > deadline {
                let external = direct(&status["external_addresses"]);
                let chosen = if external.is_empty() { listen } else { external };
                let id = &self.peer_id;
                self.addresses = chosen
                    .into_iter()
                    .map(|a| if a.contains("/p2p/") { a } else { format!("{a}/p2p/{id}") })
                    .collect();
                return Ok(());
            }
            std::thread::sleep(crate::clock::POLL);
        }
    }

    /// The control endpoint, for calls from other threads.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint { name: self.name.clone(), socket: self.dir.join("control.sock") }
    }

    /// One control call.
    pub fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.endpoint().call(method, params)
    }

    /// The messages that arrived so far (from the event subscription).
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every message in the inbox, for reconciling after the run (events can be missed while a
    /// daemon restarts).
    pub fn inbox_heads(&self) -> anyhow::Result<Vec<Arrival>> {
        let inbox = self.call("inbox", json!({"limit": 10000}))?;
        Ok(inbox
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|m| Arrival {
                        head: m["text"]
                            .as_str()
                            .unwrap_or_default()
                            .split('\n')
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                        received_at_ms: m["received_at_ms"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Stops the daemon with SIGTERM (a clean shutdown, as Ctrl-C), killing it if it hangs.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            registry::stop_pid(child.id());
            let _ = child.kill();
            let _ = child.wait();
            registry::remove_pid(child.id());
        }
    }

    /// Starts it again on the same data directory with the same flags.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls `check` on the daemon's `status` until it holds or `timeout` passes; returns how
    /// long it took, or None.
    pub fn wait_status(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Value) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(status) = self.call("status", json!({}))
                && check(&status)
            {
                return Some(start.elapsed());
            }
            std::thread::sleep(crate::clock::POLL);
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The number of relay reservations in a `status` answer.
pub fn reservations(status: &Value) -> usize {
    status["relay_reservations"].as_array().map_or(0, Vec::len)
}
