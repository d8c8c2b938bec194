//! A CRC-framed, segmented append log with group commit, atomic file replace and a directory
//! lock: the durable core under mainstay's write-ahead log and dead-letter queue, proven against
//! simulated power loss.
//!
//! ```
//! use mainstay_journal::{Journal, JournalConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let (journal, replay) = Journal::open(dir.path(), JournalConfig::default())?;
//! for entry in &replay.entries {
//!     println!("{}: {:?}", entry.lsn, entry.payload); // what earlier runs appended
//! }
//! let lsn = journal.write(b"order 42 shipped").await?; // durable once it returns
//! assert_eq!(journal.durable_lsn(), lsn);
//! # Ok(())
//! # }
//! ```
//!
//! # What it guarantees
//!
//! - **Acknowledged means durable.** [`Journal::write`] (or [`Journal::commit`]) returns once the
//!   entry's segment was `fdatasync`'d. Concurrent writers share one sync (leader/follower group
//!   commit), which never runs on an async runtime's worker threads; a writer waits for its own
//!   LSN only.
//! - **A failed fsync poisons the log.** It is never retried and never reported as a success:
//!   every waiting writer gets [`WriteError::Failed`], every later append too, and the LSNs that
//!   failed are recorded durably so that replay leaves them out even if their bytes reached the
//!   disk.
//! - **Torn tail versus corruption, one rule.** On open, a damaged frame with no valid frame
//!   after it is a torn tail (an interrupted write): truncated quietly and reported. A damaged
//!   frame followed by valid frames is corruption of acknowledged data: refused with
//!   [`OpenError::Corrupt`] (file, offset, valid frames after) or, with
//!   [`RecoveryMode::SkipCorrupt`], recovered around, the damaged segment kept in `corrupt/`.
//! - **Files are replaced atomically** ([`write_atomic`]: temp + fsync + rename + fsync(dir)), and
//!   a directory is synced after every entry created in it.
//! - **One process per directory** ([`DirLock`]): an OS advisory lock that dies with the process.
//!
//! Every file operation goes through the [`fs::FileSystem`] trait. [`fs::SimFs`] implements it
//! in memory, keeps what was written apart from what is durable and can cut the power, crash the
//! process, fail or skip a sync at a named [`fs::SyncSite`]; the crate's tests use it to show that
//! no acknowledged entry is lost at thousands of random power cuts, and that removing any single
//! sync makes them fail.
//!
//! # Features
//!
//! None.
//!
//! # Metrics
//!
//! None registered; [`Journal::stats`] returns the counts a caller exports, and
//! [`Journal::failure`] is meant for a readiness check.
//!
//! # MSRV
//!
//! Rust 1.95.

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
pub use replay::{CORRUPT_DIR, Corruption, Entry, Replay, ReplayOutcome, ReplayReport, TornTail};
