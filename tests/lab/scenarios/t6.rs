//! T6: a protocol allowlist (Iran, February 2020; Bock et al., FOCI 2020). Across the border only
//! TCP ports 53, 80 and 443 pass, and on them only flows whose first payload is DNS, HTTP or a TLS
//! ClientHello; any other flow is dropped and its (client, server, port) locked for 60 s.

use std::time::Duration;

use crate::report::Recovery;
use crate::scenario::{Cast, Ctx, PROXY_PORT};
use crate::scenarios::Def;
use crate::topology::{COUNTRY_NET, Topology};
use crate::traffic::Delivery;

pub const DEF: Def = Def {
    id: "T6",
    title: "Protocol allowlist: only DNS, HTTP and TLS on 53, 80 and 443",
    criterion: "Stealth transport >= 99 % delivery. Every non-443 transport fails (expected). Time to fall back from the blocked transport <= 15 s.",
    run,
};

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.start_decoy()?;
    ctx.start_proxy()?;
    ctx.cast(Cast { control: true, ..Cast::default() })?;
    let mut baseline = vec![("cx", "cz", "control")];
    if protected {
        baseline.extend([("alice", "dave", "protected"), ("dave", "alice", "protected")]);
    }
    ctx.baseline(&baseline, Duration::from_secs(60))?;

    let lan = ctx.topo.lan_if();
    let up = ctx.topo.uplink_if();
    let control = Topology::ip("crelay");
    let script = format!(
        "add rule inet censor filter_pre ip saddr . ip daddr . tcp dport @penalty3 counter drop comment \"t6-penalty\"\n\
         add rule inet censor nat_pre iifname \"{lan}\" meta l4proto tcp ip daddr != {COUNTRY_NET} tcp dport {{ 53, 80, 443 }} counter redirect to :{PROXY_PORT} comment \"t6-classify\"\n\
         add rule inet censor forward iifname \"{lan}\" oifname \"{up}\" ip daddr {control} meta l4proto tcp tcp dport != {{ 53, 80, 443 }} counter drop comment \"t6-control-ports\"\n\
         add rule inet censor forward iifname \"{lan}\" oifname \"{up}\" meta l4proto tcp tcp dport != {{ 53, 80, 443 }} counter drop comment \"t6-ports\"\n\
         add rule inet censor forward iifname \"{lan}\" oifname \"{up}\" meta l4proto udp udp dport != 53 counter drop comment \"t6-udp\"\n"
    );
    // UDP is not on the allowlist (only DNS is): without the last rule, QUIC on 4001, which
    // relays offer by default, would cross the border untouched and T6 would measure nothing.
    let policy = crate::proxy::Policy {
        mode: "allowlist".into(),
        penalty: Some("src_dst".into()),
        penalty_s: 60,
        action: "drop".into(),
        ..Default::default()
    };
    ctx.outcome.rule = "only TCP 53/80/443 (and UDP 53) across the border, first payload must be DNS, HTTP or a TLS ClientHello; else drop, 60 s lock".into();
    ctx.outcome.rule_detail = format!(
        "{script}censor proxy policy: {}\n(every connection open before the rule is reset once)",
        serde_json::to_string(&policy)?
    );
    ctx.policy(&policy)?;
    ctx.censor(&script)?;
    ctx.flush_sessions()?;
    let t0 = ctx.mark("T6 allowlist on, open connections reset");

    let mut pairs = vec![("cx", "cz", "control", 300), ("cz", "cx", "control", 300)];
    if protected {
        pairs.extend([("alice", "dave", "protected", 300), ("dave", "alice", "protected", 300)]);
    }
    let streams = ctx.stream(&pairs, Duration::from_secs(1));
    // Stock libp2p on 443: the control relay listens there too.
    let on_443 = ctx.probe("tester", &format!("{control}:443"), "multistream", 3000)?;
    let fetches = 5;
    let ok = (0..fetches).filter(|_| ctx.curl_decoy("tester")).count();
    ctx.run_for(ctx.dur(40, 500));
    streams.stop();
    let t_end = ctx.mark("traffic stops");
    let deadline = Duration::from_secs(30);
    ctx.drain(&["protected"], deadline);
    ctx.traffic.reconcile(&ctx.daemons);
    let msgs = ctx.traffic.snapshot();

    let control_d = Delivery::of(
        "control: stock TCP on 4001, cx <-> cz",
        &msgs,
        &["control"],
        t0,
        t_end,
        deadline,
    );
    let port_hits = ctx.counter("t6-control-ports")?;
    ctx.negative(
        "stock libp2p TCP to the control relay's port 4001",
        "0 messages delivered",
        format!(
            "{}/{} delivered, {port_hits} packets dropped by the port rule",
            control_d.arrived, control_d.sent
        ),
        control_d.arrived == 0 && control_d.sent > 0,
    );
    let answered = on_443.received > 0;
    ctx.negative(
        "stock libp2p (the multistream header) to the control relay's port 443",
        "no answer (the classifier drops the flow)",
        format!("{} bytes answered, {}", on_443.received, on_443.close),
        on_443.connected && !answered,
    );
    ctx.collateral(
        "curl https://203.0.113.80/ (the decoy site) from a censored host",
        "every fetch succeeds",
        format!("{ok}/{fetches} succeeded"),
        ok == fetches,
    );
    if protected {
        let d =
            Delivery::of("protected: alice <-> dave", &msgs, &["protected"], t0, t_end, deadline);
        let recovery = ctx.recovery("protected", t0);
        ctx.criterion(
            ">= 99 % of the protected messages delivered",
            format!("{}/{} ({:.0} %)", d.on_time, d.sent, d.ratio() * 100.0),
            d.ratio() >= 0.99,
        );
        ctx.criterion(
            "fallback to the allowed transport within 15 s",
            recovery.map_or("never within the scenario".into(), |s| format!("{s:.1} s")),
            recovery.is_some_and(|s| s <= 15.0),
        );
        ctx.outcome.recovery = Some(Recovery { seconds: recovery, from: "the rule".into() });
        let alice = format!("{}:", Topology::ip("alice"));
        let verdicts: Vec<_> =
            ctx.verdicts().into_iter().filter(|v| v.src.starts_with(&alice)).collect();
        let mut reasons: Vec<String> =
            verdicts.iter().map(|v| format!("{} -> {}", v.dst, v.reason)).collect();
        reasons.sort();
        reasons.dedup();
        ctx.outcome.figures.push((
            "alice's flows to 53/80/443, as classified".into(),
            if reasons.is_empty() { "none".into() } else { reasons.join("; ") },
        ));
        ctx.outcome.figures.push((
            "relay addresses the users were given".into(),
            ctx.relay_addrs("relay").join(", "),
        ));
        ctx.outcome.delivery.push(d);
        ctx.outcome.needs.push("a transport on TCP 443 whose first payload is a real TLS ClientHello (issue 12's stealth transport)".into());
        ctx.outcome.needs.push("fallback (issue 13): when 4001 is dropped, move to the relay's 443 address within seconds and remember it".into());
    }
    ctx.outcome.delivery.push(control_d);
    ctx.timeline(&[("protected", "protected"), ("control", "control")]);
    Ok(())
}
