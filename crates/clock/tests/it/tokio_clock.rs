//! The tokio clock follows paused time: readings, wall-clock time and sleeps.

use std::time::Duration;

use mainstay_clock::{Clock, TokioClock};

#[tokio::test(start_paused = true)]
async fn readings_follow_paused_time() {
    let clock = TokioClock::new();
    let wall = clock.system_time();
    tokio::time::advance(Duration::from_secs(42)).await;
    assert_eq!(clock.now(), Duration::from_secs(42));
    assert_eq!(clock.coarse_now(), Duration::from_secs(42));
    assert_eq!(
        clock.system_time().duration_since(wall).unwrap(),
        Duration::from_secs(42)
    );
}

#[tokio::test(start_paused = true)]
async fn a_sleep_ends_when_paused_time_reaches_its_deadline() {
    let clock = TokioClock::new();
    // The runtime jumps paused time to the earlier timer, the timeout's: the sleep is not over.
    let early = tokio::time::timeout(
        Duration::from_millis(59_999),
        clock.sleep(Duration::from_secs(60)),
    )
    .await;
    assert!(early.is_err(), "a 60 s sleep ended before 60 s");
    assert_eq!(clock.now(), Duration::from_millis(59_999));
    clock.sleep(Duration::from_millis(1)).await;
    assert_eq!(clock.now(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn clocks_made_later_count_from_their_own_origin() {
    let first = TokioClock::new().shared();
    tokio::time::advance(Duration::from_secs(10)).await;
    let second = TokioClock::new().shared();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(first.now(), Duration::from_secs(15));
    assert_eq!(second.now(), Duration::from_secs(5));
}
