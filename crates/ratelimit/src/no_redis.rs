//! The Redis backend of a build without the `redis` feature: the same names as `redis.rs`, with
//! types that have no values. A limiter can never hold a backend, so its Redis paths compile
//! unchanged and are never taken, and a `redis.url` fails to build with
//! [`BuildError::RedisFeatureDisabled`] instead of being ignored.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::RateLimitConfig;
use crate::limiter::BuildError;
use crate::reply::ScriptReply;

/// No Redis backend: there is none without the `redis` feature.
#[derive(Debug)]
pub(crate) enum RedisBackend {}

/// No Redis call fails without the `redis` feature: none is made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisCallError {}

impl RedisCallError {
    /// The `error_type` label of `ratelimit_backend_errors_total`.
    pub(crate) fn kind(&self) -> &'static str {
        match *self {}
    }
}

impl RedisBackend {
    /// Always [`BuildError::RedisFeatureDisabled`]: a configured Redis is refused, never ignored.
    pub(crate) fn new(
        _url: &str,
        _cluster: bool,
        _cluster_seeds: &[String],
        _tls_ca_file: Option<&Path>,
        _config: &RateLimitConfig,
    ) -> Result<Self, BuildError> {
        Err(BuildError::RedisFeatureDisabled)
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        match *self {}
    }

    pub(crate) fn is_cluster(&self) -> bool {
        match *self {}
    }

    pub(crate) fn drop_connections(&self) {
        match *self {}
    }

    pub(crate) async fn decide(
        self: &Arc<Self>,
        _keys: &[String],
        _limits: &[(u64, u64)],
        _at_us: Option<u64>,
    ) -> Result<ScriptReply, RedisCallError> {
        match **self {}
    }

    pub(crate) async fn trial(self: &Arc<Self>) -> Result<(), RedisCallError> {
        match **self {}
    }

    pub(crate) async fn heartbeat(
        self: &Arc<Self>,
        _key: &str,
        _id: &str,
        _expiry_ms: u64,
    ) -> Result<u32, RedisCallError> {
        match **self {}
    }

    pub(crate) async fn ping(&self) -> Result<(), RedisCallError> {
        match *self {}
    }

    pub(crate) async fn cluster_state(&self) -> Result<String, RedisCallError> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use crate::{BuildError, RateLimitConfig, RateLimiter, Secret};

    /// A configuration file written for a Redis deployment: its `redis_*` keys still parse.
    fn redis_config() -> RateLimitConfig {
        serde_json::from_str(
            r#"{
                "secret": "test-secret-of-32-bytes-length!!",
                "redis_timeout": "250ms",
                "redis_connect_timeout": "500ms",
                "redis_pool_size": 4
            }"#,
        )
        .expect("the redis keys parse without the redis feature")
    }

    #[test]
    fn a_redis_url_is_refused_with_a_typed_error() {
        let result = RateLimiter::builder(redis_config())
            .redis_url("redis://127.0.0.1:6379")
            .build();
        assert!(
            matches!(result, Err(BuildError::RedisFeatureDisabled)),
            "{result:?}"
        );
        let message = BuildError::RedisFeatureDisabled.to_string();
        assert!(message.contains("`redis` feature"), "{message}");
    }

    #[test]
    fn without_a_redis_url_the_limiter_builds_in_process() {
        let limiter = RateLimiter::builder(redis_config())
            .build()
            .expect("an in-process limiter builds");
        assert!(!limiter.uses_redis());
        // A disabled limiter makes no decision at all, so its Redis URL is not an error either.
        let disabled = RateLimitConfig {
            enabled: false,
            secret: Some(Secret::new("test-secret-of-32-bytes-length!!")),
            ..RateLimitConfig::default()
        };
        let built = RateLimiter::builder(disabled)
            .redis_url("redis://127.0.0.1:6379")
            .build();
        assert!(built.is_ok(), "{built:?}");
    }
}
