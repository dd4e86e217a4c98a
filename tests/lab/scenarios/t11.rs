//! T11: active probing (the GFW since 2011; Frolov et al., NDSS 2020). From the censor's own
//! namespace, the prober sends the same probes to every endpoint the relay advertises and to a
//! decoy HTTPS site (openssl s_server on 203.0.113.80:443), and compares what comes back and how
//! each connection ends. A relay that answers unlike a web server is found out.

use std::time::Duration;

use crate::capture;
use crate::probe::ProbeResult;
use crate::scenario::{Cast, Ctx};
use crate::scenarios::Def;
use crate::topology::Topology;

pub const DEF: Def = Def {
    id: "T11",
    title: "Active probing of relay listeners",
    criterion: "No response ever contains libp2p strings. For each probe class the response bytes and close behaviour match the decoy server, with timing difference < 50 ms median. Replayed first flights are rejected without a distinguishing response.",
    run,
};

/// The strings that give libp2p away (issue 12's list).
pub const LIBP2P_STRINGS: [&str; 6] =
    ["/multistream", "/noise", "/yamux", "/kolokol", "/ipfs", "libp2p"];

/// How long each probe waits for an answer and a close.
const PROBE_WAIT_MS: u64 = 2500;

/// What a response looks like to a censor.
fn class(bytes: &[u8]) -> &'static str {
    if bytes.is_empty() {
        "nothing"
    } else if LIBP2P_STRINGS.iter().any(|s| capture::find(bytes, s.as_bytes()).is_some()) {
        "libp2p"
    } else if bytes.len() >= 2 && bytes[0] == 0x16 && bytes[1] == 0x03 {
        "TLS handshake"
    } else if bytes.len() >= 2 && bytes[0] == 0x15 && bytes[1] == 0x03 {
        "TLS alert"
    } else if bytes.starts_with(b"HTTP/") {
        "HTTP response"
    } else {
        "other bytes"
    }
}

/// One probe's outcome at one target: (response class, close, close time in ms).
#[derive(Clone)]
struct Seen {
    class: String,
    close: String,
    ms: Option<u64>,
}

impl Seen {
    fn raw(r: &ProbeResult) -> Self {
        let class = if r.connected {
            class(&r.answer()).to_owned()
        } else {
            format!("no connection ({})", r.close)
        };
        let ms = matches!(r.close.as_str(), "fin" | "rst").then_some(r.close_ms);
        Self { class, close: r.close.clone(), ms }
    }
    fn shown(&self) -> String {
        format!("{}, {}", self.class, self.close)
    }
}

/// A TLS handshake with openssl s_client from the censor's namespace, then `after` sent inside
/// the tunnel: what came back.
fn tls_then(ctx: &Ctx, target: &str, after: &str) -> Seen {
    let command = format!(
        "printf '{after}' | timeout 6 openssl s_client -connect {target} -servername cover.example -ign_eof 2>/dev/null"
    );
    let out = ctx.topo.exec("tspu", "sh", &["-c", &command]);
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    // Kept for a reader who wants to see what the prober saw.
    let file = ctx.path(&format!("tls-{}-{}.txt", target.replace(':', "-"), after.len()));
    let _ = std::fs::write(file, &text);
    let handshake = text.contains("BEGIN CERTIFICATE");
    let libp2p = LIBP2P_STRINGS.iter().any(|s| text.contains(s));
    let answer = text.split("---").last().unwrap_or_default();
    let class = if libp2p {
        "libp2p"
    } else if !handshake {
        "TLS handshake failed"
    } else if answer.contains("HTTP/1") {
        "TLS handshake, then an HTTP response"
    } else {
        "TLS handshake, then no answer"
    };
    Seen { class: class.into(), close: String::new(), ms: None }
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.capture()?;
    ctx.start_decoy()?;
    ctx.cast(Cast { control: true, ..Cast::default() })?;
    let mut baseline = vec![("cx", "cz", "control")];
    if protected {
        baseline.push(("alice", "dave", "protected"));
    }
    ctx.baseline(&baseline, Duration::from_secs(60))?;
    ctx.outcome.rule = "probes from the censor to every advertised relay endpoint, compared with a decoy HTTPS site".into();

    // The negative control: the prober tells stock libp2p apart.
    let control = format!("{}:4001", Topology::ip("crelay"));
    let r = ctx.probe("tspu", &control, "multistream", PROBE_WAIT_MS)?;
    let seen = Seen::raw(&r);
    ctx.negative(
        "the multistream header sent to stock libp2p (the control relay)",
        "the answer gives libp2p away",
        seen.shown(),
        seen.class == "libp2p",
    );
    if !protected {
        return Ok(());
    }

    // A real client's first flight, from the capture: alice's first payload to the relay.
    let relay_ip = Topology::ip("relay");
    let packets = capture::read_pcap(&ctx.path("lan.pcap"))?;
    let first_flight = capture::flows(&packets)
        .into_iter()
        .find(|f| {
            f.client.0 == Topology::ip("alice")
                && f.server.0 == relay_ip
                && !f.first_client_payload.is_empty()
        })
        .map(|f| f.first_client_payload);
    let replay = ctx.path("first-flight.bin");
    if let Some(bytes) = &first_flight {
        std::fs::write(&replay, bytes)?;
    }
    let random_sni = format!("{:08x}.example", rand::random::<u32>());
    let mut probes: Vec<(String, String)> = vec![
        ("multistream header".into(), "multistream".into()),
        ("1 random byte".into(), "random:1".into()),
        ("64 random bytes".into(), "random:64".into()),
        ("517 random bytes".into(), "random:517".into()),
        ("2,048 random bytes".into(), "random:2048".into()),
        ("plain HTTP request".into(), "http".into()),
        ("TLS ClientHello, cover SNI".into(), "hello:cover.example".into()),
        (format!("TLS ClientHello, another SNI ({random_sni})"), format!("hello:{random_sni}")),
        ("nothing (connect and wait)".into(), "none".into()),
    ];
    if first_flight.is_some() {
        probes.push((
            "replayed first flight of a real client".into(),
            format!("file:{}", replay.display()),
        ));
    }
    let decoy = "203.0.113.80:443".to_owned();
    let targets: Vec<String> = ctx
        .relay_addrs("relay")
        .iter()
        .filter_map(|a| crate::roles::endpoint(a))
        .filter(|e| e.tcp)
        .map(|e| format!("{}:{}", e.ip, e.port))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rows = Vec::new();
    let (mut leaks, mut mismatches, mut diffs) = (0, 0, Vec::new());
    for (name, payload) in &probes {
        let reference = Seen::raw(&ctx.probe("tspu", &decoy, payload, PROBE_WAIT_MS)?);
        for target in &targets {
            let seen = Seen::raw(&ctx.probe("tspu", target, payload, PROBE_WAIT_MS)?);
            leaks += usize::from(seen.class == "libp2p");
            let same = seen.class == reference.class && seen.close == reference.close;
            mismatches += usize::from(!same);
            if let (Some(a), Some(b)) = (seen.ms, reference.ms) {
                diffs.push(a.abs_diff(b));
            }
            rows.push(format!(
                "| {name} | {target} | {} | {} | {} |",
                seen.shown(),
                reference.shown(),
                if same { "same" } else { "**differs**" }
            ));
        }
    }
    for (name, after) in [
        ("TLS handshake, then garbage", "x7\\001\\377garbage\\n"),
        (
            "TLS handshake, then an HTTP request to a wrong path",
            "GET /x7f3q HTTP/1.1\\r\\nHost: cover.example\\r\\n\\r\\n",
        ),
    ] {
        let reference = tls_then(ctx, &decoy, after);
        for target in &targets {
            let seen = tls_then(ctx, target, after);
            leaks += usize::from(seen.class == "libp2p");
            let same = seen.class == reference.class;
            mismatches += usize::from(!same);
            rows.push(format!(
                "| {name} | {target} | {} | {} | {} |",
                seen.class,
                reference.class,
                if same { "same" } else { "**differs**" }
            ));
        }
    }
    diffs.sort_unstable();
    let median = diffs.get(diffs.len() / 2).copied();
    ctx.criterion(
        "no response contains a libp2p string",
        format!("{leaks} responses did"),
        leaks == 0,
    );
    ctx.criterion(
        "every probe is answered as the decoy web server answers it",
        format!("{mismatches} of {} probe-endpoint pairs differ", rows.len()),
        mismatches == 0,
    );
    ctx.criterion(
        "median difference in close time < 50 ms",
        median.map_or("no probe closed at both".into(), |m| {
            format!("{m} ms over {} pairs", diffs.len())
        }),
        median.is_some_and(|m| m < 50),
    );
    if first_flight.is_none() {
        ctx.outcome.notes.push("The capture held no first flight of alice's to replay.".into());
    }
    ctx.outcome.notes.push(format!(
        "Every probe, at every endpoint the relay advertises, and at the decoy:\n\n| Probe | Endpoint | Relay's answer | Decoy's answer | |\n|---|---|---|---|---|\n{}",
        rows.join("\n")
    ));
    ctx.outcome.needs.push(
        "probe resistance (issue 12): before a client proves it knows the relay's secret, the stealth listener behaves \
         exactly like the cover web server (same bytes, same close, same timing), also after a valid TLS handshake and \
         for a replayed first flight; and the plain TCP listener not advertised where it gives the relay away"
            .into(),
    );
    Ok(())
}
