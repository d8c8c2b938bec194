//! The circuit breaker's configuration, its presets and the crate's configuration error.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration value outside what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid value {value} for `{key}`: {allowed}")]
pub struct ConfigError {
    /// The configuration key, as written in the configuration file.
    pub key: &'static str,
    /// The rejected value, formatted.
    pub value: String,
    /// What the key accepts.
    pub allowed: &'static str,
}

impl ConfigError {
    pub(crate) fn new(
        key: &'static str,
        value: impl std::fmt::Debug,
        allowed: &'static str,
    ) -> Self {
        Self {
            key,
            value: format!("{value:?}"),
            allowed,
        }
    }
}

/// Which rule trips a closed breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TripPolicy {
    /// `consecutive_failures` failures in a row, with no success between them.
    Consecutive,
    /// More than `failure_rate` of the calls in the last `window` failed, once at least
    /// `minimum_calls` calls were made in it.
    FailureRate,
}

/// A circuit breaker's rules. `Default` is the [`BreakerConfig::critical_dependency`] preset.
///
/// Durations are humantime strings in configuration files (`"30s"`, `"5m"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// The trip rule. Default `consecutive`.
    pub trip: TripPolicy,
    /// Failures in a row that trip the `consecutive` policy. Default 5.
    pub consecutive_failures: u32,
    /// The failure ratio (0 to 1, exclusive) that the `failure_rate` policy must exceed. Default 0.5.
    pub failure_rate: f64,
    /// The sliding window of the `failure_rate` policy. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Buckets the window slides by, rounded up to a power of two (window / buckets is its
    /// granularity). Default 16 (3.75 s steps over 60 s).
    pub window_buckets: u32,
    /// Calls the window must hold before the `failure_rate` policy may trip. Default 5.
    pub minimum_calls: u32,
    /// A successful call that took at least this long counts as a failure (and as `slow` in the
    /// metrics). Default none.
    #[serde(with = "humantime_serde")]
    pub slow_call_threshold: Option<Duration>,
    /// How long the breaker stays open before it admits trial calls. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
    /// Each consecutive reopening (without closing between) multiplies the open duration by this.
    /// Default 1 (no growth).
    pub open_duration_multiplier: f64,
    /// The cap on an open duration that grows or is jittered: no opening lasts longer. Default
    /// 300 s.
    #[serde(with = "humantime_serde")]
    pub max_open_duration: Duration,
    /// Random spread of each open duration, as a fraction (0.1 = plus or minus 10%). Default 0.
    pub open_duration_jitter: f64,
    /// Trial calls admitted at once while half-open; the others are rejected. Default 1.
    pub half_open_max_calls: u32,
    /// Consecutive trial successes that close the breaker; any trial failure reopens it. Default 1.
    pub half_open_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self::critical_dependency()
    }
}

/// The upper bound of the half-open counters (they are packed into the state word).
const MAX_HALF_OPEN: u32 = 1_000;

impl BreakerConfig {
    /// Preset for a dependency a request cannot do without (API services): 5 consecutive failures
    /// open it for 30 s, then one trial call; its success closes it, its failure reopens it.
    #[must_use]
    pub fn critical_dependency() -> Self {
        Self {
            trip: TripPolicy::Consecutive,
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(60),
            window_buckets: 16,
            minimum_calls: 5,
            slow_call_threshold: None,
            open_duration: Duration::from_secs(30),
            open_duration_multiplier: 1.0,
            max_open_duration: Duration::from_secs(300),
            open_duration_jitter: 0.0,
            half_open_max_calls: 1,
            half_open_successes: 1,
        }
    }

    /// Preset for a slow optional dependency (a reranker): 3 consecutive failures open it for 60 s,
    /// then one trial call.
    #[must_use]
    pub fn optional_dependency() -> Self {
        Self::consecutive(3, Duration::from_secs(60))
    }

    /// Preset for object-store uploads (storage tiering): more than 50% of at least 5 calls failing
    /// within 60 s opens it for 300 s; then trial calls one at a time, 10 successes in a row close it
    /// and any failure reopens it.
    #[must_use]
    pub fn object_store_uploads() -> Self {
        Self {
            half_open_successes: 10,
            ..Self::failure_rate(0.5, Duration::from_secs(60), Duration::from_secs(300))
        }
    }

    /// A `consecutive` breaker: `failures` in a row open it for `open_duration`; other fields
    /// default.
    #[must_use]
    pub fn consecutive(failures: u32, open_duration: Duration) -> Self {
        Self {
            consecutive_failures: failures,
            open_duration,
            ..Self::critical_dependency()
        }
    }

    /// A `failure_rate` breaker: more than `rate` failures in `window` open it for
    /// `open_duration`; other fields default.
    #[must_use]
    pub fn failure_rate(rate: f64, window: Duration, open_duration: Duration) -> Self {
        Self {
            trip: TripPolicy::FailureRate,
            failure_rate: rate,
            window,
            open_duration,
            ..Self::critical_dependency()
        }
    }

    /// Whether openings vary (grow or are jittered), and so are capped by `max_open_duration`.
    pub(crate) fn open_duration_varies(&self) -> bool {
        self.open_duration_multiplier > 1.0 || self.open_duration_jitter > 0.0
    }

    /// Checks every field; the error names the first key that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == 0 {
            return Err(ConfigError::new(
                "consecutive_failures",
                self.consecutive_failures,
                "at least 1",
            ));
        }
        if !(self.failure_rate > 0.0 && self.failure_rate < 1.0) {
            return Err(ConfigError::new(
                "failure_rate",
                self.failure_rate,
                "a ratio strictly between 0 and 1",
            ));
        }
        if self.window < Duration::from_millis(1) {
            return Err(ConfigError::new("window", self.window, "at least 1ms"));
        }
        if self.window_buckets == 0 || self.window_buckets > 1_000 {
            return Err(ConfigError::new(
                "window_buckets",
                self.window_buckets,
                "1 to 1000",
            ));
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new(
                "minimum_calls",
                self.minimum_calls,
                "at least 1",
            ));
        }
        if self
            .slow_call_threshold
            .is_some_and(|threshold| threshold.is_zero())
        {
            return Err(ConfigError::new(
                "slow_call_threshold",
                self.slow_call_threshold,
                "a positive duration, or unset",
            ));
        }
        if self.open_duration.is_zero() {
            return Err(ConfigError::new(
                "open_duration",
                self.open_duration,
                "a positive duration",
            ));
        }
        if !(self.open_duration_multiplier >= 1.0 && self.open_duration_multiplier.is_finite()) {
            return Err(ConfigError::new(
                "open_duration_multiplier",
                self.open_duration_multiplier,
                "a finite number of at least 1",
            ));
        }
        if self.open_duration_varies() && self.max_open_duration < self.open_duration {
            return Err(ConfigError::new(
                "max_open_duration",
                self.max_open_duration,
                "at least open_duration when open_duration_multiplier is above 1 or open_duration_jitter above 0",
            ));
        }
        if !(0.0..1.0).contains(&self.open_duration_jitter) {
            return Err(ConfigError::new(
                "open_duration_jitter",
                self.open_duration_jitter,
                "a fraction from 0 (included) to 1 (excluded)",
            ));
        }
        if self.half_open_max_calls == 0 || self.half_open_max_calls > MAX_HALF_OPEN {
            return Err(ConfigError::new(
                "half_open_max_calls",
                self.half_open_max_calls,
                "1 to 1000",
            ));
        }
        if self.half_open_successes == 0 || self.half_open_successes > MAX_HALF_OPEN {
            return Err(ConfigError::new(
                "half_open_successes",
                self.half_open_successes,
                "1 to 1000",
            ));
        }
        Ok(())
    }
}
