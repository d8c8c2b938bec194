//! Loading the configuration: the figment layers (defaults < `OTEL_*` < file < `MAINSTAY_*`
//! environment < admin overrides), the validation of what the types cannot express, and
//! [`ConfigError`], whose messages name the key, the value and what is allowed.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};

use super::print::is_secret_key;
use super::reference::KEY_DOCS;
use super::types::Config;

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "mainstay.toml";

/// The prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "MAINSTAY_";

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
        self.telemetry.validate().map_err(|error| match error {
            mainstay_telemetry::ConfigError::Invalid {
                key,
                value,
                allowed,
            } => invalid_value(&format!("telemetry.{key}"), &value, allowed),
            // A kind of error a later telemetry release may add: its own message.
            other => ConfigError::Invalid(format!("telemetry: {other}")),
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

#[cfg(test)]
mod otel_tests {
    use std::path::Path;

    use super::figment_with_otel;
    use crate::config::{Config, print};

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
