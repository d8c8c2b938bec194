//! The backup status the service exports (issue 18, point 2; decision 0115): every
//! `backup.status_interval` it reads, from the backup root `backup.url`, the record the newest
//! `mainstay-api backup verify --record` left there and the newest complete backup, and sets:
//!
//! - `backup_last_success_timestamp_seconds`: when the newest verification that found its backup
//!   good finished;
//! - `backup_last_verification_timestamp_seconds`: when the newest verification finished, whatever
//!   it found;
//! - `backup_verification_outcome{outcome}`: 1 for that verification's outcome (`ok`, `damaged`,
//!   `too_old`), or `missing` (no verification recorded in the root) or `unreadable` (the root or
//!   the record could not be read), 0 for the others;
//! - `backup_newest_timestamp_seconds`: the consistent point of the newest complete backup, so an
//!   RPO at risk shows between two verifications.
//!
//! Every family is exported from start-up (decision 0097): until a read tells (and always without
//! `backup.url`) the timestamps are NaN, which compares false with every threshold, where 0 would
//! read as a backup 56 years old, and every outcome is 0.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// The outcomes `backup_verification_outcome` reports, one series each.
pub const OUTCOMES: [&str; 5] = ["ok", "damaged", "too_old", "missing", "unreadable"];

/// A Unix time in seconds; NaN until known.
type Timestamp = Gauge<f64, std::sync::atomic::AtomicU64>;

fn unknown() -> Timestamp {
    let gauge = Timestamp::default();
    gauge.set(f64::NAN);
    gauge
}

/// The label of `backup_verification_outcome`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// One of [`OUTCOMES`].
    pub outcome: &'static str,
}

/// What one read of the backup root found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// The newest verification's outcome (`ok`, `damaged`, `too_old`), `missing` or
    /// `unreadable`.
    pub outcome: &'static str,
    /// When the newest verification finished (Unix seconds), if one is recorded.
    pub last_verification_at: Option<f64>,
    /// When the newest good verification finished (Unix seconds), if one is recorded.
    pub last_success_at: Option<f64>,
    /// The consistent point of the newest complete backup (Unix seconds), if there is one.
    pub newest_backup_at: Option<f64>,
}

/// The `backup_*` families.
#[derive(Debug, Clone)]
pub struct BackupStatusMetrics {
    last_success: Timestamp,
    last_verification: Timestamp,
    outcome: Family<OutcomeLabel, Gauge>,
    newest_backup: Timestamp,
}

impl BackupStatusMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            last_success: unknown(),
            last_verification: unknown(),
            outcome: Family::default(),
            newest_backup: unknown(),
        };
        for outcome in OUTCOMES {
            metrics
                .outcome
                .get_or_create(&OutcomeLabel { outcome })
                .set(0);
        }
        registry.register_with_unit(
            "backup_last_success_timestamp",
            "Unix time when the newest verification that restored a backup of `backup.url` and found it good finished",
            Unit::Seconds,
            metrics.last_success.clone(),
        );
        registry.register_with_unit(
            "backup_last_verification_timestamp",
            "Unix time when the newest verification of a backup of `backup.url` finished, whatever it found",
            Unit::Seconds,
            metrics.last_verification.clone(),
        );
        registry.register(
            "backup_verification_outcome",
            "1 for the outcome of the newest backup verification (ok, damaged, too_old), or missing (none recorded) or unreadable (the root or the record could not be read); 0 for the others",
            metrics.outcome.clone(),
        );
        registry.register_with_unit(
            "backup_newest_timestamp",
            "Unix time of the consistent point of the newest complete backup under `backup.url`",
            Unit::Seconds,
            metrics.newest_backup.clone(),
        );
        metrics
    }

    /// Sets the series from one read. What the read could not tell keeps its last value (an
    /// unreadable root does not erase the last success).
    pub fn apply(&self, observation: &Observation) {
        for outcome in OUTCOMES {
            self.outcome
                .get_or_create(&OutcomeLabel { outcome })
                .set(i64::from(outcome == observation.outcome));
        }
        let set = |family: &Timestamp, value: Option<f64>| {
            if let Some(value) = value {
                family.set(value);
            }
        };
        set(&self.last_verification, observation.last_verification_at);
        set(&self.last_success, observation.last_success_at);
        set(&self.newest_backup, observation.newest_backup_at);
    }
}

/// Reads the backup root at `url` once: the outcome is `unreadable` when the root or a record
/// cannot be read, `missing` when no verification is recorded yet.
pub async fn read_root(url: String) -> Observation {
    let status = match mainstay_storage_tiering::BackupTarget::parse(&url) {
        Ok(root) => mainstay_storage_tiering::backup_status(&root).await,
        Err(error) => Err(error.to_string()),
    };
    match status {
        Err(reason) => {
            tracing::warn!(url = %url, reason = %reason, "backup status: the backup root could not be read");
            Observation {
                outcome: "unreadable",
                ..Observation::default()
            }
        }
        Ok(status) => Observation {
            outcome: status
                .last_verification
                .as_ref()
                .map_or("missing", |record| {
                    OUTCOMES
                        .into_iter()
                        .find(|outcome| *outcome == record.outcome)
                        .unwrap_or("unreadable")
                }),
            last_verification_at: status
                .last_verification
                .as_ref()
                .map(|record| record.checked_at as f64),
            last_success_at: status
                .last_success
                .as_ref()
                .map(|record| record.checked_at as f64),
            newest_backup_at: status.newest_backup.map(|(_, at)| at as f64),
        },
    }
}

/// Reads the backup root; [`read_root`] in the service, a fake in tests.
pub type ReadRoot =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Observation> + Send + Sync + 'static>;

/// Reads `url` every `interval` and applies what it found, until dropped.
#[must_use]
pub fn spawn(
    url: String,
    interval: Duration,
    metrics: BackupStatusMetrics,
    read: ReadRoot,
) -> crate::app::AbortOnDrop {
    crate::app::AbortOnDrop::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let observation = read(url.clone()).await;
            if observation.outcome != "ok" {
                tracing::debug!(outcome = observation.outcome, "backup status read");
            }
            metrics.apply(&observation);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn unknown_until_read_then_one_outcome_and_the_last_success_survives_an_unreadable_root() {
        let mut registry = Registry::default();
        let metrics = BackupStatusMetrics::register(&mut registry);
        let before = scrape(&registry);
        assert!(
            before.contains("backup_last_success_timestamp_seconds NaN"),
            "{before}"
        );
        assert!(
            before.contains("backup_newest_timestamp_seconds NaN"),
            "{before}"
        );
        for outcome in OUTCOMES {
            let line = format!("backup_verification_outcome{{outcome=\"{outcome}\"}} 0");
            assert!(before.contains(&line), "{before}");
        }

        metrics.apply(&Observation {
            outcome: "ok",
            last_verification_at: Some(1_700_000_100.0),
            last_success_at: Some(1_700_000_100.0),
            newest_backup_at: Some(1_700_000_000.0),
        });
        let text = scrape(&registry);
        assert!(
            text.contains("backup_last_success_timestamp_seconds 1700000100.0"),
            "{text}"
        );
        assert!(
            text.contains("backup_newest_timestamp_seconds 1700000000.0"),
            "{text}"
        );
        assert!(
            text.contains("backup_verification_outcome{outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("backup_verification_outcome{outcome=\"damaged\"} 0"),
            "{text}"
        );

        metrics.apply(&Observation {
            outcome: "unreadable",
            ..Observation::default()
        });
        let text = scrape(&registry);
        assert!(
            text.contains("backup_verification_outcome{outcome=\"ok\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("backup_verification_outcome{outcome=\"unreadable\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("backup_last_success_timestamp_seconds 1700000100.0"),
            "{text}"
        );
    }
}
