//! Injectable monotonic clocks: a cheap real one for production, a manual one for tests and one that
//! follows tokio's (pausable) time.
//!
//! Every time-based rule in this crate (breaker windows, open durations, retry budgets) reads time
//! through [`Clock`], so tests drive it exactly with [`ManualClock`] instead of sleeping. Other mainstay
//! crates (rate limits, storage tiering) use the same trait.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock.
///
/// [`Clock::now`] is the time elapsed since an origin that is fixed for the clock's lifetime, so two
/// readings of one clock can be subtracted; readings of different clocks cannot be compared.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The time elapsed since this clock's origin. Never goes backwards.
    fn now(&self) -> Duration;
}

/// A clock shared by the components that use it.
pub type SharedClock = Arc<dyn Clock>;

/// The real monotonic clock, in one of two precisions.
///
/// [`RealClock::coarse`] (the breakers' default) reads `CLOCK_MONOTONIC_COARSE` on Linux: a few
/// nanoseconds per read with a resolution of one scheduler tick (1-4 ms), plenty for windows and
/// open durations measured in seconds. [`RealClock::precise`] reads [`std::time::Instant`]:
/// nanosecond resolution, several times slower per read here (see `docs/decisions/0011`). Other
/// platforms always use `Instant`.
#[derive(Debug, Clone, Copy)]
pub struct RealClock {
    origin: Instant,
    coarse: bool,
}

impl RealClock {
    /// A clock with nanosecond resolution, backed by [`std::time::Instant`].
    #[must_use]
    pub fn precise() -> Self {
        Self {
            origin: Instant::now(),
            coarse: false,
        }
    }

    /// A clock with a resolution of one scheduler tick, several times cheaper to read on Linux.
    #[must_use]
    pub fn coarse() -> Self {
        Self {
            origin: Instant::now(),
            coarse: true,
        }
    }

    /// Wraps this clock for sharing.
    #[must_use]
    pub fn shared(self) -> SharedClock {
        Arc::new(self)
    }
}

impl Default for RealClock {
    /// The coarse clock, the breakers' default.
    fn default() -> Self {
        Self::coarse()
    }
}

impl Clock for RealClock {
    #[inline]
    fn now(&self) -> Duration {
        #[cfg(target_os = "linux")]
        if self.coarse {
            // The coarse clock counts from boot; its origin is irrelevant as long as it is fixed.
            let time = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
            let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
            let nanos = u32::try_from(time.tv_nsec).unwrap_or(0);
            return Duration::new(seconds, nanos);
        }
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to: the test clock.
///
/// Clones share the same time, so a test keeps one handle and gives another to the component under
/// test. It starts at zero.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::SeqCst);
    }

    /// Wraps a handle to this clock for sharing; the handle keeps following [`ManualClock::advance`].
    #[must_use]
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// A clock that reads [`tokio::time::Instant`], so that it follows paused and advanced tokio time in
/// tests (`#[tokio::test(start_paused = true)]`). In production it is the real monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is the current tokio instant.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }

    /// Wraps this clock for sharing.
    #[must_use]
    pub fn shared(self) -> SharedClock {
        Arc::new(self)
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// Nanoseconds of a duration, saturating: the unit the lock-free state stores.
#[inline]
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
