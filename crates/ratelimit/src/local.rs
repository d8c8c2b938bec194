//! The in-process backend: one GCRA limit over many keys, on governor's keyed state store.
//!
//! The state is governor's `DashMapStateStore` (a sharded map of atomic TATs, the store behind
//! governor's keyed `RateLimiter`), driven through its `StateStore::measure_and_replace` with the
//! arithmetic of [`crate::gcra`], which is governor's. Going one level below governor's
//! `RateLimiter` gives what it lacks and a request with several limits needs: reading a TAT
//! without consuming, and giving a consumed cell back when a later limit denies
//! (`docs/decisions/0050`). Idle keys are reclaimed by [`InProcessLimiter::sweep`] (governor's
//! `retain_recent` and `shrink_to_fit`), and the number of keys is capped.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use mainstay_clock::{FastClock, SharedClock};

use crate::config::{ConfigError, LimitSpec};
use crate::gcra::{Gcra, Step};
use crate::identity::Pseudonym;

/// The key new keys share once a store holds `max_keys` keys.
pub(crate) const OVERFLOW_KEY: Pseudonym = Pseudonym([0xff; 16]);

/// Stored TATs are nanoseconds since the clock's origin plus this offset, so that a stored value is
/// never 0 (governor's marker of an absent state).
const ORIGIN_OFFSET_NS: u64 = 1_000_000_000;

/// The in-process time of a clock reading, in nanoseconds.
#[inline]
pub(crate) fn local_now(reading: Duration) -> u64 {
    u64::try_from(reading.as_nanos())
        .unwrap_or(u64::MAX - ORIGIN_OFFSET_NS)
        .saturating_add(ORIGIN_OFFSET_NS)
}

/// The outcome of one [`InProcessLimiter::check_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDecision {
    /// Whether the request passes.
    pub allowed: bool,
    /// Requests that would still pass right after this one.
    pub remaining: u32,
    /// Time until the key's bucket is full again.
    pub reset_after: Duration,
    /// For a denial: time until a request would pass; zero when allowed.
    pub retry_after: Duration,
}

/// One GCRA limit kept in process memory, per key: what governor's keyed `RateLimiter` does, plus
/// reads without consumption, refunds and a key cap. Cheap to share behind an `Arc`.
///
/// ```
/// use std::time::Duration;
/// use mainstay_ratelimit::{InProcessLimiter, LimitSpec, Pseudonym};
/// use mainstay_clock::ManualClock;
///
/// let clock = ManualClock::new();
/// let limiter = InProcessLimiter::new(&LimitSpec::per_minute(60).with_burst(2), 1_000, clock.shared())?;
/// let key = Pseudonym([7; 16]);
/// assert!(limiter.check_key(&key).allowed);
/// assert!(limiter.check_key(&key).allowed);
/// let denied = limiter.check_key(&key);
/// assert!(!denied.allowed);
/// assert_eq!(denied.retry_after, Duration::from_secs(1));
/// clock.advance(Duration::from_secs(1));
/// assert!(limiter.check_key(&key).allowed);
/// # Ok::<(), mainstay_ratelimit::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct InProcessLimiter {
    /// The limit, in nanoseconds.
    gcra: Gcra,
    store: DashMapStateStore<Pseudonym>,
    /// Keys in the store: exact after a sweep, counted up on insertion between sweeps.
    keys: AtomicUsize,
    max_keys: usize,
    clock: SharedClock,
}

impl InProcessLimiter {
    /// A limiter of `spec` holding at most `max_keys` keys, reading time from `clock`.
    pub fn new(spec: &LimitSpec, max_keys: usize, clock: SharedClock) -> Result<Self, ConfigError> {
        spec.validate("limit")?;
        Ok(Self::from_gcra(Gcra::from_spec(spec, 1), max_keys, clock))
    }

    /// A limiter of `spec` on the real clock ([`FastClock`], `docs/decisions/0053`).
    pub fn with_real_clock(spec: &LimitSpec, max_keys: usize) -> Result<Self, ConfigError> {
        Self::new(spec, max_keys, FastClock::new().shared())
    }

    pub(crate) fn from_gcra(gcra: Gcra, max_keys: usize, clock: SharedClock) -> Self {
        Self {
            gcra: gcra.in_nanos(),
            store: DashMapStateStore::default(),
            keys: AtomicUsize::new(0),
            max_keys: max_keys.max(1),
            clock,
        }
    }

    /// Decides one request for `key` now, consuming from its bucket when it passes.
    #[inline]
    pub fn check_key(&self, key: &Pseudonym) -> LocalDecision {
        let step = self.consume(key, local_now(self.clock.now()));
        LocalDecision {
            allowed: step.allowed,
            remaining: step.remaining,
            reset_after: Duration::from_nanos(step.reset),
            retry_after: Duration::from_nanos(step.retry),
        }
    }

    /// Keys held now (approximate between sweeps: it may count a key twice when two threads insert
    /// it at once).
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    /// Whether no key is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key whose bucket is full again (indistinguishable from a fresh key, as governor's
    /// `retain_recent` does), shrinks the map, and returns the keys left.
    pub fn sweep(&self) -> usize {
        self.sweep_at(local_now(self.clock.now()))
    }

    pub(crate) fn sweep_at(&self, now: u64) -> usize {
        ShrinkableKeyedStateStore::retain_recent(&self.store, Nanos::from(now));
        ShrinkableKeyedStateStore::shrink_to_fit(&self.store);
        let left = ShrinkableKeyedStateStore::len(&self.store);
        self.keys.store(left, Ordering::Relaxed);
        left
    }

    /// The key a request of `key` is counted under: itself, or the shared overflow key once the
    /// store is full and `key` is not in it.
    #[inline]
    fn admit_key<'a>(&self, key: &'a Pseudonym) -> &'a Pseudonym {
        if self.keys.load(Ordering::Relaxed) >= self.max_keys && !self.store.contains_key(key) {
            &OVERFLOW_KEY
        } else {
            key
        }
    }

    /// Decides and, when allowed, consumes one cell at `now` (nanoseconds, see [`local_now`]).
    #[inline]
    pub(crate) fn consume(&self, key: &Pseudonym, now: u64) -> Step {
        let key = self.admit_key(key);
        let gcra = &self.gcra;
        let inserted = Cell::new(false);
        let result = self.store.measure_and_replace(key, |stored| {
            let stored = stored.map(u64::from);
            inserted.set(stored.is_none());
            let step = gcra.step(stored, now);
            if step.allowed {
                Ok((step, Nanos::from(step.new_tat)))
            } else {
                Err(step)
            }
        });
        match result {
            Ok(step) => {
                if inserted.get() {
                    self.keys.fetch_add(1, Ordering::Relaxed);
                }
                step
            }
            Err(step) => step,
        }
    }

    /// What a request of `key` at `now` would get, without consuming or inserting anything.
    pub(crate) fn peek(&self, key: &Pseudonym, now: u64) -> Step {
        let key = self.admit_key(key);
        if !self.store.contains_key(key) {
            return self.gcra.step(None, now);
        }
        let gcra = &self.gcra;
        match self.store.measure_and_replace(key, |stored| {
            Err::<((), Nanos), Step>(gcra.step(stored.map(u64::from), now))
        }) {
            Ok(()) => gcra.step(None, now),
            Err(step) => step,
        }
    }

    /// Gives back the cell an allowed [`InProcessLimiter::consume`] took (another limit of the same
    /// request denied it). The bucket ends where it would be without that request, or at `now`
    /// when it was full, which decides the same.
    pub(crate) fn refund(&self, key: &Pseudonym) {
        let key = self.admit_key(key);
        let emission = self.gcra.emission;
        let _ = self.store.measure_and_replace(key, |stored| match stored {
            Some(tat) => Ok((
                (),
                Nanos::from(u64::from(tat).saturating_sub(emission).max(1)),
            )),
            None => Err(()),
        });
    }
}
