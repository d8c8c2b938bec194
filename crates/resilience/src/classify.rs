//! Failure classification: the caller decides which errors count against a dependency and which are
//! worth retrying.

use std::time::Duration;

/// What an error says about the dependency that returned it.
///
/// One classification serves every policy: the circuit breaker counts [`ErrorClass::Transient`] and
/// [`ErrorClass::Failure`] as failures, and retry repeats only [`ErrorClass::Transient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The dependency failed and a later attempt may succeed (a timeout, a 5xx, a 429): counts as a
    /// breaker failure and is retried, after `retry_after` when the server gave a hint.
    Transient {
        /// The server's `Retry-After` hint, if any; retry waits this long instead of its backoff,
        /// but never longer than its `max_delay` and never past its deadline.
        retry_after: Option<Duration>,
    },
    /// The dependency failed but repeating the call is not useful or not safe: counts as a breaker
    /// failure, is not retried.
    Failure,
    /// The dependency answered correctly and the error is the caller's (a 404, a validation error):
    /// counts as a success for the breaker and is not retried.
    Ignored,
}

impl ErrorClass {
    /// A transient error without a server hint.
    pub const TRANSIENT: Self = Self::Transient { retry_after: None };

    /// Whether this error counts as a failure of the dependency.
    #[must_use]
    pub fn is_failure(self) -> bool {
        !matches!(self, Self::Ignored)
    }
}

/// Decides the [`ErrorClass`] of an error. Closures `Fn(&E) -> ErrorClass` implement it.
pub trait Classify<E> {
    /// The class of `error`.
    fn classify(&self, error: &E) -> ErrorClass;
}

impl<E, F> Classify<E> for F
where
    F: Fn(&E) -> ErrorClass,
{
    #[inline]
    fn classify(&self, error: &E) -> ErrorClass {
        self(error)
    }
}

/// A classifier for which every error is transient: every error counts and is retried.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllTransient;

impl<E> Classify<E> for AllTransient {
    #[inline]
    fn classify(&self, _error: &E) -> ErrorClass {
        ErrorClass::TRANSIENT
    }
}
