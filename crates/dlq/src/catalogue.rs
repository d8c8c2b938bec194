//! The catalogue of the metric families this crate registers (see [`METRICS`]).

use mainstay_clock::catalogue::{MetricFamily, MetricKind};

const OWNER: &str = "mainstay-dlq";

/// Every metric family [`DlqMetrics::register`](crate::DlqMetrics::register) registers, as the
/// exposition shows it. A test compares it with a real exposition.
pub const METRICS: &[MetricFamily] = &[
    MetricFamily {
        name: "dlq_size",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["queue"],
        help: "Entries held, per queue",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_pushed",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["queue", "error_type"],
        help: "Entries pushed, per queue and error class",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_evictions",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["queue"],
        help: "Entries evicted because a queue or the dlq was full",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_rejected",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["queue"],
        help: "Pushes refused because a reject queue or the dlq was full",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_expired",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["queue"],
        help: "Entries removed by TTL cleanup",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_redriven",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["queue", "outcome"],
        help: "Redrive attempts, per queue and outcome",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_journal_bytes",
        kind: MetricKind::Gauge,
        unit: Some("bytes"),
        labels: &[],
        help: "Size of the journal file in bytes",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_journal_fsyncs",
        kind: MetricKind::Counter,
        unit: None,
        labels: &[],
        help: "fdatasync calls on the journal",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_journal_truncations",
        kind: MetricKind::Counter,
        unit: None,
        labels: &[],
        help: "Torn or corrupt journal tails truncated on open",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_journal_corrupt_records",
        kind: MetricKind::Counter,
        unit: None,
        labels: &[],
        help: "Records skipped on open because their checksum failed",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "dlq_oldest_entry_age_seconds",
        kind: MetricKind::Gauge,
        unit: Some("seconds"),
        labels: &["queue"],
        help: "Seconds since the oldest entry of each queue was pushed",
        owner: OWNER,
        buckets: None,
    },
];

#[cfg(test)]
mod tests {
    use mainstay_clock::catalogue::{SampleRule, check_exposition};
    use prometheus_client::registry::Registry;

    use super::METRICS;
    use crate::metrics::RedrivenLabels;
    use crate::{Dlq, DlqConfig, DlqMetrics, FailureClass, NewEntry, QueueConfig};

    /// Every family is in the exposition as soon as the DLQ is open, before any dead letter, and
    /// a configured queue has its zero series (decision 0097).
    #[tokio::test]
    async fn every_family_is_exported_from_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let metrics = DlqMetrics::register(&mut registry);
        let mut config = DlqConfig::default();
        config
            .queues
            .insert("segments".to_owned(), QueueConfig::default());
        let _dlq = Dlq::builder(dir.path())
            .config(config)
            .metrics(metrics)
            .open()
            .await
            .unwrap();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            check_exposition(METRICS, &text, SampleRule::Optional),
            Ok(()),
            "{text}"
        );
        for series in [
            "dlq_size{queue=\"segments\"} 0",
            "dlq_rejected_total{queue=\"segments\"} 0",
            "dlq_redriven_total{queue=\"segments\",outcome=\"failed\"} 0",
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
    }

    /// A real queue with one entry writes the size, push, journal and oldest-age families; the
    /// families of rarer events (eviction, rejection, expiry, redrive) get one series through
    /// the label types the queue uses.
    #[tokio::test]
    async fn the_catalogue_matches_the_exposition() {
        let dir = tempfile::tempdir().unwrap();
        let mut registry = Registry::default();
        let metrics = DlqMetrics::register(&mut registry);
        let dlq = Dlq::builder(dir.path())
            .metrics(metrics.clone())
            .open()
            .await
            .unwrap();
        dlq.push(NewEntry::inline(
            "catalogue",
            "key",
            b"payload".to_vec(),
            FailureClass::Transient,
            "failed",
        ))
        .await
        .unwrap();
        let queue = DlqMetrics::queue("catalogue");
        metrics.evictions.get_or_create(&queue).inc();
        metrics.rejected.get_or_create(&queue).inc();
        metrics.expired.get_or_create(&queue).inc();
        metrics
            .redriven
            .get_or_create(&RedrivenLabels {
                queue: "catalogue".to_owned(),
                outcome: "success",
            })
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
