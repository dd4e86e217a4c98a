//! T3: a static DPI signature on the libp2p handshake. The censor resets every TCP flow whose
//! payload starts with the multistream-select header, `0x13 "/multis"` (rust-libp2p sends the
//! whole header in one packet) or `"/multistream"` (js-libp2p sends the length byte alone first):
//! section 4.4 of the threat model says a rule meant to bite must catch both.

use crate::clock::secs;
use crate::report::Recovery;
use crate::scenario::{Cast, Ctx};
use crate::scenarios::Def;
use crate::topology::Topology;
use crate::traffic::Delivery;

pub const DEF: Def = Def {
    id: "T3",
    title: "Static DPI signature on the libp2p handshake",
    criterion: "Negative control (stock TCP) fails 100 %. Stealth transport: >= 99 % of 1,000 messages delivered, and the rule's packet counter stays 0.",
    run,
};

/// The two payload signatures, as nft matches on the bytes after the TCP header (`@ih`).
pub const SIGNATURES: [&str; 2] = [
    // 0x13 "/multis": the length byte and the start of "/multistream/1.0.0\n".
    "@ih,0,64 0x132f6d756c746973",
    // "/multistream", for stacks that send the length byte in a packet of its own.
    "@ih,0,96 0x2f6d756c746973747265616d",
];

/// The censor's rules: identical for every flow; the control relay's flows are counted by rules
/// of their own so that the main counter counts only the protected path.
pub fn rules(verdict: &str) -> String {
    let control = Topology::ip("crelay");
    let mut script = String::new();
    for sig in SIGNATURES {
        for dir in ["daddr", "saddr"] {
            script.push_str(&format!(
                "add rule inet censor forward ip {dir} {control} meta l4proto tcp {sig} counter {verdict} comment \"t3-control\"\n"
            ));
        }
    }
    for sig in SIGNATURES {
        script.push_str(&format!(
            "add rule inet censor forward meta l4proto tcp {sig} counter {verdict} comment \"t3\"\n"
        ));
    }
    script
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.capture()?;
    ctx.cast(Cast { control: true, ..Cast::default() })?;
    let mut baseline = vec![("cx", "cz", "control")];
    if protected {
        baseline.extend([("alice", "dave", "protected"), ("dave", "alice", "protected")]);
    }
    ctx.baseline(&baseline, ctx.dur(60, 60))?;

    let script = rules("reject with tcp reset");
    ctx.outcome.rule = "reset TCP flows starting `0x13 /multis` or `/multistream`".into();
    ctx.outcome.rule_detail =
        format!("{script}(and every connection open before the rule is reset once)");
    ctx.censor(&script)?;
    ctx.flush_sessions()?;
    let t0 = ctx.mark("T3 rule on, open connections reset");

    let mut pairs = vec![("cx", "cz", "control", 300), ("cz", "cx", "control", 300)];
    if protected {
        pairs.extend([("alice", "dave", "protected", 300), ("dave", "alice", "protected", 300)]);
    }
    // One message per second per direction; the long run sends 1,000 on the protected path.
    let streams = ctx.stream(&pairs, std::time::Duration::from_secs(1));
    ctx.run_for(ctx.dur(40, 500));
    streams.stop();
    let t_end = ctx.mark("traffic stops");
    let deadline = std::time::Duration::from_secs(30);
    ctx.drain(&["protected"], deadline);
    ctx.traffic.reconcile(&ctx.daemons);
    let msgs = ctx.traffic.snapshot();

    let control =
        Delivery::of("control: stock TCP, cx <-> cz", &msgs, &["control"], t0, t_end, deadline);
    let control_hits = ctx.counter("t3-control")?;
    ctx.negative(
        "stock libp2p TCP through the control relay",
        "0 messages delivered, rule hits > 0",
        format!(
            "{}/{} delivered, {control_hits} packets hit the rule",
            control.arrived, control.sent
        ),
        control.arrived == 0 && control.sent > 0 && control_hits > 0,
    );
    if protected {
        let d = Delivery::of(
            "protected: alice <-> dave via the relay's advertised addresses",
            &msgs,
            &["protected"],
            t0,
            t_end,
            deadline,
        );
        let hits = ctx.counter("t3")?;
        ctx.criterion(
            ">= 99 % of the protected messages delivered",
            format!("{}/{} ({:.0} %)", d.on_time, d.sent, d.ratio() * 100.0),
            d.ratio() >= 0.99,
        );
        ctx.criterion(
            "the rule's packet counter stays 0 for the protected path",
            format!("{hits} packets"),
            hits == 0,
        );
        let first = msgs
            .iter()
            .filter(|m| m.class == "protected" && m.sent_ms >= t0)
            .filter_map(|m| m.delivered_ms)
            .min();
        ctx.outcome.recovery =
            Some(Recovery { seconds: first.map(|f| secs(t0, f)), from: "the rule".into() });
        ctx.outcome.figures.push((
            "relay addresses the users were given".into(),
            ctx.relay_addrs("relay").join(", "),
        ));
        ctx.outcome.delivery.push(d);
        ctx.outcome.needs.push(
            "the stealth transport (issue 12): the whole libp2p negotiation inside TLS, so that no flow starts with the \
             multistream header; relays advertise it in their bootstrap line and invites, and users dial it"
                .into(),
        );
    }
    ctx.outcome.delivery.push(control);
    ctx.timeline(&[("protected", "protected"), ("control", "control")]);
    Ok(())
}
