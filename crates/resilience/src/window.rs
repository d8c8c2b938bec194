//! A lock-free sliding time window of two counters (calls and failures, requests and retries),
//! split into buckets.
//!
//! Each bucket holds its counts and the window's epoch in one atomic word, so that recording is
//! one compare-and-swap that adds to the counts only when they belong to the epoch the caller
//! read: [`Window::clear`] moves to a new epoch in one step, and a caller that read the previous
//! epoch can no longer add to the counts of the new one (the breaker reads the epoch before it
//! checks its own generation, and bumps the generation before it clears, so an outcome admitted
//! before a reset never counts after it). When time moves into a bucket that still holds counts
//! from a previous turn of the ring, the first recorder empties it under a small lock; that happens
//! once per bucket width, never per call. The window's length can change while it is in use
//! ([`Window::set_length`]): the counts are forgotten and every bucket tag written afterwards uses
//! the new width.

use std::time::Duration;

use crate::nanos;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// The tag of a bucket that holds nothing.
const EMPTY: u64 = u64::MAX;

// A bucket's word: epoch (16 bits) | first counter (24) | second counter (24).
const COUNT_BITS: u32 = 24;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const EPOCH_SHIFT: u32 = 2 * COUNT_BITS;
const EPOCH_MASK: u64 = 0xFFFF;

#[derive(Debug)]
struct Bucket {
    /// The absolute bucket index (time / bucket width) whose counts this bucket holds.
    tag: AtomicU64,
    /// The packed epoch and counts.
    counts: AtomicU64,
}

/// Sums of a window's two counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sums {
    pub(crate) first: u64,
    pub(crate) second: u64,
}

#[derive(Debug)]
pub(crate) struct Window {
    /// The width of one bucket; changes only under `rotation`.
    bucket_nanos: AtomicU64,
    /// Counts of any other epoch are not counted; bumped by every clear.
    epoch: AtomicU64,
    buckets: Box<[Bucket]>,
    rotation: Mutex<()>,
}

#[inline]
fn held_epoch(word: u64) -> u64 {
    word >> EPOCH_SHIFT
}

#[inline]
fn calls(word: u64) -> u64 {
    (word >> COUNT_BITS) & COUNT_MAX
}

#[inline]
fn failures(word: u64) -> u64 {
    word & COUNT_MAX
}

impl Window {
    /// A window of `length` split into `buckets` buckets, rounded up to a power of two so that
    /// finding a bucket is a mask rather than a division (each bucket at least 1 ns wide).
    pub(crate) fn new(length: Duration, buckets: u32) -> Self {
        let count = u64::from(Self::bucket_count_for(buckets));
        let bucket_nanos = AtomicU64::new(Self::width(length, count));
        let buckets = (0..count)
            .map(|_| Bucket {
                tag: AtomicU64::new(EMPTY),
                counts: AtomicU64::new(0),
            })
            .collect();
        Self {
            bucket_nanos,
            epoch: AtomicU64::new(0),
            buckets,
            rotation: Mutex::new(()),
        }
    }

    /// The number of buckets a window asked for `buckets` has.
    pub(crate) fn bucket_count_for(buckets: u32) -> u32 {
        buckets.max(1).next_power_of_two()
    }

    /// The number of buckets this window has.
    pub(crate) fn bucket_count(&self) -> u32 {
        u32::try_from(self.buckets.len()).unwrap_or(u32::MAX)
    }

    fn width(length: Duration, count: u64) -> u64 {
        (nanos(length) / count).max(1)
    }

    /// The epoch a recorder must read before it checks that its outcome is still current.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst) & EPOCH_MASK
    }

    /// Gives the window a new length (same bucket count) and forgets every count.
    pub(crate) fn set_length(&self, length: Duration) {
        let _rotation = self.rotation.lock();
        self.bucket_nanos.store(
            Self::width(length, self.buckets.len() as u64),
            Ordering::Release,
        );
        self.clear();
    }

    fn index_and_bucket(&self, now: Duration) -> Option<(u64, &Bucket)> {
        let index = nanos(now) / self.bucket_nanos.load(Ordering::Acquire).max(1);
        let slot = usize::try_from(index & (self.buckets.len() as u64 - 1)).ok()?;
        self.buckets.get(slot).map(|bucket| (index, bucket))
    }

    /// Adds to the two counters of the bucket that holds `now`, if `epoch` (read by the caller
    /// with [`Window::epoch`]) is still the window's. Returns whether it counted.
    #[inline]
    pub(crate) fn add(&self, now: Duration, epoch: u64, first: u64, second: u64) -> bool {
        let Some((mut index, mut bucket)) = self.index_and_bucket(now) else {
            return false;
        };
        let tag = bucket.tag.load(Ordering::Acquire);
        if tag != index {
            if tag != EMPTY && tag > index {
                // A caller that read the clock a whole window ago: its count is too old to matter.
                return false;
            }
            let _rotation = self.rotation.lock();
            // The width may have changed since it was read: tags are only written with the current
            // one.
            let Some(current) = self.index_and_bucket(now) else {
                return false;
            };
            (index, bucket) = current;
            let tag = bucket.tag.load(Ordering::Acquire);
            if tag != EMPTY && tag > index {
                return false;
            }
            if tag != index {
                bucket.counts.store(0, Ordering::Release);
                bucket.tag.store(index, Ordering::Release);
            }
        }
        let mut word = bucket.counts.load(Ordering::Acquire);
        loop {
            let held = held_epoch(word);
            let (mut calls, mut failures) = if held == epoch {
                (calls(word) + first, failures(word) + second)
            } else if word & !(EPOCH_MASK << EPOCH_SHIFT) != 0
                && (held.wrapping_sub(epoch) & EPOCH_MASK) <= EPOCH_MASK / 2
            {
                // The bucket already counts for a later epoch: this caller is stale.
                return false;
            } else {
                // Counts of an earlier epoch: forgotten.
                (first.min(COUNT_MAX), second.min(COUNT_MAX))
            };
            while calls > COUNT_MAX || failures > COUNT_MAX {
                // Halving both keeps their ratio.
                calls /= 2;
                failures /= 2;
            }
            let next = (epoch << EPOCH_SHIFT) | (calls << COUNT_BITS) | failures;
            match bucket.counts.compare_exchange_weak(
                word,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => word = actual,
            }
        }
    }

    /// The sums over the buckets of the current epoch that lie within the window ending at `now`:
    /// `first` calls, `second` failures.
    pub(crate) fn sums(&self, now: Duration) -> Sums {
        let epoch = self.epoch();
        let index = nanos(now) / self.bucket_nanos.load(Ordering::Acquire).max(1);
        let count = self.buckets.len() as u64;
        let mut sums = Sums::default();
        for bucket in &*self.buckets {
            let tag = bucket.tag.load(Ordering::Acquire);
            let word = bucket.counts.load(Ordering::Acquire);
            if tag <= index && index - tag < count && held_epoch(word) == epoch {
                sums.first += calls(word);
                sums.second += failures(word);
            }
        }
        sums
    }

    /// Forgets every count, in one step: a new epoch.
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_of_the_window() {
        let window = Window::new(Duration::from_secs(60), 6);
        window.add(Duration::from_secs(1), window.epoch(), 1, 1);
        window.add(Duration::from_secs(15), window.epoch(), 1, 0);
        assert_eq!(
            window.sums(Duration::from_secs(59)),
            Sums {
                first: 2,
                second: 1
            }
        );
        // At 65 s the bucket [0 s, 10 s) has left the window; [10 s, 20 s) is still in it.
        assert_eq!(
            window.sums(Duration::from_secs(65)),
            Sums {
                first: 1,
                second: 0
            }
        );
        // Writing into a reused slot clears what it held a full turn ago.
        window.add(Duration::from_secs(75), window.epoch(), 1, 1);
        assert_eq!(
            window.sums(Duration::from_secs(79)),
            Sums {
                first: 1,
                second: 1
            }
        );
        window.clear();
        assert_eq!(window.sums(Duration::from_secs(79)), Sums::default());
    }

    #[test]
    fn a_new_length_forgets_the_counts_and_slides_by_the_new_width() {
        let window = Window::new(Duration::from_secs(60), 4);
        for _ in 0..3 {
            window.add(Duration::from_secs(10), window.epoch(), 1, 1);
        }
        window.set_length(Duration::from_secs(8));
        assert_eq!(window.sums(Duration::from_secs(10)), Sums::default());
        assert_eq!(window.bucket_count(), 4);
        // Buckets are now 2 s wide: a count at 10 s has left the window by 18 s.
        window.add(Duration::from_secs(10), window.epoch(), 1, 0);
        window.add(Duration::from_secs(16), window.epoch(), 1, 1);
        assert_eq!(
            window.sums(Duration::from_secs(17)),
            Sums {
                first: 2,
                second: 1
            }
        );
        assert_eq!(
            window.sums(Duration::from_secs(18)),
            Sums {
                first: 1,
                second: 1
            }
        );
    }

    #[test]
    fn a_caller_of_an_earlier_epoch_never_counts_in_a_later_one() {
        let window = Window::new(Duration::from_secs(60), 4);
        let stale = window.epoch();
        window.add(Duration::from_secs(1), stale, 1, 1);
        window.clear();
        assert_eq!(window.sums(Duration::from_secs(1)), Sums::default());
        let current = window.epoch();
        assert!(window.add(Duration::from_secs(1), current, 1, 0));
        assert!(
            !window.add(Duration::from_secs(1), stale, 1, 1),
            "a later epoch holds the bucket"
        );
        assert_eq!(
            window.sums(Duration::from_secs(1)),
            Sums {
                first: 1,
                second: 0
            }
        );
    }

    #[test]
    fn a_full_bucket_halves_its_counts_and_keeps_the_rate() {
        let window = Window::new(Duration::from_secs(60), 1);
        let epoch = window.epoch();
        let bucket = &window.buckets[0];
        bucket.tag.store(0, Ordering::Release);
        bucket.counts.store(
            (epoch << EPOCH_SHIFT) | (COUNT_MAX << COUNT_BITS) | (COUNT_MAX / 2 + 1),
            Ordering::Release,
        );
        window.add(Duration::from_secs(1), epoch, 1, 1);
        let sums = window.sums(Duration::from_secs(1));
        assert_eq!(sums.first, 1 << (COUNT_BITS - 1));
        assert_eq!(sums.second, (COUNT_MAX / 2 + 2) / 2);
    }

    #[test]
    fn a_stale_caller_does_not_pollute_a_newer_bucket() {
        let window = Window::new(Duration::from_secs(60), 4);
        window.add(Duration::from_secs(65), window.epoch(), 1, 0);
        window.add(Duration::from_secs(5), window.epoch(), 1, 1);
        assert_eq!(
            window.sums(Duration::from_secs(65)),
            Sums {
                first: 1,
                second: 0
            }
        );
    }
}
