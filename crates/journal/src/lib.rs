#![doc = include_str!("../README.md")]

mod config;
mod durable;
mod error;
mod frame;
pub mod fs;
mod journal;
mod lock;
mod lsn;
mod poisoned;
mod read;
mod recovery;
mod replay;
mod segment;

pub use config::{ConfigError, JournalConfig, MAX_GROUP_WAIT, MIN_SEGMENT_BYTES, RecoveryMode};
pub use durable::{create_dir_durable, write_atomic};
pub use error::{FileError, LockError, OpenError, ReadError, TrimError, WriteError};
pub use frame::MAX_PAYLOAD;
pub use journal::{Journal, JournalStats};
pub use lock::{DirLock, LOCK_FILE};
pub use lsn::Lsn;
pub use read::read_entries;
pub use recovery::{RecoveryOutcome, RecoverySummary};
pub use replay::{CORRUPT_DIR, Corruption, Entry, Replay, ReplayOutcome, ReplayReport, TornTail};

// Third-party crates in the public API, re-exported so that a caller names their items at the
// version this crate uses without a dependency of its own (README, "Third-party types in the
// public API").
pub use serde;
