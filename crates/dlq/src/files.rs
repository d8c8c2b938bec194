//! Files in the DLQ directory, the snapshot format and the recovery report.
//!
//! ```text
//! LOCK           the directory lock (mainstay_journal::DirLock), held while the DLQ is open
//! log/           the journal: a mainstay_journal::Journal, one record per entry
//! snapshot       header | records | crc32c   written by compaction with write_atomic
//! archive.jsonl  one JSON entry view a line  evicted and expired entries
//! archive.jsonl.tmp  the archive being rewritten by Dlq::erase_archived (removed at open)
//! corrupt/       copies of a damaged snapshot or of damaged pre-journal files
//! ```
//!
//! The snapshot covers the journal up to an LSN: its header holds that LSN, and replay skips
//! every journal entry at or below it. Compaction writes the snapshot, then trims the journal's
//! segments it covers. A pre-journal directory (a `journal` file, a snapshot with the old magic)
//! is migrated at open: see `legacy` and `dlq::open`.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mainstay_journal::RecoverySummary;

use crate::codec::{self, Record};
use crate::entry::Entry;

/// The journal's directory, under the DLQ's.
pub(crate) const LOG_DIR: &str = "log";
/// The snapshot.
pub(crate) const SNAPSHOT_FILE: &str = "snapshot";
/// The pre-journal journal file (migrated at open).
pub(crate) const LEGACY_JOURNAL_FILE: &str = "journal";
/// The archive of evicted and expired entries.
pub(crate) const ARCHIVE_FILE: &str = "archive.jsonl";
/// The archive being rewritten ([`Dlq::erase_archived`](crate::Dlq::erase_archived)); a copy
/// left by a crash before its rename is removed at open.
pub(crate) const ARCHIVE_TEMP_FILE: &str = "archive.jsonl.tmp";
/// Copies of damaged files.
pub(crate) const CORRUPT_DIR: &str = "corrupt";

const SNAPSHOT_MAGIC: &[u8; 8] = b"MSDLQSN2";
const SNAPSHOT_VERSION: u32 = 2;
const HEADER_LEN: usize = 24;
const TRAILER_LEN: usize = 4;

/// Encodes a snapshot of `entries` that covers the journal up to `covered`:
/// `magic | u32 version | u64 covered | crc32c(header)`, then each record as
/// `u32 len | record`, then the crc32c of everything before it.
pub(crate) fn encode_snapshot(entries: &[Arc<Entry>], covered: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + TRAILER_LEN + entries.len() * 160);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&covered.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    let mut record = Vec::new();
    for entry in entries {
        record.clear();
        codec::encode_push(entry, &mut record);
        out.extend_from_slice(
            &u32::try_from(record.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        out.extend_from_slice(&record);
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Whether `bytes` start like a snapshot of this format (as opposed to a pre-journal one).
pub(crate) fn is_snapshot(bytes: &[u8]) -> bool {
    bytes.starts_with(SNAPSHOT_MAGIC)
}

/// A snapshot as read.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The last journal LSN it covers.
    pub(crate) covered: u64,
    /// Its records, in order, as far as they could be read.
    pub(crate) records: Vec<Record>,
    /// Why the file failed its checks, if it did (the records are then those before the
    /// first one that did not decode).
    pub(crate) damage: Option<&'static str>,
}

/// Decodes a snapshot. A header that does not check out is `Err`: nothing in the file can be
/// trusted then, not even the LSN it covers.
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, &'static str> {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err("header is shorter than 24 bytes");
    };
    if !is_snapshot(header) {
        return Err("wrong magic bytes");
    }
    let crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    if crc32c::crc32c(&header[..20]) != crc {
        return Err("header checksum mismatch");
    }
    if u32::from_le_bytes([header[8], header[9], header[10], header[11]]) != SNAPSHOT_VERSION {
        return Err("unsupported format version");
    }
    let mut covered = [0; 8];
    covered.copy_from_slice(&header[12..20]);
    let covered = u64::from_le_bytes(covered);
    let mut damage = None;
    let body_end = bytes.len().saturating_sub(TRAILER_LEN).max(HEADER_LEN);
    match bytes.get(body_end..) {
        Some(trailer) if trailer.len() == TRAILER_LEN => {
            let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
            if crc32c::crc32c(&bytes[..body_end]) != crc {
                damage = Some("checksum mismatch");
            }
        }
        _ => damage = Some("the file is cut short"),
    }
    let mut records = Vec::new();
    let mut rest = &bytes[HEADER_LEN..body_end];
    while !rest.is_empty() {
        let Some(len) = rest.get(..4) else {
            damage.get_or_insert("a record is cut short");
            break;
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(record) = rest.get(4..4 + len).and_then(codec::decode) else {
            damage.get_or_insert("a record does not decode");
            break;
        };
        records.push(record);
        rest = &rest[4 + len..];
    }
    Ok(Snapshot {
        covered,
        records,
        damage,
    })
}

/// fsyncs a directory so that an entry created in it is durable (for the archive, which is
/// written with std's file system).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
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

/// What recovery found on open ([`Dlq::recovery`](crate::Dlq::recovery)); [`DlqRecovery::summary`]
/// gives it in the terms every mainstay store uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DlqRecovery {
    /// Entries loaded.
    pub entries: usize,
    /// Records read from the snapshot.
    pub snapshot_records: usize,
    /// Records replayed from the journal (those the snapshot does not cover).
    pub journal_records: usize,
    /// Records lost to damage that `journal_recovery = "skip_corrupt"` recovered around: the
    /// journal entries between the last valid frame before each damaged region and the first
    /// after it, journal entries that did not decode, and records of a damaged snapshot or of
    /// damaged pre-journal files.
    pub corrupt_records: u64,
    /// A torn tail (an incomplete last write, nothing valid after it) was truncated.
    pub torn_tail: bool,
    /// Pre-journal files only (migration): a file ended in a bad frame, which the old format
    /// could not tell from damage. Damage of the journal is reported in `corrupt_records`.
    pub corrupt_tail: bool,
    /// Bytes cut from the end of the journal.
    pub truncated_bytes: u64,
    /// Where the last damaged file's original bytes were kept (`corrupt/` of the journal or of
    /// the DLQ directory), if any.
    pub preserved: Option<PathBuf>,
    /// The journal still held entries the snapshot covers (a crash between a compaction's
    /// snapshot and its trim, or entries sharing the active segment); they were skipped.
    pub stale_journal: bool,
    /// The directory was written by the pre-journal format and migrated at this open.
    pub migrated: bool,
}

impl DlqRecovery {
    /// The recovery in the terms every mainstay store reports it (the record store's
    /// `StoreRecovery::summary` gives the same): records read back from the snapshot and the
    /// journal, records lost to skipped damage, bytes of a torn tail cut, the damaged file kept.
    #[must_use]
    pub fn summary(&self) -> RecoverySummary {
        let mut summary = RecoverySummary::default();
        summary.recovered_records =
            u64::try_from(self.snapshot_records + self.journal_records).unwrap_or(u64::MAX);
        summary.lost_records = self.corrupt_records;
        summary.truncated_bytes = self.truncated_bytes;
        summary.preserved.extend(self.preserved.clone());
        summary
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ulid::Ulid;

    use super::*;
    use crate::entry::{EntryId, FailureClass, InlinePayload, Payload, SCHEMA_VERSION};

    fn entry(n: u8) -> Arc<Entry> {
        Arc::new(Entry {
            id: EntryId::from_ulid(Ulid::from_parts(1_000 + u64::from(n), u128::from(n))),
            queue: "q".into(),
            key: format!("k{n}"),
            payload: Payload::Inline(InlinePayload::new(Bytes::from(vec![n; 40]))),
            error_class: FailureClass::Transient,
            message: "boom".into(),
            attempts: 3,
            first_failure_ms: 1,
            last_failure_ms: 2,
            expires_at_ms: None,
            redrive_count: 0,
            schema_version: SCHEMA_VERSION,
        })
    }

    #[test]
    fn a_snapshot_round_trips_and_damage_is_found() {
        let bytes = encode_snapshot(&[entry(1), entry(2)], 42);
        let snapshot = decode_snapshot(&bytes).unwrap();
        assert_eq!((snapshot.covered, snapshot.records.len()), (42, 2));
        assert_eq!(snapshot.damage, None);

        let mut flipped = bytes.clone();
        let last_record = flipped.len() - 10;
        flipped[last_record] ^= 1;
        let snapshot = decode_snapshot(&flipped).unwrap();
        assert_eq!(snapshot.damage, Some("checksum mismatch"));

        let mut header = bytes.clone();
        header[14] ^= 1;
        assert_eq!(
            decode_snapshot(&header).unwrap_err(),
            "header checksum mismatch"
        );
        let cut = decode_snapshot(&bytes[..bytes.len() - 1]).unwrap();
        assert!(cut.damage.is_some());
        assert!(
            decode_snapshot(&encode_snapshot(&[], 0))
                .unwrap()
                .records
                .is_empty()
        );
    }
}
