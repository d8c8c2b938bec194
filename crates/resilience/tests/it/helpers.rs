//! The small helpers: the timeout helper, the all-transient classifier. (The clocks are
//! mainstay-clock's and tested there.)

use std::time::Duration;

use mainstay_resilience::{AllTransient, Classify, ErrorClass, TimedOut, timeout};

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
