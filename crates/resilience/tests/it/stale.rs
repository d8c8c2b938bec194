//! Stale outcomes never count: a permit granted before a reset, a transition or a reconfiguration
//! reports into nothing, and jitter never lengthens an opening past `max_open_duration`.

use std::time::Duration;

use mainstay_resilience::{BreakerConfig, BreakerState, TransitionReason};

use crate::support::{Closed, HalfOpen, Open, breaker, failure};

fn fail(breaker: &mainstay_resilience::CircuitBreaker) {
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
}

#[test]
fn a_failure_granted_before_a_reset_of_a_closed_breaker_does_not_count_after_it() {
    let (breaker, _clock) = breaker("db", BreakerConfig::consecutive(2, Duration::from_secs(30)));
    fail(&breaker);
    let stale = breaker.try_acquire().expect("closed");
    breaker.reset();
    assert_eq!(breaker.snapshot().consecutive_failures, 0);
    stale.failure();
    assert_eq!(
        breaker.snapshot().consecutive_failures,
        0,
        "the failure was admitted before the reset"
    );
    fail(&breaker);
    assert_eq!(
        breaker.state(),
        Closed,
        "one failure since the reset is not two"
    );
}

#[test]
fn a_window_failure_granted_before_a_reset_does_not_count_after_it() {
    let config = BreakerConfig {
        minimum_calls: 2,
        ..BreakerConfig::failure_rate(0.5, Duration::from_secs(60), Duration::from_secs(30))
    };
    let (breaker, _clock) = breaker("store", config);
    let stale = breaker.try_acquire().expect("closed");
    breaker.reset();
    stale.failure();
    let snapshot = breaker.snapshot();
    assert_eq!((snapshot.window_calls, snapshot.window_failures), (0, 0));
    fail(&breaker);
    assert_eq!(
        breaker.state(),
        Closed,
        "one call is below the minimum of two"
    );
    assert_eq!(breaker.snapshot().window_calls, 1);
}

#[test]
fn an_outcome_granted_before_a_reconfiguration_does_not_count_after_it() {
    let (breaker, _clock) = breaker("db", BreakerConfig::consecutive(3, Duration::from_secs(30)));
    fail(&breaker);
    let stale = breaker.try_acquire().expect("closed");
    breaker
        .reconfigure(BreakerConfig::consecutive(2, Duration::from_secs(30)))
        .expect("valid");
    stale.failure();
    assert_eq!(breaker.state(), Closed, "the stale failure would make two");
    assert_eq!(
        breaker.snapshot().consecutive_failures,
        1,
        "the run made before the change is kept"
    );
    fail(&breaker);
    assert_eq!(breaker.state(), Open);
}

#[test]
fn a_stale_success_does_not_end_a_run_of_failures_that_began_after_a_reset() {
    let (breaker, _clock) = breaker("db", BreakerConfig::consecutive(2, Duration::from_secs(30)));
    let stale = breaker.try_acquire().expect("closed");
    breaker.reset();
    fail(&breaker);
    stale.success();
    fail(&breaker);
    assert_eq!(
        breaker.state(),
        Open,
        "two failures in a row since the reset"
    );
}

#[test]
fn a_trial_granted_before_a_reconfiguration_neither_closes_the_breaker_nor_keeps_its_slot() {
    let (breaker, clock) = breaker(
        "search",
        BreakerConfig::consecutive(1, Duration::from_secs(10)),
    );
    fail(&breaker);
    clock.advance(Duration::from_secs(10));
    let stale = breaker.try_acquire().expect("the one trial");
    assert_eq!(breaker.state(), HalfOpen);
    breaker
        .reconfigure(BreakerConfig::consecutive(1, Duration::from_secs(10)))
        .expect("valid");
    stale.success();
    assert_eq!(breaker.state(), HalfOpen, "a stale trial does not close it");
    let fresh = breaker
        .try_acquire()
        .expect("the stale trial's slot is free");
    fresh.success();
    assert_eq!(breaker.state(), Closed);
}

#[test]
fn jitter_never_lengthens_an_opening_past_the_maximum() {
    let config = BreakerConfig {
        open_duration_multiplier: 2.0,
        max_open_duration: Duration::from_secs(60),
        open_duration_jitter: 0.5,
        ..BreakerConfig::consecutive(1, Duration::from_secs(30))
    };
    let (breaker, clock) = breaker("jittery", config);
    let mut events = breaker.subscribe();
    let mut openings = Vec::new();
    fail(&breaker);
    for _ in 0..40 {
        clock.advance(Duration::from_secs(600));
        fail(&breaker);
        while let Ok(event) = events.try_recv() {
            if event.to == BreakerState::Open {
                openings.push(event.open_for.expect("an opening says how long"));
            }
            assert_ne!(event.reason, TransitionReason::Reset);
        }
    }
    assert_eq!(openings.len(), 41);
    let longest = openings.iter().max().copied().unwrap_or_default();
    assert!(
        longest <= Duration::from_secs(60),
        "an opening of {longest:?}"
    );
    assert!(
        openings
            .iter()
            .any(|open_for| *open_for < Duration::from_secs(60)),
        "jitter still spreads the capped openings"
    );
}

#[test]
fn jitter_on_a_fixed_duration_is_capped_too() {
    let config = BreakerConfig {
        open_duration_jitter: 0.5,
        ..BreakerConfig::consecutive(1, Duration::from_secs(300))
    };
    let (breaker, clock) = breaker("fixed", config);
    fail(&breaker);
    for _ in 0..40 {
        let left = breaker.snapshot().time_until_half_open_ms.expect("open");
        assert!(left <= 300_000, "{left} ms");
        clock.advance(Duration::from_secs(1_000));
        fail(&breaker);
    }
}

#[test]
fn jitter_needs_room_under_the_maximum() {
    let config = BreakerConfig {
        open_duration_jitter: 0.1,
        max_open_duration: Duration::from_secs(10),
        ..BreakerConfig::consecutive(1, Duration::from_secs(30))
    };
    let error = config.validate().expect_err("max below open with jitter");
    assert_eq!(error.key, "max_open_duration");
}
