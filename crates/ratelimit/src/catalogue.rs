//! The catalogue of the metric families this crate registers (see [`METRICS`]).

use mainstay_clock::catalogue::{MetricFamily, MetricKind};

const OWNER: &str = "mainstay-ratelimit";

/// Every metric family [`RateLimitMetrics::register`](crate::RateLimitMetrics::register)
/// registers, as the exposition shows it. A test compares it with a real exposition.
pub const METRICS: &[MetricFamily] = &[
    MetricFamily {
        name: "ratelimit_decisions",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["policy", "decision", "backend"],
        help: "Rate-limit decisions by the policy that decided, the decision and the backend",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "ratelimit_backend_errors",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["error_type"],
        help: "Redis calls of the rate limiter that failed, by error type",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "ratelimit_fallback_active",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &[],
        help: "1 while rate limits are decided without Redis (its circuit breaker is not closed)",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "ratelimit_fallback_switches",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["to"],
        help: "Switches between Redis and the fallback, by the side switched to",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "ratelimit_redis_duration_seconds",
        kind: MetricKind::Histogram,
        unit: Some("seconds"),
        labels: &[],
        help: "Duration of the rate limiter's Redis decisions, pool checkout included",
        owner: OWNER,
        buckets: Some(&crate::metrics::REDIS_BUCKETS),
    },
    MetricFamily {
        name: "ratelimit_local_cache_hits",
        kind: MetricKind::Counter,
        unit: None,
        labels: &[],
        help: "Requests denied by the local over-limit cache without a Redis round trip",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "ratelimit_local_keys",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &[],
        help: "Keys held by the in-process limit stores",
        owner: OWNER,
        buckets: None,
    },
];

#[cfg(test)]
mod tests {
    use mainstay_clock::catalogue::{SampleRule, check_exposition};
    use prometheus_client::registry::Registry;

    use super::METRICS;
    use crate::RateLimitMetrics;
    use crate::metrics::{DecisionLabels, ErrorLabels, SwitchLabels};

    /// Every labelled family gets one series through the label types the limiter uses, so that
    /// the exposition shows every family's label names.
    #[test]
    fn the_catalogue_matches_the_exposition() {
        let mut registry = Registry::default();
        let metrics = RateLimitMetrics::register(&mut registry);
        metrics
            .decisions
            .get_or_create(&DecisionLabels {
                policy: "catalogue".to_owned(),
                decision: "allowed",
                backend: "redis",
            })
            .inc();
        metrics
            .backend_errors
            .get_or_create(&ErrorLabels {
                error_type: "timeout",
            })
            .inc();
        metrics
            .fallback_switches
            .get_or_create(&SwitchLabels { to: "fallback" })
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            check_exposition(METRICS, &text, SampleRule::Required),
            Ok(()),
            "{text}"
        );
    }
}
