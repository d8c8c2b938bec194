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
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label set of every health metric: the check's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DependencyLabels {
    dependency: String,
}

/// The health metric families, registered once per Prometheus registry.
///
/// | family | type | labels | meaning |
/// |---|---|---|---|
/// | `dependency_health` | gauge | `dependency` | 1 healthy, 0.5 degraded, 0 unhealthy |
/// | `health_check_duration_seconds` | histogram | `dependency` | latency of each check run |
/// | `health_check_failures_total` | counter | `dependency` | runs that ended `unhealthy` (timeouts and panics included) |
///
/// Cloning is cheap; every clone updates the same series.
#[derive(Debug, Clone)]
pub struct HealthMetrics {
    health: Family<DependencyLabels, Gauge<f64, AtomicU64>>,
    duration: Family<DependencyLabels, Histogram, fn() -> Histogram>,
    failures: Family<DependencyLabels, Counter>,
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
        };
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
        metrics
    }

    /// Gives a registered check its zero `health_check_failures_total` series, so that the family
    /// is exported, and `increase()` sees the first failure, from the check's registration on.
    pub(crate) fn declare(&self, dependency: &str) {
        let _ = self.failures.get_or_create(&DependencyLabels {
            dependency: dependency.to_owned(),
        });
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
