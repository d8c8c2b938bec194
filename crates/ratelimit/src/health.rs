//! The Redis health check of the rate limiter (feature `health`).

use mainstay_health::{Check, CheckOutcome, Criticality, async_trait};

use crate::limiter::RateLimiter;

/// A [`Check`] named `redis`: one `PING` on a connection of its own (not one that decisions use,
/// and not through the limiter's circuit breaker), so that it reports Redis as it is, also on an
/// instance nobody calls. Non-critical: while Redis is down the fallback keeps answering, so the
/// service is `degraded`, not unready.
///
/// | Redis | status | details |
/// |---|---|---|
/// | not configured | healthy | `backend: memory` |
/// | answers `PING` | healthy | `latency_ms`, `breaker`, `fallback_active`, `fallback_divisor` |
/// | no answer within `redis_connect_timeout` | unhealthy | `breaker`, `fallback_active`, `fallback_divisor` |
/// | a Redis Cluster | as above, and unhealthy unless `cluster_state` is `ok` | `cluster_state` (`ok`, `fail` or `unknown`) |
///
/// With a Redis Cluster the `PING` goes to every master, and `cluster_state` comes from
/// `CLUSTER INFO` of one node: `fail` while some slot has no reachable master (before a replica
/// has taken over from a failed master).
///
/// The check sets no timeout of its own: the registry's (`default_timeout`, or
/// `checks.redis.timeout`) applies, and the probe itself gives up after `redis_connect_timeout`.
///
/// The limiter's breaker may still be open for a moment after Redis is back (`fallback_active`):
/// it makes a half-open trial by itself every open duration, so decisions are back on Redis at
/// most one open duration later, with or without traffic.
#[derive(Debug, Clone)]
pub struct RedisCheck {
    limiter: RateLimiter,
}

impl RedisCheck {
    /// A check of `limiter`'s Redis backend.
    #[must_use]
    pub fn new(limiter: RateLimiter) -> Self {
        Self { limiter }
    }
}

#[async_trait]
impl Check for RedisCheck {
    fn name(&self) -> &str {
        "redis"
    }

    fn criticality(&self) -> Criticality {
        Criticality::NonCritical
    }

    async fn check(&self) -> CheckOutcome {
        let fallback_active = self.limiter.fallback_active();
        let breaker = self.limiter.breaker().state().as_str();
        let outcome = match self.limiter.ping_redis().await {
            Ok(None) => return CheckOutcome::healthy().with_detail("backend", "memory"),
            Ok(Some(latency)) => {
                CheckOutcome::healthy().with_detail("latency_ms", latency.as_secs_f64() * 1_000.0)
            }
            Err(error) => CheckOutcome::unhealthy(error.to_string()),
        };
        let outcome = match self.limiter.redis_cluster_state().await {
            None => outcome,
            Some(Ok(state)) if state == "ok" => outcome.with_detail("cluster_state", state),
            Some(Ok(state)) => CheckOutcome::unhealthy(format!(
                "redis cluster state is {state}: some slots have no reachable master"
            ))
            .with_detail("cluster_state", state),
            Some(Err(error)) => {
                CheckOutcome::unhealthy(error.to_string()).with_detail("cluster_state", "unknown")
            }
        };
        outcome
            .with_detail("backend", "redis")
            .with_detail("fallback_active", fallback_active)
            .with_detail("breaker", breaker)
            .with_detail("fallback_divisor", self.limiter.fallback_divisor())
            .with_detail(
                "fallback_mode",
                format!("{:?}", self.limiter.config().fallback).to_lowercase(),
            )
    }
}
