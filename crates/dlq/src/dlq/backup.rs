//! Backups of a DLQ: a consistent snapshot of its entries and copies of their pinned payload
//! files, written into a directory ([`Dlq::write_backup`]), and a DLQ directory rebuilt from one
//! ([`restore_backup`]).
//!
//! ```text
//! <dir>/snapshot            the entries, in the snapshot format (covering no journal entry)
//! <dir>/payloads/<entry id> a copy of each pinned payload file; the entry refers to it by the
//!                           relative path `payloads/<entry id>`
//! ```
//!
//! A DLQ opened on a directory that holds only such a snapshot starts with exactly its entries:
//! [`restore_backup`] rewrites the relative payload paths to the restored copies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mainstay_journal::fs::RealFs;

use super::Dlq;
use crate::codec::Record;
use crate::entry::{Entry, EntryId, Payload, PinnedFile};
use crate::files::{SNAPSHOT_FILE, decode_snapshot, encode_snapshot};

/// The directory of payload copies inside a DLQ backup.
pub const BACKUP_PAYLOADS_DIR: &str = "payloads";
/// The snapshot file inside a DLQ backup.
pub const BACKUP_SNAPSHOT_FILE: &str = SNAPSHOT_FILE;

/// What [`Dlq::write_backup`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DlqBackup {
    /// Entries in the snapshot.
    pub entries: usize,
    /// The files written, relative to the backup directory (the snapshot first).
    pub files: Vec<PathBuf>,
}

/// Why a DLQ backup or its restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// A file could not be read or written.
    #[error("dlq backup i/o failed on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The DLQ is closed.
    #[error("the dlq is closed: open it to back it up")]
    Closed,
    /// A backup's snapshot or payload file is damaged.
    #[error("dlq backup file {path} is damaged ({reason}): use another backup")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Dlq {
    /// Writes a consistent snapshot of the entries (every queue but those in `skip_queues`) and
    /// copies of their pinned payload files into `dir` (created; it should be empty), and fsyncs
    /// them. The entries are taken at one instant under the state's lock; writes continue while
    /// the files are copied. An entry whose pinned file disappears during the copy (it was
    /// redriven or deleted meanwhile) is left out when it has left the queue too. Blocking: call
    /// it from a blocking thread.
    ///
    /// # Errors
    ///
    /// [`BackupError::Io`] naming the file that could not be read or written,
    /// [`BackupError::Closed`] when the DLQ is closed.
    pub fn write_backup(&self, dir: &Path, skip_queues: &[&str]) -> Result<DlqBackup, BackupError> {
        let entries: Vec<Arc<Entry>> = {
            let state = self.shared.state.lock();
            if state.closed {
                return Err(BackupError::Closed);
            }
            state
                .entries
                .values()
                .filter(|e| !skip_queues.contains(&e.queue.as_str()))
                .cloned()
                .collect()
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let payloads = dir.join(BACKUP_PAYLOADS_DIR);
        let mut kept = Vec::with_capacity(entries.len());
        let mut files = vec![PathBuf::from(BACKUP_SNAPSHOT_FILE)];
        for entry in entries {
            let Payload::File(pinned) = &entry.payload else {
                kept.push(entry);
                continue;
            };
            let relative = PathBuf::from(BACKUP_PAYLOADS_DIR).join(entry.id.to_string());
            std::fs::create_dir_all(&payloads).map_err(io(&payloads))?;
            let copy = dir.join(&relative);
            match std::fs::copy(&pinned.path, &copy) {
                Ok(_) => {}
                Err(error)
                    if error.kind() == std::io::ErrorKind::NotFound && !self.contains(entry.id) =>
                {
                    continue;
                }
                Err(error) => return Err(io(&pinned.path)(error)),
            }
            std::fs::File::open(&copy)
                .and_then(|f| f.sync_all())
                .map_err(io(&copy))?;
            let mut copied = (*entry).clone();
            copied.payload = Payload::File(PinnedFile {
                path: relative.clone(),
                ..pinned.clone()
            });
            files.push(relative);
            kept.push(Arc::new(copied));
        }
        let bytes = encode_snapshot(&kept, 0);
        let snapshot = dir.join(BACKUP_SNAPSHOT_FILE);
        mainstay_journal::write_atomic(&RealFs, &snapshot, &bytes).map_err(|error| {
            BackupError::Io {
                path: snapshot.clone(),
                source: std::io::Error::other(error.to_string()),
            }
        })?;
        for synced in [&payloads, dir] {
            if synced.exists() {
                std::fs::File::open(synced)
                    .and_then(|f| f.sync_all())
                    .map_err(io(synced))?;
            }
        }
        Ok(DlqBackup {
            entries: kept.len(),
            files,
        })
    }
}

/// Rebuilds a DLQ directory `to` (created; it must hold no DLQ) from the backup in `from`:
/// copies the payload files under `to/payloads/` and writes a snapshot whose pinned entries
/// refer to those copies, checking each copy's size and CRC-32C. Opening a [`Dlq`] on `to` then
/// serves exactly the backup's entries. Returns how many entries it holds. Blocking.
///
/// # Errors
///
/// [`BackupError::Damaged`] when the snapshot or a payload file does not check out,
/// [`BackupError::Io`] when a file could not be read or written.
pub fn restore_backup(from: &Path, to: &Path) -> Result<usize, BackupError> {
    let entries = read_backup(from)?;
    std::fs::create_dir_all(to).map_err(io(to))?;
    let mut restored = Vec::with_capacity(entries.len());
    for mut entry in entries.into_values() {
        if let Payload::File(pinned) = &entry.payload {
            let source = from.join(&pinned.path);
            let target = to.join(&pinned.path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::copy(&source, &target).map_err(io(&source))?;
            std::fs::File::open(&target)
                .and_then(|f| f.sync_all())
                .map_err(io(&target))?;
            entry.payload = Payload::File(PinnedFile {
                path: target,
                ..pinned.clone()
            });
        }
        restored.push(Arc::new(entry));
    }
    let snapshot = to.join(SNAPSHOT_FILE);
    mainstay_journal::write_atomic(&RealFs, &snapshot, &encode_snapshot(&restored, 0)).map_err(
        |error| BackupError::Io {
            path: snapshot.clone(),
            source: std::io::Error::other(error.to_string()),
        },
    )?;
    Ok(restored.len())
}

/// The entries of the backup in `dir`, their payload files checked (size and CRC-32C).
fn read_backup(dir: &Path) -> Result<BTreeMap<EntryId, Entry>, BackupError> {
    let path = dir.join(BACKUP_SNAPSHOT_FILE);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let damaged = |reason: String| BackupError::Damaged {
        path: path.clone(),
        reason,
    };
    let snapshot = decode_snapshot(&bytes).map_err(|reason| damaged(reason.to_owned()))?;
    if let Some(reason) = snapshot.damage {
        return Err(damaged(reason.to_owned()));
    }
    let mut entries = BTreeMap::new();
    for record in snapshot.records {
        if let Record::Push(entry) = record {
            if let Payload::File(pinned) = &entry.payload {
                if pinned.path.is_absolute()
                    || pinned
                        .path
                        .components()
                        .any(|c| !matches!(c, std::path::Component::Normal(_)))
                {
                    return Err(damaged(format!(
                        "entry {} refers to {} outside the backup",
                        entry.id,
                        pinned.path.display()
                    )));
                }
                let file = dir.join(&pinned.path);
                let data = std::fs::read(&file).map_err(io(&file))?;
                if data.len() as u64 != pinned.size || crc32c::crc32c(&data) != pinned.crc32c {
                    return Err(BackupError::Damaged {
                        path: file,
                        reason: "size or crc32c differs from its entry".to_owned(),
                    });
                }
            }
            entries.insert(entry.id, entry);
        } else {
            return Err(damaged("a record other than an entry".to_owned()));
        }
    }
    Ok(entries)
}
