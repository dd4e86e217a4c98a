//! The retry schedule and the give-up rule, as a table: what each outcome of an attempt means.

use std::time::Duration;

use crate::outbox::{MAX_RETRY_DELAY, MESSAGE_TTL, Verdict, retry_delay, verdict};
use crate::swarm::DeliveryFailure;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn temporary() -> Result<(), DeliveryFailure> {
    Err(DeliveryFailure::temporary("cannot reach it"))
}

#[test]
fn the_wait_doubles_from_two_seconds_up_to_half_a_minute() {
    let table = [(1, 2), (2, 4), (3, 8), (4, 16), (5, 30), (6, 30), (9, 30)];
    for (attempts, seconds) in table {
        assert_eq!(retry_delay(attempts), Duration::from_secs(seconds), "after {attempts}");
    }
    for attempts in [10, 50, u32::MAX] {
        assert_eq!(retry_delay(attempts), MAX_RETRY_DELAY, "after {attempts}");
    }
}

#[test]
fn each_outcome_has_one_verdict() {
    let created = 1_000_000;
    let table: [(Result<(), DeliveryFailure>, u32, u64, Verdict); 7] = [
        (Ok(()), 0, created, Verdict::Sent),
        (Ok(()), 7, created + 20 * DAY_MS, Verdict::Sent),
        (
            Err(DeliveryFailure {
                reason: "refused".into(),
                permanent: true,
                refused: true,
                slow: false,
                interrupted: false,
            }),
            0,
            created,
            Verdict::Failed { detail: "refused".into() },
        ),
        (temporary(), 0, created + 10, Verdict::Retry { attempts: 1, at_ms: created + 10 + 2_000 }),
        (
            temporary(),
            3,
            created + DAY_MS,
            Verdict::Retry { attempts: 4, at_ms: created + DAY_MS + 16_000 },
        ),
        // Exactly at the TTL it is still retried; a millisecond later it has failed.
        (
            temporary(),
            40,
            created + MESSAGE_TTL.as_millis() as u64,
            Verdict::Retry {
                attempts: 41,
                at_ms: created + MESSAGE_TTL.as_millis() as u64 + 30_000,
            },
        ),
        // A recipient that was connected but slow is tried again soon, however many attempts.
        (
            Err(DeliveryFailure {
                reason: "slow".into(),
                permanent: false,
                refused: false,
                slow: true,
                interrupted: false,
            }),
            9,
            created + DAY_MS,
            Verdict::Retry { attempts: 10, at_ms: created + DAY_MS + 2_000 },
        ),
    ];
    for (outcome, attempts, now, expected) in table {
        assert_eq!(verdict(&outcome, attempts, created, now), expected, "{outcome:?} at {now}");
    }
    assert_eq!(
        verdict(&temporary(), 40, created, created + MESSAGE_TTL.as_millis() as u64 + 1),
        Verdict::Failed { detail: "not delivered within 14 days: cannot reach it".into() }
    );
}

#[test]
fn a_refusal_says_what_was_refused() {
    let long = super::refusal(4);
    assert!(long.contains("only from people it has added as contacts"), "{long}");
    assert!(!long.contains("key"), "{long}");
    let short = super::refusal(1);
    assert!(short.contains("new one") && !short.contains("strangers"), "{short}");
}
