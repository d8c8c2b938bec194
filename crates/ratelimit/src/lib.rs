#![doc = include_str!("../README.md")]

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

// Third-party crates in the public API, re-exported so that a caller names their items at the
// version this crate uses without a dependency of its own (README, "Third-party types in the
// public API").
#[cfg(feature = "tower")]
pub use http;
pub use prometheus_client;
pub use serde;
pub use tokio;
#[cfg(feature = "tower")]
pub use tower;
