//! One policy composing a fallback, a bulkhead, retry (with its budget), a circuit breaker and a
//! per-attempt timeout, in that order from the outside in:
//!
//! ```text
//! fallback -> bulkhead -> retry -> circuit breaker -> timeout -> operation
//! ```
//!
//! The fallback answers whatever the rest ends in (a full bulkhead, an open breaker, timeouts,
//! retries spent); the bulkhead bounds the whole call including its retries; every attempt passes
//! the breaker, so an open breaker stops retries at once; the timeout is inside the breaker, so
//! timeouts count as failures.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{CircuitBreaker, Outcome, Rejected};
use crate::bulkhead::{Bulkhead, BulkheadError};
use crate::classify::{Classify, ErrorClass};
use crate::retry::{Retry, RetryError};
use crate::timeout::{TimedOut, WithFallback};

/// The error of one attempt through a [`Policy`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The circuit breaker rejected the attempt.
    #[error(transparent)]
    Rejected(Rejected),
    /// The attempt timed out.
    #[error(transparent)]
    TimedOut(TimedOut),
    /// The operation's own error.
    #[error(transparent)]
    Inner(E),
}

/// The error of a call through a [`Policy`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError<E> {
    /// The bulkhead refused the call; nothing was attempted.
    #[error(transparent)]
    Bulkhead(#[from] BulkheadError),
    /// The attempts ended in an error; see [`RetryError`].
    #[error(transparent)]
    Call(RetryError<CallError<E>>),
}

/// A composed policy; every part is optional. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use mainstay_resilience::{BreakerConfig, CircuitBreaker, ErrorClass, Policy, Retry, RetryConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let policy = Policy::new()
///     .with_retry(Retry::new("lookup", RetryConfig::default())?)
///     .with_breaker(CircuitBreaker::new("lookup", BreakerConfig::default())?)
///     .with_timeout(Duration::from_millis(200));
/// let classify = |_: &std::io::Error| ErrorClass::TRANSIENT;
/// let answer = policy.run(&classify, || async { Ok::<_, std::io::Error>(42) }).await;
/// assert_eq!(answer.ok(), Some(42));
/// # Ok::<(), mainstay_resilience::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Policy {
    bulkhead: Option<Bulkhead>,
    retry: Option<Retry>,
    breaker: Option<CircuitBreaker>,
    timeout: Option<Duration>,
}

impl Policy {
    /// A policy that does nothing but run the operation once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bounds concurrent calls (retries included) with `bulkhead`.
    pub fn with_bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Retries transient errors with `retry` (and its budget).
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Puts every attempt through `breaker`.
    pub fn with_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Cancels each attempt after `limit`; a timeout counts as a transient failure.
    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Runs `operation` under the policy.
    pub async fn run<T, E, F, Fut>(
        &self,
        classify: &impl Classify<E>,
        operation: F,
    ) -> Result<T, PolicyError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_until(None, classify, operation).await
    }

    /// [`Policy::run`], answering `fallback(error)` when the policy ends in an error: the
    /// outermost part of the policy, so it also answers a full bulkhead and an open breaker. The
    /// answer says whether it is the fallback's (`degraded`), for a `degraded: true` response.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mainstay_resilience::{BreakerConfig, CircuitBreaker, ErrorClass, Policy};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// let breaker = CircuitBreaker::new("reranker", BreakerConfig::optional_dependency())?;
    /// breaker.force_open();
    /// let policy = Policy::new().with_breaker(breaker).with_timeout(Duration::from_millis(50));
    /// let classify = |_: &&str| ErrorClass::TRANSIENT;
    /// let ranked = policy
    ///     .run_with_fallback(&classify, || async { Ok::<_, &str>(vec![2, 1]) }, |_| vec![1, 2])
    ///     .await;
    /// assert_eq!((ranked.value, ranked.degraded), (vec![1, 2], true));
    /// # Ok::<(), mainstay_resilience::ConfigError>(())
    /// # }).unwrap();
    /// ```
    pub async fn run_with_fallback<T, E, F, Fut>(
        &self,
        classify: &impl Classify<E>,
        operation: F,
        fallback: impl FnOnce(PolicyError<E>) -> T,
    ) -> WithFallback<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        match self.run_until(None, classify, operation).await {
            Ok(value) => WithFallback {
                value,
                degraded: false,
            },
            Err(error) => {
                tracing::warn!(%error, "call failed, answering with the fallback");
                WithFallback {
                    value: fallback(error),
                    degraded: true,
                }
            }
        }
    }

    /// [`Policy::run`] with an overall deadline for the attempts and waits.
    pub async fn run_until<T, E, F, Fut>(
        &self,
        deadline: Option<Instant>,
        classify: &impl Classify<E>,
        mut operation: F,
    ) -> Result<T, PolicyError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _permit = match &self.bulkhead {
            Some(bulkhead) => Some(bulkhead.acquire().await?),
            None => None,
        };
        let classify_call = |error: &CallError<E>| match error {
            // An open breaker will not close within a backoff: fail fast.
            CallError::Rejected(_) => ErrorClass::Failure,
            CallError::TimedOut(_) => ErrorClass::TRANSIENT,
            CallError::Inner(inner) => classify.classify(inner),
        };
        // The breaker is asked before the operation is even created: a rejected attempt costs
        // nothing.
        let mut attempt = |_| {
            let admitted = match &self.breaker {
                Some(breaker) => breaker.try_acquire().map(Some),
                None => Ok(None),
            };
            let call = admitted.map(|permit| (permit, operation()));
            async move {
                let (permit, operation) = call.map_err(CallError::Rejected)?;
                let result = match self.timeout {
                    Some(limit) => match tokio::time::timeout(limit, operation).await {
                        Ok(result) => result.map_err(CallError::Inner),
                        Err(_) => Err(CallError::TimedOut(TimedOut { after: limit })),
                    },
                    None => operation.await.map_err(CallError::Inner),
                };
                if let Some(permit) = permit {
                    let outcome = match &result {
                        Ok(_) => Outcome::Success,
                        Err(CallError::Inner(error)) if !classify.classify(error).is_failure() => {
                            Outcome::Success
                        }
                        Err(_) => Outcome::Failure,
                    };
                    permit.record(outcome);
                }
                result
            }
        };
        match &self.retry {
            Some(retry) => retry
                .execute(deadline, None, classify_call, CallError::TimedOut, attempt)
                .await
                .map_err(PolicyError::Call),
            None => {
                let attempt = attempt(1);
                let result = match deadline {
                    Some(deadline) => match tokio::time::timeout_at(deadline, attempt).await {
                        Ok(result) => result,
                        Err(_) => {
                            return Err(PolicyError::Call(RetryError::DeadlineExceeded {
                                attempts: 1,
                                last: None,
                            }));
                        }
                    },
                    None => attempt.await,
                };
                result.map_err(|last| PolicyError::Call(RetryError::Failed { attempts: 1, last }))
            }
        }
    }
}
