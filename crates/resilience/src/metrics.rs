//! Prometheus metric families, registered once per registry and shared by every instance.
//!
//! | family | labels |
//! |---|---|
//! | `circuit_breaker_state` (gauge: 0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open) | `breaker` |
//! | `circuit_breaker_transitions_total` | `breaker`, `from`, `to` |
//! | `circuit_breaker_calls_total` | `breaker`, `outcome` (`success`, `failure`, `rejected`, `slow`) |
//! | `retry_attempts_total` | `operation`, `outcome` (`success`, `transient`, `failure`, `ignored`, `timeout`) |
//! | `retry_budget_exhausted_total` | `operation` |
//! | `bulkhead_rejections_total` | `bulkhead` |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The handles to this crate's metric families. Cheap to clone; hand a clone to every breaker,
/// retry and bulkhead so that each family exists once per registry.
#[derive(Debug, Clone)]
pub struct ResilienceMetrics {
    pub(crate) breaker_state: Family<BreakerLabels, Gauge>,
    pub(crate) breaker_transitions: Family<TransitionLabels, Counter>,
    pub(crate) breaker_calls: Family<CallLabels, Counter>,
    pub(crate) retry_attempts: Family<AttemptLabels, Counter>,
    pub(crate) retry_budget_exhausted: Family<OperationLabels, Counter>,
    pub(crate) bulkhead_rejections: Family<BulkheadLabels, Counter>,
}

impl ResilienceMetrics {
    /// Registers the families into `registry` and returns their handles. Call it once per registry.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open",
            metrics.breaker_state.clone(),
        );
        registry.register(
            "circuit_breaker_transitions",
            "Circuit breaker state transitions",
            metrics.breaker_transitions.clone(),
        );
        registry.register(
            "circuit_breaker_calls",
            "Calls through a circuit breaker by outcome",
            metrics.breaker_calls.clone(),
        );
        registry.register(
            "retry_attempts",
            "Attempts made by a retrying operation by outcome",
            metrics.retry_attempts.clone(),
        );
        registry.register(
            "retry_budget_exhausted",
            "Retries refused because the retry budget was exhausted",
            metrics.retry_budget_exhausted.clone(),
        );
        registry.register(
            "bulkhead_rejections",
            "Calls rejected by a full bulkhead",
            metrics.bulkhead_rejections.clone(),
        );
        metrics
    }

    /// Handles that are not registered anywhere: instances count into them and nothing exports
    /// them. This is what instances use when no metrics are given.
    #[must_use]
    pub fn unregistered() -> Self {
        Self {
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            breaker_calls: Family::default(),
            retry_attempts: Family::default(),
            retry_budget_exhausted: Family::default(),
            bulkhead_rejections: Family::default(),
        }
    }
}

/// Labels of `circuit_breaker_state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BreakerLabels {
    pub(crate) breaker: String,
}

/// Labels of `circuit_breaker_transitions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransitionLabels {
    pub(crate) breaker: String,
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
}

/// Labels of `circuit_breaker_calls_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    pub(crate) breaker: String,
    /// `success`, `failure`, `rejected` or `slow`.
    pub(crate) outcome: &'static str,
}

/// Labels of `retry_attempts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AttemptLabels {
    pub(crate) operation: String,
    /// `success`, `transient`, `failure`, `ignored` or `timeout`.
    pub(crate) outcome: &'static str,
}

/// Labels of `retry_budget_exhausted_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationLabels {
    pub(crate) operation: String,
}

/// Labels of `bulkhead_rejections_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BulkheadLabels {
    pub(crate) bulkhead: String,
}
