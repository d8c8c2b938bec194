//! The built-in `memory` check: system memory in use and the process's resident memory.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use prometheus_client::metrics::gauge::Gauge;

use super::{percent_of, round2};
use crate::check::{Check, CheckOutcome, Criticality, Status};
use crate::config::MemoryConfig;

/// Memory figures, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryReading {
    /// `MemTotal` of the machine (or of what the kernel shows the container).
    pub system_total_bytes: u64,
    /// `MemAvailable`: what can be allocated without swapping.
    pub system_available_bytes: u64,
    /// The process's resident set size (`VmRSS`).
    pub process_resident_bytes: u64,
    /// The cgroup memory limit of the process, when it has one.
    pub process_limit_bytes: Option<u64>,
}

/// Where the `memory` check gets its readings; tests inject fixed ones.
pub trait MemoryReader: Send + Sync + fmt::Debug + 'static {
    /// Reads the current figures. Called on a blocking thread.
    ///
    /// # Errors
    ///
    /// When a source cannot be read or parsed.
    fn read(&self) -> io::Result<MemoryReading>;
}

/// The real reader (Linux): `/proc/meminfo`, `/proc/self/status` and the cgroup's `memory.max`
/// (cgroup v2) or `memory.limit_in_bytes` (v1).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcMemoryReader;

impl MemoryReader for ProcMemoryReader {
    fn read(&self) -> io::Result<MemoryReading> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let system_total_bytes = kib_field(&meminfo, "MemTotal:")
            .ok_or_else(|| invalid("/proc/meminfo has no MemTotal"))?;
        let system_available_bytes = kib_field(&meminfo, "MemAvailable:")
            .ok_or_else(|| invalid("/proc/meminfo has no MemAvailable"))?;
        let status = std::fs::read_to_string("/proc/self/status")?;
        let process_resident_bytes = kib_field(&status, "VmRSS:")
            .ok_or_else(|| invalid("/proc/self/status has no VmRSS"))?;
        Ok(MemoryReading {
            system_total_bytes,
            system_available_bytes,
            process_resident_bytes,
            process_limit_bytes: cgroup_limit(),
        })
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// The value of a `Name:   1234 kB` line, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(name))?;
    let kib: u64 = line
        .get(name.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

/// A cgroup limit file's value: `None` for `max` or anything unparsable.
fn parse_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The memory limit of this process's cgroup, if any can be read.
fn cgroup_limit() -> Option<u64> {
    let own_path = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("0::").map(str::to_owned))
        });
    let mut candidates = Vec::new();
    if let Some(own_path) = own_path {
        candidates.push(format!(
            "/sys/fs/cgroup{}/memory.max",
            own_path.trim_end_matches('/')
        ));
    }
    candidates.push("/sys/fs/cgroup/memory.max".to_owned());
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned());
    candidates
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|text| parse_limit(&text))
}

/// The `memory` check: degraded above `degraded_above_used_percent` (85 %), unhealthy above
/// `unhealthy_above_used_percent` (95 %), for system memory in use (`MemTotal - MemAvailable`) and
/// for the process's resident memory against its cgroup limit (or the system total when the
/// limit is absent or larger). The worse of the two wins. Non-critical by default.
#[derive(Debug, Clone)]
pub struct MemoryCheck {
    config: MemoryConfig,
    reader: Arc<dyn MemoryReader>,
    /// The `system` and `process` series of `health_memory_used_ratio`, for the registry's
    /// built-in check.
    used_ratio: Option<[Gauge<f64, AtomicU64>; 2]>,
}

impl MemoryCheck {
    /// A check with the real [`ProcMemoryReader`].
    #[must_use]
    pub fn new(config: MemoryConfig) -> Self {
        Self::with_reader(config, Arc::new(ProcMemoryReader))
    }

    /// A check with readings from `reader`.
    #[must_use]
    pub fn with_reader(config: MemoryConfig, reader: Arc<dyn MemoryReader>) -> Self {
        Self {
            config,
            reader,
            used_ratio: None,
        }
    }

    /// Reports each reading's used ratios into `gauges` (`system`, `process`; NaN when the
    /// reading fails).
    pub(crate) fn with_used_ratio(mut self, gauges: [Gauge<f64, AtomicU64>; 2]) -> Self {
        self.used_ratio = Some(gauges);
        self
    }

    fn report_ratios(&self, system: f64, process: f64) {
        if let Some([system_gauge, process_gauge]) = &self.used_ratio {
            let _ = system_gauge.set(system);
            let _ = process_gauge.set(process);
        }
    }

    fn judge(&self, what: &str, used_percent: f64) -> (Status, Option<String>) {
        let config = &self.config;
        if used_percent > config.unhealthy_above_used_percent {
            let threshold = config.unhealthy_above_used_percent;
            let message = format!(
                "{what} {used_percent}% used, above the unhealthy threshold of {threshold}%"
            );
            (Status::Unhealthy, Some(message))
        } else if used_percent > config.degraded_above_used_percent {
            let threshold = config.degraded_above_used_percent;
            let message = format!(
                "{what} {used_percent}% used, above the degraded threshold of {threshold}%"
            );
            (Status::Degraded, Some(message))
        } else {
            (Status::Healthy, None)
        }
    }
}

#[async_trait]
impl Check for MemoryCheck {
    fn name(&self) -> &str {
        "memory"
    }

    fn criticality(&self) -> Criticality {
        Criticality::NonCritical
    }

    async fn check(&self) -> CheckOutcome {
        let reader = Arc::clone(&self.reader);
        let reading = match tokio::task::spawn_blocking(move || reader.read()).await {
            Ok(Ok(reading)) => reading,
            Ok(Err(error)) => {
                self.report_ratios(f64::NAN, f64::NAN);
                return CheckOutcome::unhealthy(format!("cannot read memory figures: {error}"));
            }
            Err(error) => {
                self.report_ratios(f64::NAN, f64::NAN);
                return CheckOutcome::unhealthy(format!("memory reader failed: {error}"));
            }
        };
        let total = reading.system_total_bytes;
        let Some(system_percent) =
            percent_of(total.saturating_sub(reading.system_available_bytes), total)
        else {
            self.report_ratios(f64::NAN, f64::NAN);
            return CheckOutcome::unhealthy("the system reports 0 bytes of memory");
        };
        let limit = reading
            .process_limit_bytes
            .filter(|limit| *limit > 0)
            .map_or(total, |limit| limit.min(total));
        let process_percent = percent_of(reading.process_resident_bytes, limit).unwrap_or(0.0);
        self.report_ratios(system_percent / 100.0, process_percent / 100.0);
        let (system_percent, process_percent) = (round2(system_percent), round2(process_percent));
        let (system_status, system_message) = self.judge("system memory", system_percent);
        let (process_status, process_message) = self.judge("process memory", process_percent);
        let messages: Vec<String> = [system_message, process_message]
            .into_iter()
            .flatten()
            .collect();
        let message = (!messages.is_empty()).then(|| messages.join("; "));
        // Percentages and thresholds only: safe for the public view as they are.
        let mut outcome = CheckOutcome::new(system_status.max(process_status), message.clone());
        outcome.public_reason = message;
        outcome
            .with_detail("system_total_bytes", total)
            .with_detail("system_available_bytes", reading.system_available_bytes)
            .with_detail("system_used_percent", system_percent)
            .with_detail("process_resident_bytes", reading.process_resident_bytes)
            .with_detail("process_limit_bytes", limit)
            .with_detail("process_used_percent", process_percent)
    }
}

#[cfg(test)]
mod tests {
    use super::{kib_field, parse_limit};

    #[test]
    fn parses_proc_fields_in_kib() {
        let meminfo =
            "MemTotal:       16303428 kB\nMemFree:         1234 kB\nMemAvailable:    8151714 kB\n";
        assert_eq!(kib_field(meminfo, "MemTotal:"), Some(16_303_428 * 1024));
        assert_eq!(kib_field(meminfo, "MemAvailable:"), Some(8_151_714 * 1024));
        assert_eq!(kib_field(meminfo, "SwapTotal:"), None);
        assert_eq!(kib_field("VmRSS:\t  not-a-number kB", "VmRSS:"), None);
    }

    #[test]
    fn parses_cgroup_limits() {
        assert_eq!(parse_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_limit("max\n"), None);
    }
}
