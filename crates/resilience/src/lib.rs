//! Circuit breakers, retries with budgets, timeouts, bulkheads and fallbacks for calls to
//! dependencies, with Prometheus metrics and an injectable clock ([`mainstay_clock`]).
//!
//! ```
//! use std::time::Duration;
//! use mainstay_resilience::{
//!     BreakerConfig, BreakerError, BreakerRegistry, BreakerState, CircuitBreaker, ErrorClass,
//!     ResilienceMetrics,
//! };
//! use mainstay_clock::ManualClock;
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! let metrics = ResilienceMetrics::register(&mut registry);
//! let clock = ManualClock::new();
//! let breaker = CircuitBreaker::builder("redis", BreakerConfig::critical_dependency())
//!     .clock(clock.shared())
//!     .metrics(&metrics)
//!     .build()?;
//! let breakers = BreakerRegistry::new();
//! breakers.register(&breaker).expect("a unique name");
//!
//! // The caller decides what counts: a timeout does, a "not found" does not.
//! let classify = |error: &&str| match *error {
//!     "not found" => ErrorClass::Ignored,
//!     _ => ErrorClass::TRANSIENT,
//! };
//! for _ in 0..5 {
//!     let _ = breaker.call(&classify, || Err::<(), _>("timeout"));
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! assert!(matches!(breaker.call(&classify, || Ok::<_, &str>(())), Err(BreakerError::Rejected(_))));
//!
//! // After the open duration, one trial call is admitted; its success closes the breaker.
//! clock.advance(Duration::from_secs(30));
//! assert!(breaker.call(&classify, || Ok::<_, &str>(())).is_ok());
//! assert_eq!(breakers.snapshots()[0].state, BreakerState::Closed);
//! # Ok::<(), mainstay_resilience::ConfigError>(())
//! ```
//!
//! # What is here
//!
//! - [`CircuitBreaker`]: consecutive-failure or sliding-window failure-rate trip policies, slow
//!   calls, open durations with exponential growth and jitter, a strict half-open (N trial calls,
//!   M successes to close), manual control, transition events, snapshots. The closed path is one
//!   atomic load and one counter increment: no lock, no allocation.
//! - Presets for mainstay's rules: [`BreakerConfig::critical_dependency`],
//!   [`BreakerConfig::optional_dependency`], [`BreakerConfig::object_store_uploads`].
//! - [`KeyedBreakers`]: a breaker per host or tenant, capped (the least recently used evicted in
//!   O(1), never one a caller holds), idle ones evicted.
//! - [`BreakerRegistry`]: breakers by name for admin endpoints.
//! - [`Retry`] with full-jitter backoff, `Retry-After`, deadlines and a shared [`RetryBudget`].
//! - [`Bulkhead`], [`timeout()`], [`with_fallback`], and [`Policy`] composing them, with the
//!   fallback outermost ([`Policy::run_with_fallback`]).
//! - Time comes from a [`mainstay_clock::SharedClock`]: breakers, keyed sets and budgets read its
//!   cheap `coarse_now` (the default [`mainstay_clock::RealClock`] reads `CLOCK_MONOTONIC_COARSE`
//!   there) and slow calls its precise `now`; retry, bulkhead and timeout wait on tokio's time
//!   (`docs/decisions/0012`).
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tower` | no | `tower::Layer`s for the fallback, breaker, retry, timeout and bulkhead (module `layers`); tower's traits only, no tower feature |
//!
//! # Metrics
//!
//! See [`ResilienceMetrics`]: `circuit_breaker_state`, `circuit_breaker_transitions_total`,
//! `circuit_breaker_calls_total`, `retry_attempts_total`, `retry_budget_exhausted_total`,
//! `bulkhead_rejections_total`, `bulkhead_in_flight`, `bulkhead_waiting`,
//! `bulkhead_max_concurrent`, `bulkhead_wait_seconds`.
//!
//! # MSRV
//!
//! Rust 1.95.

mod breaker;
mod budget;
mod bulkhead;
mod catalogue;
mod classify;
mod config;
mod keyed;
#[cfg(feature = "tower")]
pub mod layers;
mod metrics;
mod policy;
mod registry;
mod retry;
mod sync;
mod timeout;
mod window;

pub use breaker::{
    BreakerBuilder, BreakerError, BreakerSnapshot, BreakerState, CircuitBreaker, Outcome,
    OwnedPermit, Permit, Rejected, TransitionEvent, TransitionReason,
};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use bulkhead::{Bulkhead, BulkheadConfig, BulkheadError, BulkheadPermit};
pub use catalogue::METRICS;
pub use classify::{AllTransient, Classify, ErrorClass};
pub use config::{BreakerConfig, ConfigError, TripPolicy};
pub use keyed::{KeyedBreakerConfig, KeyedBreakers};
pub use metrics::ResilienceMetrics;
pub use policy::{CallError, Policy, PolicyError};
pub use registry::{BreakerRegistry, DuplicateBreaker, UnknownBreaker};
pub use retry::{AttemptError, Retry, RetryBuilder, RetryConfig, RetryError};
pub use timeout::{TimedOut, WithFallback, timeout, with_fallback};

/// Nanoseconds of a duration, saturating: the unit the lock-free state stores.
#[inline]
pub(crate) fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
