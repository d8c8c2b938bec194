//! The store's configuration: plain structs with documented defaults and a `validate()`.

use std::path::PathBuf;
use std::time::Duration;

use mainstay_resilience::{BreakerConfig, RetryBudgetConfig};
use serde::{Deserialize, Serialize};

/// How a collection's data is tiered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TieringPolicy {
    /// WAL, memtable and local segment files; no object store.
    Memory,
    /// Every record served from memory; segments uploaded to the object store in the background.
    MemoryS3,
    /// The object store is the source of truth once a segment is uploaded; memory holds a bounded
    /// LRU cache of blocks and a miss reads the segment's block.
    S3Only,
}

impl TieringPolicy {
    /// The snake_case name used in configuration and manifests.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::MemoryS3 => "memory_s3",
            Self::S3Only => "s3_only",
        }
    }

    /// Whether the policy uploads segments to the object store.
    #[must_use]
    pub fn uses_object_store(self) -> bool {
        !matches!(self, Self::Memory)
    }
}

/// How segment blocks are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Compression {
    /// As is.
    #[default]
    None,
    /// gzip (fast level): smaller objects and uploads for compressible values, more CPU.
    Gzip,
    /// zstd (level 3): usually smaller than gzip and cheaper to compress and decompress.
    Zstd,
}

impl Compression {
    /// The cargo feature that brings the codec when this build leaves it out (`None` when the
    /// codec is built in).
    pub(crate) fn missing_feature(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => (!cfg!(feature = "gzip")).then_some("gzip"),
            Self::Zstd => (!cfg!(feature = "zstd")).then_some("zstd"),
        }
    }
}

impl StoreConfig {
    /// Checks that this build has the cargo features the configuration needs: `aws` for an
    /// `s3://` `object_store_url`, `gzip` or `zstd` for `compression`.
    pub(crate) fn check_features(&self) -> Result<(), crate::MissingFeature> {
        if let Some(feature) = self.compression.missing_feature() {
            return Err(crate::MissingFeature {
                feature,
                needed_for: format!("compression = \"{feature}\""),
            });
        }
        // `keys_url` is opened by the keyring, whose `KeyringOpenError::Url` names the feature.
        if let Some(url) = &self.object_store_url
            && url.starts_with("s3://")
            && !cfg!(feature = "aws")
        {
            return Err(crate::MissingFeature {
                feature: "aws",
                needed_for: format!("object_store_url {url:?}"),
            });
        }
        Ok(())
    }
}

/// What opening the store does when a WAL file is damaged in the middle: a bad frame followed by
/// valid frames (a damaged tail with nothing valid after it is a write torn by a crash and is
/// always cut off quietly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WalRecoveryMode {
    /// Refuse to open ([`WalError::Corrupt`](crate::WalError::Corrupt) names the file, the
    /// offset and how many valid frames follow): acknowledged records sit behind the damage.
    #[default]
    Refuse,
    /// Keep a copy of the damaged file under `data_dir/corrupt/`, recover every valid frame
    /// before and after the damage, and report what was skipped
    /// ([`WalRecovery::damage`](crate::WalRecovery::damage)) until an operator acknowledges it.
    SkipCorrupt,
}

/// A configuration value outside what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid value {value} for `{key}`: {allowed}")]
pub struct ConfigError {
    /// The configuration key.
    pub key: String,
    /// The rejected value, formatted.
    pub value: String,
    /// What the key accepts.
    pub allowed: String,
}

impl ConfigError {
    pub(crate) fn new(key: &str, value: impl std::fmt::Debug, allowed: &str) -> Self {
        Self {
            key: key.to_owned(),
            value: format!("{value:?}"),
            allowed: allowed.to_owned(),
        }
    }
}

/// Configuration of a [`Store`](crate::Store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Whether the embedding application runs a store at all. The store itself never reads it:
    /// an application that sees `false` does not open one (`mainstay-api`'s stateless mode).
    /// Default `true`.
    pub enabled: bool,
    /// The data directory (WAL, local segments, DLQ, lock file). Default `./data`.
    pub data_dir: PathBuf,
    /// `file:///path`, `memory://` or `s3://bucket/prefix` (endpoint, region and credentials from
    /// the standard `AWS_*` variables). Default none: only the `memory` policy is available,
    /// unless the builder is given a store.
    pub object_store_url: Option<String>,
    /// A WAL segment file is rotated once it holds this many bytes. Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// What opening does with a WAL file damaged in the middle. Default `refuse`.
    pub wal_recovery: WalRecoveryMode,
    /// A collection's memtable is frozen into a segment past this many bytes. Default 4 MiB.
    pub memtable_bytes: u64,
    /// A memtable older than this (since its first record) is frozen into a segment, so that a
    /// quiet collection neither pins the WAL nor keeps its data from the object store. Default
    /// 60 s.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Past this many bytes of WAL files on disk, the memtables holding the oldest records are
    /// frozen so that their WAL files can go. Segments still waiting for upload keep their WAL
    /// files whatever this says. Default 1 GiB.
    pub max_wal_bytes: u64,
    /// Target size of a segment block (before compression). Default 64 KiB.
    pub block_bytes: usize,
    /// Compression of segment blocks written from now on (existing segments keep theirs).
    /// Default `none`.
    pub compression: Compression,
    /// Bytes of object-store blocks cached in memory for `s3_only` collections. Default 64 MiB.
    pub cache_bytes: u64,
    /// Input bounds.
    pub limits: Limits,
    /// The background upload worker.
    pub upload: UploadConfig,
    /// Compaction.
    pub compaction: CompactionConfig,
    /// Whether the embedding application seals values with the [`keyring`](crate::keyring)
    /// (per-organisation data keys wrapped by `master_key`). The store itself never reads it: it
    /// stores what it is given. Default `false`.
    pub encryption: bool,
    /// The key that wraps the data keys; required with `encryption`. Never shown.
    pub master_key: Option<crate::keyring::MasterKey>,
    /// Where the wrapped data keys and the erasure ledger live (`file://`, `memory://` or
    /// `s3://`); keep it out of backups. Default none: `<object_store_url>/_keys`.
    pub keys_url: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            data_dir: PathBuf::from("./data"),
            object_store_url: None,
            wal_segment_bytes: 64 * 1024 * 1024,
            wal_recovery: WalRecoveryMode::Refuse,
            memtable_bytes: 4 * 1024 * 1024,
            flush_interval: Duration::from_secs(60),
            max_wal_bytes: 1024 * 1024 * 1024,
            block_bytes: 64 * 1024,
            compression: Compression::None,
            cache_bytes: 64 * 1024 * 1024,
            limits: Limits::default(),
            upload: UploadConfig::default(),
            compaction: CompactionConfig::default(),
            encryption: false,
            master_key: None,
            keys_url: None,
        }
    }
}

/// Bounds on what callers may send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest value. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Most records in one batch. Default 1,000.
    pub max_batch_records: usize,
    /// Most value bytes in one batch. Default 8 MiB.
    pub max_batch_bytes: usize,
    /// Page size when none is asked for. Default 100.
    pub default_page_size: usize,
    /// Largest page size. Default 1,000.
    pub max_page_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_value_bytes: 1024 * 1024,
            max_batch_records: 1_000,
            max_batch_bytes: 8 * 1024 * 1024,
            default_page_size: 100,
            max_page_size: 1_000,
        }
    }
}

/// The upload worker's rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// Most segments in one upload batch. Default 10.
    pub batch_segments: usize,
    /// Most bytes in one upload batch. Default 8 MiB.
    pub batch_bytes: u64,
    /// Uploads in flight at once. Default 5.
    pub parallelism: usize,
    /// Attempts per segment (breaker rejections do not count) before it is dead-lettered.
    /// Default 5.
    pub max_attempts: u32,
    /// Backoff before a segment's second attempt; doubles per attempt. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// The cap on one backoff. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// How often the worker looks again while the breaker rejects. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub breaker_poll_interval: Duration,
    /// One object-store call is abandoned after this long (counts as transient). Default 30 s.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    /// The retry budget shared by every upload retry.
    pub retry_budget: RetryBudgetConfig,
    /// The upload circuit breaker. Default [`BreakerConfig::object_store_uploads`].
    pub breaker: BreakerConfig,
    /// Writes to object-store collections are refused past this many bytes not yet uploaded.
    /// Default 256 MiB.
    pub max_backlog_bytes: u64,
    /// The `Retry-After` hint of a refused write. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub backpressure_retry_after: Duration,
    /// Capacity of the DLQ queue of failed segments (overflow `reject`, no TTL). Default 10,000.
    pub dlq_capacity: usize,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            batch_segments: 10,
            batch_bytes: 8 * 1024 * 1024,
            parallelism: 5,
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            breaker_poll_interval: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(30),
            retry_budget: RetryBudgetConfig::default(),
            breaker: BreakerConfig::object_store_uploads(),
            max_backlog_bytes: 256 * 1024 * 1024,
            backpressure_retry_after: Duration::from_secs(5),
            dlq_capacity: 10_000,
        }
    }
}

impl UploadConfig {
    /// The backoff before attempt `attempt + 1`, after `attempt` failed ones.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Size-tiered compaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// Whether the background task compacts (on-demand compaction works either way). Default true.
    pub enabled: bool,
    /// Segments of one size tier that trigger a merge. Default 4.
    pub min_segments: usize,
    /// How often the background task looks. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long replaced objects stay in the object store (for readers of an older manifest), and
    /// how old an object no manifest references must be before orphan collection deletes it (so
    /// that an upload in flight is never touched). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub grace_period: Duration,
    /// Whether the store deletes objects under its prefix that the newest manifest does not
    /// reference once they are older than `grace_period`: after open, every `interval` and after
    /// an on-demand compaction (of that collection). [`Store::collect_orphans`] runs either way.
    /// Default true.
    ///
    /// [`Store::collect_orphans`]: crate::Store::collect_orphans
    pub collect_orphans: bool,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_segments: 4,
            interval: Duration::from_secs(60),
            grace_period: Duration::from_secs(300),
            collect_orphans: true,
        }
    }
}

impl StoreConfig {
    /// Checks every value; the error names the first invalid key.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key, the value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.encryption && self.master_key.is_none() {
            return Err(ConfigError::new(
                "master_key",
                "(none)",
                "a 32-byte key as 64 hex digits or base64 is required when `encryption` is on; make one with `openssl rand -hex 32`",
            ));
        }
        if let Some(url) = &self.keys_url
            && !["file://", "memory://", "s3://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err(ConfigError::new(
                "keys_url",
                url,
                "a `file://`, `memory://` or `s3://` URL",
            ));
        }
        if self.wal_segment_bytes < 4096 {
            return Err(ConfigError::new(
                "wal_segment_bytes",
                self.wal_segment_bytes,
                "at least 4096",
            ));
        }
        if self.memtable_bytes < 1024 {
            return Err(ConfigError::new(
                "memtable_bytes",
                self.memtable_bytes,
                "at least 1024",
            ));
        }
        if self.flush_interval < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "flush_interval",
                self.flush_interval,
                "at least 10ms",
            ));
        }
        if self.max_wal_bytes < self.wal_segment_bytes.saturating_mul(2) {
            return Err(ConfigError::new(
                "max_wal_bytes",
                self.max_wal_bytes,
                "at least twice wal_segment_bytes",
            ));
        }
        if !(512..=16 * 1024 * 1024).contains(&self.block_bytes) {
            return Err(ConfigError::new(
                "block_bytes",
                self.block_bytes,
                "512 to 16 MiB",
            ));
        }
        let limits = &self.limits;
        if limits.max_value_bytes == 0 || limits.max_value_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::new(
                "limits.max_value_bytes",
                limits.max_value_bytes,
                "1 to 64 MiB",
            ));
        }
        if limits.max_batch_records == 0 {
            return Err(ConfigError::new(
                "limits.max_batch_records",
                0,
                "at least 1",
            ));
        }
        if limits.max_batch_bytes == 0 {
            return Err(ConfigError::new("limits.max_batch_bytes", 0, "at least 1"));
        }
        if limits.max_page_size == 0
            || limits.default_page_size == 0
            || limits.default_page_size > limits.max_page_size
        {
            return Err(ConfigError::new(
                "limits.default_page_size",
                limits.default_page_size,
                "1 to limits.max_page_size",
            ));
        }
        let upload = &self.upload;
        if upload.batch_segments == 0 {
            return Err(ConfigError::new("upload.batch_segments", 0, "at least 1"));
        }
        if upload.parallelism == 0 || upload.parallelism > 256 {
            return Err(ConfigError::new(
                "upload.parallelism",
                upload.parallelism,
                "1 to 256",
            ));
        }
        if upload.max_attempts == 0 {
            return Err(ConfigError::new("upload.max_attempts", 0, "at least 1"));
        }
        if upload.max_delay < upload.base_delay {
            return Err(ConfigError::new(
                "upload.max_delay",
                upload.max_delay,
                "at least upload.base_delay",
            ));
        }
        if upload.breaker_poll_interval.is_zero() || upload.attempt_timeout.is_zero() {
            return Err(ConfigError::new(
                "upload.breaker_poll_interval",
                upload.breaker_poll_interval,
                "a positive duration (and so must upload.attempt_timeout be)",
            ));
        }
        if upload.max_backlog_bytes <= self.memtable_bytes {
            return Err(ConfigError::new(
                "upload.max_backlog_bytes",
                upload.max_backlog_bytes,
                "more than memtable_bytes (a memtable is part of the backlog)",
            ));
        }
        if upload.dlq_capacity == 0 {
            return Err(ConfigError::new("upload.dlq_capacity", 0, "at least 1"));
        }
        upload.retry_budget.validate().map_err(|error| {
            ConfigError::new(
                &format!("upload.retry_budget.{}", error.key),
                error.value,
                error.allowed,
            )
        })?;
        upload.breaker.validate().map_err(|error| {
            ConfigError::new(
                &format!("upload.breaker.{}", error.key),
                error.value,
                error.allowed,
            )
        })?;
        if self.compaction.min_segments < 2 {
            return Err(ConfigError::new(
                "compaction.min_segments",
                self.compaction.min_segments,
                "at least 2",
            ));
        }
        if self.compaction.interval.is_zero() {
            return Err(ConfigError::new(
                "compaction.interval",
                self.compaction.interval,
                "a positive duration",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let config = StoreConfig::default();
        config.validate().expect("defaults are valid");
        assert_eq!(config.upload.batch_segments, 10);
        assert_eq!(config.upload.batch_bytes, 8 * 1024 * 1024);
        assert_eq!(config.upload.parallelism, 5);
        assert_eq!(config.upload.breaker, BreakerConfig::object_store_uploads());
    }

    #[test]
    fn compression_names_are_the_configuration_values() {
        for (name, codec) in [
            ("none", Compression::None),
            ("gzip", Compression::Gzip),
            ("zstd", Compression::Zstd),
        ] {
            let quoted = format!("{name:?}");
            assert_eq!(
                serde_json::from_str::<Compression>(&quoted).ok(),
                Some(codec)
            );
            assert_eq!(serde_json::to_string(&codec).ok(), Some(quoted));
        }
    }

    #[test]
    fn invalid_values_name_their_key() {
        let mut config = StoreConfig::default();
        config.upload.parallelism = 0;
        assert_eq!(
            config.validate().map_err(|e| e.key),
            Err("upload.parallelism".to_owned())
        );
        let mut config = StoreConfig::default();
        config.upload.breaker.failure_rate = 2.0;
        let key = config
            .validate()
            .map_err(|e| e.key)
            .err()
            .unwrap_or_default();
        assert!(key.starts_with("upload.breaker."), "{key}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let upload = UploadConfig::default();
        assert_eq!(upload.backoff(1), Duration::from_secs(1));
        assert_eq!(upload.backoff(3), Duration::from_secs(4));
        assert_eq!(upload.backoff(40), Duration::from_secs(60));
    }
}
