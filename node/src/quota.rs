//! Quotas with windows: how much of the node any one peer (or all strangers together) may use
//! in a span of time. Every quota a peer can consume is a [`Quota`], a limit and the window it
//! refills after, so an attacker who exhausts one delays honest use for at most one window and
//! never locks anyone out for good.
//!
//! A [`Meter`] counts uses of one quota per key (a peer, an address prefix, a mailbox id) in
//! fixed windows that start at the key's first use, remembers at most a bounded number of keys,
//! and writes at most one log line per window however often the quota is exceeded. Time is
//! tokio's, so tests run meters under paused time.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// A limit on uses per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Uses allowed in one window.
    pub limit: u32,
    /// How long a window lasts; the count starts from zero after it.
    pub window: Duration,
}

impl Quota {
    /// A quota of `limit` uses per `window`.
    pub const fn new(limit: u32, window: Duration) -> Self {
        Self { limit, window }
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.window.is_zero() {
            return write!(f, "{} at once", self.limit);
        }
        write!(f, "{} per {}", self.limit, human(self.window))
    }
}

/// A duration as a person reads it: "90 s", "10 min", "1 h", "1 day".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s} s"),
        _ if s.is_multiple_of(86_400) => match s / 86_400 {
            1 => "1 day".into(),
            n => format!("{n} days"),
        },
        _ if s.is_multiple_of(3600) => format!("{} h", s / 3600),
        _ => format!("{} min", s.div_ceil(60)),
    }
}

/// Why a use was refused: which quota, and when the key may try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The quota's name, as in the log and the answer to the peer.
    pub name: &'static str,
    /// The quota.
    pub quota: Quota,
    /// How long until the key's window ends and it may use the quota again.
    pub retry_after: Duration,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rate limited: {} ({}); try again in {}",
            self.name,
            self.quota,
            human(self.retry_after.max(Duration::from_secs(1)))
        )
    }
}

/// One key's window: when it started and how many uses it has seen.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    used: u32,
}

/// Counts uses of one [`Quota`] per key, for at most `max_keys` keys at once.
#[derive(Debug)]
pub struct Meter<K> {
    name: &'static str,
    quota: Quota,
    max_keys: usize,
    windows: HashMap<K, Window>,
    log: LogLimit,
}

/// At most one log line per interval for one kind of refusal, with the count of those left
/// out since the last line: a flood must not become a flood of logs.
#[derive(Debug, Default)]
pub struct LogLimit {
    logged: Option<Instant>,
    unlogged: u64,
}

impl LogLimit {
    /// Whether to log now, at most once per `every`; when it says yes, it also returns how
    /// many were left out since the last line.
    pub fn allow(&mut self, every: Duration) -> Option<u64> {
        let now = Instant::now();
        if self.logged.is_some_and(|at| now.duration_since(at) < every) {
            self.unlogged += 1;
            return None;
        }
        self.logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

impl<K: Hash + Eq + Clone + std::fmt::Debug> Meter<K> {
    /// A meter for `quota` named `name` (the name appears in logs and in refusals), keeping
    /// at most `max_keys` keys. When that many keys are in their window, a new key is refused
    /// until the oldest window ends: the table stays bounded, and even then a key waits at most
    /// one window.
    pub fn new(name: &'static str, quota: Quota, max_keys: usize) -> Self {
        Self { name, quota, max_keys, windows: HashMap::new(), log: LogLimit::default() }
    }

    /// The quota this meter enforces.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Counts one use by `key` now, or refuses it (and logs the refusal, at most once per
    /// window for the whole meter).
    pub fn take(&mut self, key: &K) -> Result<(), Refusal> {
        self.take_n(key, 1)
    }

    /// Counts `n` uses by `key` now, all or none.
    pub fn take_n(&mut self, key: &K, n: u32) -> Result<(), Refusal> {
        let now = Instant::now();
        let result = self.try_take(key, n, now);
        if let Err(refusal) = &result {
            self.log(key, refusal);
        }
        result
    }

    /// Takes back one use by `key` counted in its current window (a use that another quota
    /// then refused, so it did not happen).
    pub fn give_back(&mut self, key: &K) {
        if let Some(w) = self.windows.get_mut(key) {
            w.used = w.used.saturating_sub(1);
        }
    }

    /// Whether `key` could use `n` more now, without counting them or logging.
    pub fn allows(&self, key: &K, n: u32) -> bool {
        let now = Instant::now();
        match self.windows.get(key) {
            Some(w) if now.duration_since(w.start) < self.quota.window => {
                w.used.saturating_add(n) <= self.quota.limit
            }
            _ => n <= self.quota.limit,
        }
    }

    fn try_take(&mut self, key: &K, n: u32, now: Instant) -> Result<(), Refusal> {
        let window = self.quota.window;
        if !self.windows.contains_key(key) && self.windows.len() >= self.max_keys {
            self.windows.retain(|_, w| now.duration_since(w.start) < window);
            if self.windows.len() >= self.max_keys {
                let oldest = self.windows.values().map(|w| w.start).min().unwrap_or(now);
                return Err(Refusal {
                    name: self.name,
                    quota: self.quota,
                    retry_after: (oldest + window).saturating_duration_since(now),
                });
            }
        }
        let w = self.windows.entry(key.clone()).or_insert(Window { start: now, used: 0 });
        if now.duration_since(w.start) >= window {
            *w = Window { start: now, used: 0 };
        }
        if w.used.saturating_add(n) > self.quota.limit {
            return Err(Refusal {
                name: self.name,
                quota: self.quota,
                retry_after: (w.start + window).saturating_duration_since(now),
            });
        }
        w.used += n;
        Ok(())
    }

    /// One line per window, however many refusals: a flood must not become a flood of logs.
    fn log(&mut self, key: &K, refusal: &Refusal) {
        if let Some(not_logged_before) = self.log.allow(self.quota.window) {
            tracing::warn!(
                quota = self.name,
                limit = %self.quota,
                ?key,
                retry_after_secs = refusal.retry_after.as_secs(),
                not_logged_before,
                "refused: quota reached; further refusals of this quota are not logged for one window"
            );
        }
    }

    /// How many keys the meter remembers now (for tests and status).
    pub fn keys(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests;
