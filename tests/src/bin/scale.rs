//! `kolokol-scale`: the scale simulation of DESIGN.md §9 (`kolokol_tests::scale`): N real
//! Kolokol nodes in one process on the in-memory transport, for each N given; prints one
//! line per stage and one summary row per N for docs/BENCHMARKS.md.
//!
//! Run: `cargo run --release -p kolokol-tests --bin kolokol-scale -- 100,200,500,1000
//! [LOOKUPS [MESSAGES [SEED [WAVE]]]]` (200 lookups, 100 messages, seed 17 and waves of
//! `scale::JOIN_WAVE` nodes unless given). `KOLOKOL_SCALE_PING_S`, `KOLOKOL_SCALE_IDLE_S` and
//! `KOLOKOL_SCALE_FETCH_S` replace the simulation's ping interval, idle-connection timeout and
//! mailbox fetch interval (in seconds); `KOLOKOL_SCALE_QUIET_S` leaves the settled network
//! alone that long before the lookups, printing its state; `RUST_LOG` selects the nodes' logs
//! (to standard error).

use std::time::{Duration, Instant};

use kolokol_tests::scale::{self, Options, Report};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The nodes log through `tracing`; without a subscriber `RUST_LOG` would select nothing.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut args = std::env::args().skip(1);
    let sizes: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "100".into())
        .split(',')
        .map(|n| n.trim().parse().expect("node counts are numbers, comma-separated"))
        .collect();
    let lookups = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let messages = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(17);
    let wave = args.next().and_then(|a| a.parse().ok()).unwrap_or(scale::JOIN_WAVE);
    let mut rows = Vec::new();
    for n in sizes {
        let options = Options {
            nodes: n,
            seeds: 3,
            wave,
            ping_interval: seconds_from_env("KOLOKOL_SCALE_PING_S", scale::SIM_PING_INTERVAL),
            idle_timeout: seconds_from_env("KOLOKOL_SCALE_IDLE_S", scale::SIM_IDLE_TIMEOUT),
            fetch_interval: seconds_from_env("KOLOKOL_SCALE_FETCH_S", scale::SIM_FETCH_INTERVAL),
            lookups,
            messages,
            seed,
            quiet: seconds_from_env("KOLOKOL_SCALE_QUIET_S", Duration::ZERO),
        };
        println!(
            "[N={n}] waves of {wave}, ping every {:?}, idle connections closed after {:?}, mailboxes fetched every {:?}",
            options.ping_interval, options.idle_timeout, options.fetch_interval
        );
        let began = Instant::now();
        let report = scale::run(&options, |line| {
            println!("[N={n} {:6.1} s] {line}", began.elapsed().as_secs_f64());
        })
        .await;
        for (i, l) in report.lookups.iter().enumerate().filter(|(_, l)| !l.found) {
            println!(
                "[N={n}] lookup {i} missed: {:?} after {:.1} s, {} DHT peers asked, {} answered",
                l.missed,
                l.time.as_secs_f64(),
                l.requests,
                l.successes
            );
        }
        let row = summary(&report, began.elapsed());
        println!("{row}");
        rows.push(row);
    }
    println!(
        "| N | log2 N | DHT peers asked per lookup, mean / p50 / p90 / max | peers that answered before the record, mean | lookup success | lookup time p50 / p90 | delivery | delivery p50 / p90 (first contact) | RSS per node | start | settle | routing table min / mean |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}

/// A duration in whole seconds from the environment variable `name`, or `default`.
fn seconds_from_env(name: &str, default: Duration) -> Duration {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).map_or(default, Duration::from_secs)
}

fn summary(r: &Report, wall: Duration) -> String {
    let n = r.nodes;
    let mut asked: Vec<u64> = r.lookups.iter().map(|l| l.requests).collect();
    asked.sort_unstable();
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let answered: Vec<u64> = r.lookups.iter().map(|l| l.successes).collect();
    let found = r.lookups.iter().filter(|l| l.found).count();
    let mut lookup_times: Vec<Duration> = r.lookups.iter().map(|l| l.time).collect();
    lookup_times.sort();
    let mut delivery = r.delivery_times.clone();
    delivery.sort();
    let per_node = r.rss_settled.saturating_sub(r.rss_before) as f64 / n.max(1) as f64 / 1e6;
    let settle = r.settle.map_or("not within the timeout".into(), |d| format!("{:.1} s", secs(d)));
    let table_min = r.tables.iter().min().copied().unwrap_or(0);
    let table_mean = r.tables.iter().sum::<usize>() as f64 / r.tables.len().max(1) as f64;
    format!(
        "| {n} | {:.2} | {:.1} / {} / {} / {} | {:.1} | {found} / {} | {:.0} / {:.0} ms | {} / {} | {:.0} / {:.0} ms | {per_node:.2} MB (end {:.2} MB) | {:.1} s | {settle} | {table_min} / {table_mean:.0} | (wall {:.1} s)",
        (n as f64).log2(),
        mean(&asked),
        pick(&asked, 50),
        pick(&asked, 90),
        asked.last().copied().unwrap_or(0),
        mean(&answered),
        r.lookups.len(),
        ms(pick(&lookup_times, 50)),
        ms(pick(&lookup_times, 90)),
        r.delivered,
        r.sent,
        ms(pick(&delivery, 50)),
        ms(pick(&delivery, 90)),
        r.rss_end.saturating_sub(r.rss_before) as f64 / n.max(1) as f64 / 1e6,
        secs(r.start),
        secs(wall),
    )
}

/// The `p`-th percentile of sorted values (nearest rank), or the default when there are none.
fn pick<T: Copy + Default>(sorted: &[T], p: usize) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() * p).div_ceil(100)).clamp(1, sorted.len()) - 1]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
