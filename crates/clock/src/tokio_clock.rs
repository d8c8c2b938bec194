//! [`TokioClock`]: time as tokio's runtime sees it, so that it follows paused and advanced tokio time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{Clock, SharedClock, Sleep};

/// A clock that reads [`tokio::time::Instant`] and sleeps on tokio's timer, so that in tests on
/// paused time (`#[tokio::test(start_paused = true)]`, `tokio::time::pause`) it stands still and
/// jumps with `tokio::time::advance` or the runtime's auto-advance. Outside paused time it is the
/// real monotonic clock.
///
/// Sleeps have the millisecond resolution of tokio's timer: one made off a millisecond boundary
/// (after `tokio::time::pause` inside a running runtime, say) ends up to 1 ms late.
///
/// [`Clock::coarse_now`] is [`Clock::now`]; [`Clock::system_time`] is the system time when the
/// clock was made plus `now`, so that timestamps move with paused time too.
///
/// ```
/// use std::time::Duration;
/// use mainstay_clock::{Clock, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // In a test under #[tokio::test(start_paused = true)]:
/// let clock = TokioClock::new();
/// clock.sleep(Duration::from_secs(60)).await; // paused time jumps to the timer at once
/// assert_eq!(clock.now(), Duration::from_secs(60));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    wall_origin: SystemTime,
}

impl TokioClock {
    /// A clock whose origin is the current tokio instant (tokio's paused time when called inside a
    /// runtime whose time is paused).
    #[must_use]
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall_origin: SystemTime::now(),
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

    fn system_time(&self) -> SystemTime {
        self.wall_origin + self.now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}
