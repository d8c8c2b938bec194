//! Files in the DLQ directory: the lock, the journal, the snapshot and the archive; recovery on
//! open and the atomic replacement used by compaction.
//!
//! ```text
//! LOCK           advisory lock (File::try_lock), held while the DLQ is open
//! journal        header | frames...          appended and fdatasync'd by the group commit
//! snapshot       header | push frames...     written by compaction: temp + fsync + rename + fsync(dir)
//! archive.jsonl  one JSON entry view a line  evicted and expired entries
//! corrupt/       discarded corrupt journal tails, kept for forensics
//! ```
//!
//! Each header holds a generation. Compaction writes a snapshot that covers the current journal
//! generation, then replaces the journal with an empty one of the next generation. A journal
//! whose generation the snapshot already covers (a crash between the two renames) is skipped.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::{self, Record, TailKind};
use crate::entry::{Entry, EntryId};
use crate::error::OpenError;

pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const JOURNAL_FILE: &str = "journal";
pub(crate) const SNAPSHOT_FILE: &str = "snapshot";
pub(crate) const ARCHIVE_FILE: &str = "archive.jsonl";
const CORRUPT_DIR: &str = "corrupt";

const JOURNAL_MAGIC: &[u8; 8] = b"MSDLQJNL";
const SNAPSHOT_MAGIC: &[u8; 8] = b"MSDLQSNP";
const FORMAT_VERSION: u32 = 1;

/// Bytes of a journal or snapshot header: magic, version, generation, crc32c.
pub(crate) const HEADER_LEN: usize = 24;

fn header(magic: &[u8; 8], generation: u64) -> [u8; HEADER_LEN] {
    let mut out = [0; HEADER_LEN];
    out[..8].copy_from_slice(magic);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c(&out[..20]);
    out[20..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn parse_header(magic: &[u8; 8], data: &[u8]) -> Result<u64, &'static str> {
    let Some(head) = data.get(..HEADER_LEN) else {
        return Err("header is shorter than 24 bytes");
    };
    if &head[..8] != magic {
        return Err("wrong magic bytes");
    }
    let mut crc = [0; 4];
    crc.copy_from_slice(&head[20..]);
    if crc32c::crc32c(&head[..20]) != u32::from_le_bytes(crc) {
        return Err("header checksum mismatch");
    }
    let mut version = [0; 4];
    version.copy_from_slice(&head[8..12]);
    if u32::from_le_bytes(version) != FORMAT_VERSION {
        return Err("unsupported format version");
    }
    let mut generation = [0; 8];
    generation.copy_from_slice(&head[12..20]);
    Ok(u64::from_le_bytes(generation))
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// fsyncs a directory so that renames and creations in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `dir/name` atomically: temp + fsync + rename + fsync(dir).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<File> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Replaces the journal with an empty one of `generation`; returns it open for appending.
pub(crate) fn new_journal(dir: &Path, generation: u64) -> io::Result<File> {
    write_atomic(dir, JOURNAL_FILE, &header(JOURNAL_MAGIC, generation))?;
    OpenOptions::new().append(true).open(dir.join(JOURNAL_FILE))
}

/// Writes a snapshot of `entries` that covers journal `generation`.
pub(crate) fn write_snapshot(
    dir: &Path,
    entries: &[Arc<Entry>],
    generation: u64,
) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + entries.len() * 128);
    bytes.extend_from_slice(&header(SNAPSHOT_MAGIC, generation));
    for entry in entries {
        codec::encode_push(entry, &mut bytes);
    }
    write_atomic(dir, SNAPSHOT_FILE, &bytes).map(drop)
}

/// Opens (creating) the archive for appending.
pub(crate) fn open_archive(dir: &Path) -> io::Result<File> {
    let path = dir.join(ARCHIVE_FILE);
    let existed = path.exists();
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    if !existed {
        sync_dir(dir)?;
    }
    Ok(file)
}

/// What recovery found on open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Entries loaded.
    pub entries: usize,
    /// Records read from the snapshot.
    pub snapshot_records: usize,
    /// Records replayed from the journal.
    pub journal_records: usize,
    /// Records skipped because their checksum failed (bit flips) while later records were good.
    pub corrupt_records: u64,
    /// A torn tail (an incomplete last write) was truncated.
    pub torn_tail: bool,
    /// A corrupt tail (a bad record with no good record after it) was truncated.
    pub corrupt_tail: bool,
    /// Bytes cut from the end of the journal.
    pub truncated_bytes: u64,
    /// Where the discarded bytes of a corrupt tail were kept, if any.
    pub preserved: Option<PathBuf>,
    /// The journal was already covered by the snapshot (a crash during compaction) and skipped.
    pub stale_journal: bool,
}

/// Everything open needs from disk.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) entries: BTreeMap<EntryId, Entry>,
    pub(crate) journal: File,
    pub(crate) journal_len: u64,
    pub(crate) generation: u64,
    pub(crate) report: RecoveryReport,
}

fn apply(entries: &mut BTreeMap<EntryId, Entry>, record: Record) {
    match record {
        Record::Push(entry) => {
            entries.insert(entry.id, entry);
        }
        Record::Remove(id) => {
            entries.remove(&id);
        }
        Record::Update(update) => {
            if let Some(entry) = entries.get_mut(&update.id) {
                entry.error_class = update.error_class;
                entry.message = update.message;
                entry.attempts = update.attempts;
                entry.last_failure_ms = update.last_failure_ms;
                entry.redrive_count = update.redrive_count;
            }
        }
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, OpenError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_err(path)(err)),
    }
}

fn preserve(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, OpenError> {
    let corrupt = dir.join(CORRUPT_DIR);
    fs::create_dir_all(&corrupt).map_err(io_err(&corrupt))?;
    let path = corrupt.join(name);
    let mut file = File::create(&path).map_err(io_err(&path))?;
    file.write_all(bytes).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    sync_dir(&corrupt).map_err(io_err(&corrupt))?;
    Ok(path)
}

/// Reads the snapshot and the journal, repairs the journal's tail and returns the state.
pub(crate) fn load(dir: &Path) -> Result<Loaded, OpenError> {
    let mut report = RecoveryReport::default();
    let mut entries = BTreeMap::new();
    for leftover in [
        format!("{SNAPSHOT_FILE}.tmp"),
        format!("{JOURNAL_FILE}.tmp"),
    ] {
        let path = dir.join(leftover);
        if path.exists() {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }

    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let mut covered = 0;
    if let Some(bytes) = read_optional(&snapshot_path)? {
        covered =
            parse_header(SNAPSHOT_MAGIC, &bytes).map_err(|reason| OpenError::CorruptSnapshot {
                path: snapshot_path.clone(),
                reason,
            })?;
        let scan = codec::scan(&bytes, HEADER_LEN);
        report.snapshot_records = scan.records.len();
        report.corrupt_records += scan.skipped;
        if scan.tail.is_some() {
            // The snapshot is replaced atomically, so a bad tail is damage: keep a copy, load
            // what is readable, and let the next compaction write a fresh one.
            let name = format!("snapshot-{}.bin", covered);
            report.preserved = Some(preserve(dir, &name, &bytes)?);
            report.corrupt_tail = true;
            tracing::error!(path = %snapshot_path.display(), offset = scan.valid_len, "dlq snapshot has a corrupt tail; loaded the readable part and kept a copy");
        }
        for record in scan.records {
            apply(&mut entries, record);
        }
    }

    let journal_path = dir.join(JOURNAL_FILE);
    let journal_bytes = read_optional(&journal_path)?;
    let mut generation = covered + 1;
    let mut keep = None;
    match journal_bytes {
        None => {}
        Some(bytes) => match parse_header(JOURNAL_MAGIC, &bytes) {
            Ok(journal_generation) if journal_generation <= covered => {
                report.stale_journal = true;
                tracing::info!(
                    journal_generation,
                    covered,
                    "dlq journal already covered by the snapshot; starting a new one"
                );
            }
            Ok(journal_generation) => {
                generation = journal_generation;
                keep = Some(bytes);
            }
            Err(reason) => {
                // The journal is created atomically, so a bad header is damage: keep it aside.
                let path = preserve(dir, "journal-header.bin", &bytes)?;
                tracing::error!(reason, preserved = %path.display(), "dlq journal header is unreadable; starting a new journal");
                report.preserved = Some(path);
                report.corrupt_tail = true;
                report.truncated_bytes = bytes.len() as u64;
            }
        },
    }

    let Some(bytes) = keep else {
        let journal = new_journal(dir, generation).map_err(io_err(&journal_path))?;
        report.entries = entries.len();
        return Ok(Loaded {
            entries,
            journal,
            journal_len: HEADER_LEN as u64,
            generation,
            report,
        });
    };

    let scan = codec::scan(&bytes, HEADER_LEN);
    report.journal_records = scan.records.len();
    report.corrupt_records += scan.skipped;
    for record in scan.records {
        apply(&mut entries, record);
    }
    let journal = OpenOptions::new()
        .append(true)
        .open(&journal_path)
        .map_err(io_err(&journal_path))?;
    if let Some(kind) = scan.tail {
        let discarded = bytes.get(scan.valid_len..).unwrap_or_default();
        report.truncated_bytes = discarded.len() as u64;
        match kind {
            TailKind::Torn => report.torn_tail = true,
            TailKind::Corrupt => {
                report.corrupt_tail = true;
                let name = format!("journal-{generation}-at-{}.bin", scan.valid_len);
                report.preserved = Some(preserve(dir, &name, discarded)?);
            }
        }
        journal
            .set_len(scan.valid_len as u64)
            .map_err(io_err(&journal_path))?;
        journal.sync_all().map_err(io_err(&journal_path))?;
        tracing::warn!(
            path = %journal_path.display(),
            offset = scan.valid_len,
            truncated_bytes = report.truncated_bytes,
            kind = ?kind,
            "dlq journal tail truncated on open"
        );
    }
    if scan.skipped > 0 {
        tracing::error!(path = %journal_path.display(), skipped = scan.skipped, "dlq journal records failed their checksum and were skipped");
    }
    report.entries = entries.len();
    Ok(Loaded {
        entries,
        journal,
        journal_len: scan.valid_len as u64,
        generation,
        report,
    })
}
