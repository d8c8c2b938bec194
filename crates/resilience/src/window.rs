//! A lock-free sliding time window of two counters, split into buckets.
//!
//! Recording is one atomic load and two atomic adds on the current bucket. When time moves into a
//! bucket that still holds counts from a previous turn of the ring, the first recorder clears it
//! under a small lock; that happens once per bucket width, never per call. The window's length can
//! change while it is in use ([`Window::set_length`]): the counts are forgotten and every bucket
//! tag written afterwards uses the new width.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::nanos;

/// The tag of a bucket that holds nothing.
const EMPTY: u64 = u64::MAX;

#[derive(Debug)]
struct Bucket {
    /// The absolute bucket index (time / bucket width) whose counts this bucket holds.
    tag: AtomicU64,
    first: AtomicU64,
    second: AtomicU64,
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
    buckets: Box<[Bucket]>,
    rotation: Mutex<()>,
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
                first: AtomicU64::new(0),
                second: AtomicU64::new(0),
            })
            .collect();
        Self {
            bucket_nanos,
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

    /// Gives the window a new length (same bucket count) and forgets every count.
    pub(crate) fn set_length(&self, length: Duration) {
        let _rotation = self.rotation.lock();
        self.bucket_nanos.store(
            Self::width(length, self.buckets.len() as u64),
            Ordering::Release,
        );
        self.clear_locked();
    }

    fn index_and_bucket(&self, now: Duration) -> Option<(u64, &Bucket)> {
        let index = nanos(now) / self.bucket_nanos.load(Ordering::Acquire);
        let slot = usize::try_from(index & (self.buckets.len() as u64 - 1)).ok()?;
        self.buckets.get(slot).map(|bucket| (index, bucket))
    }

    /// Adds to the counters of the bucket that holds `now`.
    #[inline]
    pub(crate) fn add(&self, now: Duration, first: u64, second: u64) {
        let Some((mut index, mut bucket)) = self.index_and_bucket(now) else {
            return;
        };
        let tag = bucket.tag.load(Ordering::Acquire);
        if tag != index {
            if tag != EMPTY && tag > index {
                // A caller that read the clock a whole window ago: its count is too old to matter.
                return;
            }
            let _rotation = self.rotation.lock();
            // The width may have changed since it was read: tags are only written with the current
            // one.
            let Some(current) = self.index_and_bucket(now) else {
                return;
            };
            (index, bucket) = current;
            let tag = bucket.tag.load(Ordering::Acquire);
            if tag != EMPTY && tag > index {
                return;
            }
            if tag != index {
                bucket.first.store(0, Ordering::Relaxed);
                bucket.second.store(0, Ordering::Relaxed);
                bucket.tag.store(index, Ordering::Release);
            }
        }
        if first != 0 {
            bucket.first.fetch_add(first, Ordering::Relaxed);
        }
        if second != 0 {
            bucket.second.fetch_add(second, Ordering::Relaxed);
        }
    }

    /// The sums over the buckets that lie within the window ending at `now`.
    pub(crate) fn sums(&self, now: Duration) -> Sums {
        let index = nanos(now) / self.bucket_nanos.load(Ordering::Acquire);
        let count = self.buckets.len() as u64;
        let mut sums = Sums::default();
        for bucket in &*self.buckets {
            let tag = bucket.tag.load(Ordering::Acquire);
            if tag <= index && index - tag < count {
                sums.first += bucket.first.load(Ordering::Relaxed);
                sums.second += bucket.second.load(Ordering::Relaxed);
            }
        }
        sums
    }

    /// Forgets every count.
    pub(crate) fn clear(&self) {
        let _rotation = self.rotation.lock();
        self.clear_locked();
    }

    fn clear_locked(&self) {
        for bucket in &*self.buckets {
            bucket.tag.store(EMPTY, Ordering::Release);
            bucket.first.store(0, Ordering::Relaxed);
            bucket.second.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_of_the_window() {
        let window = Window::new(Duration::from_secs(60), 6);
        window.add(Duration::from_secs(1), 1, 1);
        window.add(Duration::from_secs(15), 1, 0);
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
        window.add(Duration::from_secs(75), 1, 1);
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
        window.add(Duration::from_secs(10), 3, 3);
        window.set_length(Duration::from_secs(8));
        assert_eq!(window.sums(Duration::from_secs(10)), Sums::default());
        assert_eq!(window.bucket_count(), 4);
        // Buckets are now 2 s wide: a count at 10 s has left the window by 18 s.
        window.add(Duration::from_secs(10), 1, 0);
        window.add(Duration::from_secs(16), 1, 1);
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
    fn a_stale_caller_does_not_pollute_a_newer_bucket() {
        let window = Window::new(Duration::from_secs(60), 4);
        window.add(Duration::from_secs(65), 1, 0);
        window.add(Duration::from_secs(5), 1, 1);
        assert_eq!(
            window.sums(Duration::from_secs(65)),
            Sums {
                first: 1,
                second: 0
            }
        );
    }
}
