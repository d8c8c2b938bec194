//! loom models of the breaker's state word: every interleaving (up to `LOOM_MAX_PREEMPTIONS`,
//! default 2) of the production code, which runs on loom's atomics when built with `--cfg loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p mainstay-resilience --release --test loom
//! ```
//!
//! (`cargo xtask ci` runs this step with its own target directory.) Without `--cfg loom` this
//! file is empty.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use mainstay_clock::ManualClock;
use mainstay_resilience::{BreakerConfig, BreakerState, CircuitBreaker};

/// Runs `model` under loom with at most two preemptions unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise.
fn check(model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.check(model);
}

fn breaker(config: BreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("loom", config)
        .clock(clock.shared())
        .build()
        .expect("a valid configuration");
    (breaker, clock)
}

fn fail(breaker: &CircuitBreaker) {
    if let Ok(permit) = breaker.try_acquire() {
        permit.failure();
    }
}

/// An open breaker whose open duration has passed: the next callers race into half-open.
fn due_for_trials(config: BreakerConfig) -> CircuitBreaker {
    let (breaker, clock) = breaker(config);
    fail(&breaker);
    assert_eq!(breaker.state(), BreakerState::Open);
    clock.advance(Duration::from_secs(10));
    breaker
}

#[test]
fn half_open_admits_at_most_its_trial_calls_and_gets_every_slot_back() {
    check(|| {
        let breaker = due_for_trials(BreakerConfig {
            half_open_max_calls: 1,
            half_open_successes: 2,
            ..BreakerConfig::consecutive(1, Duration::from_secs(10))
        });
        let in_trial = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let (breaker, in_trial) = (breaker.clone(), in_trial.clone());
                thread::spawn(move || {
                    if let Ok(permit) = breaker.try_acquire() {
                        let at_once = in_trial.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(at_once <= 1, "{at_once} trials at once, 1 allowed");
                        in_trial.fetch_sub(1, Ordering::SeqCst);
                        // Dropped without an outcome: the slot comes back, nothing is counted.
                        drop(permit);
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().expect("no panic");
        }
        let snapshot = breaker.snapshot();
        assert_eq!(snapshot.state, BreakerState::HalfOpen);
        assert_eq!(snapshot.half_open_in_flight, 0, "every slot came back");
        assert_eq!(snapshot.half_open_successes, 0);
    });
}

#[test]
fn racing_trial_outcomes_leave_a_settled_state() {
    check(|| {
        let breaker = due_for_trials(BreakerConfig {
            half_open_max_calls: 2,
            half_open_successes: 2,
            ..BreakerConfig::consecutive(1, Duration::from_secs(10))
        });
        let success = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                if let Ok(permit) = breaker.try_acquire() {
                    permit.success();
                }
            })
        };
        let failure = {
            let breaker = breaker.clone();
            thread::spawn(move || fail(&breaker))
        };
        success.join().expect("no panic");
        failure.join().expect("no panic");
        let snapshot = breaker.snapshot();
        match snapshot.state {
            // The failure was a trial: it reopened the breaker, whatever the success did.
            BreakerState::Open => {}
            // The failure was rejected or came first... a half-open breaker is left only with
            // its slots free.
            BreakerState::HalfOpen => assert_eq!(snapshot.half_open_in_flight, 0),
            state => panic!("one success of two cannot leave it {state}"),
        }
    });
}

#[test]
fn a_failure_racing_a_reset_never_counts_after_it() {
    check(|| {
        let (breaker, _clock) = breaker(BreakerConfig::consecutive(2, Duration::from_secs(10)));
        fail(&breaker);
        let permit = breaker.try_acquire().expect("closed");
        let resetter = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.reset())
        };
        permit.failure();
        resetter.join().expect("no panic");
        let snapshot = breaker.snapshot();
        // Before the reset it tripped the breaker and the reset closed it; after it, it is stale.
        assert_eq!(snapshot.state, BreakerState::Closed);
        assert_eq!(snapshot.consecutive_failures, 0);
    });
}

#[test]
fn a_window_failure_racing_a_reset_never_counts_after_it() {
    check(|| {
        let (breaker, _clock) = breaker(BreakerConfig {
            minimum_calls: 2,
            window_buckets: 1,
            ..BreakerConfig::failure_rate(0.5, Duration::from_secs(60), Duration::from_secs(10))
        });
        let permit = breaker.try_acquire().expect("closed");
        let resetter = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.reset())
        };
        permit.failure();
        resetter.join().expect("no panic");
        let snapshot = breaker.snapshot();
        assert_eq!(snapshot.state, BreakerState::Closed);
        assert_eq!(
            (snapshot.window_calls, snapshot.window_failures),
            (0, 0),
            "the failure was admitted before the reset"
        );
    });
}

#[test]
fn a_trip_racing_a_success_is_decided_by_one_word() {
    check(|| {
        let (breaker, _clock) = breaker(BreakerConfig::consecutive(2, Duration::from_secs(10)));
        fail(&breaker);
        let failing = breaker.try_acquire().expect("closed");
        let succeeding = breaker.try_acquire_owned().expect("closed");
        let success = thread::spawn(move || succeeding.success());
        failing.failure();
        success.join().expect("no panic");
        let snapshot = breaker.snapshot();
        match snapshot.state {
            // The failure came second in the run: 2 in a row.
            BreakerState::Open => {}
            // The success came second: the run is over, or first: the run is 1.
            BreakerState::Closed => assert!(snapshot.consecutive_failures <= 1),
            state => panic!("a closed breaker cannot become {state} here"),
        }
    });
}

#[test]
fn a_reconfiguration_racing_a_call_never_mixes_rule_and_thresholds() {
    check(|| {
        // Under either configuration one failure trips nothing; the old rule with the new
        // threshold, or the new rule with the old threshold, would trip at once.
        let old = BreakerConfig {
            consecutive_failures: 1,
            minimum_calls: 1_000,
            ..BreakerConfig::failure_rate(0.5, Duration::from_secs(60), Duration::from_secs(10))
        };
        let new = BreakerConfig {
            window_buckets: old.window_buckets,
            ..BreakerConfig::consecutive(1_000, Duration::from_secs(10))
        };
        let (breaker, _clock) = breaker(BreakerConfig {
            window_buckets: 1,
            ..old
        });
        let reconfigurer = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                breaker
                    .reconfigure(BreakerConfig {
                        window_buckets: 1,
                        ..new
                    })
                    .expect("valid")
            })
        };
        fail(&breaker);
        reconfigurer.join().expect("no panic");
        assert_eq!(breaker.state(), BreakerState::Closed);
    });
}

#[test]
fn a_reconfiguration_racing_a_trial_never_strands_a_slot() {
    check(|| {
        let config = BreakerConfig::consecutive(1, Duration::from_secs(10));
        let breaker = due_for_trials(config.clone());
        let trial = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                if let Ok(permit) = breaker.try_acquire() {
                    permit.success();
                }
            })
        };
        breaker.reconfigure(config).expect("valid");
        trial.join().expect("no panic");
        match breaker.state() {
            BreakerState::Closed => {}
            BreakerState::HalfOpen | BreakerState::Open => {
                assert_eq!(breaker.snapshot().half_open_in_flight, 0);
                // Not stranded: a new trial is admitted (the open duration has passed).
                let permit = breaker.try_acquire().expect("a trial slot is free");
                permit.success();
                assert_eq!(breaker.state(), BreakerState::Closed);
            }
            state => panic!("unexpected {state}"),
        }
    });
}
