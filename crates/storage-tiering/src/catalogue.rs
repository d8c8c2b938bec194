//! The catalogue of the metric families this crate registers (see [`METRICS`]).

use mainstay_clock::catalogue::{MetricFamily, MetricKind};

const OWNER: &str = "mainstay-storage-tiering";

/// Every metric family [`StorageMetrics::register`](crate::StorageMetrics::register) and
/// [`KeyringMetrics::register`](crate::keyring::KeyringMetrics::register) register, as the
/// exposition shows it. A test compares it with a real exposition.
pub const METRICS: &[MetricFamily] = &[
    MetricFamily {
        name: "storage_inserts",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store"],
        help: "Records acknowledged",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_insert_duration_seconds",
        kind: MetricKind::Histogram,
        unit: Some("seconds"),
        labels: &["store"],
        help: "Write latency up to acknowledgement",
        owner: OWNER,
        buckets: Some(&crate::metrics::LATENCY_BUCKETS),
    },
    MetricFamily {
        name: "storage_wal_bytes",
        kind: MetricKind::Counter,
        unit: Some("bytes"),
        labels: &["store"],
        help: "Bytes written to the WAL",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_wal_fsyncs",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store"],
        help: "WAL fsyncs",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_wal_disk_bytes",
        kind: MetricKind::Gauge,
        unit: Some("bytes"),
        labels: &["store"],
        help: "Bytes of WAL files on disk",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_wal_files",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["store"],
        help: "WAL files on disk",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_memtable_bytes",
        kind: MetricKind::Gauge,
        unit: Some("bytes"),
        labels: &["store"],
        help: "Bytes in memtables",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_upload_queue_depth",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["store"],
        help: "Segments waiting for upload",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_upload_attempts",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store", "outcome"],
        help: "Segment upload attempts by outcome",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_upload_duration_seconds",
        kind: MetricKind::Histogram,
        unit: Some("seconds"),
        labels: &["store"],
        help: "Segment upload latency",
        owner: OWNER,
        buckets: Some(&crate::metrics::LATENCY_BUCKETS),
    },
    MetricFamily {
        name: "storage_upload_bytes",
        kind: MetricKind::Counter,
        unit: Some("bytes"),
        labels: &["store"],
        help: "Bytes uploaded",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_object_store_errors",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store", "error_type"],
        help: "Object store errors by class",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_object_store_requests",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store"],
        help: "Object store calls made, failed ones included",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_cache_hits",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store"],
        help: "Block cache hits",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_cache_misses",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store"],
        help: "Block cache misses",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_compactions",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store", "outcome"],
        help: "Compactions by outcome",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_backlog_bytes",
        kind: MetricKind::Gauge,
        unit: Some("bytes"),
        labels: &["store"],
        help: "Bytes not yet uploaded",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_backlog_limit_bytes",
        kind: MetricKind::Gauge,
        unit: Some("bytes"),
        labels: &["store"],
        help: "Bytes not yet uploaded past which writes to object-store collections are refused",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_dead_lettered_segments",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store"],
        help: "Segments sent to the DLQ",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_orphan_objects_deleted",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store"],
        help: "Unreferenced objects deleted by orphan collection",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_orphan_deleted_bytes",
        kind: MetricKind::Counter,
        unit: Some("bytes"),
        labels: &["store"],
        help: "Bytes of the unreferenced objects deleted by orphan collection",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_orphan_collections",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["store", "outcome"],
        help: "Orphan collection passes by outcome",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_wal_failed",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["store"],
        help: "1 when the WAL refuses writes after a failed write or fsync",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_fenced",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["store"],
        help: "1 when another writer claimed the object-store prefix and writes are refused",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "storage_wal_damage",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["store"],
        help: "Damaged WAL stretches skipped at open and not yet acknowledged",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "keyring_operations",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["keyring", "operation", "outcome"],
        help: "Keyring seal, open, destroy and reinstate calls by outcome",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "keyring_key_lookups",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["keyring", "outcome"],
        help: "Data key lookups by outcome",
        owner: OWNER,
        buckets: None,
    },
];

#[cfg(test)]
mod tests {
    use mainstay_clock::catalogue::{SampleRule, check_exposition};
    use prometheus_client::registry::Registry;

    use super::METRICS;
    use crate::StorageMetrics;

    /// A store takes its instruments when it opens, and that creates every series it will
    /// write, so the exposition shows every family's label names before the first write.
    #[test]
    fn the_catalogue_matches_the_exposition() {
        let mut registry = Registry::default();
        let metrics = StorageMetrics::register(&mut registry);
        let _instruments = metrics.instruments("catalogue");
        let keyring = crate::keyring::KeyringMetrics::register(&mut registry);
        let _keyring_instruments = keyring.instruments("catalogue");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            check_exposition(METRICS, &text, SampleRule::Required),
            Ok(()),
            "{text}"
        );
    }
}
