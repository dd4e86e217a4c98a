//! Tests of the delivery time limits and of what the outbox learns of a path.

use std::time::Duration;

use libp2p::PeerId;

use super::{BULK_ENVELOPE, MIN_GOODPUT, Paths, delivery_timeout};
use crate::swarm::behaviour::{DELIVERY_TIMEOUT, MAX_DELIVERY_TIMEOUT};

#[test]
fn the_time_limit_grows_with_the_size_and_shrinks_with_the_goodput() {
    let small = delivery_timeout(1024, None);
    assert!(small >= DELIVERY_TIMEOUT && small < DELIVERY_TIMEOUT + Duration::from_secs(1));
    // A 64 KiB chunk on a path never measured: the floor goodput, three times over.
    let chunk = delivery_timeout(65_535, None);
    assert_eq!(chunk.as_secs(), 10 + (3.0 * 65_535.0 / MIN_GOODPUT) as u64);
    // Measured at 130 kbit/s (16 250 bytes/s): about 22 s.
    assert_eq!(delivery_timeout(65_535, Some(16_250.0)).as_secs(), 22);
    // A fast path gives no less than the base, a dead slow one no more than the cap.
    assert_eq!(delivery_timeout(65_535, Some(1e9)).as_secs(), DELIVERY_TIMEOUT.as_secs());
    assert_eq!(delivery_timeout(65_535, Some(1.0)), chunk, "never below the floor goodput");
    assert_eq!(delivery_timeout(usize::MAX / 2, None), MAX_DELIVERY_TIMEOUT);
}

#[test]
fn a_slow_path_is_said_once_and_again_only_after_it_recovered() {
    let paths = Paths::default();
    let peer = PeerId::random();
    // Small envelopes measure nothing.
    assert_eq!(paths.measured(&peer, 1024, Duration::from_secs(5)), None);
    assert_eq!(paths.goodput(&peer), None);
    // 64 KiB in 4 s: 16 KiB/s, throttled; said once.
    let said = paths.measured(&peer, 65_536, Duration::from_secs(4)).expect("said");
    assert!((said - 16_384.0).abs() < 1.0, "{said}");
    for _ in 0..5 {
        assert_eq!(paths.measured(&peer, 65_536, Duration::from_secs(4)), None, "once only");
    }
    assert!(paths.timeout(&peer, 65_535) < delivery_timeout(65_535, None));
    // It recovers, then slows down again: said again.
    for _ in 0..10 {
        paths.measured(&peer, 65_536, Duration::from_millis(50));
    }
    assert!(paths.goodput(&peer).expect("measured") > 1e5);
    let mut said_again = false;
    for _ in 0..10 {
        said_again |= paths.measured(&peer, 65_536, Duration::from_secs(8)).is_some();
    }
    assert!(said_again);
    // Only large envelopes take the lane, and one at a time.
    assert!(paths.lane(&peer, BULK_ENVELOPE).is_none());
    let lane = paths.lane(&peer, 65_535).expect("a lane");
    let _held = lane.clone().try_acquire_owned().expect("free");
    assert!(paths.lane(&peer, 65_535).expect("the same lane").try_acquire_owned().is_err());
}
