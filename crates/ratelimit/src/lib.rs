//! Exact GCRA rate limits in-process and across instances on Redis, with a safe fallback.
//!
//! One algorithm runs everywhere: GCRA (a token bucket stated as a theoretical arrival time), a
//! limit per period plus a burst. A request passes only when every limit that applies to it allows
//! it: its caller's tier, its route class and its organisation's hourly quota. Without Redis the
//! in-process backend (governor's keyed state store) decides; with Redis one Lua script decides
//! every limit of a request in one round trip, on Redis's clock, consuming from none when any
//! denies. While Redis is unavailable (its circuit breaker from `mainstay-resilience` is open) the
//! fallback decides: in process with each limit divided by the live instance count (read from
//! Redis while it was up), or fail-open, or fail-closed.
//!
//! ```
//! use std::time::Duration;
//! use mainstay_ratelimit::{
//!     Backend, CallerIdentity, LimitRequest, RateLimitConfig, RateLimitMetrics, RateLimiter,
//! };
//! use mainstay_clock::ManualClock;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = prometheus_client::registry::Registry::default();
//! let metrics = RateLimitMetrics::register(&mut registry);
//! let clock = ManualClock::new();
//! // No `redis_url`: in-process limits with a random per-process secret.
//! let limiter = RateLimiter::builder(RateLimitConfig::default())
//!     .clock(clock.shared())
//!     .metrics(&metrics)
//!     .build()?;
//!
//! let caller = CallerIdentity::new("acme", "api-key", "free", "key-1");
//! let request = LimitRequest {
//!     caller: Some(&caller),
//!     client: None,
//!     route: Some("PUT /v1/collections/{collection}/records/{id}"),
//! };
//! // `writes` allow 60/min with a burst of 20: the 21st write at once is denied...
//! for _ in 0..20 {
//!     assert!(limiter.check(&request).await.allowed);
//! }
//! let denied = limiter.check(&request).await;
//! assert!(!denied.allowed);
//! assert_eq!(denied.policy.as_ref().unwrap().name.as_ref(), "class:writes");
//! assert_eq!((denied.retry_after_secs(), denied.backend), (1, Backend::Memory));
//! // ... and passes once the Retry-After has passed.
//! clock.advance(Duration::from_secs(denied.retry_after_secs()));
//! assert!(limiter.check(&request).await.allowed);
//! # Ok(()) }
//! ```
//!
//! # Policies (defaults)
//!
//! | policy | counted per | default |
//! |---|---|---|
//! | `tier:anonymous` / `tier:api-key` / `tier:premium` | caller (anonymous: client address) | 100 / 1,000 / 5,000 per minute; `admin` bypasses every limit |
//! | `class:writes` / `class:queries` / `class:default` | caller and class | 60 / 30 / 100 per minute, burst 20 |
//! | `plan:free` / `plan:pro` / `plan:enterprise` | organisation (anonymous: client address) | 1,000 / 10,000 / 100,000 per hour |
//!
//! Route templates map onto classes through `ratelimit.routes` (see [`RateLimitConfig`]).
//!
//! # Identities and keys
//!
//! Anonymous callers are counted per network: their address cut to `ratelimit.ipv4_prefix_len`
//! (default 32) or `ratelimit.ipv6_prefix_len` (default 64) bits ([`ClientNetwork`],
//! [`RateLimiter::client_identity`]). Organisations, principals and networks are HMAC-SHA256'd
//! with `ratelimit.secret` before they become Redis keys or log fields ([`IdentityHasher`]). Every
//! key of one request carries the same Redis Cluster hash tag (the organisation's pseudonym; the
//! client network's for anonymous callers), so one script call touches one slot. The trade-off: one busy organisation's keys all live on one
//! shard (a hot slot); spreading them would need a cross-slot transaction, which Cluster refuses.
//! Every key expires (`PX`) when its bucket is full again, at most one burst's worth of emission
//! intervals after its last request.
//!
//! # Memory
//!
//! Each in-process store holds at most `max_local_keys` keys; past the cap, a new key evicts the
//! least recently used one (every decision on a key uses it, allowed or denied). An evicted key
//! starts again with a full bucket: eviction fails open for that key, never for a busy one.
//! [`RateLimiter::sweep`] (periodic with [`RateLimiter::spawn_sweeper`]) reclaims idle keys.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `redis` | yes | the Redis backend ([`RateLimiterBuilder::redis_url`], Cluster, `rediss://` over rustls), the heartbeat and the fallback; without it every decision is in process and a limiter given a `redis.url` fails to build with [`BuildError::RedisFeatureDisabled`] (the `redis_*` keys of [`RateLimitConfig`] still parse) |
//! | `tower` | no | [`layer::RateLimitLayer`]: limits HTTP requests, sets `X-RateLimit-*`, `RateLimit-Policy` and `RateLimit`, answers 429 problem+json |
//! | `health` | no | [`health::RedisCheck`], a `mainstay_health::Check` of the Redis backend and the fallback (`backend: memory` without `redis`) |
//!
//! # Metrics
//!
//! See [`RateLimitMetrics`]: `ratelimit_decisions_total{policy,decision,backend}`,
//! `ratelimit_backend_errors_total{kind}`, `ratelimit_fallback_active`,
//! `ratelimit_fallback_switches_total{to}`, `ratelimit_redis_duration_seconds`,
//! `ratelimit_local_cache_hits_total`, `ratelimit_local_keys`; the Redis breaker reports as
//! `circuit_breaker_*{breaker="ratelimit-redis"}` when given `ResilienceMetrics`.
//!
//! # MSRV
//!
//! Rust 1.95.

mod attempts;
mod cache;
mod catalogue;
mod config;
mod gcra;
#[cfg(feature = "health")]
pub mod health;
mod identity;
#[cfg(feature = "tower")]
pub mod layer;
mod limiter;
mod local;
mod metrics;
mod proxy;
#[cfg(feature = "redis")]
mod redis;
// Without the feature, the same names with no values: see the module's docs.
#[cfg(not(feature = "redis"))]
#[path = "no_redis.rs"]
mod redis;
mod reply;

pub use attempts::EventLimit;
pub use catalogue::METRICS;
pub use config::{
    ConfigError, FallbackMode, LimitSpec, MIN_SECRET_LEN, RateLimitConfig, Secret, TierConfig,
};
pub use identity::{CallerIdentity, ClientNetwork, IdentityHasher, Pseudonym};
pub use limiter::{
    BREAKER_NAME, Backend, BuildError, Decision, LimitRequest, PingError, PolicyInfo, RateLimiter,
    RateLimiterBuilder,
};
pub use local::{InProcessLimiter, LocalDecision};
pub use metrics::RateLimitMetrics;
pub use proxy::TrustedProxies;
