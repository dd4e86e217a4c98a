//! Time in the lab: wall-clock milliseconds, since the daemons stamp what they report
//! (`received_at_ms`) with the wall clock and tcpdump stamps packets with it too, and all of
//! them run on this one machine.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The pause between two polls of a daemon's state. Polls only wait for a state, with a
/// deadline; the lab never sleeps to let something happen.
pub const POLL: Duration = Duration::from_millis(250);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Seconds, with one decimal, between two wall-clock instants.
pub fn secs(from_ms: u64, to_ms: u64) -> f64 {
    (to_ms.saturating_sub(from_ms) as f64 / 100.0).round() / 10.0
}

/// The current UTC time as `YYYY-MM-DD HH:MM`, for the report (no date library needed).
pub fn utc_now() -> String {
    let secs = now_ms() / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm), for dates after 1970.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rest / 3600, rest % 3600 / 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_are_rounded_to_a_tenth() {
        assert_eq!(super::secs(1_000, 3_549), 2.5);
        assert_eq!(super::secs(3_000, 1_000), 0.0);
    }
}
