//! T10: the volume-triggered freeze (Russia, 2025: TLS connections to foreign hosting stall
//! after about 16 KB from the server, with no reset). Packets from "foreign hosting"
//! (203.0.113.0/24) to the censored side are dropped once their connection has carried more than
//! 16,384 bytes that way (conntrack byte counters).

use std::time::Duration;

use crate::report::Recovery;
use crate::scenario::{Cast, Ctx, SOURCE_PORT};
use crate::scenarios::Def;
use crate::topology::HOSTING_NET;
use crate::traffic::Delivery;

pub const DEF: Def = Def {
    id: "T10",
    title: "Volume-triggered freeze after 16 KB from foreign hosting",
    criterion: "Stall detected <= 10 s. 1 MiB attachment delivered within <= 120 s at the test's bandwidth. No stuck sessions after 10 min.",
    run,
};

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.start_sinks()?;
    if protected {
        ctx.cast(Cast::default())?;
        ctx.baseline(
            &[("alice", "dave", "protected"), ("dave", "alice", "protected")],
            Duration::from_secs(60),
        )?;
    }
    let script = format!(
        "add rule inet censor forward ip saddr {HOSTING_NET} ct direction reply ct reply bytes > 16384 counter drop comment \"t10\"\n"
    );
    ctx.outcome.rule =
        "drop server-to-client packets of connections to foreign hosting after 16 KB".into();
    ctx.outcome.rule_detail = format!("sysctl net.netfilter.nf_conntrack_acct=1\n{script}");
    ctx.censor(&script)?;
    let t0 = ctx.mark("T10 freeze rule on (connections already past 16 KB freeze at once)");
    let fetched = ctx
        .run_helper("tester", &["fetch", &format!("203.0.113.80:{SOURCE_PORT}"), "65536", "10"])?;
    let bytes = fetched["bytes"].as_u64().unwrap_or(u64::MAX);
    ctx.negative(
        "a 64 KiB download from a foreign hosting address",
        "it stalls after about 16 KB",
        format!("{bytes} bytes arrived in {} s", fetched["secs"]),
        bytes < 32 * 1024,
    );
    if !protected {
        return Ok(());
    }
    let large = ctx.traffic.send(&ctx.d("dave").endpoint(), "alice", "large", 1_000_000);
    let streams = ctx.stream(
        &[("alice", "dave", "text", 300), ("dave", "alice", "text", 300)],
        Duration::from_secs(2),
    );
    ctx.run_for(ctx.dur(60, 600));
    streams.stop();
    let t_end = ctx.mark("text messages stop");
    let deadline = Duration::from_secs(30);
    ctx.drain(
        &["text", "large"],
        Duration::from_secs(120).saturating_sub(Duration::from_millis(crate::clock::now_ms() - t0)),
    );
    ctx.traffic.reconcile(&ctx.daemons);
    let msgs = ctx.traffic.snapshot();
    let text = Delivery::of("text messages, alice <-> dave", &msgs, &["text"], t0, t_end, deadline);
    let big = Delivery::of(
        "one 1,000,000-byte message, dave -> alice (server-to-client direction)",
        &msgs,
        &["large"],
        t0,
        t_end,
        Duration::from_secs(120),
    );
    ctx.criterion(
        "a stall is detected and worked around within 10 s: text messages p95 <= 10 s, all delivered",
        text.p95_s.map_or(format!("none of {} arrived", text.sent), |p| format!("p95 {p:.1} s, {}/{} delivered", text.on_time, text.sent)),
        text.p95_s.is_some_and(|p| p <= 10.0) && text.arrived == text.sent,
    );
    let big_latency = large.and_then(|s| {
        let m = &msgs[s as usize];
        m.delivered_ms.map(|d| (d.saturating_sub(m.sent_ms)) as f64 / 1000.0)
    });
    ctx.criterion(
        "the 1 MB message is delivered within 120 s",
        big_latency
            .map_or("not delivered within 120 s".into(), |s| format!("delivered in {s:.0} s")),
        big_latency.is_some_and(|s| s <= 120.0),
    );
    ctx.outcome.recovery =
        Some(Recovery { seconds: ctx.recovery("text", t0), from: "the rule".into() });
    ctx.outcome
        .figures
        .push(("packets dropped by the freeze rule".into(), ctx.counter("t10")?.to_string()));
    ctx.outcome.delivery.push(text);
    ctx.outcome.delivery.push(big);
    ctx.outcome.notes.push(if ctx.env.long {
        "\"No stuck sessions after 10 min\": the traffic went on for 10 minutes under the rule, and the figures above count all of it.".into()
    } else {
        "\"No stuck sessions after 10 min\" needs the long run (`--long`), which keeps the traffic going for 10 minutes.".into()
    });
    ctx.outcome.needs.push(
        "issue 13: detect a stalled connection within seconds (no progress on an open stream) and reconnect, cap the \
         bytes sent over one connection to hosting addresses below the threshold, prefer residential or domestic relays, \
         and resume a chunked message instead of restarting it"
            .into(),
    );
    ctx.timeline(&[("text", "text"), ("large", "1 MB")]);
    Ok(())
}
