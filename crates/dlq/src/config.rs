//! Configuration: the queue-wide [`DlqConfig`] and the per-queue [`QueueConfig`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest inline payload any configuration may allow (64 MiB).
pub const MAX_PAYLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// What a full queue does with a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// The oldest entry is evicted (and archived unless the archive is off).
    #[default]
    Evict,
    /// The push fails with a typed error, so the owner keeps its data.
    Reject,
}

/// How pushes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SyncMode {
    /// Concurrent pushes share one `fdatasync` (leader/follower group commit; the leader lets a
    /// batch fill for at most half a sync).
    #[default]
    Grouped,
    /// Every push gets its own `fdatasync`; for comparison in benchmarks.
    PerPush,
}

/// What opening does when the journal holds a damaged frame followed by valid frames
/// (corruption of acknowledged data; a torn tail, with nothing valid after it, is always
/// truncated quietly). Decision 0081.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JournalRecovery {
    /// Keep a copy of the damaged segment in `log/corrupt/`, recover every valid record before
    /// and after the damage, report the loss and log it at error level. The default: a lost push
    /// is a dead letter its owner can fail again, and a lost removal redelivers an entry, which
    /// handlers tolerate.
    #[default]
    SkipCorrupt,
    /// Refuse to open with [`OpenError::CorruptJournal`](crate::OpenError::CorruptJournal),
    /// naming the file, the offset and the valid frames after the damage; nothing on disk
    /// changes.
    Refuse,
}

/// Bounds and lifetime of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Most entries the queue holds. Default 1,000.
    pub capacity: usize,
    /// What happens when the queue (or the whole DLQ) is full. Default `evict`.
    pub overflow: OverflowPolicy,
    /// How long an entry lives before cleanup archives it; `None` keeps it until it is removed.
    /// Default 7 days. Written as a humantime string (`"7days"`), or `"none"` (also `null`) for no
    /// expiry, so that formats without a null, such as TOML, can say it.
    #[serde(with = "ttl_serde")]
    pub ttl: Option<Duration>,
    /// Whether evicted and expired entries are appended to the archive file. Default `true`.
    pub archive: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 1_000,
            overflow: OverflowPolicy::Evict,
            ttl: Some(Duration::from_secs(7 * 24 * 3600)),
            archive: true,
        }
    }
}

impl QueueConfig {
    /// A queue for acknowledged user data: `reject` on overflow, no TTL, never evicted.
    #[must_use]
    pub fn retain_all(capacity: usize) -> Self {
        Self {
            capacity,
            overflow: OverflowPolicy::Reject,
            ttl: None,
            archive: true,
        }
    }

    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::new(
                format!("{prefix}.capacity"),
                "0",
                "an integer of at least 1",
            ));
        }
        if let Some(ttl) = self.ttl
            && ttl < Duration::from_secs(1)
        {
            return Err(ConfigError::new(
                format!("{prefix}.ttl"),
                humantime::format_duration(ttl).to_string(),
                "a duration of at least 1s, or none",
            ));
        }
        Ok(())
    }
}

/// Configuration of a [`Dlq`](crate::Dlq).
///
/// Defaults: `max_payload_bytes` 1 MiB, `total_capacity` 100,000 entries, `max_total_payload_bytes`
/// 256 MiB, `defaults` = [`QueueConfig::default`], no per-queue overrides, grouped sync,
/// compaction after 64 MiB of journal, `skip_corrupt` journal recovery, hourly cleanup, redrive at 50 entries/s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlqConfig {
    /// Largest inline payload; a larger one is refused with a typed error. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Most entries across all queues. Default 100,000.
    pub total_capacity: usize,
    /// Most inline payload bytes across all queues (entries are held in memory). Default 256 MiB.
    pub max_total_payload_bytes: u64,
    /// Settings of every queue without its own entry in `queues`.
    pub defaults: QueueConfig,
    /// Per-queue settings, by queue name.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Grouped (default) or per-push fsync.
    pub sync_mode: SyncMode,
    /// Journal size past which it is compacted into a snapshot. Default 64 MiB.
    pub compact_after_bytes: u64,
    /// What opening does with a damaged journal: `skip_corrupt` (default) or `refuse`.
    pub journal_recovery: JournalRecovery,
    /// Period of the expiry cleanup started by [`Dlq::spawn_cleanup`](crate::Dlq::spawn_cleanup).
    /// Default 1 hour.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// Most entries redriven per second; 0 means unlimited. Default 50.
    pub redrive_rate_per_second: u32,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            total_capacity: 100_000,
            max_total_payload_bytes: 256 * 1024 * 1024,
            defaults: QueueConfig::default(),
            queues: BTreeMap::new(),
            sync_mode: SyncMode::Grouped,
            compact_after_bytes: 64 * 1024 * 1024,
            journal_recovery: JournalRecovery::SkipCorrupt,
            cleanup_interval: Duration::from_secs(3600),
            redrive_rate_per_second: 50,
        }
    }
}

impl DlqConfig {
    /// Checks every value; the error names the key, the value and what is allowed.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for the first invalid key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_payload_bytes == 0 || self.max_payload_bytes > MAX_PAYLOAD_LIMIT {
            return Err(ConfigError::new(
                "max_payload_bytes",
                self.max_payload_bytes.to_string(),
                "an integer from 1 to 67108864 (64 MiB)",
            ));
        }
        if self.total_capacity == 0 {
            return Err(ConfigError::new(
                "total_capacity",
                "0",
                "an integer of at least 1",
            ));
        }
        if self.max_total_payload_bytes < self.max_payload_bytes as u64 {
            return Err(ConfigError::new(
                "max_total_payload_bytes",
                self.max_total_payload_bytes.to_string(),
                "at least max_payload_bytes",
            ));
        }
        if self.compact_after_bytes < 4096 {
            return Err(ConfigError::new(
                "compact_after_bytes",
                self.compact_after_bytes.to_string(),
                "an integer of at least 4096",
            ));
        }
        if self.cleanup_interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "cleanup_interval",
                humantime::format_duration(self.cleanup_interval).to_string(),
                "a duration of at least 1s",
            ));
        }
        self.defaults.validate("defaults")?;
        for (name, queue) in &self.queues {
            if !valid_queue_name(name) {
                return Err(ConfigError::new(
                    "queues",
                    name.clone(),
                    "queue names matching [a-z0-9][a-z0-9_-]{0,63}",
                ));
            }
            queue.validate(&format!("queues.{name}"))?;
        }
        Ok(())
    }
}

/// Whether `name` matches `[a-z0-9][a-z0-9_-]{0,63}`.
#[must_use]
pub fn valid_queue_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            rest.len() <= 63
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-'
                })
        }
        None => false,
    }
}

/// An invalid configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid dlq config: {key} = {value:?}, expected {allowed}")]
pub struct ConfigError {
    /// The configuration key, dotted (`queues.orders.capacity`).
    pub key: String,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub allowed: &'static str,
}

impl ConfigError {
    fn new(key: impl Into<String>, value: impl Into<String>, allowed: &'static str) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            allowed,
        }
    }
}

/// A TTL as a humantime string, with `"none"` (or `null`) for no expiry.
mod ttl_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        ttl: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match ttl {
            Some(ttl) => serializer.serialize_str(&humantime::format_duration(*ttl).to_string()),
            None => serializer.serialize_str("none"),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(text)
                if text.eq_ignore_ascii_case("none") || text.eq_ignore_ascii_case("never") =>
            {
                Ok(None)
            }
            Some(text) => humantime::parse_duration(&text).map(Some).map_err(|error| {
                serde::de::Error::custom(format!(
                    "ttl {text:?}: {error}; use a duration like \"7days\" or \"none\""
                ))
            }),
        }
    }
}
