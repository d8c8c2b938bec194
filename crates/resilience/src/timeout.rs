//! Timeout and fallback helpers.

use std::future::Future;
use std::time::Duration;

/// A call did not finish in time and was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("call timed out after {after:?} and was cancelled: the dependency is slow or unreachable")]
pub struct TimedOut {
    /// The time limit that was reached.
    pub after: Duration,
}

/// Runs `operation` for at most `limit` (tokio time), cancelling it when the limit is reached.
pub async fn timeout<F: Future>(limit: Duration, operation: F) -> Result<F::Output, TimedOut> {
    tokio::time::timeout(limit, operation)
        .await
        .map_err(|_| TimedOut { after: limit })
}

/// A value, and whether it came from a fallback because the call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WithFallback<T> {
    /// The call's value, or the fallback's.
    pub value: T,
    /// `true` when `value` is the fallback's: report it (a `degraded: true` response).
    pub degraded: bool,
}

/// Runs `operation`; on error, logs it and answers `fallback(error)` instead, marked degraded.
pub async fn with_fallback<T, E, F>(operation: F, fallback: impl FnOnce(E) -> T) -> WithFallback<T>
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    match operation.await {
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
