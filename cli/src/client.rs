//! A control-socket client: one connection to the daemon, JSON-RPC requests in, responses and
//! event notifications out.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use kolokol_protocol::control::{Event, Notification, Request, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// A connection to a running daemon.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    /// Notifications read while waiting for a response, handed out by `next_event`.
    pending_events: std::collections::VecDeque<Event>,
}

/// The error a failed request carries, so the caller can tell daemon-side failures apart:
/// the JSON-RPC error code and the daemon's message.
#[derive(Debug)]
pub struct RpcFailure {
    /// One of `kolokol_protocol::control::code`.
    pub code: i64,
    /// The daemon's one line.
    pub message: String,
}

impl std::fmt::Display for RpcFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcFailure {}

/// No daemon runs for the data directory (its control socket is missing or refuses).
#[derive(Debug)]
pub struct NoDaemon(pub PathBuf);

impl std::fmt::Display for NoDaemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no kolokol daemon is running for {} (start one with: kolokol --data-dir {} node)",
            self.0.display(),
            self.0.display()
        )
    }
}

impl std::error::Error for NoDaemon {}

impl Client {
    /// Connects to the daemon of `data_dir`, with an error that says how to start one.
    pub async fn connect(data_dir: &Path) -> anyhow::Result<Self> {
        let socket: PathBuf = data_dir.join(kolokol_node::data_dir::CONTROL_SOCKET);
        let stream = match UnixStream::connect(&socket).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(NoDaemon(data_dir.to_owned()).into());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot connect to {}", socket.display()));
            }
        };
        let (read, writer) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(read),
            writer,
            next_id: 1,
            pending_events: Default::default(),
        })
    }

    /// Sends a request and waits for its response, keeping notifications for later.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> anyhow::Result<T> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_string(&Request::new(id, method, params))?;
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await.context("the daemon closed the connection")?;
        loop {
            let line = self.read_line().await?;
            let value: Value =
                serde_json::from_str(&line).context("the daemon sent a line that is not JSON")?;
            if value.get("method").is_some() {
                let n: Notification = serde_json::from_value(value)?;
                self.pending_events.push_back(n.params);
                continue;
            }
            let response: Response = serde_json::from_value(value)?;
            if response.id != id {
                continue;
            }
            if let Some(err) = response.error {
                return Err(RpcFailure { code: err.code, message: err.message }.into());
            }
            let result = response.result.unwrap_or(Value::Null);
            return serde_json::from_value(result)
                .context("the daemon's answer has an unexpected shape");
        }
    }

    /// The next event notification (after `subscribe`).
    pub async fn next_event(&mut self) -> anyhow::Result<Event> {
        if let Some(e) = self.pending_events.pop_front() {
            return Ok(e);
        }
        loop {
            let line = self.read_line().await?;
            if let Ok(n) = serde_json::from_str::<Notification>(&line) {
                return Ok(n.params);
            }
        }
    }

    async fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).await.context("cannot read from the daemon")?;
        if n == 0 {
            return Err(anyhow!("the daemon closed the connection (did it stop?)"));
        }
        Ok(line)
    }
}
