//! Prometheus metric families, registered once per registry and shared by every instance.
//!
//! | family | labels |
//! |---|---|
//! | `circuit_breaker_state` (gauge: 0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open) | `breaker` |
//! | `circuit_breaker_state_active` (gauge: 1 for the breaker's state, 0 for the others) | `breaker`, `state` |
//! | `circuit_breaker_transitions_total` | `breaker`, `from`, `to` |
//! | `circuit_breaker_calls_total` | `breaker`, `outcome` (`success`, `failure`, `rejected`, `slow`) |
//! | `retry_attempts_total` | `operation`, `outcome` (`success`, `transient`, `failure`, `ignored`, `timeout`) |
//! | `retry_budget_exhausted_total` | `operation` |
//! | `bulkhead_rejections_total` | `bulkhead` |
//! | `bulkhead_in_flight` (gauge: calls holding a slot) | `bulkhead` |
//! | `bulkhead_waiting` (gauge: callers queued for a slot) | `bulkhead` |
//! | `bulkhead_max_concurrent` (gauge: the slots) | `bulkhead` |
//! | `bulkhead_wait_seconds` (histogram: time from asking to getting a slot or giving up) | `bulkhead` |
//!
//! Every family is exported from registration on (`docs/decisions/0097`): a breaker gives its
//! state, state-active, call and usual transition series their zero values when it is built, and
//! the retry and bulkhead families write their `# HELP` and `# TYPE` lines even before the first
//! retry or bulkhead exists.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{Atomic, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A metric whose descriptor is written even when it has no series: prometheus-client leaves out
/// a [`Family`] without series altogether, so a family would appear only with its first event.
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// The handles to this crate's metric families. Cheap to clone; hand a clone to every breaker,
/// retry and bulkhead so that each family exists once per registry.
#[derive(Debug, Clone)]
pub struct ResilienceMetrics {
    pub(crate) breaker_state: Family<BreakerLabels, Gauge>,
    pub(crate) breaker_state_active: Family<StateLabels, Gauge>,
    pub(crate) breaker_transitions: Family<TransitionLabels, Counter>,
    pub(crate) breaker_calls: Family<CallLabels, Counter<u64, CallCount>>,
    pub(crate) retry_attempts: Family<AttemptLabels, Counter>,
    pub(crate) retry_budget_exhausted: Family<OperationLabels, Counter>,
    pub(crate) bulkhead_rejections: Family<BulkheadLabels, Counter>,
    pub(crate) bulkhead_in_flight: Family<BulkheadLabels, Gauge>,
    pub(crate) bulkhead_waiting: Family<BulkheadLabels, Gauge>,
    pub(crate) bulkhead_max_concurrent: Family<BulkheadLabels, Gauge>,
    pub(crate) bulkhead_wait_seconds: Family<BulkheadLabels, Histogram, fn() -> Histogram>,
}

/// Stripes of a [`CallCount`]: more than the threads that usually contend for one breaker.
const STRIPES: usize = 8;

/// One stripe, alone on its cache line (128 bytes: adjacent-line prefetching pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// The value of one `circuit_breaker_calls_total` series: a plain count, plus stripes that
/// threads add to without sharing a cache line, summed when the value is read
/// (`docs/decisions/0094`). Rejections count in the stripes: an open breaker rejects every call
/// of every thread at once, and one shared counter would make the rejections queue for its
/// cache line. Outcomes of calls made count in the plain one (a call that reached a dependency
/// has paid far more than one shared add).
#[derive(Debug, Default)]
pub(crate) struct CallCount {
    plain: AtomicU64,
    stripes: [Stripe; STRIPES],
}

thread_local! {
    /// This thread's stripe, given out in turn on first use.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The stripe of the calling thread.
#[inline]
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|stripe| {
        let mut index = stripe.get();
        if index == usize::MAX {
            index = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            stripe.set(index);
        }
        index
    })
}

impl CallCount {
    /// Adds one in the calling thread's stripe.
    #[inline]
    pub(crate) fn inc_striped(&self) {
        self.stripes[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Atomic<u64> for CallCount {
    fn inc(&self) -> u64 {
        self.plain.fetch_add(1, Ordering::Relaxed)
    }

    fn inc_by(&self, v: u64) -> u64 {
        self.plain.fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.stripes
            .iter()
            .fold(self.plain.load(Ordering::Relaxed), |sum, stripe| {
                sum.wrapping_add(stripe.0.load(Ordering::Relaxed))
            })
    }
}

/// The buckets of `bulkhead_wait_seconds`, in seconds: from an immediate slot to the longest waits
/// worth queueing for.
pub(crate) const WAIT_BUCKETS: [f64; 12] = [
    0.0, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

pub(crate) fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}

impl ResilienceMetrics {
    /// Registers the families into `registry` and returns their handles. Call it once per registry.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open",
            Described(metrics.breaker_state.clone()),
        );
        registry.register(
            "circuit_breaker_state_active",
            "1 for the state a circuit breaker is in, 0 for the other states",
            Described(metrics.breaker_state_active.clone()),
        );
        registry.register(
            "circuit_breaker_transitions",
            "Circuit breaker state transitions",
            Described(metrics.breaker_transitions.clone()),
        );
        registry.register(
            "circuit_breaker_calls",
            "Calls through a circuit breaker by outcome",
            Described(metrics.breaker_calls.clone()),
        );
        registry.register(
            "retry_attempts",
            "Attempts made by a retrying operation by outcome",
            Described(metrics.retry_attempts.clone()),
        );
        registry.register(
            "retry_budget_exhausted",
            "Retries refused because the retry budget was exhausted",
            Described(metrics.retry_budget_exhausted.clone()),
        );
        registry.register(
            "bulkhead_rejections",
            "Calls rejected by a full bulkhead",
            Described(metrics.bulkhead_rejections.clone()),
        );
        registry.register(
            "bulkhead_in_flight",
            "Calls holding a bulkhead slot",
            Described(metrics.bulkhead_in_flight.clone()),
        );
        registry.register(
            "bulkhead_waiting",
            "Callers waiting for a bulkhead slot",
            Described(metrics.bulkhead_waiting.clone()),
        );
        registry.register(
            "bulkhead_max_concurrent",
            "Slots of a bulkhead: calls allowed at once",
            Described(metrics.bulkhead_max_concurrent.clone()),
        );
        registry.register_with_unit(
            "bulkhead_wait",
            "Time a caller waited for a bulkhead slot, until it got one or gave up",
            Unit::Seconds,
            Described(metrics.bulkhead_wait_seconds.clone()),
        );
        metrics
    }

    /// Handles that are not registered anywhere: instances count into them and nothing exports
    /// them. This is what instances use when no metrics are given.
    #[must_use]
    pub fn unregistered() -> Self {
        Self {
            breaker_state: Family::default(),
            breaker_state_active: Family::default(),
            breaker_transitions: Family::default(),
            breaker_calls: Family::default(),
            retry_attempts: Family::default(),
            retry_budget_exhausted: Family::default(),
            bulkhead_rejections: Family::default(),
            bulkhead_in_flight: Family::default(),
            bulkhead_waiting: Family::default(),
            bulkhead_max_concurrent: Family::default(),
            bulkhead_wait_seconds: Family::new_with_constructor(wait_histogram),
        }
    }
}

/// Labels of `circuit_breaker_state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BreakerLabels {
    pub(crate) breaker: String,
}

/// Labels of `circuit_breaker_state_active`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub(crate) breaker: String,
    /// [`BreakerState::as_str`](crate::BreakerState::as_str).
    pub(crate) state: &'static str,
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
