#![doc = include_str!("../README.md")]

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
    Entry, EntryId, EntryView, FailureClass, InlinePayload, InvalidEntryId, MAX_KEY_BYTES,
    MAX_MESSAGE_BYTES, MAX_PATH_BYTES, NewEntry, Payload, PayloadView, PinnedFile, SCHEMA_VERSION,
};
pub use error::{
    ArchiveError, ExportError, ImportError, ListError, OpenError, PushError, RedriveError,
    WriteError,
};
pub use files::DlqRecovery;
pub use metrics::DlqMetrics;
pub use query::{
    DEFAULT_PAGE_SIZE, Filter, HandlerError, ImportReport, MAX_PAGE_SIZE, Page, QueueStats,
    RedriveHandler, RedriveReport,
};
pub use tokio_util::sync::CancellationToken;

// Third-party crates in the public API, re-exported so that a caller names their items at the
// version this crate uses without a dependency of its own (README, "Third-party types in the
// public API").
pub use bytes;
pub use prometheus_client;
pub use serde;
