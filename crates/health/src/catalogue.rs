//! The catalogue of the metric families this crate registers (see [`METRICS`]).

use mainstay_clock::catalogue::{MetricFamily, MetricKind};

const OWNER: &str = "mainstay-health";

/// Every metric family [`HealthMetrics::register`](crate::HealthMetrics::register) registers, as
/// the exposition shows it. A test compares it with a real exposition.
pub const METRICS: &[MetricFamily] = &[
    MetricFamily {
        name: "dependency_health",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["dependency"],
        help: "Health of each dependency check: 1 healthy, 0.5 degraded, 0 unhealthy",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "health_check_duration_seconds",
        kind: MetricKind::Histogram,
        unit: Some("seconds"),
        labels: &["dependency"],
        help: "Duration of each dependency check run",
        owner: OWNER,
        buckets: Some(&crate::metrics::DURATION_BUCKETS),
    },
    MetricFamily {
        name: "health_check_failures",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["dependency"],
        help: "Dependency check runs that ended unhealthy, timeouts and panics included",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "health_disk_free_ratio",
        kind: MetricKind::Gauge,
        unit: Some("ratio"),
        labels: &[],
        help: "Free space of the disk check's file system, available to unprivileged users over its size",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "health_memory_used_ratio",
        kind: MetricKind::Gauge,
        unit: Some("ratio"),
        labels: &["scope"],
        help: "Memory in use over the memory check's limit: system memory over its total, the process's resident memory over its limit",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "health_ready",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &[],
        help: "1 while the readiness probe answers 200: started, not shutting down and no critical check unhealthy",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "health_check_critical",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["dependency"],
        help: "1 when a dependency check is critical (its failure fails the readiness probe), 0 when it is not",
        owner: OWNER,
        buckets: None,
    },
];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mainstay_clock::catalogue::{SampleRule, check_exposition};
    use prometheus_client::registry::Registry;

    use super::METRICS;
    use crate::{HealthMetrics, Status};

    /// A registered check with one unhealthy run writes every family.
    #[test]
    fn the_catalogue_matches_the_exposition() {
        let mut registry = Registry::default();
        let metrics = HealthMetrics::register(&mut registry);
        metrics.declare("catalogue", true);
        metrics.record("catalogue", Status::Unhealthy, Duration::from_millis(3));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            check_exposition(METRICS, &text, SampleRule::Required),
            Ok(()),
            "{text}"
        );
    }
}
