//! The service configuration: types, loading with figment, validation and the generated reference.
//!
//! Precedence, lowest first: the defaults below < the standard `OTEL_*` variables of the telemetry
//! keys (`OTEL_EXPORTER_OTLP_ENDPOINT`, ...; decision 0092) < `mainstay.toml` in the working
//! directory (or the file named by `--config PATH`) < `MAINSTAY_` environment variables, where
//! `__` separates the levels (`MAINSTAY_SERVER__ADDR`) < the admin overrides file. Every key is documented in `docs/configuration.md`, generated
//! from these types by `cargo xtask codegen`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use mainstay_dlq::DlqConfig;
use mainstay_health::HealthConfig;
use mainstay_ratelimit::RateLimitConfig;
use mainstay_storage_tiering::StoreConfig;
use mainstay_telemetry::TelemetryConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "mainstay.toml";

/// The prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "MAINSTAY_";

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

/// A configuration that could not be loaded: names the key, the value and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` does not exist.
    #[error("configuration file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    /// A value has the wrong type or form, or a key is unknown.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    /// Names the key, the value as given and what the key takes, for every error figment found.
    fn from_figment(error: figment::Error, figment: &Figment) -> Self {
        let messages: Vec<String> = error
            .into_iter()
            .map(|error| {
                let key = error.path.join(".");
                let source = error
                    .metadata
                    .as_ref()
                    .map(|metadata| format!(" (from {})", metadata.name))
                    .unwrap_or_default();
                if key.is_empty() {
                    return format!("{}{source}", error.kind);
                }
                let given = figment
                    .find_value(&key)
                    .ok()
                    .and_then(|value| serde_json::to_string(&value).ok())
                    .map(|value| {
                        // A malformed secret is named, never shown.
                        let leaf = key.rsplit('.').next().unwrap_or_default();
                        if is_secret_key(leaf) {
                            " = [REDACTED]".to_owned()
                        } else {
                            format!(" = {value}")
                        }
                    })
                    .unwrap_or_default();
                let allowed = KEY_DOCS
                    .iter()
                    .find(|(documented, _, _)| *documented == key)
                    .map(|(_, kind, _)| format!("; allowed: {kind}"))
                    .unwrap_or_default();
                format!("key `{key}`{given}: {}{allowed}{source}", error.kind)
            })
            .collect();
        ConfigError::Invalid(messages.join("; "))
    }
}

/// One telemetry setting from a standard `OTEL_*` variable, as a figment provider named after
/// the variable (so that `config print` and errors name it).
struct OtelVariable(mainstay_telemetry::otel_env::OtelSetting);

impl Provider for OtelVariable {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("`{}` environment variable", self.0.variable))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::default(&format!("telemetry.{}", self.0.key), &self.0.value).data()
    }
}

/// The figment for a configuration: defaults < `OTEL_*` < file < `MAINSTAY_*` environment.
///
/// `file` is the `--config` path; without it `mainstay.toml` is read when it exists.
pub fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
    figment_with_otel(file, |name| std::env::var(name).ok())
}

/// [`figment`] with the `OTEL_*` variables read through `otel_lookup`.
fn figment_with_otel(
    file: Option<&Path>,
    otel_lookup: impl Fn(&str) -> Option<String>,
) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    let otel = mainstay_telemetry::otel_env::settings(otel_lookup)
        .map_err(|error| ConfigError::Invalid(error.to_string()))?;
    for setting in otel {
        figment = figment.merge(OtelVariable(setting));
    }
    match file {
        Some(path) if !path.is_file() => return Err(ConfigError::MissingFile(path.to_path_buf())),
        Some(path) => figment = figment.merge(Toml::file_exact(path)),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
            figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
        }
        None => {}
    }
    // Only nested keys (`MAINSTAY_SECTION__KEY`) are configuration, so unrelated variables that
    // happen to share the prefix are left alone.
    let env = Env::prefixed(ENV_PREFIX)
        .filter(|key| key.as_str().contains("__"))
        .split("__");
    Ok(figment.merge(env))
}

/// The file, under `storage.data_dir`, that holds the settings changed through the admin API. It
/// is read last, so it wins over the file and the environment.
pub const ADMIN_OVERRIDES_FILE: &str = "admin-config.toml";

/// Loads and validates the configuration.
pub fn load(file: Option<&Path>) -> Result<(Config, Figment), ConfigError> {
    let mut figment = figment(file)?;
    // The overrides live in the data directory, which the layers below name.
    if let Ok(data_dir) = figment.extract_inner::<PathBuf>("storage.data_dir") {
        let overrides = data_dir.join(ADMIN_OVERRIDES_FILE);
        if overrides.is_file() {
            figment = figment.merge(Toml::file_exact(overrides));
        }
    }
    let config: Config = figment
        .extract()
        .map_err(|error| ConfigError::from_figment(error, &figment))?;
    config
        .validate()
        .map_err(|error| name_otel_source(error, &figment))?;
    Ok((config, figment))
}

/// An invalid value that came from an `OTEL_*` variable also names the variable, so that the
/// operator knows where to look (`telemetry.otlp_ca_file` from `OTEL_EXPORTER_OTLP_CERTIFICATE`).
fn name_otel_source(error: ConfigError, figment: &Figment) -> ConfigError {
    let ConfigError::Invalid(message) = &error else {
        return error;
    };
    let key = message
        .strip_prefix("key `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key);
    let source = key
        .and_then(|key| figment.find_value(key).ok())
        .and_then(|value| figment.get_metadata(value.tag()))
        .map(|metadata| metadata.name.to_string())
        .filter(|name| name.starts_with("`OTEL_"));
    match source {
        Some(source) => ConfigError::Invalid(format!("{message} (from the {source})")),
        None => error,
    }
}

/// The health checks only the record store and its dead-letter queue register: absent in the
/// stateless mode (`storage.enabled = false`), where overrides naming them are ignored.
pub const STORAGE_CHECKS: &[&str] = &[
    "dlq",
    "dlq-journal",
    "object-store",
    "storage-wal",
    "storage-writer",
];

impl Config {
    /// The names of the health checks `health.checks.<name>` may override: always
    /// `circuit-breakers`, `disk`, `dlq`, `dlq-journal`, `memory`, `object-store`, `storage-wal`
    /// and `storage-writer` (the [`STORAGE_CHECKS`] are registered only with `storage.enabled`,
    /// but are accepted in both modes so that one file serves both); `redis` when `redis.url` is
    /// set.
    #[must_use]
    pub fn registrable_checks(&self) -> Vec<&'static str> {
        let mut names = vec![
            "circuit-breakers",
            "disk",
            "dlq",
            "dlq-journal",
            "memory",
            "object-store",
            "storage-wal",
            "storage-writer",
        ];
        if self.redis.url.is_some() {
            names.push("redis");
        }
        names
    }

    /// Checks the rules the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: &dyn std::fmt::Display, allowed: &str| {
            Err(ConfigError::Invalid(format!(
                "key `{key}`: `{value}` is not allowed; {allowed}"
            )))
        };
        if self.server.request_timeout.is_zero() {
            return invalid(
                "server.request_timeout",
                &"0s",
                "use a positive duration such as `30s`",
            );
        }
        if self.server.body_limit_bytes == 0 {
            return invalid(
                "server.body_limit_bytes",
                &0,
                "use a positive number of bytes",
            );
        }
        if self
            .admin
            .token
            .as_deref()
            .is_some_and(|token| token.len() < 16)
        {
            return invalid(
                "admin.token",
                &"[REDACTED]",
                "use a token of at least 16 characters",
            );
        }
        if self.erasure.deadline.is_zero() {
            return invalid(
                "erasure.deadline",
                &"0s",
                "use a positive duration such as `24h`",
            );
        }
        if self.erasure.retry_interval.is_zero()
            || self.erasure.retry_interval >= self.erasure.deadline
        {
            return invalid(
                "erasure.retry_interval",
                &humantime::format_duration(self.erasure.retry_interval),
                "use a positive duration shorter than `erasure.deadline`, such as `1m`",
            );
        }
        if self.shutdown.timeout.is_zero() {
            return invalid(
                "shutdown.timeout",
                &"0s",
                "use a positive duration such as `25s`",
            );
        }
        // The drain delay must end before the part of the budget kept for flushing (a fifth of
        // `shutdown.timeout`, at most 5 s): a delay inside it would always end in exit 1.
        let drain_budget = self
            .shutdown
            .timeout
            .saturating_sub(crate::server::flush_reserve(self.shutdown.timeout));
        if self.shutdown.drain_delay >= drain_budget {
            return invalid(
                "shutdown.drain_delay",
                &humantime::format_duration(self.shutdown.drain_delay),
                &format!(
                    "it must be shorter than `shutdown.timeout` less the flush reserve (a fifth, at most 5 s): under {}",
                    humantime::format_duration(drain_budget)
                ),
            );
        }
        for (index, entry) in self.auth.api_keys.iter().enumerate() {
            let is_sha256 = entry.key_sha256.len() == 64
                && entry
                    .key_sha256
                    .bytes()
                    .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
            if !is_sha256 {
                return invalid(
                    &format!("auth.api_keys[{index}].key_sha256"),
                    &entry.key_sha256,
                    "use the 64 lowercase hex digits of the key's SHA-256 (`printf %s KEY | sha256sum`)",
                );
            }
            if entry.organisation.is_empty() {
                return invalid(
                    &format!("auth.api_keys[{index}].organisation"),
                    &"",
                    "name the organisation the key belongs to",
                );
            }
        }
        self.auth
            .failure_limit
            .validate("auth.failure_limit")
            .map_err(|error| from_ratelimit(&error))?;
        if let Some(url) = &self.redis.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return invalid("redis.url", url, "use a URL like `redis://127.0.0.1:6379`");
        }
        self.validate_redis_cluster_and_tls()?;
        self.validate_backup()?;
        self.health.validate().map_err(|error| {
            invalid_value(
                &format!("health.{}", error.key()),
                &error.value(),
                &error.allowed(),
            )
        })?;
        // Check names are known before anything is built, so that `config check` and start-up
        // refuse the same overrides (the application asserts that it registers exactly these).
        self.health
            .validate_check_names(&self.registrable_checks())
            .map_err(|error| {
                invalid_value(
                    &format!("health.{}", error.key()),
                    &error.value(),
                    &error.allowed(),
                )
            })?;
        // Every library section is validated here, so that `config check` refuses exactly what
        // start-up refuses, with one message format: the dotted key, the value, what is allowed.
        self.ratelimit
            .validate_with_redis(self.redis.url.as_deref())
            .map_err(|error| from_ratelimit(&error))?;
        self.storage.validate().map_err(|error| {
            invalid_value(
                &format!("storage.{}", error.key),
                &error.value,
                &error.allowed,
            )
        })?;
        self.dlq.validate().map_err(|error| {
            invalid_value(&format!("dlq.{}", error.key), &error.value, error.allowed)
        })?;
        self.telemetry.validate().map_err(|error| {
            let mainstay_telemetry::ConfigError::Invalid {
                key,
                value,
                allowed,
            } = error;
            invalid_value(&format!("telemetry.{key}"), &value, allowed)
        })
    }
}

/// The one message of an invalid value: `key `storage.memtable_bytes`: `0` is not allowed; at
/// least 1024`.
fn invalid_value(key: &str, value: &str, allowed: &str) -> ConfigError {
    ConfigError::Invalid(format!("key `{key}`: `{value}` is not allowed; {allowed}"))
}

/// A `mainstay-ratelimit` configuration error in the application's one message format.
pub(crate) fn from_ratelimit(error: &mainstay_ratelimit::ConfigError) -> ConfigError {
    invalid_value(&error.key, &error.value, &error.allowed)
}

impl Config {
    /// `redis.cluster`, `redis.cluster_seeds` and `redis.tls_ca_file`: seeds are URLs of the
    /// same scheme as `redis.url` (a cluster is TLS or not throughout) and need `redis.cluster`;
    /// the CA file is a readable PEM certificate and goes with `rediss://`.
    /// `backup.url` names a directory or an object store, and `backup.status_interval` is
    /// positive.
    fn validate_backup(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.backup.url {
            let scheme_ok = ["file://", "s3://", "memory://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
                || Path::new(url).is_absolute();
            if !scheme_ok || url.trim().is_empty() {
                return Err(invalid_value(
                    "backup.url",
                    url,
                    "use an absolute directory, `file:///dir` or `s3://bucket/prefix`",
                ));
            }
        }
        if self.backup.status_interval.is_zero() {
            return Err(invalid_value(
                "backup.status_interval",
                "0s",
                "use a positive duration such as `60s`",
            ));
        }
        Ok(())
    }

    fn validate_redis_cluster_and_tls(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: &dyn std::fmt::Display, allowed: &str| {
            Err(ConfigError::Invalid(format!(
                "key `{key}`: `{value}` is not allowed; {allowed}"
            )))
        };
        let redis = &self.redis;
        let tls = redis
            .url
            .as_deref()
            .is_some_and(|url| url.starts_with("rediss://"));
        if redis.cluster && redis.url.is_none() {
            return invalid(
                "redis.cluster",
                &true,
                "set `redis.url` to a seed node of the cluster, or leave `redis.cluster` false",
            );
        }
        if !redis.cluster_seeds.is_empty() && !redis.cluster {
            return invalid(
                "redis.cluster_seeds",
                &redis.cluster_seeds.join(", "),
                "seeds are for a Redis Cluster: set `redis.cluster = true`, or remove them",
            );
        }
        for (index, seed) in redis.cluster_seeds.iter().enumerate() {
            let scheme = if tls { "rediss://" } else { "redis://" };
            if !seed.starts_with(scheme) {
                return invalid(
                    &format!("redis.cluster_seeds[{index}]"),
                    seed,
                    &format!(
                        "use a URL like `{scheme}127.0.0.1:7001`, with the scheme of `redis.url` (a cluster is TLS throughout or not at all)"
                    ),
                );
            }
        }
        if let Some(path) = &redis.tls_ca_file {
            let shown = path.display();
            if !tls {
                return invalid(
                    "redis.tls_ca_file",
                    &shown,
                    "a CA file is for TLS: use a `rediss://` `redis.url`, or remove it",
                );
            }
            match std::fs::read(path) {
                Err(error) => {
                    return invalid(
                        "redis.tls_ca_file",
                        &shown,
                        &format!("name a readable PEM file ({error})"),
                    );
                }
                Ok(pem)
                    if !pem
                        .windows(b"-----BEGIN CERTIFICATE-----".len())
                        .any(|window| window == b"-----BEGIN CERTIFICATE-----") =>
                {
                    return invalid(
                        "redis.tls_ca_file",
                        &shown,
                        "name a PEM file holding the CA's certificate (-----BEGIN CERTIFICATE-----)",
                    );
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// Key names whose values are never shown.
/// Keys shown as `[REDACTED]` besides those whose name holds a secret by the logs' patterns
/// (`*token*`, `*secret*`, `*password*`, ...): hashes of API keys, header lists (an OTLP
/// collector's `Authorization`), and the storage master key.
const SECRET_KEYS: &[&str] = &["key_sha256", "headers", "otlp_headers", "master_key"];

/// Secret tables whose entry names are shown (which headers are sent), values masked.
const NAMES_SHOWN: &[&str] = &["headers", "otlp_headers"];

/// The value of the secret key `leaf`, masked: a header table keeps its names, every other value
/// is `[REDACTED]` whole.
fn mask_whole(leaf: &str, value: Value) -> Value {
    match value {
        Value::Object(map) if NAMES_SHOWN.contains(&leaf) => Value::Object(
            map.into_iter()
                .map(|(name, _)| (name, Value::String("[REDACTED]".into())))
                .collect(),
        ),
        _ => Value::String("[REDACTED]".into()),
    }
}

/// Whether the setting `leaf` (the last segment of its key) holds a secret.
fn is_secret_key(leaf: &str) -> bool {
    SECRET_KEYS.contains(&leaf) || mainstay_telemetry::is_secret_name(leaf)
}

/// `value` with every secret masked: values of secret keys at any depth, and in every string
/// that is a URL, its user-info (`redis://[REDACTED]@host:6379`) and the values of query
/// parameters with secret names (`?password=[REDACTED]`).
fn mask_secrets(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(mask_url(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(mask_secrets).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(name, value)| {
                    let value = if is_secret_key(&name) && !value.is_null() {
                        mask_whole(&name, value)
                    } else {
                        mask_secrets(value)
                    };
                    (name, value)
                })
                .collect(),
        ),
        other => other,
    }
}

/// A URL with its user-info and secret query values masked; any other text unchanged.
pub(crate) fn mask_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..authority_start]);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str("[REDACTED]");
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let after = &rest[authority_len..];
    let (before_query, query_and_fragment) = match after.find('?') {
        Some(question) => (&after[..question], Some(&after[question + 1..])),
        None => (after, None),
    };
    out.push_str(before_query);
    if let Some(query_and_fragment) = query_and_fragment {
        let (query, fragment) = match query_and_fragment.find('#') {
            Some(hash) => (&query_and_fragment[..hash], &query_and_fragment[hash..]),
            None => (query_and_fragment, ""),
        };
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_key(name) => format!("{name}=[REDACTED]"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
        out.push_str(fragment);
    }
    out
}

/// Tables documented and shown as one key (their entries are names the operator chooses).
const LEAF_TABLES: &[&str] = &[
    "auth.failure_limit",
    "storage.upload.breaker",
    "storage.upload.retry_budget",
    "dlq.queues",
    "health.checks",
    "ratelimit.breaker",
    "ratelimit.plans",
    "ratelimit.route_classes",
    "ratelimit.routes",
    "ratelimit.tiers",
    "telemetry.otlp_headers",
    "telemetry.resource_attributes",
];

/// Optional keys the configuration types leave out when unset.
const ABSENT_WHEN_UNSET: &[&str] = &["ratelimit.secret"];

/// Every configuration key with its current value, flattened (`server.addr`), secrets masked.
#[must_use]
pub fn flatten(config: &Config) -> BTreeMap<String, Value> {
    let mut keys = BTreeMap::new();
    let value = serde_json::to_value(config).unwrap_or(Value::Null);
    flatten_into(&mut keys, String::new(), value);
    for key in ABSENT_WHEN_UNSET {
        keys.entry((*key).to_owned()).or_insert(Value::Null);
    }
    keys
}

fn flatten_into(keys: &mut BTreeMap<String, Value>, prefix: String, value: Value) {
    let is_table = prefix.is_empty() || !LEAF_TABLES.contains(&prefix.as_str());
    match value {
        Value::Object(map) if is_table && (!map.is_empty() || prefix.is_empty()) => {
            for (name, value) in map {
                let key = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                flatten_into(keys, key, value);
            }
        }
        value => {
            let leaf = prefix.rsplit('.').next().unwrap_or_default();
            let masked = if is_secret_key(leaf) && !value.is_null() {
                mask_whole(leaf, value)
            } else {
                mask_secrets(value)
            };
            keys.insert(prefix, masked);
        }
    }
}

/// `mainstay-api config print`: the effective configuration, one key a line with where its value
/// came from, secrets masked.
#[must_use]
pub fn print(config: &Config, figment: &Figment) -> String {
    let mut out = String::from("# effective configuration of mainstay-api (secrets masked)\n");
    for (key, value) in flatten(config) {
        let source = figment
            .find_value(&key)
            .ok()
            .and_then(|value| {
                figment
                    .get_metadata(value.tag())
                    .map(|metadata| match &metadata.source {
                        Some(figment::Source::File(path)) => {
                            format!("{} {}", metadata.name, path.display())
                        }
                        _ => metadata.name.to_string(),
                    })
            })
            .filter(|name| !name.starts_with(std::any::type_name::<Config>()))
            .unwrap_or_else(|| "default".into());
        out.push_str(&format!("{key} = {}  # {source}\n", render(&value)));
    }
    out
}

fn render(value: &Value) -> String {
    match value {
        Value::Null => "(unset)".into(),
        other => other.to_string(),
    }
}

/// The documentation of every key: type and description. A test checks that it names exactly the
/// keys the configuration types have, so a new key cannot ship undocumented.
pub const KEY_DOCS: &[(&str, &str, &str)] = &[
    (
        "admin.token",
        "string (secret)",
        "Bearer token of the admin API; at least 16 characters. Without it the `/admin` routes do not exist.",
    ),
    (
        "auth.allow_anonymous",
        "bool",
        "Let callers without an API key in, as anonymous members of the `public` organisation.",
    ),
    (
        "auth.api_keys",
        "array of tables (file only)",
        "API keys: `{ key_sha256, organisation, tier = \"api-key\"|\"premium\"|\"admin\", plan = \"free\"|\"pro\"|\"enterprise\" }`.",
    ),
    (
        "auth.failure_limit",
        "table `{ requests, period, burst }`",
        "Failed authentications (unknown or malformed API keys) allowed per client network (`ratelimit.ipv4_prefix_len`/`ipv6_prefix_len`, after `ratelimit.trusted_proxies`) before such requests are answered 429 with `Retry-After`; counted on Redis when `redis.url` is set, in process otherwise and during a Redis outage. A valid key always passes. Default 10 per minute.",
    ),
    (
        "backup.status_interval",
        "duration",
        "How often the service reads the backup root's verification record and newest backup for the `backup_*` metrics.",
    ),
    (
        "backup.url",
        "URL or unset",
        "The backup root (a directory, `file:///dir` or `s3://bucket/prefix`): the default destination of `POST /admin/backups` and `backup create`, and the root whose verification the `backup_*` metrics report. Unset: no default, no `backup_*` series.",
    ),
    (
        "dlq.cleanup_interval",
        "duration",
        "How often expired entries are archived and removed.",
    ),
    (
        "dlq.compact_after_bytes",
        "integer (bytes)",
        "The journal is compacted into a snapshot past this size (and at shutdown).",
    ),
    (
        "dlq.defaults.archive",
        "bool",
        "Evicted and expired entries of a queue are appended to its archive file.",
    ),
    (
        "dlq.defaults.capacity",
        "integer",
        "Entries a queue holds before its overflow policy applies.",
    ),
    (
        "dlq.defaults.overflow",
        "`evict` | `reject`",
        "At capacity: evict the oldest entry (archived, counted) or refuse the push with a typed error.",
    ),
    (
        "dlq.defaults.ttl",
        "duration or unset",
        "Age after which an entry expires (archived); unset keeps entries until redriven or deleted.",
    ),
    (
        "dlq.journal_recovery",
        "`skip_corrupt` | `refuse`",
        "A damaged DLQ journal record followed by valid ones: recover around it (a copy kept in `dlq/log/corrupt/`, the loss logged and reported) or refuse to start (exit 4). A torn tail is always truncated.",
    ),
    (
        "dlq.max_payload_bytes",
        "integer (bytes)",
        "Largest inline payload; larger is refused whole, never truncated.",
    ),
    (
        "dlq.max_total_payload_bytes",
        "integer (bytes)",
        "Bound on the inline payload bytes of all queues together.",
    ),
    (
        "dlq.queues",
        "table of queue settings by name",
        "Per-queue overrides of `dlq.defaults`, e.g. `[dlq.queues.uploads] overflow = \"reject\"`.",
    ),
    (
        "dlq.redrive_rate_per_second",
        "integer",
        "Entries redriven per second at most (0 = unlimited).",
    ),
    (
        "dlq.sync_mode",
        "`grouped` | `per_push`",
        "Concurrent pushes share one fsync (grouped), or each push has its own.",
    ),
    (
        "dlq.total_capacity",
        "integer",
        "Entries of all queues together.",
    ),
    (
        "erasure.deadline",
        "duration",
        "Time from `DELETE /admin/organisations/{org}` to the physical completion of the erasure in every tier (WAL, local segments, object store, DLQ); the background task retries until then and logs an error past it. Default `24h`.",
    ),
    (
        "erasure.retry_interval",
        "duration",
        "Time between two attempts of the background task at an unfinished erasure; shorter than `erasure.deadline`. Default `1m`.",
    ),
    (
        "health.background_refresh",
        "bool",
        "Refresh the checks in the background every `cache_interval`, so probes never wait for a check.",
    ),
    (
        "health.cache_interval",
        "duration",
        "How long one run of the checks answers probes; a burst of probes makes at most one call per dependency per interval.",
    ),
    (
        "health.checks",
        "table of `{ timeout, critical }` by check name",
        "Per-check overrides, e.g. `[health.checks.redis] critical = true`. Checks: `circuit-breakers`, `disk`, `dlq`, `dlq-journal`, `memory`, `object-store`, `storage-wal`, `storage-writer`, and `redis` when `redis.url` is set; another name is refused (exit 2). With `storage.enabled = false` the store's checks (`dlq`, `dlq-journal`, `object-store`, `storage-wal`, `storage-writer`) are not registered and their overrides are ignored.",
    ),
    (
        "health.default_timeout",
        "duration",
        "Timeout of a check that sets none; a check past it is reported unhealthy.",
    ),
    (
        "health.disk.degraded_below_free_percent",
        "float in 0..=100",
        "The `disk` check is degraded below this much free space.",
    ),
    ("health.disk.enabled", "bool", "Register the `disk` check."),
    (
        "health.disk.path",
        "path",
        "A path on the file system the `disk` check watches; `.` (the default) means `storage.data_dir`, where the WAL is (with `storage.enabled = false`, the working directory).",
    ),
    (
        "health.disk.unhealthy_below_free_percent",
        "float in 0..=100",
        "The `disk` check is unhealthy below this much free space.",
    ),
    (
        "health.memory.degraded_above_used_percent",
        "float in 0..=100",
        "The `memory` check is degraded above this much memory in use.",
    ),
    (
        "health.memory.enabled",
        "bool",
        "Register the `memory` check.",
    ),
    (
        "health.memory.unhealthy_above_used_percent",
        "float in 0..=100",
        "The `memory` check is unhealthy above this much memory in use.",
    ),
    (
        "ratelimit.anonymous_plan",
        "string",
        "Plan of callers without a key (a key of `ratelimit.plans`).",
    ),
    (
        "ratelimit.anonymous_tier",
        "string",
        "Tier of callers without a key (a key of `ratelimit.tiers`).",
    ),
    (
        "ratelimit.breaker",
        "table (breaker config)",
        "Circuit breaker around Redis (`trip`, `consecutive_failures`, `open_duration`, `half_open_max_calls`, ...); listed as `ratelimit-redis` on the admin API.",
    ),
    (
        "ratelimit.default_class",
        "string",
        "Route class of routes not in `ratelimit.routes`.",
    ),
    ("ratelimit.enabled", "bool", "Limit `/v1` requests at all."),
    (
        "ratelimit.fallback",
        "`local` | `allow` | `deny`",
        "While Redis is unavailable: in-process limits divided by the live instance count (`instance_count` before one was read), let everything through, or refuse everything (then the `redis` check is critical).",
    ),
    (
        "ratelimit.heartbeat_interval",
        "duration",
        "How often each instance announces itself in Redis and reads the live instance count the `local` fallback divides every limit by.",
    ),
    (
        "ratelimit.instance_count",
        "integer",
        "Instances sharing the limits, for the `local` fallback only when no live count was ever read from Redis.",
    ),
    (
        "ratelimit.ipv4_prefix_len",
        "integer",
        "Anonymous callers are counted per IPv4 network of this many bits (1 to 32; 32 is one address).",
    ),
    (
        "ratelimit.ipv6_prefix_len",
        "integer",
        "Anonymous callers are counted per IPv6 network of this many bits (1 to 128; 64 is one subnet).",
    ),
    (
        "ratelimit.key_prefix",
        "string",
        "Prefix of every Redis key.",
    ),
    (
        "ratelimit.max_local_keys",
        "integer",
        "Keys each in-process limit holds; past it a new key evicts the least recently used one, which starts again with a full bucket.",
    ),
    (
        "ratelimit.over_limit_cache",
        "bool",
        "Deny keys Redis denied locally until their retry time, without a round trip.",
    ),
    (
        "ratelimit.over_limit_cache_max_keys",
        "integer",
        "Keys the over-limit cache holds.",
    ),
    (
        "ratelimit.plans",
        "table of `{ requests, period, burst }` by plan",
        "Hourly quota per organisation by plan (free 1,000/h, pro 10,000/h, enterprise 100,000/h).",
    ),
    (
        "ratelimit.redis_connect_timeout",
        "duration",
        "How long making a Redis connection may take; connections are made in the background, never while a decision waits.",
    ),
    (
        "ratelimit.redis_pool_size",
        "integer",
        "Multiplexed connections kept to Redis (1 to 64); calls take them in turn.",
    ),
    (
        "ratelimit.redis_response_timeout",
        "duration",
        "How long a Redis command may stay unanswered before it counts as a failure for the breaker (slower is down, faster is loaded); at least `redis_timeout`.",
    ),
    (
        "ratelimit.redis_timeout",
        "duration",
        "How long a decision waits for Redis before the fallback decides it; the call goes on, and its late answer counts as a success.",
    ),
    (
        "ratelimit.route_classes",
        "table of `{ requests, period, burst }` by class",
        "Per-caller limits by route class (writes 60/min, queries 30/min, default 100/min, burst 20).",
    ),
    (
        "ratelimit.routes",
        "table of class by `\"METHOD /template\"`",
        "Route templates mapped to route classes.",
    ),
    (
        "ratelimit.secret",
        "string (secret), at least 16 bytes",
        "HMAC secret identities are hashed with before they become Redis keys or log fields; required with `redis.url`, random per process otherwise.",
    ),
    (
        "ratelimit.sweep_interval",
        "duration",
        "How often idle in-process keys are reclaimed.",
    ),
    (
        "ratelimit.tiers",
        "table of tier limits by tier",
        "Limits per caller tier (anonymous 100/min, api-key 1000/min, premium 5000/min, admin unlimited).",
    ),
    (
        "ratelimit.trusted_proxies",
        "array of addresses or CIDR blocks",
        "Peers allowed to name the client with `X-Forwarded-For`; from anyone else it is ignored.",
    ),
    (
        "redis.cluster",
        "boolean",
        "`redis.url` is a seed node of a Redis Cluster: decisions use cluster-aware connections that follow `MOVED`/`ASK`, and the `redis` check reports `cluster_state`.",
    ),
    (
        "redis.cluster_seeds",
        "array of URLs",
        "More seed nodes of the cluster besides `redis.url` (with `redis.cluster = true`), with the same scheme.",
    ),
    (
        "redis.tls_ca_file",
        "path",
        "PEM file of the CA that `rediss://` servers are verified against instead of the system's roots.",
    ),
    (
        "redis.url",
        "URL",
        "Redis shared by the instances, `redis://host:port` (`rediss://` for TLS, verified with rustls); unset means in-process rate limits and no `redis` check.",
    ),
    ("server.addr", "socket address", "Address to listen on."),
    (
        "server.body_limit_bytes",
        "integer (bytes)",
        "Largest request body accepted; larger is answered 413.",
    ),
    (
        "server.request_timeout",
        "duration",
        "Time one request may take before it is answered 504 (a write cut short is indeterminate: it may or may not have been applied).",
    ),
    (
        "shutdown.drain_delay",
        "duration",
        "Time the listener keeps accepting after readiness turned 503 on SIGTERM; shorter than `shutdown.timeout` less its flush reserve (a fifth, at most 5 s).",
    ),
    (
        "shutdown.timeout",
        "duration",
        "Budget from SIGTERM/SIGINT to exit: drain (all but a fifth, at most 5 s), then the store, the DLQ and telemetry within what is left; the process exits at most 1 s past it whatever hangs (exit 1).",
    ),
    (
        "storage.block_bytes",
        "integer (bytes)",
        "Target size of a segment block before compression.",
    ),
    (
        "storage.cache_bytes",
        "integer (bytes)",
        "Object-store blocks cached in memory for `s3_only` collections (LRU).",
    ),
    (
        "storage.compaction.collect_orphans",
        "bool",
        "Delete objects no manifest references (left by a crash) once older than `grace_period`: after start-up, every `interval` and after an admin compaction.",
    ),
    (
        "storage.compaction.enabled",
        "bool",
        "Compact collections in the background.",
    ),
    (
        "storage.compaction.grace_period",
        "duration",
        "Replaced objects are deleted this long after the manifest that dropped them; objects no manifest references are collected once this old.",
    ),
    (
        "storage.compaction.interval",
        "duration",
        "How often background compaction looks for work.",
    ),
    (
        "storage.compaction.min_segments",
        "integer",
        "Segments of one size tier that start a compaction.",
    ),
    (
        "storage.compression",
        "`none` | `gzip` | `zstd`",
        "Compression of segment blocks written from now on; segments already written keep theirs.",
    ),
    (
        "storage.flush_interval",
        "duration",
        "A memtable older than this is frozen into a segment, so a quiet collection neither pins the WAL nor keeps its data from the object store.",
    ),
    (
        "storage.limits.default_page_size",
        "integer",
        "Records per listing page when the caller names none.",
    ),
    (
        "storage.limits.max_batch_bytes",
        "integer (bytes)",
        "Largest batch; larger is answered 413.",
    ),
    (
        "storage.limits.max_batch_records",
        "integer",
        "Most records in one batch; more is answered 413.",
    ),
    (
        "storage.limits.max_page_size",
        "integer",
        "Largest listing page a caller may ask for.",
    ),
    (
        "storage.limits.max_value_bytes",
        "integer (bytes)",
        "Largest record value; larger is answered 413.",
    ),
    (
        "storage.max_wal_bytes",
        "integer (bytes)",
        "Past this many bytes of WAL files on disk, the memtables holding the oldest records are frozen so their WAL files can go (segments waiting for upload keep theirs).",
    ),
    (
        "storage.memtable_bytes",
        "integer (bytes)",
        "A collection's memtable is frozen into a segment past this size.",
    ),
    (
        "storage.encryption",
        "boolean",
        "Seal every record value with its organisation's data key (XChaCha20-Poly1305; ids and collection names stay plain). Needs `storage.master_key`. Values written before it was on stay readable (docs/operations/encryption.md).",
    ),
    (
        "storage.master_key",
        "string (secret): 64 hex digits or base64 of 32 bytes",
        "The key that wraps the per-organisation data keys; required with `storage.encryption` (exit 2 without it, or when it is not the key the key store was set up with). Make one with `openssl rand -hex 32`; keep it in a secret, not in the file.",
    ),
    (
        "storage.keys_url",
        "URL",
        "Where the wrapped data keys and the erasure ledger live: `file:///path`, `memory://` or `s3://bucket/prefix`; keep it out of backups. Unset: `_keys` under the object store of `storage.object_store_url`.",
    ),
    (
        "storage.object_store_url",
        "URL",
        "`file:///path`, `memory://` or `s3://bucket/prefix` (endpoint, region and credentials from `AWS_*`); unset means `data_dir/objects` on the local file system.",
    ),
    (
        "storage.upload.attempt_timeout",
        "duration",
        "Timeout of one upload attempt.",
    ),
    (
        "storage.upload.backpressure_retry_after",
        "duration",
        "`Retry-After` of a write refused because the local backlog is full.",
    ),
    (
        "storage.upload.base_delay",
        "duration",
        "First retry delay of an upload (doubling, full jitter).",
    ),
    (
        "storage.upload.batch_bytes",
        "integer (bytes)",
        "Bytes of segments committed to one manifest at most.",
    ),
    (
        "storage.upload.batch_segments",
        "integer",
        "Segments committed to one manifest at most.",
    ),
    (
        "storage.upload.breaker",
        "table (breaker config)",
        "Circuit breaker of the uploads (default: above 50% failures over 60 s opens for 300 s; 10 successes close).",
    ),
    (
        "storage.upload.breaker_poll_interval",
        "duration",
        "How often the worker looks again while the breaker is open.",
    ),
    (
        "storage.upload.dlq_capacity",
        "integer",
        "Segments the `storage-segments` dead-letter queue holds (it rejects past that, never evicts or expires).",
    ),
    (
        "storage.upload.max_attempts",
        "integer",
        "Attempts of one upload before its segment is pinned and dead-lettered.",
    ),
    (
        "storage.upload.max_backlog_bytes",
        "integer (bytes)",
        "Bytes not yet uploaded past which writes are refused with 503 + `Retry-After`.",
    ),
    (
        "storage.upload.max_delay",
        "duration",
        "Longest retry delay of an upload.",
    ),
    (
        "storage.upload.parallelism",
        "integer",
        "Uploads in flight at once.",
    ),
    (
        "storage.upload.retry_budget",
        "table (`ratio`, `min_retries_per_second`, `ttl`)",
        "Retry budget shared by all uploads.",
    ),
    (
        "storage.wal_recovery",
        "`refuse` | `skip_corrupt`",
        "A WAL file damaged in the middle (valid frames after a bad one): `refuse` stops start-up with exit code 4 naming the file, offset and frames that follow; `skip_corrupt` keeps a copy under `data_dir/corrupt/`, recovers every valid frame and reports the loss until acknowledged. A torn tail is always cut quietly.",
    ),
    (
        "storage.wal_segment_bytes",
        "integer (bytes)",
        "A WAL file is rotated past this size.",
    ),
    (
        "storage.data_dir",
        "path",
        "Directory for everything kept on disk (the dead-letter queue under `dlq/`, the admin overrides in `admin-config.toml`). With `storage.enabled = false` it need not exist: only the admin API's runtime configuration is persisted there, when it is writable.",
    ),
    (
        "storage.enabled",
        "bool",
        "Run the record store. `false` is the stateless mode (docs/operations/stateless.md): no WAL, object store, dead-letter queue or records API (`/v1/collections...`, `/admin/dlq...`, `/admin/collections/...`, `/admin/store/...` answer 404 of type `.../storage-disabled`), no storage health checks or metrics; the other `storage.*` and `dlq.*` keys are still validated but ignored. Limits, health, telemetry, auth and the admin API stay.",
    ),
    (
        "telemetry.log_filter",
        "string",
        "Log filter directives (`info`, `mainstay_api=debug,info`); `RUST_LOG` overrides it.",
    ),
    (
        "telemetry.log_format",
        "`json` | `pretty`",
        "One bunyan JSON object per line, or human-readable lines.",
    ),
    (
        "telemetry.otlp_ca_file",
        "path",
        "PEM file of CA certificates trusted for an `https://` OTLP endpoint besides the system roots (a private CA or a self-signed collector).",
    ),
    (
        "telemetry.otlp_endpoint",
        "URL",
        "OTLP collector endpoint (`http://` or `https://`, verified against the system roots and `telemetry.otlp_ca_file`); unset means no trace export. For `http/protobuf` an endpoint without a path gets `/v1/traces`.",
    ),
    (
        "telemetry.otlp_headers",
        "table of strings (secret)",
        "Headers (gRPC metadata) sent with every export, e.g. `{ authorization = \"Bearer ...\" }`; lower-case names. Values are masked in `config print` and `GET /admin/config`; they win over the same names in `OTEL_EXPORTER_OTLP_HEADERS`.",
    ),
    (
        "telemetry.otlp_protocol",
        "`http/protobuf` | `grpc`",
        "OTLP transport.",
    ),
    (
        "telemetry.redact_fields",
        "array of strings",
        "More field-name patterns whose values are written as `[REDACTED]` in logs and spans, added to the built-in ones (`*token*`, `*secret*`, `*password*`, `*passwd*`, `*api_key*`, `*apikey*`, `authorization`, `cookie`, `set-cookie`); compared in lower case with `-` as `_`, `*` matches any run.",
    ),
    (
        "telemetry.resource_attributes",
        "table of strings",
        "More resource attributes of exported spans, e.g. `{ \"deployment.environment.name\" = \"prod\" }`; not `service.name`, `service.version` or `service.instance.id` (their own keys).",
    ),
    (
        "telemetry.sampling_ratio",
        "float in 0..=1",
        "Parent-based trace-id-ratio sampling of new traces.",
    ),
    (
        "telemetry.service_instance_id",
        "string",
        "`service.instance.id` resource attribute; unset means a random id per process.",
    ),
    (
        "telemetry.service_name",
        "string",
        "`service.name` resource attribute and the `name` of log lines.",
    ),
    (
        "telemetry.service_version",
        "string",
        "`service.version` resource attribute; defaults to the binary's version.",
    ),
];

/// Keys that cannot be set from the environment.
const FILE_ONLY: &[&str] = &["auth.api_keys"];

/// `docs/configuration.md`, generated from the configuration types and [`KEY_DOCS`].
pub fn reference() -> String {
    let defaults = flatten(&Config::default());
    let mut out = String::from(
        "<!-- Generated by `cargo xtask codegen` from apps/api/src/config.rs; do not edit. -->\n\
         # Configuration reference\n\n\
         `mainstay-api` reads, lowest precedence first: the defaults below, then `mainstay.toml` in the\n\
         working directory (or the file given with `--config PATH`), then environment variables named\n\
         `MAINSTAY_` + the key in upper case with `__` between levels, then the settings changed through\n\
         the admin API (`admin-config.toml` in `storage.data_dir`). The standard OpenTelemetry variables\n\
         named in the table (`OTEL_EXPORTER_OTLP_ENDPOINT`, ...) sit just above the defaults: the file\n\
         and `MAINSTAY_` variables win over them. An invalid value stops the\n\
         service with exit code 2 and a message naming the key (or variable), the value and what is allowed.\n\
         `mainstay-api config print` shows the effective value of every key and where it came from.\n\
         `mainstay-api probe live|ready|startup` (the container health check) reads `server.addr` the\n\
         same way and asks a wildcard bind address (`0.0.0.0`, `[::]`) on loopback; `--addr` overrides it.\n\n\
         Two modes (docs/operations/stateless.md): with `storage.enabled = true` (the default) the\n\
         service runs the record store and serves every route; with `storage.enabled = false` it runs\n\
         stateless, without the records API (`/v1/collections...`), the dead-letter queue and the\n\
         store's admin routes, which answer 404 of type `.../storage-disabled`. The other\n\
         `storage.*` keys and the `dlq.*` keys matter only with storage on; stateless, they are\n\
         validated (so that one file serves both modes) and ignored.\n\n\
         | key | type | default | environment | description |\n|---|---|---|---|---|\n",
    );
    for (key, kind, description) in KEY_DOCS {
        let default = defaults.get(*key).map(render).unwrap_or_default();
        let env = if FILE_ONLY.contains(key) {
            "file only".to_string()
        } else {
            format!("`{ENV_PREFIX}{}`", key.to_uppercase().replace('.', "__"))
        };
        let otel = mainstay_telemetry::otel_env::KEYS
            .iter()
            .find(|(_, otel_key)| key.strip_prefix("telemetry.") == Some(*otel_key))
            .map(|(variable, _)| format!(", `{variable}`"))
            .unwrap_or_default();
        let env = format!("{env}{otel}");
        // A `|` inside a cell (`none` | `gzip`) would end it: escape it for the table.
        let cell = |text: &str| text.replace('|', "\\|");
        out.push_str(&format!(
            "| `{key}` | {} | `{}` | {env} | {} |\n",
            cell(kind),
            cell(&default),
            cell(description)
        ));
    }
    out
}

#[cfg(test)]
mod secret_tests {
    use serde_json::{Value, json};

    use super::{AdminConfig, Config, flatten, mask_url};

    /// Issue 15, point 4: the user-info of every URL and the secret query values are masked.
    #[test]
    fn urls_lose_their_user_info_and_secret_query_values() {
        for (url, masked) in [
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://[REDACTED]@127.0.0.1:6379/0",
            ),
            (
                "rediss://app:hunter2@redis.internal:6380",
                "rediss://[REDACTED]@redis.internal:6380",
            ),
            (
                "s3://AKIAXXX:hunter2@bucket/prefix?region=eu-west-1",
                "s3://[REDACTED]@bucket/prefix?region=eu-west-1",
            ),
            (
                "https://user:p%40ss@collector:4318/v1/traces",
                "https://[REDACTED]@collector:4318/v1/traces",
            ),
            (
                "s3://bucket/p?access_key_id=AKIA&secret_access_key=hunter2#x",
                "s3://bucket/p?access_key_id=AKIA&secret_access_key=[REDACTED]#x",
            ),
            (
                "http://collector:4318?api_key=hunter2&token=t",
                "http://collector:4318?api_key=[REDACTED]&token=[REDACTED]",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url: a@b", "not a url: a@b"),
            ("file:///data/mainstay", "file:///data/mainstay"),
        ] {
            assert_eq!(mask_url(url), masked, "{url}");
        }
    }

    /// Every key that is or holds a secret is masked in the flattened configuration that
    /// `config print` and `GET /admin/config` show, and every URL in it loses its user-info.
    #[test]
    fn secret_keys_and_urls_are_masked_in_the_configuration_dump() {
        let mut config = Config::default();
        config.admin.token = Some("admin-hunter2".into());
        config.redis.url = Some("redis://:redis-hunter2@127.0.0.1:6379".into());
        config.storage.object_store_url = Some("s3://AKIA:s3-hunter2@bucket/p".into());
        config.telemetry.otlp_endpoint = Some("https://otlp:otlp-hunter2@collector:4318".into());
        config.storage.master_key = Some(
            "a1a2a3a4a5a6a7a8a9aaabacadaeafa0b1b2b3b4b5b6b7b8b9babbbcbdbebfb0"
                .parse()
                .expect("key"),
        );
        let keys = flatten(&config);
        let dump = serde_json::to_string(&keys).expect("json");
        for secret in [
            "admin-hunter2",
            "redis-hunter2",
            "s3-hunter2",
            "otlp-hunter2",
            "a1a2a3a4a5a6a7a8",
        ] {
            assert!(!dump.contains(secret), "{secret} shown in {dump}");
        }
        assert_eq!(keys["admin.token"], json!("[REDACTED]"));
        assert_eq!(keys["storage.master_key"], json!("[REDACTED]"));
        assert_eq!(
            keys["redis.url"],
            json!("redis://[REDACTED]@127.0.0.1:6379")
        );
        assert_eq!(
            keys["telemetry.otlp_endpoint"],
            json!("https://[REDACTED]@collector:4318")
        );
        assert_eq!(
            keys["server.addr"],
            Value::from(config.server.addr.to_string())
        );
    }

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

#[cfg(test)]
mod otel_tests {
    use std::path::Path;

    use super::{Config, figment_with_otel, print};

    fn load(toml: Option<&str>, otel: &[(&str, &str)]) -> (Config, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mainstay.toml");
        std::fs::write(&path, toml.unwrap_or_default()).expect("write");
        let figment = figment_with_otel(Some(Path::new(&path)), |name| {
            otel.iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned())
        })
        .expect("figment");
        let config: Config = figment.extract().expect("extract");
        let printed = print(&config, &figment);
        (config, printed)
    }

    /// Issue 15, point 11: `OTEL_*` values apply over the defaults, the file wins over them, and
    /// `config print` names the variable a value came from.
    #[test]
    fn otel_variables_sit_between_the_defaults_and_the_file() {
        for (toml, otel, ratio, source) in [
            (None, &[][..], 0.1, "# default"),
            (
                None,
                &[("OTEL_TRACES_SAMPLER_ARG", "0.5")][..],
                0.5,
                "# `OTEL_TRACES_SAMPLER_ARG` environment variable",
            ),
            (
                Some("[telemetry]\nsampling_ratio = 0.75\n"),
                &[("OTEL_TRACES_SAMPLER_ARG", "0.5")][..],
                0.75,
                "# TOML file",
            ),
        ] {
            let (config, printed) = load(toml, otel);
            assert_eq!(config.telemetry.sampling_ratio, ratio, "{otel:?}");
            let line = printed
                .lines()
                .find(|line| line.starts_with("telemetry.sampling_ratio ="))
                .expect("printed");
            assert!(line.contains(source), "{line}");
        }
    }

    #[test]
    fn otel_headers_merge_with_the_file_and_print_masked() {
        let (config, printed) = load(
            Some("[telemetry.otlp_headers]\nauthorization = \"Bearer from-file\"\n"),
            &[
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "Authorization=Bearer%20from-env,x-tenant=env-tenant",
                ),
                ("OTEL_SERVICE_NAME", "orders"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment.name=prod",
                ),
            ],
        );
        assert_eq!(
            config.telemetry.otlp_headers["authorization"],
            "Bearer from-file"
        );
        assert_eq!(config.telemetry.otlp_headers["x-tenant"], "env-tenant");
        assert_eq!(config.telemetry.service_name, "orders");
        assert_eq!(
            config.telemetry.resource_attributes["deployment.environment.name"],
            "prod"
        );
        for secret in ["from-file", "from-env", "env-tenant"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(
            printed.contains(
                "telemetry.otlp_headers = {\"authorization\":\"[REDACTED]\",\"x-tenant\":\"[REDACTED]\"}"
            ),
            "{printed}"
        );
        assert!(
            printed.contains(
                "telemetry.service_name = \"orders\"  # `OTEL_SERVICE_NAME` environment variable"
            ),
            "{printed}"
        );
        assert!(!format!("{config:?}").contains("from-file"));
    }

    #[test]
    fn a_malformed_otel_variable_is_a_configuration_error_naming_it() {
        let error = figment_with_otel(None, |name| {
            (name == "OTEL_EXPORTER_OTLP_HEADERS").then(|| "authorization".to_owned())
        })
        .expect_err("malformed");
        assert!(
            error
                .to_string()
                .contains("invalid environment variable OTEL_EXPORTER_OTLP_HEADERS"),
            "{error}"
        );
    }
}
