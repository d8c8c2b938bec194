//! The `redis` check: a PING through a deadpool-redis pool.
//!
//! It lives here until the rate limiter (which owns the Redis client) takes it over behind its
//! `health` feature. It is non-critical by default: the rate limiter falls back to in-process
//! limits when Redis is down; `[health.checks.redis] critical = true` makes it critical.

use std::time::Duration;

use deadpool_redis::{Pool, Runtime, Timeouts};
use mainstay_health::{Check, CheckOutcome, Criticality, async_trait};

/// The Redis PING check.
#[derive(Clone)]
pub struct RedisCheck {
    pool: Pool,
}

impl std::fmt::Debug for RedisCheck {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisCheck")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl RedisCheck {
    /// A check with its own small pool for `url`. Waiting for, creating and recycling a connection
    /// are each bounded by `timeout`, so a frozen server cannot pile up waiters.
    ///
    /// # Errors
    ///
    /// The URL cannot be parsed into a pool configuration.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, deadpool_redis::CreatePoolError> {
        let mut config = deadpool_redis::Config::from_url(url);
        let mut pool_config = deadpool_redis::PoolConfig::new(2);
        pool_config.timeouts = Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        };
        config.pool = Some(pool_config);
        Ok(Self {
            pool: config.create_pool(Some(Runtime::Tokio1))?,
        })
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
        let mut connection = match self.pool.get().await {
            Ok(connection) => connection,
            Err(error) => {
                return CheckOutcome::unhealthy(format!("no connection to redis: {error}"));
            }
        };
        match deadpool_redis::redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
        {
            Ok(reply) if reply == "PONG" => CheckOutcome::healthy(),
            Ok(reply) => CheckOutcome::unhealthy(format!("redis answered PING with {reply:?}")),
            Err(error) => {
                // A connection that failed mid-command is not returned to the pool.
                let _ = deadpool_redis::Connection::take(connection);
                CheckOutcome::unhealthy(format!("redis PING failed: {error}"))
            }
        }
    }
}
