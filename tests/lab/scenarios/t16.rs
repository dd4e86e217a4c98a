//! T16: traffic analysis of sizes (iMessage: > 96 % of user actions inferred; message length to
//! +-6 characters). The censor records alice's traffic and tries to tell how long each message
//! was from what it sees on the wire in the second after it: the bytes and packets each way. The
//! same classifier runs on an unpadded reference flow (each message's length sent as raw bytes)
//! to show that it can read lengths where they are not hidden.

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

use rand::Rng;

use crate::capture::{self, Packet};
use crate::classifier::tls_records_prefix;
use crate::scenario::{Cast, Ctx, ECHO_PORT};
use crate::scenarios::Def;
use crate::topology::Topology;

pub const DEF: Def = Def {
    id: "T16",
    title: "Traffic analysis of message sizes",
    criterion: "On-wire application record sizes take <= 3 distinct values for text. Classifier accuracy for message length <= chance + 5 pp. Event-type inference documented (cover traffic off: expected to leak timing).",
    run,
};

/// The length buckets the classifier must tell apart (characters).
const BUCKETS: [usize; 4] = [500, 1000, 1500, 2000];

/// The window after each message in which its bytes are counted.
const WINDOW_MS: u64 = 1000;

fn bucket(len: usize) -> usize {
    BUCKETS.iter().position(|b| len <= *b).unwrap_or(BUCKETS.len() - 1)
}

/// Per message: bytes up, bytes down, packets up, in the window after it was sent, between
/// `client` and `server` (None: every address but the client's own LAN, since alice may reach
/// dave through any relay she holds a reservation on).
fn features(
    packets: &[Packet],
    client: Ipv4Addr,
    server: Option<Ipv4Addr>,
    server_port: Option<u16>,
    sent: &[u64],
) -> Vec<[f64; 3]> {
    let remote =
        |ip: Ipv4Addr| server.map_or(ip.octets()[..3] != client.octets()[..3], |s| s == ip);
    sent.iter()
        .map(|&at| {
            let mut f = [0.0; 3];
            for p in packets {
                let ms = p.ts_us / 1000;
                if ms + 20 < at || ms >= at + WINDOW_MS || p.payload.is_empty() {
                    continue;
                }
                let up = p.src == client
                    && remote(p.dst)
                    && server_port.is_none_or(|port| p.dport == port);
                let down = remote(p.src)
                    && p.dst == client
                    && server_port.is_none_or(|port| p.sport == port);
                if up {
                    f[0] += p.payload.len() as f64;
                    f[2] += 1.0;
                } else if down {
                    f[1] += p.payload.len() as f64;
                }
            }
            f
        })
        .collect()
}

/// Leave-one-out nearest-centroid accuracy of predicting `labels` from `x` (standardised).
fn accuracy(x: &[[f64; 3]], labels: &[usize]) -> f64 {
    let n = x.len();
    if n < 2 {
        return 0.0;
    }
    let mut scale = [1.0; 3];
    for (k, s) in scale.iter_mut().enumerate() {
        let mean = x.iter().map(|v| v[k]).sum::<f64>() / n as f64;
        let var = x.iter().map(|v| (v[k] - mean).powi(2)).sum::<f64>() / n as f64;
        *s = var.sqrt().max(1e-9);
    }
    let mut right = 0;
    for i in 0..n {
        let mut best = (f64::MAX, 0);
        for class in 0..BUCKETS.len() {
            let members: Vec<usize> = (0..n).filter(|&j| j != i && labels[j] == class).collect();
            if members.is_empty() {
                continue;
            }
            let dist: f64 = (0..3)
                .map(|k| {
                    let c = members.iter().map(|&j| x[j][k]).sum::<f64>() / members.len() as f64;
                    ((x[i][k] - c) / scale[k]).powi(2)
                })
                .sum();
            if dist < best.0 {
                best = (dist, class);
            }
        }
        right += usize::from(best.1 == labels[i]);
    }
    right as f64 / n as f64
}

/// The record sizes of one direction of a flow: TLS records if it is TLS, else the Noise frames
/// after the multistream negotiation (each a 2-byte length, then the frame), with the stream
/// offset each starts at.
fn records(stream: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if tls_records_prefix(stream) > stream.len() / 2 {
        let mut at = 0;
        while at + 5 <= stream.len() {
            let len = usize::from(u16::from_be_bytes([stream[at + 3], stream[at + 4]]));
            out.push((at, len + 5));
            at += 5 + len;
        }
        return out;
    }
    let prefix: &[u8] = b"\x13/multistream/1.0.0\n\x07/noise\n";
    let mut at = if stream.starts_with(prefix) { prefix.len() } else { return out };
    while at + 2 <= stream.len() {
        let len = usize::from(u16::from_be_bytes([stream[at], stream[at + 1]]));
        out.push((at, len + 2));
        at += 2 + len;
    }
    out
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.capture()?;
    ctx.start_sinks()?;
    if protected {
        ctx.cast(Cast::default())?;
        ctx.baseline(&[("alice", "dave", "protected")], Duration::from_secs(60))?;
    }
    ctx.outcome.rule =
        "a passive censor records alice's traffic and guesses each message's length".into();
    ctx.outcome.rule_detail = "tcpdump on the censor's LAN interface; per message, the bytes and packets each way in the \
        second after it; a leave-one-out nearest-centroid classifier over four length buckets (1-500, 501-1,000, \
        1,001-1,500, 1,501-2,000 characters)"
        .into();
    let mut reference =
        ctx.spawn_fed_helper("tester", &["lengths", &format!("203.0.113.80:{ECHO_PORT}")])?;
    let count = if ctx.env.long { 1000 } else { 60 };
    let count = if protected { count } else { count.min(30) };
    let mut rng = rand::thread_rng();
    let lengths: Vec<usize> = (0..count).map(|_| rng.gen_range(1..=2000)).collect();
    let mut sent = Vec::new();
    let mut reference_sent = Vec::new();
    let t0 = ctx.mark("messages of random lengths start, one every 1.5 s");
    for &len in &lengths {
        if protected {
            let seq = ctx.traffic.send(&ctx.d("alice").endpoint(), "dave", "protected", len);
            sent.push(seq);
        }
        reference_sent.push(crate::clock::now_ms());
        writeln!(reference, "{len}")?;
        ctx.run_for(Duration::from_millis(1500));
    }
    drop(reference);
    ctx.drain(&["protected"], Duration::from_secs(30));
    ctx.traffic.reconcile(&ctx.daemons);
    let files = ctx.stop_captures();
    let packets = capture::read_pcap(files.first().ok_or_else(|| anyhow::anyhow!("no capture"))?)?;
    let labels: Vec<usize> = lengths.iter().map(|&l| bucket(l)).collect();
    let mut counts = [0usize; BUCKETS.len()];
    for &l in &labels {
        counts[l] += 1;
    }
    let chance = *counts.iter().max().unwrap_or(&0) as f64 / labels.len().max(1) as f64;
    let reference_x = features(
        &packets,
        Topology::ip("tester"),
        Some(Topology::ip("decoy")),
        Some(ECHO_PORT),
        &reference_sent,
    );
    let reference_acc = accuracy(&reference_x, &labels);
    ctx.negative(
        "the same classifier on an unpadded flow (each message's length sent as raw bytes)",
        "it reads the lengths (accuracy >= 90 %)",
        format!("{:.0} % (chance {:.0} %)", reference_acc * 100.0, chance * 100.0),
        reference_acc >= 0.9,
    );
    if !protected {
        return Ok(());
    }
    let msgs = ctx.traffic.snapshot();
    let sent_ms: Vec<u64> =
        sent.iter().map(|s| s.map_or(0, |s| msgs[s as usize].sent_ms)).collect();
    let alice = Topology::ip("alice");
    let x = features(&packets, alice, None, None, &sent_ms);
    let acc = accuracy(&x, &labels);
    ctx.criterion(
        "message-length accuracy <= chance + 5 pp",
        format!(
            "{:.0} % against a chance of {:.0} % ({} messages)",
            acc * 100.0,
            chance * 100.0,
            labels.len()
        ),
        acc <= chance + 0.05,
    );
    // Record sizes of alice's upstream records that start inside a message's window.
    let mut sizes = std::collections::BTreeMap::<usize, usize>::new();
    for flow in capture::flows(&packets) {
        if flow.client.0 != alice || flow.server.0.octets()[0] == 10 || !flow.tcp {
            continue;
        }
        // The time each stream offset was sent, from the segments (in stream order).
        let mut offsets = Vec::new();
        let mut at = 0usize;
        for (ts, up, len) in &flow.segments {
            if *up {
                offsets.push((at, ts / 1000));
                at += len;
            }
        }
        for (start, len) in records(&flow.up) {
            let i = offsets.partition_point(|(o, _)| *o <= start).saturating_sub(1);
            let Some((_, ms)) = offsets.get(i) else { continue };
            if len >= 256 && sent_ms.iter().any(|&s| *ms + 20 >= s && *ms < s + WINDOW_MS) {
                *sizes.entry(len).or_default() += 1;
            }
        }
    }
    let shown: Vec<String> = sizes.iter().map(|(size, n)| format!("{size} B x{n}")).collect();
    ctx.criterion(
        "at most 3 distinct record sizes carry text (records of 256 bytes or more in the messages' windows)",
        format!("{} distinct: {}", sizes.len(), if shown.is_empty() { "none found".into() } else { shown.join(", ") }),
        !sizes.is_empty() && sizes.len() <= 3,
    );
    let by_bucket: Vec<String> = (0..BUCKETS.len())
        .map(|b| {
            let ups: Vec<f64> =
                x.iter().zip(&labels).filter(|(_, l)| **l == b).map(|(f, _)| f[0]).collect();
            let mean = ups.iter().sum::<f64>() / ups.len().max(1) as f64;
            format!(
                "{}-{} chars: {:.0} B up on average ({} messages)",
                if b == 0 { 1 } else { BUCKETS[b - 1] + 1 },
                BUCKETS[b],
                mean,
                ups.len()
            )
        })
        .collect();
    ctx.outcome.figures.push((
        "bytes alice sent in the second after each message, by length".into(),
        by_bucket.join("; "),
    ));
    ctx.outcome.notes.push(format!(
        "Messages went one every 1.5 s from t = {:.0} s. Envelopes are padded to 1 KiB, 4 KiB, 16 KiB or 64 KiB, \
         and every text to 4 KiB at least (`envelope::TEXT_BUCKET`), so a passive censor learns a receipt from a \
         text and a text of up to about 3.8 KB from a longer one, not a short text from a long one, and, with cover \
         traffic off, when messages are sent and received (event timing is not hidden; the lab does not score it).",
        (t0 - ctx.start_ms) as f64 / 1000.0
    ));
    ctx.outcome.needs.push("padding that hides the length class (one envelope size for all text, or padding to a bucket chosen independently of the length) and constant-size records on the wire".into());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_the_classifier_behave() {
        assert_eq!(
            (bucket(1), bucket(500), bucket(501), bucket(2000), bucket(5000)),
            (0, 0, 1, 3, 3)
        );
        // Features equal to the length separate the buckets perfectly; constant ones do not.
        let lengths = [100usize, 700, 1200, 1800, 200, 800, 1300, 1900, 300, 900, 1400, 1700];
        let labels: Vec<usize> = lengths.iter().map(|&l| bucket(l)).collect();
        let exact: Vec<[f64; 3]> = lengths.iter().map(|&l| [l as f64, 0.0, 1.0]).collect();
        assert_eq!(accuracy(&exact, &labels), 1.0);
        let flat: Vec<[f64; 3]> = lengths.iter().map(|_| [1024.0, 80.0, 1.0]).collect();
        assert!(accuracy(&flat, &labels) <= 0.25 + 1e-9);
    }

    #[test]
    fn noise_frames_are_found_after_the_negotiation() {
        let mut s = b"\x13/multistream/1.0.0\n\x07/noise\n".to_vec();
        s.extend_from_slice(&[0, 3, 1, 2, 3, 0, 1, 9]);
        assert_eq!(records(&s), vec![(28, 5), (33, 3)]);
        assert_eq!(records(b"plain"), vec![]);
    }
}
