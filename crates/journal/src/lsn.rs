//! [`Lsn`]: the position of an entry in the log.

use std::fmt;

/// A log sequence number: entries get consecutive LSNs from 1 as they are appended, and LSNs keep
/// growing across restarts and trims (the first LSN of each segment is in its header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// The LSN before the first entry: nothing is at or below it.
    pub const ZERO: Lsn = Lsn(0);

    /// The LSN with this number.
    #[must_use]
    pub const fn new(lsn: u64) -> Self {
        Self(lsn)
    }

    /// Its number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for Lsn {
    fn from(lsn: u64) -> Self {
        Self(lsn)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}
