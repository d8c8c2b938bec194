//! A durable, bounded dead-letter queue: failed work goes in, survives crashes, expires or is
//! redriven through its owner's handler, and is never lost once its push was acknowledged.
//!
//! Entries live in memory over a `mainstay-journal` log in the directory (one record per entry)
//! and a snapshot that covers it up to an LSN. A push returns once its record is
//! `fdatasync`'d; concurrent pushes share one sync (the journal's leader/follower group commit,
//! off the runtime's workers). On open the snapshot and journal are replayed: a torn tail is
//! truncated, damage followed by valid records is skipped or refused as
//! [`DlqConfig::journal_recovery`] says (decision 0081), a directory of the pre-journal format is
//! migrated, and the directory is held with an OS advisory lock that dies with the process. Each
//! queue has a capacity with an `evict` (archive the oldest) or `reject` overflow policy and an
//! optional TTL.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use mainstay_dlq::{Dlq, DlqConfig, Entry, ErrorClass, Filter, HandlerError, NewEntry, RedriveHandler};
//!
//! struct Resend;
//!
//! #[async_trait]
//! impl RedriveHandler for Resend {
//!     async fn redrive(&self, entry: &Entry) -> Result<(), HandlerError> {
//!         println!("resending {}", entry.key());
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let dlq = Dlq::open(dir.path(), DlqConfig::default()).await?;
//! let id = dlq
//!     .push(NewEntry::inline("emails", "msg-42", &b"hello"[..], ErrorClass::Exhausted, "smtp 451"))
//!     .await?; // durable from here on
//! assert_eq!(dlq.get(id).map(|e| e.attempts()), Some(1));
//!
//! dlq.register_handler("emails", Arc::new(Resend));
//! let report = dlq.redrive(&Filter::queue("emails")).await?;
//! assert_eq!((report.succeeded, report.failed), (1, 0));
//! assert!(dlq.is_empty());
//! dlq.close().await?; // compacts, flushes and releases the directory lock
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! None: the crate always needs tokio (for the blocking pool) and prometheus-client.
//!
//! # Metrics
//!
//! See [`DlqMetrics`]: `dlq_size{queue}`, `dlq_pushed_total{queue,error_class}`,
//! `dlq_evictions_total{queue}`, `dlq_rejected_total{queue}`, `dlq_expired_total{queue}`,
//! `dlq_redriven_total{queue,outcome}`, `dlq_journal_bytes`, `dlq_oldest_entry_age_seconds{queue}`,
//! plus `dlq_journal_fsyncs_total`, `dlq_journal_truncations_total` and
//! `dlq_journal_corrupt_records_total`.
//!
//! # MSRV
//!
//! Rust 1.95.

mod catalogue;
mod codec;
mod config;
mod dlq;
mod entry;
mod error;
mod export;
mod files;
mod legacy;
mod metrics;
mod query;

pub use catalogue::METRICS;
pub use config::{
    ConfigError, DlqConfig, JournalRecovery, MAX_PAYLOAD_LIMIT, OverflowPolicy, QueueConfig,
    SyncMode, valid_queue_name,
};
pub use dlq::{
    ArchiveRewrite, BACKUP_PAYLOADS_DIR, BACKUP_SNAPSHOT_FILE, BackupError, CleanupTask, Dlq,
    DlqBackup, DlqBuilder, UnreadableLine, restore_backup,
};
pub use entry::{
    Entry, EntryId, EntryView, ErrorClass, InlinePayload, InvalidEntryId, MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES, MAX_PATH_BYTES, NewEntry, Payload, PayloadView, PinnedFile, SCHEMA_VERSION,
};
pub use error::{
    ArchiveError, ExportError, ImportError, ListError, OpenError, PushError, RedriveError,
    WriteError,
};
pub use files::RecoveryReport;
pub use metrics::DlqMetrics;
pub use query::{
    DEFAULT_PAGE_SIZE, Filter, HandlerError, ImportReport, MAX_PAGE_SIZE, Page, QueueStats,
    RedriveHandler, RedriveReport,
};
pub use tokio_util::sync::CancellationToken;
