//! Clocks and the small helpers: manual time shared by handles, real time monotonic, the timeout
//! helper, the all-transient classifier.

use std::time::Duration;

use mainstay_resilience::{
    AllTransient, Classify, Clock, ErrorClass, ManualClock, RealClock, TimedOut, TokioClock,
    timeout,
};

#[test]
fn manual_clock_handles_share_one_time() {
    let clock = ManualClock::new();
    let shared = clock.shared();
    assert_eq!(shared.now(), Duration::ZERO);
    clock.advance(Duration::from_millis(1_500));
    assert_eq!(shared.now(), Duration::from_millis(1_500));
}

#[test]
fn real_clocks_never_go_backwards() {
    for clock in [RealClock::coarse(), RealClock::precise()] {
        let mut last = clock.now();
        for _ in 0..10_000 {
            let now = clock.now();
            assert!(now >= last);
            last = now;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn tokio_clock_follows_paused_time() {
    let clock = TokioClock::new();
    tokio::time::advance(Duration::from_secs(42)).await;
    assert_eq!(clock.now(), Duration::from_secs(42));
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_a_slow_call() {
    let slow = timeout(
        Duration::from_secs(1),
        tokio::time::sleep(Duration::from_secs(2)),
    )
    .await;
    assert_eq!(
        slow,
        Err(TimedOut {
            after: Duration::from_secs(1)
        })
    );
    let fast = timeout(Duration::from_secs(1), async { 7 }).await;
    assert_eq!(fast, Ok(7));
}

#[test]
fn all_transient_retries_everything() {
    assert_eq!(AllTransient.classify(&"anything"), ErrorClass::TRANSIENT);
    assert!(ErrorClass::Failure.is_failure() && !ErrorClass::Ignored.is_failure());
}
