//! Shared helpers: breakers on a manual clock, scripted state-machine checks, metric text.

use std::time::{Duration, SystemTime};

use mainstay_clock::{Clock, ManualClock, Sleep};
use mainstay_resilience::{
    BreakerConfig, BreakerError, BreakerState, CircuitBreaker, ErrorClass, ResilienceMetrics,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// Every error is a failure of the dependency.
pub(crate) fn failure(_: &&str) -> ErrorClass {
    ErrorClass::TRANSIENT
}

/// A breaker named `name` on a fresh manual clock.
pub(crate) fn breaker(name: &str, config: BreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(name, config)
        .clock(clock.shared())
        .build()
        .expect("a valid configuration");
    (breaker, clock)
}

/// A clock whose two monotonic readings move separately, so that a test sees which one a rule
/// reads: `precise` for `now`, `coarse` for `coarse_now`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SplitClock {
    pub(crate) precise: ManualClock,
    pub(crate) coarse: ManualClock,
}

impl Clock for SplitClock {
    fn now(&self) -> Duration {
        self.precise.now()
    }

    fn coarse_now(&self) -> Duration {
        self.coarse.now()
    }

    fn system_time(&self) -> SystemTime {
        self.precise.system_time()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        self.precise.sleep(duration)
    }
}

/// A breaker reporting into a fresh registry.
pub(crate) fn breaker_with_metrics(
    name: &str,
    config: BreakerConfig,
) -> (CircuitBreaker, ManualClock, Registry) {
    let mut registry = Registry::default();
    let metrics = ResilienceMetrics::register(&mut registry);
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(name, config)
        .clock(clock.shared())
        .metrics(metrics.clone())
        .build()
        .expect("a valid configuration");
    (breaker, clock, registry)
}

/// One step of a scripted run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// A call that must be admitted and succeeds.
    Succeed,
    /// A call that must be admitted and fails.
    Fail,
    /// A call that must be rejected.
    Rejected,
    /// The clock moves on by this many seconds.
    Wait(u64),
}

/// Runs `script` against a breaker built from `config`: each step, then the state it must leave.
pub(crate) fn check(config: BreakerConfig, script: &[(Step, BreakerState)]) {
    let (breaker, clock) = breaker("scripted", config);
    for (index, (step, expected)) in script.iter().enumerate() {
        match step {
            Step::Succeed => {
                let result = breaker.call(&failure, || Ok::<_, &str>(()));
                assert!(result.is_ok(), "step {index} ({step:?}): {result:?}");
            }
            Step::Fail => {
                let result = breaker.call(&failure, || Err::<(), _>("boom"));
                assert!(
                    matches!(result, Err(BreakerError::Inner("boom"))),
                    "step {index} ({step:?}): {result:?}"
                );
            }
            Step::Rejected => {
                let result = breaker.call(&failure, || Ok::<_, &str>(()));
                assert!(
                    matches!(result, Err(BreakerError::Rejected(_))),
                    "step {index} ({step:?}): {result:?}"
                );
            }
            Step::Wait(seconds) => clock.advance(Duration::from_secs(*seconds)),
        }
        assert_eq!(
            breaker.state(),
            *expected,
            "state after step {index} ({step:?})"
        );
    }
}

/// The registry's OpenMetrics text.
pub(crate) fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("encoding into a string cannot fail");
    text
}

/// The value of the sample whose line starts with `series` (name and labels), if present.
pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| {
            line.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(" "))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Shorthand for `BreakerState`.
pub(crate) use BreakerState::{Closed, HalfOpen, Open};
