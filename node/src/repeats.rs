//! Repeating failures in the log, collapsed: the first occurrence of a failure is logged as it
//! happens, further occurrences of the same failure are only counted, and while they go on a
//! summary line says every [`REPEAT_SUMMARY_INTERVAL`] how many there were and the last one's
//! detail. A failure that stops for a whole interval is forgotten, so its next occurrence is
//! logged in full again.
//!
//! While a relay is down, a node retries it and its bootstrap peers on several paths at once
//! (reservations, redials, Kademlia, deliveries), which logged a long warning about once a
//! second and buried everything else. A failure is named by its kind (the log message) and its
//! subject (the peer); at most [`MAX_REPEATING`] are tracked, and the caller marks one as over
//! with [`Repeats::clear`] when it succeeds.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// How often a failure that keeps repeating is summarised in the log.
pub const REPEAT_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// The most failures tracked at once. The swarm task's subjects are its bootstrap peers and
/// relays (at most 64 and 32), so this is never reached by them; past it a failure that is not
/// tracked yet is logged every time, which loses nothing.
pub const MAX_REPEATING: usize = 128;

/// One failure that repeats.
#[derive(Debug)]
struct Repeating {
    /// When the current interval began: the last line logged for this failure.
    since: Instant,
    /// Occurrences since that line, not logged.
    unlogged: u64,
    /// The detail of the last of them.
    last: String,
}

/// A summary line due: `count` more occurrences of `kind` for `subject` in the last interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    /// The failure's log message.
    pub kind: &'static str,
    /// What failed (a peer id).
    pub subject: String,
    /// Occurrences since the last line.
    pub count: u64,
    /// The last one's detail.
    pub last: String,
}

/// The failures that are repeating now.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    failures: HashMap<(&'static str, String), Repeating>,
}

impl Repeats {
    /// Records one occurrence of `kind` for `subject`; returns whether to log it now (the first
    /// one, or one that is not tracked), else it is counted for the next summary.
    pub(crate) fn note(
        &mut self,
        kind: &'static str,
        subject: String,
        detail: String,
        now: Instant,
    ) -> bool {
        if let Some(repeating) = self.failures.get_mut(&(kind, subject.clone())) {
            repeating.unlogged += 1;
            repeating.last = detail;
            return false;
        }
        if self.failures.len() < MAX_REPEATING {
            self.failures
                .insert((kind, subject), Repeating { since: now, unlogged: 0, last: detail });
        }
        true
    }

    /// Forgets a failure that is over (its subject succeeded); the next one is logged in full.
    pub(crate) fn clear(&mut self, kind: &'static str, subject: &str) {
        self.failures.remove(&(kind, subject.to_owned()));
    }

    /// The summaries due at `now`: one for each failure that repeated during an interval that
    /// has ended. A failure that did not repeat during its interval is forgotten.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Summary> {
        let mut out = Vec::new();
        self.failures.retain(|(kind, subject), repeating| {
            if now.saturating_duration_since(repeating.since) < REPEAT_SUMMARY_INTERVAL {
                return true;
            }
            if repeating.unlogged == 0 {
                return false;
            }
            out.push(Summary {
                kind,
                subject: subject.clone(),
                count: repeating.unlogged,
                last: std::mem::take(&mut repeating.last),
            });
            repeating.since = now;
            repeating.unlogged = 0;
            true
        });
        out.sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
        out
    }
}

#[cfg(test)]
mod tests;
