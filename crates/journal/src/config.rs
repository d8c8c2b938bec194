//! [`JournalConfig`] and [`RecoveryMode`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The smallest segment size a configuration may set.
pub const MIN_SEGMENT_BYTES: u64 = 1024;
/// The longest group refill wait a configuration may set (the design allows at most 500 µs).
pub const MAX_GROUP_WAIT: Duration = Duration::from_micros(500);
const MAX_PREALLOCATE_BYTES: u64 = 64 * 1024 * 1024;

/// What opening does when a damaged frame is followed by valid frames (corruption of
/// acknowledged data, as opposed to a torn tail, which is always truncated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Refuse to open, with an error naming the file, the offset and how many valid frames
    /// follow the damage, so that an operator decides.
    #[default]
    Refuse,
    /// Copy each damaged segment to `corrupt/`, rewrite it with every valid frame it still
    /// holds, and report what was lost.
    SkipCorrupt,
}

/// Configuration of a [`Journal`](crate::Journal).
///
/// Defaults: 64 MiB segments, zero-filled 1 MiB ahead, recovery `refuse`, a group refill wait of
/// at most 500 µs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// A segment is closed and a new one started once its frames reach this size. Default 64 MiB;
    /// at least 1 KiB.
    pub segment_bytes: u64,
    /// The active segment is filled with zeros this far ahead of its frames, so that most group
    /// syncs write data blocks only, not the file's size (decision 0064); 0 appends instead.
    /// Default 1 MiB; at most 64 MiB.
    pub preallocate_bytes: u64,
    /// What opening does with corruption. Default `refuse`.
    pub recovery: RecoveryMode,
    /// How long the group commit's leader may wait for the next group to fill before its next
    /// sync (at most half the last sync's duration). Default and maximum 500 µs; 0 never waits.
    #[serde(with = "humantime_serde")]
    pub max_group_wait: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            preallocate_bytes: 1024 * 1024,
            recovery: RecoveryMode::Refuse,
            max_group_wait: MAX_GROUP_WAIT,
        }
    }
}

impl JournalConfig {
    /// Checks every value.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for the first value out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(ConfigError {
                key: "segment_bytes",
                value: self.segment_bytes.to_string(),
                allowed: "an integer of at least 1024",
            });
        }
        if self.preallocate_bytes > MAX_PREALLOCATE_BYTES {
            return Err(ConfigError {
                key: "preallocate_bytes",
                value: self.preallocate_bytes.to_string(),
                allowed: "an integer from 0 to 67108864 (64 MiB)",
            });
        }
        if self.max_group_wait > MAX_GROUP_WAIT {
            return Err(ConfigError {
                key: "max_group_wait",
                value: format!("{:?}", self.max_group_wait),
                allowed: "a duration of at most 500us",
            });
        }
        Ok(())
    }
}

/// An invalid configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid journal config: {key} = {value}, expected {allowed}")]
pub struct ConfigError {
    /// The configuration key.
    pub key: &'static str,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub allowed: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_limits_are_enforced() {
        assert_eq!(JournalConfig::default().validate(), Ok(()));
        let small = JournalConfig {
            segment_bytes: 100,
            ..JournalConfig::default()
        };
        assert_eq!(small.validate().unwrap_err().key, "segment_bytes");
        let slow = JournalConfig {
            max_group_wait: Duration::from_millis(2),
            ..JournalConfig::default()
        };
        assert_eq!(slow.validate().unwrap_err().key, "max_group_wait");
        let ahead = JournalConfig {
            preallocate_bytes: 1 << 40,
            ..JournalConfig::default()
        };
        assert_eq!(ahead.validate().unwrap_err().key, "preallocate_bytes");
    }
}
