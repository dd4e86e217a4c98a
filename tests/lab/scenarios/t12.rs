//! T12: relay enumeration and blocking. The censor runs a Kolokol node of its own (`agent`, on
//! the censored LAN) that joins the network like any user, then blocks every foreign address it
//! learned: its connections and its peer cache, which hold the relays announced in the DHT. Dave
//! (abroad) holds his reservation on an unlisted relay (the bridge) and tells alice about it only
//! through his invite. Can dave still reach alice, who sits behind NAT?

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::json;

use crate::report::Recovery;
use crate::scenario::{Cast, Ctx};
use crate::scenarios::Def;
use crate::topology::Topology;
use crate::traffic::Delivery;

pub const DEF: Def = Def {
    id: "T12",
    title: "Relay enumeration and blocking",
    criterion: "Reachability of NATed domestic nodes from foreign contacts >= 90 % within 60 s after the block (via unlisted or domestic relays). Default relay limits don't break mailbox sync.",
    run,
};

/// Every IPv4 address named in a list of multiaddrs.
fn addresses(list: &serde_json::Value) -> Vec<Ipv4Addr> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .filter_map(|a| a.split('/').nth(2)?.parse().ok())
        .collect()
}

fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let protected = !ctx.controls_only;
    ctx.cast(Cast { bridge: true, domestic: true, infrastructure: true, ..Cast::default() })?;
    // The censor's agent joins like a new user, from the well-known bootstrap node.
    let boot = ctx.relay_addrs("boot");
    ctx.start("agent", crate::roles::Role::User, &boot)?;
    if protected {
        ctx.baseline(
            &[("dave", "alice", "protected"), ("alice", "dave", "protected")],
            Duration::from_secs(60),
        )?;
    }
    // The agent looks around for a while, as a crawler would.
    let agent_time = ctx.dur(20, 300);
    ctx.run_for(agent_time);
    let peers = ctx.d("agent").call("peers", json!({}))?;
    let mut harvested: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for c in peers["connected"].as_array().into_iter().flatten() {
        harvested.extend(addresses(&json!([c["address"]])));
    }
    for c in peers["cached"].as_array().into_iter().flatten() {
        harvested.extend(addresses(&c["addresses"]));
    }
    // A censor blocks foreign addresses only: domestic ones carry its own economy.
    harvested.retain(|ip| ip.octets()[0] != 10 && !ip.is_loopback());
    let names: Vec<String> = harvested
        .iter()
        .map(|ip| {
            let host = crate::topology::HOSTS
                .iter()
                .find(|h| Ipv4Addr::from(h.ip) == *ip)
                .map_or("?", |h| h.name);
            format!("{ip} ({host})")
        })
        .collect();
    let elements = harvested.iter().map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ");
    let mut script = String::new();
    if !harvested.is_empty() {
        script.push_str(&format!("add element inet censor blocked4 {{ {elements} }}\n"));
    }
    script.push_str(
        "add rule inet censor forward ip daddr @blocked4 counter drop comment \"t12\"\n\
         add rule inet censor forward ip saddr @blocked4 counter drop comment \"t12\"\n",
    );
    ctx.outcome.rule =
        "block every foreign address a censor's own node learned in the network".into();
    ctx.outcome.rule_detail = format!(
        "{script}(the harvest: the censor's node's connections and peer cache after {} s; every connection open before \
         the rule is reset once)",
        agent_time.as_secs()
    );
    if protected {
        ctx.outcome.figures.push((
            "alice's relay reservations before the block".into(),
            ctx.reservation_names("alice"),
        ));
        ctx.outcome.figures.push((
            "dave's relay reservations before the block".into(),
            ctx.reservation_names("dave"),
        ));
    }
    ctx.censor(&script)?;
    ctx.flush_sessions()?;
    let t0 = ctx.mark(&format!(
        "T12 block of {} harvested addresses, open connections reset",
        harvested.len()
    ));
    let relay = Topology::ip("relay");
    let blocked = ctx.probe("tester", &format!("{relay}:4001"), "none", 2000)?;
    ctx.negative(
        "the listed relay, from a censored host",
        "harvested, and no connection",
        format!(
            "harvested: {}; connection: {}",
            harvested.contains(&relay),
            if blocked.connected { "made" } else { &blocked.close }
        ),
        harvested.contains(&relay) && !blocked.connected,
    );
    ctx.outcome
        .figures
        .push(("addresses the censor harvested and blocked".into(), names.join(", ")));
    ctx.outcome.figures.push((
        "the bridge (dave's unlisted relay) harvested".into(),
        if harvested.contains(&Topology::ip("bridge")) { "yes".into() } else { "no".into() },
    ));
    if !protected {
        return Ok(());
    }
    let streams = ctx.stream(
        &[("dave", "alice", "protected", 300), ("alice", "dave", "outbound", 300)],
        Duration::from_secs(2),
    );
    ctx.run_for(Duration::from_secs(60));
    streams.stop();
    let t_end = ctx.mark("traffic stops");
    let deadline = Duration::from_secs(60);
    ctx.drain(&["protected"], deadline);
    ctx.traffic.reconcile(&ctx.daemons);
    let msgs = ctx.traffic.snapshot();
    let d = Delivery::of(
        "protected: dave -> alice (reaching the NATed user)",
        &msgs,
        &["protected"],
        t0,
        t_end,
        deadline,
    );
    let out = Delivery::of("alice -> dave", &msgs, &["outbound"], t0, t_end, deadline);
    ctx.criterion(
        ">= 90 % of dave's messages reach alice within 60 s of the block",
        format!("{}/{} ({:.0} %)", d.on_time, d.sent, d.ratio() * 100.0),
        d.ratio() >= 0.9,
    );
    ctx.outcome
        .figures
        .push(("alice's relay reservations at the end".into(), ctx.reservation_names("alice")));
    ctx.outcome
        .figures
        .push(("dave's relay reservations at the end".into(), ctx.reservation_names("dave")));
    ctx.outcome.recovery =
        Some(Recovery { seconds: ctx.recovery("protected", t0), from: "the block".into() });
    ctx.outcome.delivery.push(d);
    ctx.outcome.delivery.push(out);
    ctx.outcome.needs.push(
        "bridges (issue 13): relays that never announce themselves in the DHT, learned only from invites, bundles and \
         contacts; relay addresses in presence records readable by contacts only"
            .into(),
    );
    ctx.outcome.needs.push("users that take their reservations on the relays their contacts name (the bridge) and on domestic relays, not only on the listed ones".into());
    ctx.outcome.notes.push(
        "The harvest is what one ordinary Kolokol node learns by itself in the given time; a real crawler, which also \
         reads every presence record in the DHT, learns more, so this is the censor's lower bound."
            .into(),
    );
    ctx.timeline(&[("protected", "dave -> alice"), ("outbound", "alice -> dave")]);
    Ok(())
}
