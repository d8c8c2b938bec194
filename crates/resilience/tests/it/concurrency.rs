//! Many threads racing through one breaker: exactly N trials, exactly one transition, a state
//! that never tears. Real threads (not loom): bounded rounds keep the run short.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use mainstay_resilience::{BreakerConfig, BreakerState, Outcome};

use crate::support::{Closed, HalfOpen, Open, breaker, breaker_with_metrics, exposition, sample};

const RACERS: usize = 64;

/// Opens `breaker`, lets the open duration pass, then lets `RACERS` threads ask for a permit at
/// once and keep it; returns how many got one.
fn race_into_half_open(trials: u32) -> usize {
    let config = BreakerConfig {
        half_open_max_calls: trials,
        ..BreakerConfig::consecutive(1, Duration::from_secs(30))
    };
    let (breaker, clock) = breaker("race", config);
    let _ = breaker.try_acquire().map(|permit| permit.failure());
    assert_eq!(breaker.state(), Open);
    clock.advance(Duration::from_secs(30));
    let start = Arc::new(Barrier::new(RACERS));
    let acquired = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|_| {
            let (breaker, start, acquired) = (breaker.clone(), start.clone(), acquired.clone());
            thread::spawn(move || {
                start.wait();
                let permit = breaker.try_acquire_owned();
                // Hold the permit until every racer has tried, so none is given back early.
                acquired.wait();
                permit.is_ok()
            })
        })
        .collect();
    let admitted = handles
        .into_iter()
        .map(|handle| handle.join().expect("no panic"))
        .filter(|ok| *ok)
        .count();
    assert_eq!(breaker.state(), HalfOpen);
    admitted
}

#[test]
fn racing_callers_into_half_open_admit_exactly_n() {
    for trials in [1, 3] {
        for round in 0..20 {
            assert_eq!(
                race_into_half_open(trials),
                trials as usize,
                "trials {trials}, round {round}"
            );
        }
    }
}

#[test]
fn concurrent_failures_open_it_exactly_once() {
    let (breaker, _clock, registry) = breaker_with_metrics(
        "storm",
        BreakerConfig::consecutive(5, Duration::from_secs(30)),
    );
    let mut events = breaker.subscribe();
    for round in 0..20 {
        breaker.reset();
        let start = Arc::new(Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (breaker, start) = (breaker.clone(), start.clone());
                thread::spawn(move || {
                    let permits: Vec<_> = (0..8)
                        .filter_map(|_| breaker.try_acquire_owned().ok())
                        .collect();
                    start.wait();
                    for permit in permits {
                        permit.failure();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("no panic");
        }
        assert_eq!(breaker.state(), Open, "round {round}");
    }
    let text = exposition(&registry);
    let opened = sample(
        &text,
        r#"circuit_breaker_transitions_total{breaker="storm",from="closed",to="open"}"#,
    );
    assert_eq!(
        opened,
        Some(20.0),
        "one closed -> open transition per round"
    );
    let mut opens = 0;
    while let Ok(event) = events.try_recv() {
        if event.to == Open {
            opens += 1;
        }
    }
    assert_eq!(opens, 20);
}

#[test]
fn mixed_outcomes_never_tear_the_state() {
    let config = BreakerConfig {
        half_open_max_calls: 4,
        half_open_successes: 3,
        ..BreakerConfig::consecutive(3, Duration::from_secs(1))
    };
    let (breaker, clock, registry) = breaker_with_metrics("mixed", config.clone());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let made = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let (breaker, stop, made) = (breaker.clone(), stop.clone(), made.clone());
            thread::spawn(move || {
                let mut calls = 0_u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && calls < 200_000 {
                    calls += 1;
                    made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if let Ok(permit) = breaker.try_acquire() {
                        // Worker-dependent failure pattern: some runs of failures, many successes.
                        let fails = (calls + worker) % 5 < 2;
                        permit.record(if fails {
                            Outcome::Failure
                        } else {
                            Outcome::Success
                        });
                    }
                }
            })
        })
        .collect();
    // Time moves while the workers call; on a loaded machine the workers may start late, so the
    // clock keeps moving until they have made enough calls (all of them, at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut ticks = 0;
    while ticks < 2_000
        || (made.load(std::sync::atomic::Ordering::Relaxed) < 100_000
            && std::time::Instant::now() < deadline)
    {
        clock.advance(Duration::from_millis(5));
        thread::yield_now();
        ticks += 1;
        // New rules while the workers call must not tear the state either.
        if ticks % 100 == 0 {
            let (threshold, trials) = if ticks % 200 == 0 { (3, 4) } else { (2, 2) };
            breaker
                .reconfigure(BreakerConfig {
                    half_open_max_calls: trials,
                    ..config.clone()
                })
                .expect("valid");
            breaker
                .reconfigure(BreakerConfig {
                    consecutive_failures: threshold,
                    half_open_max_calls: trials,
                    ..config.clone()
                })
                .expect("valid");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("no panic");
    }
    // Every state is entered as often as it is left, give or take the final one: no transition was
    // counted twice or lost.
    let text = exposition(&registry);
    let states = [Closed, Open, HalfOpen];
    let mut total = 0.0;
    for state in states {
        let count = |from: BreakerState, to: BreakerState| {
            sample(
                &text,
                &format!(
                    r#"circuit_breaker_transitions_total{{breaker="mixed",from="{}",to="{}"}}"#,
                    from.as_str(),
                    to.as_str()
                ),
            )
            .unwrap_or(0.0)
        };
        let entered: f64 = states.iter().map(|other| count(*other, state)).sum();
        let left: f64 = states.iter().map(|other| count(state, *other)).sum();
        total += entered;
        let expected = match (state == Closed, breaker.state() == state) {
            (true, true) | (false, false) => 0.0,
            (true, false) => -1.0,
            (false, true) => 1.0,
        };
        assert_eq!(
            entered - left,
            expected,
            "{state}: entered {entered}, left {left}"
        );
    }
    assert!(total > 0.0, "the workload must make the breaker move");
    let snapshot = breaker.snapshot();
    assert!(
        snapshot.half_open_in_flight == 0 && snapshot.half_open_successes < 3,
        "{snapshot:?}"
    );
}
