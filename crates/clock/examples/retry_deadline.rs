//! A manual clock driving a retry decision: an operation is retried with doubling backoff until it
//! succeeds or the next wait would pass its deadline. The retry loop sleeps on the clock; the
//! program advances the clock whenever the loop waits, so seconds of backoff take no real time.
//!
//! Run with `cargo run -p mainstay-clock --example retry_deadline`.

use std::time::Duration;

use mainstay_clock::{Clock, ManualClock, SharedClock};

/// How a call with retries ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The operation succeeded on this attempt.
    Succeeded { attempt: u32 },
    /// The next backoff would have passed the deadline, so the loop gave up after this attempt.
    GaveUp { attempt: u32 },
}

/// Calls `operation` until it returns `true`, sleeping on `clock` between attempts: 100 ms at
/// first, doubling each time, and never past `deadline` after the first attempt.
async fn call_with_retries(
    clock: SharedClock,
    deadline: Duration,
    mut operation: impl FnMut(u32) -> bool,
) -> Outcome {
    let started = clock.now();
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let elapsed = clock.now() - started;
        if operation(attempt) {
            println!("  attempt {attempt} at {elapsed:?}: succeeded");
            return Outcome::Succeeded { attempt };
        }
        if elapsed + backoff > deadline {
            println!(
                "  attempt {attempt} at {elapsed:?}: failed, a {backoff:?} wait would pass the deadline"
            );
            return Outcome::GaveUp { attempt };
        }
        println!("  attempt {attempt} at {elapsed:?}: failed, retrying in {backoff:?}");
        clock.sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// Runs `call_with_retries` on a task and moves the manual clock in 50 ms steps whenever the task
/// waits on it, until the task ends. Returns the outcome and the time that passed on the clock.
async fn drive(
    deadline: Duration,
    operation: impl FnMut(u32) -> bool + Send + 'static,
) -> (Outcome, Duration) {
    let clock = ManualClock::new();
    let call = tokio::spawn(call_with_retries(clock.shared(), deadline, operation));
    while !call.is_finished() {
        if clock.pending_sleeps() > 0 {
            clock.advance(Duration::from_millis(50));
        }
        tokio::task::yield_now().await;
    }
    let outcome = call.await.expect("the retry task does not panic");
    (outcome, clock.now())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("a flaky dependency that answers on the third attempt, deadline 2 s:");
    let (outcome, waited) = drive(Duration::from_secs(2), |attempt| attempt == 3).await;
    println!("  -> {outcome:?} after {waited:?} on the manual clock");
    // Two waits: 100 ms and 200 ms.
    assert_eq!(outcome, Outcome::Succeeded { attempt: 3 });
    assert_eq!(waited, Duration::from_millis(300));

    println!("a dependency that is down, deadline 1 s:");
    let (outcome, waited) = drive(Duration::from_secs(1), |_| false).await;
    println!("  -> {outcome:?} after {waited:?} on the manual clock");
    // Waits of 100, 200 and 400 ms fit in the second; the next one (800 ms) would not.
    assert_eq!(outcome, Outcome::GaveUp { attempt: 4 });
    assert_eq!(waited, Duration::from_millis(700));
}
