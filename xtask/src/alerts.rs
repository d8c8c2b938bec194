//! The symptom alerts of `mainstay-api` (issue 16, point 3), declared once here: `cargo xtask
//! codegen` writes them to `deploy/prometheus/rules/alerts.yml`, plots each alert's own
//! expression with its threshold on its area's dashboard, writes a time-scaled copy for the
//! end-to-end test with a real Prometheus, and lists every alert that uses a metric in
//! `docs/metrics.md`.
//!
//! An alert fires when `expr OP threshold` holds for `for_` (or, with no threshold, when `expr`
//! has any sample: `absent(...)`). Expressions name only families of the catalogue printed by
//! `mainstay-api metrics catalogue` and their labels; `codegen --check` fails otherwise.

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

/// Every symptom alert. (The SLO burn-rate alerts come from `deploy/slo.toml`, see `crate::slo`.)
pub(crate) const ALERTS: &[Alert] = &[
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
];
