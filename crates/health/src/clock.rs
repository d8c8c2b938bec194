//! The injectable clock behind cache intervals, timeouts, latency and timestamps.
//!
//! Production uses [`SystemClock`] (tokio timers, `std::time::Instant`); tests use [`ManualClock`],
//! whose time moves only when the test calls [`ManualClock::advance`]. This keeps
//! `tokio/test-util` out of benchmarks and release builds (design.md, "Time").

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// A boxed sleep future returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of monotonic time, wall-clock time and sleeps.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic time since an arbitrary, fixed origin.
    fn now(&self) -> Duration;

    /// Wall-clock time, used for `observed_at` timestamps.
    fn system_time(&self) -> SystemTime;

    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// The real clock: `std::time::Instant`, `SystemTime::now()` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A real clock whose origin is now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock for tests: time stands still until [`advance`](Self::advance) moves it.
///
/// Cloning gives another handle on the same time.
///
/// ```
/// use std::time::Duration;
/// use mainstay_health::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_secs(3));
/// assert_eq!(clock.now(), Duration::from_secs(3));
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Default)]
struct ManualState {
    now: Duration,
    sleepers: Vec<(Duration, oneshot::Sender<()>)>,
}

impl ManualClock {
    /// A manual clock at monotonic time zero and wall-clock time `1970-01-01T00:00:00Z`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward by `duration` and wakes every sleep that is now due.
    pub fn advance(&self, duration: Duration) {
        let due: Vec<oneshot::Sender<()>> = {
            let mut state = self.inner.lock();
            state.now = state.now.saturating_add(duration);
            let now = state.now;
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.sleepers)
                .into_iter()
                .partition(|(deadline, _)| *deadline <= now);
            state.sleepers = waiting;
            due.into_iter().map(|(_, sender)| sender).collect()
        };
        for sender in due {
            // The sleeper may have been dropped (its check finished first); that is fine.
            let _ = sender.send(());
        }
    }

    /// How many sleeps are waiting for time to move (dropped ones are not counted).
    #[must_use]
    pub fn pending_sleeps(&self) -> usize {
        let state = self.inner.lock();
        state
            .sleepers
            .iter()
            .filter(|(_, sender)| !sender.is_closed())
            .count()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        formatter
            .debug_struct("ManualClock")
            .field("now", &state.now)
            .field("sleepers", &state.sleepers.len())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        self.inner.lock().now
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let mut state = self.inner.lock();
        if duration.is_zero() {
            return Box::pin(std::future::ready(()));
        }
        let deadline = state.now.saturating_add(duration);
        let (sender, receiver) = oneshot::channel();
        // Forget sleeps whose futures were dropped, so a long test does not accumulate them.
        state.sleepers.retain(|(_, sender)| !sender.is_closed());
        state.sleepers.push((deadline, sender));
        Box::pin(async move {
            // An error means the clock itself was dropped: no time will ever pass again, so
            // completing is as good as any other answer and never hangs a test forever.
            let _ = receiver.await;
        })
    }
}
