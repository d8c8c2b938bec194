//! The catalogue of the metric families this crate registers (see [`METRICS`]).

use mainstay_clock::catalogue::{MetricFamily, MetricKind};

const OWNER: &str = "mainstay-resilience";

/// Every metric family [`ResilienceMetrics::register`](crate::ResilienceMetrics::register)
/// registers, as the exposition shows it. A test compares it with a real exposition.
pub const METRICS: &[MetricFamily] = &[
    MetricFamily {
        name: "circuit_breaker_state",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["breaker"],
        help: "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 disabled, 4 forced open",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "circuit_breaker_state_active",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["breaker", "state"],
        help: "1 for the state a circuit breaker is in, 0 for the other states",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "circuit_breaker_transitions",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["breaker", "from", "to"],
        help: "Circuit breaker state transitions",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "circuit_breaker_calls",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["breaker", "outcome"],
        help: "Calls through a circuit breaker by outcome",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "retry_attempts",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["operation", "outcome"],
        help: "Attempts made by a retrying operation by outcome",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "retry_budget_exhausted",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["operation"],
        help: "Retries refused because the retry budget was exhausted",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "bulkhead_rejections",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["bulkhead"],
        help: "Calls rejected by a full bulkhead",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "bulkhead_in_flight",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["bulkhead"],
        help: "Calls holding a bulkhead slot",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "bulkhead_waiting",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["bulkhead"],
        help: "Callers waiting for a bulkhead slot",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "bulkhead_max_concurrent",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["bulkhead"],
        help: "Slots of a bulkhead: calls allowed at once",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "bulkhead_wait_seconds",
        kind: MetricKind::Histogram,
        unit: Some("seconds"),
        labels: &["bulkhead"],
        help: "Time a caller waited for a bulkhead slot, until it got one or gave up",
        owner: OWNER,
        buckets: Some(&crate::metrics::WAIT_BUCKETS),
    },
];

#[cfg(test)]
mod tests {
    use mainstay_clock::catalogue::{SampleRule, check_exposition};
    use prometheus_client::registry::Registry;

    use super::METRICS;
    use crate::ResilienceMetrics;
    use crate::metrics::{
        AttemptLabels, BreakerLabels, BulkheadLabels, CallLabels, OperationLabels, StateLabels,
        TransitionLabels,
    };

    /// Every family is in the exposition from registration on, before any breaker, retry or
    /// bulkhead exists (docs/decisions/0097).
    #[test]
    fn every_family_is_exported_from_registration() {
        let mut registry = Registry::default();
        let _metrics = ResilienceMetrics::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            check_exposition(METRICS, &text, SampleRule::Optional),
            Ok(()),
            "{text}"
        );
    }

    /// Every family gets one series through the label types the crate's instances use, so that
    /// the exposition shows every family's label names.
    #[test]
    fn the_catalogue_matches_the_exposition() {
        let mut registry = Registry::default();
        let metrics = ResilienceMetrics::register(&mut registry);
        let breaker = || "catalogue".to_owned();
        metrics
            .breaker_state
            .get_or_create(&BreakerLabels { breaker: breaker() })
            .set(1);
        metrics
            .breaker_state_active
            .get_or_create(&StateLabels {
                breaker: breaker(),
                state: "open",
            })
            .set(1);
        metrics
            .breaker_transitions
            .get_or_create(&TransitionLabels {
                breaker: breaker(),
                from: "closed",
                to: "open",
            })
            .inc();
        metrics
            .breaker_calls
            .get_or_create(&CallLabels {
                breaker: breaker(),
                outcome: "success",
            })
            .inc();
        metrics
            .retry_attempts
            .get_or_create(&AttemptLabels {
                operation: breaker(),
                outcome: "success",
            })
            .inc();
        metrics
            .retry_budget_exhausted
            .get_or_create(&OperationLabels {
                operation: breaker(),
            })
            .inc();
        let bulkhead = BulkheadLabels {
            bulkhead: breaker(),
        };
        metrics.bulkhead_rejections.get_or_create(&bulkhead).inc();
        metrics.bulkhead_in_flight.get_or_create(&bulkhead).set(1);
        metrics.bulkhead_waiting.get_or_create(&bulkhead).set(1);
        metrics
            .bulkhead_max_concurrent
            .get_or_create(&bulkhead)
            .set(4);
        metrics
            .bulkhead_wait_seconds
            .get_or_create(&bulkhead)
            .observe(0.001);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            check_exposition(METRICS, &text, SampleRule::Required),
            Ok(()),
            "{text}"
        );
    }
}
