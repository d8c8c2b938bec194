//! [`ManualClock`]: the test clock, whose time moves only when the test says so.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::{Clock, SharedClock, Sleep};

/// A clock for tests: time stands still until [`advance`](Self::advance) moves it, and a sleep
/// completes when an advance reaches its deadline.
///
/// Clones share the same time, so a test keeps one handle and gives another to the component under
/// test. The clock starts at monotonic time zero and, unless made with
/// [`starting_at`](Self::starting_at), at the wall-clock time 2026-01-01T00:00:00Z;
/// [`Clock::system_time`] is that start plus [`Clock::now`], and
/// [`Clock::coarse_now`] is `now`. Sleeps need no runtime: an advance wakes the tasks whose sleeps
/// are due, in the order of their deadlines.
///
/// ```
/// use std::time::Duration;
/// use mainstay_clock::{Clock, ManualClock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let clock = ManualClock::new();
/// let sleeper = tokio::spawn(clock.sleep(Duration::from_secs(5)));
/// tokio::task::yield_now().await;
/// assert_eq!(clock.pending_sleeps(), 1);
///
/// clock.advance(Duration::from_secs(5));
/// sleeper.await.unwrap();
/// assert_eq!(clock.now(), Duration::from_secs(5));
/// assert_eq!(clock.pending_sleeps(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Inner>,
}

/// 2026-01-01T00:00:00Z in seconds since the Unix epoch: a fixed, realistic start, so that tests
/// see the same timestamps on every run and never a date near the epoch.
const DEFAULT_START_SECONDS: u64 = 1_767_225_600;

struct Inner {
    /// Nanoseconds since the origin: read without the lock, written only under it so that a sleep
    /// registered under the lock is never missed by an advance.
    nanos: AtomicU64,
    start: SystemTime,
    sleepers: Mutex<Sleepers>,
}

#[derive(Default)]
struct Sleepers {
    /// Sleeps not yet due, by deadline and then by the order they were made; a waker once polled.
    waiting: BTreeMap<(Duration, u64), Option<Waker>>,
    /// Sleeps made so far, due at once or not: the key of the next one.
    started: u64,
}

impl ManualClock {
    /// A clock at monotonic time zero and wall-clock time 2026-01-01T00:00:00Z.
    #[must_use]
    pub fn new() -> Self {
        Self::starting_at(SystemTime::UNIX_EPOCH + Duration::from_secs(DEFAULT_START_SECONDS))
    }

    /// A clock at monotonic time zero and wall-clock time `start`.
    #[must_use]
    pub fn starting_at(start: SystemTime) -> Self {
        Self {
            inner: Arc::new(Inner {
                nanos: AtomicU64::new(0),
                start,
                sleepers: Mutex::new(Sleepers::default()),
            }),
        }
    }

    /// Moves time forward by `by` (saturating after about 584 years) and wakes every sleep that is
    /// now due, earliest deadline first.
    ///
    /// Time jumps: a task that sleeps again after being woken measures its next sleep from the new
    /// time, so advancing by 3 s wakes a 1 s periodic sleeper once, not three times.
    pub fn advance(&self, by: Duration) {
        let due: Vec<Waker> = {
            let mut sleepers = self.inner.sleepers.lock();
            let nanos = self
                .inner
                .nanos
                .load(Ordering::SeqCst)
                .saturating_add(u64::try_from(by.as_nanos()).unwrap_or(u64::MAX));
            self.inner.nanos.store(nanos, Ordering::SeqCst);
            let now = Duration::from_nanos(nanos);
            let mut due = Vec::new();
            while let Some(entry) = sleepers.waiting.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                // A sleep never polled has no waker yet; its first poll finds it due.
                due.extend(entry.remove());
            }
            due
        };
        // Woken outside the lock: a woken task on another thread may poll (and lock) at once.
        for waker in due {
            waker.wake();
        }
    }

    /// Sleeps that wait for time to move: made, not yet due and not dropped. Lets a test advance
    /// time only once the code under test waits on it.
    #[must_use]
    pub fn pending_sleeps(&self) -> usize {
        self.inner.sleepers.lock().waiting.len()
    }

    /// Sleeps made on this clock so far, including those that were due at once.
    #[must_use]
    pub fn sleeps_started(&self) -> u64 {
        self.inner.sleepers.lock().started
    }

    /// Wraps a handle to this clock for sharing; the handle follows [`ManualClock::advance`].
    #[must_use]
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ManualClock")
            .field("now", &self.now())
            .field("start", &self.inner.start)
            .field("pending_sleeps", &self.pending_sleeps())
            .finish()
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.inner.nanos.load(Ordering::SeqCst))
    }

    fn system_time(&self) -> SystemTime {
        self.inner.start + self.now()
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let mut sleepers = self.inner.sleepers.lock();
        let key = (self.now().saturating_add(duration), sleepers.started);
        sleepers.started += 1;
        if duration.is_zero() {
            return Box::pin(std::future::ready(()));
        }
        sleepers.waiting.insert(key, None);
        Box::pin(ManualSleep {
            inner: Arc::clone(&self.inner),
            key,
            done: false,
        })
    }
}

/// A sleep on a [`ManualClock`]: pending while its entry waits in the clock, done once an advance
/// has removed it.
struct ManualSleep {
    inner: Arc<Inner>,
    key: (Duration, u64),
    done: bool,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let mut sleepers = self.inner.sleepers.lock();
        match sleepers.waiting.get_mut(&self.key) {
            Some(waker) => {
                match waker {
                    Some(waker) if waker.will_wake(context.waker()) => {}
                    _ => *waker = Some(context.waker().clone()),
                }
                Poll::Pending
            }
            None => {
                drop(sleepers);
                self.done = true;
                Poll::Ready(())
            }
        }
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if !self.done {
            // A sleep dropped before its deadline (a timeout whose call finished first) stops
            // counting as pending.
            self.inner.sleepers.lock().waiting.remove(&self.key);
        }
    }
}
