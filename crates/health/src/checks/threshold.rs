//! The threshold check: a number other components feed (DLQ size, breaker open), judged against
//! fixed thresholds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::check::{Check, CheckOutcome, Criticality, Status};

/// When a [`ThresholdCheck`]'s value turns it degraded or unhealthy. Higher values are worse; a
/// value at or above a threshold crosses it. `None` never crosses.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// Degraded at or above this value.
    pub degraded_at: Option<f64>,
    /// Unhealthy at or above this value.
    pub unhealthy_at: Option<f64>,
}

/// Thresholds that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    /// A threshold is NaN.
    #[error("the {which} threshold is not a number; give a finite value or none")]
    NotANumber {
        /// `degraded_at` or `unhealthy_at`.
        which: &'static str,
    },
    /// The unhealthy threshold is below the degraded one.
    #[error(
        "unhealthy_at ({unhealthy_at}) is below degraded_at ({degraded_at}); make unhealthy_at the larger"
    )]
    Order {
        /// The degraded threshold.
        degraded_at: f64,
        /// The unhealthy threshold.
        unhealthy_at: f64,
    },
}

/// A check whose value is set by other code, such as a DLQ's size or a circuit breaker's state
/// (1 open, 0 closed). Cloning gives another handle on the same value, so one clone can be
/// registered and another handed to the component that feeds it. The value starts at 0.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), mainstay_health::ThresholdError> {
/// use mainstay_health::{Check, Criticality, Status, ThresholdCheck, Thresholds};
///
/// let dlq = ThresholdCheck::new(
///     "dlq",
///     Criticality::NonCritical,
///     Thresholds { degraded_at: Some(100.0), unhealthy_at: Some(1_000.0) },
/// )?;
/// dlq.set(250.0);
/// assert_eq!(dlq.check().await.status, Status::Degraded);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ThresholdCheck {
    inner: Arc<ThresholdInner>,
}

#[derive(Debug)]
struct ThresholdInner {
    name: String,
    criticality: Criticality,
    thresholds: Thresholds,
    value_bits: AtomicU64,
}

impl ThresholdCheck {
    /// A check named `name` with the given thresholds.
    ///
    /// # Errors
    ///
    /// A NaN threshold, or `unhealthy_at` below `degraded_at`.
    pub fn new(
        name: impl Into<String>,
        criticality: Criticality,
        thresholds: Thresholds,
    ) -> Result<Self, ThresholdError> {
        if thresholds.degraded_at.is_some_and(f64::is_nan) {
            return Err(ThresholdError::NotANumber {
                which: "degraded_at",
            });
        }
        if thresholds.unhealthy_at.is_some_and(f64::is_nan) {
            return Err(ThresholdError::NotANumber {
                which: "unhealthy_at",
            });
        }
        if let (Some(degraded_at), Some(unhealthy_at)) =
            (thresholds.degraded_at, thresholds.unhealthy_at)
            && unhealthy_at < degraded_at
        {
            return Err(ThresholdError::Order {
                degraded_at,
                unhealthy_at,
            });
        }
        Ok(Self {
            inner: Arc::new(ThresholdInner {
                name: name.into(),
                criticality,
                thresholds,
                value_bits: AtomicU64::new(0.0_f64.to_bits()),
            }),
        })
    }

    /// Sets the value the next check run judges. A NaN is ignored (the previous value stays).
    pub fn set(&self, value: f64) {
        if value.is_nan() {
            tracing::debug!(check = %self.inner.name, "ignored a NaN threshold value");
            return;
        }
        self.inner
            .value_bits
            .store(value.to_bits(), Ordering::Relaxed);
    }

    /// The current value.
    #[must_use]
    pub fn value(&self) -> f64 {
        f64::from_bits(self.inner.value_bits.load(Ordering::Relaxed))
    }
}

#[async_trait]
impl Check for ThresholdCheck {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn criticality(&self) -> Criticality {
        self.inner.criticality
    }

    async fn check(&self) -> CheckOutcome {
        let value = self.value();
        let Thresholds {
            degraded_at,
            unhealthy_at,
        } = self.inner.thresholds;
        let outcome = match (unhealthy_at, degraded_at) {
            (Some(limit), _) if value >= limit => CheckOutcome::unhealthy(format!(
                "value {value} is at or above the unhealthy threshold {limit}"
            ))
            .with_public_reason(format!("{value} >= {limit}")),
            (_, Some(limit)) if value >= limit => CheckOutcome::degraded(format!(
                "value {value} is at or above the degraded threshold {limit}"
            ))
            .with_public_reason(format!("{value} >= {limit}")),
            _ => CheckOutcome::new(Status::Healthy, None),
        };
        outcome
            .with_detail("value", value)
            .with_detail("degraded_at", degraded_at)
            .with_detail("unhealthy_at", unhealthy_at)
    }
}
