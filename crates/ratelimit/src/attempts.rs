//! Limits on events of one kind per key, such as failed authentications per client network, decided
//! where the limiter decides requests: on Redis when it has Redis (so every instance counts
//! together), in process otherwise.
//!
//! An [`EventLimit`] is a GCRA limit like the request limits, kept on Redis in the field `e:NAME`
//! of the key's hash `PREFIX:{KEY}` (the key's pseudonym is the hash tag, so one call touches one
//! cluster slot; decision 0093). Each [`EventLimit::hit`] counts one event and says whether it was still within the limit.
//! While Redis is unavailable (the limiter's breaker open, an error or a timeout), events are
//! counted in process, whatever `ratelimit.fallback` says: an event limit guards against abuse, so
//! an outage must neither lift it nor deny everything.

use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;

use crate::config::{ConfigError, LimitSpec};
use crate::gcra::Gcra;
use crate::identity::Pseudonym;
use crate::limiter::{Backend, Decision, PolicyInfo, RateLimiter};
use crate::local::{InProcessLimiter, local_now};
use crate::metrics::{DecisionLabels, ErrorLabels};

/// A limit on events of one kind per key, made by [`RateLimiter::event_limit`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventLimit {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limiter: RateLimiter,
    /// The Redis key's last part.
    name: String,
    gcra: Gcra,
    /// The in-process store: the backend without Redis, the fallback with it.
    local: InProcessLimiter,
    info: PolicyInfo,
    /// `ratelimit_decisions_total{policy="event:NAME"}`, [allowed, denied] x [memory, redis, fallback].
    counters: [[OnceLock<Counter>; 3]; 2],
}

impl RateLimiter {
    /// A limit of `spec` on events named `name` (`[a-z0-9_-]`, at most 64 bytes; its metric policy
    /// label is `event:NAME`), counted per key where this limiter decides: on Redis when the
    /// limiter has Redis, in process otherwise (at most `ratelimit.max_local_keys` keys, the least
    /// recently used evicted: an evicted key starts again with a full bucket).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `spec` is not a valid limit (reported under the key `key`) or `name` is
    /// not a valid name.
    pub fn event_limit(
        &self,
        name: &str,
        key: &str,
        spec: &LimitSpec,
    ) -> Result<EventLimit, ConfigError> {
        spec.validate(key)?;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
            })
        {
            return Err(ConfigError::new(
                key,
                name,
                "an event name of 1 to 64 characters from a-z, 0-9, `-` and `_`",
            ));
        }
        let gcra = Gcra::from_spec(spec, 1);
        let label: Arc<str> = Arc::from(format!("event:{name}"));
        Ok(EventLimit {
            inner: Arc::new(Inner {
                limiter: self.clone(),
                name: name.to_owned(),
                gcra,
                local: InProcessLimiter::from_gcra(
                    gcra,
                    self.config().max_local_keys,
                    self.clock().clone(),
                ),
                info: PolicyInfo {
                    name: label,
                    requests: gcra.requests,
                    period: gcra.period,
                    burst: gcra.burst,
                },
                counters: Default::default(),
            }),
        })
    }
}

impl EventLimit {
    /// The limit, as reported in decisions (`event:NAME`).
    #[must_use]
    pub fn info(&self) -> &PolicyInfo {
        &self.inner.info
    }

    /// Counts one event for `key` and says whether it was within the limit. A denied event is
    /// not counted (the bucket does not fill further), so a caller that keeps going is let through
    /// again exactly when [`Decision::retry_after`] has passed. Never fails: when Redis is
    /// unavailable the event is counted in process.
    pub async fn hit(&self, key: &Pseudonym) -> Decision {
        let inner = &*self.inner;
        let limiter = &inner.limiter;
        let Some(redis) = limiter.redis_backend() else {
            return self.locally(key, Backend::Memory);
        };
        let Ok(permit) = limiter.breaker().try_acquire_owned() else {
            limiter.breaker_observed();
            return self.locally(key, Backend::Fallback);
        };
        let redis_key = format!(
            "{}:{{{}}}:e:{}",
            limiter.config().key_prefix,
            key.to_hex(),
            inner.name
        );
        let limits = [(inner.gcra.emission, inner.gcra.tolerance)];
        let timeout = limiter.config().redis_timeout;
        let call = redis.decide(std::slice::from_ref(&redis_key), &limits, None);
        let decision = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(reply)) => {
                permit.success();
                self.count(reply.allowed, Backend::Redis);
                Decision::of_reply(&reply, inner.info.clone())
            }
            Ok(Err(error)) => {
                permit.failure();
                limiter.redis_call_failed(&error);
                self.locally(key, Backend::Fallback)
            }
            Err(_elapsed) => {
                // Unlike a request decision, the late answer is not awaited: a slow Redis counts
                // as a failure of the breaker's call here.
                permit.failure();
                limiter
                    .metrics()
                    .backend_errors
                    .get_or_create(&ErrorLabels {
                        error_type: "timeout",
                    })
                    .inc();
                self.locally(key, Backend::Fallback)
            }
        };
        limiter.breaker_observed();
        decision
    }

    fn locally(&self, key: &Pseudonym, backend: Backend) -> Decision {
        let inner = &*self.inner;
        let now = local_now(inner.limiter.clock().now());
        let step = inner.local.consume(key, now);
        self.count(step.allowed, backend);
        Decision::of_step(step, inner.info.clone(), backend)
    }

    fn count(&self, allowed: bool, backend: Backend) {
        let inner = &*self.inner;
        let column = match backend {
            Backend::Redis => 1,
            Backend::Fallback => 2,
            _ => 0,
        };
        inner.counters[usize::from(!allowed)][column]
            .get_or_init(|| {
                inner
                    .limiter
                    .metrics()
                    .decisions
                    .get_or_create(&DecisionLabels {
                        policy: inner.info.name.to_string(),
                        decision: if allowed { "allowed" } else { "denied" },
                        backend: backend.as_str(),
                    })
                    .clone()
            })
            .inc();
    }
}
