//! A retry budget shared by every retry of a client (Finagle's `RetryBudget`, gRPC's retry
//! throttling, Envoy's retry budgets): retries may add at most `ratio` of the requests made in the
//! last `ttl`, plus a reserve of `min_retries_per_second`, so a failing dependency never receives
//! more than (1 + ratio) times its normal traffic beyond that reserve.

use std::sync::Arc;
use std::time::Duration;

use mainstay_clock::{RealClock, SharedClock};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::window::Window;

/// The rules of a [`RetryBudget`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request made, as a fraction. Default 0.2.
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic, so that quiet clients can retry. Default 10.
    pub min_retries_per_second: u32,
    /// How long a request counts towards the budget. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_retries_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl RetryBudgetConfig {
    /// Checks every field; the error names the first key that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.ratio >= 0.0 && self.ratio <= 1_000.0) {
            return Err(ConfigError::new(
                "ratio",
                self.ratio,
                "a number from 0 to 1000",
            ));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(3_600) {
            return Err(ConfigError::new("ttl", self.ttl, "1s to 1h"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Inner {
    config: RetryBudgetConfig,
    reserve: f64,
    /// First counter: requests; second: retries.
    window: Window,
    withdrawals: Mutex<()>,
    clock: SharedClock,
}

/// A retry budget. Cheap to clone: clones share the same balance, so give one to every retry of a
/// client.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

impl RetryBudget {
    /// A budget on the real clock.
    pub fn new(config: RetryBudgetConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, RealClock::new().shared())
    }

    /// A budget on the given clock.
    pub fn with_clock(config: RetryBudgetConfig, clock: SharedClock) -> Result<Self, ConfigError> {
        config.validate()?;
        let reserve = f64::from(config.min_retries_per_second) * config.ttl.as_secs_f64();
        Ok(Self {
            inner: Arc::new(Inner {
                window: Window::new(config.ttl, 10),
                reserve,
                config,
                withdrawals: Mutex::new(()),
                clock,
            }),
        })
    }

    /// The budget's rules.
    #[must_use]
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.inner.config
    }

    /// Records a request (a first attempt), which earns `ratio` of a retry.
    pub fn deposit(&self) {
        let window = &self.inner.window;
        window.add(self.inner.clock.coarse_now(), window.epoch(), 1, 0);
    }

    /// Takes one retry from the budget; `false` when it is exhausted.
    #[must_use]
    pub fn try_withdraw(&self) -> bool {
        let inner = &*self.inner;
        // Withdrawals are serialised so that concurrent retries cannot both take the last token;
        // deposits (every request) stay lock-free.
        let _withdrawals = inner.withdrawals.lock();
        let now = inner.clock.coarse_now();
        let sums = inner.window.sums(now);
        let allowed = inner.config.ratio * sums.first as f64 + inner.reserve;
        if sums.second as f64 + 1.0 > allowed {
            return false;
        }
        inner.window.add(now, inner.window.epoch(), 0, 1);
        true
    }

    /// Retries the budget would allow now.
    #[must_use]
    pub fn available(&self) -> u64 {
        let inner = &*self.inner;
        let sums = inner.window.sums(inner.clock.coarse_now());
        let allowed = inner.config.ratio * sums.first as f64 + inner.reserve;
        (allowed - sums.second as f64).max(0.0) as u64
    }
}
