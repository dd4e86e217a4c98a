//! Everything a lab run creates outside its own memory (network namespaces and processes),
//! recorded as it is created, so that one teardown removes it all: at the end of a scenario,
//! when a scenario panics, and when the run is interrupted with SIGINT, SIGTERM or SIGHUP.
//!
//! A run that was killed outright (SIGKILL, a power cut) cannot clean up after itself, so every
//! run leaves a state file naming its prefix and its pid under [`STATE_DIR`], and the next run
//! removes the namespaces (and the processes in them) of every prefix whose owner is dead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where runs record their prefix and pid. /run is a tmpfs, emptied at boot, which is also when
/// every namespace disappears.
pub const STATE_DIR: &str = "/run/kolokol-lab";

/// Every namespace and veth name of a run starts with this and three hex digits (the run's
/// prefix): short, since a veth name has at most 15 bytes, and distinctive, so that the stale
/// cleanup never touches a namespace some other tool made.
pub const PREFIX_STEM: &str = "klab";

/// How long a process gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What the run has created and not yet removed.
struct Registry {
    namespaces: Vec<String>,
    pids: Vec<u32>,
    state_file: Option<PathBuf>,
}

static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { namespaces: Vec::new(), pids: Vec::new(), state_file: None });

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while the lock was held leaves the lists as they were, which is still the best
    // record of what to remove.
    REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records a namespace before it is created, so that an interruption in between still removes it.
pub fn add_namespace(name: &str) {
    registry().namespaces.push(name.to_owned());
}

/// Records a process the lab started.
pub fn add_pid(pid: u32) {
    registry().pids.push(pid);
}

/// Forgets a process once it has been waited for (its pid may be reused after that).
pub fn remove_pid(pid: u32) {
    registry().pids.retain(|p| *p != pid);
}

/// Picks a prefix no live run uses, writes its state file, and returns the prefix.
pub fn claim_prefix() -> anyhow::Result<String> {
    std::fs::create_dir_all(STATE_DIR)?;
    let seed = std::process::id() ^ (rand::random::<u32>());
    for i in 0..4096u32 {
        let prefix = format!("{PREFIX_STEM}{:03x}", (seed.wrapping_add(i)) & 0xfff);
        let path = Path::new(STATE_DIR).join(&prefix);
        if path.exists() {
            continue;
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        registry().state_file = Some(path);
        return Ok(prefix);
    }
    anyhow::bail!("every lab prefix is taken; remove {STATE_DIR} after checking no lab runs")
}

/// Whether `pid` is a running kolokol-lab process (a zombie, killed but not yet reaped, is not).
fn lab_alive(pid: u32) -> bool {
    let running = !zombie_or_gone(pid);
    running
        && std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim().starts_with("kolokol-lab"))
}

/// Whether `pid` has exited (it is gone, or a zombie waiting to be reaped).
fn zombie_or_gone(pid: u32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    state.is_empty()
        || state.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'))
}

/// Removes what dead runs left behind: every namespace whose name starts with a lab prefix that
/// no live run owns (with the processes in it), and their state files. Returns what it removed.
pub fn clean_stale() -> Vec<String> {
    let mut live = Vec::new();
    let mut removed = Vec::new();
    if let Ok(entries) = std::fs::read_dir(STATE_DIR) {
        for entry in entries.flatten() {
            let prefix = entry.file_name().to_string_lossy().into_owned();
            let pid = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if pid.is_some_and(|p| p != std::process::id() && lab_alive(p)) {
                live.push(prefix);
            } else if registry().state_file.as_deref() != Some(&entry.path()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let mine = registry()
        .state_file
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    for ns in list_namespaces() {
        let Some(prefix) = lab_prefix_of(&ns) else { continue };
        if live.contains(&prefix) || mine.as_deref() == Some(prefix.as_str()) {
            continue;
        }
        kill_namespace_processes(&ns);
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        removed.push(ns);
    }
    removed
}

/// The lab prefix a namespace name starts with, if it has one.
fn lab_prefix_of(ns: &str) -> Option<String> {
    let rest = ns.strip_prefix(PREFIX_STEM)?;
    let hex = rest.get(..3)?;
    (hex.chars().all(|c| c.is_ascii_hexdigit()) && rest[3..].starts_with('-'))
        .then(|| format!("{PREFIX_STEM}{hex}"))
}

/// The names of the network namespaces that `ip netns` knows.
pub fn list_namespaces() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Kills the processes that still run in a namespace of a dead run (processes a lab started):
/// a namespace is only really gone once nothing runs in it.
fn kill_namespace_processes(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else { return };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-KILL", pid]).status();
    }
}

/// Sends SIGTERM to `pid`, then SIGKILL if it still runs after [`STOP_GRACE`].
pub fn stop_pid(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).output();
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        // A zombie (exited, not yet waited for) has stopped as far as the network is concerned.
        if zombie_or_gone(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).output();
}

/// Removes every namespace and process of this run that is still recorded. Safe to call more
/// than once and from the signal thread.
pub fn teardown() {
    let (pids, namespaces) = {
        let mut r = registry();
        (std::mem::take(&mut r.pids), std::mem::take(&mut r.namespaces))
    };
    for pid in pids {
        stop_pid(pid);
    }
    for ns in namespaces.iter().rev() {
        kill_namespace_processes(ns);
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// Deletes namespaces of this run and forgets them (end of a scenario).
pub fn delete_namespaces(names: &[String]) {
    for ns in names.iter().rev() {
        kill_namespace_processes(ns);
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    registry().namespaces.retain(|n| !names.contains(n));
}

/// Removes the run's state file (the last step of a run).
pub fn release_prefix() {
    if let Some(path) = registry().state_file.take() {
        let _ = std::fs::remove_file(path);
    }
}

/// Starts a thread that waits for SIGINT, SIGTERM or SIGHUP, then tears everything down and
/// exits with 130: a run interrupted at any point leaves nothing behind.
pub fn install_signal_handler() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut hup)) =
                (signal(SignalKind::terminate()), signal(SignalKind::hangup()))
            else {
                return;
            };
            let which = tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            };
            crate::note(&format!("kolokol-lab: {which}: tearing the lab down"));
            teardown();
            release_prefix();
            std::process::exit(130);
        });
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lab_namespaces_have_a_prefix() {
        assert_eq!(lab_prefix_of("klab3f2-alice").as_deref(), Some("klab3f2"));
        assert_eq!(lab_prefix_of("klab3f2-"), Some("klab3f2".into()));
        assert_eq!(lab_prefix_of("klab3g2-alice"), None);
        assert_eq!(lab_prefix_of("klab3f2alice"), None);
        assert_eq!(lab_prefix_of("kolokol-lab-1-1-a"), None);
        assert_eq!(lab_prefix_of("klab"), None);
    }
}
