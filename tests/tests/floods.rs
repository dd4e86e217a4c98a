//! Floods from real processes over loopback: a Kolokol relay runs as a process of its own, five
//! `kolokol-flood` processes attack it at once (connection churn, junk envelopes, oversized
//! frames, mailbox deposits from many identities, slow connections), and meanwhile two honest
//! users talk through it. Their messages all arrive, the relay answers `status` on its control
//! socket throughout, and its memory stays under a ceiling.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kolokol_node::Multiaddr;
use kolokol_tests::support::{Net, TIMEOUT, introduce, wait_message_at};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(15);

/// The most memory the flooded relay may use (resident set), in bytes. An idle relay uses
/// about 20 MB; the relay refuses new connections above 256 MiB of its own accord.
const MEMORY_CEILING: u64 = 200 * 1024 * 1024;

/// The flood modes, one process each.
const MODES: [&str; 5] = ["churn", "junk", "oversize", "deposits", "slow"];

/// A child process, killed if the test ends early.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn flood_binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kolokol-flood"))
}

/// The resident memory of process `pid`, in bytes.
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Asks the node behind `socket` for its status, as `kolokol status` does; returns the answer.
async fn status(socket: &std::path::Path) -> String {
    let mut stream = tokio::net::UnixStream::connect(socket).await.expect("the control socket");
    stream
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n")
        .await
        .expect("a request");
    let mut line = String::new();
    tokio::io::BufReader::new(stream).read_line(&mut line).await.expect("an answer");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_relay_keeps_two_honest_users_talking_in_bounded_memory() {
    let net = Net::new();
    let dir = net.data_dir("target");
    let mut target = Process(
        flood_binary()
            .arg("relay")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the relay process starts"),
    );
    let stdout = target.0.stdout.take().expect("stdout");
    let address: Multiaddr = tokio::time::timeout(
        TIMEOUT,
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).expect("the address line");
            line
        }),
    )
    .await
    .expect("the relay prints its address in time")
    .expect("read")
    .trim()
    .parse()
    .expect("a multiaddr");
    let pid = target.0.id();
    let socket = dir.join(kolokol_node::data_dir::CONTROL_SOCKET);
    let idle = resident(pid);

    let alice = net.user("alice", std::slice::from_ref(&address)).await;
    let bob = net.user("bob", std::slice::from_ref(&address)).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;

    let flooders: Vec<Process> = MODES
        .iter()
        .map(|mode| {
            Process(
                flood_binary()
                    .args([mode.to_string(), address.to_string(), FLOOD.as_secs().to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("a flooder starts"),
            )
        })
        .collect();

    // While the flood lasts: a message each way, a status request and a memory sample twice a
    // second (a pace, not a wait for anything).
    let (mut to_bob, mut to_alice) = (Vec::new(), Vec::new());
    let mut peak = idle;
    let mut statuses = 0;
    let started = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(500));
    while started.elapsed() < FLOOD {
        pace.tick().await;
        let n = to_bob.len();
        to_bob.push(alice.node().send("bob", &format!("to bob {n}")).await.expect("send").id);
        to_alice.push(bob.node().send("alice", &format!("to alice {n}")).await.expect("send").id);
        let answer = tokio::time::timeout(Duration::from_secs(5), status(&socket))
            .await
            .expect("the flooded relay answers status within 5 s");
        assert!(answer.contains("\"result\"") && answer.contains("\"role\":\"relay\""), "{answer}");
        statuses += 1;
        peak = peak.max(resident(pid));
    }

    // Every honest message arrives, each way.
    let (mut a_events, mut b_events) = (alice.node().subscribe(), bob.node().subscribe());
    for (n, id) in to_bob.iter().enumerate() {
        assert_eq!(
            wait_message_at(&bob.node(), &mut b_events, id).await.text,
            format!("to bob {n}")
        );
    }
    for (n, id) in to_alice.iter().enumerate() {
        let text = wait_message_at(&alice.node(), &mut a_events, id).await.text;
        assert_eq!(text, format!("to alice {n}"));
    }

    // Every flooder did its damage and stopped on its own.
    let mut report = Vec::new();
    for mut f in flooders {
        let stdout = f.0.stdout.take().expect("stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).expect("a line");
            line
        })
        .await
        .expect("read");
        assert!(f.0.wait().expect("exit").success(), "{line}");
        report.push(line.trim().to_owned());
    }
    let said =
        |mode: &str| report.iter().find(|l| l.starts_with(mode)).cloned().unwrap_or_default();
    // The junk was refused (and, past the junk quota, refused unopened); no oversized frame
    // was ever answered as if it were an envelope.
    assert!(!said("junk").contains(" 0 rejected"), "{}", said("junk"));
    assert!(!said("junk").contains(" 0 refused busy"), "{}", said("junk"));
    assert!(said("oversize").contains(" 0 rejected, 0 refused busy"), "{}", said("oversize"));
    peak = peak.max(resident(pid));
    let after = tokio::time::timeout(Duration::from_secs(5), status(&socket))
        .await
        .expect("the relay still answers after the flood");
    assert!(after.contains("\"result\""), "{after}");
    println!(
        "flood of {} s: {} messages each way delivered, {statuses} status answers, relay memory {} MB idle, {} MB at peak; {}",
        FLOOD.as_secs(),
        to_bob.len(),
        idle / 1_000_000,
        peak / 1_000_000,
        report.join("; ")
    );
    assert!(peak < MEMORY_CEILING, "the flooded relay used {peak} bytes");
    alice.shutdown().await;
    bob.shutdown().await;
    // Closing its standard input stops the relay; `Process` kills it if it does not.
    drop(target.0.stdin.take());
    let _ = target.0.wait();
}
