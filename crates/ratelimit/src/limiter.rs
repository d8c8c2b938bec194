//! The rate limiter: resolves a request to the limits that apply (tier, route class, plan quota),
//! decides them on Redis or in process, and falls back when Redis is unavailable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use mainstay_clock::{FastClock, SharedClock};
use mainstay_resilience::{BreakerState, CircuitBreaker, ResilienceMetrics};
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;

use crate::cache::{Denied, Left, OverLimitCache, QuotaMemory};
use crate::config::{ConfigError, FallbackMode, RateLimitConfig};
use crate::gcra::{Gcra, Step, most_restrictive};
use crate::identity::{CallerIdentity, ClientNetwork, IdentityHasher, Pseudonym};
use crate::local::{InProcessLimiter, local_now};
use crate::metrics::{DecisionLabels, ErrorLabels, RateLimitMetrics, SwitchLabels};
use crate::proxy::TrustedProxies;
use crate::redis::{RedisBackend, RedisCallError};
use crate::reply::ScriptReply;

/// The name of the circuit breaker around Redis (its `breaker` metric label).
pub const BREAKER_NAME: &str = "ratelimit-redis";

/// Why a limiter could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Redis client could not be set up (a malformed `redis.url` or `redis.cluster_seeds`).
    #[error(
        "invalid `redis.url` or `redis.cluster_seeds`: {0}; expected redis://[user:password@]host:port[/db] (rediss:// for TLS)"
    )]
    RedisUrl(String),
    /// `redis.tls_ca_file` could not be read, holds no PEM certificate, or is set without a
    /// `rediss://` URL.
    #[error("invalid `redis.tls_ca_file` {path}: {reason}")]
    TlsCaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `redis.url` is set, but this build of the crate has no Redis backend (its `redis` feature
    /// is off). Never returned with the feature on; present either way, so that features stay
    /// additive.
    #[error(
        "`redis.url` is set, but mainstay-ratelimit was built without its `redis` feature; enable the feature, or unset `redis.url` to limit in process only"
    )]
    RedisFeatureDisabled,
}

/// Redis did not answer a [`RateLimiter::ping_redis`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; rate limits are decided by the fallback while redis is unavailable")]
pub struct PingError(pub String);

/// Which backend made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The in-process backend, the primary one when no Redis is configured.
    Memory,
    /// Redis.
    Redis,
    /// The fallback while Redis is unavailable (its mode is `ratelimit.fallback`).
    Fallback,
    /// The local over-limit cache (a denial known from an earlier Redis answer).
    Cache,
    /// Nothing: limits are disabled, or the caller's tier bypasses them.
    Bypass,
}

impl Backend {
    /// The `backend` label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Fallback => "fallback",
            Self::Cache => "cache",
            Self::Bypass => "bypass",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Memory => 0,
            Self::Redis => 1,
            Self::Fallback => 2,
            Self::Cache | Self::Bypass => 3,
        }
    }
}

/// The limit that speaks for a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    /// The policy's name: `tier:NAME`, `class:NAME` or `plan:NAME`, names from the configuration.
    pub name: Arc<str>,
    /// Requests per period (of this instance's share, for the `local` fallback).
    pub requests: u32,
    /// The period.
    pub period: Duration,
    /// The burst.
    pub burst: u32,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request passes.
    pub allowed: bool,
    /// The most restrictive limit: for a denial the denying limit with the longest wait, otherwise
    /// the one with the fewest requests remaining. `None` when nothing limited the request.
    pub policy: Option<PolicyInfo>,
    /// Requests of that limit that would still pass right now.
    pub remaining: u32,
    /// Time until that limit's bucket is full again.
    pub reset_after: Duration,
    /// For a denial: the time after which a request passes (zero when allowed).
    pub retry_after: Duration,
    /// Who decided.
    pub backend: Backend,
    /// Redis time of the decision (microseconds since the epoch), for Redis decisions.
    pub redis_time_micros: Option<u64>,
}

impl Decision {
    /// The decision of an in-process store's step (times in nanoseconds) under `policy`.
    pub(crate) fn of_step(step: Step, policy: PolicyInfo, backend: Backend) -> Self {
        Self {
            allowed: step.allowed,
            policy: Some(policy),
            remaining: step.remaining,
            reset_after: Duration::from_nanos(step.reset),
            retry_after: Duration::from_nanos(step.retry),
            backend,
            redis_time_micros: None,
        }
    }

    /// The decision of a Redis script reply under `policy`, the limit that speaks.
    pub(crate) fn of_reply(reply: &ScriptReply, policy: PolicyInfo) -> Self {
        Self {
            allowed: reply.allowed,
            policy: Some(policy),
            remaining: reply.remaining,
            reset_after: Duration::from_micros(reply.reset_us),
            retry_after: Duration::from_micros(reply.retry_us),
            backend: Backend::Redis,
            redis_time_micros: Some(reply.now_us),
        }
    }

    fn unlimited(backend: Backend) -> Self {
        Self {
            allowed: true,
            policy: None,
            remaining: 0,
            reset_after: Duration::ZERO,
            retry_after: Duration::ZERO,
            backend,
            redis_time_micros: None,
        }
    }

    /// `Retry-After` in whole seconds: rounded up, at least 1, so that waiting that long succeeds.
    #[must_use]
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(1)
    }

    /// `X-RateLimit-Reset` in whole seconds (rounded up).
    #[must_use]
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset_after)
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// What to decide: the caller (as the application identified it), the client address (for
/// anonymous callers) and the route (`"METHOD /template"`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitRequest<'a> {
    /// The caller; `None` counts as an anonymous caller of `anonymous_tier` and `anonymous_plan`.
    pub caller: Option<&'a CallerIdentity>,
    /// The client address, after trusted-proxy handling. Anonymous callers are counted by it;
    /// anonymous callers without one share one bucket.
    pub client: Option<IpAddr>,
    /// The route as `"METHOD /template"` (or `"/template"`); `None` is the default class.
    pub route: Option<&'a str>,
}

/// Policy kinds, in the order their limits are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tier,
    Class,
    Plan,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Self::Tier => "t",
            Self::Class => "c",
            Self::Plan => "q",
        }
    }
}

/// One limit of the configuration, with its stores and counters.
#[derive(Debug)]
struct Policy {
    kind: Kind,
    /// The configured name (a tier, class or plan).
    name: String,
    /// The configured limit.
    spec: crate::config::LimitSpec,
    /// The full limit (what Redis enforces).
    gcra: Gcra,
    /// The in-process store of the full limit, without Redis.
    local: InProcessLimiter,
    /// What Redis enforces.
    info: PolicyInfo,
    /// `ratelimit_decisions_total` series, [allowed, denied] x backend index, created on first use
    /// so that only the series a deployment can produce are exported.
    counters: [[OnceLock<Counter>; 4]; 2],
    /// The `policy` label.
    label: String,
}

impl Policy {
    #[inline]
    fn count(&self, metrics: &RateLimitMetrics, allowed: bool, backend: Backend) {
        let decision = usize::from(!allowed);
        self.counters[decision][backend.index()]
            .get_or_init(|| {
                metrics
                    .decisions
                    .get_or_create(&DecisionLabels {
                        policy: self.label.clone(),
                        decision: if allowed { "allowed" } else { "denied" },
                        backend: backend.as_str(),
                    })
                    .clone()
            })
            .inc();
    }
}

#[derive(Debug, Clone, Copy)]
enum TierRule {
    Bypass,
    Limit(usize),
}

struct Inner {
    config: RateLimitConfig,
    policies: Vec<Policy>,
    tiers: HashMap<String, TierRule>,
    anonymous_tier: TierRule,
    routes: HashMap<String, usize>,
    default_class: usize,
    plans: HashMap<String, usize>,
    anonymous_plan: usize,
    hasher: IdentityHasher,
    proxies: TrustedProxies,
    clock: SharedClock,
    redis: Option<Arc<RedisBackend>>,
    breaker: CircuitBreaker,
    /// Whether the task that makes the breaker's half-open trials runs.
    trials_running: AtomicBool,
    /// Whether the heartbeat task runs.
    heartbeat_running: AtomicBool,
    /// This instance's member in the set of live instances.
    instance_id: String,
    /// The live instance count last read from Redis; 0 before the first.
    live_instances: AtomicU32,
    /// The `local` fallback's stores (with Redis).
    fallback_stores: RwLock<Arc<FallbackStores>>,
    /// What Redis last said each quota had left (with Redis).
    quota_memory: Option<QuotaMemory>,
    cache: Option<OverLimitCache>,
    fallback_active: AtomicBool,
    metrics: RateLimitMetrics,
    /// `ratelimit_decisions_total{policy="none"}` for fail-open fallback decisions.
    unlimited_fallback: Counter,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RateLimiter")
            .field("policies", &self.policies.len())
            .field("redis", &self.redis)
            .field("fallback_active", &self.fallback_active)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RateLimiter`].
#[derive(Debug)]
#[must_use]
pub struct RateLimiterBuilder {
    config: RateLimitConfig,
    redis_url: Option<String>,
    redis_cluster: bool,
    redis_cluster_seeds: Vec<String>,
    redis_tls_ca_file: Option<std::path::PathBuf>,
    clock: Option<SharedClock>,
    metrics: Option<RateLimitMetrics>,
    resilience_metrics: Option<ResilienceMetrics>,
}

impl RateLimiterBuilder {
    /// Decide on Redis at `url` (the application's `redis.url`); without it every decision is
    /// in-process. A `rediss://` URL connects over TLS (rustls), verified against the system's
    /// roots or [`RateLimiterBuilder::redis_tls_ca_file`]. Needs the `redis` feature (a default
    /// one): without it [`RateLimiterBuilder::build`] fails with
    /// [`BuildError::RedisFeatureDisabled`] while limiting is enabled.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// `redis.url` is a seed node of a Redis Cluster (`redis.cluster = true`), and `seeds` are
    /// more (`redis.cluster_seeds`): decisions use cluster-aware connections that follow `MOVED`
    /// and `ASK` (`docs/decisions/0089`).
    pub fn redis_cluster(mut self, seeds: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.redis_cluster = true;
        self.redis_cluster_seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// The PEM file of the CA that `rediss://` servers' certificates are verified against
    /// (`redis.tls_ca_file`), instead of the system's roots. Read when the limiter is built.
    pub fn redis_tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.redis_tls_ca_file = Some(path.into());
        self
    }

    /// The clock of the in-process backend and the over-limit cache (its precise `now`) and of the
    /// breaker (its `coarse_now`). Default: [`FastClock`], the CPU's counter (`docs/decisions/0053`).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The metric families to count into. Default: unregistered ones.
    pub fn metrics(mut self, metrics: RateLimitMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The families the Redis circuit breaker reports into (`breaker="ratelimit-redis"`).
    pub fn resilience_metrics(mut self, metrics: ResilienceMetrics) -> Self {
        self.resilience_metrics = Some(metrics);
        self
    }

    /// Validates the configuration and builds the limiter. No connection is made yet: the first
    /// Redis decision connects and loads the script.
    pub fn build(self) -> Result<RateLimiter, BuildError> {
        let config = self.config;
        config.validate_with_redis(self.redis_url.as_deref())?;
        let clock = self.clock.unwrap_or_else(|| FastClock::new().shared());
        let metrics = self.metrics.unwrap_or_else(RateLimitMetrics::unregistered);
        let hasher = match &config.secret {
            Some(secret) => IdentityHasher::new(secret.expose()),
            None => IdentityHasher::random(),
        };
        let proxies = TrustedProxies::parse(&config.trusted_proxies)?;
        let redis = match &self.redis_url {
            Some(url) if config.enabled => Some(Arc::new(RedisBackend::new(
                url,
                self.redis_cluster,
                &self.redis_cluster_seeds,
                self.redis_tls_ca_file.as_deref(),
                &config,
            )?)),
            _ => None,
        };
        let mut policies = Vec::new();
        let mut add = |kind: Kind, name: &str, spec: &crate::config::LimitSpec| {
            let gcra = Gcra::from_spec(spec, 1);
            let label = format!(
                "{}:{name}",
                match kind {
                    Kind::Tier => "tier",
                    Kind::Class => "class",
                    Kind::Plan => "plan",
                }
            );
            let label_arc: Arc<str> = Arc::from(label.as_str());
            let info_of = |gcra: &Gcra| PolicyInfo {
                name: label_arc.clone(),
                requests: gcra.requests,
                period: gcra.period,
                burst: gcra.burst,
            };
            policies.push(Policy {
                kind,
                name: name.to_owned(),
                spec: spec.clone(),
                gcra,
                // The backend without Redis; with Redis the fallback has stores of its own.
                local: InProcessLimiter::from_gcra(
                    gcra,
                    if redis.is_some() {
                        1
                    } else {
                        config.max_local_keys
                    },
                    clock.clone(),
                ),
                info: info_of(&gcra),
                counters: Default::default(),
                label: label.clone(),
            });
            policies.len() - 1
        };
        let mut tiers = HashMap::new();
        for (name, tier) in &config.tiers {
            let rule = match (&tier.limit, tier.bypass) {
                (Some(limit), false) => TierRule::Limit(add(Kind::Tier, name, limit)),
                _ => TierRule::Bypass,
            };
            tiers.insert(name.clone(), rule);
        }
        let classes: HashMap<String, usize> = config
            .route_classes
            .iter()
            .map(|(name, limit)| (name.clone(), add(Kind::Class, name, limit)))
            .collect();
        let plans: HashMap<String, usize> = config
            .plans
            .iter()
            .map(|(name, limit)| (name.clone(), add(Kind::Plan, name, limit)))
            .collect();
        // `validate` checked that every name below exists.
        let missing = |key: &str, value: &str| {
            ConfigError::new(key, value, "a configured name (validate first)")
        };
        let routes = config
            .routes
            .iter()
            .map(|(route, class)| {
                classes
                    .get(class)
                    .map(|index| (route.clone(), *index))
                    .ok_or_else(|| missing("ratelimit.routes", class))
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        let anonymous_tier = *tiers
            .get(&config.anonymous_tier)
            .ok_or_else(|| missing("ratelimit.anonymous_tier", &config.anonymous_tier))?;
        let default_class = *classes
            .get(&config.default_class)
            .ok_or_else(|| missing("ratelimit.default_class", &config.default_class))?;
        let anonymous_plan = *plans
            .get(&config.anonymous_plan)
            .ok_or_else(|| missing("ratelimit.anonymous_plan", &config.anonymous_plan))?;
        let breaker_builder =
            CircuitBreaker::builder(BREAKER_NAME, config.breaker.clone()).clock(clock.clone());
        let breaker_builder = match self.resilience_metrics.clone() {
            Some(resilience) => breaker_builder.metrics(resilience),
            None => breaker_builder,
        };
        let breaker = breaker_builder.build().map_err(|error| {
            ConfigError::new(
                format!("ratelimit.breaker.{}", error.key),
                error.value,
                error.allowed,
            )
        })?;
        let cache = (redis.is_some() && config.over_limit_cache)
            .then(|| OverLimitCache::new(config.over_limit_cache_max_keys));
        let unlimited_fallback = metrics
            .decisions
            .get_or_create(&DecisionLabels {
                policy: "none".into(),
                decision: "allowed",
                backend: Backend::Fallback.as_str(),
            })
            .clone();
        metrics.fallback_active.set(0);
        // Zero series for the error kinds and switches, so that dashboards see them before the
        // first failure.
        for error_type in ["timeout", "connection", "script"] {
            let _ = metrics
                .backend_errors
                .get_or_create(&ErrorLabels { error_type });
        }
        for to in ["fallback", "redis"] {
            let _ = metrics
                .fallback_switches
                .get_or_create(&SwitchLabels { to });
        }
        let quota_memory = redis
            .is_some()
            .then(|| QuotaMemory::new(config.max_local_keys));
        let fallback_stores = RwLock::new(Arc::new(FallbackStores::new(
            &policies,
            config.instance_count,
            config.max_local_keys,
            &clock,
        )));
        let limiter = RateLimiter {
            inner: Arc::new(Inner {
                config,
                policies,
                tiers,
                anonymous_tier,
                routes,
                default_class,
                plans,
                anonymous_plan,
                hasher,
                proxies,
                clock,
                redis,
                breaker,
                trials_running: AtomicBool::new(false),
                heartbeat_running: AtomicBool::new(false),
                instance_id: hex::encode(rand::random::<[u8; 8]>()),
                live_instances: AtomicU32::new(0),
                fallback_stores,
                quota_memory,
                cache,
                fallback_active: AtomicBool::new(false),
                metrics,
                unlimited_fallback,
            }),
        };
        if limiter.inner.redis.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            limiter.spawn_heartbeat();
        }
        Ok(limiter)
    }
}

/// The `local` fallback's stores (with Redis): one per policy, each limit divided by `divisor`,
/// the live instance count last read from Redis (or `instance_count` before any was read).
#[derive(Debug)]
struct FallbackStores {
    divisor: u32,
    stores: Vec<(InProcessLimiter, PolicyInfo)>,
}

impl FallbackStores {
    fn new(policies: &[Policy], divisor: u32, max_keys: usize, clock: &SharedClock) -> Self {
        let stores = policies
            .iter()
            .map(|policy| {
                let gcra = Gcra::from_spec(&policy.spec, divisor);
                let info = PolicyInfo {
                    name: policy.info.name.clone(),
                    requests: gcra.requests,
                    period: gcra.period,
                    burst: gcra.burst,
                };
                (
                    InProcessLimiter::from_gcra(gcra, max_keys, clock.clone()),
                    info,
                )
            })
            .collect();
        Self { divisor, stores }
    }
}

/// The limits of one request: policy indexes with their in-process keys, and the hash tag.
#[derive(Debug)]
struct Resolved {
    limits: [(usize, Pseudonym); 3],
    /// The organisation's pseudonym, or the client network's for anonymous callers.
    tag: Pseudonym,
}

/// Exact GCRA rate limits for an API: per-caller tier limits, per-route-class limits and
/// per-organisation quotas, on Redis (shared by every instance) or in process. Cheap to clone.
///
/// See the crate documentation for an example.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl RateLimiter {
    /// A builder for a limiter of `config`.
    pub fn builder(config: RateLimitConfig) -> RateLimiterBuilder {
        RateLimiterBuilder {
            config,
            redis_url: None,
            redis_cluster: false,
            redis_cluster_seeds: Vec::new(),
            redis_tls_ca_file: None,
            clock: None,
            metrics: None,
            resilience_metrics: None,
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &RateLimitConfig {
        &self.inner.config
    }

    /// Whether requests are limited at all (`ratelimit.enabled`).
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.inner.config.enabled
    }

    /// The trusted proxies of the configuration.
    #[must_use]
    pub fn trusted_proxies(&self) -> &TrustedProxies {
        &self.inner.proxies
    }

    /// The hasher that turns identities into keys (for log fields that must name a caller).
    #[must_use]
    pub fn hasher(&self) -> &IdentityHasher {
        &self.inner.hasher
    }

    /// The circuit breaker around Redis, to register with the application's breaker registry.
    #[must_use]
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// Whether Redis is configured.
    #[must_use]
    pub fn uses_redis(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// Whether decisions currently come from the fallback (Redis's breaker is not closed).
    #[must_use]
    pub fn fallback_active(&self) -> bool {
        self.inner.fallback_active.load(Ordering::Acquire)
    }

    /// Keys held by the in-process stores.
    #[must_use]
    pub fn local_keys(&self) -> usize {
        let fallback: usize = self
            .inner
            .fallback_stores
            .read()
            .stores
            .iter()
            .map(|(store, _)| store.len())
            .sum();
        self.inner
            .policies
            .iter()
            .map(|policy| policy.local.len())
            .sum::<usize>()
            + fallback
    }

    /// The network an anonymous client at `address` is counted by (`ratelimit.ipv4_prefix_len`,
    /// `ratelimit.ipv6_prefix_len`).
    #[must_use]
    pub fn client_network(&self, address: IpAddr) -> ClientNetwork {
        let config = &self.inner.config;
        ClientNetwork::of(address, config.ipv4_prefix_len, config.ipv6_prefix_len)
    }

    /// The pseudonym an anonymous client at `address` is counted by: the HMAC of its network
    /// ([`RateLimiter::client_network`]). Other throttles of the service (failed logins, for
    /// example) can key on it so that they count callers the way the limits do.
    #[must_use]
    pub fn client_identity(&self, address: IpAddr) -> Pseudonym {
        self.inner.hasher.network(self.client_network(address))
    }

    /// Whether `tier` bypasses every limit (as `admin` does by default).
    #[must_use]
    pub fn is_bypass_tier(&self, tier: &str) -> bool {
        matches!(self.inner.tiers.get(tier), Some(TierRule::Bypass))
    }

    /// Decides one request, consuming from every applicable limit when all of them allow it and
    /// from none otherwise. Never fails: when Redis is unavailable the fallback decides.
    pub async fn check(&self, request: &LimitRequest<'_>) -> Decision {
        let now = local_now(self.inner.clock.now());
        self.decide(request, now, None).await
    }

    /// [`RateLimiter::check`] at a given time instead of the clock's and Redis's: `at` is both
    /// the in-process time and, in microseconds, the Redis time. For the shared test vectors only;
    /// production decisions always take their time from Redis `TIME`.
    #[doc(hidden)]
    pub async fn check_at(&self, request: &LimitRequest<'_>, at: Duration) -> Decision {
        let micros = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
        self.decide(request, local_now(at), Some(micros)).await
    }

    /// Reclaims idle keys of the in-process stores and expired over-limit cache entries, and
    /// updates `ratelimit_local_keys`. [`RateLimiter::spawn_sweeper`] calls it periodically.
    pub fn sweep(&self) {
        let inner = &*self.inner;
        let now = local_now(inner.clock.now());
        let keys: usize = inner
            .policies
            .iter()
            .map(|policy| policy.local.sweep_at(now))
            .sum::<usize>()
            + inner
                .fallback_stores
                .read()
                .stores
                .iter()
                .map(|(store, _)| store.sweep_at(now))
                .sum::<usize>();
        if let Some(cache) = &inner.cache {
            cache.sweep(now);
        }
        inner
            .metrics
            .local_keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// Spawns a task that calls [`RateLimiter::sweep`] every `ratelimit.sweep_interval` (on
    /// tokio's time, so paused-time tests drive it). The task ends when the last clone of the
    /// limiter is dropped. Call it from within a tokio runtime.
    #[must_use = "the handle tells when the sweeper ended; dropping it leaves the sweeper running"]
    pub fn spawn_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.config.sweep_interval;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                RateLimiter { inner }.sweep();
            }
        })
    }

    /// One `PING` to Redis on a connection of its own (not one that decisions use, and not through
    /// the breaker), within `redis_connect_timeout`: `Ok(None)` without Redis, otherwise the round
    /// trip's duration. The health check's probe.
    pub async fn ping_redis(&self) -> Result<Option<Duration>, PingError> {
        let Some(redis) = &self.inner.redis else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let timeout = self.inner.config.redis_connect_timeout;
        match tokio::time::timeout(timeout, redis.ping()).await {
            Ok(Ok(())) => Ok(Some(started.elapsed())),
            Ok(Err(error)) => Err(PingError(error.to_string())),
            Err(_) => Err(PingError(format!(
                "redis did not answer PING within {timeout:?}"
            ))),
        }
    }

    /// Whether Redis is a Redis Cluster (`redis.cluster`).
    #[must_use]
    pub fn uses_redis_cluster(&self) -> bool {
        self.inner
            .redis
            .as_ref()
            .is_some_and(|redis| redis.is_cluster())
    }

    /// The `cluster_state` of `CLUSTER INFO` (`ok`, or `fail` while some slot has no reachable
    /// master), asked of one node on the health check's connection within
    /// `redis_connect_timeout`: `None` without a Redis Cluster.
    pub async fn redis_cluster_state(&self) -> Option<Result<String, PingError>> {
        let redis = self
            .inner
            .redis
            .as_ref()
            .filter(|redis| redis.is_cluster())?;
        let timeout = self.inner.config.redis_connect_timeout;
        Some(
            match tokio::time::timeout(timeout, redis.cluster_state()).await {
                Ok(Ok(state)) => Ok(state),
                Ok(Err(error)) => Err(PingError(error.to_string())),
                Err(_) => Err(PingError(format!(
                    "redis did not answer CLUSTER INFO within {timeout:?}"
                ))),
            },
        )
    }

    /// A connection of the limiter's set, for the benchmark's raw baseline.
    #[doc(hidden)]
    #[cfg(feature = "redis")]
    pub async fn redis_connection(&self) -> Option<::redis::aio::MultiplexedConnection> {
        match &self.inner.redis {
            Some(redis) => redis.any_connection().await,
            None => None,
        }
    }

    fn resolve(&self, request: &LimitRequest<'_>) -> Option<Resolved> {
        let inner = &*self.inner;
        let (tier_rule, plan) = match request.caller {
            Some(caller) => (
                inner
                    .tiers
                    .get(&caller.tier)
                    .copied()
                    .unwrap_or(inner.anonymous_tier),
                inner
                    .plans
                    .get(&caller.plan)
                    .copied()
                    .unwrap_or(inner.anonymous_plan),
            ),
            None => (inner.anonymous_tier, inner.anonymous_plan),
        };
        let TierRule::Limit(tier) = tier_rule else {
            return None;
        };
        let class = request
            .route
            .and_then(|route| {
                inner.routes.get(route).copied().or_else(|| {
                    route
                        .split_once(' ')
                        .and_then(|(_, template)| inner.routes.get(template).copied())
                })
            })
            .unwrap_or(inner.default_class);
        let (principal, tag) = match request.caller.and_then(|caller| {
            caller
                .principal
                .as_deref()
                .map(|principal| (caller, principal))
        }) {
            Some((caller, principal)) => (
                inner.hasher.principal(&caller.organisation, principal),
                inner
                    .hasher
                    .pseudonym(b"org", caller.organisation.as_bytes()),
            ),
            None => {
                let address = match request.client {
                    Some(address) => self.client_identity(address),
                    None => inner.hasher.pseudonym(b"addr", b"unknown"),
                };
                (address, address)
            }
        };
        Some(Resolved {
            limits: [(tier, principal), (class, principal), (plan, tag)],
            tag,
        })
    }

    async fn decide(&self, request: &LimitRequest<'_>, now: u64, at_us: Option<u64>) -> Decision {
        let inner = &*self.inner;
        if !inner.config.enabled {
            return Decision::unlimited(Backend::Bypass);
        }
        let Some(resolved) = self.resolve(request) else {
            return Decision::unlimited(Backend::Bypass);
        };
        let Some(redis) = &inner.redis else {
            return self.decide_locally(&resolved, now, Backend::Memory);
        };
        if !inner.heartbeat_running.load(Ordering::Relaxed) {
            self.spawn_heartbeat();
        }
        let keys = self.redis_keys(&resolved);
        if let Some(cache) = &inner.cache {
            for key in &keys {
                if let Some(denied) = cache.get(key, now) {
                    inner.metrics.local_cache_hits.inc();
                    return self.cached_denial(denied, now);
                }
            }
        }
        let permit = match inner.breaker.try_acquire_owned() {
            Ok(permit) => permit,
            Err(rejected) => {
                self.observe_breaker();
                return self.fallback(&resolved, now, rejected.retry_after);
            }
        };
        let limits = resolved.limits.map(|(policy, _)| {
            let gcra = &inner.policies[policy].gcra;
            (gcra.emission, gcra.tolerance)
        });
        let started = std::time::Instant::now();
        // The call owns what it needs, so that it can go on after the decision stops waiting:
        // Redis slower than `redis_timeout` is not Redis down, and its late answer says so.
        let backend = Arc::clone(redis);
        let mut call = Box::pin(async move {
            let reply = backend.decide(&keys, &limits, at_us).await;
            (reply, keys)
        });
        let outcome = tokio::time::timeout(inner.config.redis_timeout, &mut call).await;
        inner
            .metrics
            .redis_duration
            .observe(started.elapsed().as_secs_f64());
        let decision = match outcome {
            Ok((Ok(reply), keys)) => {
                permit.success();
                let policy = &inner.policies[resolved.limits[reply.index].0];
                let decision = Decision::of_reply(&reply, policy.info.clone());
                if !reply.allowed
                    && let Some(cache) = &inner.cache
                    && let Some(key) = keys.get(reply.index)
                {
                    let retry_ns = reply.retry_us.saturating_mul(1_000);
                    cache.insert(
                        key,
                        Denied {
                            until: now.saturating_add(retry_ns),
                            policy: resolved.limits[reply.index].0,
                        },
                        now,
                    );
                }
                if let Some(memory) = &inner.quota_memory {
                    for (index, (policy, key)) in resolved.limits.iter().enumerate() {
                        if inner.policies[*policy].kind == Kind::Plan {
                            memory.insert(
                                *key,
                                Left {
                                    policy: *policy,
                                    remaining: reply.remaining_each[index],
                                    at: now,
                                },
                            );
                        }
                    }
                }
                policy.count(&inner.metrics, reply.allowed, Backend::Redis);
                decision
            }
            Ok((Err(error), _)) => {
                permit.failure();
                self.redis_failed(&error);
                self.fallback(&resolved, now, None)
            }
            Err(_elapsed) => {
                inner
                    .metrics
                    .backend_errors
                    .get_or_create(&ErrorLabels {
                        error_type: "timeout",
                    })
                    .inc();
                tracing::debug!(
                    timeout = ?inner.config.redis_timeout,
                    "rate-limit decision on redis timed out; the fallback decides"
                );
                // The breaker hears the call's real outcome: an answer (late) or a failure within
                // `redis_response_timeout`.
                let limiter = self.clone();
                tokio::spawn(async move {
                    match call.await {
                        (Ok(_), _) => permit.success(),
                        (Err(error), _) => {
                            permit.failure();
                            limiter.redis_failed(&error);
                        }
                    }
                    limiter.observe_breaker();
                });
                self.fallback(&resolved, now, None)
            }
        };
        self.observe_breaker();
        decision
    }

    fn redis_failed(&self, error: &RedisCallError) {
        self.inner
            .metrics
            .backend_errors
            .get_or_create(&ErrorLabels {
                error_type: error.kind(),
            })
            .inc();
        tracing::debug!(%error, "rate-limit decision on redis failed; the fallback decides");
    }

    /// Logs and counts a switch to or from the fallback, once each way.
    fn observe_breaker(&self) {
        let inner = &*self.inner;
        let active = matches!(
            inner.breaker.state(),
            BreakerState::Open | BreakerState::HalfOpen | BreakerState::ForcedOpen
        );
        // A plain load first: the common case (no change) writes nothing shared.
        if inner.fallback_active.load(Ordering::Acquire) == active
            || inner.fallback_active.swap(active, Ordering::AcqRel) == active
        {
            return;
        }
        inner.metrics.fallback_active.set(i64::from(active));
        let to = if active { "fallback" } else { "redis" };
        inner
            .metrics
            .fallback_switches
            .get_or_create(&SwitchLabels { to })
            .inc();
        if active {
            if let Some(redis) = &inner.redis {
                redis.drop_connections();
            }
            // Sized by the last live count; what single failed calls counted just before stays.
            self.refresh_fallback_stores(false);
            self.spawn_trials();
            tracing::warn!(
                mode = ?inner.config.fallback,
                divisor = self.fallback_divisor(),
                "redis is unavailable: rate limits now decided by the fallback"
            );
        } else {
            // The next outage starts from what Redis says then, not from this one's counts.
            self.refresh_fallback_stores(true);
            tracing::info!("redis is back: rate limits decided on redis again");
        }
    }

    /// The live instance count last read from Redis (instances that sent a heartbeat within three
    /// `heartbeat_interval`s, this one included); `None` before the first read or without Redis.
    #[must_use]
    pub fn live_instances(&self) -> Option<u32> {
        match self.inner.live_instances.load(Ordering::Acquire) {
            0 => None,
            count => Some(count),
        }
    }

    /// What the `local` fallback divides every limit by: the live instance count last read from
    /// Redis, or `instance_count` when none was ever read.
    #[must_use]
    pub fn fallback_divisor(&self) -> u32 {
        self.live_instances()
            .unwrap_or(self.inner.config.instance_count)
    }

    /// Gives the fallback fresh stores: always when `fresh` (an outage ended: by the next one, what
    /// Redis said last is newer than what the stores counted), otherwise when the divisor changed
    /// (what the old stores counted was for another share).
    fn refresh_fallback_stores(&self, fresh: bool) {
        let inner = &*self.inner;
        let divisor = self.fallback_divisor();
        if !fresh && inner.fallback_stores.read().divisor == divisor {
            return;
        }
        let stores = FallbackStores::new(
            &inner.policies,
            divisor,
            inner.config.max_local_keys,
            &inner.clock,
        );
        *inner.fallback_stores.write() = Arc::new(stores);
    }

    /// Starts the heartbeat task (once): every `heartbeat_interval` it announces this instance in
    /// the sorted set `PREFIX:{instances}` at Redis time, drops members not heard from within three
    /// intervals, and reads how many are live. The task ends with the limiter; its member then
    /// expires. A failed heartbeat changes nothing (the last count stays) and is not a breaker
    /// failure.
    fn spawn_heartbeat(&self) {
        let inner = &*self.inner;
        if inner.redis.is_none() || inner.heartbeat_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let clock = inner.clock.clone();
        let every = inner.config.heartbeat_interval;
        let key = format!("{}:{{instances}}", inner.config.key_prefix);
        let expiry_ms = u64::try_from(every.as_millis().saturating_mul(3)).unwrap_or(u64::MAX);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let limiter = RateLimiter { inner };
                let Some(redis) = limiter.inner.redis.clone() else {
                    return;
                };
                let bound = redis.connect_timeout() + limiter.inner.config.redis_response_timeout;
                let id = limiter.inner.instance_id.clone();
                drop(limiter);
                let outcome =
                    tokio::time::timeout(bound, redis.heartbeat(&key, &id, expiry_ms)).await;
                match outcome {
                    Ok(Ok(count)) if count > 0 => {
                        let Some(inner) = weak.upgrade() else { return };
                        let limiter = RateLimiter { inner };
                        limiter.inner.live_instances.store(count, Ordering::Release);
                        // While Redis decides, the fallback's stores are idle: resize them now.
                        if !limiter.fallback_active() {
                            limiter.refresh_fallback_stores(false);
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::debug!(%error, "rate-limit heartbeat failed"),
                    Err(_) => tracing::debug!("rate-limit heartbeat timed out"),
                }
                // Nothing of the limiter is held while waiting: it may be dropped meanwhile.
                drop(redis);
                clock.sleep(every).await;
            }
        });
    }

    /// Starts the task that, while the breaker is open, makes one half-open trial (a `PING`) every
    /// open duration, so that an instance nobody calls closes its breaker once Redis is back. The
    /// task ends when the breaker is closed (or forced open, or disabled), and with the limiter.
    fn spawn_trials(&self) {
        let inner = &*self.inner;
        if inner.redis.is_none() || inner.trials_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let clock = inner.clock.clone();
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let limiter = RateLimiter { inner };
                let snapshot = limiter.inner.breaker.snapshot();
                let wait = match snapshot.state {
                    BreakerState::Open => {
                        Duration::from_millis(snapshot.time_until_half_open_ms.unwrap_or(0))
                    }
                    BreakerState::HalfOpen => Duration::ZERO,
                    BreakerState::Closed | BreakerState::Disabled | BreakerState::ForcedOpen => {
                        limiter.inner.trials_running.store(false, Ordering::Release);
                        // A failure that opened the breaker after the look above found the task
                        // still running and started none: look once more.
                        let state = limiter.inner.breaker.state();
                        if matches!(state, BreakerState::Open | BreakerState::HalfOpen)
                            && !limiter.inner.trials_running.swap(true, Ordering::AcqRel)
                        {
                            continue;
                        }
                        limiter.observe_breaker();
                        return;
                    }
                };
                if !wait.is_zero() {
                    // The open duration is a rule: wait on the limiter's clock, holding no
                    // reference to the limiter.
                    drop(limiter);
                    clock.sleep(wait).await;
                    continue;
                }
                let Some(redis) = limiter.inner.redis.clone() else {
                    return;
                };
                match limiter.inner.breaker.try_acquire_owned() {
                    Ok(permit) => {
                        let bound =
                            redis.connect_timeout() + limiter.inner.config.redis_response_timeout;
                        match tokio::time::timeout(bound, redis.trial()).await {
                            Ok(Ok(())) => permit.success(),
                            Ok(Err(error)) => {
                                permit.failure();
                                limiter.redis_failed(&error);
                            }
                            Err(_) => permit.failure(),
                        }
                        limiter.observe_breaker();
                    }
                    Err(rejected) => {
                        drop(limiter);
                        match rejected.retry_after {
                            // Still open for a moment (the snapshot rounds to milliseconds).
                            Some(left) => clock.sleep(left.max(Duration::from_millis(1))).await,
                            // Half-open with every trial slot taken by requests: look again soon.
                            None => tokio::time::sleep(redis.connect_timeout()).await,
                        }
                    }
                }
            }
        });
    }

    fn fallback(&self, resolved: &Resolved, now: u64, wait: Option<Duration>) -> Decision {
        let inner = &*self.inner;
        match inner.config.fallback {
            FallbackMode::Local => self.decide_locally(resolved, now, Backend::Fallback),
            FallbackMode::Allow => {
                inner.unlimited_fallback.inc();
                Decision::unlimited(Backend::Fallback)
            }
            FallbackMode::Deny => {
                let policy = &inner.policies[resolved.limits[0].0];
                policy.count(&inner.metrics, false, Backend::Fallback);
                let retry_after = wait
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_secs(1));
                Decision {
                    allowed: false,
                    policy: Some(policy.info.clone()),
                    remaining: 0,
                    reset_after: retry_after,
                    retry_after,
                    backend: Backend::Fallback,
                    redis_time_micros: None,
                }
            }
        }
    }

    fn cached_denial(&self, denied: Denied, now: u64) -> Decision {
        let policy = &self.inner.policies[denied.policy];
        policy.count(&self.inner.metrics, false, Backend::Cache);
        let retry_after = Duration::from_nanos(denied.until.saturating_sub(now));
        Decision {
            allowed: false,
            policy: Some(policy.info.clone()),
            remaining: 0,
            reset_after: retry_after,
            retry_after,
            backend: Backend::Cache,
            redis_time_micros: None,
        }
    }

    /// The in-process decision over every limit of a request: consumes in order, and on a denial
    /// gives back what was taken and reads (without consuming) the limits after it, so that the
    /// outcome is the Redis script's.
    fn decide_locally(&self, resolved: &Resolved, now: u64, backend: Backend) -> Decision {
        let policies = &self.inner.policies;
        // With Redis, the fallback's stores (divided limits); without, the policies' own.
        let fallback = self
            .inner
            .redis
            .is_some()
            .then(|| Arc::clone(&self.inner.fallback_stores.read()));
        // Quotas continue from what Redis last said they had left, shared out like the limits.
        if let (Some(fallback), Some(memory)) = (&fallback, &self.inner.quota_memory) {
            for (policy, key) in &resolved.limits {
                if policies[*policy].kind == Kind::Plan
                    && let Some(left) = memory.get(key)
                    && left.policy == *policy
                {
                    fallback.stores[*policy].0.seed(
                        key,
                        left.remaining / fallback.divisor.max(1),
                        left.at,
                    );
                }
            }
        }
        let store = |policy: usize| match &fallback {
            Some(fallback) => {
                let (store, info) = &fallback.stores[policy];
                (store, info)
            }
            None => {
                let policy = &policies[policy];
                // Not a copy of the info: the memory backend enforces the full limit.
                (&policy.local, &policy.info)
            }
        };
        let mut steps = [Step {
            allowed: true,
            remaining: 0,
            reset: 0,
            retry: 0,
            new_tat: 0,
        }; 3];
        let mut denied_at = None;
        for (index, (policy, key)) in resolved.limits.iter().enumerate() {
            let limiter = store(*policy).0;
            steps[index] = if denied_at.is_some() {
                limiter.peek(key, now)
            } else {
                limiter.consume(key, now)
            };
            if denied_at.is_none() && !steps[index].allowed {
                denied_at = Some(index);
                for (policy, key) in &resolved.limits[..index] {
                    store(*policy).0.refund(key);
                }
            }
        }
        let chosen = most_restrictive(&steps).unwrap_or(0);
        let step = steps[chosen];
        let policy = &policies[resolved.limits[chosen].0];
        policy.count(&self.inner.metrics, step.allowed, backend);
        Decision::of_step(step, store(resolved.limits[chosen].0).1.clone(), backend)
    }

    /// The Redis keys of a request's limits: `PREFIX:{TAG}:KIND:NAME[:PRINCIPAL]`, every key with
    /// the request's hash tag (the organisation's pseudonym, or the client network's), so that one script
    /// call touches one Redis Cluster slot.
    /// The Redis key of each limit: `{prefix}:{{tag}}:` then the limit's own part, which is its
    /// field in the hash `{prefix}:{{tag}}` (`docs/decisions/0093`) and, whole, its key in the
    /// over-limit cache.
    fn redis_keys(&self, resolved: &Resolved) -> [String; 3] {
        let inner = &*self.inner;
        let prefix = &inner.config.key_prefix;
        let tag = resolved.tag.to_hex();
        resolved.limits.map(|(policy, key)| {
            let policy = &inner.policies[policy];
            match policy.kind {
                Kind::Plan => {
                    format!("{prefix}:{{{tag}}}:{}:{}", policy.kind.tag(), policy.name)
                }
                Kind::Tier | Kind::Class => format!(
                    "{prefix}:{{{tag}}}:{}:{}:{key}",
                    policy.kind.tag(),
                    policy.name
                ),
            }
        })
    }
}

/// What [`crate::attempts::EventLimit`] needs of the limiter.
impl RateLimiter {
    pub(crate) fn redis_backend(&self) -> Option<&Arc<RedisBackend>> {
        self.inner.redis.as_ref()
    }

    pub(crate) fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    pub(crate) fn metrics(&self) -> &RateLimitMetrics {
        &self.inner.metrics
    }

    pub(crate) fn redis_call_failed(&self, error: &RedisCallError) {
        self.redis_failed(error);
    }

    pub(crate) fn breaker_observed(&self) {
        self.observe_breaker();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        let mut decision = Decision::unlimited(Backend::Memory);
        for (retry, secs) in [
            (0, 1),
            (1, 1),
            (999, 1),
            (1_000, 1),
            (1_001, 2),
            (59_999, 60),
        ] {
            decision.retry_after = Duration::from_millis(retry);
            assert_eq!(decision.retry_after_secs(), secs, "{retry} ms");
        }
        decision.reset_after = Duration::from_millis(1_500);
        assert_eq!(decision.reset_secs(), 2);
    }
}
