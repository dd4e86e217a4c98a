//! `kolokol-sybil`: the Sybil simulation of `docs/ROBUSTNESS.md`. 200 honest nodes plus Sybils
//! at 10% and 20% of all nodes, ground next to ten victims' mailbox ids and presence keys, on
//! two (then sixteen) address ranges, answering with forged, stale or empty records; each scenario with the
//! defences off and on, over three seeds. Prints one table row per scenario and fails if any
//! forged record was ever accepted.
//!
//! Run: `cargo run --release -p kolokol-tests --bin kolokol-sybil`

use std::time::Instant;

use kolokol_tests::sybil::{Outcome, Scenario, percent, run};

fn main() {
    let started = Instant::now();
    println!(
        "| Sybils | their /24s | defences | Sybil share of honest routing tables | mailbox lookups with an honest replica | presence lookups with the newest record | stale records returned | forged records seen / accepted | messages delivered |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut forged_accepted = 0;
    // Sybils on two address ranges (a few cheap servers), then on sixteen (a botnet's worth),
    // where the diversity rule has less to hold on to.
    for (fraction, groups) in [(0.1, 2), (0.2, 2), (0.2, 16)] {
        for defences in [false, true] {
            let mut total = Outcome::default();
            for seed in 1..=3u64 {
                let out = run(&Scenario {
                    honest: 200,
                    sybil_fraction: fraction,
                    sybil_groups: groups,
                    victims: 10,
                    lookups_per_victim: 20,
                    defences,
                    seed,
                });
                total.sybils = out.sybils;
                total.mailbox_lookups += out.mailbox_lookups;
                total.mailbox_ok += out.mailbox_ok;
                total.presence_lookups += out.presence_lookups;
                total.presence_ok += out.presence_ok;
                total.stale_returned += out.stale_returned;
                total.forged_seen += out.forged_seen;
                total.forged_accepted += out.forged_accepted;
                total.messages += out.messages;
                total.delivered += out.delivered;
                total.sybil_slots += out.sybil_slots;
                total.slots += out.slots;
            }
            forged_accepted += total.forged_accepted;
            println!(
                "| {} ({:.0}%) | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
                total.sybils,
                fraction * 100.0,
                groups,
                if defences { "on" } else { "off" },
                percent(total.sybil_slots, total.slots),
                percent(total.mailbox_ok, total.mailbox_lookups),
                percent(total.presence_ok, total.presence_lookups),
                percent(total.stale_returned, total.presence_lookups),
                total.forged_seen,
                total.forged_accepted,
                percent(total.delivered, total.messages),
            );
        }
    }
    println!(
        "(3 seeds x 10 victims x 20 lookups per scenario; {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    if forged_accepted != 0 {
        eprintln!("kolokol-sybil: {forged_accepted} forged records were accepted");
        std::process::exit(1);
    }
}
