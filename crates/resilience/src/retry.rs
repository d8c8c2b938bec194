//! Retry with exponential backoff and full jitter, for transient errors only, honouring
//! `Retry-After` hints, an overall deadline and a shared [`RetryBudget`].
//!
//! Waiting uses tokio's time, so tests run it on paused time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::budget::RetryBudget;
use crate::classify::{Classify, ErrorClass};
use crate::config::ConfigError;
use crate::metrics::{AttemptLabels, OperationLabels, ResilienceMetrics};
use crate::timeout::TimedOut;

/// The rules of a [`Retry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included. Default 3.
    pub max_attempts: u32,
    /// The backoff before the first retry. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Each retry's backoff is the previous one times this. Default 2.
    pub multiplier: f64,
    /// The cap on one backoff, and on a `Retry-After` hint (a longer hint waits this long).
    /// Default 10 s.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Full jitter: wait a random time between zero and the backoff. Default true.
    pub jitter: bool,
    /// Each attempt is cancelled after this long (a timeout counts as transient); an attempt is
    /// started only if it can run this long before the deadline. Default none.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Option<Duration>,
    /// The time limit for all attempts and waits together, from the first attempt. Default none.
    #[serde(with = "humantime_serde")]
    pub deadline: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(10),
            jitter: true,
            attempt_timeout: None,
            deadline: None,
        }
    }
}

impl RetryConfig {
    /// Checks every field; the error names the first key that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err(ConfigError::new(
                "max_attempts",
                self.max_attempts,
                "1 to 100",
            ));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(ConfigError::new(
                "multiplier",
                self.multiplier,
                "a finite number of at least 1",
            ));
        }
        if self.max_delay < self.base_delay {
            return Err(ConfigError::new(
                "max_delay",
                self.max_delay,
                "at least base_delay",
            ));
        }
        if self.attempt_timeout.is_some_and(|limit| limit.is_zero()) {
            return Err(ConfigError::new(
                "attempt_timeout",
                self.attempt_timeout,
                "a positive duration, or unset",
            ));
        }
        if self.deadline.is_some_and(|limit| limit.is_zero()) {
            return Err(ConfigError::new(
                "deadline",
                self.deadline,
                "a positive duration, or unset",
            ));
        }
        Ok(())
    }

    /// The backoff before retry number `retry` (1 for the first retry), before jitter.
    #[must_use]
    pub fn backoff(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let seconds = self.base_delay.as_secs_f64() * self.multiplier.powi(exponent);
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// The error of one attempt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError<E> {
    /// The attempt ran past its time limit and was cancelled.
    #[error(transparent)]
    TimedOut(TimedOut),
    /// The operation's own error.
    #[error(transparent)]
    Inner(E),
}

/// Why a retrying operation failed; each variant carries the number of attempts made and the last
/// attempt's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// The last error was not transient, or every attempt was used.
    #[error("failed after {attempts} attempt(s): {last}")]
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: E,
    },
    /// A retry was due but the retry budget was exhausted: the dependency is failing for many
    /// callers, so this one fails fast.
    #[error(
        "retry budget exhausted after {attempts} attempt(s), not retrying so as not to overload a failing dependency: {last}"
    )]
    BudgetExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: E,
    },
    /// No further attempt could finish before the deadline.
    #[error(
        "deadline reached after {attempts} attempt(s): no further attempt could finish in time"
    )]
    DeadlineExceeded {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error (none when no attempt could start).
        #[source]
        last: Option<E>,
    },
}

impl<E> RetryError<E> {
    /// Attempts made.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Failed { attempts, .. }
            | Self::BudgetExhausted { attempts, .. }
            | Self::DeadlineExceeded { attempts, .. } => *attempts,
        }
    }

    /// The last attempt's error, if an attempt was made.
    pub fn into_last(self) -> Option<E> {
        match self {
            Self::Failed { last, .. } | Self::BudgetExhausted { last, .. } => Some(last),
            Self::DeadlineExceeded { last, .. } => last,
        }
    }
}

#[derive(Debug)]
struct AttemptCounters {
    success: Counter,
    transient: Counter,
    failure: Counter,
    ignored: Counter,
    timeout: Counter,
    budget_exhausted: Counter,
}

#[derive(Debug)]
struct Inner {
    config: RetryConfig,
    budget: Option<RetryBudget>,
    counters: AttemptCounters,
}

/// A retry policy for one operation (its name labels the metrics). Cheap to clone.
///
/// ```
/// use mainstay_resilience::{ErrorClass, Retry, RetryConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let retry = Retry::new("fetch-profile", RetryConfig::default())?;
/// let transient = |_: &&str| ErrorClass::TRANSIENT;
/// let value = retry
///     .run(&transient, |attempt| async move { if attempt < 3 { Err("503") } else { Ok(attempt) } })
///     .await;
/// assert_eq!(value.ok(), Some(3));
/// # Ok::<(), mainstay_resilience::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Retry {
    inner: Arc<Inner>,
}

/// Builds a [`Retry`] with a budget or metrics.
#[derive(Debug)]
#[must_use]
pub struct RetryBuilder {
    operation: String,
    config: RetryConfig,
    budget: Option<RetryBudget>,
    metrics: Option<ResilienceMetrics>,
}

impl RetryBuilder {
    /// The budget retries are taken from (share one per client). Default: no budget.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The metric families to report into, labelled with the operation's name.
    pub fn metrics(mut self, metrics: ResilienceMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Validates the configuration and builds the retry.
    pub fn build(self) -> Result<Retry, ConfigError> {
        self.config.validate()?;
        let metrics = self.metrics.unwrap_or_else(ResilienceMetrics::unregistered);
        let operation = self.operation;
        let attempt = |outcome| {
            metrics
                .retry_attempts
                .get_or_create(&AttemptLabels {
                    operation: operation.clone(),
                    outcome,
                })
                .clone()
        };
        let counters = AttemptCounters {
            success: attempt("success"),
            transient: attempt("transient"),
            failure: attempt("failure"),
            ignored: attempt("ignored"),
            timeout: attempt("timeout"),
            budget_exhausted: metrics
                .retry_budget_exhausted
                .get_or_create(&OperationLabels {
                    operation: operation.clone(),
                })
                .clone(),
        };
        Ok(Retry {
            inner: Arc::new(Inner {
                config: self.config,
                budget: self.budget,
                counters,
            }),
        })
    }
}

impl Retry {
    /// A retry without budget or metrics.
    pub fn new(operation: &str, config: RetryConfig) -> Result<Self, ConfigError> {
        Self::builder(operation, config).build()
    }

    /// A builder, to add a budget or metrics.
    pub fn builder(operation: &str, config: RetryConfig) -> RetryBuilder {
        RetryBuilder {
            operation: operation.to_owned(),
            config,
            budget: None,
            metrics: None,
        }
    }

    /// The retry's rules.
    #[must_use]
    pub fn config(&self) -> &RetryConfig {
        &self.inner.config
    }

    /// Runs `operation` (given the attempt number, from 1) until it succeeds, fails with an error
    /// that `classify` does not call transient, or a limit is reached.
    pub async fn run<T, E, F, Fut>(
        &self,
        classify: &impl Classify<E>,
        operation: F,
    ) -> Result<T, RetryError<AttemptError<E>>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_until(None, classify, operation).await
    }

    /// [`Retry::run`] with an overall deadline (the earlier of it and the configured one counts).
    pub async fn run_until<T, E, F, Fut>(
        &self,
        deadline: Option<Instant>,
        classify: &impl Classify<E>,
        mut operation: F,
    ) -> Result<T, RetryError<AttemptError<E>>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let classify_attempt = |error: &AttemptError<E>| match error {
            AttemptError::TimedOut(_) => ErrorClass::TRANSIENT,
            AttemptError::Inner(inner) => classify.classify(inner),
        };
        self.execute(
            deadline,
            None,
            classify_attempt,
            AttemptError::TimedOut,
            |attempt| {
                let attempt = operation(attempt);
                async move { attempt.await.map_err(AttemptError::Inner) }
            },
        )
        .await
    }

    /// The retry loop, generic over the attempt's error so that [`crate::Policy`] can put its own
    /// error type (breaker rejections, timeouts) through it.
    pub(crate) async fn execute<T, E, F, Fut>(
        &self,
        deadline: Option<Instant>,
        extra_attempt_timeout: Option<Duration>,
        classify: impl Fn(&E) -> ErrorClass,
        timed_out: impl Fn(TimedOut) -> E,
        mut operation: F,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        let config = &inner.config;
        let counters = &inner.counters;
        let start = Instant::now();
        let deadline = match (deadline, config.deadline.map(|limit| start + limit)) {
            (Some(given), Some(configured)) => Some(given.min(configured)),
            (given, configured) => given.or(configured),
        };
        let attempt_timeout = match (config.attempt_timeout, extra_attempt_timeout) {
            (Some(own), Some(extra)) => Some(own.min(extra)),
            (own, extra) => own.or(extra),
        };
        // An attempt needs this long before the deadline to be worth starting.
        let needed = attempt_timeout.unwrap_or(Duration::ZERO);
        if let Some(budget) = &inner.budget {
            budget.deposit();
        }
        let mut attempt: u32 = 1;
        let mut last: Option<E> = None;
        loop {
            let now = Instant::now();
            if let Some(deadline) = deadline
                && (now >= deadline || now + needed > deadline)
            {
                return Err(RetryError::DeadlineExceeded {
                    attempts: attempt - 1,
                    last,
                });
            }
            // The attempt runs no longer than its own limit and never past the deadline.
            let limit = match (attempt_timeout, deadline) {
                (Some(limit), Some(deadline)) => Some(limit.min(deadline - now)),
                (limit, None) => limit,
                (None, Some(deadline)) => Some(deadline - now),
            };
            let mut cancelled = false;
            let result = match limit {
                Some(limit) => match tokio::time::timeout(limit, operation(attempt)).await {
                    Ok(result) => result,
                    Err(_) => {
                        cancelled = true;
                        Err(timed_out(TimedOut { after: limit }))
                    }
                },
                None => operation(attempt).await,
            };
            let error = match result {
                Ok(value) => {
                    counters.success.inc();
                    return Ok(value);
                }
                Err(error) => error,
            };
            let retry_after = match classify(&error) {
                ErrorClass::Transient { retry_after } => retry_after,
                ErrorClass::Failure => {
                    counters.failure.inc();
                    return Err(RetryError::Failed {
                        attempts: attempt,
                        last: error,
                    });
                }
                ErrorClass::Ignored => {
                    counters.ignored.inc();
                    return Err(RetryError::Failed {
                        attempts: attempt,
                        last: error,
                    });
                }
            };
            if cancelled {
                counters.timeout.inc();
            } else {
                counters.transient.inc();
            }
            if attempt >= config.max_attempts {
                return Err(RetryError::Failed {
                    attempts: attempt,
                    last: error,
                });
            }
            // A hint is the server's, so it is bounded like our own backoff: never above
            // `max_delay`, and (below) never past the deadline.
            let delay = retry_after
                .map(|hint| hint.min(config.max_delay))
                .unwrap_or_else(|| {
                    let backoff = config.backoff(attempt);
                    if config.jitter && !backoff.is_zero() {
                        rand::rng().random_range(Duration::ZERO..=backoff)
                    } else {
                        backoff
                    }
                });
            if let Some(deadline) = deadline
                && Instant::now() + delay + needed >= deadline
            {
                return Err(RetryError::DeadlineExceeded {
                    attempts: attempt,
                    last: Some(error),
                });
            }
            if let Some(budget) = &inner.budget
                && !budget.try_withdraw()
            {
                counters.budget_exhausted.inc();
                return Err(RetryError::BudgetExhausted {
                    attempts: attempt,
                    last: error,
                });
            }
            tracing::debug!(attempt, ?delay, "retrying after a transient error");
            last = Some(error);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}
