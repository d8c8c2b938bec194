#![doc = include_str!("../README.md")]

mod breaker;
mod budget;
mod bulkhead;
mod catalogue;
mod classify;
mod config;
mod keyed;
#[cfg(feature = "tower")]
pub mod layer;
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

// Third-party crates in the public API, re-exported so that a caller names their items at the
// version this crate uses without a dependency of its own (README, "Third-party types in the
// public API").
pub use prometheus_client;
pub use serde;
pub use tokio;
#[cfg(feature = "tower")]
pub use tower;

/// Nanoseconds of a duration, saturating: the unit the lock-free state stores.
#[inline]
pub(crate) fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
