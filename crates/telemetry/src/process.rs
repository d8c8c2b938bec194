//! Process metrics read from `/proc` at scrape time.
//!
//! | family | type | meaning |
//! |---|---|---|
//! | `process_resident_memory_bytes` | gauge | resident set size |
//! | `process_virtual_memory_bytes` | gauge | virtual memory size |
//! | `process_cpu_seconds_total` | counter | user + system CPU time |
//! | `process_open_fds` | gauge | open file descriptors |
//! | `process_max_fds` | gauge | the soft limit on open file descriptors (`RLIMIT_NOFILE`) |
//! | `process_threads` | gauge | threads of the process |
//! | `process_start_time_seconds` | gauge | start time, seconds since the Unix epoch |
//!
//! The names follow the Prometheus client conventions, so standard dashboards work. On a system
//! without `/proc` (not Linux), or when a file cannot be read, the affected families are left
//! out of the scrape rather than reported as zero.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// Registers the process collector in `registry`. Call it once per registry.
///
/// ```
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// mainstay_telemetry::process::register_process_collector(&mut registry);
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// # #[cfg(target_os = "linux")]
/// assert!(text.contains("process_resident_memory_bytes"));
/// ```
pub fn register_process_collector(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
}

/// Reads `/proc/self` on each scrape.
#[derive(Debug, Clone, Copy)]
struct ProcessCollector;

/// The figures of one scrape.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    threads: Option<u64>,
    start_time_seconds: Option<f64>,
}

impl ProcessStats {
    fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        let mut stats = stat
            .as_deref()
            .map(|text| {
                parse_stat(
                    text,
                    rustix::param::page_size() as u64,
                    rustix::param::clock_ticks_per_second(),
                    boot_time,
                )
            })
            .unwrap_or_default();
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| parse_max_fds(&text));
        stats
    }
}

/// Parses `/proc/self/stat`. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
fn parse_stat(
    text: &str,
    page_size: u64,
    ticks_per_second: u64,
    boot_time: Option<u64>,
) -> ProcessStats {
    let Some((_, after_name)) = text.rsplit_once(')') else {
        return ProcessStats::default();
    };
    // After the name, index 0 is field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    let ticks = ticks_per_second.max(1) as f64;
    let cpu_seconds = match (field(14), field(15)) {
        (Some(user), Some(system)) => Some((user + system) as f64 / ticks),
        _ => None,
    };
    let start_time_seconds = match (boot_time, field(22)) {
        (Some(boot), Some(start_ticks)) => Some(boot as f64 + start_ticks as f64 / ticks),
        _ => None,
    };
    ProcessStats {
        resident_bytes: field(24).map(|pages| pages.saturating_mul(page_size)),
        virtual_bytes: field(23),
        cpu_seconds,
        open_fds: None,
        max_fds: None,
        threads: field(20),
        start_time_seconds,
    }
}

/// The soft limit of the `Max open files` line of `/proc/self/limits`, `None` when unlimited.
fn parse_max_fds(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the Unix epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> Result<(), fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let stats = ProcessStats::read();
        if let Some(bytes) = stats.resident_bytes {
            gauge(
                &mut encoder,
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(&Unit::Bytes),
                bytes as f64,
            )?;
        }
        if let Some(bytes) = stats.virtual_bytes {
            gauge(
                &mut encoder,
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(&Unit::Bytes),
                bytes as f64,
            )?;
        }
        if let Some(seconds) = stats.cpu_seconds {
            let metric = ConstCounter::new(seconds);
            metric.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds",
                Some(&Unit::Seconds),
                metric.metric_type(),
            )?)?;
        }
        if let Some(fds) = stats.open_fds {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                None,
                fds as f64,
            )?;
        }
        if let Some(fds) = stats.max_fds {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                fds as f64,
            )?;
        }
        if let Some(threads) = stats.threads {
            gauge(
                &mut encoder,
                "process_threads",
                "Number of OS threads in the process",
                None,
                threads as f64,
            )?;
        }
        if let Some(seconds) = stats.start_time_seconds {
            gauge(
                &mut encoder,
                "process_start_time",
                "Start time of the process since the Unix epoch in seconds",
                Some(&Unit::Seconds),
                seconds,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{ProcessStats, parse_boot_time, parse_max_fds, parse_stat};

    #[test]
    fn the_soft_open_files_limit_is_read_and_unlimited_is_none() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63504                63504                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(
            parse_max_fds(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(parse_max_fds("Max processes 1 1 processes\n"), None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        // The command name holds a space and a parenthesis, as a process name can.
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    8 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let stats = parse_stat(stat, 4096, 100, Some(1_700_000_000));
        assert_eq!(
            stats,
            ProcessStats {
                resident_bytes: Some(2560 * 4096),
                virtual_bytes: Some(104_857_600),
                cpu_seconds: Some(3.0),
                open_fds: None,
                max_fds: None,
                threads: Some(8),
                start_time_seconds: Some(1_700_000_123.45),
            }
        );
    }

    #[test]
    fn garbage_gives_no_figures() {
        assert_eq!(
            parse_stat("no parenthesis", 4096, 100, None),
            ProcessStats::default()
        );
        assert_eq!(parse_boot_time("cpu 1 2 3\n"), None);
        assert_eq!(
            parse_boot_time("cpu 1\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }
}
