//! New rules on a running breaker: what applies at once, what starts afresh, what is refused.

use std::time::Duration;

use mainstay_resilience::{BreakerConfig, BreakerError, BreakerState, TripPolicy};

use crate::support::{Closed, HalfOpen, Open, breaker, failure};

fn fail(breaker: &mainstay_resilience::CircuitBreaker) {
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
}

fn succeed(breaker: &mainstay_resilience::CircuitBreaker) -> bool {
    breaker.call(&failure, || Ok::<_, &str>(())).is_ok()
}

#[test]
fn a_lower_threshold_applies_to_the_running_failure_run() {
    let (breaker, _clock) = breaker("db", BreakerConfig::consecutive(5, Duration::from_secs(30)));
    fail(&breaker);
    fail(&breaker);
    assert_eq!(breaker.state(), Closed);
    breaker
        .reconfigure(BreakerConfig::consecutive(3, Duration::from_secs(30)))
        .expect("valid");
    assert_eq!(
        breaker.snapshot().consecutive_failures,
        2,
        "the run is kept"
    );
    fail(&breaker);
    assert_eq!(breaker.state(), Open);
    assert_eq!(breaker.config().consecutive_failures, 3);
}

#[test]
fn half_open_limits_change_while_half_open() {
    let config = BreakerConfig {
        half_open_successes: 5,
        ..BreakerConfig::consecutive(1, Duration::from_secs(10))
    };
    let (breaker, clock) = breaker("search", config.clone());
    fail(&breaker);
    clock.advance(Duration::from_secs(10));
    assert!(succeed(&breaker));
    assert_eq!(breaker.state(), HalfOpen);
    // Two trials at once are now allowed, and two successes in all close it.
    breaker
        .reconfigure(BreakerConfig {
            half_open_max_calls: 2,
            half_open_successes: 2,
            ..config
        })
        .expect("valid");
    let first = breaker.try_acquire().expect("first trial");
    let second = breaker.try_acquire().expect("second trial is admitted");
    assert!(breaker.try_acquire().is_err(), "a third is not");
    drop(second);
    first.success();
    assert_eq!(breaker.state(), Closed);
}

#[test]
fn a_shorter_open_duration_cuts_the_time_left_and_applies_to_the_next_opening() {
    let (breaker, clock) = breaker(
        "uploads",
        BreakerConfig::consecutive(1, Duration::from_secs(300)),
    );
    fail(&breaker);
    clock.advance(Duration::from_secs(10));
    breaker
        .reconfigure(BreakerConfig::consecutive(1, Duration::from_secs(30)))
        .expect("valid");
    assert_eq!(breaker.snapshot().time_until_half_open_ms, Some(30_000));
    clock.advance(Duration::from_secs(30));
    assert!(succeed(&breaker), "a trial after the new duration");
    assert_eq!(breaker.state(), Closed);
    fail(&breaker);
    assert_eq!(breaker.snapshot().time_until_half_open_ms, Some(30_000));
    // A longer duration does not lengthen the current opening.
    breaker
        .reconfigure(BreakerConfig::consecutive(1, Duration::from_secs(600)))
        .expect("valid");
    assert_eq!(breaker.snapshot().time_until_half_open_ms, Some(30_000));
}

#[test]
fn switching_the_trip_rule_counts_afresh_under_the_new_one() {
    let (breaker, clock) = breaker(
        "store",
        BreakerConfig::consecutive(3, Duration::from_secs(30)),
    );
    fail(&breaker);
    fail(&breaker);
    let rate = BreakerConfig {
        minimum_calls: 4,
        ..BreakerConfig::failure_rate(0.5, Duration::from_secs(60), Duration::from_secs(30))
    };
    breaker.reconfigure(rate.clone()).expect("valid");
    assert_eq!(breaker.config().trip, TripPolicy::FailureRate);
    let snapshot = breaker.snapshot();
    assert_eq!(
        (snapshot.consecutive_failures, snapshot.window_calls),
        (0, 0)
    );
    // 3 failures in a row would have tripped the old rule; the new one needs 4 calls, > 50% failed.
    fail(&breaker);
    assert!(succeed(&breaker));
    assert!(succeed(&breaker));
    assert_eq!(breaker.state(), Closed);
    fail(&breaker);
    assert_eq!(breaker.state(), Closed, "2 of 4 is not above 50%");
    fail(&breaker);
    assert_eq!(breaker.state(), Open, "3 of 5");

    // A new window length starts the window afresh and slides by the new width.
    breaker.reset();
    breaker
        .reconfigure(BreakerConfig {
            window: Duration::from_secs(16),
            ..rate.clone()
        })
        .expect("valid");
    fail(&breaker);
    fail(&breaker);
    fail(&breaker);
    clock.advance(Duration::from_secs(17));
    fail(&breaker);
    assert_eq!(
        breaker.state(),
        Closed,
        "the first three left the 16 s window"
    );
    assert_eq!(breaker.snapshot().window_calls, 1);

    // And back: the consecutive rule counts from zero.
    breaker
        .reconfigure(BreakerConfig::consecutive(2, Duration::from_secs(30)))
        .expect("valid");
    fail(&breaker);
    assert_eq!(breaker.state(), Closed);
    fail(&breaker);
    assert_eq!(breaker.state(), Open);
}

#[test]
fn slow_calls_can_be_switched_on_while_running() {
    let (breaker, clock) = breaker(
        "reranker",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    );
    let slow = || {
        clock.advance(Duration::from_secs(3));
        Ok::<_, &str>(())
    };
    assert!(breaker.call(&failure, slow).is_ok());
    assert_eq!(breaker.state(), Closed);
    breaker
        .reconfigure(BreakerConfig {
            slow_call_threshold: Some(Duration::from_secs(2)),
            ..BreakerConfig::consecutive(1, Duration::from_secs(30))
        })
        .expect("valid");
    assert!(breaker.call(&failure, slow).is_ok());
    assert_eq!(breaker.state(), Open);
    assert_eq!(breaker.snapshot().slow, 1);
}

#[test]
fn an_invalid_or_unsupported_change_is_refused_and_changes_nothing() {
    let original =
        BreakerConfig::failure_rate(0.5, Duration::from_secs(60), Duration::from_secs(30));
    let (breaker, _clock) = breaker("queue", original.clone());
    let error = breaker
        .reconfigure(BreakerConfig {
            failure_rate: 1.5,
            ..original.clone()
        })
        .expect_err("out of range");
    assert_eq!(error.key, "failure_rate");
    let error = breaker
        .reconfigure(BreakerConfig {
            window_buckets: 64,
            consecutive_failures: 9,
            ..original.clone()
        })
        .expect_err("the window's buckets are allocated once");
    assert_eq!(error.key, "window_buckets");
    assert!(error.allowed.contains("restart"), "{error}");
    assert_eq!(breaker.config(), original);
    // A bucket count that rounds to the same power of two is not a change.
    breaker
        .reconfigure(BreakerConfig {
            window_buckets: 9,
            ..original.clone()
        })
        .expect("9 buckets round up to the same 16");
    // A breaker that never used a window may pick any count when it switches to one.
    let (consecutive, _clock) = breaker_pair();
    consecutive
        .reconfigure(BreakerConfig {
            window_buckets: 64,
            ..original
        })
        .expect("no window yet");
    assert_eq!(consecutive.config().window_buckets, 64);
}

fn breaker_pair() -> (
    mainstay_resilience::CircuitBreaker,
    mainstay_clock::ManualClock,
) {
    breaker(
        "fresh",
        BreakerConfig::consecutive(3, Duration::from_secs(30)),
    )
}

#[test]
fn a_forced_state_is_kept_across_a_reconfiguration() {
    let (breaker, _clock) = breaker(
        "manual",
        BreakerConfig::consecutive(3, Duration::from_secs(30)),
    );
    breaker.force_open();
    breaker
        .reconfigure(BreakerConfig::consecutive(1, Duration::from_secs(1)))
        .expect("valid");
    assert_eq!(breaker.state(), BreakerState::ForcedOpen);
    assert!(matches!(
        breaker.call(&failure, || Ok::<_, &str>(())),
        Err(BreakerError::Rejected(_))
    ));
}
