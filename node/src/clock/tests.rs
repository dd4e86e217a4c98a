//! The tokio clock follows paused time; the system clock does not stop.

use std::time::Duration;

use super::Clock;

#[tokio::test(start_paused = true)]
async fn a_tokio_clock_moves_with_paused_time() {
    let clock = Clock::tokio();
    let before = clock.now_ms();
    tokio::time::advance(Duration::from_secs(14 * 24 * 60 * 60)).await;
    assert_eq!(clock.now_ms() - before, 14 * 24 * 60 * 60 * 1000);
    assert_eq!(clock.until_ms(before), Duration::ZERO);
    assert_eq!(clock.until_ms(clock.now_ms() + 1500), Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn the_system_clock_ignores_paused_time() {
    let clock = Clock::system();
    let before = clock.now_ms();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(clock.now_ms() - before < 3_600_000);
}
