//! The node's wall clock: every "what time is it" in the node asks this, never `SystemTime`.
//!
//! A running node reads the system clock. Tests of the slow timers (the 14-day give-up of an
//! undeliverable message, certificate renewal, prekey rotation, mailbox expiry, the retry
//! schedule) run the real node under tokio's paused time with [`Clock::tokio`], whose wall time
//! moves with tokio's clock: `tokio::time::advance` then moves every timer and every timestamp
//! together, so a fortnight passes in milliseconds. Timers themselves are tokio's in both cases;
//! only the wall time differs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A cloneable handle to a wall clock.
#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System,
    /// Wall time = `start_ms` + the tokio time elapsed since `start`.
    Tokio {
        start_ms: u64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// The system clock, as a running node uses.
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock that starts at the system time now and then advances with tokio's clock, for tests
    /// with paused time. It must be made inside the runtime whose time it follows.
    pub fn tokio() -> Self {
        Self(Arc::new(Source::Tokio { start_ms: system_ms(), start: tokio::time::Instant::now() }))
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> u64 {
        match &*self.0 {
            Source::System => system_ms(),
            Source::Tokio { start_ms, start } => {
                start_ms.saturating_add(start.elapsed().as_millis() as u64)
            }
        }
    }

    /// Unix seconds now.
    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Milliseconds from now until `at_ms` (zero if it has passed).
    pub fn until_ms(&self, at_ms: u64) -> Duration {
        Duration::from_millis(at_ms.saturating_sub(self.now_ms()))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &*self.0 {
            Source::System => "Clock::system",
            Source::Tokio { .. } => "Clock::tokio",
        })
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

fn system_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Unix seconds by the system clock, for code outside a node (tests that sign records, the CLI).
pub fn unix_secs() -> u64 {
    system_ms() / 1000
}

#[cfg(test)]
mod tests;
