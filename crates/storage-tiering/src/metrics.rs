//! Prometheus metric families of the store, registered once per registry and labelled per store.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    store: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    store: String,
    error_type: &'static str,
}

type Histograms = Family<StoreLabels, Histogram, fn() -> Histogram>;

/// The buckets of the latency histograms, in seconds: 50 µs to 10 s, with an edge at every
/// latency an alert or SLO uses (0.01, 0.1, 0.15 and 0.5 s; `docs/decisions/0097`).
pub(crate) const LATENCY_BUCKETS: [f64; 19] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15,
    0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The store's metric families. Register once per registry with [`StorageMetrics::register`] and
/// give clones to every store; each labels its series with its name (`store="main"`).
///
/// | family | labels | meaning |
/// |---|---|---|
/// | `storage_inserts_total` | `store` | records acknowledged (puts, deletes, batch members) |
/// | `storage_insert_duration_seconds` | `store` | write call latency up to acknowledgement |
/// | `storage_wal_bytes_total` | `store` | bytes written to the WAL |
/// | `storage_wal_fsyncs_total` | `store` | WAL fsyncs (one per group commit) |
/// | `storage_wal_disk_bytes` | `store` | bytes of WAL files on disk (zero-filled space included) |
/// | `storage_wal_files` | `store` | WAL files on disk |
/// | `storage_memtable_bytes` | `store` | bytes in memtables and frozen memtables |
/// | `storage_upload_queue_depth` | `store` | segments waiting for upload |
/// | `storage_upload_attempts_total` | `store`, `outcome` | `success`, `transient`, `permanent`, `rejected`, `budget_exhausted` |
/// | `storage_upload_duration_seconds` | `store` | one segment upload |
/// | `storage_upload_bytes_total` | `store` | bytes uploaded |
/// | `storage_object_store_errors_total` | `store`, `error_type` | `transient`, `permanent`, `not_found`, `already_exists` |
/// | `storage_object_store_requests_total` | `store` | object-store calls made, failed ones included (the denominator of the failure ratio) |
/// | `storage_cache_hits_total`, `storage_cache_misses_total` | `store` | block cache of `s3_only` reads |
/// | `storage_compactions_total` | `store`, `outcome` | `success`, `failure` |
/// | `storage_backlog_bytes` | `store` | bytes not yet uploaded (backpressure input) |
/// | `storage_backlog_limit_bytes` | `store` | `upload.max_backlog_bytes`: writes to object-store collections are refused past it |
/// | `storage_dead_lettered_segments_total` | `store` | segments pinned and sent to the DLQ |
/// | `storage_orphan_objects_deleted_total`, `storage_orphan_deleted_bytes_total` | `store` | objects no manifest referenced, deleted by orphan collection, and their bytes |
/// | `storage_orphan_collections_total` | `store`, `outcome` | orphan collection passes: `success`, `failure` (a listing, manifest read or delete failed), `skipped` (breaker not closed, fenced, closed) |
/// | `storage_wal_failed` | `store` | 1 once a WAL write or fsync failed and the WAL refuses writes until the store is reopened, else 0 |
/// | `storage_fenced` | `store` | 1 once another writer claimed the object-store prefix and this store refuses writes, else 0 |
/// | `storage_wal_damage` | `store` | damaged WAL stretches skipped at open (`wal_recovery = "skip_corrupt"`) and not yet acknowledged by an operator |
///
/// The two state gauges are set by [`Store::update_state_gauges`](crate::Store::update_state_gauges)
/// (call it before each scrape) and by the `storage-wal` and `storage-writer` health checks.
#[derive(Debug, Clone)]
pub struct StorageMetrics {
    inserts: Family<StoreLabels, Counter>,
    insert_duration: Histograms,
    wal_bytes: Family<StoreLabels, Counter>,
    wal_fsyncs: Family<StoreLabels, Counter>,
    wal_disk_bytes: Family<StoreLabels, Gauge>,
    wal_files: Family<StoreLabels, Gauge>,
    memtable_bytes: Family<StoreLabels, Gauge>,
    upload_queue: Family<StoreLabels, Gauge>,
    upload_attempts: Family<OutcomeLabels, Counter>,
    upload_duration: Histograms,
    upload_bytes: Family<StoreLabels, Counter>,
    object_store_errors: Family<ClassLabels, Counter>,
    object_store_requests: Family<StoreLabels, Counter>,
    cache_hits: Family<StoreLabels, Counter>,
    cache_misses: Family<StoreLabels, Counter>,
    compactions: Family<OutcomeLabels, Counter>,
    backlog_bytes: Family<StoreLabels, Gauge>,
    backlog_limit_bytes: Family<StoreLabels, Gauge>,
    dead_lettered: Family<StoreLabels, Counter>,
    orphan_objects: Family<StoreLabels, Counter>,
    orphan_bytes: Family<StoreLabels, Counter>,
    orphan_passes: Family<OutcomeLabels, Counter>,
    wal_failed: Family<StoreLabels, Gauge>,
    fenced: Family<StoreLabels, Gauge>,
    wal_damage: Family<StoreLabels, Gauge>,
}

impl StorageMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "storage_inserts",
            "Records acknowledged",
            metrics.inserts.clone(),
        );
        registry.register_with_unit(
            "storage_insert_duration",
            "Write latency up to acknowledgement",
            Unit::Seconds,
            metrics.insert_duration.clone(),
        );
        registry.register_with_unit(
            "storage_wal",
            "Bytes written to the WAL",
            Unit::Bytes,
            metrics.wal_bytes.clone(),
        );
        registry.register(
            "storage_wal_fsyncs",
            "WAL fsyncs",
            metrics.wal_fsyncs.clone(),
        );
        registry.register_with_unit(
            "storage_wal_disk",
            "Bytes of WAL files on disk",
            Unit::Bytes,
            metrics.wal_disk_bytes.clone(),
        );
        registry.register(
            "storage_wal_files",
            "WAL files on disk",
            metrics.wal_files.clone(),
        );
        registry.register_with_unit(
            "storage_memtable",
            "Bytes in memtables",
            Unit::Bytes,
            metrics.memtable_bytes.clone(),
        );
        registry.register(
            "storage_upload_queue_depth",
            "Segments waiting for upload",
            metrics.upload_queue.clone(),
        );
        registry.register(
            "storage_upload_attempts",
            "Segment upload attempts by outcome",
            metrics.upload_attempts.clone(),
        );
        registry.register_with_unit(
            "storage_upload_duration",
            "Segment upload latency",
            Unit::Seconds,
            metrics.upload_duration.clone(),
        );
        registry.register_with_unit(
            "storage_upload",
            "Bytes uploaded",
            Unit::Bytes,
            metrics.upload_bytes.clone(),
        );
        registry.register(
            "storage_object_store_errors",
            "Object store errors by class",
            metrics.object_store_errors.clone(),
        );
        registry.register(
            "storage_object_store_requests",
            "Object store calls made, failed ones included",
            metrics.object_store_requests.clone(),
        );
        registry.register(
            "storage_cache_hits",
            "Block cache hits",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "storage_cache_misses",
            "Block cache misses",
            metrics.cache_misses.clone(),
        );
        registry.register(
            "storage_compactions",
            "Compactions by outcome",
            metrics.compactions.clone(),
        );
        registry.register_with_unit(
            "storage_backlog",
            "Bytes not yet uploaded",
            Unit::Bytes,
            metrics.backlog_bytes.clone(),
        );
        registry.register_with_unit(
            "storage_backlog_limit",
            "Bytes not yet uploaded past which writes to object-store collections are refused",
            Unit::Bytes,
            metrics.backlog_limit_bytes.clone(),
        );
        registry.register(
            "storage_dead_lettered_segments",
            "Segments sent to the DLQ",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "storage_orphan_objects_deleted",
            "Unreferenced objects deleted by orphan collection",
            metrics.orphan_objects.clone(),
        );
        registry.register_with_unit(
            "storage_orphan_deleted",
            "Bytes of the unreferenced objects deleted by orphan collection",
            Unit::Bytes,
            metrics.orphan_bytes.clone(),
        );
        registry.register(
            "storage_orphan_collections",
            "Orphan collection passes by outcome",
            metrics.orphan_passes.clone(),
        );
        registry.register(
            "storage_wal_failed",
            "1 when the WAL refuses writes after a failed write or fsync",
            metrics.wal_failed.clone(),
        );
        registry.register(
            "storage_fenced",
            "1 when another writer claimed the object-store prefix and writes are refused",
            metrics.fenced.clone(),
        );
        registry.register(
            "storage_wal_damage",
            "Damaged WAL stretches skipped at open and not yet acknowledged",
            metrics.wal_damage.clone(),
        );
        metrics
    }

    /// Families registered nowhere (the default of a store built without metrics).
    #[must_use]
    pub fn unregistered() -> Self {
        Self {
            inserts: Family::default(),
            insert_duration: Family::new_with_constructor(latency_histogram),
            wal_bytes: Family::default(),
            wal_fsyncs: Family::default(),
            wal_disk_bytes: Family::default(),
            wal_files: Family::default(),
            memtable_bytes: Family::default(),
            upload_queue: Family::default(),
            upload_attempts: Family::default(),
            upload_duration: Family::new_with_constructor(latency_histogram),
            upload_bytes: Family::default(),
            object_store_errors: Family::default(),
            object_store_requests: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            compactions: Family::default(),
            backlog_bytes: Family::default(),
            backlog_limit_bytes: Family::default(),
            dead_lettered: Family::default(),
            orphan_objects: Family::default(),
            orphan_bytes: Family::default(),
            orphan_passes: Family::default(),
            wal_failed: Family::default(),
            fenced: Family::default(),
            wal_damage: Family::default(),
        }
    }

    pub(crate) fn instruments(&self, store: &str) -> Instruments {
        let labels = StoreLabels {
            store: store.to_owned(),
        };
        let outcome = |family: &Family<OutcomeLabels, Counter>, outcome| {
            family
                .get_or_create(&OutcomeLabels {
                    store: store.to_owned(),
                    outcome,
                })
                .clone()
        };
        let class = |class| {
            self.object_store_errors
                .get_or_create(&ClassLabels {
                    store: store.to_owned(),
                    error_type: class,
                })
                .clone()
        };
        Instruments {
            inserts: self.inserts.get_or_create(&labels).clone(),
            insert_duration: self.insert_duration.get_or_create(&labels).clone(),
            wal_bytes: self.wal_bytes.get_or_create(&labels).clone(),
            wal_fsyncs: self.wal_fsyncs.get_or_create(&labels).clone(),
            wal_disk_bytes: self.wal_disk_bytes.get_or_create(&labels).clone(),
            wal_files: self.wal_files.get_or_create(&labels).clone(),
            memtable_bytes: self.memtable_bytes.get_or_create(&labels).clone(),
            upload_queue: self.upload_queue.get_or_create(&labels).clone(),
            upload_success: outcome(&self.upload_attempts, "success"),
            upload_transient: outcome(&self.upload_attempts, "transient"),
            upload_permanent: outcome(&self.upload_attempts, "permanent"),
            upload_rejected: outcome(&self.upload_attempts, "rejected"),
            upload_budget_exhausted: outcome(&self.upload_attempts, "budget_exhausted"),
            upload_duration: self.upload_duration.get_or_create(&labels).clone(),
            upload_bytes: self.upload_bytes.get_or_create(&labels).clone(),
            errors_transient: class("transient"),
            errors_permanent: class("permanent"),
            errors_not_found: class("not_found"),
            errors_already_exists: class("already_exists"),
            object_store_requests: self.object_store_requests.get_or_create(&labels).clone(),
            cache_hits: self.cache_hits.get_or_create(&labels).clone(),
            cache_misses: self.cache_misses.get_or_create(&labels).clone(),
            compactions_success: outcome(&self.compactions, "success"),
            compactions_failure: outcome(&self.compactions, "failure"),
            backlog_bytes: self.backlog_bytes.get_or_create(&labels).clone(),
            backlog_limit_bytes: self.backlog_limit_bytes.get_or_create(&labels).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&labels).clone(),
            orphan_objects: self.orphan_objects.get_or_create(&labels).clone(),
            orphan_bytes: self.orphan_bytes.get_or_create(&labels).clone(),
            orphan_passes_success: outcome(&self.orphan_passes, "success"),
            orphan_passes_failure: outcome(&self.orphan_passes, "failure"),
            orphan_passes_skipped: outcome(&self.orphan_passes, "skipped"),
            wal_failed: self.wal_failed.get_or_create(&labels).clone(),
            fenced: self.fenced.get_or_create(&labels).clone(),
            wal_damage: self.wal_damage.get_or_create(&labels).clone(),
        }
    }
}

/// One store's resolved series.
#[derive(Debug, Clone)]
pub(crate) struct Instruments {
    pub(crate) inserts: Counter,
    pub(crate) insert_duration: Histogram,
    pub(crate) wal_bytes: Counter,
    pub(crate) wal_fsyncs: Counter,
    pub(crate) wal_disk_bytes: Gauge,
    pub(crate) wal_files: Gauge,
    pub(crate) memtable_bytes: Gauge,
    pub(crate) upload_queue: Gauge,
    pub(crate) upload_success: Counter,
    pub(crate) upload_transient: Counter,
    pub(crate) upload_permanent: Counter,
    pub(crate) upload_rejected: Counter,
    pub(crate) upload_budget_exhausted: Counter,
    pub(crate) upload_duration: Histogram,
    pub(crate) upload_bytes: Counter,
    pub(crate) errors_transient: Counter,
    pub(crate) errors_permanent: Counter,
    pub(crate) errors_not_found: Counter,
    pub(crate) errors_already_exists: Counter,
    pub(crate) object_store_requests: Counter,
    pub(crate) cache_hits: Counter,
    pub(crate) cache_misses: Counter,
    pub(crate) compactions_success: Counter,
    pub(crate) compactions_failure: Counter,
    pub(crate) backlog_bytes: Gauge,
    pub(crate) backlog_limit_bytes: Gauge,
    pub(crate) dead_lettered: Counter,
    pub(crate) orphan_objects: Counter,
    pub(crate) orphan_bytes: Counter,
    pub(crate) orphan_passes_success: Counter,
    pub(crate) orphan_passes_failure: Counter,
    pub(crate) orphan_passes_skipped: Counter,
    pub(crate) wal_failed: Gauge,
    pub(crate) fenced: Gauge,
    pub(crate) wal_damage: Gauge,
}
