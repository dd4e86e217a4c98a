//! `kolokol-lab`, the censorship lab: real `kolokol` daemons in network namespaces, a censor
//! router between the censored users and the rest of the world (nftables, tc and a userspace
//! classifier), and the scenarios of the blocking threat model. It prints each scenario's result,
//! writes `docs/BLOCKING.md`, and ends with one line `lab: N passed, M failed, K skipped`.
//!
//! ```text
//! kolokol-lab [SCENARIO...] [--long] [--controls-only] [--no-docs] [--keep]
//! kolokol-lab T3 T15          # two scenarios
//! kolokol-lab T3:controls     # only T3's negative and collateral controls
//! kolokol-lab T3:stealth      # T3 with users on `--transport stealth`, relays on 443 alone
//! ```
//!
//! It needs root (network namespaces, nftables), iproute2, nftables, tcpdump, openssl and curl,
//! and the `kolokol` binary next to itself (or `--kolokol PATH`). Without them it says so in one
//! line and counts every scenario as skipped, never as passed.

mod capture;
mod classifier;
mod clock;
mod daemon;
mod delay;
mod probe;
mod proxy;
mod registry;
mod report;
mod roles;
mod scenario;
mod scenarios;
mod topology;
mod traffic;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use crate::report::{Report, Verdict};
use crate::scenario::{Ctx, Env};

/// The censorship lab.
#[derive(Parser)]
#[command(name = "kolokol-lab", about = "Runs the censorship lab and writes docs/BLOCKING.md.")]
struct Args {
    /// Scenarios to run, e.g. T3 T15 (default: all); `T3:controls` runs only T3's controls;
    /// `T3:stealth` runs T3 with protected users on `--transport stealth` and protected relays
    /// listening on their stealth address alone (its own row, beside T3's).
    scenarios: Vec<String>,
    /// Use the threat model's durations (e.g. 1,000 messages, a 30-minute cut): much longer.
    #[arg(long)]
    long: bool,
    /// Run only the negative and collateral controls of every scenario named.
    #[arg(long)]
    controls_only: bool,
    /// The kolokol binary (default: `kolokol` next to this program).
    #[arg(long, value_name = "PATH")]
    kolokol: Option<PathBuf>,
    /// Where to write the report (default: docs/BLOCKING.md of this repository).
    #[arg(long, value_name = "PATH")]
    docs: Option<PathBuf>,
    /// Do not write the report (CI).
    #[arg(long)]
    no_docs: bool,
    /// Keep the run directory (logs, captures, data dirs) even when every scenario passed.
    #[arg(long)]
    keep: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Run nothing: rewrite the report from the stored results (docs/blocking-results.json),
    /// after a change to how the page is laid out.
    #[arg(long)]
    render: bool,
    /// An extra argument for every protected relay (repeatable; `{ip}` is the relay's address),
    /// e.g. to try a new transport's listen address without editing the lab.
    #[arg(long = "relay-arg", value_name = "ARG", allow_hyphen_values = true)]
    relay_args: Vec<String>,
    /// An extra argument for every protected user node (repeatable).
    #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
    node_args: Vec<String>,
}

/// Prints a progress line on standard error. Unlike `eprintln!`, it never panics: a reader that
/// went away (`kolokol-lab | head`) must not stop a run before its teardown.
pub fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Prints a result line on standard output, never panicking (see [`note`]).
fn out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Where the lab keeps its runs (data dirs, logs, captures); only the newest is kept.
const RUN_ROOT: &str = "/tmp/kolokol-lab";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--helper") {
        return match probe::helper(&argv[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                note(&format!("helper error: {e:#}"));
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    if args.list {
        for d in scenarios::ALL {
            out(&format!("{:4} {}", d.id, d.title));
        }
        return ExitCode::SUCCESS;
    }
    if args.render {
        let docs =
            args.docs.clone().unwrap_or_else(|| repo_root().join("docs").join("BLOCKING.md"));
        let results = docs.with_file_name("blocking-results.json");
        if report::load(&results).is_empty() {
            note(&format!("error: no results to render in {}", results.display()));
            return ExitCode::FAILURE;
        }
        return match write_docs(&docs, &[]) {
            Ok(()) => {
                note(&format!("wrote {}", docs.display()));
                ExitCode::SUCCESS
            }
            Err(e) => {
                note(&format!("error: {e:#}"));
                ExitCode::FAILURE
            }
        };
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(args)));
    let outcome = outcome.unwrap_or_else(|_| Err(anyhow::anyhow!("the lab panicked")));
    match outcome {
        Ok(code) => code,
        Err(e) => {
            note(&format!("error: {e:#}"));
            registry::teardown();
            registry::release_prefix();
            ExitCode::FAILURE
        }
    }
}

/// One scenario to run: which, whether only its controls run, and whether it is the
/// `:stealth` variant.
struct Pick {
    def: &'static scenarios::Def,
    controls_only: bool,
    stealth_only: bool,
}

impl Pick {
    /// The scenario's row in the report: `T3`, or `T3:stealth` for the variant.
    fn id(&self) -> String {
        if self.stealth_only {
            format!("{}{STEALTH_SUFFIX}", self.def.id)
        } else {
            self.def.id.into()
        }
    }
}

/// The suffix of a `:stealth` variant's id, on the command line and in the report.
const STEALTH_SUFFIX: &str = ":stealth";

/// The scenarios asked for.
fn selection(args: &Args) -> anyhow::Result<Vec<Pick>> {
    let pick = |def, controls_only, stealth_only| Pick { def, controls_only, stealth_only };
    if args.scenarios.is_empty() {
        return Ok(scenarios::ALL.iter().map(|d| pick(*d, args.controls_only, false)).collect());
    }
    args.scenarios
        .iter()
        .map(|s| {
            let (id, part) = s.split_once(':').unwrap_or((s.as_str(), ""));
            let def =
                scenarios::find(id).with_context(|| format!("no scenario {id} (see --list)"))?;
            match part {
                "" => Ok(pick(def, args.controls_only, false)),
                "controls" => Ok(pick(def, true, false)),
                "stealth" => Ok(pick(def, args.controls_only, true)),
                _ => {
                    anyhow::bail!("{s}: the parts that can be named are `:controls` and `:stealth`")
                }
            }
        })
        .collect()
}

/// Why the lab cannot run here, if it cannot.
fn cannot_run(kolokol: &Path) -> Option<String> {
    // CapEff: CAP_NET_ADMIN (12) for links and nftables, CAP_SYS_ADMIN (21) for namespaces.
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim().to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .unwrap_or(0);
    if effective & ((1 << 12) | (1 << 21)) != (1 << 12) | (1 << 21) {
        return Some(
            "it needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) for network namespaces and nftables"
                .into(),
        );
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("tcpdump", "tcpdump"),
        ("openssl", "openssl"),
        ("curl", "curl"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` is missing (apt-get install {package})"));
        }
    }
    if !kolokol.is_file() {
        return Some(format!(
            "no kolokol binary at {} (cargo build -p kolokol-cli, or --kolokol PATH)",
            kolokol.display()
        ));
    }
    let probe = Command::new("ip").args(["netns", "add", "klabprobe-check"]).output();
    let _ = Command::new("ip").args(["netns", "del", "klabprobe-check"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Some("`ip netns add` does not work here".into());
    }
    None
}

/// The repository's root (this crate sits in `tests/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_owned).unwrap_or_default()
}

/// `debug` or `release`, and the commit the lab measures.
fn build_name(kolokol: &Path) -> String {
    let profile =
        if kolokol.components().any(|c| c.as_os_str() == "release") { "release" } else { "debug" };
    let root = repo_root();
    let commit = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--short=10", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown commit".into());
    // Code changes not yet committed make the commit name inexact (documentation changes do not).
    let dirty = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args([
            "status",
            "--porcelain",
            "--",
            "protocol",
            "node",
            "cli",
            "tests",
            "Cargo.toml",
            "Cargo.lock",
        ])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    format!("{profile}, commit {commit}{}", if dirty { " with uncommitted changes" } else { "" })
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let selected = selection(&args)?;
    let lab_exe = std::env::current_exe()?;
    let kolokol = args
        .kolokol
        .clone()
        .unwrap_or_else(|| lab_exe.parent().map(|p| p.join("kolokol")).unwrap_or_default());
    if let Some(why) = cannot_run(&kolokol) {
        let ids: Vec<String> = selected.iter().map(Pick::id).collect();
        out(&format!("skipped: the censorship lab ({}): {why}", ids.join(" ")));
        out(&format!("lab: 0 passed, 0 failed, {} skipped", selected.len()));
        return Ok(ExitCode::SUCCESS);
    }
    registry::install_signal_handler()?;
    let prefix = registry::claim_prefix()?;
    let stale = registry::clean_stale();
    if !stale.is_empty() {
        note(&format!(
            "removed {} namespaces left by an earlier run: {}",
            stale.len(),
            stale.join(" ")
        ));
    }
    let run_dir = Path::new(RUN_ROOT).join(&prefix);
    clean_old_runs(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let build = build_name(&kolokol);
    note(&format!(
        "kolokol-lab: run {prefix}, kolokol {} ({build}), files in {}",
        kolokol.display(),
        run_dir.display()
    ));
    let env = |stealth_only| {
        Arc::new(Env {
            kolokol: kolokol.clone(),
            lab_exe: lab_exe.clone(),
            run_dir: run_dir.clone(),
            prefix: prefix.clone(),
            long: args.long,
            extra: roles::ExtraArgs {
                relay: args.relay_args.clone(),
                node: args.node_args.clone(),
                stealth_only,
            },
        })
    };
    let (env_default, env_stealth) = (env(false), env(true));

    let mut reports = Vec::new();
    for pick in &selected {
        let env = if pick.stealth_only { &env_stealth } else { &env_default };
        note(&format!(
            "== {} {}{}",
            pick.id(),
            pick.def.title,
            if pick.controls_only { " (controls only)" } else { "" }
        ));
        let report = run_one(pick, env, &build);
        note(&format!("== {} {}: {}", report.id, report.verdict.as_str(), report.why));
        reports.push(report);
    }
    registry::teardown();

    let passed = reports.iter().filter(|r| r.verdict == Verdict::Pass).count();
    let failed = reports.len() - passed;
    if !args.no_docs {
        let full: Vec<Report> =
            reports.iter().filter(|r| r.mode != "controls only").cloned().collect();
        if !full.is_empty() {
            let docs =
                args.docs.clone().unwrap_or_else(|| repo_root().join("docs").join("BLOCKING.md"));
            write_docs(&docs, &full)?;
            note(&format!("wrote {}", docs.display()));
        }
    }
    out("");
    for r in &reports {
        out(&format!(
            "{:4} {:8} {}{}: {}",
            r.id,
            r.verdict.as_str(),
            r.title,
            if r.mode == "controls only" { " (controls only)" } else { "" },
            r.why
        ));
    }
    out(&format!("lab: {passed} passed, {failed} failed, 0 skipped"));
    if !args.keep && failed == 0 {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    registry::release_prefix();
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Removes the run directories of earlier runs that no live lab uses.
fn clean_old_runs(current: &Path) {
    let live: Vec<String> = std::fs::read_dir(registry::STATE_DIR)
        .map(|entries| {
            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(RUN_ROOT) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path() != current && !live.contains(&name) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Runs one scenario in a fresh network, whatever happens inside it (an error, a panic), and
/// tears the network down before returning.
fn run_one(pick: &Pick, env: &Arc<Env>, build: &str) -> Report {
    let (def, controls_only) = (pick.def, pick.controls_only);
    let id = pick.id();
    let started = clock::utc_now();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let start = std::time::Instant::now();
    let mode = if controls_only {
        "controls only"
    } else if env.long {
        "long"
    } else {
        "short"
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> anyhow::Result<report::Outcome> {
            // The variant's files go to a directory of their own (`T3-stealth`).
            let dir = id.replace(':', "-");
            let mut ctx = Ctx::new(def.id, &dir, Arc::clone(env), controls_only)?;
            let run = (def.run)(&mut ctx);
            let outcome = std::mem::take(&mut ctx.outcome);
            match run {
                Ok(()) => Ok(outcome),
                Err(e) => {
                    // Keep what was measured before the error.
                    Err(e.context(format!(
                        "{} controls and {} criteria measured before",
                        outcome.controls.len(),
                        outcome.criteria.len()
                    )))
                }
            }
        },
    ));
    let (outcome, error) = match result {
        Ok(Ok(outcome)) => (outcome, None),
        Ok(Err(e)) => (report::Outcome::default(), Some(format!("{e:#}"))),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".into());
            (report::Outcome::default(), Some(format!("panicked: {text}")))
        }
    };
    let (verdict, why) = match &error {
        Some(e) => (Verdict::Error, e.lines().next().unwrap_or_default().to_owned()),
        None => Report::judge(&outcome),
    };
    let title = if pick.stealth_only {
        format!("{}, users on `--transport stealth`", def.title)
    } else {
        def.title.into()
    };
    Report {
        id,
        title,
        criterion: def.criterion.into(),
        started,
        duration_s: start.elapsed().as_secs_f64().round(),
        mode: mode.into(),
        build: build.into(),
        load,
        verdict,
        why,
        error,
        outcome,
    }
}

/// Merges this run's reports into the stored results (a scenario run now replaces its older
/// result) and writes `docs/BLOCKING.md` and `docs/blocking-results.json` beside it.
fn write_docs(docs: &Path, fresh: &[Report]) -> anyhow::Result<()> {
    if let Some(dir) = docs.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let results = docs.with_file_name("blocking-results.json");
    let mut all = report::load(&results);
    all.retain(|old| !fresh.iter().any(|r| r.id == old.id));
    all.extend(fresh.iter().cloned());
    // A `:stealth` row follows its scenario's.
    let order = |id: &str| {
        let (base, variant) = match id.strip_suffix(STEALTH_SUFFIX) {
            Some(base) => (base, 1),
            None => (id, 0),
        };
        (scenarios::ALL.iter().position(|d| d.id == base).unwrap_or(usize::MAX), variant)
    };
    all.sort_by_key(|r| order(&r.id));
    std::fs::write(&results, serde_json::to_string_pretty(&all)? + "\n")?;
    std::fs::write(docs, report::render(&all, HOW))?;
    Ok(())
}

/// The end of BLOCKING.md: how the lab works and what it leaves out.
const HOW: &str = include_str!("how.md");
