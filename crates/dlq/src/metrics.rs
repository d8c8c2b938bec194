//! Prometheus metrics of the DLQ, registered once per registry and shared by every instance.

use std::fmt;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct QueueLabels {
    pub(crate) queue: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct PushedLabels {
    pub(crate) queue: String,
    pub(crate) error_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RedrivenLabels {
    pub(crate) queue: String,
    pub(crate) outcome: &'static str,
}

/// A metric whose descriptor is written even when it has no series: prometheus-client leaves out
/// a [`Family`] without series altogether, so a queue family would appear only with the first
/// dead letter (decision 0097).
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// Something that can report the age of its oldest entry per queue at scrape time.
pub(crate) trait OldestAges: Send + Sync {
    fn oldest_ages(&self) -> Vec<(String, f64)>;
}

type Sources = Arc<Mutex<Vec<Weak<dyn OldestAges>>>>;

/// The DLQ's metric families.
///
/// | family | labels |
/// |---|---|
/// | `dlq_size` | `queue` |
/// | `dlq_pushed_total` | `queue`, `error_type` (the entry's error class) |
/// | `dlq_evictions_total` | `queue` |
/// | `dlq_rejected_total` | `queue` |
/// | `dlq_expired_total` | `queue` |
/// | `dlq_redriven_total` | `queue`, `outcome` (`succeeded`, `failed`) |
/// | `dlq_journal_bytes` | |
/// | `dlq_journal_fsyncs_total` | |
/// | `dlq_journal_truncations_total` | |
/// | `dlq_journal_corrupt_records_total` | |
/// | `dlq_oldest_entry_age_seconds` | `queue` (computed at scrape time) |
///
/// Every family is exported from registration on; a configured or recovered queue has zero
/// series in the families labelled by queue (and both redrive outcomes) from the open on.
#[derive(Clone)]
pub struct DlqMetrics {
    pub(crate) size: Family<QueueLabels, Gauge>,
    pub(crate) pushed: Family<PushedLabels, Counter>,
    pub(crate) evictions: Family<QueueLabels, Counter>,
    pub(crate) rejected: Family<QueueLabels, Counter>,
    pub(crate) expired: Family<QueueLabels, Counter>,
    pub(crate) redriven: Family<RedrivenLabels, Counter>,
    pub(crate) journal_bytes: Gauge,
    pub(crate) fsyncs: Counter,
    pub(crate) truncations: Counter,
    pub(crate) corrupt_records: Counter,
    sources: Sources,
}

impl fmt::Debug for DlqMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DlqMetrics").finish_non_exhaustive()
    }
}

impl DlqMetrics {
    /// Registers the families in `registry`; call once per registry and hand clones to every
    /// DLQ.
    #[must_use]
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::unregistered();
        registry.register(
            "dlq_size",
            "Entries held, per queue",
            Described(metrics.size.clone()),
        );
        registry.register(
            "dlq_pushed",
            "Entries pushed, per queue and error class",
            Described(metrics.pushed.clone()),
        );
        registry.register(
            "dlq_evictions",
            "Entries evicted because a queue or the dlq was full",
            Described(metrics.evictions.clone()),
        );
        registry.register(
            "dlq_rejected",
            "Pushes refused because a reject queue or the dlq was full",
            Described(metrics.rejected.clone()),
        );
        registry.register(
            "dlq_expired",
            "Entries removed by TTL cleanup",
            Described(metrics.expired.clone()),
        );
        registry.register(
            "dlq_redriven",
            "Redrive attempts, per queue and outcome",
            Described(metrics.redriven.clone()),
        );
        registry.register_with_unit(
            "dlq_journal",
            "Size of the journal file in bytes",
            Unit::Bytes,
            metrics.journal_bytes.clone(),
        );
        registry.register(
            "dlq_journal_fsyncs",
            "fdatasync calls on the journal",
            metrics.fsyncs.clone(),
        );
        registry.register(
            "dlq_journal_truncations",
            "Torn or corrupt journal tails truncated on open",
            metrics.truncations.clone(),
        );
        registry.register(
            "dlq_journal_corrupt_records",
            "Records skipped on open because their checksum failed",
            metrics.corrupt_records.clone(),
        );
        registry.register_collector(Box::new(OldestAgeCollector {
            sources: metrics.sources.clone(),
        }));
        metrics
    }

    /// Families that are not registered anywhere (for a DLQ without metrics).
    #[must_use]
    pub fn unregistered() -> Self {
        Self {
            size: Family::default(),
            pushed: Family::default(),
            evictions: Family::default(),
            rejected: Family::default(),
            expired: Family::default(),
            redriven: Family::default(),
            journal_bytes: Gauge::default(),
            fsyncs: Counter::default(),
            truncations: Counter::default(),
            corrupt_records: Counter::default(),
            sources: Arc::default(),
        }
    }

    pub(crate) fn attach(&self, source: Weak<dyn OldestAges>) {
        let mut sources = self.sources.lock();
        sources.retain(|s| s.strong_count() > 0);
        sources.push(source);
    }

    /// Gives a known queue (configured, or recovered from the journal) its zero series in every
    /// family labelled by queue alone, and its redrive outcomes.
    pub(crate) fn declare_queue(&self, queue: &str) {
        let labels = Self::queue(queue);
        let _ = self.size.get_or_create(&labels);
        let _ = self.evictions.get_or_create(&labels);
        let _ = self.rejected.get_or_create(&labels);
        let _ = self.expired.get_or_create(&labels);
        for outcome in ["succeeded", "failed"] {
            let _ = self.redriven.get_or_create(&RedrivenLabels {
                queue: queue.to_owned(),
                outcome,
            });
        }
    }

    pub(crate) fn queue(queue: &str) -> QueueLabels {
        QueueLabels {
            queue: queue.to_owned(),
        }
    }
}

struct OldestAgeCollector {
    sources: Sources,
}

impl fmt::Debug for OldestAgeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OldestAgeCollector").finish_non_exhaustive()
    }
}

impl Collector for OldestAgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sources: Vec<_> = self
            .sources
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        let mut metric = encoder.encode_descriptor(
            "dlq_oldest_entry_age",
            "Seconds since the oldest entry of each queue was pushed",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for source in sources {
            for (queue, age) in source.oldest_ages() {
                let labels = QueueLabels { queue };
                ConstGauge::new(age).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
