//! The atomics and locks of the breaker's lock-free state: from `std` and `parking_lot`, or from
//! `loom` when the crate is compiled with `--cfg loom`, so that the models in `tests/loom.rs`
//! explore the interleavings of the production code rather than of a copy of it.

pub(crate) use std::sync::atomic::Ordering;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};

#[cfg(not(loom))]
pub(crate) use parking_lot::Mutex;

/// loom's mutex with `parking_lot`'s signature: `lock` returns the guard (loom reports a panic
/// while locked as poisoning, which the models treat as a failure anyway).
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
