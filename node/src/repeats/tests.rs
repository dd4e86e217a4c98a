//! A failure repeating every second for three minutes makes one line, then one summary a
//! minute; one that stops is forgotten.

use std::time::Duration;

use tokio::time::Instant;

use crate::repeats::{MAX_REPEATING, REPEAT_SUMMARY_INTERVAL, Repeats, Summary};

const KIND: &str = "cannot reach bootstrap peer; will retry";

#[test]
fn a_failure_every_second_logs_once_then_a_summary_a_minute() {
    let start = Instant::now();
    let mut repeats = Repeats::default();
    let mut logged = 0;
    let mut summaries = Vec::new();
    for second in 0..180u64 {
        let now = start + Duration::from_secs(second);
        if repeats.note(KIND, "relay".into(), format!("refused at {second}"), now) {
            logged += 1;
        }
        summaries.extend(repeats.due(now));
    }
    assert_eq!(logged, 1, "only the first occurrence is logged as it happens");
    assert_eq!(
        summaries,
        [
            Summary {
                kind: KIND,
                subject: "relay".into(),
                count: 60,
                last: "refused at 60".into()
            },
            Summary {
                kind: KIND,
                subject: "relay".into(),
                count: 60,
                last: "refused at 120".into()
            },
        ]
    );
}

#[test]
fn a_failure_that_stops_or_is_cleared_is_logged_in_full_next_time() {
    let start = Instant::now();
    let mut repeats = Repeats::default();
    assert!(repeats.note(KIND, "relay".into(), "once".into(), start));
    assert!(!repeats.note(KIND, "relay".into(), "twice".into(), start));
    // Another subject, or another kind, is another failure.
    assert!(repeats.note(KIND, "other relay".into(), "once".into(), start));
    assert!(repeats.note("relay reservation lost; will retry", "relay".into(), "x".into(), start));
    // The one repetition is summarised after the interval; then a quiet interval forgets it.
    let later = start + REPEAT_SUMMARY_INTERVAL;
    assert_eq!(repeats.due(later).iter().map(|s| s.count).collect::<Vec<_>>(), [1]);
    assert!(repeats.due(later + REPEAT_SUMMARY_INTERVAL).is_empty());
    assert!(repeats.note(KIND, "relay".into(), "back".into(), later + REPEAT_SUMMARY_INTERVAL));
    // A success clears it at once.
    repeats.clear(KIND, "relay");
    assert!(repeats.note(KIND, "relay".into(), "again".into(), later + REPEAT_SUMMARY_INTERVAL));
}

#[test]
fn past_the_bound_new_failures_are_logged_every_time_and_nothing_grows() {
    let now = Instant::now();
    let mut repeats = Repeats::default();
    for i in 0..MAX_REPEATING {
        assert!(repeats.note(KIND, format!("peer {i}"), String::new(), now));
    }
    assert!(repeats.note(KIND, "one too many".into(), String::new(), now));
    assert!(repeats.note(KIND, "one too many".into(), String::new(), now), "not tracked");
    assert!(!repeats.note(KIND, "peer 0".into(), String::new(), now), "still tracked");
}
