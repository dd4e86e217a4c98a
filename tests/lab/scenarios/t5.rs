//! T5: the "fully encrypted traffic" heuristic of the GFW (2021-23), copied from Wu et al.
//! (Ex1-Ex5 on the first client payload; see `classifier::fet`). Every TCP flow from the censored
//! LAN to abroad goes through the censor proxy, which blocks (drops) the flows the heuristic
//! classifies as fully encrypted and locks their destination for 180 s.

use std::time::Duration;

use crate::report::Recovery;
use crate::scenario::{Cast, Ctx, ECHO_PORT, PROXY_PORT};
use crate::scenarios::Def;
use crate::topology::{COUNTRY_NET, Topology};
use crate::traffic::Delivery;

pub const DEF: Def = Def {
    id: "T5",
    title: "Entropy (fully encrypted traffic) classifier",
    criterion: "Negative control (random-looking first payloads) blocked for >= 95 % of connections. Kolokol: 0 of its connections classified \"encrypted\". Collateral control: curl to the decoy HTTPS site is never blocked.",
    run,
};

/// How many random-payload flows the negative control opens.
const RANDOM_FLOWS: usize = 40;

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.start_decoy()?;
    ctx.start_sinks()?;
    ctx.start_proxy()?;
    if protected {
        ctx.cast(Cast::default())?;
        ctx.baseline(
            &[("alice", "dave", "protected"), ("dave", "alice", "protected")],
            Duration::from_secs(60),
        )?;
    }
    let lan = ctx.topo.lan_if();
    let tester = Topology::ip("tester");
    // The tester's flows skip the residual block, so that every one of its random flows meets the
    // classifier itself (the control measures the classifier, not the penalty).
    let script = format!(
        "add rule inet censor filter_pre ip saddr != {tester} ip daddr . tcp dport @penalty counter drop comment \"t5-penalty\"\n\
         add rule inet censor nat_pre iifname \"{lan}\" meta l4proto tcp ip daddr != {COUNTRY_NET} counter redirect to :{PROXY_PORT} comment \"t5-classify\"\n"
    );
    let policy = crate::proxy::Policy {
        mode: "fet".into(),
        penalty: Some("dst".into()),
        penalty_s: 180,
        action: "drop".into(),
        ..Default::default()
    };
    ctx.outcome.rule = "drop TCP flows whose first payload looks fully encrypted (Wu et al. Ex1-Ex5), then 180 s residual block".into();
    ctx.outcome.rule_detail = format!(
        "{script}censor proxy policy: {}\n(every connection open before the rule is reset once)",
        serde_json::to_string(&policy)?
    );
    ctx.policy(&policy)?;
    ctx.censor(&script)?;
    ctx.flush_sessions()?;
    let t0 = ctx.mark("T5 classifier on, open connections reset");

    let streams = protected.then(|| {
        ctx.stream(
            &[("alice", "dave", "protected", 300), ("dave", "alice", "protected", 300)],
            Duration::from_secs(1),
        )
    });
    // The controls run while the protected traffic flows.
    let echo = format!("203.0.113.80:{ECHO_PORT}");
    let random = ctx.run_helper("tester", &["random-flows", &echo, &RANDOM_FLOWS.to_string()])?;
    let flows = random["flows"].as_u64().unwrap_or(0);
    let echoed = random["echoed"].as_u64().unwrap_or(0);
    let exempt = random["exempt"].as_u64().unwrap_or(0);
    let blocked = flows - echoed;
    ctx.negative(
        "random first payloads (64-1,024 bytes) from a censored host, the FET profile",
        ">= 95 % of the connections blocked",
        format!("{blocked}/{flows} blocked ({exempt} happened to meet an exemption)"),
        flows > 0 && blocked as f64 >= 0.95 * flows as f64,
    );
    let fetches = 5;
    let ok = (0..fetches).filter(|_| ctx.curl_decoy("tester")).count();
    ctx.collateral(
        "curl https://203.0.113.80/ (the decoy site) from a censored host",
        "every fetch succeeds",
        format!("{ok}/{fetches} succeeded"),
        ok == fetches,
    );
    if let Some(streams) = streams {
        ctx.run_for(ctx.dur(30, 500));
        streams.stop();
    }
    let t_end = ctx.mark("traffic stops");
    if protected {
        let deadline = Duration::from_secs(30);
        ctx.drain(&["protected"], deadline);
        ctx.traffic.reconcile(&ctx.daemons);
        let msgs = ctx.traffic.snapshot();
        let alice = Topology::ip("alice").to_string();
        let verdicts: Vec<_> = ctx
            .verdicts()
            .into_iter()
            .filter(|v| v.src.starts_with(&format!("{alice}:")))
            .collect();
        let flagged = verdicts.iter().filter(|v| v.blocked).count();
        let mut reasons: Vec<String> = verdicts
            .iter()
            .map(|v| v.reason.split(' ').take(3).collect::<Vec<_>>().join(" "))
            .collect();
        reasons.sort();
        reasons.dedup();
        ctx.criterion(
            "0 of Kolokol's connections classified fully encrypted",
            format!("{flagged} of {} of alice's connections", verdicts.len()),
            flagged == 0 && !verdicts.is_empty(),
        );
        let d =
            Delivery::of("protected: alice <-> dave", &msgs, &["protected"], t0, t_end, deadline);
        ctx.criterion(
            ">= 99 % of the protected messages delivered",
            format!("{}/{} ({:.0} %)", d.on_time, d.sent, d.ratio() * 100.0),
            d.ratio() >= 0.99,
        );
        ctx.outcome.recovery =
            Some(Recovery { seconds: ctx.recovery("protected", t0), from: "the rule".into() });
        ctx.outcome.figures.push((
            "what the classifier said about alice's connections".into(),
            reasons.join("; "),
        ));
        if let Some(v) = verdicts.first() {
            ctx.outcome.figures.push((
                "first bytes of alice's first classified connection (hex)".into(),
                format!("`{}`", v.head),
            ));
        }
        ctx.outcome.delivery.push(d);
        let quic = ctx.relay_addrs("relay").iter().any(|a| a.contains("/quic-v1"));
        ctx.outcome.notes.push(if verdicts.is_empty() && quic {
            "None of alice's connections abroad was TCP: her node reached the relay over QUIC (UDP), which this \
             classifier, like the GFW's, never looks at. That passes this censor, but says nothing about how her TCP \
             flows would be judged; the `:stealth` row (TCP to the stealth listener only) measures that."
                .to_owned()
        } else {
            "A first payload passes this rule when it is mostly printable (Ex2/Ex3: the plaintext multistream header, \
             which T3's signature blocks) or a TLS ClientHello (Ex5: the stealth transport)."
                .to_owned()
        });
    }
    ctx.timeline(&[("protected", "protected")]);
    Ok(())
}
