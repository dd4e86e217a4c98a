//! T4: stateful DPI with a residual block (the GFW's 120-180 s, Iran's 60 s). T3's signature
//! rule, and every flow it catches from the censored side puts its destination address and port
//! into a penalty set for 180 s, whose packets are then dropped. The lab forces one trigger: the
//! censored `tester` host sends the multistream header to the relay endpoint alice used before
//! the rule, which locks that endpoint for everyone behind the censor.

use std::time::Duration;

use crate::report::Recovery;
use crate::scenario::{Cast, Ctx};
use crate::scenarios::Def;
use crate::scenarios::t3::SIGNATURES;
use crate::topology::Topology;
use crate::traffic::Delivery;

pub const DEF: Def = Def {
    id: "T4",
    title: "Stateful DPI with a residual block",
    criterion: "After one forced trigger, delivery resumes via another endpoint within <= 10 s (not after 180 s).",
    run,
};

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.cast(Cast { control: true, ..Cast::default() })?;
    let mut baseline = vec![("cx", "cz", "control")];
    if protected {
        baseline.extend([("alice", "dave", "protected"), ("dave", "alice", "protected")]);
    }
    ctx.baseline(&baseline, Duration::from_secs(60))?;
    // The endpoint to lock: the one alice reached the relay at (the control path's when only the
    // controls run).
    let (user, relay) = if protected { ("alice", "relay") } else { ("cx", "crelay") };
    let endpoint = ctx
        .connected_endpoint(user, relay)
        .or_else(|| crate::roles::endpoint(ctx.d(relay).addresses.first()?))
        .ok_or_else(|| anyhow::anyhow!("no endpoint of {relay} to trigger"))?;

    let lan = ctx.topo.lan_if();
    let tester = Topology::ip("tester");
    let control = Topology::ip("crelay");
    let mut script = String::new();
    script.push_str(&format!(
        "add rule inet censor filter_pre ip daddr {control} ip daddr . tcp dport @penalty counter drop comment \"t4-control-penalty\"\n\
         add rule inet censor filter_pre ip daddr . tcp dport @penalty counter drop comment \"t4-penalty\"\n"
    ));
    for sig in SIGNATURES {
        script.push_str(&format!(
            "add rule inet censor forward iifname \"{lan}\" ip daddr {control} meta l4proto tcp {sig} add @penalty {{ ip daddr . tcp dport }} counter reject with tcp reset comment \"t4-control\"\n\
             add rule inet censor forward ip saddr {control} meta l4proto tcp {sig} counter reject with tcp reset comment \"t4-control\"\n\
             add rule inet censor forward iifname \"{lan}\" meta l4proto tcp {sig} add @penalty {{ ip daddr . tcp dport }} counter reject with tcp reset comment \"t4\"\n\
             add rule inet censor forward meta l4proto tcp {sig} counter reject with tcp reset comment \"t4\"\n"
        ));
    }
    ctx.outcome.rule =
        "T3's signature, plus a 180 s residual block of the flow's destination".into();
    ctx.outcome.rule_detail = format!(
        "{script}(every connection open before the rule is reset once; the lab's tester ({tester}) trips the rule once toward {}:{})",
        endpoint.ip, endpoint.port
    );
    ctx.censor(&script)?;
    ctx.flush_sessions()?;
    let t0 = ctx.mark("T4 rule on, open connections reset");

    let mut pairs = vec![("cx", "cz", "control", 300), ("cz", "cx", "control", 300)];
    if protected {
        pairs.extend([("alice", "dave", "protected", 300), ("dave", "alice", "protected", 300)]);
    }
    let streams = ctx.stream(&pairs, Duration::from_secs(1));
    ctx.run_for(Duration::from_secs(5));
    let to = format!("{}:{}", endpoint.ip, endpoint.port);
    let in_penalty = |ctx: &Ctx| {
        ctx.topo
            .exec("tspu", "nft", &["list", "set", "inet", "censor", "penalty"])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .contains(&format!("{} . {}", endpoint.ip, endpoint.port))
            })
            .unwrap_or(false)
    };
    // The protected path may have locked the endpoint itself already, by tripping the rule.
    let locked_before = in_penalty(ctx);
    let trip = ctx.probe("tester", &to, "multistream", 2000)?;
    let t1 = ctx.mark(&format!(
        "forced trigger: tester sends the multistream header to {to} ({})",
        trip.close
    ));
    // The residual block: a fresh connection to the locked endpoint now goes nowhere.
    let after = ctx.probe("tester", &to, "none", 2000)?;
    let in_set = in_penalty(ctx);
    ctx.run_for(ctx.dur(45, 300));
    streams.stop();
    let t_end = ctx.mark("traffic stops");
    let deadline = Duration::from_secs(30);
    ctx.drain(&["protected"], deadline);
    ctx.traffic.reconcile(&ctx.daemons);
    let msgs = ctx.traffic.snapshot();

    let control =
        Delivery::of("control: stock TCP, cx <-> cz", &msgs, &["control"], t0, t_end, deadline);
    let hits = ctx.counter("t4-control")?;
    ctx.negative(
        "stock libp2p TCP through the control relay",
        "0 messages delivered",
        format!("{}/{} delivered, {hits} packets hit the rule", control.arrived, control.sent),
        control.arrived == 0 && control.sent > 0,
    );
    ctx.negative(
        "the forced trigger locks its endpoint",
        "the trigger is reset (or finds the endpoint locked already), the endpoint is in the penalty set, a new connection to it fails",
        format!(
            "locked before the trigger: {}; trigger: {}; in the penalty set: {}; a new connection: {}",
            if locked_before { "yes, by the protected path's own traffic" } else { "no" },
            trip.close,
            if in_set { "yes" } else { "no" },
            if after.connected { "connected" } else { &after.close }
        ),
        (trip.close == "rst" || locked_before) && in_set && !after.connected,
    );
    if protected {
        let d = Delivery::of(
            "protected: alice <-> dave after the trigger",
            &msgs,
            &["protected"],
            t1,
            t_end,
            deadline,
        );
        let recovery = ctx.recovery("protected", t1);
        ctx.criterion(
            "delivery resumes within 10 s of the trigger",
            recovery.map_or("never within the scenario".into(), |s| format!("{s:.1} s")),
            recovery.is_some_and(|s| s <= 10.0),
        );
        ctx.outcome.recovery =
            Some(Recovery { seconds: recovery, from: "the forced trigger".into() });
        ctx.outcome.delivery.push(d);
        let before = Delivery::of(
            "protected: alice <-> dave between the rule and the trigger",
            &msgs,
            &["protected"],
            t0,
            t1,
            deadline,
        );
        ctx.outcome.delivery.push(before);
        ctx.outcome.needs.push(
            "T3 first: the protected path must not trip the signature at all (issue 12)".into(),
        );
        ctx.outcome.needs.push(
            "then endpoint fallback (issue 13): on a reset or a stall, dial the relay's other addresses and ports (and \
             other relays) within seconds instead of redialling the locked endpoint"
                .into(),
        );
    }
    ctx.outcome.delivery.push(control);
    ctx.timeline(&[("protected", "protected"), ("control", "control")]);
    Ok(())
}
