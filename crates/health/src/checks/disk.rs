//! The built-in `disk` check: free space on the file system holding a path.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use prometheus_client::metrics::gauge::Gauge;

use super::{percent_of, round2};
use crate::check::{Check, CheckOutcome, Criticality, Status};
use crate::config::DiskConfig;

/// Sizes of one file system, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskReading {
    /// Total size.
    pub total_bytes: u64,
    /// Space available to unprivileged users (`f_bavail`, not `f_bfree`).
    pub available_bytes: u64,
}

/// Where the `disk` check gets its readings; tests inject fixed ones.
pub trait DiskReader: Send + Sync + fmt::Debug + 'static {
    /// Reads the sizes of the file system holding `path`. Called on a blocking thread.
    ///
    /// # Errors
    ///
    /// Whatever the underlying call returns (missing path, permissions, ...).
    fn read(&self, path: &Path) -> io::Result<DiskReading>;
}

/// The real reader: `statvfs(2)` through rustix.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatvfsReader;

impl DiskReader for StatvfsReader {
    fn read(&self, path: &Path) -> io::Result<DiskReading> {
        let stat = rustix::fs::statvfs(path)?;
        Ok(DiskReading {
            total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
            available_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
        })
    }
}

/// The `disk` check: degraded below `degraded_below_free_percent` free (10 %), unhealthy below
/// `unhealthy_below_free_percent` (5 %) or when the path cannot be read. Non-critical by default
/// (`checks.disk.critical` changes that).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use mainstay_health::{Check, DiskConfig, DiskSpaceCheck, Status};
///
/// let dir = std::env::temp_dir();
/// let check = DiskSpaceCheck::new(DiskConfig { path: dir, ..DiskConfig::default() });
/// let outcome = check.check().await;
/// assert!(outcome.details.contains_key("free_percent"));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DiskSpaceCheck {
    config: DiskConfig,
    reader: Arc<dyn DiskReader>,
    /// `health_disk_free_ratio`, for the registry's built-in check.
    free_ratio: Option<Gauge<f64, AtomicU64>>,
}

impl DiskSpaceCheck {
    /// A check of `config.path` with the real [`StatvfsReader`].
    #[must_use]
    pub fn new(config: DiskConfig) -> Self {
        Self::with_reader(config, Arc::new(StatvfsReader))
    }

    /// A check of `config.path` with readings from `reader`.
    #[must_use]
    pub fn with_reader(config: DiskConfig, reader: Arc<dyn DiskReader>) -> Self {
        Self {
            config,
            reader,
            free_ratio: None,
        }
    }

    /// Reports each reading's free ratio into `gauge` (NaN when the reading fails).
    pub(crate) fn with_free_ratio(mut self, gauge: Gauge<f64, AtomicU64>) -> Self {
        self.free_ratio = Some(gauge);
        self
    }

    fn report_ratio(&self, ratio: f64) {
        if let Some(gauge) = &self.free_ratio {
            let _ = gauge.set(ratio);
        }
    }
}

#[async_trait]
impl Check for DiskSpaceCheck {
    fn name(&self) -> &str {
        "disk"
    }

    fn criticality(&self) -> Criticality {
        Criticality::NonCritical
    }

    async fn check(&self) -> CheckOutcome {
        let reader = Arc::clone(&self.reader);
        let path = self.config.path.clone();
        let shown_path = path.display().to_string();
        // statvfs can block for long on a network file system: keep it off the workers.
        let reading = match tokio::task::spawn_blocking(move || reader.read(&path)).await {
            Ok(Ok(reading)) => reading,
            Ok(Err(error)) => {
                self.report_ratio(f64::NAN);
                return CheckOutcome::unhealthy(format!(
                    "cannot read free space of {shown_path}: {error}"
                ))
                .with_detail("path", shown_path);
            }
            Err(error) => {
                self.report_ratio(f64::NAN);
                return CheckOutcome::unhealthy(format!("disk reader failed: {error}"))
                    .with_detail("path", shown_path);
            }
        };
        let Some(free_percent) = percent_of(reading.available_bytes, reading.total_bytes) else {
            self.report_ratio(f64::NAN);
            return CheckOutcome::unhealthy(format!(
                "file system of {shown_path} reports a size of 0"
            ))
            .with_detail("path", shown_path);
        };
        self.report_ratio(free_percent / 100.0);
        let free_percent = round2(free_percent);
        let config = &self.config;
        let (status, message, reason) = if free_percent < config.unhealthy_below_free_percent {
            let threshold = config.unhealthy_below_free_percent;
            (
                Status::Unhealthy,
                Some(format!(
                    "{free_percent}% free, below the unhealthy threshold of {threshold}%"
                )),
                Some(format!("{free_percent}% free < {threshold}%")),
            )
        } else if free_percent < config.degraded_below_free_percent {
            let threshold = config.degraded_below_free_percent;
            (
                Status::Degraded,
                Some(format!(
                    "{free_percent}% free, below the degraded threshold of {threshold}%"
                )),
                Some(format!("{free_percent}% free < {threshold}%")),
            )
        } else {
            (Status::Healthy, None, None)
        };
        let mut outcome = CheckOutcome::new(status, message);
        outcome.public_reason = reason;
        outcome
            .with_detail("path", shown_path)
            .with_detail("total_bytes", reading.total_bytes)
            .with_detail("available_bytes", reading.available_bytes)
            .with_detail("free_percent", free_percent)
    }
}
