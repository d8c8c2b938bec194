//! Configuration of a [`HealthRegistry`](crate::HealthRegistry) and its validation errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a [`HealthRegistry`](crate::HealthRegistry) runs and caches its checks.
///
/// Keys are relative to the section the application nests this struct under (`health.` in
/// `mainstay-api`); [`ConfigError`] names them the same way.
///
/// | key | default | meaning |
/// |---|---|---|
/// | `cache_interval` | `1s` | how long one run's results answer probes |
/// | `default_timeout` | `2s` | per-check timeout when neither the check nor `checks.<name>` sets one |
/// | `background_refresh` | `false` | refresh results every `cache_interval` after startup |
/// | `checks.<name>.timeout` | unset | overrides that check's timeout |
/// | `checks.<name>.critical` | unset | overrides that check's criticality |
/// | `disk.enabled` | `true` | register the built-in `disk` check |
/// | `disk.path` | `.` | path whose file system is checked |
/// | `disk.degraded_below_free_percent` | `10` | degraded below this much free space |
/// | `disk.unhealthy_below_free_percent` | `5` | unhealthy below this much free space |
/// | `memory.enabled` | `true` | register the built-in `memory` check |
/// | `memory.degraded_above_used_percent` | `85` | degraded above this much memory in use |
/// | `memory.unhealthy_above_used_percent` | `95` | unhealthy above this much memory in use |
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// How long the results of one run answer probes (default 1 s). Must be above zero.
    #[serde(with = "humantime_serde")]
    pub cache_interval: Duration,
    /// The timeout of a check that sets none itself (default 2 s). Must be above zero.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// Whether a background task refreshes the results every `cache_interval` once startup is
    /// marked complete, so that probes never wait for a check (default `false`).
    pub background_refresh: bool,
    /// Per-check overrides, keyed by check name.
    pub checks: BTreeMap<String, CheckOverride>,
    /// The built-in disk-space check.
    pub disk: DiskConfig,
    /// The built-in memory check.
    pub memory: MemoryConfig,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            cache_interval: Duration::from_secs(1),
            default_timeout: Duration::from_secs(2),
            background_refresh: false,
            checks: BTreeMap::new(),
            disk: DiskConfig::default(),
            memory: MemoryConfig::default(),
        }
    }
}

/// Overrides for one check, under `checks.<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckOverride {
    /// Replaces the check's timeout. Must be above zero.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Replaces the check's criticality (`true` critical, `false` non-critical).
    pub critical: Option<bool>,
}

/// The built-in `disk` check: free space of the file system holding `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskConfig {
    /// Whether the registry registers the check (default `true`).
    pub enabled: bool,
    /// A path on the file system to watch, usually the data directory (default `.`).
    pub path: PathBuf,
    /// Degraded when less than this percentage is free (default 10).
    pub degraded_below_free_percent: f64,
    /// Unhealthy when less than this percentage is free (default 5).
    pub unhealthy_below_free_percent: f64,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: PathBuf::from("."),
            degraded_below_free_percent: 10.0,
            unhealthy_below_free_percent: 5.0,
        }
    }
}

/// The built-in `memory` check: system memory in use and the process's resident memory against
/// its limit (the cgroup limit when there is one, else the system total).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Whether the registry registers the check (default `true`).
    pub enabled: bool,
    /// Degraded when more than this percentage is in use (default 85).
    pub degraded_above_used_percent: f64,
    /// Unhealthy when more than this percentage is in use (default 95).
    pub unhealthy_above_used_percent: f64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            degraded_above_used_percent: 85.0,
            unhealthy_above_used_percent: 95.0,
        }
    }
}

/// A configuration value that is not allowed. Every variant names the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be above zero is zero.
    #[error("`{key}` is 0s; set a duration above zero, such as \"2s\"")]
    ZeroDuration {
        /// The key, such as `checks.redis.timeout`.
        key: String,
    },
    /// A percentage is outside 0..=100 or not a number.
    #[error("`{key}` is {value}; set a percentage from 0 to 100")]
    PercentOutOfRange {
        /// The key, such as `disk.degraded_below_free_percent`.
        key: String,
        /// The value given.
        value: f64,
    },
    /// Two thresholds are in the wrong order.
    #[error("`{key}` ({value}) must be {relation} `{other_key}` ({other_value})")]
    ThresholdOrder {
        /// The key whose value is out of order.
        key: String,
        /// Its value.
        value: f64,
        /// `at least` or `at most`.
        relation: &'static str,
        /// The key it is compared with.
        other_key: String,
        /// That key's value.
        other_value: f64,
    },
    /// `checks.<name>` names no registered check.
    #[error("`{key}` names no registered check; known checks: {known}")]
    UnknownCheck {
        /// The key, `checks.<name>`.
        key: String,
        /// The registered check names, comma-separated.
        known: String,
    },
}

impl ConfigError {
    /// The configuration key the error is about.
    #[must_use]
    pub fn key(&self) -> &str {
        match self {
            Self::ZeroDuration { key }
            | Self::PercentOutOfRange { key, .. }
            | Self::ThresholdOrder { key, .. }
            | Self::UnknownCheck { key, .. } => key,
        }
    }

    /// The rejected value, as written in a configuration file (`0s`, `120`, the check name).
    #[must_use]
    pub fn value(&self) -> String {
        match self {
            Self::ZeroDuration { .. } => "0s".to_owned(),
            Self::PercentOutOfRange { value, .. } | Self::ThresholdOrder { value, .. } => {
                value.to_string()
            }
            Self::UnknownCheck { key, .. } => key.strip_prefix("checks.").unwrap_or(key).to_owned(),
        }
    }

    /// What the key accepts, in words.
    #[must_use]
    pub fn allowed(&self) -> String {
        match self {
            Self::ZeroDuration { .. } => "a duration above zero, such as \"2s\"".to_owned(),
            Self::PercentOutOfRange { .. } => "a percentage from 0 to 100".to_owned(),
            Self::ThresholdOrder {
                relation,
                other_key,
                other_value,
                ..
            } => format!("a value {relation} `{other_key}` ({other_value})"),
            Self::UnknownCheck { known, .. } => format!("one of the registered checks: {known}"),
        }
    }
}

impl HealthConfig {
    /// Checks every value that can be checked without knowing the registered checks.
    ///
    /// # Errors
    ///
    /// A zero `cache_interval`, `default_timeout` or `checks.<name>.timeout`, a percentage outside
    /// 0..=100, or thresholds in the wrong order (the unhealthy one must be the stricter).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cache_interval.is_zero() {
            return Err(zero("cache_interval"));
        }
        if self.default_timeout.is_zero() {
            return Err(zero("default_timeout"));
        }
        for (name, check) in &self.checks {
            if check.timeout.is_some_and(|timeout| timeout.is_zero()) {
                return Err(zero(&format!("checks.{name}.timeout")));
            }
        }
        let disk = &self.disk;
        percent(
            "disk.degraded_below_free_percent",
            disk.degraded_below_free_percent,
        )?;
        percent(
            "disk.unhealthy_below_free_percent",
            disk.unhealthy_below_free_percent,
        )?;
        if disk.unhealthy_below_free_percent > disk.degraded_below_free_percent {
            return Err(ConfigError::ThresholdOrder {
                key: "disk.unhealthy_below_free_percent".to_owned(),
                value: disk.unhealthy_below_free_percent,
                relation: "at most",
                other_key: "disk.degraded_below_free_percent".to_owned(),
                other_value: disk.degraded_below_free_percent,
            });
        }
        let memory = &self.memory;
        percent(
            "memory.degraded_above_used_percent",
            memory.degraded_above_used_percent,
        )?;
        percent(
            "memory.unhealthy_above_used_percent",
            memory.unhealthy_above_used_percent,
        )?;
        if memory.unhealthy_above_used_percent < memory.degraded_above_used_percent {
            return Err(ConfigError::ThresholdOrder {
                key: "memory.unhealthy_above_used_percent".to_owned(),
                value: memory.unhealthy_above_used_percent,
                relation: "at least",
                other_key: "memory.degraded_above_used_percent".to_owned(),
                other_value: memory.degraded_above_used_percent,
            });
        }
        Ok(())
    }

    /// Checks that every `checks.<name>` key names one of `known`.
    ///
    /// [`HealthRegistry::validate_check_names`](crate::HealthRegistry::validate_check_names) calls
    /// this with the registered names once the application has registered its checks.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownCheck`] for the first name that is not in `known`.
    pub fn validate_check_names(&self, known: &[&str]) -> Result<(), ConfigError> {
        for name in self.checks.keys() {
            if !known.contains(&name.as_str()) {
                let mut sorted = known.to_vec();
                sorted.sort_unstable();
                let known = if sorted.is_empty() {
                    "none".to_owned()
                } else {
                    sorted.join(", ")
                };
                return Err(ConfigError::UnknownCheck {
                    key: format!("checks.{name}"),
                    known,
                });
            }
        }
        Ok(())
    }
}

fn zero(key: &str) -> ConfigError {
    ConfigError::ZeroDuration {
        key: key.to_owned(),
    }
}

fn percent(key: &str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::PercentOutOfRange {
            key: key.to_owned(),
            value,
        })
    }
}
