//! The serde report types the probes return.
//!
//! The JSON shape is part of the public API:
//!
//! ```json
//! {"status":"degraded","version":"1.4.0","uptime_seconds":3600,
//!  "checks":{"redis":{"status":"healthy","critical":true,"latency_ms":0.412,"message":null,
//!                     "observed_at":"2026-11-23T10:00:00.123Z"}}}
//! ```
//!
//! The admin view adds a `details` object to each check and shows the checks' own messages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::check::Status;

/// Which audience a report is for.
///
/// Check messages and details can name hosts, paths, addresses and error texts, so the public
/// view (what `/health/*` serves without authentication) leaves them out; the admin view
/// (`/admin/health`) has them all. See `docs/decisions/0031-public-and-admin-report-views.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// Status, criticality, latency and timestamp of each check; only messages the registry
    /// wrote itself (timeouts, panics, startup and shutdown), which name no internals.
    Public,
    /// Everything, including each check's own message and its `details`.
    Admin,
}

/// A probe's answer: the report and the HTTP status code the application should send.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResponse {
    /// 200, or 503 when the probe failed (readiness, startup and deps answer 503 only for
    /// `unhealthy`; liveness always answers 200).
    pub status_code: u16,
    /// The body.
    pub report: Report,
}

impl ProbeResponse {
    /// `true` when `status_code` is 200.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.status_code == 200
    }
}

/// The overall health and the result of each check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    /// The aggregate: `unhealthy` if a critical check is unhealthy; `degraded` if a non-critical
    /// check is unhealthy or any check is degraded; otherwise `healthy`.
    pub status: Status,
    /// The application's version, as given to the registry.
    pub version: String,
    /// Whole seconds since the registry was built.
    pub uptime_seconds: u64,
    /// Each check by name (sorted).
    pub checks: BTreeMap<String, CheckReport>,
}

/// The result of one check within a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckReport {
    /// The check's status.
    pub status: Status,
    /// Whether the check is critical.
    pub critical: bool,
    /// How long the check took, in milliseconds (microsecond precision).
    pub latency_ms: f64,
    /// A short explanation, or `null`. In the public view only registry-written messages appear.
    pub message: Option<String>,
    /// When the check ran (RFC 3339, UTC, milliseconds). Cached results keep their time.
    pub observed_at: String,
    /// Structured facts behind the status; present in the admin view only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<BTreeMap<String, serde_json::Value>>,
}
