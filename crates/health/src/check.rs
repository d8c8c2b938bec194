//! The [`Check`] trait and the values a check returns.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The health of one dependency, or of the whole service.
///
/// Ordered from best to worst, so `max` over a set of statuses gives the worst one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    /// Working normally.
    Healthy,
    /// Working, but close to a limit or partly impaired.
    Degraded,
    /// Not working.
    Unhealthy,
}

impl Status {
    /// The value exported by the `dependency_health` gauge: 1 healthy, 0.5 degraded, 0 unhealthy.
    #[must_use]
    pub fn gauge_value(self) -> f64 {
        match self {
            Self::Healthy => 1.0,
            Self::Degraded => 0.5,
            Self::Unhealthy => 0.0,
        }
    }

    /// The lowercase name used in reports (`healthy`, `degraded`, `unhealthy`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Whether a failing check makes the whole service unready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    /// An unhealthy result makes the service `unhealthy` (readiness answers 503).
    Critical,
    /// An unhealthy result only makes the service `degraded` (readiness still answers 200).
    NonCritical,
}

impl Criticality {
    /// `true` for [`Criticality::Critical`].
    #[must_use]
    pub fn is_critical(self) -> bool {
        matches!(self, Self::Critical)
    }
}

/// What one run of a [`Check`] found.
///
/// `message` and `details` are shown only in the admin view of a report
/// ([`View::Admin`](crate::View::Admin)): they may name hosts, paths or error texts. The public
/// view of a check that is not healthy shows `public_reason` when the check gave one, else a
/// reason class the registry reads from `message` (`timeout`, `connection refused`, ...), which
/// names nothing internal.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// The status of the dependency.
    pub status: Status,
    /// A short human-readable explanation, usually set when the status is not healthy.
    pub message: Option<String>,
    /// A reason safe to show without authentication (no host, port, path or error text), such
    /// as `92% used > 90%`; see [`CheckOutcome::with_public_reason`].
    pub public_reason: Option<String>,
    /// Structured facts behind the status (free bytes, queue length, ...).
    pub details: BTreeMap<String, serde_json::Value>,
}

impl CheckOutcome {
    /// A healthy outcome without message or details.
    #[must_use]
    pub fn healthy() -> Self {
        Self::new(Status::Healthy, None)
    }

    /// A degraded outcome with a message.
    #[must_use]
    pub fn degraded(message: impl Into<String>) -> Self {
        Self::new(Status::Degraded, Some(message.into()))
    }

    /// An unhealthy outcome with a message.
    #[must_use]
    pub fn unhealthy(message: impl Into<String>) -> Self {
        Self::new(Status::Unhealthy, Some(message.into()))
    }

    /// An outcome with the given status and optional message.
    #[must_use]
    pub fn new(status: Status, message: Option<String>) -> Self {
        Self {
            status,
            message,
            public_reason: None,
            details: BTreeMap::new(),
        }
    }

    /// Sets the reason the public view shows while the check is not healthy. It must name no
    /// host, port, path, address or error text (those belong in the message, admin only).
    #[must_use]
    pub fn with_public_reason(mut self, reason: impl Into<String>) -> Self {
        self.public_reason = Some(reason.into());
        self
    }

    /// Adds one detail (shown in the admin view only).
    #[must_use]
    pub fn with_detail(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// One dependency check, run by a [`HealthRegistry`](crate::HealthRegistry).
///
/// Implementations should do one cheap round trip (a `PING`, a `HEAD`, a `statvfs`) and return.
/// The registry runs every check on its own task under its own timeout, so a check that hangs or
/// panics is reported `unhealthy` without delaying the report past that timeout. A check that
/// blocks its thread (no `.await`) cannot be interrupted: put blocking work in
/// `tokio::task::spawn_blocking`.
///
/// ```
/// use std::time::Duration;
/// use mainstay_health::{Check, CheckOutcome, Criticality};
///
/// #[derive(Debug)]
/// struct Queue;
///
/// #[mainstay_health::async_trait]
/// impl Check for Queue {
///     fn name(&self) -> &str {
///         "queue"
///     }
///     fn criticality(&self) -> Criticality {
///         Criticality::NonCritical
///     }
///     fn timeout(&self) -> Option<Duration> {
///         Some(Duration::from_millis(500))
///     }
///     async fn check(&self) -> CheckOutcome {
///         CheckOutcome::healthy().with_detail("depth", 3)
///     }
/// }
/// ```
#[async_trait]
pub trait Check: Send + Sync + 'static {
    /// The check's name: the key in reports and the `dependency` metric label. It must match
    /// `[a-z0-9][a-z0-9_.-]{0,63}`; `startup` and `shutdown` are reserved.
    fn name(&self) -> &str;

    /// Whether an unhealthy result makes the whole service unhealthy. The configuration key
    /// `checks.<name>.critical` overrides it.
    fn criticality(&self) -> Criticality;

    /// The check's own timeout. `None` (the default) uses the configured `default_timeout`
    /// (2 s unless configured); the configuration key `checks.<name>.timeout` overrides both.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Runs the check once.
    async fn check(&self) -> CheckOutcome;
}
