//! The real clocks: [`RealClock`] (std's `Instant`) and [`FastClock`] (the CPU's counter), both with
//! `CLOCK_MONOTONIC_COARSE` as their coarse reading on Linux (`docs/decisions/0011`, `0080`).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::{Clock, SharedClock, Sleep};

/// The real clock, cheap to create: [`std::time::Instant`] for [`Clock::now`], and on Linux
/// `CLOCK_MONOTONIC_COARSE` for [`Clock::coarse_now`]; the system's wall-clock time; sleeps on
/// tokio's timer. The default clock of every mainstay component.
///
/// A `now` costs what an `Instant::elapsed` costs (25-60 ns on the machines measured in
/// `docs/decisions/0011`); a `coarse_now` costs a few nanoseconds (the vDSO reads the time of the
/// last scheduler tick) with a resolution of one tick, 1-4 ms. Other platforms read `Instant` for
/// both.
///
/// ```
/// use mainstay_clock::{Clock, RealClock};
///
/// let clock = RealClock::new();
/// let earlier = clock.coarse_now();
/// assert!(clock.coarse_now() >= earlier);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RealClock {
    origin: Instant,
}

impl RealClock {
    /// A real clock whose `now` counts from this moment.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Wraps this clock for sharing.
    #[must_use]
    pub fn shared(self) -> SharedClock {
        Arc::new(self)
    }
}

impl Default for RealClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for RealClock {
    #[inline]
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    #[inline]
    fn coarse_now(&self) -> Duration {
        #[cfg(target_os = "linux")]
        return coarse_monotonic();
        #[cfg(not(target_os = "linux"))]
        return self.origin.elapsed();
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A real clock for hot paths that need nanosecond resolution: [`Clock::now`] reads the CPU's
/// invariant time-stamp counter through quanta (a few nanoseconds per read, several times cheaper
/// than `Instant`), falling back to the OS's monotonic clock where the counter is not reliable.
/// [`Clock::coarse_now`], [`Clock::system_time`] and [`Clock::sleep`] are [`RealClock`]'s.
///
/// The counter is calibrated against the OS clock once per process, when the first `FastClock` is
/// made: a busy loop of usually a few milliseconds (at most 200 ms). Make it once at start-up, not
/// per request. It is the rate limiter's default clock (`docs/decisions/0053`).
///
/// ```
/// use mainstay_clock::{Clock, FastClock};
///
/// let clock = FastClock::new();
/// let earlier = clock.now();
/// assert!(clock.now() >= earlier);
/// ```
#[derive(Debug, Clone)]
pub struct FastClock {
    clock: quanta::Clock,
    /// The scaled counter at the origin, in nanoseconds.
    origin: u64,
}

impl FastClock {
    /// A fast clock whose `now` counts from this moment; calibrates the counter when it is the
    /// process's first.
    #[must_use]
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.delta_as_nanos(0, clock.raw());
        Self { clock, origin }
    }

    /// Wraps this clock for sharing.
    #[must_use]
    pub fn shared(self) -> SharedClock {
        Arc::new(self)
    }
}

impl Default for FastClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for FastClock {
    #[inline]
    fn now(&self) -> Duration {
        // Governor's reading (the counter scaled from zero) less the origin: measured about 1.5 ns
        // cheaper per read than scaling the delta from the origin (BENCHMARKS.md, 2026-12-04). A
        // reading below the origin (a lagging core, never on an invariant TSC) saturates to zero.
        Duration::from_nanos(
            self.clock
                .delta_as_nanos(0, self.clock.raw())
                .saturating_sub(self.origin),
        )
    }

    #[inline]
    fn coarse_now(&self) -> Duration {
        #[cfg(target_os = "linux")]
        return coarse_monotonic();
        #[cfg(not(target_os = "linux"))]
        return self.now();
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// `CLOCK_MONOTONIC_COARSE`: time since boot as of the last scheduler tick, read in the vDSO.
#[cfg(target_os = "linux")]
#[inline]
fn coarse_monotonic() -> Duration {
    // The coarse clock counts from boot; its origin is irrelevant as long as it is fixed.
    let time = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(time.tv_nsec).unwrap_or(0);
    Duration::new(seconds, nanos)
}
