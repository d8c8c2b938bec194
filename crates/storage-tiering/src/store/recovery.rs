//! Local segment files at open: verification, leftovers of crashed compactions, rebuilds from the WAL.

use std::collections::BTreeMap;
use std::fs::{self};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::collection::{Collection, Durability, Residency, Segment, SegmentState};
use crate::error::{OpenError, SegmentError};
use crate::segment::{self, Entry, FOOTER_LEN, SegmentMeta};
use crate::wal::{self};

use super::*;

pub(super) type Scanned = Vec<(
    PathBuf,
    SegmentMeta,
    Vec<(String, Entry)>,
    Vec<segment::BlockRef>,
)>;

/// A local segment file that failed verification.
#[derive(Debug)]
pub(super) struct Damaged {
    pub(super) path: PathBuf,
    pub(super) id: String,
    /// The footer, when it (and its own checksum) survived: it gives the LSN range to rebuild.
    pub(super) footer: Option<segment::Footer>,
    pub(super) error: SegmentError,
}

/// Reads and verifies the collection's local segment files (blocking); deletes temp files and
/// files of an older incarnation. Files that fail verification are returned apart; a file
/// compressed with a codec this build leaves out fails the scan with
/// [`OpenError::MissingFeature`].
pub(super) fn scan_segments(
    dir: &Path,
    incarnation: u64,
) -> Result<(Scanned, Vec<Damaged>), OpenError> {
    let mut out = Vec::new();
    let mut damaged = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((out, damaged)),
        Err(error) => return Err(io_open(dir)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(io_open(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((file_incarnation, id)) =
            name.strip_suffix(".seg").and_then(|n| n.split_once('-'))
        else {
            let _ = fs::remove_file(&path);
            continue;
        };
        if file_incarnation.parse::<u64>().ok() != Some(incarnation) {
            let _ = fs::remove_file(&path);
            continue;
        }
        let bytes = fs::read(&path).map_err(io_open(&path))?;
        let (records, footer, index) = match segment::decode_all(&bytes) {
            Ok(decoded) => decoded,
            // Blocks under a codec this build leaves out are intact: the file must not be set
            // aside, rebuilt or deleted as a damaged one would be, so the open stops here.
            Err(SegmentError::MissingFeature(missing)) => {
                return Err(OpenError::MissingFeature(crate::MissingFeature {
                    feature: missing.feature,
                    needed_for: format!(
                        "local segment {} ({})",
                        path.display(),
                        missing.needed_for
                    ),
                }));
            }
            Err(error) => {
                let footer = bytes
                    .len()
                    .checked_sub(FOOTER_LEN)
                    .and_then(|at| segment::decode_footer(bytes.get(at..)?).ok());
                damaged.push(Damaged {
                    path,
                    id: id.to_owned(),
                    footer,
                    error,
                });
                continue;
            }
        };
        let meta = SegmentMeta {
            id: id.to_owned(),
            size: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
            min_lsn: footer.min_lsn,
            max_lsn: footer.max_lsn,
            records: footer.records,
            write_id: ulid::Ulid::from(footer.write_id).to_string(),
        };
        out.push((path, meta, records, index));
    }
    Ok((out, damaged))
}

/// Whether the segment over `min..=max` (`itself`, when it is in `segments`) is a leftover of a
/// compaction a crash cut short, whose records another segment holds: an uncommitted segment
/// that overlaps a committed one (an output whose commit never happened: its inputs are still
/// committed), or a settled segment inside another's larger range (an input whose deletion never
/// happened: the output was written durably first).
pub(super) fn superseded(
    segments: &[Arc<Segment>],
    min: u64,
    max: u64,
    itself: Option<&Arc<Segment>>,
) -> bool {
    let own = itself.map(|s| s.durability());
    segments
        .iter()
        .filter(|other| itself.is_none_or(|s| !Arc::ptr_eq(s, other)))
        .any(|other| {
            let (o_min, o_max) = (other.meta.min_lsn, other.meta.max_lsn);
            let overlaps = o_min <= max && min <= o_max;
            let contains = o_min <= min && max <= o_max && (o_min, o_max) != (min, max);
            match (own, other.durability()) {
                (Some(Durability::Pending) | None, Durability::Committed) => overlaps,
                (Some(Durability::Local) | None, Durability::Local) => contains,
                _ => false,
            }
        })
}

/// Moves a damaged file under `quarantine` (blocking).
pub(super) fn quarantine_file(
    path: &Path,
    collection: &str,
    quarantine: &Path,
) -> std::io::Result<()> {
    let kept = quarantine.join(format!(
        "{collection}-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    fs::create_dir_all(quarantine)?;
    fs::rename(path, kept)?;
    wal::sync_dir(quarantine)
}

/// The entries of `collection`'s segment over `min..=max`, rebuilt from WAL records in LSN order
/// (the newest record of an id wins, as it did in the memtable).
pub(crate) fn rebuild_entries<'a>(
    records: impl IntoIterator<Item = &'a wal::WalRecord>,
    collection: &Collection,
    (min, max): (u64, u64),
) -> Vec<(String, Entry)> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for record in records {
        if record.collection != collection.name
            || record.incarnation != collection.incarnation
            || !(min..=max).contains(&record.lsn)
        {
            continue;
        }
        for (id, value) in &record.entries {
            entries.insert(
                id.clone(),
                Entry {
                    lsn: record.lsn,
                    value: value.clone(),
                },
            );
        }
    }
    entries.into_iter().collect()
}

/// Rebuilds a damaged local segment from the WAL records of its LSN range (blocking): keeps the
/// damaged file under `quarantine`, writes the rebuilt one in its place. When its footer (and so
/// its range) is lost too, a segment that was waiting for upload (`waiting`: the WAL keeps every
/// record from its first on) is rebuilt from the collection's WAL records that no segment in
/// `valid` (the LSN ranges of the others) covers, below the newest of them; the records above
/// are replayed into the memtable as usual (`None`). Refused (the open fails with
/// [`OpenError::CorruptSegment`]) when the WAL no longer holds all of its records, or cannot say.
pub(super) fn rebuild_damaged(
    records: &[wal::WalRecord],
    collection: &Collection,
    file: Damaged,
    (valid, waiting): (&[(u64, u64)], bool),
    (block_bytes, codec): (usize, crate::config::Compression),
    quarantine: &Path,
) -> Result<Option<Arc<Segment>>, OpenError> {
    let refuse = |file: Damaged| OpenError::CorruptSegment {
        path: file.path,
        source: file.error,
    };
    let (range, expected, write_id) = match &file.footer {
        Some(footer) => (
            (footer.min_lsn, footer.max_lsn),
            Some(footer.records),
            footer.write_id,
        ),
        None if waiting => {
            let top = valid.iter().map(|(_, max)| *max).max().unwrap_or(0);
            let uncovered: Vec<u64> = records
                .iter()
                .filter(|r| {
                    r.collection == collection.name && r.incarnation == collection.incarnation
                })
                .map(|r| r.lsn)
                .filter(|lsn| *lsn < top && !valid.iter().any(|(a, b)| (*a..=*b).contains(lsn)))
                .collect();
            let (Some(&min), Some(&max)) = (uncovered.iter().min(), uncovered.iter().max()) else {
                // Everything it held is above the other segments: replay brings it back.
                tracing::warn!(path = %file.path.display(), error = %file.error, "a damaged segment's records are all in the wal beyond the other segments; replaying them");
                quarantine_file(&file.path, &collection.name, quarantine)
                    .map_err(io_open(&file.path))?;
                return Ok(None);
            };
            if valid.iter().any(|(a, b)| min < *a && *b < max) {
                // Records of two gaps: more than this one segment is missing.
                return Err(refuse(file));
            }
            ((min, max), None, u128::from(ulid::Ulid::generate()))
        }
        None => return Err(refuse(file)),
    };
    let entries = rebuild_entries(records, collection, range);
    if expected.is_some_and(|expected| entries.len() as u64 != expected) || entries.is_empty() {
        tracing::error!(path = %file.path.display(), ?expected, found = entries.len(), "a damaged segment cannot be rebuilt: the wal no longer holds all of its records");
        return Err(refuse(file));
    }
    let (bytes, _) = segment::encode(&entries, block_bytes, write_id, Some(range), codec);
    quarantine_file(&file.path, &collection.name, quarantine)
        .and_then(|()| write_atomic(&file.path, &bytes))
        .map_err(io_open(&file.path))?;
    tracing::warn!(path = %file.path.display(), kept = %quarantine.display(), error = %file.error, records = entries.len(), "rebuilt a damaged local segment from the wal");
    let meta = SegmentMeta {
        id: file.id,
        size: bytes.len() as u64,
        crc32c: crc32c::crc32c(&bytes),
        min_lsn: range.0,
        max_lsn: range.1,
        records: entries.len() as u64,
        write_id: ulid::Ulid::from(write_id).to_string(),
    };
    Ok(Some(Arc::new(Segment {
        meta,
        local_path: file.path,
        state: Mutex::new(SegmentState {
            residency: Residency::Resident(Arc::new(entries)),
            durability: Durability::Pending,
            has_local_file: true,
        }),
    })))
}
