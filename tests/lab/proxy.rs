//! The censor's userspace classifier: a transparent proxy in the censor's namespace.
//!
//! The kernel of the lab machine has no `nft queue` (NFQUEUE), so flows cannot be handed to a
//! userspace classifier packet by packet. Instead the censor redirects the TCP flows it wants to
//! inspect to this proxy (`nft ... redirect to :PORT` in the prerouting NAT chain); the proxy
//! accepts the connection, asks the kernel where it was going (SO_ORIGINAL_DST), connects there,
//! reads the client's first payload, classifies it, and then either splices the two connections
//! together or blocks the flow: it stops forwarding the client's bytes (a drop, as the GFW and
//! Iran's filter do) or resets both sides, and puts the destination into the censor's residual
//! block set with `nft add element` (the residual block then drops packets in the kernel).
//!
//! What differs from an in-path classifier: the proxy completes the client's TCP handshake
//! itself, and the server sees the censor's address as the client's (the LAN is masqueraded
//! anyway). Payload bytes, their order and timing are unchanged.
//!
//! The policy is a JSON file the lab rewrites (atomically) to arm or change the rule; the proxy
//! reads it for every new connection. Every verdict is one JSON line in the verdict log.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};

use crate::classifier::{self, HelloParse};
use crate::clock::now_ms;

/// The most connections the proxy holds at once; further ones wait to be accepted.
pub const MAX_PROXIED: usize = 1024;

/// How long the proxy waits for a client's first payload before it lets a silent client through
/// unclassified (a server-speaks-first protocol): as an in-path classifier would, it only judges
/// what it sees.
const FIRST_PAYLOAD_WAIT: Duration = Duration::from_secs(20);

/// How long a blocked flow is held open (its bytes discarded) before the proxy lets it go.
const BLACKHOLE_HOLD: Duration = Duration::from_secs(600);

/// The censor's policy, as the lab writes it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Policy {
    /// `pass` (record only), `fet` (T5), `allowlist` (T6) or `fingerprint` (T8).
    pub mode: String,
    /// T8: JA4 fingerprints to block.
    #[serde(default)]
    pub block_ja4: Vec<String>,
    /// T8: server names to block.
    #[serde(default)]
    pub block_sni: Vec<String>,
    /// Residual block after a blocked flow: `dst` (destination address and port, the GFW) or
    /// `src_dst` (client address, destination address and port: Iran), for `penalty_s` seconds.
    #[serde(default)]
    pub penalty: Option<String>,
    #[serde(default)]
    pub penalty_s: u64,
    /// `drop` (stall the flow) or `reset`.
    #[serde(default)]
    pub action: String,
}

/// One line of the verdict log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    pub ms: u64,
    pub src: String,
    pub dst: String,
    /// Bytes of the first payload that were classified.
    pub len: usize,
    pub blocked: bool,
    pub reason: String,
    #[serde(default)]
    pub ja4: Option<String>,
    #[serde(default)]
    pub sni: Option<String>,
    /// The first bytes, in hex.
    pub head: String,
}

struct Shared {
    policy_path: PathBuf,
    log: Mutex<std::fs::File>,
    nft_table: String,
}

/// Runs the proxy (the `--helper proxy` entry point): listens on `port` on every address of the
/// censor's namespace until killed.
pub fn run(port: u16, policy_path: PathBuf, log_path: PathBuf) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("0.0.0.0", port)).await?;
        let shared = Arc::new(Shared {
            policy_path,
            log: Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(log_path)?),
            nft_table: "inet censor".into(),
        });
        let slots = Arc::new(Semaphore::new(MAX_PROXIED));
        // Tell the lab the proxy listens.
        println!("ready");
        loop {
            let permit = Arc::clone(&slots).acquire_owned().await?;
            let (client, peer) = listener.accept().await?;
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let _permit = permit;
                let _ = handle(client, peer, shared).await;
            });
        }
    })
}

async fn handle(client: TcpStream, peer: SocketAddr, shared: Arc<Shared>) -> anyhow::Result<()> {
    let original = socket2::SockRef::from(&client).original_dst_v4()?;
    let dst =
        original.as_socket_ipv4().ok_or_else(|| anyhow::anyhow!("no IPv4 original destination"))?;
    let policy: Policy = std::fs::read(&shared.policy_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| Policy { mode: "pass".into(), ..Policy::default() });
    let upstream =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(dst)).await {
            Ok(Ok(s)) => s,
            _ => {
                // The destination is unreachable: the client sees what it would have seen, a
                // connection that goes nowhere; reset it.
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                return Ok(());
            }
        };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    // The server's bytes go to the client from the start, whatever the verdict on the client's.
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut up_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });

    // The first payload: one read (what the first data packet carried), or for the fingerprint
    // rule the whole ClientHello if the flow starts like TLS.
    let mut first = vec![0u8; classifier::MAX_HELLO];
    let mut len = match tokio::time::timeout(FIRST_PAYLOAD_WAIT, client_read.read(&mut first)).await
    {
        Ok(Ok(n)) if n > 0 => n,
        Ok(_) => {
            down.abort();
            return Ok(());
        }
        Err(_) => 0,
    };
    let mut hello = None;
    if len > 0 && policy.mode == "fingerprint" {
        loop {
            match classifier::parse_client_hello(&first[..len]) {
                HelloParse::Hello(h) => {
                    hello = Some(h);
                    break;
                }
                HelloParse::NeedBytes(need) if need <= first.len() => {
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        client_read.read(&mut first[len..]),
                    )
                    .await
                    {
                        Ok(Ok(n)) if n > 0 => len += n,
                        _ => break,
                    }
                }
                _ => break,
            }
        }
    } else if len > 0
        && let HelloParse::Hello(h) = classifier::parse_client_hello(&first[..len])
    {
        hello = Some(h);
    }
    let payload = &first[..len];
    let ja4 = hello.as_ref().map(classifier::ja4);
    let sni = hello.as_ref().and_then(|h| h.sni.clone());
    let (blocked, reason) = if len == 0 {
        (false, "no client payload".to_owned())
    } else {
        match policy.mode.as_str() {
            "fet" => {
                let f = classifier::fet(payload);
                match f.exempt_by {
                    Some(ex) => {
                        (false, format!("exempt by {ex} ({} bits/byte)", f.popcount_per_byte))
                    }
                    None => (
                        true,
                        format!(
                            "fully encrypted ({} bits/byte, no exemption)",
                            f.popcount_per_byte
                        ),
                    ),
                }
            }
            "allowlist" => match classifier::allowed_protocol(payload) {
                Some(p) => (false, format!("allowed protocol {p}")),
                None => (true, "not DNS, HTTP or TLS".to_owned()),
            },
            "fingerprint" => {
                if let Some(fp) = ja4.as_ref().filter(|fp| policy.block_ja4.contains(fp)) {
                    (true, format!("blocked JA4 {fp}"))
                } else if let Some(name) = sni.as_ref().filter(|n| policy.block_sni.contains(n)) {
                    (true, format!("blocked SNI {name}"))
                } else if hello.is_some() {
                    (false, "ClientHello not on the block lists".to_owned())
                } else {
                    (false, "not TLS".to_owned())
                }
            }
            _ => (false, "recorded".to_owned()),
        }
    };
    let verdict = Verdict {
        ms: now_ms(),
        src: peer.to_string(),
        dst: dst.to_string(),
        len,
        blocked,
        reason,
        ja4,
        sni,
        head: payload.iter().take(48).map(|b| format!("{b:02x}")).collect(),
    };
    {
        let mut log = shared.log.lock().await;
        let _ = writeln!(log, "{}", serde_json::to_string(&verdict)?);
    }
    if !blocked {
        up_write.write_all(payload).await?;
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
        let _ = up_write.shutdown().await;
        let _ = down.await;
        return Ok(());
    }
    // Blocked: the residual block first, so that the client's next attempt meets it.
    if let Some(kind) = &policy.penalty {
        let element = match kind.as_str() {
            "src_dst" => format!(
                "penalty3 {{ {} . {} . {} timeout {}s }}",
                peer.ip(),
                dst.ip(),
                dst.port(),
                policy.penalty_s
            ),
            _ => {
                format!("penalty {{ {} . {} timeout {}s }}", dst.ip(), dst.port(), policy.penalty_s)
            }
        };
        let table = shared.nft_table.clone();
        let _ = tokio::task::spawn_blocking(move || {
            std::process::Command::new("nft")
                .args(["add", "element"])
                .args(table.split_whitespace())
                .args(element.split_whitespace())
                .status()
        })
        .await;
    }
    if policy.action == "reset" {
        // Linger zero turns the close into a reset, once both halves are gone.
        let _ = socket2::SockRef::from(client_read.as_ref()).set_linger(Some(Duration::ZERO));
        down.abort();
        let _ = down.await;
        drop(client_read);
        return Ok(());
    }
    // Drop: the client's bytes go nowhere from now on, and the client waits.
    let mut sink = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(BLACKHOLE_HOLD, async {
        while let Ok(n) = client_read.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    down.abort();
    Ok(())
}
