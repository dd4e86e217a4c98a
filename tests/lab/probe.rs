//! Small network programs the lab runs inside its namespaces (`kolokol-lab --helper NAME ...`
//! through `ip netns exec`): the active prober of T11, the raw flows of the negative controls
//! (a connection that sends given bytes, random first payloads, bulk downloads, UDP datagrams),
//! and the servers at the other end of them. Each prints one JSON line with what it saw.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::classifier;

/// The most bytes of an answer a probe keeps.
pub const MAX_ANSWER: usize = 4096;

/// The most connections a sink serves at once.
const MAX_SINK_CONNECTIONS: usize = 256;

/// What one probe connection saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProbeResult {
    pub connected: bool,
    pub sent: usize,
    pub received: usize,
    /// The first bytes of the answer, in hex.
    pub head: String,
    /// How the connection ended: `fin`, `rst`, `timeout` (still open when the probe gave up),
    /// `refused` or `unreachable` (no connection).
    pub close: String,
    /// Milliseconds from the end of sending to the close (or the give-up).
    pub close_ms: u64,
}

impl ProbeResult {
    /// The answer's bytes.
    pub fn answer(&self) -> Vec<u8> {
        (0..self.head.len() / 2)
            .filter_map(|i| u8::from_str_radix(&self.head[2 * i..2 * i + 2], 16).ok())
            .collect()
    }
}

/// The bytes a probe sends, from its spec: `none`, `multistream`, `random:N`, `http`,
/// `http-wrong-path`, `hello:SNI` (a TLS 1.3 ClientHello), `hex:...`, or `file:PATH`.
pub fn payload(spec: &str) -> anyhow::Result<Vec<u8>> {
    let mut rng = rand::thread_rng();
    Ok(match spec.split_once(':').unwrap_or((spec, "")) {
        ("none", _) => Vec::new(),
        ("multistream", _) => b"\x13/multistream/1.0.0\n\x07/noise\n".to_vec(),
        ("random", n) => {
            let n: usize = n.parse().context("random:N")?;
            (0..n).map(|_| rng.r#gen()).collect()
        }
        ("http", _) => b"GET / HTTP/1.1\r\nHost: cover.example\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n".to_vec(),
        ("http-wrong-path", _) => {
            b"GET /x7f3q HTTP/1.1\r\nHost: cover.example\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n".to_vec()
        }
        ("hello", sni) => classifier::build_client_hello(sni, &rng.r#gen(), &rng.r#gen()),
        ("hex", h) => (0..h.len() / 2).map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16)).collect::<Result<_, _>>()?,
        ("file", path) => std::fs::read(path).with_context(|| format!("cannot read {path}"))?,
        _ => anyhow::bail!("unknown probe payload {spec}"),
    })
}

/// Connects to `to`, sends `data`, and reads the answer until the peer closes or `wait` passes.
pub fn probe(to: SocketAddr, data: &[u8], wait: Duration) -> ProbeResult {
    let mut result = ProbeResult::default();
    let mut stream = match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            result.close = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                "refused"
            } else {
                "unreachable"
            }
            .into();
            return result;
        }
    };
    result.connected = true;
    if !data.is_empty() && stream.write_all(data).is_ok() {
        result.sent = data.len();
    }
    let started = Instant::now();
    let deadline = started + wait;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    result.close = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break "timeout".into();
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => break "fin".into(),
            Ok(n) => {
                result.received += n;
                let room = MAX_ANSWER.saturating_sub(answer.len());
                answer.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "rst".into(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break "timeout".into();
            }
            Err(_) => break "rst".into(),
        }
    };
    result.close_ms = started.elapsed().as_millis() as u64;
    result.head = answer.iter().map(|b| format!("{b:02x}")).collect();
    result
}

/// The result of a series of random first payloads (T5's negative control).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RandomFlows {
    pub flows: usize,
    /// Flows whose bytes came back from the echo server.
    pub echoed: usize,
    /// Flows the heuristic itself would exempt (by chance, e.g. Ex1 on short payloads).
    pub exempt: usize,
}

/// How many random-payload flows run at once.
const PARALLEL_FLOWS: usize = 8;

/// Opens `count` connections to an echo server at `to`, each sending 64 to 1,024 random bytes,
/// and counts those whose bytes come back within 3 s ([`PARALLEL_FLOWS`] at a time).
pub fn random_flows(to: SocketAddr, count: usize) -> RandomFlows {
    let results: Vec<(bool, bool)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PARALLEL_FLOWS)
            .map(|w| {
                scope.spawn(move || {
                    let mut rng = rand::thread_rng();
                    (w..count)
                        .step_by(PARALLEL_FLOWS)
                        .map(|_| {
                            let len = rng.gen_range(64..=1024);
                            let data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
                            let exempt = !classifier::fet(&data).blocked();
                            let r = probe_until(to, &data, Duration::from_secs(3), data.len());
                            (exempt, r.received >= data.len())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    RandomFlows {
        flows: results.len(),
        echoed: results.iter().filter(|r| r.1).count(),
        exempt: results.iter().filter(|r| r.0).count(),
    }
}

/// Like [`probe`], but stops as soon as `want` bytes came back.
fn probe_until(to: SocketAddr, data: &[u8], wait: Duration, want: usize) -> ProbeResult {
    let mut result = ProbeResult::default();
    let Ok(mut stream) = TcpStream::connect_timeout(&to, Duration::from_secs(3)) else {
        return result;
    };
    result.connected = true;
    if stream.write_all(data).is_err() {
        return result;
    }
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    while result.received < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => result.received += n,
        }
    }
    result
}

/// A bulk download (the negative controls of T9 and T10).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Fetch {
    pub bytes: usize,
    pub secs: f64,
    /// Received bytes per second, as kilobits.
    pub kbit_s: f64,
}

/// Connects to a source server at `to` and reads until `want` bytes arrived or `wait` passed.
pub fn fetch(to: SocketAddr, want: usize, wait: Duration) -> Fetch {
    let start = Instant::now();
    let r = probe_until(to, b"go\n", wait, want);
    let secs = start.elapsed().as_secs_f64();
    Fetch {
        bytes: r.received,
        secs: (secs * 100.0).round() / 100.0,
        kbit_s: ((r.received as f64 * 8.0 / 1000.0 / secs) * 10.0).round() / 10.0,
    }
}

/// Sends one UDP datagram to `to` and says whether the echo came back within 2 s.
pub fn udp(to: SocketAddr) -> anyhow::Result<bool> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send_to(b"kolokol-lab udp probe", to)?;
    let mut buf = [0u8; 64];
    Ok(socket.recv_from(&mut buf).is_ok())
}

/// A TCP server for the controls: `echo` sends back what it reads; `source:N` sends N bytes once
/// the client says anything. Runs until killed.
pub fn sink(port: u16, mode: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    let source: Option<usize> = mode.strip_prefix("source:").map(str::parse).transpose()?;
    let active = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    println!("ready");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if active.load(std::sync::atomic::Ordering::Relaxed) >= MAX_SINK_CONNECTIONS {
            continue;
        }
        let active = std::sync::Arc::clone(&active);
        active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
            let mut buf = [0u8; 16 * 1024];
            if let Some(n) = source {
                if matches!(stream.read(&mut buf), Ok(k) if k > 0) {
                    let chunk = [0x5au8; 16 * 1024];
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(chunk.len());
                        if stream.write_all(&chunk[..k]).is_err() {
                            break;
                        }
                        left -= k;
                    }
                }
            } else {
                while let Ok(k) = stream.read(&mut buf) {
                    if k == 0 || stream.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
            }
            active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    Ok(())
}

/// The cover site's page: what a web server in the lab serves at `/`.
pub const COVER_PAGE: &str = "<!doctype html>\n<html><head><title>Cover</title></head><body><p>Nothing to see here.</p></body></html>\n";

/// A plain HTTP/1.1 web server: `GET /` (or `HEAD /`) gets [`COVER_PAGE`], any other request
/// line a 404, anything that is not HTTP a 400, each followed by a close. It is the cover
/// backend relays splice strangers to. Runs until killed.
pub fn http_site(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    let active = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    println!("ready");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if active.load(std::sync::atomic::Ordering::Relaxed) >= MAX_SINK_CONNECTIONS {
            continue;
        }
        let active = std::sync::Arc::clone(&active);
        active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
            let (status, body) =
                if line.starts_with("GET / HTTP/1.") || line.starts_with("HEAD / HTTP/1.") {
                    ("200 OK", COVER_PAGE)
                } else if line.contains(" HTTP/1.") {
                    ("404 Not Found", "not found\n")
                } else {
                    ("400 Bad Request", "bad request\n")
                };
            let body = if line.starts_with("HEAD ") { "" } else { body };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
    Ok(())
}

/// A UDP echo server. Runs until killed.
pub fn udp_echo(port: u16) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(("0.0.0.0", port))?;
    println!("ready");
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        let _ = socket.send_to(&buf[..n], from);
    }
}

/// T16's unpadded reference flow: one connection to `to`; for every line read from standard
/// input (a length), writes that many bytes at once. Ends at end of input.
pub fn lengths(to: SocketAddr) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let n: usize = line?.trim().parse().unwrap_or(0);
        stream.write_all(&vec![b'x'; n.min(1 << 20)])?;
    }
    Ok(())
}

/// The `--helper` entry point: runs the helper named by `args[0]`.
pub fn helper(args: &[String]) -> anyhow::Result<()> {
    let arg = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| anyhow::anyhow!("helper {}: missing argument {i}", args[0]))
    };
    let addr = |i: usize| -> anyhow::Result<SocketAddr> { Ok(arg(i)?.parse()?) };
    match arg(0)? {
        "proxy" => crate::proxy::run(arg(1)?.parse()?, arg(2)?.into(), arg(3)?.into()),
        "probe" => {
            let r = probe(addr(1)?, &payload(arg(2)?)?, Duration::from_millis(arg(3)?.parse()?));
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        "random-flows" => {
            println!("{}", serde_json::to_string(&random_flows(addr(1)?, arg(2)?.parse()?))?);
            Ok(())
        }
        "fetch" => {
            let f = fetch(addr(1)?, arg(2)?.parse()?, Duration::from_secs(arg(3)?.parse()?));
            println!("{}", serde_json::to_string(&f)?);
            Ok(())
        }
        "udp" => {
            println!("{}", serde_json::json!({"echoed": udp(addr(1)?)?}));
            Ok(())
        }
        "sink" => sink(arg(1)?.parse()?, arg(2)?),
        "udp-echo" => udp_echo(arg(1)?.parse()?),
        "http-site" => http_site(arg(1)?.parse()?),
        "lengths" => lengths(addr(1)?),
        "delay" => crate::delay::run(arg(1)?.parse()?, Duration::from_millis(arg(2)?.parse()?)),
        "rtt" => {
            let median = crate::delay::round_trip_ms(addr(1)?, arg(2)?.parse()?);
            println!("{}", serde_json::json!({ "median_ms": median }));
            Ok(())
        }
        other => anyhow::bail!("no helper {other}"),
    }
}
