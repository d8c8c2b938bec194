#![doc = include_str!("../README.md")]

pub mod catalogue;
mod manual;
mod real;
mod tokio_clock;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use manual::ManualClock;
pub use real::{FastClock, RealClock};
pub use tokio_clock::TokioClock;

/// A source of time: monotonic readings, cheap coarse readings, wall-clock time and sleeps.
///
/// A component takes a [`SharedClock`] and reads it for every time-based rule, so that production
/// passes a [`RealClock`] and tests a [`ManualClock`] (or a [`TokioClock`] on paused tokio time).
///
/// The two monotonic readings are two time lines: subtract a [`now`](Self::now) reading only from
/// another `now` reading of the same clock, and a [`coarse_now`](Self::coarse_now) reading only from
/// another `coarse_now` reading. On [`ManualClock`] and [`TokioClock`] they are equal, so a test
/// cannot tell them apart; on the real clocks their origins differ.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use mainstay_clock::{Clock, Sleep};
///
/// /// A clock stopped at one instant: every sleep of it is over at once.
/// #[derive(Debug)]
/// struct Stopped(Duration);
///
/// impl Clock for Stopped {
///     fn now(&self) -> Duration {
///         self.0
///     }
///     fn system_time(&self) -> SystemTime {
///         SystemTime::UNIX_EPOCH + self.0
///     }
///     fn sleep(&self, _: Duration) -> Sleep {
///         Box::pin(std::future::ready(()))
///     }
/// }
///
/// let clock = Stopped(Duration::from_secs(5));
/// // `coarse_now` defaults to `now`.
/// assert_eq!(clock.coarse_now(), Duration::from_secs(5));
/// ```
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// Monotonic time since an origin fixed for the clock's lifetime, at the clock's full
    /// resolution. Never goes backwards.
    fn now(&self) -> Duration;

    /// Monotonic time since an origin fixed for the clock's lifetime, read as cheaply as the clock
    /// can, possibly a few milliseconds behind. Never goes backwards.
    ///
    /// For windows, open durations and idle timeouts measured in seconds, read on every call of a
    /// hot path. The real clocks read `CLOCK_MONOTONIC_COARSE` on Linux here: a few nanoseconds
    /// per read, a resolution of one scheduler tick (1-4 ms). The default is [`now`](Self::now).
    #[inline]
    fn coarse_now(&self) -> Duration {
        self.now()
    }

    /// Wall-clock time, for timestamps that leave the process (stored, logged, shown). It may jump
    /// when the system's clock is set; measure intervals within a process with
    /// [`now`](Self::now).
    fn system_time(&self) -> SystemTime;

    /// A future that completes once `duration` has passed on this clock's [`now`](Self::now).
    ///
    /// The real clocks and [`TokioClock`] sleep on tokio's timer, so they must be called inside a
    /// tokio runtime with time enabled (as `tokio::time::sleep`); [`ManualClock`]'s sleeps need no
    /// runtime.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// A clock shared by the components that read it.
pub type SharedClock = Arc<dyn Clock>;

/// The future [`Clock::sleep`] returns: boxed, since the trait is used as `dyn Clock`. Sleeps wait
/// for timeouts, intervals and rate gaps, never on a per-call hot path.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
