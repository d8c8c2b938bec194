//! Opening a DLQ: the lock, the migration of a pre-journal directory, the snapshot and journal
//! replay, and the state they rebuild.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use mainstay_journal::{
    JournalConfig, LockError, MIN_SEGMENT_BYTES, RecoveryMode, create_dir_durable, write_atomic,
};
use parking_lot::{Mutex, RwLock};
use ulid::Ulid;

use crate::codec;
use crate::config::JournalRecovery;
use crate::entry::{Entry, EntryId};
use crate::error::OpenError;
use crate::files::{self, CORRUPT_DIR, DlqRecovery, LEGACY_JOURNAL_FILE, LOG_DIR, SNAPSHOT_FILE};
use crate::legacy;
use crate::metrics::{DlqMetrics, OldestAges};

use super::*;

/// How long open waits for the journal lock of this directory, which it holds the DLQ lock of:
/// only a sync thread of a handle of this process that was just dropped can still hold it.
const JOURNAL_LOCK_WAIT: Duration = Duration::from_secs(2);

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

fn file_error(error: mainstay_journal::FileError) -> OpenError {
    OpenError::Io {
        path: error.path,
        source: error.source,
    }
}

/// The contents of `path`, `None` when there is no such file.
fn read_optional(fs: &dyn FileSystem, path: &Path) -> Result<Option<Vec<u8>>, OpenError> {
    match fs.read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(path)(error)),
    }
}

/// Keeps a copy of a damaged file under `corrupt/` of the DLQ directory.
fn preserve(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<std::path::PathBuf, OpenError> {
    let corrupt = dir.join(CORRUPT_DIR);
    create_dir_durable(fs, &corrupt).map_err(file_error)?;
    let path = corrupt.join(name);
    write_atomic(fs, &path, bytes).map_err(file_error)?;
    Ok(path)
}

/// What open rebuilt from disk.
struct Loaded {
    lock: DirLock,
    journal: Journal,
    entries: BTreeMap<EntryId, Entry>,
    journal_bytes: u64,
    report: DlqRecovery,
}

/// Migrates a pre-journal directory, if this is one: loads the old snapshot and journal with the
/// old reader, writes their state as a snapshot of this format (covering no journal entry),
/// then removes the old journal file. A crash in between leaves the new snapshot beside the old
/// journal, which it covers: the next open removes the file.
fn migrate(
    fs: &dyn FileSystem,
    dir: &Path,
    snapshot: Option<Vec<u8>>,
    report: &mut DlqRecovery,
) -> Result<Option<Vec<u8>>, OpenError> {
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let journal_path = dir.join(LEGACY_JOURNAL_FILE);
    let old_journal = read_optional(fs, &journal_path)?;
    let new_snapshot = snapshot.as_deref().is_some_and(files::is_snapshot);
    if new_snapshot {
        if old_journal.is_some() {
            // A migration crashed after writing its snapshot, which covers this file.
            fs.remove_file(&journal_path)
                .map_err(io_error(&journal_path))?;
            fs.sync_dir(dir, mainstay_journal::fs::SyncSite::ReplaceDir)
                .map_err(io_error(dir))?;
            tracing::info!(path = %journal_path.display(), "dlq removed a pre-journal file its migration had already replaced");
        }
        return Ok(snapshot);
    }
    if snapshot.is_none() && old_journal.is_none() {
        return Ok(None);
    }
    let old = legacy::load(snapshot.as_deref(), old_journal.as_deref()).map_err(|reason| {
        OpenError::CorruptSnapshot {
            path: snapshot_path.clone(),
            reason,
        }
    })?;
    if old.corrupt_tail || old.corrupt_records > 0 {
        // The old format's damage: keep the files as found.
        for (name, bytes) in [("snapshot-v1", &snapshot), ("journal-v1", &old_journal)] {
            if let Some(bytes) = bytes {
                report.preserved = Some(preserve(fs, dir, name, bytes)?);
            }
        }
        tracing::error!(dir = %dir.display(), corrupt_records = old.corrupt_records, corrupt_tail = old.corrupt_tail, "dlq pre-journal files were damaged; migrated what was readable and kept a copy in corrupt/");
    }
    let entries: Vec<Arc<Entry>> = old.entries.into_values().map(Arc::new).collect();
    let bytes = files::encode_snapshot(&entries, 0);
    write_atomic(fs, &snapshot_path, &bytes).map_err(file_error)?;
    if old_journal.is_some() {
        fs.remove_file(&journal_path)
            .map_err(io_error(&journal_path))?;
        fs.sync_dir(dir, mainstay_journal::fs::SyncSite::ReplaceDir)
            .map_err(io_error(dir))?;
    }
    report.migrated = true;
    report.corrupt_records += old.corrupt_records;
    report.corrupt_tail = old.corrupt_tail;
    report.torn_tail = old.torn_tail;
    report.truncated_bytes = old.truncated_bytes;
    tracing::info!(
        dir = %dir.display(),
        entries = entries.len(),
        snapshot_records = old.snapshot_records,
        journal_records = old.journal_records,
        "dlq data directory migrated from the pre-journal format to a snapshot and a mainstay-journal log"
    );
    Ok(Some(bytes))
}

/// Opens the journal, waiting briefly for a sync thread of a just-dropped handle to let go of it.
fn open_journal(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    config: &DlqConfig,
) -> Result<(Journal, mainstay_journal::Replay), OpenError> {
    let segment_bytes = (config.compact_after_bytes / 4).max(MIN_SEGMENT_BYTES);
    let journal_config = JournalConfig {
        segment_bytes,
        preallocate_bytes: segment_bytes.min(1024 * 1024),
        recovery: match config.journal_recovery {
            JournalRecovery::SkipCorrupt => RecoveryMode::SkipCorrupt,
            JournalRecovery::Refuse => RecoveryMode::Refuse,
        },
        ..JournalConfig::default()
    };
    let log = dir.join(LOG_DIR);
    let started = std::time::Instant::now();
    loop {
        match Journal::open_with(Arc::clone(fs), &log, journal_config.clone()) {
            Err(mainstay_journal::OpenError::Locked { .. })
                if started.elapsed() < JOURNAL_LOCK_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(opened) => return Ok(opened),
            Err(mainstay_journal::OpenError::Locked { dir }) => {
                return Err(OpenError::Locked { dir });
            }
            Err(mainstay_journal::OpenError::Corrupt {
                file,
                offset,
                valid_frames_after,
            }) => {
                return Err(OpenError::CorruptJournal {
                    file,
                    offset,
                    valid_frames_after,
                });
            }
            Err(mainstay_journal::OpenError::Io { path, source }) => {
                return Err(OpenError::Io { path, source });
            }
            Err(other) => {
                return Err(OpenError::Io {
                    path: log,
                    source: io::Error::other(other.to_string()),
                });
            }
        }
    }
}

/// Locks the directory, migrates it if needed, reads the snapshot and replays the journal.
fn load(fs: &Arc<dyn FileSystem>, dir: &Path, config: &DlqConfig) -> Result<Loaded, OpenError> {
    create_dir_durable(&**fs, dir).map_err(file_error)?;
    let lock = DirLock::acquire_with(&**fs, dir).map_err(|error| match error {
        LockError::Held { dir } => OpenError::Locked { dir },
        LockError::Io { path, source } => OpenError::Io { path, source },
        other => OpenError::Io {
            path: dir.to_owned(),
            source: io::Error::other(other.to_string()),
        },
    })?;
    // A rewrite of the archive cut short before its rename: the archive is whole, the copy
    // goes (written with std's file system, as the archive is).
    let archive_temp = dir.join(files::ARCHIVE_TEMP_FILE);
    match std::fs::remove_file(&archive_temp) {
        Ok(()) => {
            tracing::warn!(path = %archive_temp.display(), "removed an archive rewrite cut short; the archive is as it was before it");
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(OpenError::Io {
                path: archive_temp,
                source: error,
            });
        }
    }
    let mut report = DlqRecovery::default();
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let snapshot = read_optional(&**fs, &snapshot_path)?;
    let snapshot = migrate(&**fs, dir, snapshot, &mut report)?;

    let mut entries = BTreeMap::new();
    let mut covered = 0;
    if let Some(bytes) = snapshot {
        let read = files::decode_snapshot(&bytes).map_err(|reason| OpenError::CorruptSnapshot {
            path: snapshot_path.clone(),
            reason,
        })?;
        if let Some(reason) = read.damage {
            if config.journal_recovery == JournalRecovery::Refuse {
                return Err(OpenError::CorruptSnapshot {
                    path: snapshot_path,
                    reason,
                });
            }
            let name = format!("snapshot-{}", read.covered);
            let kept = preserve(&**fs, dir, &name, &bytes)?;
            tracing::error!(path = %snapshot_path.display(), reason, records = read.records.len(), preserved = %kept.display(), "dlq snapshot is damaged; loaded the records before the damage and kept a copy");
            report.preserved = Some(kept);
            report.corrupt_records += 1;
        }
        covered = read.covered;
        report.snapshot_records = read.records.len();
        for record in read.records {
            codec::apply(&mut entries, record);
        }
    }

    let (journal, replay) = open_journal(fs, dir, config)?;
    if journal.last_lsn().get() < covered {
        return Err(OpenError::CorruptSnapshot {
            path: snapshot_path,
            reason: "it covers journal entries the journal never had (was log/ removed?)",
        });
    }
    let mut journal_bytes = 0;
    for entry in replay.entries {
        if entry.lsn.get() <= covered {
            report.stale_journal = true;
            continue;
        }
        journal_bytes += entry.payload.len() as u64 + 16;
        match codec::decode(&entry.payload) {
            Some(record) => {
                report.journal_records += 1;
                codec::apply(&mut entries, record);
            }
            None => {
                // Its CRC checked out, so this is a record no version of this crate wrote.
                tracing::error!(
                    lsn = entry.lsn.get(),
                    "dlq journal entry does not decode; skipped"
                );
                report.corrupt_records += 1;
            }
        }
    }
    if let Some(torn) = &replay.report.torn_tail {
        report.torn_tail = true;
        report.truncated_bytes += torn.bytes;
        tracing::warn!(file = %torn.file.display(), offset = torn.offset, bytes = torn.bytes, "dlq journal torn tail truncated on open");
    }
    for damage in &replay.report.corruption {
        let lost = damage.lost_entries();
        report.corrupt_records += lost;
        report.preserved = Some(damage.moved_to.clone());
        tracing::error!(
            file = %damage.file.display(),
            offset = damage.offset,
            bytes = damage.bytes,
            valid_frames_after = damage.valid_frames_after,
            lost_records = lost,
            preserved = %damage.moved_to.display(),
            "dlq journal is damaged; recovered every valid record around it (journal_recovery = skip_corrupt)"
        );
    }
    report.entries = entries.len();
    Ok(Loaded {
        lock,
        journal,
        entries,
        journal_bytes,
        report,
    })
}

impl DlqBuilder {
    /// Locks the directory, migrates a pre-journal directory, reads the snapshot, replays the
    /// journal (a torn tail is truncated; damage is skipped or refused as
    /// `journal_recovery` says) and returns the handle. Blocking I/O runs on tokio's blocking
    /// pool.
    ///
    /// # Errors
    ///
    /// [`OpenError::Locked`] when another process holds the directory, [`OpenError::Config`]
    /// for invalid configuration, [`OpenError::CorruptJournal`] for a damaged journal under
    /// `journal_recovery = "refuse"`, [`OpenError::Io`] and [`OpenError::CorruptSnapshot`] for
    /// files that cannot be used.
    pub async fn open(self) -> Result<Dlq, OpenError> {
        self.config.validate()?;
        let dir = self.dir.clone();
        let fs = Arc::clone(&self.fs);
        let config = self.config.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&fs, &dir, &config))
            .await
            .map_err(|join| OpenError::Io {
                path: self.dir.clone(),
                source: io::Error::other(join.to_string()),
            })??;

        let metrics = self.metrics.unwrap_or_else(DlqMetrics::unregistered);
        let report = loaded.report;
        if report.torn_tail || report.corrupt_tail {
            metrics.truncations.inc();
        }
        metrics.corrupt_records.inc_by(report.corrupt_records);
        metrics
            .journal_bytes
            .set(i64::try_from(loaded.journal_bytes).unwrap_or(i64::MAX));

        let mut state = State {
            entries: BTreeMap::new(),
            queues: BTreeMap::new(),
            configs: self.config.queues.clone(),
            defaults: self.config.defaults.clone(),
            payload_bytes: 0,
            last_id: Ulid::nil(),
            records: Vec::new(),
            archive_buf: Vec::new(),
            archive_pending: false,
            journal: Some(loaded.journal),
            journal_bytes: loaded.journal_bytes,
            closed: false,
            in_flight: HashSet::new(),
        };
        for (_, entry) in loaded.entries {
            state.last_id = state.last_id.max(entry.id.ulid());
            state.insert(Arc::new(entry));
        }
        // Configured and recovered queues have their series from the start (decision 0097).
        for queue in self.config.queues.keys().chain(state.queues.keys()) {
            metrics.declare_queue(queue);
        }
        for (queue, queue_state) in &state.queues {
            metrics
                .size
                .get_or_create(&DlqMetrics::queue(queue))
                .set(len_i64(queue_state.ids.len()));
        }
        report.summary().log("dlq", &self.dir);
        tracing::debug!(dir = %self.dir.display(), recovery = ?report, "dlq opened");

        let shared = Arc::new(Shared {
            dir: self.dir,
            config: self.config,
            clock: self.clock,
            metrics,
            fs: self.fs,
            state: Mutex::new(state),
            serial: tokio::sync::Mutex::new(()),
            compaction: tokio::sync::Mutex::new(()),
            archive: Mutex::new(None),
            syncs_counted: AtomicU64::new(0),
            handlers: RwLock::new(HashMap::new()),
            lock: Mutex::new(Some(loaded.lock)),
            report,
            #[cfg(test)]
            before_rename: Mutex::new(None),
            #[cfg(test)]
            archive_waits: std::sync::atomic::AtomicUsize::new(0),
        });
        let weak: Weak<dyn OldestAges> = Arc::downgrade(&shared) as Weak<dyn OldestAges>;
        shared.metrics.attach(weak);
        let guard = Arc::new(LockGuard {
            shared: Arc::clone(&shared),
        });
        Ok(Dlq { shared, guard })
    }
}
