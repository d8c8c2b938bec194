//! The symptom alerts of `mainstay-api` (issue 16, point 3), declared once here: `cargo xtask
//! codegen` writes them to `deploy/prometheus/rules/alerts.yml`, plots each alert's own
//! expression with its threshold on its area's dashboard, writes a time-scaled copy for the
//! end-to-end test with a real Prometheus, and lists every alert that uses a metric in
//! `docs/metrics.md`.
//!
//! An alert fires when `expr OP threshold` holds for `for_` (or, with no threshold, when `expr`
//! has any sample: `absent(...)`). Expressions name only families of the catalogue printed by
//! `mainstay-api metrics catalogue` and their labels (plus `job`, `instance` and Prometheus's own
//! `up`), or the recording rules of [`RECORDING`]; `codegen --check` fails otherwise
//! (`crate::lint`, decision 0101).
//!
//! Written from here (decision 0099):
//! - [`rules`]: `deploy/prometheus/rules/alerts.yml`, a group per area;
//! - [`recording`]: `deploy/prometheus/rules/recording.yml`, the recording rules the alerts and
//!   dashboards read (`level:metric:operations`);
//! - [`scaled`]: both again with every range window, subquery step and `for` divided by a factor,
//!   for the end-to-end test with a real Prometheus that scrapes and evaluates every second
//!   (`tests/fixtures/prometheus/rules-scaled.yml`, factor [`SCALE`]);
//! - [`check_runbooks`]: fails when an alert's runbook is missing, lacks a section of the
//!   template, or lacks the heading its `runbook_url` anchor names.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, ensure};

/// The dashboard an alert's expression is plotted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    Overview,
    Http,
    Resilience,
    Ratelimit,
    Storage,
    Dlq,
}

impl Area {
    /// Every area, in dashboard order.
    pub(crate) const ALL: [Area; 6] = [
        Area::Overview,
        Area::Http,
        Area::Resilience,
        Area::Ratelimit,
        Area::Storage,
        Area::Dlq,
    ];

    /// The dashboard's file stem under `deploy/grafana/dashboards/`.
    pub(crate) fn slug(self) -> &'static str {
        match self {
            Area::Overview => "overview",
            Area::Http => "http",
            Area::Resilience => "resilience",
            Area::Ratelimit => "ratelimit",
            Area::Storage => "storage",
            Area::Dlq => "dlq",
        }
    }
}

/// How urgent: `critical` pages someone now, `warning` opens a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    Critical,
    Warning,
}

impl Severity {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// One alert.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Alert {
    /// `CamelCase`; its runbook is `docs/runbooks/<name>.md`.
    pub(crate) name: &'static str,
    pub(crate) area: Area,
    pub(crate) severity: Severity,
    /// The quantity watched, as plotted on the dashboard (PromQL; range windows such as `[5m]`
    /// are scaled in the time-scaled copy).
    pub(crate) expr: &'static str,
    /// The comparison and threshold (`(">", 0.15)`), or `None` when `expr` fires by existing.
    pub(crate) threshold: Option<(&'static str, f64)>,
    /// How long the condition must hold (`"5m"`), or `"0s"`.
    pub(crate) for_: &'static str,
    /// The Grafana unit of `expr` (`s`, `percentunit`, `bytes`, `none`).
    pub(crate) unit: &'static str,
    /// One line; may use `{{ $labels.NAME }}`.
    pub(crate) summary: &'static str,
    /// Says what the live value is (`{{ $value }}`) and what it is compared with.
    pub(crate) description: &'static str,
}

/// One recording rule: `level:metric:operations` (Prometheus's naming practice).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recording {
    pub(crate) area: Area,
    pub(crate) record: &'static str,
    pub(crate) expr: &'static str,
}

/// The recording rules the alerts and dashboards read: per route for HTTP (summed over
/// instances, so a route's latency is the fleet's), per instance and store for storage.
pub(crate) const RECORDING: &[Recording] = &[
    Recording {
        area: Area::Http,
        record: "job_endpoint:http_requests:rate5m",
        expr: "sum by (job, endpoint) (rate(http_requests_total[5m]))",
    },
    Recording {
        area: Area::Http,
        record: "job_endpoint:http_requests_5xx:rate5m",
        expr: "sum by (job, endpoint) (rate(http_requests_total{status_code=~\"5..\"}[5m]))",
    },
    Recording {
        area: Area::Http,
        record: "job_endpoint:http_request_duration_seconds:p50_5m",
        expr: "histogram_quantile(0.5, sum by (job, endpoint, le) (rate(http_request_duration_seconds_bucket[5m])))",
    },
    Recording {
        area: Area::Http,
        record: "job_endpoint:http_request_duration_seconds:p95_5m",
        expr: "histogram_quantile(0.95, sum by (job, endpoint, le) (rate(http_request_duration_seconds_bucket[5m])))",
    },
    Recording {
        area: Area::Http,
        record: "job_endpoint:http_request_duration_seconds:p99_5m",
        expr: "histogram_quantile(0.99, sum by (job, endpoint, le) (rate(http_request_duration_seconds_bucket[5m])))",
    },
    Recording {
        area: Area::Storage,
        record: "job_instance_store:storage_insert_duration_seconds:p95_5m",
        expr: "histogram_quantile(0.95, sum by (job, instance, store, le) (rate(storage_insert_duration_seconds_bucket[5m])))",
    },
    Recording {
        area: Area::Storage,
        record: "job_instance_store:storage_object_store_requests:rate5m",
        expr: "sum by (job, instance, store) (rate(storage_object_store_requests_total[5m]))",
    },
    Recording {
        area: Area::Storage,
        record: "job_instance_store:storage_object_store_failures:rate5m",
        expr: "sum by (job, instance, store) (rate(storage_object_store_errors_total{error_type=~\"transient|permanent\"}[5m]))",
    },
    Recording {
        area: Area::Storage,
        record: "job_instance_store:storage_cache_hits:rate5m",
        expr: "sum by (job, instance, store) (rate(storage_cache_hits_total[5m]))",
    },
    Recording {
        area: Area::Storage,
        record: "job_instance_store:storage_cache_lookups:rate5m",
        expr: "sum by (job, instance, store) (rate(storage_cache_hits_total[5m]) + rate(storage_cache_misses_total[5m]))",
    },
];

/// Every symptom alert. (The SLO burn-rate alerts come from `deploy/slo.toml`, see `crate::slo`.)
pub(crate) const ALERTS: &[Alert] = &[
    // Overview: is the service there, ready, and are its host's resources fine.
    Alert {
        name: "MainstayApiTargetMissing",
        area: Area::Overview,
        severity: Severity::Critical,
        expr: "absent(up{job=\"mainstay-api\"} == 1)",
        threshold: None,
        for_: "5m",
        unit: "none",
        summary: "No mainstay-api target is up",
        description: "Prometheus has had no target of job mainstay-api with up == 1 for 5 minutes (absent = {{ $value }}): every instance is down, unreachable, or gone from service discovery, and no other alert of the service can fire.",
    },
    Alert {
        name: "ReadinessFailing",
        area: Area::Overview,
        severity: Severity::Critical,
        expr: "max by (job, instance) (health_ready)",
        threshold: Some(("==", 0.0)),
        for_: "5m",
        unit: "none",
        summary: "{{ $labels.instance }} has not been ready for 5 minutes",
        description: "The readiness probe of {{ $labels.instance }} ({{ $labels.job }}) has answered 503 for 5 minutes (health_ready = {{ $value }}, ready is 1): it is starting, shutting down, or a critical check is unhealthy, and load balancers send it no traffic.",
    },
    Alert {
        name: "CriticalDependencyDown",
        area: Area::Overview,
        severity: Severity::Critical,
        expr: "dependency_health and on (job, instance, dependency) health_check_critical == 1",
        threshold: Some(("==", 0.0)),
        for_: "2m",
        unit: "none",
        summary: "Critical dependency {{ $labels.dependency }} is down on {{ $labels.instance }}",
        description: "The critical check {{ $labels.dependency }} of {{ $labels.instance }} ({{ $labels.job }}) has been unhealthy for 2 minutes (dependency_health = {{ $value }}; 1 healthy, 0.5 degraded, 0 unhealthy): the instance's readiness probe fails.",
    },
    Alert {
        name: "DiskFreeLow",
        area: Area::Overview,
        severity: Severity::Warning,
        expr: "min by (job, instance) (health_disk_free_ratio)",
        threshold: Some(("<", 0.1)),
        for_: "5m",
        unit: "percentunit",
        summary: "Disk of {{ $labels.instance }} is {{ $value | humanizePercentage }} free",
        description: "The file system of the disk check on {{ $labels.instance }} ({{ $labels.job }}) has {{ $value | humanizePercentage }} of its space free for unprivileged writers (alert under 10%): when it is full the WAL refuses writes.",
    },
    Alert {
        name: "MemoryHigh",
        area: Area::Overview,
        severity: Severity::Warning,
        expr: "max by (job, instance, scope) (health_memory_used_ratio)",
        threshold: Some((">", 0.8)),
        for_: "10m",
        unit: "percentunit",
        summary: "{{ $labels.scope }} memory of {{ $labels.instance }} is {{ $value | humanizePercentage }} used",
        description: "{{ $labels.scope }} memory in use on {{ $labels.instance }} ({{ $labels.job }}) is {{ $value | humanizePercentage }} of its limit (alert over 80% for 10 minutes; system: over the host's total, process: resident memory over the cgroup limit).",
    },
    // HTTP: latency and errors per route template.
    Alert {
        name: "HttpLatencyP99High",
        area: Area::Http,
        severity: Severity::Warning,
        expr: "job_endpoint:http_request_duration_seconds:p99_5m",
        threshold: Some((">", 0.15)),
        for_: "10m",
        unit: "s",
        summary: "P99 latency of {{ $labels.endpoint }} is {{ $value | humanizeDuration }}",
        description: "The 99th percentile of the response time of {{ $labels.endpoint }} ({{ $labels.job }}, all instances, over 5 minutes) is {{ $value | humanizeDuration }} (warning over 150ms for 10 minutes).",
    },
    Alert {
        name: "HttpLatencyP99Critical",
        area: Area::Http,
        severity: Severity::Critical,
        expr: "job_endpoint:http_request_duration_seconds:p99_5m",
        threshold: Some((">", 0.5)),
        for_: "5m",
        unit: "s",
        summary: "P99 latency of {{ $labels.endpoint }} is {{ $value | humanizeDuration }}",
        description: "The 99th percentile of the response time of {{ $labels.endpoint }} ({{ $labels.job }}, all instances, over 5 minutes) is {{ $value | humanizeDuration }} (critical over 500ms for 5 minutes).",
    },
    Alert {
        name: "HttpErrorRatioHigh",
        area: Area::Http,
        severity: Severity::Critical,
        expr: "job_endpoint:http_requests_5xx:rate5m / job_endpoint:http_requests:rate5m and on (job, endpoint) job_endpoint:http_requests:rate5m > 1",
        threshold: Some((">", 0.01)),
        for_: "5m",
        unit: "percentunit",
        summary: "{{ $labels.endpoint }} answers {{ $value | humanizePercentage }} 5xx",
        description: "{{ $value | humanizePercentage }} of the requests to {{ $labels.endpoint }} ({{ $labels.job }}, all instances, over 5 minutes) were answered with a 5xx status (alert over 1% for 5 minutes, while the route serves more than 1 request/s).",
    },
    // Resilience: breakers.
    Alert {
        name: "CircuitBreakerOpen",
        area: Area::Resilience,
        severity: Severity::Warning,
        expr: "max by (job, instance, breaker) (circuit_breaker_state_active{state=~\"open|forced_open\"})",
        threshold: Some((">", 0.0)),
        for_: "1m",
        unit: "none",
        summary: "Circuit breaker {{ $labels.breaker }} is open on {{ $labels.instance }}",
        description: "The circuit breaker {{ $labels.breaker }} of {{ $labels.job }} on {{ $labels.instance }} has been open (or forced open) for over a minute (state_active = {{ $value }}): calls through it fail fast.",
    },
    Alert {
        name: "CircuitBreakerFlapping",
        area: Area::Resilience,
        severity: Severity::Warning,
        expr: "sum by (job, instance, breaker) (increase(circuit_breaker_transitions_total{from=\"half_open\",to=\"open\"}[10m]))",
        threshold: Some((">=", 2.0)),
        for_: "0s",
        unit: "none",
        summary: "Circuit breaker {{ $labels.breaker }} re-opened from half-open {{ $value | printf \"%.0f\" }} times in 10 minutes",
        description: "The circuit breaker {{ $labels.breaker }} of {{ $labels.job }} on {{ $labels.instance }} went from half_open back to open {{ $value | printf \"%.1f\" }} times in the last 10 minutes (alert at 2): its trial calls keep failing, the dependency is not back.",
    },
    // Rate limiting.
    Alert {
        name: "RateLimitFallbackActive",
        area: Area::Ratelimit,
        severity: Severity::Warning,
        expr: "max by (job, instance) (ratelimit_fallback_active)",
        threshold: Some((">", 0.0)),
        for_: "2m",
        unit: "none",
        summary: "Rate limits of {{ $labels.instance }} are decided without Redis",
        description: "{{ $labels.instance }} of {{ $labels.job }} decides rate limits in process (fallback_active = {{ $value }}) because its Redis circuit breaker is not closed: limits hold per instance, not across the fleet.",
    },
    // Storage.
    Alert {
        name: "StorageWalPoisoned",
        area: Area::Storage,
        severity: Severity::Critical,
        expr: "max by (job, instance, store) (storage_wal_failed)",
        threshold: Some((">", 0.0)),
        for_: "0s",
        unit: "none",
        summary: "The WAL of store {{ $labels.store }} on {{ $labels.instance }} refuses writes",
        description: "A WAL write or fsync of store {{ $labels.store }} on {{ $labels.instance }} ({{ $labels.job }}) failed (storage_wal_failed = {{ $value }}, alert at 1): every write is answered 503 until the cause is fixed and the instance restarts.",
    },
    Alert {
        name: "StorageWriterFenced",
        area: Area::Storage,
        severity: Severity::Critical,
        expr: "max by (job, instance, store) (storage_fenced)",
        threshold: Some((">", 0.0)),
        for_: "0s",
        unit: "none",
        summary: "Store {{ $labels.store }} on {{ $labels.instance }} is fenced by another writer",
        description: "Another writer claimed the object-store prefix of store {{ $labels.store }} on {{ $labels.instance }} ({{ $labels.job }}) (storage_fenced = {{ $value }}, alert at 1): this instance refuses writes, and its records not yet uploaded wait for a handover.",
    },
    Alert {
        name: "StorageInsertLatencyHigh",
        area: Area::Storage,
        severity: Severity::Warning,
        expr: "job_instance_store:storage_insert_duration_seconds:p95_5m",
        threshold: Some((">", 0.01)),
        for_: "10m",
        unit: "s",
        summary: "P95 insert latency of store {{ $labels.store }} on {{ $labels.instance }} is {{ $value | humanizeDuration }}",
        description: "The 95th percentile of the time to acknowledge a write to store {{ $labels.store }} on {{ $labels.instance }} ({{ $labels.job }}, over 5 minutes) is {{ $value | humanizeDuration }} (alert over 10ms for 10 minutes): fsyncs are slow or writes wait for backpressure.",
    },
    Alert {
        name: "ObjectStoreFailures",
        area: Area::Storage,
        severity: Severity::Warning,
        expr: "job_instance_store:storage_object_store_failures:rate5m / job_instance_store:storage_object_store_requests:rate5m and on (job, instance, store) job_instance_store:storage_object_store_requests:rate5m > 0.03",
        threshold: Some((">", 0.05)),
        for_: "10m",
        unit: "percentunit",
        summary: "{{ $value | humanizePercentage }} of the object-store calls of store {{ $labels.store }} on {{ $labels.instance }} fail",
        description: "{{ $value | humanizePercentage }} of the object-store calls of store {{ $labels.store }} on {{ $labels.instance }} ({{ $labels.job }}, over 5 minutes) failed as transient or permanent (alert over 5% for 10 minutes, while it makes more than 0.03 calls/s): uploads are retried and the backlog grows.",
    },
    Alert {
        name: "UploadBacklogHigh",
        area: Area::Storage,
        severity: Severity::Warning,
        expr: "max by (job, instance, store) (storage_backlog_bytes / (storage_backlog_limit_bytes > 0))",
        threshold: Some((">", 0.5)),
        for_: "10m",
        unit: "percentunit",
        summary: "Upload backlog of store {{ $labels.store }} on {{ $labels.instance }} is {{ $value | humanizePercentage }} of its bound",
        description: "The bytes of store {{ $labels.store }} on {{ $labels.instance }} ({{ $labels.job }}) not yet uploaded are {{ $value | humanizePercentage }} of upload.max_backlog_bytes (alert over 50% for 10 minutes): at 100% writes to object-store collections are refused.",
    },
    Alert {
        name: "StorageCacheHitRatioLow",
        area: Area::Storage,
        severity: Severity::Warning,
        expr: "job_instance_store:storage_cache_hits:rate5m / job_instance_store:storage_cache_lookups:rate5m and on (job, instance, store) job_instance_store:storage_cache_lookups:rate5m > 1",
        threshold: Some(("<", 0.5)),
        for_: "30m",
        unit: "percentunit",
        summary: "Block cache hit ratio of store {{ $labels.store }} on {{ $labels.instance }} is {{ $value | humanizePercentage }}",
        description: "Only {{ $value | humanizePercentage }} of the block cache lookups of store {{ $labels.store }} on {{ $labels.instance }} ({{ $labels.job }}, over 5 minutes) hit (alert under 50% for 30 minutes, while it serves more than 1 lookup/s): reads of s3_only collections go to the object store.",
    },
    // Backups (decision 0115): read from `backup.url` by the service; no series without it.
    Alert {
        name: "BackupVerificationFailed",
        area: Area::Storage,
        severity: Severity::Critical,
        expr: "max by (job, instance, outcome) (backup_verification_outcome{outcome!=\"ok\"})",
        threshold: Some((">", 0.0)),
        for_: "5m",
        unit: "none",
        summary: "The newest backup verification seen by {{ $labels.instance }} is {{ $labels.outcome }}",
        description: "The newest verification of the backups under backup.url, as read by {{ $labels.instance }} ({{ $labels.job }}), is {{ $labels.outcome }} (backup_verification_outcome = {{ $value }}, alert at 1 for 5 minutes): the newest backup may not restore, so the recovery point is older than it looks.",
    },
    Alert {
        name: "BackupVerificationStale",
        area: Area::Storage,
        severity: Severity::Warning,
        expr: "time() - max by (job, instance) (backup_last_success_timestamp_seconds)",
        threshold: Some((">", 93600.0)),
        for_: "15m",
        unit: "s",
        summary: "No backup verification has succeeded for {{ $value | humanizeDuration }}",
        description: "The newest verification that restored a backup and found it good, as read by {{ $labels.instance }} ({{ $labels.job }}), ended {{ $value | humanizeDuration }} ago (alert over 26 hours for 15 minutes): the nightly verification job did not run or did not succeed.",
    },
    Alert {
        name: "BackupTooOld",
        area: Area::Storage,
        severity: Severity::Critical,
        expr: "time() - max by (job, instance) (backup_newest_timestamp_seconds)",
        threshold: Some((">", 5400.0)),
        for_: "10m",
        unit: "s",
        summary: "The newest backup is {{ $value | humanizeDuration }} old",
        description: "The consistent point of the newest complete backup under backup.url, as read by {{ $labels.instance }} ({{ $labels.job }}), is {{ $value | humanizeDuration }} old (alert over 90 minutes for 10 minutes): the hourly backup job is failing and the recovery point objective of 1 hour is at risk for memory collections.",
    },
    // Dead-letter queue.
    Alert {
        name: "DlqJournalPoisoned",
        area: Area::Dlq,
        severity: Severity::Critical,
        expr: "max by (job, instance) (dlq_journal_failed)",
        threshold: Some((">", 0.0)),
        for_: "0s",
        unit: "none",
        summary: "The dead-letter queue journal of {{ $labels.instance }} refuses writes",
        description: "A write or fsync of the dead-letter queue's journal on {{ $labels.instance }} ({{ $labels.job }}) failed (dlq_journal_failed = {{ $value }}, alert at 1): failed work can no longer be kept until the cause is fixed and the instance restarts.",
    },
    Alert {
        name: "DlqSizeHigh",
        area: Area::Dlq,
        severity: Severity::Warning,
        expr: "max by (job, instance, queue) (dlq_size)",
        threshold: Some((">", 100.0)),
        for_: "5m",
        unit: "none",
        summary: "Dead-letter queue {{ $labels.queue }} on {{ $labels.instance }} holds {{ $value }} entries",
        description: "The dead-letter queue {{ $labels.queue }} on {{ $labels.instance }} ({{ $labels.job }}) holds {{ $value }} entries (alert over 100 for 5 minutes): inspect them and redrive or purge.",
    },
    Alert {
        name: "DlqGrowing",
        area: Area::Dlq,
        severity: Severity::Warning,
        expr: "min_over_time((max by (job, instance, queue) (deriv(dlq_size[5m])))[15m:1m]) * 60",
        threshold: Some((">", 0.0)),
        for_: "0s",
        unit: "none",
        summary: "Dead-letter queue {{ $labels.queue }} on {{ $labels.instance }} has grown for 15 minutes",
        description: "The dead-letter queue {{ $labels.queue }} on {{ $labels.instance }} ({{ $labels.job }}) has grown in every 5-minute window of the last 15 minutes, by at least {{ $value | printf \"%.2f\" }} entries/minute (alert over 0): something keeps failing and nothing redrives it.",
    },
];

/// The template of a runbook: its `## ` sections, in order.
pub(crate) const RUNBOOK_SECTIONS: [&str; 5] =
    ["Meaning", "Impact", "Diagnosis", "Action", "Verification"];

/// The generated rule files, under the workspace root.
pub(crate) const ALERT_RULES: &str = "deploy/prometheus/rules/alerts.yml";
pub(crate) const RECORDING_RULES: &str = "deploy/prometheus/rules/recording.yml";
pub(crate) const SCALED_RULES: &str = "tests/fixtures/prometheus/rules-scaled.yml";

/// The factor of [`SCALED_RULES`]: an hour of production time is a minute of the end-to-end test,
/// whose Prometheus scrapes and evaluates every second.
pub(crate) const SCALE: u32 = 60;

impl Alert {
    /// The alerting condition: `expr OP threshold`, with `expr` in parentheses when it has a
    /// set operator (`and`, `or`, `unless` bind looser than a comparison), or `expr` alone.
    pub(crate) fn condition(&self) -> String {
        match self.threshold {
            None => self.expr.to_owned(),
            Some((op, threshold)) => {
                let set = [" and ", " or ", " unless "]
                    .iter()
                    .any(|word| self.expr.contains(word));
                if set {
                    format!("({}) {op} {}", self.expr, number(threshold))
                } else {
                    format!("{} {op} {}", self.expr, number(threshold))
                }
            }
        }
    }
}

/// `deploy/prometheus/rules/alerts.yml`: a group per area, runbooks under `repository`.
pub(crate) fn rules(repository: &str) -> String {
    let mut out = header("the alerts of `xtask/src/alerts.rs`");
    out.push_str(&alert_groups(repository, 1));
    out
}

/// `deploy/prometheus/rules/recording.yml`.
pub(crate) fn recording() -> String {
    let mut out = header("the recording rules of `xtask/src/alerts.rs`");
    out.push_str(&recording_groups(1));
    out
}

/// The recording rules and the alerts of [`recording`] and [`rules`] in one file, with every
/// range window, subquery step and `for` divided by `factor` (see [`scale_duration`]): the same
/// expressions on a clock `factor` times faster. `runbook_url`s point to the real repository.
pub(crate) fn scaled(factor: u32) -> String {
    let mut out = format!(
        "# Generated by `cargo xtask codegen` from `xtask/src/alerts.rs`: do not edit. The recording\n\
         # rules and alerts of deploy/prometheus/rules/{{recording,alerts}}.yml with every range window,\n\
         # subquery step and `for` divided by {factor} (ranges at least 4s, steps and `for` at least 1s),\n\
         # for the end-to-end test with a Prometheus that scrapes and evaluates every second\n\
         # (docs/decisions/0099-symptom-alerts.md). `cargo xtask codegen --check` fails when stale.\n\
         groups:\n"
    );
    out.push_str(&recording_groups(factor));
    out.push_str(&alert_groups(REPOSITORY_IN_SCALED, factor));
    out
}

/// The repository named in the scaled copy's `runbook_url`s (it is a test fixture: the links are
/// not followed, and the file does not change with `workspace.package.repository`).
const REPOSITORY_IN_SCALED: &str = "https://github.com/mainstay-rs/mainstay";

fn header(source: &str) -> String {
    format!(
        "# Generated by `cargo xtask codegen` from {source}: do not edit; change the\n\
         # table there (docs/decisions/0099-symptom-alerts.md). `cargo xtask codegen --check` fails\n\
         # when stale.\n\
         groups:\n"
    )
}

fn recording_groups(factor: u32) -> String {
    let mut out = String::new();
    for area in Area::ALL {
        let rules: Vec<&Recording> = RECORDING.iter().filter(|rule| rule.area == area).collect();
        if rules.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "  - name: recording-{}\n    rules:\n",
            area.slug()
        ));
        for rule in rules {
            out.push_str(&format!(
                "      - record: {}\n        expr: |-\n          {}\n",
                rule.record,
                scale_expr(rule.expr, factor)
            ));
        }
    }
    out
}

fn alert_groups(repository: &str, factor: u32) -> String {
    let mut out = String::new();
    for area in Area::ALL {
        let alerts: Vec<&Alert> = ALERTS.iter().filter(|alert| alert.area == area).collect();
        if alerts.is_empty() {
            continue;
        }
        out.push_str(&format!("  - name: alerts-{}\n    rules:\n", area.slug()));
        for alert in alerts {
            out.push_str(&format!(
                "      - alert: {}\n        expr: |-\n          {}\n        for: {}\n        labels:\n          severity: {}\n        annotations:\n          summary: {}\n          description: {}\n          runbook_url: {}\n",
                alert.name,
                scale_expr(&alert.condition(), factor),
                scale_duration(alert.for_, factor, 1),
                alert.severity.label(),
                crate::slo::quote(alert.summary),
                crate::slo::quote(alert.description),
                crate::slo::quote(&format!(
                    "{}/blob/main/docs/runbooks/{}.md",
                    repository.trim_end_matches('/'),
                    alert.name
                )),
            ));
        }
    }
    out
}

/// The shortest range window in a scaled expression: four scrapes of the end-to-end test's 1 s
/// interval, so that `rate`, `increase` and `deriv` always have samples to work with.
const MIN_RANGE_SECONDS: u64 = 4;

/// `expr` with every `[range]` and `[range:step]` divided by `factor` (ranges at least
/// [`MIN_RANGE_SECONDS`], steps at least 1 s). Label matchers never contain `[`: a bracket is a
/// range.
pub(crate) fn scale_expr(expr: &str, factor: u32) -> String {
    if factor == 1 {
        return expr.to_owned();
    }
    let mut out = String::new();
    let mut rest = expr;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else {
            break;
        };
        let inside = &rest[..close];
        let scaled = match inside.split_once(':') {
            Some((range, "")) => {
                format!("{}:", scale_duration(range, factor, MIN_RANGE_SECONDS))
            }
            Some((range, step)) => format!(
                "{}:{}",
                scale_duration(range, factor, MIN_RANGE_SECONDS),
                scale_duration(step, factor, 1)
            ),
            None => scale_duration(inside, factor, MIN_RANGE_SECONDS),
        };
        out.push_str(&scaled);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// A Prometheus duration (`1h30m`, `5m`, `0s`) divided by `factor`, rounded up to whole seconds
/// and at least `floor` seconds; `0s` stays `0s`. Text that is not a duration is returned as is
/// (promtool then reports it).
pub(crate) fn scale_duration(text: &str, factor: u32, floor: u64) -> String {
    if factor == 1 {
        return text.to_owned();
    }
    let Some(milliseconds) = parse_duration(text) else {
        return text.to_owned();
    };
    if milliseconds == 0 {
        return "0s".to_owned();
    }
    let seconds = milliseconds.div_ceil(1_000 * u64::from(factor.max(1)));
    format!("{}s", seconds.max(floor))
}

/// Milliseconds of a Prometheus duration: units `ms`, `s`, `m`, `h`, `d`, `w`, `y`, largest first.
fn parse_duration(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total = total.checked_add(value.checked_mul(unit)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A threshold in its shortest decimal form (`0.15`, `100`).
fn number(value: f64) -> String {
    let text = format!("{value:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Fails naming every runbook problem of the alerts of `deploy/prometheus/rules/*.yml` (the SLO
/// burn-rate alerts included): a missing `docs/runbooks/<alert>.md`, a runbook without one of the
/// [`RUNBOOK_SECTIONS`] as a `## ` heading, and a `runbook_url` whose `#anchor` names no heading
/// of its file.
pub(crate) fn check_runbooks(root: &Path) -> Result<()> {
    let rules_dir = root.join("deploy/prometheus/rules");
    let mut texts = Vec::new();
    for file in crate::slo::yaml_files(&rules_dir)? {
        texts.push(
            std::fs::read_to_string(&file)
                .with_context(|| format!("could not read {}", file.display()))?,
        );
    }
    let problems = runbook_problems(
        &crate::slo::alert_names(&rules_dir)?,
        &texts,
        |path: &str| std::fs::read_to_string(root.join(path)).ok(),
    );
    ensure!(
        problems.is_empty(),
        "alert runbooks: {}; each runbook has the sections {}",
        problems.join("; "),
        RUNBOOK_SECTIONS
            .map(|section| format!("`## {section}`"))
            .join(", ")
    );
    Ok(())
}

/// The problems [`check_runbooks`] reports, for `alerts` and the rule files' `texts`, reading a
/// runbook by its path under the workspace root with `read`.
fn runbook_problems(
    alerts: &[String],
    texts: &[String],
    read: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    // Each runbook path, with the anchors the rules link to.
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in alerts {
        wanted
            .entry(format!("docs/runbooks/{name}.md"))
            .or_default();
    }
    for text in texts {
        for line in text.lines() {
            let Some(url) = line.trim_start().strip_prefix("runbook_url:") else {
                continue;
            };
            let url = url.trim().trim_matches('"');
            let Some((_, target)) = url.split_once("/blob/main/") else {
                continue;
            };
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target, None),
            };
            let anchors = wanted.entry(path.to_owned()).or_default();
            if let Some(anchor) = anchor {
                anchors.push(anchor.to_owned());
            }
        }
    }
    let mut problems = Vec::new();
    for (path, anchors) in wanted {
        let Some(text) = read(&path) else {
            problems.push(format!("{path} is missing"));
            continue;
        };
        let headings: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with('#'))
            .map(|line| line.trim_start_matches('#').trim())
            .collect();
        for section in RUNBOOK_SECTIONS {
            if !text
                .lines()
                .any(|line| line.trim_end() == format!("## {section}"))
            {
                problems.push(format!("{path} lacks the section `## {section}`"));
            }
        }
        for anchor in anchors {
            if !headings
                .iter()
                .any(|heading| github_anchor(heading) == anchor)
            {
                problems.push(format!("{path} has no heading for the anchor `#{anchor}`"));
            }
        }
    }
    problems
}

/// The anchor GitHub gives a heading: lowercase, spaces to `-`, punctuation other than `-` and
/// `_` dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{
        ALERTS, RECORDING, github_anchor, recording, rules, runbook_problems, scale_duration,
        scale_expr, scaled,
    };

    #[test]
    fn durations_scale_down_rounded_up_with_a_floor() {
        assert_eq!(scale_duration("5m", 60, 4), "5s");
        assert_eq!(scale_duration("1h30m", 60, 4), "90s");
        assert_eq!(scale_duration("90s", 60, 1), "2s");
        assert_eq!(scale_duration("1m", 60, 4), "4s");
        assert_eq!(scale_duration("1m", 60, 1), "1s");
        assert_eq!(scale_duration("0s", 60, 1), "0s");
        assert_eq!(scale_duration("5m", 1, 4), "5m");
        assert_eq!(scale_duration("later", 60, 1), "later");
    }

    #[test]
    fn every_range_and_subquery_of_an_expression_scales() {
        assert_eq!(
            scale_expr(
                "sum(rate(a_total{code=~\"5..\"}[5m])) / min_over_time(deriv(b[10m])[15m:1m]) + max_over_time(c[1h:])",
                60
            ),
            "sum(rate(a_total{code=~\"5..\"}[5s])) / min_over_time(deriv(b[10s])[15s:1s]) + max_over_time(c[60s:])"
        );
        assert_eq!(scale_expr("up == 1", 60), "up == 1");
    }

    #[test]
    fn the_scaled_copy_has_every_rule_with_short_windows_and_for() {
        let text = scaled(60);
        for alert in ALERTS {
            assert!(
                text.contains(&format!("- alert: {}\n", alert.name)),
                "{}",
                alert.name
            );
        }
        for rule in RECORDING {
            assert!(text.contains(&format!("- record: {}\n", rule.record)));
        }
        // The end-to-end test waits for these two with a 1 s evaluation interval.
        assert!(text.contains("- alert: CircuitBreakerOpen\n        expr: |-\n          max by (job, instance, breaker) (circuit_breaker_state_active{state=~\"open|forced_open\"}) > 0\n        for: 1s\n"), "{text}");
        assert!(text.contains("- alert: RateLimitFallbackActive\n        expr: |-\n          max by (job, instance) (ratelimit_fallback_active) > 0\n        for: 2s\n"));
        assert!(text.contains("[15s:1s]"));
        for long in ["[5m]", "[10m]", "for: 5m", "for: 10m", "for: 30m"] {
            assert!(!text.contains(long), "{long} left in the scaled copy");
        }
        // Production rules keep their windows.
        assert!(recording().contains("rate(http_requests_total[5m])"));
    }

    #[test]
    fn each_alert_has_its_severity_runbook_and_live_value() {
        let text = rules("https://example.com/r/");
        for alert in ALERTS {
            assert!(text.contains(&format!(
                "runbook_url: \"https://example.com/r/blob/main/docs/runbooks/{}.md\"",
                alert.name
            )));
            assert!(alert.description.contains("{{ $value"), "{}", alert.name);
            assert_eq!(
                ALERTS
                    .iter()
                    .filter(|other| other.name == alert.name)
                    .count(),
                1
            );
        }
        assert!(text.contains("  - name: alerts-storage\n"));
        assert!(text.contains("severity: critical\n") && text.contains("severity: warning\n"));
        // A guarded ratio is compared as a whole: `and` binds looser than `>`.
        assert!(text.contains("(job_endpoint:http_requests_5xx:rate5m / job_endpoint:http_requests:rate5m and on (job, endpoint) job_endpoint:http_requests:rate5m > 1) > 0.01\n"));
        assert!(text.contains("job_endpoint:http_request_duration_seconds:p99_5m > 0.15\n"));
    }

    #[test]
    fn runbooks_need_their_file_every_section_and_linked_headings() {
        let complete = "# Runbook: A\n\n## Meaning\nx\n## Impact\n## Diagnosis\n### Step 2: the queue!\n## Action\n## Verification\n";
        let no_action = complete.replace("## Action\n", "");
        let rules = vec![
            "        runbook_url: \"https://x/r/blob/main/docs/runbooks/A.md#step-2-the-queue\"\n"
                .to_owned(),
            "        runbook_url: \"https://x/r/blob/main/docs/runbooks/B.md#missing-heading\"\n"
                .to_owned(),
        ];
        let alerts = vec!["A".to_owned(), "B".to_owned(), "C".to_owned()];
        let problems = runbook_problems(&alerts, &rules, |path| match path {
            "docs/runbooks/A.md" => Some(complete.to_owned()),
            "docs/runbooks/B.md" => Some(no_action.clone()),
            _ => None,
        });
        assert_eq!(
            problems,
            [
                "docs/runbooks/B.md lacks the section `## Action`",
                "docs/runbooks/B.md has no heading for the anchor `#missing-heading`",
                "docs/runbooks/C.md is missing",
            ]
        );
        assert_eq!(github_anchor("Step 2: the queue!"), "step-2-the-queue");
        assert_eq!(
            github_anchor("What `dlq_size` means"),
            "what-dlq_size-means"
        );
    }
}
