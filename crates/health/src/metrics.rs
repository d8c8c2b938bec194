//! Prometheus metric families for health checks.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::check::Status;

/// Buckets of `health_check_duration_seconds`: 1 ms to 10 s, around the 2 s default timeout.
pub(crate) const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label of `health_memory_used_ratio`: `system` or `process`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

/// The label set of every health metric: the check's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DependencyLabels {
    dependency: String,
}

/// The health metric families, registered once per Prometheus registry.
///
/// | family | type | labels | meaning |
/// |---|---|---|---|
/// | `dependency_health` | gauge | `dependency` | 1 healthy, 0.5 degraded, 0 unhealthy, NaN before the check's first run |
/// | `health_check_duration_seconds` | histogram | `dependency` | latency of each check run |
/// | `health_check_failures_total` | counter | `dependency` | runs that ended `unhealthy` (timeouts and panics included) |
/// | `health_disk_free_ratio` | gauge | none | free space of the built-in `disk` check's file system (available to unprivileged users / size), NaN until it first reads it |
/// | `health_memory_used_ratio` | gauge | `scope` (`system`, `process`) | the built-in `memory` check's figures: system memory in use / total, and the process's resident memory / its limit; NaN until it first reads them |
/// | `health_ready` | gauge | none | 1 while the readiness probe answers 200 (started, not shutting down, no critical check unhealthy at the last run), else 0 |
/// | `health_check_critical` | gauge | `dependency` | 1 when the check is critical (its failure makes the readiness probe fail), 0 when it is not; set at registration |
///
/// Cloning is cheap; every clone updates the same series.
#[derive(Debug, Clone)]
pub struct HealthMetrics {
    health: Family<DependencyLabels, Gauge<f64, AtomicU64>>,
    duration: Family<DependencyLabels, Histogram, fn() -> Histogram>,
    failures: Family<DependencyLabels, Counter>,
    ready: Gauge,
    disk_free_ratio: Gauge<f64, AtomicU64>,
    memory_used_ratio: Family<ScopeLabels, Gauge<f64, AtomicU64>>,
    critical: Family<DependencyLabels, Gauge>,
}

impl HealthMetrics {
    /// Registers the families in `registry` and returns their handles. Call it once per registry
    /// and hand clones to every [`HealthRegistry`](crate::HealthRegistry).
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            health: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            failures: Family::default(),
            ready: Gauge::default(),
            disk_free_ratio: Gauge::default(),
            memory_used_ratio: Family::default(),
            critical: Family::default(),
        };
        // Not measured yet: NaN matches no alert threshold.
        let _ = metrics.disk_free_ratio.set(f64::NAN);
        for scope in ["system", "process"] {
            let _ = metrics
                .memory_used_ratio
                .get_or_create(&ScopeLabels { scope })
                .set(f64::NAN);
        }
        registry.register(
            "dependency_health",
            "Health of each dependency check: 1 healthy, 0.5 degraded, 0 unhealthy",
            metrics.health.clone(),
        );
        registry.register_with_unit(
            "health_check_duration",
            "Duration of each dependency check run",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "health_check_failures",
            "Dependency check runs that ended unhealthy, timeouts and panics included",
            metrics.failures.clone(),
        );
        registry.register_with_unit(
            "health_disk_free",
            "Free space of the disk check's file system, available to unprivileged users over its size",
            Unit::Other("ratio".to_owned()),
            metrics.disk_free_ratio.clone(),
        );
        registry.register_with_unit(
            "health_memory_used",
            "Memory in use over the memory check's limit: system memory over its total, the process's resident memory over its limit",
            Unit::Other("ratio".to_owned()),
            metrics.memory_used_ratio.clone(),
        );
        registry.register(
            "health_ready",
            "1 while the readiness probe answers 200: started, not shutting down and no critical check unhealthy",
            metrics.ready.clone(),
        );
        registry.register(
            "health_check_critical",
            "1 when a dependency check is critical (its failure fails the readiness probe), 0 when it is not",
            metrics.critical.clone(),
        );
        metrics
    }

    pub(crate) fn disk_free_ratio(&self) -> Gauge<f64, AtomicU64> {
        self.disk_free_ratio.clone()
    }

    /// The `system` and `process` series of `health_memory_used_ratio`.
    pub(crate) fn memory_used_ratio(&self) -> [Gauge<f64, AtomicU64>; 2] {
        ["system", "process"].map(|scope| {
            self.memory_used_ratio
                .get_or_create(&ScopeLabels { scope })
                .clone()
        })
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Gives a registered check its series from its registration on, so that every family is
    /// exported and `increase()` sees the first failure: `dependency_health` NaN (not run yet:
    /// neither healthy nor unhealthy, so no alert threshold matches it), an empty duration
    /// histogram, zero failures, and `health_check_critical` (the "critical dependency down"
    /// alert joins it with `dependency_health`).
    pub(crate) fn declare(&self, dependency: &str, critical: bool) {
        let labels = DependencyLabels {
            dependency: dependency.to_owned(),
        };
        self.critical
            .get_or_create(&labels)
            .set(i64::from(critical));
        let _ = self.health.get_or_create(&labels).set(f64::NAN);
        let _ = self.duration.get_or_create(&labels);
        let _ = self.failures.get_or_create(&labels);
    }

    pub(crate) fn record(&self, dependency: &str, status: Status, latency: Duration) {
        let labels = DependencyLabels {
            dependency: dependency.to_owned(),
        };
        self.health.get_or_create(&labels).set(status.gauge_value());
        self.duration
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
        if status == Status::Unhealthy {
            self.failures.get_or_create(&labels).inc();
        }
    }
}
