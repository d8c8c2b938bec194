//! The Redis backend: one Lua script (`gcra.lua`) checks every limit of a request in one round trip,
//! loaded once and called with EVALSHA (reloaded on NOSCRIPT), over a multiplexed connection from a
//! `deadpool-redis` pool.
//!
//! The connection is taken from the pool once and shared by every caller (a multiplexed connection
//! pipelines concurrent requests and survives a cancelled one); after a failure it is dropped and the
//! next call takes a fresh one from the pool. Taking one per request would cost the pool's `PING`
//! recycle check, a second round trip, on every decision.

use std::time::Duration;

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, RedisError, Script};
use deadpool_redis::{Connection, Pool, PoolConfig, Runtime, Timeouts};
use parking_lot::RwLock;

/// The script's source.
pub(crate) const GCRA_SCRIPT: &str = include_str!("gcra.lua");

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisCallError {
    /// No connection could be had from the pool.
    #[error("redis connection failed: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    /// The command failed.
    #[error("redis command failed: {0}")]
    Command(#[from] RedisError),
    /// The script answered something else than six integers.
    #[error("redis gave an unexpected reply to the rate-limit script")]
    Reply,
}

impl RedisCallError {
    /// The `kind` label of `ratelimit_backend_errors_total`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Pool(_) => "connection",
            Self::Command(error) if error.is_io_error() || error.is_connection_dropped() => {
                "connection"
            }
            Self::Command(error) if error.is_timeout() => "timeout",
            Self::Command(_) | Self::Reply => "script",
        }
    }
}

/// The script's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScriptReply {
    pub(crate) allowed: bool,
    /// 0-based index of the limit that speaks for the request.
    pub(crate) index: usize,
    pub(crate) remaining: u32,
    pub(crate) reset_us: u64,
    pub(crate) retry_us: u64,
    /// Redis time of the decision, microseconds since the epoch.
    pub(crate) now_us: u64,
}

/// The pool, the shared connection and the script.
pub(crate) struct RedisBackend {
    pool: Pool,
    connection: RwLock<Option<MultiplexedConnection>>,
    script: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisBackend")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A backend for `url` whose pool gives up on a connection after `timeout`.
    pub(crate) fn new(
        url: &str,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, deadpool_redis::CreatePoolError> {
        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: pool_size,
            timeouts: Timeouts {
                wait: Some(timeout),
                create: Some(timeout),
                recycle: Some(timeout),
            },
            ..PoolConfig::default()
        });
        let pool = config.create_pool(Some(Runtime::Tokio1))?;
        Ok(Self {
            pool,
            connection: RwLock::new(None),
            script: Script::new(GCRA_SCRIPT),
        })
    }

    /// The pool (shared with the benchmark's raw baseline and the health check).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The shared connection, taken from the pool when there is none.
    pub(crate) async fn connection(&self) -> Result<MultiplexedConnection, RedisCallError> {
        if let Some(connection) = self.connection.read().as_ref() {
            return Ok(connection.clone());
        }
        let connection = Connection::take(self.pool.get().await?);
        *self.connection.write() = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets the shared connection after a failure: the next call takes a fresh one.
    pub(crate) fn invalidate(&self) {
        *self.connection.write() = None;
    }

    /// Runs the script over `keys`, each with its `(emission, tolerance)` in microseconds, at
    /// Redis time (or at `at_us` for the test vectors).
    pub(crate) async fn decide(
        &self,
        keys: &[String],
        limits: &[(u64, u64)],
        at_us: Option<u64>,
    ) -> Result<ScriptReply, RedisCallError> {
        let mut connection = self.connection().await?;
        let mut invocation = self.script.prepare_invoke();
        for key in keys {
            invocation.key(key.as_str());
        }
        match at_us {
            Some(at) => invocation.arg(at),
            None => invocation.arg(""),
        };
        for (emission, tolerance) in limits {
            invocation.arg(*emission).arg(*tolerance);
        }
        let reply: Vec<i64> = invocation.invoke_async(&mut connection).await?;
        let [allowed, index, remaining, reset, retry, now] = reply[..] else {
            return Err(RedisCallError::Reply);
        };
        let index = usize::try_from(index - 1).map_err(|_| RedisCallError::Reply)?;
        if index >= keys.len() {
            return Err(RedisCallError::Reply);
        }
        let unsigned = |value: i64| u64::try_from(value).map_err(|_| RedisCallError::Reply);
        Ok(ScriptReply {
            allowed: allowed == 1,
            index,
            remaining: u32::try_from(remaining).map_err(|_| RedisCallError::Reply)?,
            reset_us: unsigned(reset)?,
            retry_us: unsigned(retry)?,
            now_us: unsigned(now)?,
        })
    }

    /// One `PING`, for the health check.
    pub(crate) async fn ping(&self) -> Result<(), RedisCallError> {
        let mut connection = self.connection().await?;
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(())
    }
}
