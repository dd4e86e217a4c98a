//! T15: an international cut (Iran 2025-26; Russian mobile allowlists): the censor forwards
//! nothing across the border, then heals. Alice and bob share a LAN inside the country; dave is
//! abroad. During the cut alice and bob keep writing to each other, and alice writes to dave.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::capture;
use crate::clock::now_ms;
use crate::report::Recovery;
use crate::scenario::{Cast, Ctx};
use crate::scenarios::Def;
use crate::topology::Topology;
use crate::traffic::Delivery;

pub const DEF: Def = Def {
    id: "T15",
    title: "International cut, then heal",
    criterion: "Domestic<->domestic delivery >= 99 % during the cut. Messages to foreign contacts queued, 0 lost, delivered <= 60 s after heal. Nodes don't burn battery/CPU retrying (<= 1 dial/10 s/peer).",
    run,
};

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.capture()?;
    if protected {
        ctx.cast(Cast { bob: true, domestic: true, ..Cast::default() })?;
        ctx.baseline(
            &[
                ("alice", "bob", "domestic"),
                ("bob", "alice", "domestic"),
                ("alice", "dave", "foreign"),
            ],
            Duration::from_secs(60),
        )?;
    }
    let up = ctx.topo.uplink_if();
    let script = format!(
        "add rule inet censor forward iifname \"{up}\" counter drop comment \"t15\"\n\
         add rule inet censor forward oifname \"{up}\" counter drop comment \"t15\"\n"
    );
    ctx.outcome.rule =
        "forward nothing across the border (domestic traffic only), then heal".into();
    ctx.outcome.rule_detail = format!("{script}(healed by deleting both rules)");
    if protected {
        // Whether the users can talk during the cut depends on where they hold reservations.
        for user in ["alice", "bob", "dave"] {
            let held = ctx.reservation_names(user);
            ctx.outcome
                .figures
                .push((format!("{user}'s relay reservations when the cut began"), held));
        }
    }
    ctx.censor(&script)?;
    let t0 = ctx.mark("T15 cut: nothing crosses the border");
    let relay = Topology::ip("relay");
    let cut_probe = ctx.probe("tester", &format!("{relay}:4001"), "none", 2000)?;
    ctx.negative(
        "a connection from a censored host to a foreign address",
        "no connection",
        if cut_probe.connected { "connected".into() } else { cut_probe.close.clone() },
        !cut_probe.connected,
    );
    let streams = protected.then(|| {
        ctx.stream(
            &[
                ("alice", "bob", "domestic", 300),
                ("bob", "alice", "domestic", 300),
                ("alice", "dave", "foreign", 300),
            ],
            Duration::from_secs(2),
        )
    });
    if let Some(s) = streams {
        ctx.run_for(ctx.dur(60, 1800).saturating_sub(Duration::from_millis(now_ms() - t0)));
        s.stop();
    }
    ctx.censor("flush chain inet censor forward\n")?;
    let t1 = ctx.mark("healed");
    if !protected {
        return Ok(());
    }
    // The foreign messages queued during the cut: all of them, within 60 s of the heal (the
    // lab waits up to three minutes to see how long it takes).
    let wait = Duration::from_secs(180);
    ctx.drain(&["foreign", "domestic"], wait);
    ctx.traffic.reconcile(&ctx.daemons);
    let msgs = ctx.traffic.snapshot();
    let domestic = Delivery::of(
        "domestic: alice <-> bob during the cut",
        &msgs,
        &["domestic"],
        t0,
        t1,
        Duration::from_secs(30),
    );
    let foreign = Delivery::of(
        "foreign: alice -> dave, queued during the cut",
        &msgs,
        &["foreign"],
        t0,
        t1,
        Duration::from_millis(t1 - t0) + Duration::from_secs(60),
    );
    ctx.criterion(
        ">= 99 % of domestic messages delivered during the cut",
        format!("{}/{} ({:.0} %)", domestic.on_time, domestic.sent, domestic.ratio() * 100.0),
        domestic.ratio() >= 0.99,
    );
    let last = msgs
        .iter()
        .filter(|m| m.class == "foreign" && m.sent_ms >= t0 && m.sent_ms < t1)
        .map(|m| m.delivered_ms)
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    let after_heal = last.map(|l| crate::clock::secs(t1, l.max(t1)));
    ctx.criterion(
        "every foreign message queued during the cut delivered within 60 s of the heal, none lost",
        match after_heal {
            Some(s) => format!(
                "all {} delivered, the last {s:.1} s after the heal; {} lost",
                foreign.sent, foreign.lost
            ),
            None => format!(
                "{} of {} delivered within {} s of the heal; {} lost",
                foreign.arrived,
                foreign.sent,
                wait.as_secs(),
                foreign.lost
            ),
        },
        after_heal.is_some_and(|s| s <= 60.0) && foreign.lost == 0,
    );
    // Dials during the cut: distinct connection attempts (SYNs of distinct source ports) from a
    // censored user to each foreign address.
    let packets = capture::read_pcap(&ctx.path("lan.pcap"))?;
    let users: BTreeSet<Ipv4Addr> = [Topology::ip("alice"), Topology::ip("bob")].into();
    let mut dials: BTreeMap<(Ipv4Addr, Ipv4Addr), BTreeSet<(u16, u16)>> = BTreeMap::new();
    for p in &packets {
        let at_ms = p.ts_us / 1000;
        if p.syn_only()
            && users.contains(&p.src)
            && p.dst.octets()[0] != 10
            && at_ms >= t0
            && at_ms < t1
        {
            dials.entry((p.src, p.dst)).or_default().insert((p.sport, p.dport));
        }
    }
    let cut_s = (t1 - t0) as f64 / 1000.0;
    let worst = dials
        .iter()
        .map(|(k, v)| (k, v.len() as f64 / (cut_s / 10.0)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    ctx.criterion(
        "at most 1 dial per 10 s per foreign peer during the cut",
        worst.map_or("no dials".into(), |((src, dst), rate)| {
            format!("worst: {src} -> {dst}, {rate:.1} dials per 10 s")
        }),
        worst.is_none_or(|(_, r)| r <= 1.0),
    );
    let total: usize = dials.values().map(BTreeSet::len).sum();
    ctx.outcome.figures.push((
        "connection attempts across the border during the cut".into(),
        format!("{total} in {cut_s:.0} s"),
    ));
    ctx.outcome.recovery = Some(Recovery {
        seconds: after_heal,
        from: "the heal (every foreign message queued during the cut delivered)".into(),
    });
    ctx.outcome.delivery.push(domestic);
    ctx.outcome.delivery.push(foreign);
    ctx.outcome.notes.push(
        "Domestic delivery during the cut goes through the domestic relay `dom` when both users hold a reservation \
         on it, and otherwise over the LAN: user nodes listen on their LAN by default and find each other with mDNS \
         (issue 13; `cli/tests/reach_lab.rs` cuts the border of a LAN with no domestic relay). Connection attempts \
         across the cut are held down by the cool-down of each endpoint after an unanswered dial \
         (`node/src/transport/cooldown.rs`: 10 s, doubling to 30 s), which is also what bounds the wait after the \
         heal."
            .into(),
    );
    ctx.outcome.needs.push(
        "fewer connection attempts across a cut (issue 13): each endpoint is dialed at most once per cool-down, but \
         a host with several endpoints (TCP 4001, stealth 443) is knocked on once per endpoint"
            .into(),
    );
    ctx.outcome.needs.push(
        "fast recovery (issue 13): the outbox retries as soon as a connection returns; after a cut, the first \
         connection comes when an endpoint's cool-down ends"
            .into(),
    );
    ctx.timeline(&[("domestic", "domestic"), ("foreign", "foreign")]);
    Ok(())
}
