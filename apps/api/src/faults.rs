//! What the service shows when the record store stops accepting writes: the store is fenced by
//! another writer of its prefix, or its WAL (or the DLQ's journal) refuses writes after a failed
//! write or fsync.
//!
//! Each state has a critical health check (`storage-writer`, `storage-wal`, `dlq-journal`), so
//! readiness turns 503 with the reason in `/admin/health`; a 0/1 gauge (`storage_fenced`,
//! `storage_wal_failed`, `dlq_journal_failed`), set at every scrape; and one error line when the
//! first write is refused for it (not one per refused write). A fenced store answers writes with
//! 503 problem+json of type `.../fenced` and `Retry-After`, so that clients retry elsewhere.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mainstay_dlq::Dlq;
use mainstay_health::{Check, CheckOutcome, Criticality};
use mainstay_storage_tiering::{Fenced, Store, WalError};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::problem::Problem;

/// Seconds a client is told to wait before retrying a write a fenced instance refused: long
/// enough for the load balancer to act on the failed readiness probe.
pub const FENCED_RETRY_AFTER_SECONDS: u64 = 5;

/// The fault states' gauge the app owns and the log-once flags.
#[derive(Debug, Default)]
pub struct Faults {
    dlq_journal_failed: Gauge,
    fenced_logged: AtomicBool,
    wal_failed_logged: AtomicBool,
}

impl Faults {
    /// Registers `dlq_journal_failed` (0/1) in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let faults = Self::default();
        registry.register(
            "dlq_journal_failed",
            "1 when the dead-letter queue's journal refuses writes after a failed write or fsync",
            faults.dlq_journal_failed.clone(),
        );
        faults
    }

    /// Sets the fault gauges from the components' state; runs before each scrape.
    pub fn update_gauges(&self, store: &Store, dlq: &Dlq) {
        store.update_state_gauges();
        self.dlq_journal_failed
            .set(i64::from(dlq.journal_failure().is_some()));
    }

    /// The answer to a write the fenced store refused: 503 problem+json of type `.../fenced` with
    /// `Retry-After`. The first one writes an error line.
    pub fn fenced(&self, fenced: &Fenced) -> Response {
        if !self.fenced_logged.swap(true, Ordering::AcqRel) {
            tracing::error!(
                manifest_version = fenced.version,
                "this instance is fenced: another writer claimed the object-store prefix; every write is refused with 503 until it is replaced (runbook storage-fenced-writer)"
            );
        }
        Problem::typed(
            StatusCode::SERVICE_UNAVAILABLE,
            "fenced",
            "This instance no longer writes",
            format!(
                "another writer took over this instance's storage (manifest v{}); nothing was written: retry on another instance",
                fenced.version
            ),
        )
        .with_header(
            header::RETRY_AFTER,
            HeaderValue::from(FENCED_RETRY_AFTER_SECONDS),
        )
        .into_response()
    }

    /// Logs a WAL failure the first time a write meets it (the WAL fails once and stays failed);
    /// later refusals are logged at debug level.
    pub fn wal_failed(&self, error: &WalError) {
        if !self.wal_failed_logged.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %error, "the wal refuses writes; every write is refused with 503 until the instance restarts (runbook storage-wal-poisoned)");
        } else {
            tracing::debug!(error = %error, "write refused by the failed wal");
        }
    }
}

/// The `dlq-journal` check: critical, unhealthy with the reason once the dead-letter queue's
/// journal refused a write or fsync (it refuses every later push until the instance restarts).
#[derive(Debug)]
pub struct DlqJournalCheck {
    dlq: Dlq,
}

impl DlqJournalCheck {
    /// A check of `dlq`'s journal.
    #[must_use]
    pub fn new(dlq: Dlq) -> Self {
        Self { dlq }
    }
}

#[async_trait]
impl Check for DlqJournalCheck {
    fn name(&self) -> &str {
        "dlq-journal"
    }

    fn criticality(&self) -> Criticality {
        Criticality::Critical
    }

    async fn check(&self) -> CheckOutcome {
        match self.dlq.journal_failure() {
            Some(reason) => CheckOutcome::unhealthy(format!(
                "the dead-letter queue's journal refuses writes: {reason}; restart the instance to recover from what reached the disk"
            )),
            None => CheckOutcome::healthy(),
        }
    }
}
