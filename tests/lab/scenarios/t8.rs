//! T8: an SNI blocklist and a TLS fingerprint (JA4) rule, as Russia's TSPU uses against MTProto's
//! fake-TLS in 2026. Every TCP flow from the censored LAN to abroad goes through the censor proxy.
//! First the censor only watches and records the JA4 fingerprint and server name of every
//! ClientHello Kolokol sends; then it blocks (drops) flows with those fingerprints and names.
//! The rule costs the censor nothing if the fingerprint is Kolokol's alone, so the pass criterion
//! is that Kolokol's ClientHello is a mainstream browser's.

use std::time::Duration;

use crate::classifier::BROWSER_JA4;
use crate::report::Recovery;
use crate::scenario::{Cast, Ctx, PROXY_PORT};
use crate::scenarios::Def;
use crate::topology::{COUNTRY_NET, Topology};
use crate::traffic::Delivery;

pub const DEF: Def = Def {
    id: "T8",
    title: "TLS ClientHello fingerprint (JA4) and SNI blocklist",
    criterion: "(a) Rotation to an unblocked SNI/front within <= 30 s, >= 95 % delivery. (b) If the fingerprint is unique to us, we fail: a release-blocking finding until mimicry exists.",
    run,
};

/// Whether `openssl s_client` from `host` completes a TLS handshake with the decoy site.
fn s_client(ctx: &Ctx, host: &str) -> bool {
    ctx.topo
        .exec(
            host,
            "timeout",
            &[
                "8",
                "openssl",
                "s_client",
                "-connect",
                "203.0.113.80:443",
                "-servername",
                "cover.example",
            ],
        )
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("BEGIN CERTIFICATE"))
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.start_decoy()?;
    ctx.start_proxy()?;
    let lan = ctx.topo.lan_if();
    // The censor watches from the start: every flow abroad passes the proxy in record mode.
    let redirect = format!(
        "add rule inet censor nat_pre iifname \"{lan}\" meta l4proto tcp ip daddr != {COUNTRY_NET} counter redirect to :{PROXY_PORT} comment \"t8-classify\"\n"
    );
    ctx.censor(&redirect)?;
    if protected {
        ctx.cast(Cast::default())?;
        ctx.baseline(
            &[("alice", "dave", "protected"), ("dave", "alice", "protected")],
            Duration::from_secs(60),
        )?;
    }
    // What the censor learned: Kolokol's fingerprints and names, and the reference clients'.
    let tester = format!("{}:", Topology::ip("tester"));
    let alice = format!("{}:", Topology::ip("alice"));
    let ja4_of = |ctx: &Ctx, before: usize| -> Option<String> {
        ctx.verdicts()
            .iter()
            .skip(before)
            .filter(|v| v.src.starts_with(&tester))
            .find_map(|v| v.ja4.clone())
    };
    let before = ctx.verdicts().len();
    let _ = s_client(ctx, "tester");
    let s_client_ja4 = ja4_of(ctx, before);
    let before = ctx.verdicts().len();
    let _ = ctx.curl_decoy("tester");
    let curl_ja4 = ja4_of(ctx, before);
    let recorded = ctx.verdicts();
    let kolokol: Vec<_> = recorded.iter().filter(|v| v.src.starts_with(&alice)).collect();
    let mut kolokol_ja4: Vec<String> = kolokol.iter().filter_map(|v| v.ja4.clone()).collect();
    kolokol_ja4.sort();
    kolokol_ja4.dedup();
    let mut kolokol_sni: Vec<String> = kolokol.iter().filter_map(|v| v.sni.clone()).collect();
    kolokol_sni.sort();
    kolokol_sni.dedup();

    let mut block_ja4 = kolokol_ja4.clone();
    block_ja4.extend(s_client_ja4.clone());
    let policy = crate::proxy::Policy {
        mode: "fingerprint".into(),
        block_ja4,
        block_sni: kolokol_sni.clone(),
        action: "drop".into(),
        ..Default::default()
    };
    ctx.outcome.rule =
        "drop TLS flows whose ClientHello has Kolokol's JA4 fingerprint or server name".into();
    ctx.outcome.rule_detail = format!(
        "{redirect}censor proxy policy (armed after watching Kolokol's flows; the openssl s_client fingerprint is \
         added for the negative control): {}\n(every connection open before the rule is reset once)",
        serde_json::to_string(&policy)?
    );
    ctx.policy(&policy)?;
    ctx.flush_sessions()?;
    let t0 = ctx.mark("T8 fingerprint rule armed, open connections reset");
    let streams = protected.then(|| {
        ctx.stream(
            &[("alice", "dave", "protected", 300), ("dave", "alice", "protected", 300)],
            Duration::from_secs(1),
        )
    });
    let blocked_reference = !s_client(ctx, "tester");
    ctx.negative(
        "openssl s_client to the decoy site, its fingerprint on the block list",
        "the handshake never completes",
        format!(
            "JA4 {}: {}",
            s_client_ja4.as_deref().unwrap_or("(not seen)"),
            if blocked_reference { "blocked" } else { "handshake completed" }
        ),
        s_client_ja4.is_some() && blocked_reference,
    );
    let fetches = 3;
    let ok = (0..fetches).filter(|_| ctx.curl_decoy("tester")).count();
    ctx.collateral(
        "curl to the decoy site (another fingerprint)",
        "every fetch succeeds",
        format!("JA4 {}: {ok}/{fetches} succeeded", curl_ja4.as_deref().unwrap_or("(not seen)")),
        ok == fetches && curl_ja4 != s_client_ja4,
    );
    if let Some(streams) = streams {
        ctx.run_for(ctx.dur(30, 300));
        streams.stop();
        let t_end = ctx.mark("traffic stops");
        let deadline = Duration::from_secs(30);
        ctx.drain(&["protected"], deadline);
        ctx.traffic.reconcile(&ctx.daemons);
        let msgs = ctx.traffic.snapshot();
        let d =
            Delivery::of("protected: alice <-> dave", &msgs, &["protected"], t0, t_end, deadline);
        let browser = kolokol_ja4
            .iter()
            .find_map(|fp| BROWSER_JA4.iter().find(|(_, b)| b == fp).map(|(name, _)| *name));
        ctx.criterion(
            "(b) Kolokol's ClientHello is a mainstream browser's (blocking it costs the censor that browser)",
            if kolokol_ja4.is_empty() {
                format!("none of alice's {} flows abroad carried a TLS ClientHello: the flows are not TLS at all", kolokol.len())
            } else {
                format!("JA4 {}: {}", kolokol_ja4.join(", "), browser.map_or("matches no browser in the list".into(), |b| format!("matches {b}")))
            },
            browser.is_some(),
        );
        ctx.criterion(
            "(a) >= 95 % delivered while Kolokol's fingerprint and names are blocked",
            format!("{}/{} ({:.0} %)", d.on_time, d.sent, d.ratio() * 100.0),
            d.ratio() >= 0.95,
        );
        ctx.outcome.recovery =
            Some(Recovery { seconds: ctx.recovery("protected", t0), from: "the rule".into() });
        ctx.outcome.figures.push((
            "reference fingerprints (JA4) of mainstream browsers".into(),
            BROWSER_JA4.iter().map(|(n, f)| format!("{n}: `{f}`")).collect::<Vec<_>>().join("; "),
        ));
        ctx.outcome.delivery.push(d);
        ctx.outcome.needs.push(
            "a TLS transport (issue 12) whose ClientHello is a mainstream browser's (measured JA4 equal to Chrome's or \
             Firefox's), or, until then, its measured fingerprint stated here as a known limitation"
                .into(),
        );
        ctx.outcome.needs.push(
            "several cover server names and fronts, and rotation to another when one is blocked"
                .into(),
        );
        ctx.outcome.notes.push(
            "Without TLS there is no fingerprint rule to beat, but nothing to hide behind either: a censor that \
             fingerprints ClientHellos sees flows that are not TLS, and T3's signature blocks them."
                .into(),
        );
    }
    ctx.timeline(&[("protected", "protected")]);
    Ok(())
}
