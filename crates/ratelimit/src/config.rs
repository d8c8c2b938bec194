//! The rate limiter's configuration (`ratelimit.*`), its documented defaults and its validation.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use mainstay_resilience::BreakerConfig;
use serde::{Deserialize, Serialize};

use crate::proxy::TrustedProxies;

/// A configuration value outside what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value {value} for `{key}`: {allowed}")]
pub struct ConfigError {
    /// The configuration key, as the application exposes it (`ratelimit.tiers.premium.burst`).
    pub key: String,
    /// The rejected value, formatted.
    pub value: String,
    /// What the key accepts.
    pub allowed: String,
}

impl ConfigError {
    pub(crate) fn new(
        key: impl Into<String>,
        value: impl fmt::Debug,
        allowed: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            value: format!("{value:?}"),
            allowed: allowed.into(),
        }
    }
}

/// The secret identities are HMAC'd with. Its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret's bytes.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret([redacted])")
    }
}

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// What decides while Redis is unavailable (its circuit breaker is open, or a call failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FallbackMode {
    /// The in-process backend decides, with every limit divided by `instance_count` (the default):
    /// the fleet as a whole stays close to the configured limits.
    Local,
    /// Every request passes (fail-open): availability over limits.
    Allow,
    /// Every request is refused with 429 (fail-closed): limits over availability.
    Deny,
}

/// One GCRA limit: `requests` per `period`, at most `burst` at once.
///
/// The emission interval is `period / requests`: one request's worth of allowance comes back each
/// interval, up to `burst` stored. `burst` defaults to `requests` (a full period's worth at once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Requests allowed per period. At least 1.
    pub requests: u32,
    /// The period, as a humantime string (`"1m"`, `"1h"`). Positive.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Requests allowed at once. Default `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl LimitSpec {
    /// `requests` per `period`, with a burst of `requests`.
    #[must_use]
    pub fn new(requests: u32, period: Duration) -> Self {
        Self {
            requests,
            period,
            burst: None,
        }
    }

    /// The same limit with a burst of `burst`.
    #[must_use]
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// `requests` per minute.
    #[must_use]
    pub fn per_minute(requests: u32) -> Self {
        Self::new(requests, Duration::from_secs(60))
    }

    /// `requests` per hour.
    #[must_use]
    pub fn per_hour(requests: u32) -> Self {
        Self::new(requests, Duration::from_secs(3_600))
    }

    /// The burst in effect (`burst`, or `requests` when unset).
    #[must_use]
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests)
    }

    /// Checks the limit, reporting a problem under the configuration key `key` (the limit's own
    /// dotted key, such as `auth.failure_limit`).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for zero requests, a zero period or a burst of zero.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.requests == 0 {
            let allowed = if self.burst.is_some() {
                "at least 1: a limit of 0 cannot have a burst (use `bypass` on a tier for no limit)"
            } else {
                "at least 1 (use `bypass` on a tier for no limit)"
            };
            return Err(ConfigError::new(
                format!("{key}.requests"),
                self.requests,
                allowed,
            ));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new(
                format!("{key}.period"),
                self.period,
                "a positive duration such as \"1m\"",
            ));
        }
        if self.period.as_micros() / u128::from(self.requests) == 0 {
            return Err(ConfigError::new(
                format!("{key}.period"),
                self.period,
                "at least 1 microsecond per request (period / requests)",
            ));
        }
        if self.period > Duration::from_secs(366 * 24 * 3_600) {
            return Err(ConfigError::new(
                format!("{key}.period"),
                self.period,
                "at most one year",
            ));
        }
        if self.burst == Some(0) {
            return Err(ConfigError::new(
                format!("{key}.burst"),
                0,
                "at least 1, or unset for a burst of `requests`",
            ));
        }
        Ok(())
    }
}

/// The limit of one caller tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// Callers of this tier are not limited at all (no tier, route or quota limit, no headers).
    pub bypass: bool,
    /// The tier's limit per caller (ignored with `bypass`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitSpec>,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            bypass: false,
            limit: Some(LimitSpec::per_minute(100)),
        }
    }
}

impl TierConfig {
    /// A tier limited to `limit` per caller.
    #[must_use]
    pub fn limited(limit: LimitSpec) -> Self {
        Self {
            bypass: false,
            limit: Some(limit),
        }
    }

    /// A tier whose callers bypass every limit.
    #[must_use]
    pub fn bypass() -> Self {
        Self {
            bypass: true,
            limit: None,
        }
    }
}

/// The rate limiter's configuration: the keys the application exposes under `ratelimit.*`.
///
/// The Redis URL is not here: it is the application's `redis.url`, given to
/// [`crate::RateLimiterBuilder::redis_url`]. `Default` is the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Whether requests are limited at all. Default `true`.
    pub enabled: bool,
    /// The HMAC-SHA256 secret identities are hashed with before they become Redis keys or log
    /// fields; at least 16 bytes. Required when Redis is used (every instance must share it);
    /// without Redis a random per-process secret is used when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// How many instances share the limits, used by the `local` fallback only when no live count
    /// of instances was ever read from Redis (see `heartbeat_interval`). Default 1.
    pub instance_count: u32,
    /// How often each instance announces itself in Redis and reads how many instances are live
    /// (those heard from within three intervals); the `local` fallback divides every limit by the
    /// last live count it read. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// What decides while Redis is unavailable. Default `local`.
    pub fallback: FallbackMode,
    /// How long a decision waits for Redis before the fallback decides it. Default `20ms`. The
    /// call itself goes on: its late answer counts as a success for the breaker.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// How long making a Redis connection may take (in the background: no decision waits for it
    /// longer than `redis_timeout`). Default `1s`.
    #[serde(with = "humantime_serde")]
    pub redis_connect_timeout: Duration,
    /// How long a Redis command may stay unanswered before it counts as a failure towards the
    /// breaker: Redis slower than this is treated as down, faster as loaded. At least
    /// `redis_timeout`. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub redis_response_timeout: Duration,
    /// Multiplexed connections kept to Redis; calls take them in turn. Default 4.
    pub redis_pool_size: usize,
    /// The prefix of every Redis key. Default `rl`.
    pub key_prefix: String,
    /// The circuit breaker around Redis. Default: 5 consecutive failures open it for 5 s, then one
    /// trial call decides.
    pub breaker: BreakerConfig,
    /// The limits of caller tiers, by tier name. Defaults: `anonymous` 100/min, `api-key`
    /// 1000/min, `premium` 5000/min, `admin` bypass.
    pub tiers: BTreeMap<String, TierConfig>,
    /// The tier of callers the application did not identify. Default `anonymous`.
    pub anonymous_tier: String,
    /// The plan of callers the application did not identify. Default `free`.
    pub anonymous_plan: String,
    /// Per-caller limits by route class. Defaults: `writes` 60/min, `queries` 30/min, `default`
    /// 100/min, each with a burst of 20.
    pub route_classes: BTreeMap<String, LimitSpec>,
    /// Route templates to route classes. A key is `"METHOD /template"` or `"/template"` (any
    /// method); the route template comes from the application's router. Defaults: the record
    /// writes of the reference API are `writes`, its listings `queries`.
    pub routes: BTreeMap<String, String>,
    /// The class of routes not in `routes`. Default `default`.
    pub default_class: String,
    /// Hourly quotas per organisation, by plan. Defaults: `free` 1,000/h, `pro` 10,000/h,
    /// `enterprise` 100,000/h.
    pub plans: BTreeMap<String, LimitSpec>,
    /// Peers allowed to name the client through `X-Forwarded-For`: addresses or CIDR blocks
    /// (`10.0.0.0/8`, `::1`). Default none: the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Anonymous callers are counted per IPv4 network of this many leading bits. Default 32 (one
    /// address).
    pub ipv4_prefix_len: u8,
    /// Anonymous callers are counted per IPv6 network of this many leading bits. Default 64 (one
    /// subnet: a host that holds a /64 can use any of its addresses).
    pub ipv6_prefix_len: u8,
    /// The most keys each in-process limit store holds; past it, a new key evicts the least
    /// recently used one, which starts again with a full bucket when it comes back. Default
    /// 100,000.
    pub max_local_keys: usize,
    /// How often idle in-process keys are reclaimed. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Whether keys Redis denied are denied locally until their retry time, without a round trip.
    /// Default `true`.
    pub over_limit_cache: bool,
    /// The most keys the over-limit cache holds. Default 100,000.
    pub over_limit_cache_max_keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let burst = 20;
        Self {
            enabled: true,
            secret: None,
            instance_count: 1,
            heartbeat_interval: Duration::from_secs(2),
            fallback: FallbackMode::Local,
            redis_timeout: Duration::from_millis(20),
            redis_connect_timeout: Duration::from_secs(1),
            redis_response_timeout: Duration::from_secs(1),
            redis_pool_size: 4,
            key_prefix: "rl".into(),
            breaker: BreakerConfig::consecutive(5, Duration::from_secs(5)),
            tiers: BTreeMap::from([
                (
                    "anonymous".into(),
                    TierConfig::limited(LimitSpec::per_minute(100)),
                ),
                (
                    "api-key".into(),
                    TierConfig::limited(LimitSpec::per_minute(1_000)),
                ),
                (
                    "premium".into(),
                    TierConfig::limited(LimitSpec::per_minute(5_000)),
                ),
                ("admin".into(), TierConfig::bypass()),
            ]),
            anonymous_tier: "anonymous".into(),
            anonymous_plan: "free".into(),
            route_classes: BTreeMap::from([
                ("writes".into(), LimitSpec::per_minute(60).with_burst(burst)),
                (
                    "queries".into(),
                    LimitSpec::per_minute(30).with_burst(burst),
                ),
                (
                    "default".into(),
                    LimitSpec::per_minute(100).with_burst(burst),
                ),
            ]),
            routes: default_routes(),
            default_class: "default".into(),
            plans: BTreeMap::from([
                ("free".into(), LimitSpec::per_hour(1_000)),
                ("pro".into(), LimitSpec::per_hour(10_000)),
                ("enterprise".into(), LimitSpec::per_hour(100_000)),
            ]),
            trusted_proxies: Vec::new(),
            ipv4_prefix_len: 32,
            ipv6_prefix_len: 64,
            max_local_keys: 100_000,
            sweep_interval: Duration::from_secs(10),
            over_limit_cache: true,
            over_limit_cache_max_keys: 100_000,
        }
    }
}

/// The reference API's routes and their classes.
fn default_routes() -> BTreeMap<String, String> {
    let record = "/v1/collections/{collection}/records/{id}";
    let records = "/v1/collections/{collection}/records";
    let collections = "/v1/collections";
    BTreeMap::from([
        (format!("PUT {record}"), "writes".into()),
        (format!("DELETE {record}"), "writes".into()),
        (format!("POST {records}"), "writes".into()),
        (format!("POST {collections}"), "writes".into()),
        (
            format!("DELETE {collections}/{{collection}}"),
            "writes".into(),
        ),
        (format!("GET {records}"), "queries".into()),
        (format!("GET {collections}"), "queries".into()),
    ])
}

/// The name pattern of tiers, classes and plans: they appear in metric labels and Redis keys.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

const NAME_RULE: &str = "1 to 64 characters of a-z, A-Z, 0-9, `-`, `_` or `.`";

impl RateLimitConfig {
    /// Checks every key; the error names the first key that is wrong. The secret is checked only
    /// for its length here: whether it is required depends on Redis, see
    /// [`RateLimitConfig::validate_with_redis`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(secret) = &self.secret
            && secret.expose().len() < MIN_SECRET_LEN
        {
            return Err(ConfigError::new(
                "ratelimit.secret",
                format!("<{} bytes>", secret.expose().len()),
                format!("at least {MIN_SECRET_LEN} bytes"),
            ));
        }
        if self.instance_count == 0 {
            return Err(ConfigError::new(
                "ratelimit.instance_count",
                self.instance_count,
                "at least 1",
            ));
        }
        if self.heartbeat_interval < Duration::from_millis(10)
            || self.heartbeat_interval > Duration::from_secs(3_600)
        {
            return Err(ConfigError::new(
                "ratelimit.heartbeat_interval",
                self.heartbeat_interval,
                "a duration from 10ms to 1h",
            ));
        }
        if self.redis_timeout.is_zero() || self.redis_timeout > Duration::from_secs(10) {
            return Err(ConfigError::new(
                "ratelimit.redis_timeout",
                self.redis_timeout,
                "a positive duration of at most 10s",
            ));
        }
        if self.redis_connect_timeout.is_zero()
            || self.redis_connect_timeout > Duration::from_secs(60)
        {
            return Err(ConfigError::new(
                "ratelimit.redis_connect_timeout",
                self.redis_connect_timeout,
                "a positive duration of at most 60s",
            ));
        }
        if self.redis_response_timeout < self.redis_timeout
            || self.redis_response_timeout > Duration::from_secs(60)
        {
            return Err(ConfigError::new(
                "ratelimit.redis_response_timeout",
                self.redis_response_timeout,
                "a duration of at least `ratelimit.redis_timeout` and at most 60s",
            ));
        }
        if self.redis_pool_size == 0 || self.redis_pool_size > 64 {
            return Err(ConfigError::new(
                "ratelimit.redis_pool_size",
                self.redis_pool_size,
                "from 1 to 64 connections",
            ));
        }
        if !valid_name(&self.key_prefix) {
            return Err(ConfigError::new(
                "ratelimit.key_prefix",
                &self.key_prefix,
                NAME_RULE,
            ));
        }
        self.breaker.validate().map_err(|error| {
            ConfigError::new(
                format!("ratelimit.breaker.{}", error.key),
                error.value,
                error.allowed,
            )
        })?;
        for (name, tier) in &self.tiers {
            let key = format!("ratelimit.tiers.{name}");
            if !valid_name(name) {
                return Err(ConfigError::new(key, name, NAME_RULE));
            }
            match (&tier.limit, tier.bypass) {
                (Some(limit), false) => limit.validate(&format!("{key}.limit"))?,
                (None, false) => {
                    return Err(ConfigError::new(
                        format!("{key}.limit"),
                        "none",
                        "a limit, or `bypass = true`",
                    ));
                }
                (_, true) => {}
            }
        }
        if !self.tiers.contains_key(&self.anonymous_tier) {
            return Err(ConfigError::new(
                "ratelimit.anonymous_tier",
                &self.anonymous_tier,
                format!("a tier of `ratelimit.tiers` ({})", names(&self.tiers)),
            ));
        }
        for (name, limit) in &self.route_classes {
            let key = format!("ratelimit.route_classes.{name}");
            if !valid_name(name) {
                return Err(ConfigError::new(key, name, NAME_RULE));
            }
            limit.validate(&key)?;
        }
        if !self.route_classes.contains_key(&self.default_class) {
            return Err(ConfigError::new(
                "ratelimit.default_class",
                &self.default_class,
                format!(
                    "a class of `ratelimit.route_classes` ({})",
                    names(&self.route_classes)
                ),
            ));
        }
        for (route, class) in &self.routes {
            if !self.route_classes.contains_key(class) {
                return Err(ConfigError::new(
                    format!("ratelimit.routes.\"{route}\""),
                    class,
                    format!(
                        "a class of `ratelimit.route_classes` ({})",
                        names(&self.route_classes)
                    ),
                ));
            }
        }
        for (name, limit) in &self.plans {
            let key = format!("ratelimit.plans.{name}");
            if !valid_name(name) {
                return Err(ConfigError::new(key, name, NAME_RULE));
            }
            limit.validate(&key)?;
        }
        if !self.plans.contains_key(&self.anonymous_plan) {
            return Err(ConfigError::new(
                "ratelimit.anonymous_plan",
                &self.anonymous_plan,
                format!("a plan of `ratelimit.plans` ({})", names(&self.plans)),
            ));
        }
        TrustedProxies::parse(&self.trusted_proxies)?;
        if !(1..=32).contains(&self.ipv4_prefix_len) {
            return Err(ConfigError::new(
                "ratelimit.ipv4_prefix_len",
                self.ipv4_prefix_len,
                "from 1 to 32 bits",
            ));
        }
        if !(1..=128).contains(&self.ipv6_prefix_len) {
            return Err(ConfigError::new(
                "ratelimit.ipv6_prefix_len",
                self.ipv6_prefix_len,
                "from 1 to 128 bits",
            ));
        }
        if self.max_local_keys == 0 {
            return Err(ConfigError::new(
                "ratelimit.max_local_keys",
                self.max_local_keys,
                "at least 1",
            ));
        }
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::new(
                "ratelimit.sweep_interval",
                self.sweep_interval,
                "a positive duration",
            ));
        }
        if self.over_limit_cache && self.over_limit_cache_max_keys == 0 {
            return Err(ConfigError::new(
                "ratelimit.over_limit_cache_max_keys",
                self.over_limit_cache_max_keys,
                "at least 1 while `over_limit_cache` is on",
            ));
        }
        Ok(())
    }

    /// [`RateLimitConfig::validate`], plus the rules that hold when Redis is used (`redis_url` is
    /// the application's `redis.url`): the secret is then required.
    pub fn validate_with_redis(&self, redis_url: Option<&str>) -> Result<(), ConfigError> {
        self.validate()?;
        if redis_url.is_some() && self.enabled && self.secret.is_none() {
            return Err(ConfigError::new(
                "ratelimit.secret",
                "none",
                "a shared secret of at least 16 bytes, required when `redis.url` is set",
            ));
        }
        Ok(())
    }
}

fn names<V>(map: &BTreeMap<String, V>) -> String {
    map.keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
