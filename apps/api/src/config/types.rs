//! The configuration types: one struct per section of the file, the caller tiers and plans, and
//! the defaults every key has.

use std::net::SocketAddr;
use std::time::Duration;

use mainstay_dlq::DlqConfig;
use mainstay_health::HealthConfig;
use mainstay_ratelimit::RateLimitConfig;
use mainstay_storage_tiering::StoreConfig;
use mainstay_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration of `mainstay-api`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The HTTP server.
    pub server: ServerConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Authentication of `/v1` callers.
    pub auth: AuthConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Health checks and probes.
    pub health: HealthConfig,
    /// The Redis server shared by the instances (rate limits).
    pub redis: RedisConfig,
    /// Rate limits of the `/v1` routes.
    pub ratelimit: RateLimitConfig,
    /// The record store: WAL, memory tier, object-store tier; `storage.enabled = false` runs the
    /// service without it (the stateless mode).
    pub storage: StoreConfig,
    /// The dead-letter queue, kept under `storage.data_dir/dlq` (none in the stateless mode).
    pub dlq: DlqConfig,
    /// Logs, traces and metrics.
    pub telemetry: TelemetryConfig,
    /// Where backups are kept and how their verification is watched.
    pub backup: BackupConfig,
    /// Erasure of organisations (`DELETE /admin/organisations/{org}`).
    pub erasure: ErasureConfig,
}

/// Backups: the default destination, and the verification status exported as metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// The backup root: a directory, `file:///dir` or `s3://bucket/prefix`. Unset: no default
    /// destination, and no `backup_*` series.
    pub url: Option<String>,
    /// How often the service reads the root's verification record and newest backup.
    #[serde(with = "humantime_serde")]
    pub status_interval: Duration,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            url: None,
            status_interval: Duration::from_secs(60),
        }
    }
}

/// Erasure of organisations: how long the physical purge may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErasureConfig {
    /// Time from an erasure request to its physical completion in every tier; the background
    /// task retries a purge that could not finish until then (and logs an error past it).
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Time between two attempts of the background task at an unfinished purge; shorter than
    /// `deadline`.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(24 * 60 * 60),
            retry_interval: Duration::from_secs(60),
        }
    }
}

/// The Redis server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` (`rediss://` for TLS); unset means no Redis (in-process rate
    /// limits). With `cluster`, a seed node of the cluster.
    pub url: Option<String>,
    /// `url` is a seed node of a Redis Cluster: decisions use cluster-aware connections.
    pub cluster: bool,
    /// More seed nodes of the cluster besides `url` (with `cluster` only).
    pub cluster_seeds: Vec<String>,
    /// A PEM file of the CA that `rediss://` servers are verified against instead of the
    /// system's roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let telemetry = TelemetryConfig {
            service_name: "mainstay-api".into(),
            service_version: env!("CARGO_PKG_VERSION").into(),
            ..TelemetryConfig::default()
        };
        Self {
            server: ServerConfig::default(),
            admin: AdminConfig::default(),
            auth: AuthConfig::default(),
            shutdown: ShutdownConfig::default(),
            health: HealthConfig::default(),
            redis: RedisConfig::default(),
            ratelimit: RateLimitConfig::default(),
            storage: StoreConfig::default(),
            dlq: DlqConfig::default(),
            telemetry,
            backup: BackupConfig::default(),
            erasure: ErasureConfig::default(),
        }
    }
}

/// The HTTP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The address the service listens on.
    pub addr: SocketAddr,
    /// How long one request may take before it is answered 504 (its outcome is then unknown to
    /// the client: a write may or may not have been applied).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The largest request body accepted, in bytes; larger bodies are answered 413.
    pub body_limit_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            request_timeout: Duration::from_secs(30),
            body_limit_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The admin API under `/admin`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The bearer token admin callers present. With no token the admin routes do not exist.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    /// Never shows the token.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// Authentication of `/v1` callers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether callers without a key are let in, as anonymous members of the `public` organisation.
    pub allow_anonymous: bool,
    /// The API keys, stored as SHA-256 hashes (`printf %s KEY | sha256sum`). File only.
    pub api_keys: Vec<ApiKeyEntry>,
    /// Failed authentications (unknown or malformed keys) allowed per client network (the rate
    /// limiter's prefix identity) before such requests are answered 429; counted on Redis when
    /// `redis.url` is set. A valid key always passes.
    pub failure_limit: mainstay_ratelimit::LimitSpec,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            api_keys: Vec::new(),
            failure_limit: mainstay_ratelimit::LimitSpec::new(
                10,
                std::time::Duration::from_secs(60),
            ),
        }
    }
}

/// One configured API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The lowercase hex SHA-256 of the key; the key itself is never stored.
    pub key_sha256: String,
    /// The organisation the key belongs to.
    pub organisation: String,
    /// The caller tier the key grants.
    #[serde(default = "ApiKeyEntry::default_tier")]
    pub tier: Tier,
    /// The organisation's plan, which sets its hourly quota.
    #[serde(default)]
    pub plan: Plan,
}

impl Tier {
    /// The kebab-case name (`api-key`), as in configuration and rate-limit policies.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Anonymous => "anonymous",
            Tier::ApiKey => "api-key",
            Tier::Premium => "premium",
            Tier::Admin => "admin",
        }
    }
}

impl Plan {
    /// The kebab-case name (`enterprise`), as in configuration and rate-limit policies.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }
}

impl ApiKeyEntry {
    fn default_tier() -> Tier {
        Tier::ApiKey
    }
}

/// The caller tiers rate limits are set by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// A caller without a key.
    Anonymous,
    /// A caller with an ordinary API key.
    ApiKey,
    /// A caller with a premium key.
    Premium,
    /// An internal caller without limits.
    Admin,
}

/// The plans organisations are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Plan {
    /// The free plan.
    #[default]
    Free,
    /// The pro plan.
    Pro,
    /// The enterprise plan.
    Enterprise,
}

/// Graceful shutdown on SIGTERM or SIGINT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// The whole budget from the signal to exit; keep it under Kubernetes' grace period (30 s).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long the listener keeps accepting after readiness turned 503, so that load balancers
    /// stop sending new traffic first.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(25),
            drain_delay: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AdminConfig, Config};

    #[test]
    fn the_admin_config_debug_hides_the_token() {
        let admin = AdminConfig {
            token: Some("admin-hunter2".into()),
        };
        let shown = format!("{admin:?} {:?}", Config::default());
        assert!(!format!("{admin:?}").contains("admin-hunter2"));
        assert!(format!("{admin:?}").contains("[REDACTED]"));
        assert!(shown.contains("AdminConfig"));
    }
}
