//! T17: the fingerprint audit of everything the censor saw. Its own traffic (messages both ways
//! and a mailbox delivery through the relay's advertised transport) plus the captures of every
//! scenario run before it in the same run with the same flags (a `:stealth` row searches only
//! the `:stealth` rows' captures, and the others only theirs) are searched, stream by stream, for libp2p's
//! identifying strings; the protected flows must also be TLS records from their first byte, pass
//! the T5 heuristic, and be labelled TLS by nDPI.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::capture::{self, Flow};
use crate::classifier;
use crate::scenario::{Cast, Ctx};
use crate::scenarios::Def;
use crate::scenarios::t11::LIBP2P_STRINGS;
use crate::topology::{BORDER_CENSOR, Topology};

pub const DEF: Def = Def {
    id: "T17",
    title: "Fingerprint audit of every capture",
    criterion: "Zero string hits in stealth mode. nDPI labels stealth flows as TLS/HTTP, not \"Unknown\". T5 classifier flags 0 flows.",
    run,
};

/// The hosts whose flows are not Kolokol's protected traffic: the control path, the lab's own
/// test flows, and the decoy site.
fn instrument(ip: Ipv4Addr) -> bool {
    ["crelay", "cx", "cz", "tester", "decoy"].iter().any(|h| Topology::ip(h) == ip)
        || ip == BORDER_CENSOR
}

/// Every capture file of this run's scenarios that ran with the same flags as this one: the
/// `:stealth` rows' (directories `T3-stealth`) when `stealth_only`, else the others'.
fn captures(run_dir: &std::path::Path, stealth_only: bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let same_flags = |dir: &std::fs::DirEntry| {
        dir.file_name().to_string_lossy().ends_with("-stealth") == stealth_only
    };
    for scenario in std::fs::read_dir(run_dir).into_iter().flatten().flatten().filter(same_flags) {
        for f in std::fs::read_dir(scenario.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|e| e == "pcap") {
                files.push(f.path());
            }
        }
    }
    files.sort();
    files
}

/// The identifying strings found in a flow (either direction), with the first one's context.
fn hits(flow: &Flow) -> Vec<&'static str> {
    LIBP2P_STRINGS
        .iter()
        .filter(|s| {
            capture::find(&flow.up, s.as_bytes()).is_some()
                || capture::find(&flow.down, s.as_bytes()).is_some()
        })
        .copied()
        .collect()
}

/// nDPI's protocol label for each flow of a capture that involves `ip`, if ndpiReader is
/// installed (Debian's libndpi-bin).
fn ndpi_labels(file: &std::path::Path, ip: Ipv4Addr) -> Option<BTreeMap<String, usize>> {
    let out = std::process::Command::new("ndpiReader")
        .arg("-i")
        .arg(file)
        .args(["-v", "2"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut labels = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains(&format!("{ip}:")) && l.contains("[proto:")) {
        let field = |name: &str| {
            line.split(name)
                .nth(1)
                .and_then(|r| r.split(']').next())
                .unwrap_or("?")
                .trim()
                .to_owned()
        };
        let proto = field("[proto:");
        let proto = proto.split('/').nth(1).unwrap_or(&proto).to_owned();
        // "Match by port" is a guess from the port number, not a recognition of the bytes.
        let label = format!("{proto} ({})", field("[Confidence:"));
        *labels.entry(label).or_default() += 1;
    }
    Some(labels)
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.capture()?;
    ctx.cast(Cast { control: true, ..Cast::default() })?;
    let mut baseline = vec![("cx", "cz", "control")];
    if protected {
        baseline.extend([("alice", "dave", "protected"), ("dave", "alice", "protected")]);
    }
    ctx.baseline(&baseline, Duration::from_secs(60))?;
    ctx.outcome.rule = "a censor that searches every captured stream for libp2p's strings".into();
    ctx.outcome.rule_detail = format!(
        "search every TCP stream (reassembled, both directions) and UDP payload of the captures for: {}",
        LIBP2P_STRINGS.map(|s| format!("`{s}`")).join(", ")
    );
    if protected {
        // Messages both ways, then one through dave's mailbox while he is offline.
        let streams = ctx.stream(
            &[("alice", "dave", "protected", 500), ("dave", "alice", "protected", 500)],
            Duration::from_secs(1),
        );
        ctx.run_for(Duration::from_secs(10));
        streams.stop();
        ctx.drain(&["protected"], Duration::from_secs(30));
        ctx.daemons.get_mut("dave").ok_or_else(|| anyhow::anyhow!("no dave"))?.stop();
        ctx.mark("dave goes offline");
        for _ in 0..3 {
            ctx.traffic.send(&ctx.d("alice").endpoint(), "dave", "mailbox", 500);
        }
        ctx.run_for(Duration::from_secs(2));
        ctx.daemons.get_mut("dave").ok_or_else(|| anyhow::anyhow!("no dave"))?.restart()?;
        ctx.mark("dave comes back and fetches his mailbox");
        ctx.drain(&["protected", "mailbox"], Duration::from_secs(90));
        ctx.traffic.reconcile(&ctx.daemons);
    }
    ctx.stop_captures();

    // The negative control: the search finds libp2p in the control path's flows.
    let own = capture::flows(&capture::read_pcap(&ctx.path("lan.pcap"))?);
    let control_ip = Topology::ip("crelay");
    let control_hits: BTreeSet<&str> =
        own.iter().filter(|f| f.server.0 == control_ip).flat_map(hits).collect();
    ctx.negative(
        "the search on the control path's flows (stock libp2p TCP)",
        "it finds the strings",
        if control_hits.is_empty() {
            "nothing found".into()
        } else {
            format!("found {}", control_hits.into_iter().collect::<Vec<_>>().join(", "))
        },
        !own.iter()
            .filter(|f| f.server.0 == control_ip)
            .flat_map(hits)
            .collect::<Vec<_>>()
            .is_empty(),
    );
    if !protected {
        return Ok(());
    }

    let relay_endpoints: BTreeSet<(Ipv4Addr, u16)> = ctx
        .relay_addrs("relay")
        .iter()
        .filter_map(|a| crate::roles::endpoint(a))
        .filter(|e| e.tcp)
        .map(|e| (e.ip, e.port))
        .collect();
    let mut flows_seen = 0;
    let mut flows_with_hits = 0;
    let mut found: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_file: Vec<String> = Vec::new();
    let mut relay_flows = 0;
    let mut tls_flows = 0;
    let mut fet_flagged = 0;
    let mut ports: BTreeSet<u16> = BTreeSet::new();
    let files = captures(&ctx.env.run_dir, ctx.env.extra.stealth_only);
    for file in &files {
        let flows = capture::flows(&capture::read_pcap(file)?);
        let mut file_hits = 0;
        let mut file_flows = 0;
        for f in flows.iter().filter(|f| !instrument(f.client.0) && !instrument(f.server.0)) {
            if f.up.is_empty() && f.down.is_empty() {
                continue;
            }
            file_flows += 1;
            let h = hits(f);
            if !h.is_empty() {
                file_hits += 1;
                for s in h {
                    *found.entry(s).or_default() += 1;
                }
            }
            if f.tcp
                && !f.first_client_payload.is_empty()
                && classifier::fet(&f.first_client_payload).blocked()
            {
                fet_flagged += 1;
            }
            if f.tcp && relay_endpoints.contains(&f.server) {
                relay_flows += 1;
                ports.insert(f.server.1);
                let whole = |s: &[u8]| s.is_empty() || classifier::tls_records_prefix(s) == s.len();
                tls_flows += usize::from(whole(&f.up) && whole(&f.down));
            }
        }
        flows_seen += file_flows;
        flows_with_hits += file_hits;
        let name = file.strip_prefix(&ctx.env.run_dir).unwrap_or(file).display().to_string();
        by_file.push(format!("{name}: {file_hits} of {file_flows} flows"));
    }
    ctx.criterion(
        "no libp2p string in any protected flow of any capture",
        format!(
            "{flows_with_hits} of {flows_seen} flows in {} captures hit: {}",
            files.len(),
            found.iter().map(|(s, n)| format!("`{s}` in {n}")).collect::<Vec<_>>().join(", ")
        ),
        flows_with_hits == 0 && flows_seen > 0,
    );
    ctx.criterion(
        "every flow to the relay's advertised endpoints is TLS records from its first byte",
        format!("{tls_flows} of {relay_flows} flows"),
        relay_flows > 0 && tls_flows == relay_flows,
    );
    ctx.criterion(
        "the T5 heuristic flags no flow",
        format!("{fet_flagged} of {flows_seen} flows flagged"),
        fet_flagged == 0,
    );
    match ndpi_labels(&ctx.path("lan.pcap"), Topology::ip("relay")) {
        Some(labels) => {
            let shown = labels.iter().map(|(l, n)| format!("{l} x{n}")).collect::<Vec<_>>().join(", ");
            let ok = !labels.is_empty()
                && labels.keys().all(|l| (l.contains("TLS") || l.contains("HTTP")) && l.contains("DPI"));
            ctx.criterion("nDPI recognises the flows to the relay as TLS or HTTP (by their bytes, not their port)", if shown.is_empty() { "no flow labelled".into() } else { shown }, ok);
        }
        None => ctx.outcome.notes.push("nDPI (ndpiReader, Debian's libndpi-bin) is not installed: its labels were not checked.".into()),
    }
    ctx.outcome.figures.push((
        "relay ports seen (a fixed, well-known port is a fingerprint too)".into(),
        ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
    ));
    ctx.outcome.notes.push(format!(
        "Captures searched (flows with a hit / protected flows):\n\n{}",
        by_file.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n")
    ));
    ctx.outcome.needs.push("the stealth transport (issue 12) for every connection a user makes, relayed ones included: TLS records from the first byte, no cleartext protocol name, on a port the operator chooses".into());
    let msgs = ctx.traffic.snapshot();
    let mailbox = crate::traffic::Delivery::of(
        "mailbox: alice -> dave while he was offline",
        &msgs,
        &["mailbox"],
        0,
        u64::MAX,
        Duration::from_secs(120),
    );
    let live = crate::traffic::Delivery::of(
        "live: alice <-> dave",
        &msgs,
        &["protected"],
        0,
        u64::MAX,
        Duration::from_secs(30),
    );
    ctx.outcome.delivery.push(live);
    ctx.outcome.delivery.push(mailbox);
    Ok(())
}
