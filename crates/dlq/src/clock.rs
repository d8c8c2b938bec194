//! Injectable time: a real clock for production and a manual one for tests.
//!
//! Every time-based rule of the queue (entry timestamps, TTL expiry, the cleanup period and the
//! redrive rate limit) goes through a [`Clock`], so tests drive it without sleeping.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// A boxed future returned by [`Clock::sleep`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of wall-clock time and of sleeps measured on that time.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Sleep<'_>;
}

/// The system clock, with sleeps on tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that only moves when told to; sleeps complete when [`ManualClock::advance`] passes
/// their deadline.
///
/// Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    now: Mutex<SystemTime>,
    moved: Notify,
    sleeping: AtomicUsize,
    started: AtomicUsize,
}

/// Counts a sleep as pending until it completes or is dropped.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ManualClock {
    /// A manual clock starting at `start`.
    #[must_use]
    pub fn new(start: SystemTime) -> Self {
        Self {
            inner: Arc::new(ManualInner {
                now: Mutex::new(start),
                moved: Notify::new(),
                sleeping: AtomicUsize::new(0),
                started: AtomicUsize::new(0),
            }),
        }
    }

    /// Moves the clock forward by `by` and wakes the sleeps whose deadline has passed.
    pub fn advance(&self, by: Duration) {
        {
            let mut now = self.inner.now.lock();
            *now += by;
        }
        self.inner.moved.notify_waiters();
    }

    /// Sleeps started on this clock that have not completed yet; lets a test advance time only
    /// once the code under test is waiting on it.
    #[must_use]
    pub fn pending_sleeps(&self) -> usize {
        self.inner.sleeping.load(Ordering::SeqCst)
    }

    /// Sleeps started on this clock so far.
    #[must_use]
    pub fn sleeps_started(&self) -> usize {
        self.inner.started.load(Ordering::SeqCst)
    }
}

impl Default for ManualClock {
    /// A manual clock starting at 2026-01-01T00:00:00Z.
    fn default() -> Self {
        Self::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.inner.now.lock()
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        let deadline = self.now() + duration;
        self.inner.sleeping.fetch_add(1, Ordering::SeqCst);
        self.inner.started.fetch_add(1, Ordering::SeqCst);
        let pending = Pending(&self.inner.sleeping);
        Box::pin(async move {
            let _pending = pending;
            loop {
                let moved = self.inner.moved.notified();
                tokio::pin!(moved);
                // Register for the wake-up before reading the time, so an advance between the
                // check and the await is not missed.
                moved.as_mut().enable();
                if self.now() >= deadline {
                    return;
                }
                moved.await;
            }
        })
    }
}
