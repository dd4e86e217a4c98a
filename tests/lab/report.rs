//! Scenario results, the machine-readable record of them (`docs/blocking-results.json`), and
//! `docs/BLOCKING.md`, which is written from that record alone: a summary table, then each
//! scenario's rule, figures, controls and timeline.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::traffic::{Delivery, Msg};

/// A scenario's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Every pass criterion met, every control as expected.
    Pass,
    /// A pass criterion not met (the rule beat Kolokol).
    Fail,
    /// A control did not behave: the censor's rule did not bite (or bit the benign flow), so
    /// the scenario proves nothing.
    Invalid,
    /// The lab could not run the scenario (setup failed); nothing was measured.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Invalid => "INVALID",
            Verdict::Error => "ERROR",
        }
    }
}

/// A negative control (an unprotected path the rule must block) or a collateral control (a
/// benign flow the rule must let through).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Control {
    pub kind: String,
    pub what: String,
    pub expected: String,
    pub observed: String,
    pub ok: bool,
}

/// One pass criterion of the threat model, as measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Criterion {
    pub what: String,
    pub observed: String,
    pub ok: bool,
}

/// How long the protected path took to work again after the censor acted (or the cut healed).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Recovery {
    /// Seconds, or None: it never did within the scenario.
    pub seconds: Option<f64>,
    /// From what: "the rule", "the heal", ...
    pub from: String,
}

/// What a scenario measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// The censor's rule in a few words, for the summary table.
    pub rule: String,
    /// The exact rules applied (nft and tc lines, proxy policy).
    pub rule_detail: String,
    pub delivery: Vec<Delivery>,
    pub recovery: Option<Recovery>,
    pub controls: Vec<Control>,
    pub criteria: Vec<Criterion>,
    /// Other figures, as (name, value).
    pub figures: Vec<(String, String)>,
    pub notes: Vec<String>,
    /// For a failing row: what Kolokol must do for it to pass.
    pub needs: Vec<String>,
    pub timeline: Option<Timeline>,
}

/// A scenario's full record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub title: String,
    /// The threat model's pass criterion, in its words.
    pub criterion: String,
    pub started: String,
    pub duration_s: f64,
    /// `short`, `long` or `controls only`.
    pub mode: String,
    /// The build of `kolokol` measured (`debug` or `release`) and the commit.
    pub build: String,
    /// The machine's load average when the scenario started (1, 5, 15 minutes): timings on a
    /// shared 2-core machine depend on it.
    #[serde(default)]
    pub load: String,
    pub verdict: Verdict,
    /// One line: why the verdict.
    pub why: String,
    pub error: Option<String>,
    pub outcome: Outcome,
}

impl Report {
    /// The verdict from the controls and criteria: INVALID if a control misbehaved, FAIL if a
    /// criterion is not met, else PASS.
    pub fn judge(outcome: &Outcome) -> (Verdict, String) {
        if let Some(c) = outcome.controls.iter().find(|c| !c.ok) {
            return (
                Verdict::Invalid,
                format!(
                    "{} control did not behave: {} (expected {})",
                    c.kind, c.observed, c.expected
                ),
            );
        }
        if let Some(c) = outcome.criteria.iter().find(|c| !c.ok) {
            return (Verdict::Fail, format!("{}: {}", c.what, c.observed));
        }
        if outcome.controls.is_empty() && outcome.criteria.is_empty() {
            return (Verdict::Error, "nothing was measured".into());
        }
        (Verdict::Pass, "every criterion met and every control as expected".into())
    }
}

/// Messages delivered over time, per class, with the moments the censor acted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timeline {
    pub bucket_s: f64,
    pub duration_s: f64,
    /// (label, deliveries per bucket); the first row counts the sends of the first class.
    pub rows: Vec<(String, Vec<u32>)>,
    /// (seconds from the start, label).
    pub marks: Vec<(f64, String)>,
}

/// The widest timeline, in columns.
const TIMELINE_COLUMNS: u64 = 90;

impl Timeline {
    /// Buckets the deliveries of `classes` ((class, label) pairs) between `start_ms` and `end_ms`.
    pub fn build(
        start_ms: u64,
        end_ms: u64,
        msgs: &[Msg],
        classes: &[(&str, &str)],
        marks: &[(u64, String)],
    ) -> Self {
        let duration_ms = end_ms.saturating_sub(start_ms).max(1000);
        let bucket_ms = duration_ms.div_ceil(TIMELINE_COLUMNS).max(1000).div_ceil(1000) * 1000;
        let columns = duration_ms.div_ceil(bucket_ms) as usize;
        let bucket_of = |ms: u64| (ms.saturating_sub(start_ms) / bucket_ms) as usize;
        let mut rows = Vec::new();
        if let Some((class, label)) = classes.first() {
            let mut sent = vec![0u32; columns];
            for m in msgs.iter().filter(|m| m.class == *class) {
                if let Some(c) = sent.get_mut(bucket_of(m.sent_ms)) {
                    *c += 1;
                }
            }
            rows.push((format!("sent ({label})"), sent));
        }
        for (class, label) in classes {
            let mut row = vec![0u32; columns];
            for m in msgs.iter().filter(|m| m.class == *class) {
                if let Some(d) = m.delivered_ms
                    && let Some(c) = row.get_mut(bucket_of(d))
                {
                    *c += 1;
                }
            }
            rows.push((format!("delivered ({label})"), row));
        }
        Self {
            bucket_s: bucket_ms as f64 / 1000.0,
            duration_s: duration_ms as f64 / 1000.0,
            rows,
            marks: marks
                .iter()
                .map(|(ms, l)| ((ms.saturating_sub(start_ms)) as f64 / 1000.0, l.clone()))
                .collect(),
        }
    }

    /// The timeline as text: one column per bucket, a digit per count (`.` for none, `+` for
    /// more than 9), a time axis, and a `^` under each event (the censor acting, a heal, the traffic stopping).
    pub fn render(&self) -> String {
        let columns = self.rows.first().map_or(0, |r| r.1.len());
        let width = self
            .rows
            .iter()
            .map(|r| r.0.len())
            .chain(self.marks.iter().map(|_| 6))
            .max()
            .unwrap_or(0)
            .max(14);
        let mut out = String::new();
        let _ = writeln!(out, "{:width$}  one column = {} s", "", self.bucket_s);
        let mut axis = String::new();
        let mut ticks = String::new();
        for c in 0..columns {
            if c % 10 == 0 {
                ticks.push('|');
                let label = format!("{}s", (c as f64 * self.bucket_s) as u64);
                if axis.len() <= c {
                    axis.push_str(&" ".repeat(c - axis.len()));
                    axis.push_str(&label);
                }
            } else {
                ticks.push(' ');
            }
        }
        let _ = writeln!(out, "{:width$}  {axis}", "time");
        let _ = writeln!(out, "{:width$}  {ticks}", "");
        for (label, row) in &self.rows {
            let cells: String = row
                .iter()
                .map(|&n| match n {
                    0 => '.',
                    1..=9 => char::from(b'0' + n as u8),
                    _ => '+',
                })
                .collect();
            let _ = writeln!(out, "{label:width$}  {cells}");
        }
        for (at, label) in &self.marks {
            let col = (at / self.bucket_s) as usize;
            let _ = writeln!(
                out,
                "{:width$}  {}^ {label} (t = {at:.1} s)",
                "event",
                " ".repeat(col.min(columns))
            );
        }
        out
    }
}

/// The header of BLOCKING.md up to the table.
const PREAMBLE: &str = "# What a censor can and cannot do to Kolokol

This page is written by the censorship lab (`tests/lab`, the `kolokol-lab` program) and by
nothing else: every figure below comes from one run of real `kolokol` processes in network
namespaces, with nftables, tc and a userspace classifier as the censor (the threat model is
`../shared/notes/blocking-threat-model.md`, section 4). Rerun it, and compare:

```sh
cargo build -p kolokol-cli -p kolokol-tests        # the kolokol binary and the lab
sudo target/debug/kolokol-lab                       # every scenario; or name some: T3 T15
sudo target/debug/kolokol-lab --long                # the threat model's full durations
```

How the lab works, what each scenario does, and what it leaves out: the end of this page.
A row that fails stays in the table as a failure, with what is known about why.

What is measured is what a user gets without changing anything: the relays run `kolokol
relay`'s default listeners (TCP and QUIC on 4001, and the stealth transport on 443 with a
cover web site), and the users run `kolokol node` with its default `--transport any`. A row
named `T3:stealth` is the same scenario with what docs/RELAY.md recommends behind a censor:
users on `--transport stealth`, relays listening on their stealth address alone
(`sudo target/debug/kolokol-lab T3:stealth`).

Known limitations, each a failing row below: the stealth dialer's TLS ClientHello is rustls's
(JA4 `t13d1011h1_61a7ad8aa9b6_0d308c48d2a3`, no browser's; a censor that blocks it blocks the
stealth transport and every rustls client offering `http/1.1` alone; `docs/PROTOCOL.md` 13.7),
T8; the relay's default TCP and QUIC listeners on 4001, and users' default `--transport any`,
speak cleartext libp2p by design, so that stock libp2p nodes and uncensored users connect
without TLS, and a probe or a capture of those gives libp2p away (T11, T17: their `:stealth`
rows are what a relay and its users behind a censor should run); and the length of a message
is not hidden yet (T16). A censor that freezes connections after 16 KB (T10) no longer cuts
anyone off: a stealth connection is a session that outlives its TCP connections
(`docs/PROTOCOL.md` 13.8).

";

/// Renders the whole page from the reports (in scenario order).
pub fn render(reports: &[Report], how: &str) -> String {
    let mut out = String::from(PREAMBLE);
    let _ = writeln!(out, "## Summary\n");
    // Rows of earlier runs stay until their scenario is run again: name every run and build.
    let mut runs: Vec<(String, String)> =
        reports.iter().map(|r| (r.started.clone(), r.build.clone())).collect();
    runs.sort();
    if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
        let mut builds: Vec<&str> = runs.iter().map(|(_, b)| b.as_str()).collect();
        builds.sort_unstable();
        builds.dedup();
        let _ = writeln!(
            out,
            "Scenarios run from {} to {}, `kolokol` {} build. A row keeps the result of the last run of its scenario: its commit and time are in the last column.\n",
            first.0,
            last.0,
            builds.join("; ")
        );
    }
    let _ = writeln!(
        out,
        "| Scenario | Censor rule | Delivery ratio | Time to recover | Messages lost | Controls | Result | Measured on |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in reports {
        let o = &r.outcome;
        let ratio = o.delivery.first().map_or("–".to_owned(), |d| {
            format!("{}/{} ({:.0} %)", d.on_time, d.sent, d.ratio() * 100.0)
        });
        let recover = o.recovery.as_ref().map_or("–".to_owned(), |rec| match rec.seconds {
            Some(s) => format!("{s:.1} s"),
            None => "never".to_owned(),
        });
        let lost: usize = o.delivery.iter().map(|d| d.lost).sum();
        let controls = if o.controls.is_empty() {
            "–".to_owned()
        } else {
            o.controls
                .iter()
                .map(|c| format!("{} {}", c.kind, if c.ok { "ok" } else { "**failed**" }))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "| [{}](#{}) {} | {} | {ratio} | {recover} | {lost} | {controls} | **{}** | {}, {} |",
            r.id,
            anchor(&r.id, &r.title),
            r.title,
            o.rule.replace('|', "\\|"),
            r.verdict.as_str(),
            r.build.rsplit("commit ").next().unwrap_or("?"),
            r.started.split_once(' ').map_or(r.started.as_str(), |(_, time)| time)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Delivery ratio: messages of the protected path sent after the censor acted and delivered within the scenario's deadline (the first delivery figure of each scenario). Messages lost: messages the sender gave up on, or that were acknowledged and never reached the recipient (messages still queued at the end are not lost: they are counted as pending). Time to recover: from the censor's action (or the heal) to the first delivery of a message sent after it.\n"
    );
    let loads: Vec<String> = reports
        .iter()
        .map(|r| format!("{} {}", r.id, r.load.split_whitespace().next().unwrap_or("?")))
        .collect();
    let _ = writeln!(
        out,
        "Machine load (the 1-minute load average at each scenario's start; the lab machine is shared, and timings depend on it): {}.\n",
        loads.join(", ")
    );
    for r in reports {
        section(&mut out, r);
    }
    out.push_str(how);
    out
}

fn anchor(id: &str, title: &str) -> String {
    format!("{id} {title}")
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

fn section(out: &mut String, r: &Report) {
    let o = &r.outcome;
    let _ = writeln!(out, "## {} {}\n", r.id, r.title);
    let _ = writeln!(out, "**{}**: {}\n", r.verdict.as_str(), r.why);
    let _ = writeln!(out, "Pass criterion (threat model): {}\n", r.criterion);
    let _ = writeln!(
        out,
        "Run: {}, {} mode, {:.0} s, `kolokol` {} build, machine load {} at the start.\n",
        r.started, r.mode, r.duration_s, r.build, r.load
    );
    if let Some(e) = &r.error {
        let _ =
            writeln!(out, "The lab could not complete this scenario: `{}`\n", e.replace('`', "'"));
    }
    if !o.rule_detail.is_empty() {
        let _ = writeln!(out, "The censor's rule:\n\n```text\n{}\n```\n", o.rule_detail.trim_end());
    }
    if !o.delivery.is_empty() {
        let _ = writeln!(
            out,
            "| Messages | Sent | On time | Arrived at all | Pending | Lost | Deadline | p50 | p95 |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for d in &o.delivery {
            let s = |v: Option<f64>| v.map_or("–".to_owned(), |x| format!("{x:.1} s"));
            let _ = writeln!(
                out,
                "| {} | {} | {} ({:.0} %) | {} | {} | {} | {:.0} s | {} | {} |",
                d.label,
                d.sent,
                d.on_time,
                d.ratio() * 100.0,
                d.arrived,
                d.pending,
                d.lost,
                d.deadline_s,
                s(d.p50_s),
                s(d.p95_s)
            );
        }
        let _ = writeln!(out);
    }
    if let Some(rec) = &o.recovery {
        let _ = writeln!(
            out,
            "Time to recover from {}: {}.\n",
            rec.from,
            rec.seconds.map_or("never, within the scenario".to_owned(), |s| format!("{s:.1} s"))
        );
    }
    if !o.criteria.is_empty() {
        let _ = writeln!(out, "| Criterion | Measured | Met |");
        let _ = writeln!(out, "|---|---|---|");
        for c in &o.criteria {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                c.what,
                c.observed.replace('|', "\\|"),
                if c.ok { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(out);
    }
    if !o.controls.is_empty() {
        let _ = writeln!(out, "| Control | Expected | Observed | As expected |");
        let _ = writeln!(out, "|---|---|---|---|");
        for c in &o.controls {
            let _ = writeln!(
                out,
                "| {} ({}) | {} | {} | {} |",
                c.what,
                c.kind,
                c.expected,
                c.observed.replace('|', "\\|"),
                if c.ok { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(out);
    }
    if !o.figures.is_empty() {
        for (k, v) in &o.figures {
            let _ = writeln!(out, "- {k}: {v}");
        }
        let _ = writeln!(out);
    }
    if let Some(t) = &o.timeline {
        let _ = writeln!(out, "Messages delivered over time:\n\n```text\n{}```\n", t.render());
    }
    for n in &o.notes {
        let _ = writeln!(out, "{n}\n");
    }
    if r.verdict != Verdict::Pass && !o.needs.is_empty() {
        let _ = writeln!(out, "What it takes to pass:\n");
        for n in &o.needs {
            let _ = writeln!(out, "- {n}");
        }
        let _ = writeln!(out);
    }
}

/// Reads the stored results, if any.
pub fn load(path: &Path) -> Vec<Report> {
    std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_puts_each_delivery_in_its_column() {
        let msg = |sent: u64, delivered: Option<u64>| Msg {
            seq: 0,
            class: "p".into(),
            from: "a".into(),
            to: "b".into(),
            bytes: 1,
            sent_ms: sent,
            id: None,
            send_state: None,
            send_error: None,
            delivered_ms: delivered,
            final_state: None,
        };
        let msgs = vec![msg(10_500, Some(10_700)), msg(11_000, Some(11_200)), msg(13_000, None)];
        let t = Timeline::build(
            10_000,
            20_000,
            &msgs,
            &[("p", "protected")],
            &[(13_000, "rule on".into())],
        );
        assert_eq!(t.bucket_s, 1.0);
        assert_eq!(t.rows[0].1, vec![1, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(t.rows[1].1, vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        let text = t.render();
        assert!(text.contains("delivered (protected)  11........"), "{text}");
        let mark = format!("{:21}  {}^ rule on (t = 3.0 s)", "event", "   ");
        assert!(text.contains(&mark), "{text}");
    }

    #[test]
    fn a_failed_control_makes_the_scenario_invalid() {
        let mut o = Outcome::default();
        o.criteria.push(Criterion { what: "delivery".into(), observed: "0 %".into(), ok: false });
        assert_eq!(Report::judge(&o).0, Verdict::Fail);
        o.controls.push(Control {
            kind: "negative".into(),
            what: "stock TCP".into(),
            expected: "blocked".into(),
            observed: "10/10 delivered".into(),
            ok: false,
        });
        assert_eq!(Report::judge(&o).0, Verdict::Invalid);
        assert_eq!(Report::judge(&Outcome::default()).0, Verdict::Error);
    }
}
