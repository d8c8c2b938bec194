//! Circuit breaker behaviour: classification, errors, slow calls, open durations, manual control,
//! events, snapshots, permits, and which clock reading each rule reads.

use std::sync::Arc;
use std::time::Duration;

use mainstay_resilience::{
    BreakerConfig, BreakerError, BreakerState, CircuitBreaker, ErrorClass, Outcome, Rejected,
    TransitionReason,
};

use crate::support::{Closed, HalfOpen, Open, SplitClock, breaker, failure};

/// A 404 is the caller's problem, a timeout is the dependency's.
fn http(status: &u16) -> ErrorClass {
    match status {
        404 | 400 | 422 => ErrorClass::Ignored,
        _ => ErrorClass::TRANSIENT,
    }
}

#[test]
fn the_classifier_decides_what_trips_it() {
    let (breaker, _clock) = breaker(
        "http",
        BreakerConfig::consecutive(2, Duration::from_secs(30)),
    );
    for _ in 0..10 {
        let result = breaker.call(&http, || Err::<(), u16>(404));
        assert!(matches!(result, Err(BreakerError::Inner(404))));
    }
    assert_eq!(breaker.state(), Closed);
    let _ = breaker.call(&http, || Err::<(), u16>(504));
    let _ = breaker.call(&http, || Err::<(), u16>(504));
    assert_eq!(breaker.state(), Open);
}

#[test]
fn a_rejection_says_when_to_come_back() {
    let (breaker, clock) = breaker(
        "api",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    );
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    clock.advance(Duration::from_secs(10));
    let rejected = breaker
        .call(&failure, || Ok::<_, &str>(()))
        .expect_err("open");
    let Some(BreakerError::Rejected(Rejected { state, retry_after })) = Some(rejected) else {
        unreachable!("checked above")
    };
    assert_eq!((state, retry_after), (Open, Some(Duration::from_secs(20))));
    let message = Rejected {
        state: Open,
        retry_after: None,
    }
    .to_string();
    assert_eq!(
        message,
        "circuit breaker is open: call rejected without reaching the dependency, retry later"
    );
}

#[test]
fn slow_successes_count_as_failures() {
    let config = BreakerConfig {
        slow_call_threshold: Some(Duration::from_secs(2)),
        ..BreakerConfig::consecutive(2, Duration::from_secs(30))
    };
    let (breaker, clock) = breaker("slow", config);
    let fast = || Ok::<_, &str>(());
    let slow = || {
        clock.advance(Duration::from_secs(2));
        Ok::<_, &str>(())
    };
    assert!(breaker.call(&failure, fast).is_ok());
    assert!(breaker.call(&failure, slow).is_ok());
    assert_eq!(breaker.state(), Closed);
    assert!(breaker.call(&failure, slow).is_ok());
    assert_eq!(breaker.state(), Open);
    let snapshot = breaker.snapshot();
    assert_eq!(
        (snapshot.successes, snapshot.slow, snapshot.failures),
        (1, 2, 0)
    );
}

#[test]
fn the_open_duration_grows_while_the_dependency_keeps_failing() {
    let config = BreakerConfig {
        open_duration_multiplier: 2.0,
        max_open_duration: Duration::from_secs(50),
        ..BreakerConfig::consecutive(1, Duration::from_secs(10))
    };
    let (breaker, clock) = breaker("growing", config);
    let fail = || Err::<(), _>("down");
    let _ = breaker.call(&failure, fail);
    // Open for 10 s, then 20 s, then 40 s, then capped at 50 s.
    for open_for in [10, 20, 40, 50, 50] {
        assert_eq!(
            breaker.snapshot().time_until_half_open_ms,
            Some(open_for * 1_000)
        );
        clock.advance(Duration::from_secs(open_for));
        let _ = breaker.call(&failure, fail);
        assert_eq!(breaker.state(), Open);
    }
    // Closing forgets the growth.
    clock.advance(Duration::from_secs(50));
    assert!(breaker.call(&failure, || Ok::<_, &str>(())).is_ok());
    let _ = breaker.call(&failure, fail);
    assert_eq!(breaker.snapshot().time_until_half_open_ms, Some(10_000));
}

#[test]
fn jitter_spreads_the_open_duration_within_its_bounds() {
    let config = BreakerConfig {
        open_duration_jitter: 0.2,
        ..BreakerConfig::consecutive(1, Duration::from_secs(100))
    };
    let (breaker, _clock) = breaker("jittered", config);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let _ = breaker.call(&failure, || Err::<(), _>("down"));
        let left = breaker.snapshot().time_until_half_open_ms.expect("open");
        assert!((80_000..=120_000).contains(&left), "{left} ms");
        seen.insert(left);
        breaker.reset();
    }
    assert!(seen.len() > 1, "jitter must vary the duration");
}

#[test]
fn manual_control_overrides_the_rules() {
    let (breaker, clock) = breaker(
        "manual",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    );
    breaker.force_open();
    assert_eq!(breaker.state(), BreakerState::ForcedOpen);
    clock.advance(Duration::from_secs(3_600));
    let rejected = breaker.call(&failure, || Ok::<_, &str>(()));
    assert!(matches!(
        rejected,
        Err(BreakerError::Rejected(Rejected {
            state: BreakerState::ForcedOpen,
            retry_after: None
        }))
    ));

    breaker.disable();
    assert_eq!(breaker.state(), BreakerState::Disabled);
    for _ in 0..10 {
        assert!(matches!(
            breaker.call(&failure, || Err::<(), _>("down")),
            Err(BreakerError::Inner(_))
        ));
    }
    assert_eq!(breaker.state(), BreakerState::Disabled);

    breaker.reset();
    assert_eq!(breaker.state(), Closed);
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    assert_eq!(breaker.state(), Open);
    breaker.reset();
    assert_eq!(breaker.state(), Closed);
    assert!(breaker.call(&failure, || Ok::<_, &str>(())).is_ok());
}

#[test]
fn reset_forgets_the_failure_run() {
    let (breaker, _clock) = breaker(
        "forget",
        BreakerConfig::consecutive(3, Duration::from_secs(30)),
    );
    for _ in 0..2 {
        let _ = breaker.call(&failure, || Err::<(), _>("down"));
    }
    breaker.reset();
    for _ in 0..2 {
        let _ = breaker.call(&failure, || Err::<(), _>("down"));
    }
    assert_eq!(breaker.state(), Closed);
}

#[test]
fn subscribers_see_every_transition_with_its_reason() {
    let (breaker, clock) = breaker(
        "events",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    );
    let mut events = breaker.subscribe();
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    clock.advance(Duration::from_secs(30));
    let _ = breaker.call(&failure, || Ok::<_, &str>(()));
    breaker.force_open();
    breaker.disable();
    breaker.reset();
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        assert_eq!(&*event.breaker, "events");
        seen.push((event.from, event.to, event.reason, event.open_for));
    }
    use BreakerState::{Disabled, ForcedOpen};
    assert_eq!(
        seen,
        [
            (
                Closed,
                Open,
                TransitionReason::ConsecutiveFailures,
                Some(Duration::from_secs(30))
            ),
            (Open, HalfOpen, TransitionReason::OpenDurationElapsed, None),
            (HalfOpen, Closed, TransitionReason::TrialsSucceeded, None),
            (Closed, ForcedOpen, TransitionReason::ForcedOpen, None),
            (ForcedOpen, Disabled, TransitionReason::Disabled, None),
            (Disabled, Closed, TransitionReason::Reset, None),
        ]
    );
}

#[test]
fn a_permit_dropped_without_an_outcome_gives_its_trial_slot_back() {
    let (breaker, clock) = breaker(
        "dropped",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    );
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    clock.advance(Duration::from_secs(30));
    let trial = breaker.try_acquire().expect("the trial call");
    assert!(breaker.try_acquire().is_err(), "only one trial at a time");
    drop(trial);
    assert_eq!(breaker.state(), HalfOpen);
    let trial = breaker.try_acquire().expect("the slot came back");
    trial.record(Outcome::Success);
    assert_eq!(breaker.state(), Closed);
}

#[test]
fn half_open_admits_n_trials_and_closes_after_m_successes() {
    let config = BreakerConfig {
        half_open_max_calls: 2,
        half_open_successes: 3,
        ..BreakerConfig::consecutive(1, Duration::from_secs(30))
    };
    let (breaker, clock) = breaker("trials", config);
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    clock.advance(Duration::from_secs(30));
    let first = breaker.try_acquire().expect("trial 1");
    let second = breaker.try_acquire().expect("trial 2");
    assert!(
        breaker.try_acquire().is_err(),
        "a third concurrent trial is rejected"
    );
    first.success();
    let third = breaker.try_acquire().expect("a slot freed by a success");
    second.success();
    assert_eq!(breaker.state(), HalfOpen);
    let snapshot = breaker.snapshot();
    assert_eq!(
        (snapshot.half_open_in_flight, snapshot.half_open_successes),
        (1, 2)
    );
    third.success();
    assert_eq!(breaker.state(), Closed);
}

#[test]
fn a_result_from_before_a_transition_does_not_count_after_it() {
    let (breaker, clock) = breaker(
        "stale",
        BreakerConfig::consecutive(2, Duration::from_secs(30)),
    );
    let stale = breaker.try_acquire().expect("closed");
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    assert_eq!(breaker.state(), Open);
    clock.advance(Duration::from_secs(30));
    assert!(breaker.call(&failure, || Ok::<_, &str>(())).is_ok());
    assert_eq!(breaker.state(), Closed);
    // The call admitted before the breaker opened fails now: it must not start a new run.
    stale.failure();
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    assert_eq!(
        breaker.state(),
        Closed,
        "one failure of the new closed period, not two"
    );
    assert_eq!(breaker.snapshot().consecutive_failures, 1);
}

#[tokio::test]
async fn async_calls_count_like_sync_ones() {
    let (breaker, _clock) = breaker(
        "async",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    );
    let result = breaker.run(&failure, async { Err::<(), _>("down") }).await;
    assert!(matches!(result, Err(BreakerError::Inner("down"))));
    let result = breaker.run(&failure, async { Ok::<_, &str>(1) }).await;
    assert!(matches!(result, Err(BreakerError::Rejected(_))));
}

#[test]
fn the_snapshot_serialises_for_the_admin_api() {
    let (breaker, clock) = breaker(
        "redis",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    );
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    clock.advance(Duration::from_secs(12));
    let json = serde_json::to_value(breaker.snapshot()).expect("serialisable");
    assert_eq!(json["name"], "redis");
    assert_eq!(json["state"], "open");
    assert_eq!(json["failures"], 1);
    assert_eq!(json["time_until_half_open_ms"], 18_000);
}

#[test]
fn a_panicking_trial_call_gives_its_slot_back() {
    let (breaker, clock) = breaker(
        "panicky",
        BreakerConfig::consecutive(1, Duration::from_secs(30)),
    );
    let _ = breaker.call(&failure, || Err::<(), _>("down"));
    clock.advance(Duration::from_secs(30));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        breaker.call(&failure, || -> Result<(), &str> {
            panic!("a bug in the caller's operation")
        })
    }));
    assert!(caught.is_err());
    assert_eq!(breaker.state(), HalfOpen);
    assert!(breaker.try_acquire().is_ok(), "the trial slot came back");
}

/// Slow calls are timed on the clock's precise reading: a slow call is slow however little the
/// coarse reading moved.
#[test]
fn slow_calls_are_timed_on_the_precise_reading() {
    let clock = SplitClock::default();
    let config = BreakerConfig {
        slow_call_threshold: Some(Duration::from_millis(5)),
        ..BreakerConfig::consecutive(1, Duration::from_secs(30))
    };
    let breaker = CircuitBreaker::builder("precise", config)
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid");
    let coarse_only = || {
        clock.coarse.advance(Duration::from_millis(5));
        Ok::<_, &str>(())
    };
    assert!(breaker.call(&failure, coarse_only).is_ok());
    assert_eq!(breaker.state(), Closed);
    let precise = || {
        clock.precise.advance(Duration::from_millis(5));
        Ok::<_, &str>(())
    };
    assert!(breaker.call(&failure, precise).is_ok());
    assert_eq!(breaker.state(), Open);
}

/// The open duration and the failure-rate window run on the cheap coarse reading, the one read on
/// every call.
#[test]
fn open_durations_and_windows_run_on_the_coarse_reading() {
    let clock = SplitClock::default();
    let breaker = CircuitBreaker::builder(
        "coarse",
        BreakerConfig::failure_rate(0.5, Duration::from_secs(60), Duration::from_secs(30)),
    )
    .clock(Arc::new(clock.clone()))
    .build()
    .expect("valid");
    // Failures spread over two minutes of precise time stay in one coarse window and trip it.
    for _ in 0..5 {
        let _ = breaker.call(&failure, || Err::<(), _>("timeout"));
        clock.precise.advance(Duration::from_secs(30));
    }
    assert_eq!(breaker.state(), Open);
    clock.precise.advance(Duration::from_secs(30));
    assert!(breaker.call(&failure, || Ok::<_, &str>(())).is_err());
    clock.coarse.advance(Duration::from_secs(30));
    assert!(breaker.call(&failure, || Ok::<_, &str>(())).is_ok());
}
