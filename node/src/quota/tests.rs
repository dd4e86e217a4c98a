//! Meters under paused time: a quota refuses past its limit, refills after its window, keeps
//! keys apart, and stays bounded however many keys come.

use std::time::Duration;

use super::{Meter, Quota, human};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn a_quota_refuses_past_its_limit_and_refills_after_its_window() {
    let mut meter = Meter::new("test", Quota::new(3, MINUTE), 16);
    for _ in 0..3 {
        meter.take(&"a").expect("within the limit");
    }
    let refusal = meter.take(&"a").expect_err("the fourth use in the window is refused");
    assert_eq!(refusal.retry_after, MINUTE);
    assert_eq!(refusal.to_string(), "rate limited: test (3 per 60 s); try again in 60 s");
    tokio::time::advance(MINUTE - Duration::from_secs(1)).await;
    let refusal = meter.take(&"a").expect_err("still the same window");
    assert_eq!(refusal.retry_after, Duration::from_secs(1));
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..3 {
        meter.take(&"a").expect("a new window, a full quota");
    }
    assert!(meter.take(&"a").is_err());
}

#[tokio::test(start_paused = true)]
async fn one_key_exhausting_its_quota_does_not_touch_another() {
    let mut meter = Meter::new("test", Quota::new(2, MINUTE), 16);
    meter.take_n(&"flood", 2).expect("within the limit");
    assert!(meter.take(&"flood").is_err());
    assert!(meter.allows(&"quiet", 2));
    meter.take_n(&"quiet", 2).expect("another key has its own quota");
    // All or none: a batch that does not fit takes nothing.
    assert!(meter.take_n(&"other", 3).is_err());
    meter.take_n(&"other", 2).expect("the refused batch took nothing");
}

#[tokio::test(start_paused = true)]
async fn the_key_table_is_bounded_and_frees_itself_after_one_window() {
    let mut meter = Meter::new("test", Quota::new(1, MINUTE), 4);
    for key in 0..4u32 {
        meter.take(&key).expect("room for four keys");
    }
    let refusal = meter.take(&99).expect_err("a fifth key waits");
    assert_eq!(refusal.retry_after, MINUTE);
    assert_eq!(meter.keys(), 4);
    tokio::time::advance(MINUTE).await;
    meter.take(&99).expect("the old windows ended, so there is room again");
    assert_eq!(meter.keys(), 1, "ended windows are dropped when room is needed");
}

#[test]
fn durations_read_as_a_person_would() {
    assert_eq!(human(Duration::from_secs(90)), "90 s");
    assert_eq!(human(Duration::from_secs(600)), "10 min");
    assert_eq!(human(Duration::from_secs(3600)), "1 h");
    assert_eq!(human(Duration::from_secs(86_400)), "1 day");
    assert_eq!(human(Duration::from_secs(14 * 86_400)), "14 days");
}
