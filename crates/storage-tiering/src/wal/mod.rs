//! The write-ahead log of the store, on `mainstay-journal` (decision 0082): one journal entry
//! per logged operation, its payload the record body below, its LSN the journal frame's. The
//! journal does the framing, zero-fill, group commit, rotation, poisoning and replay; this
//! module encodes records, maps the journal's reports onto the store's, counts the WAL metrics,
//! and migrates WAL files of the format before the move ([`legacy`]) at open.
//!
//! Body: `u64 incarnation | u8 name length | name | u32 entry count | entries`, entry: `u16 id
//! length | id | u8 kind (0 delete, 1 put) | [u32 value length | value]`. One entry holds one
//! `put`, `delete` or whole batch, so a batch is all-or-nothing on recovery.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use mainstay_journal::fs::{FileSystem, SyncSite};
use mainstay_journal::{
    Journal, JournalConfig, Lsn, OpenError as JournalOpenError, RecoveryMode, WriteError,
    read_entries,
};

use crate::config::WalRecoveryMode;
use crate::error::WalError;
use crate::metrics::Instruments;

pub(crate) mod legacy;

/// Journal segments are zero-filled this far ahead of the frames (decision 0064).
const PREALLOCATE: u64 = 1024 * 1024;
/// Bytes a journal frame adds to its payload.
const FRAME_OVERHEAD: u64 = 16;

/// One operation as logged: a set of puts and deletes in one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalRecord {
    pub(crate) lsn: u64,
    pub(crate) collection: String,
    pub(crate) incarnation: u64,
    pub(crate) entries: Vec<(String, Option<Bytes>)>,
}

/// Encodes everything of a record but its LSN (which the log assigns).
pub(crate) fn encode_body(
    collection: &str,
    incarnation: u64,
    entries: &[(String, Option<Bytes>)],
) -> Vec<u8> {
    let size: usize = entries
        .iter()
        .map(|(id, value)| 7 + id.len() + value.as_ref().map_or(0, Bytes::len))
        .sum::<usize>()
        + 13
        + collection.len();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&incarnation.to_le_bytes());
    // Collection names are at most 64 bytes and ids at most 512 (validated before this point).
    out.push(u8::try_from(collection.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(collection.as_bytes());
    out.extend_from_slice(
        &u32::try_from(entries.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (id, value) in entries {
        out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(id.as_bytes());
        match value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                out.extend_from_slice(
                    &u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes(),
                );
                out.extend_from_slice(value);
            }
        }
    }
    out
}

/// A record of the format before the move: `u64 lsn | body`.
pub(crate) fn decode_payload(payload: &[u8]) -> Option<WalRecord> {
    let (lsn, body) = payload.split_at_checked(8)?;
    decode_body(u64::from_le_bytes(lsn.try_into().ok()?), body)
}

/// The record with LSN `lsn` whose body (see [`encode_body`]) is `body`.
pub(crate) fn decode_body(lsn: u64, body: &[u8]) -> Option<WalRecord> {
    let mut reader = crate::segment::Cursor::new(body);
    let incarnation = reader.u64()?;
    let name_len = usize::from(reader.u8()?);
    let collection = reader.str_of(name_len)?;
    let count = reader.u32()?;
    let mut entries = Vec::new();
    for _ in 0..count {
        let id_len = usize::from(reader.u16()?);
        let id = reader.str_of(id_len)?;
        let value = match reader.u8()? {
            0 => None,
            1 => {
                let len = usize::try_from(reader.u32()?).ok()?;
                Some(Bytes::copy_from_slice(reader.take(len)?))
            }
            _ => return None,
        };
        entries.push((id, value));
    }
    reader.is_empty().then_some(WalRecord {
        lsn,
        collection,
        incarnation,
        entries,
    })
}

/// What recovery found in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalRecovery {
    /// Records replayed.
    pub records: u64,
    /// WAL files read.
    pub files: usize,
    /// Bytes of a torn or corrupt tail cut from the last file.
    pub truncated_bytes: u64,
    /// Records skipped because a failed write or fsync had poisoned the log when they were
    /// appended: their writers were told the write failed, so they never come back.
    pub poisoned_records: u64,
    /// Damage in the middle of WAL files skipped under `wal_recovery = "skip_corrupt"` (always
    /// empty under `refuse`, which fails the open instead).
    pub damage: Vec<WalDamage>,
}

/// A damaged stretch of a WAL file that recovery skipped: the records in it are lost.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct WalDamage {
    /// The WAL file (rewritten without the damage).
    pub file: PathBuf,
    /// The copy of the file as it was found, under `data_dir/corrupt/`.
    pub copy: PathBuf,
    /// Where the damage starts in the file.
    pub offset: u64,
    /// Bytes skipped (up to the next valid frame, or to the end of the file's frames).
    pub bytes: u64,
    /// The LSN of the last valid record before the damage (0 when none): the lost records had
    /// LSNs above it.
    pub lsn_before: u64,
    /// The LSN of the first valid record after it, if any: the lost records had LSNs below it.
    pub lsn_after: Option<u64>,
    /// How many records the damage may have held: the LSNs between `lsn_before` and
    /// `lsn_after` (0 when they are consecutive or nothing valid follows).
    pub lost_records: u64,
}

#[derive(Debug)]
struct Inner {
    journal: Journal,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    instruments: Instruments,
    /// The journal's syncs already added to `storage_wal_fsyncs`.
    counted_syncs: AtomicU64,
    /// Closed by the store while healthy: the journal then refuses writes, which is no failure.
    closed_healthy: std::sync::atomic::AtomicBool,
    /// Appends hold it shared while they check that they may append and encode their frame;
    /// [`Wal::roll`] takes it exclusively once, so that every append that was let in before is
    /// in the log and every later one sees what the caller changed before the roll (a dropped
    /// collection).
    append_gate: parking_lot::RwLock<()>,
    /// Tests make the next syncs fail after the frames were written, as a failed fdatasync
    /// does (the bytes may still reach the disk).
    #[cfg(test)]
    fail_syncs: Arc<std::sync::atomic::AtomicBool>,
}

/// The write-ahead log. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Wal {
    inner: Arc<Inner>,
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Keeps a copy of a damaged WAL file as found under `quarantine` (`wal-<file name>-<ms>`).
fn quarantine_copy(quarantine: &Path, path: &Path, data: &[u8]) -> Result<PathBuf, WalError> {
    fs::create_dir_all(quarantine).map_err(|e| io_error(quarantine, e))?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = path.file_name().map_or_else(
        || "wal".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    let copy = quarantine.join(format!("wal-{name}-{millis}"));
    crate::store::write_atomic(&copy, data).map_err(|e| io_error(&copy, e))?;
    Ok(copy)
}

fn io_error(path: &Path, source: io::Error) -> WalError {
    WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_error(error: WriteError) -> WalError {
    match error {
        WriteError::TooLarge { size, .. } => WalError::TooLarge(size),
        WriteError::Failed { reason } => WalError::Failed(reason),
        other => WalError::Failed(other.to_string()),
    }
}

/// The store's error for a journal that does not open.
fn open_error(fs: &dyn FileSystem, dir: &Path, error: JournalOpenError) -> WalError {
    match error {
        JournalOpenError::Corrupt {
            file,
            offset,
            valid_frames_after,
        } => {
            let later_files = fs
                .read_dir(dir)
                .map(|names| {
                    let name = file.file_name().map(std::ffi::OsStr::to_os_string);
                    names
                        .iter()
                        .filter(|other| {
                            other.to_string_lossy().ends_with(".seg")
                                && Some(*other) > name.as_ref()
                        })
                        .count()
                })
                .unwrap_or(0);
            WalError::Corrupt {
                path: file,
                offset,
                valid_after: valid_frames_after,
                later_files,
            }
        }
        JournalOpenError::Io { path, source } => WalError::Io { path, source },
        JournalOpenError::PoisonedList { path, .. } => WalError::Unreadable { path },
        other => WalError::Io {
            path: dir.to_path_buf(),
            source: io::Error::other(other.to_string()),
        },
    }
}

impl Wal {
    /// Opens the log in `dir` (blocking): migrates WAL files of the format before the move,
    /// replays the journal (a torn tail is truncated; damage is handled as `mode` says), and
    /// returns every record. New LSNs start above both the log's records and `lsn_floor` (the
    /// highest LSN held by a segment), so they keep growing even after every WAL file was
    /// trimmed.
    pub(crate) fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        segment_bytes: u64,
        lsn_floor: u64,
        recovery: (WalRecoveryMode, &Path),
        instruments: Instruments,
    ) -> Result<(Self, Vec<WalRecord>, WalRecovery), WalError> {
        #[cfg(test)]
        let fail_syncs = Arc::new(std::sync::atomic::AtomicBool::new(false));
        #[cfg(test)]
        let fs: Arc<dyn FileSystem> = Arc::new(test_fs::FailingFs {
            inner: fs,
            fail: Arc::clone(&fail_syncs),
        });
        let (journal, records, report) =
            Self::open_journal(&fs, dir, segment_bytes, lsn_floor, recovery)?;
        let wal = Self {
            inner: Arc::new(Inner {
                journal,
                fs,
                dir: dir.to_path_buf(),
                instruments,
                counted_syncs: AtomicU64::new(0),
                closed_healthy: std::sync::atomic::AtomicBool::new(false),
                append_gate: parking_lot::RwLock::new(()),
                #[cfg(test)]
                fail_syncs,
            }),
        };
        wal.update_metrics();
        Ok((wal, records, report))
    }

    /// The journal in `dir` on `fs`, with the old files migrated into it, its records and the
    /// recovery report.
    pub(crate) fn open_journal(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        segment_bytes: u64,
        lsn_floor: u64,
        (mode, quarantine): (WalRecoveryMode, &Path),
    ) -> Result<(Journal, Vec<WalRecord>, WalRecovery), WalError> {
        let config = JournalConfig {
            segment_bytes: segment_bytes.max(mainstay_journal::MIN_SEGMENT_BYTES),
            preallocate_bytes: PREALLOCATE,
            recovery: match mode {
                WalRecoveryMode::Refuse => RecoveryMode::Refuse,
                WalRecoveryMode::SkipCorrupt => RecoveryMode::SkipCorrupt,
            },
            ..JournalConfig::default()
        };
        // Old files first: their damage is judged before anything is written.
        let legacy = legacy::read(dir, mode, quarantine)?;
        // The old list of failed LSNs has the journal's name and format, over the same LSNs;
        // while old records are copied in, it waits aside, or the journal would start above it.
        let aside = dir.join(legacy::POISONED_ASIDE);
        let poisoned = dir.join("poisoned");
        if !legacy.files.is_empty() && fs.read(&poisoned).is_ok() && fs.read(&aside).is_err() {
            fs.rename(&poisoned, &aside)
                .map_err(|e| io_error(&poisoned, e))?;
            fs.sync_dir(dir, SyncSite::Recover)
                .map_err(|e| io_error(dir, e))?;
        }
        let floor = legacy.records.first().map_or(lsn_floor, |first| {
            first.lsn.saturating_sub(1).min(lsn_floor)
        });
        let open = |floor: u64| {
            Journal::open_with_floor(Arc::clone(fs), dir, config.clone(), Lsn::new(floor))
                .map_err(|error| open_error(&**fs, dir, error))
        };
        let (mut journal, mut replay) = open(floor)?;
        let mut recovery = WalRecovery {
            files: legacy.files.len() + replay.report.segments,
            truncated_bytes: legacy.truncated_bytes
                + replay
                    .report
                    .torn_tail
                    .as_ref()
                    .map_or(0, |torn| torn.bytes),
            poisoned_records: legacy.poisoned_records,
            damage: legacy.damage,
            ..WalRecovery::default()
        };
        for corruption in &replay.report.corruption {
            let original = fs
                .read(&corruption.moved_to)
                .map_err(|e| io_error(&corruption.moved_to, e))?;
            let copy = quarantine_copy(quarantine, &corruption.file, &original)?;
            tracing::error!(path = %corruption.file.display(), offset = corruption.offset, bytes = corruption.bytes, valid_after = corruption.valid_frames_after, copy = %copy.display(), "skipping damaged wal bytes; the records in them are lost (storage.wal_recovery = \"skip_corrupt\")");
            recovery.damage.push(WalDamage {
                file: corruption.file.clone(),
                copy,
                offset: corruption.offset,
                bytes: corruption.bytes,
                lsn_before: corruption.lsn_before.get(),
                lsn_after: corruption.lsn_after.map(Lsn::get),
                lost_records: corruption.lost_entries(),
            });
        }
        if !legacy.files.is_empty() {
            // Copy the old records in with their LSNs (a crash part way leaves a prefix of
            // them in the journal: the next open copies the rest), then delete the old files.
            let copied = replay.entries.last().map_or(0, |entry| entry.lsn.get());
            let mut last = None;
            let mut count = 0u64;
            for record in legacy.records.iter().filter(|record| record.lsn > copied) {
                journal.skip_to(Lsn::new(record.lsn));
                let body = encode_body(&record.collection, record.incarnation, &record.entries);
                last = Some(journal.append(&body).map_err(write_error)?);
                count += 1;
            }
            if let Some(last) = last {
                journal.commit_blocking(last).map_err(write_error)?;
            }
            for file in &legacy.files {
                fs.remove_file(file).map_err(|e| io_error(file, e))?;
            }
            fs.sync_dir(dir, SyncSite::Recover)
                .map_err(|e| io_error(dir, e))?;
            tracing::info!(files = legacy.files.len(), records = count, dir = %dir.display(), "migrated the wal files of the format before mainstay-journal into the journal");
        }
        let restored = fs.read(&aside).is_ok();
        if restored {
            // Back under the journal's name once the old files are gone (also after a crash
            // between the two), so that new LSNs start above the failed ones.
            fs.rename(&aside, &poisoned)
                .map_err(|e| io_error(&aside, e))?;
            fs.sync_dir(dir, SyncSite::Recover)
                .map_err(|e| io_error(dir, e))?;
        }
        if restored || !legacy.files.is_empty() {
            drop(journal);
            (journal, replay) = open(lsn_floor)?;
        }
        recovery.poisoned_records += replay.report.skipped_failed_writes;
        let mut records = Vec::with_capacity(replay.entries.len());
        for entry in replay.entries {
            match decode_body(entry.lsn.get(), &entry.payload) {
                Some(record) => records.push(record),
                None => {
                    tracing::error!(
                        lsn = entry.lsn.get(),
                        "a wal entry with a valid checksum does not decode; skipping it"
                    );
                }
            }
        }
        recovery.records = records.len() as u64;
        Ok((journal, records, recovery))
    }

    /// Appends a record (not yet durable) and returns its LSN, if `admit` lets it in. `admit`
    /// runs first, under the log's append gate, so that a roll orders it against the caller's
    /// state (see [`Wal::roll`]); its error is returned and nothing is appended then. `apply`
    /// runs under the log's lock with the LSN, so that records reach the memtable in LSN order.
    pub(crate) fn append<T, E: From<WalError>>(
        &self,
        body: &[u8],
        admit: impl FnOnce() -> Result<(), E>,
        apply: impl FnOnce(u64) -> T,
    ) -> Result<(u64, T), E> {
        let _gate = self.inner.append_gate.read();
        admit()?;
        let (lsn, applied) = self
            .inner
            .journal
            .append_with(body, |lsn| apply(lsn.get()))
            .map_err(write_error)?;
        self.inner
            .instruments
            .wal_bytes
            .inc_by(body.len() as u64 + FRAME_OVERHEAD);
        Ok((lsn.get(), applied))
    }

    /// Waits until `lsn` is durable, leading a group sync when none is in flight.
    pub(crate) async fn commit(&self, lsn: u64) -> Result<(), WalError> {
        let committed = self.inner.journal.commit(Lsn::new(lsn)).await;
        self.update_metrics();
        committed.map_err(write_error)
    }

    /// Every durable record with an LSN in `range` still in the log's files (blocking), in LSN
    /// order; records of failed writes are left out.
    pub(crate) fn read_range(
        &self,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Vec<WalRecord>, WalError> {
        let last = (*range.end()).min(self.synced_lsn());
        let entries = read_entries(
            &*self.inner.fs,
            &self.inner.dir,
            Lsn::new(*range.start())..=Lsn::new(last),
        )
        .map_err(|error| io_error(&self.inner.dir, io::Error::other(error.to_string())))?;
        Ok(entries
            .into_iter()
            .filter_map(|entry| decode_body(entry.lsn.get(), &entry.payload))
            .collect())
    }

    /// The last LSN known durable.
    pub(crate) fn synced_lsn(&self) -> u64 {
        self.inner.journal.durable_lsn().get()
    }

    /// The last LSN handed out.
    pub(crate) fn last_lsn(&self) -> u64 {
        self.inner.journal.last_lsn().get()
    }

    /// Deletes every closed WAL file whose records all have an LSN at most `covered` (blocking).
    pub(crate) fn trim(&self, covered: u64) -> Result<usize, WalError> {
        let trimmed = self.inner.journal.trim(Lsn::new(covered));
        self.update_metrics();
        trimmed.map_err(|error| match error {
            mainstay_journal::TrimError::Io { path, source } => WalError::Io { path, source },
            other => io_error(&self.inner.dir, io::Error::other(other.to_string())),
        })
    }

    /// Closes the active WAL file and starts a new one, so that a trim may delete every record
    /// appended before the call (blocking). Returns whether a file was closed.
    ///
    /// Every record appended before the call is made durable first, so that it is in a closed
    /// file: the journal writes records appended but not yet synced at a roll into the new file,
    /// where a trim would not find them. Which appends come "before" is decided by the append
    /// gate, taken exclusively once: an append admitted before is in the log (its LSN is at
    /// most the last LSN read under the gate), and an append admitted after runs its `admit`
    /// after the gate was released, so it sees every change the caller made before the roll
    /// (the lock's release and acquire order them). The store relies on it for dropped
    /// collections (`Collection::dropped`, set before `drop_collection` returns and checked by
    /// `admit`): no record of a collection dropped before a roll is written after it.
    pub(crate) fn roll(&self) -> Result<bool, WalError> {
        let appended = {
            let _gate = self.inner.append_gate.write();
            self.inner.journal.last_lsn()
        };
        self.inner
            .journal
            .commit_blocking(appended)
            .map_err(write_error)?;
        let rolled = self.inner.journal.roll().map_err(write_error);
        self.update_metrics();
        rolled
    }

    /// Refuses later writes and releases the journal's directory lock (at the store's close).
    pub(crate) fn close(&self) {
        if self.inner.journal.failure().is_none() {
            self.inner.closed_healthy.store(true, Ordering::Release);
        }
        self.inner.journal.close();
    }

    /// Why the log refuses writes, once a write or sync failed (a store closed while healthy
    /// refuses writes too, but has not failed).
    pub(crate) fn failure(&self) -> Option<String> {
        if self.inner.closed_healthy.load(Ordering::Acquire) {
            return None;
        }
        self.inner.journal.failure()
    }

    /// Makes every later sync fail after writing its frames (tests only).
    #[cfg(test)]
    pub(crate) fn fail_syncs(&self) {
        self.inner
            .fail_syncs
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes of WAL files on disk (zero-filled space included).
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.inner.journal.stats().disk_bytes
    }

    /// WAL files on disk now.
    pub(crate) fn file_count(&self) -> usize {
        self.inner.journal.stats().segments
    }

    /// Brings the fsync counter and the file gauges up to date with the journal.
    fn update_metrics(&self) {
        let stats = self.inner.journal.stats();
        let instruments = &self.inner.instruments;
        let before = self
            .inner
            .counted_syncs
            .fetch_max(stats.syncs, Ordering::Relaxed);
        instruments
            .wal_fsyncs
            .inc_by(stats.syncs.saturating_sub(before));
        instruments
            .wal_disk_bytes
            .set(i64::try_from(stats.disk_bytes).unwrap_or(i64::MAX));
        instruments
            .wal_files
            .set(i64::try_from(stats.segments).unwrap_or(i64::MAX));
        if self.failure().is_some() {
            instruments.wal_failed.set(1);
        }
    }
}

/// A file system whose segment syncs fail on demand (after the data was written, as a failed
/// fdatasync may leave it), for the tests of failed writes.
#[cfg(test)]
mod test_fs {
    use std::ffi::OsString;
    use std::io;
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use mainstay_journal::fs::{FileHandle, FileSystem, HeldLock, OpenMode, SyncSite};

    #[derive(Debug)]
    pub(crate) struct FailingFs {
        pub(crate) inner: Arc<dyn FileSystem>,
        pub(crate) fail: Arc<AtomicBool>,
    }

    #[derive(Debug)]
    struct FailingFile {
        inner: Box<dyn FileHandle>,
        fail: Arc<AtomicBool>,
    }

    impl FileHandle for FailingFile {
        fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
            self.inner.write_at(offset, bytes)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
        fn sync(&self, site: SyncSite) -> io::Result<()> {
            if site == SyncSite::SegmentData && self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("injected fdatasync failure"));
            }
            self.inner.sync(site)
        }
    }

    impl FileSystem for FailingFs {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            self.inner.create_dir(path)
        }
        fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
            self.inner.read_dir(path)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.inner.read(path)
        }
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>> {
            Ok(Box::new(FailingFile {
                inner: self.inner.open(path, mode)?,
                fail: Arc::clone(&self.fail),
            }))
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.inner.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.inner.remove_file(path)
        }
        fn sync_dir(&self, path: &Path, site: SyncSite) -> io::Result<()> {
            self.inner.sync_dir(path, site)
        }
        fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn HeldLock>>> {
            self.inner.try_lock(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use mainstay_journal::fs::SimFs;

    use super::*;

    fn entries(n: usize) -> Vec<(String, Option<Bytes>)> {
        (0..n)
            .map(|i| {
                (
                    format!("id-{i}"),
                    (i % 2 == 0).then(|| Bytes::from(vec![7u8; i])),
                )
            })
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let body = encode_body("orders", 3, &entries(5));
        let mut payload = 9u64.to_le_bytes().to_vec();
        payload.extend_from_slice(&body);
        let record = decode_payload(&payload).expect("decodes");
        assert_eq!(record.lsn, 9);
        assert_eq!(record.incarnation, 3);
        assert_eq!(record.collection, "orders");
        assert_eq!(record.entries, entries(5));
        payload.push(0);
        assert_eq!(
            decode_payload(&payload),
            None,
            "trailing bytes are corruption"
        );
    }

    fn open_in(
        dir: &Path,
        mode: WalRecoveryMode,
    ) -> Result<(Wal, Vec<WalRecord>, WalRecovery), WalError> {
        Wal::open(
            Arc::new(mainstay_journal::fs::RealFs),
            &dir.join("wal"),
            1 << 20,
            0,
            (mode, &dir.join("corrupt")),
            crate::metrics::StorageMetrics::unregistered().instruments("t"),
        )
    }

    /// Bytes of a journal segment's header and of a frame before its payload.
    const SEGMENT_HEADER: usize = 24;
    const HEADER: usize = 16;

    /// Acknowledges `n` one-record writes (LSNs 1..=n) into a fresh log in `dir`; returns the
    /// journal segment that holds them and the offsets of their frames.
    async fn acknowledged(dir: &Path, n: u64) -> (PathBuf, Vec<usize>) {
        let (wal, _, _) = open_in(dir, WalRecoveryMode::Refuse).expect("opens");
        for i in 1..=n {
            let body = encode_body(
                "c",
                1,
                &[(format!("k{i}"), Some(Bytes::from(vec![42u8; 100])))],
            );
            let (lsn, ()) = wal
                .append(&body, || Ok::<(), WalError>(()), |_| ())
                .expect("appends");
            wal.commit(lsn).await.expect("commits");
        }
        drop(wal);
        let path = dir.join("wal").join("00000000000000000001.seg");
        let data = fs::read(&path).expect("reads");
        let mut offsets = Vec::new();
        let mut offset = SEGMENT_HEADER;
        loop {
            let len = u32::from_le_bytes(data[offset..offset + 4].try_into().expect("4 bytes"));
            if len == 0 {
                break;
            }
            offsets.push(offset);
            offset += 8 + len as usize;
        }
        assert_eq!(offsets.len() as u64, n, "every record has its frame");
        (path, offsets)
    }

    fn flip(path: &Path, at: usize) {
        let mut data = fs::read(path).expect("reads");
        data[at] ^= 0x10;
        fs::write(path, data).expect("writes");
    }

    fn lsns(records: &[WalRecord]) -> Vec<u64> {
        records.iter().map(|r| r.lsn).collect()
    }

    #[tokio::test]
    async fn one_flipped_bit_in_the_middle_refuses_to_open_and_names_what_follows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, offsets) = acknowledged(dir.path(), 20).await;
        // A bit of the 10th record's value.
        flip(&path, offsets[9] + HEADER + 40);
        match open_in(dir.path(), WalRecoveryMode::Refuse) {
            Err(WalError::Corrupt {
                path: named,
                offset,
                valid_after,
                later_files,
            }) => {
                assert_eq!(named, path);
                assert_eq!(offset, offsets[9] as u64);
                assert_eq!((valid_after, later_files), (10, 0));
            }
            other => panic!("expected the open to refuse, got {:?}", other.map(|o| o.2)),
        }
        // Refusing changed nothing: the same answer again.
        assert!(matches!(
            open_in(dir.path(), WalRecoveryMode::Refuse),
            Err(WalError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn a_damaged_length_field_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, offsets) = acknowledged(dir.path(), 20).await;
        flip(&path, offsets[9] + 2);
        assert!(matches!(
            open_in(dir.path(), WalRecoveryMode::Refuse),
            Err(WalError::Corrupt {
                valid_after: 10,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn skip_corrupt_recovers_every_valid_frame_keeps_a_copy_and_reports_the_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, offsets) = acknowledged(dir.path(), 20).await;
        let original = {
            flip(&path, offsets[9] + HEADER + 40);
            fs::read(&path).expect("reads")
        };
        let (_, records, recovery) =
            open_in(dir.path(), WalRecoveryMode::SkipCorrupt).expect("opens");
        let mut expected: Vec<u64> = (1..=20).collect();
        expected.retain(|lsn| *lsn != 10);
        assert_eq!(lsns(&records), expected);
        assert_eq!(recovery.damage.len(), 1, "{recovery:?}");
        let damage = &recovery.damage[0];
        assert_eq!(damage.file, path);
        assert_eq!(damage.offset, offsets[9] as u64);
        assert_eq!(damage.bytes, (offsets[10] - offsets[9]) as u64);
        assert_eq!((damage.lsn_before, damage.lsn_after), (9, Some(11)));
        assert!(damage.copy.starts_with(dir.path().join("corrupt")));
        assert_eq!(fs::read(&damage.copy).expect("copy"), original);
        // The file was rewritten without the damage: the next open finds none, under either
        // mode, and the same records.
        let (_, again, recovery) = open_in(dir.path(), WalRecoveryMode::Refuse).expect("opens");
        assert_eq!(lsns(&again), expected);
        assert!(recovery.damage.is_empty());
    }

    #[tokio::test]
    async fn a_torn_last_frame_is_cut_quietly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, offsets) = acknowledged(dir.path(), 20).await;
        // The last frame half written, the rest of the file as preallocated.
        let mut data = fs::read(&path).expect("reads");
        let torn = offsets[19] + HEADER + 30;
        data[torn..].fill(0);
        fs::write(&path, data).expect("writes");
        let (_, records, recovery) = open_in(dir.path(), WalRecoveryMode::Refuse).expect("opens");
        assert_eq!(lsns(&records), (1..=19).collect::<Vec<_>>());
        assert!(recovery.truncated_bytes > 0);
        assert!(recovery.damage.is_empty());
    }

    /// The records of the fixture `tests/it/fixtures/wal-before-journal`, LSNs 1 to 12;
    /// `tests/it/fixtures/README.md` says how it was made.
    fn before_journal_records() -> Vec<WalRecord> {
        (1..=12u64)
            .map(|lsn| {
                let collection = if lsn % 3 == 0 { "invoices" } else { "orders" };
                let entries = (0..=lsn % 4)
                    .map(|j| {
                        let value = format!("value {lsn}/{j} ").repeat(3);
                        (
                            format!("rec-{lsn}-{j}"),
                            (j != 2).then(|| Bytes::from(value)),
                        )
                    })
                    .collect();
                WalRecord {
                    lsn,
                    collection: collection.to_owned(),
                    incarnation: 1 + lsn % 2,
                    entries,
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn wal_files_written_before_the_journal_move_open_with_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/wal-before-journal");
        fs::create_dir_all(dir.path().join("wal")).expect("creates");
        for name in [
            "00000000000000000001.wal",
            "00000000000000000002.wal",
            "poisoned",
        ] {
            fs::copy(fixture.join(name), dir.path().join("wal").join(name)).expect("copies");
        }
        let (wal, records, recovery) = open_in(dir.path(), WalRecoveryMode::Refuse).expect("opens");
        assert_eq!(records, before_journal_records());
        // LSN 13 reached the disk, but its sync failed and its writer was told so.
        assert_eq!(recovery.poisoned_records, 1, "{recovery:?}");
        assert!(recovery.damage.is_empty());
        let (lsn, ()) = wal
            .append(b"next", || Ok::<(), WalError>(()), |_| ())
            .expect("appends");
        assert_eq!(lsn, 14, "new LSNs start above the failed one");
    }

    #[tokio::test]
    async fn a_migration_cut_short_after_its_commit_copies_nothing_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/wal-before-journal");
        let copy_old_files = || {
            fs::create_dir_all(dir.path().join("wal")).expect("creates");
            for name in ["00000000000000000001.wal", "00000000000000000002.wal"] {
                fs::copy(fixture.join(name), dir.path().join("wal").join(name)).expect("copies");
            }
        };
        copy_old_files();
        fs::copy(fixture.join("poisoned"), dir.path().join("wal/poisoned")).expect("copies");
        let (wal, records, _) = open_in(dir.path(), WalRecoveryMode::Refuse).expect("opens");
        assert_eq!(records, before_journal_records());
        assert!(
            legacy::files(&dir.path().join("wal"))
                .expect("lists")
                .is_empty()
        );
        drop(wal);
        // As if the process died after the journal's commit but before the old files were
        // deleted (the old `poisoned` list still aside).
        copy_old_files();
        fs::rename(
            dir.path().join("wal/poisoned"),
            dir.path().join("wal").join(legacy::POISONED_ASIDE),
        )
        .expect("renames");
        let (wal, records, recovery) = open_in(dir.path(), WalRecoveryMode::Refuse).expect("opens");
        assert_eq!(
            records,
            before_journal_records(),
            "each record once, in order"
        );
        assert_eq!(recovery.poisoned_records, 1);
        let (lsn, ()) = wal
            .append(b"next", || Ok::<(), WalError>(()), |_| ())
            .expect("appends");
        assert_eq!(lsn, 14, "the failed LSN is still never handed out");
    }

    /// A `Wal` over a simulated file system, in `/wal`.
    fn open_sim(sim: &SimFs) -> Result<(Wal, Vec<WalRecord>), WalError> {
        let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
        let dir = Path::new("/wal");
        let (journal, records, _) = Wal::open_journal(
            &fs,
            dir,
            4096,
            0,
            (WalRecoveryMode::Refuse, Path::new("/corrupt")),
        )?;
        let wal = Wal {
            inner: Arc::new(Inner {
                journal,
                fs,
                dir: dir.to_path_buf(),
                instruments: crate::metrics::StorageMetrics::unregistered().instruments("t"),
                counted_syncs: AtomicU64::new(0),
                closed_healthy: std::sync::atomic::AtomicBool::new(false),
                append_gate: parking_lot::RwLock::new(()),
                fail_syncs: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            }),
        };
        Ok((wal, records))
    }

    /// Power cuts at random file-system calls, tearing the last write: after each, every
    /// acknowledged record is replayed with its LSN, and no record whose writer was told it
    /// failed ever appears.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acknowledged_records_survive_random_power_cuts_and_failed_ones_never_appear() {
        for seed in 0..20u64 {
            let sim = SimFs::new(seed);
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut random = move |below: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % below
            };
            let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
            let mut failed: BTreeSet<String> = BTreeSet::new();
            let mut serial = 0u64;
            for boot in 0..4 {
                let (wal, records) = open_sim(&sim).expect("opens after a power cut");
                let found: BTreeMap<u64, String> = records
                    .iter()
                    .map(|record| (record.lsn, record.entries[0].0.clone()))
                    .collect();
                for (lsn, id) in &acknowledged {
                    assert_eq!(
                        found.get(lsn),
                        Some(id),
                        "seed {seed} boot {boot}: lost {lsn}"
                    );
                }
                for id in found.values() {
                    assert!(
                        !failed.contains(id),
                        "seed {seed} boot {boot}: {id} failed yet came back"
                    );
                }
                // What replay returned is durable now, acknowledged or not before.
                acknowledged = found;
                sim.crash_after(random(300) + 1);
                for _ in 0..30 {
                    serial += 1;
                    let id = format!("k{serial}");
                    let size = usize::try_from(random(400)).expect("small");
                    let body =
                        encode_body("c", 1, &[(id.clone(), Some(Bytes::from(vec![7u8; size])))]);
                    let outcome = match wal.append(&body, || Ok::<(), WalError>(()), |_| ()) {
                        Ok((lsn, ())) => wal.commit(lsn).await.map(|()| lsn),
                        Err(error) => Err(error),
                    };
                    match outcome {
                        Ok(lsn) => {
                            acknowledged.insert(lsn, id);
                        }
                        Err(_) => {
                            failed.insert(id);
                        }
                    }
                    if sim.has_crashed() {
                        break;
                    }
                }
                drop(wal);
                sim.power_cut_tearing_last_write();
            }
            assert!(serial > 0);
        }
    }
}
