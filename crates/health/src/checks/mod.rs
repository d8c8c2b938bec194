//! Built-in checks: disk space, memory, and a threshold that other components feed.

mod disk;
mod memory;
mod threshold;

pub use disk::{DiskReader, DiskReading, DiskSpaceCheck, StatvfsReader};
pub use memory::{MemoryCheck, MemoryReader, MemoryReading, ProcMemoryReader};
pub use threshold::{ThresholdCheck, ThresholdError, Thresholds};

/// `part` as a percentage of `whole`, or `None` when `whole` is zero.
#[allow(clippy::cast_precision_loss)] // Byte counts lose only sub-byte precision as f64.
fn percent_of(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}

/// `value` rounded to two decimals, for details and messages.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
