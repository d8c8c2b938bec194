//! The Redis health check of the rate limiter (feature `health`).

use std::time::Duration;

use mainstay_health::{Check, CheckOutcome, Criticality, async_trait};

use crate::limiter::RateLimiter;

/// A [`Check`] named `redis`: one `PING` through the limiter's pool, and whether the fallback is
/// deciding. Non-critical: while Redis is down the fallback keeps answering, so the service is
/// `degraded`, not unready.
///
/// | Redis | fallback | status |
/// |---|---|---|
/// | not configured | - | healthy (`backend: memory`) |
/// | answers | inactive | healthy |
/// | answers | active (breaker not closed yet) | degraded |
/// | does not answer | any | unhealthy |
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

    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    async fn check(&self) -> CheckOutcome {
        let fallback_active = self.limiter.fallback_active();
        let breaker = self.limiter.breaker().state().as_str();
        let outcome = match self.limiter.ping_redis().await {
            Ok(None) => return CheckOutcome::healthy().with_detail("backend", "memory"),
            Ok(Some(latency)) if fallback_active => CheckOutcome::degraded(
                "redis answers, but rate limits come from the fallback until its circuit breaker closes",
            )
            .with_detail("latency_ms", latency.as_secs_f64() * 1_000.0),
            Ok(Some(latency)) => CheckOutcome::healthy()
                .with_detail("latency_ms", latency.as_secs_f64() * 1_000.0),
            Err(error) => CheckOutcome::unhealthy(error.to_string()),
        };
        outcome
            .with_detail("backend", "redis")
            .with_detail("fallback_active", fallback_active)
            .with_detail("breaker", breaker)
            .with_detail(
                "fallback_mode",
                format!("{:?}", self.limiter.config().fallback).to_lowercase(),
            )
    }
}
