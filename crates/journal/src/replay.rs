//! Recovery at open: read every segment, tell a torn tail from corruption, repair, and return
//! the entries with a typed report.
//!
//! The rule (decision 0077): a damaged region with no valid frame anywhere after it, in its
//! segment or a later one, is a torn tail, the write a crash interrupted: it is truncated
//! quietly. A damaged region followed by a valid frame is corruption of acknowledged data:
//! refused ([`RecoveryMode::Refuse`]) or recovered around ([`RecoveryMode::SkipCorrupt`]: the
//! segment is copied to `corrupt/` and rewritten with every valid frame it holds). Nothing is
//! changed on disk before that decision, so a refused open leaves the directory as it found it.

use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use crate::config::{JournalConfig, RecoveryMode};
use crate::durable::{create_dir_durable, write_atomic};
use crate::error::OpenError;
use crate::frame::{self, HEADER_LEN, Scan};
use crate::fs::{FileHandle, FileSystem, OpenMode, SyncSite};
use crate::lsn::Lsn;
use crate::poisoned;
use crate::segment::{self, SegmentInfo};

/// The folder of the journal directory that keeps copies of damaged segments.
pub const CORRUPT_DIR: &str = "corrupt";

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its LSN.
    pub lsn: Lsn,
    /// What was appended.
    pub payload: Vec<u8>,
}

/// What opening a journal found: the entries, in LSN order, and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Every entry in the log, oldest first. Each is durable when `open` returns, so a caller may
    /// act on it (a crashed process may have left frames that were written but never synced;
    /// opening syncs them).
    pub entries: Vec<Entry>,
    /// What recovery found and did.
    pub report: ReplayReport,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Segment files read.
    pub segments: usize,
    /// Entries returned.
    pub entries: u64,
    /// Frames left out because their write had failed before a restart (their writers were
    /// told so; see [`WriteError::Failed`](crate::WriteError::Failed)).
    pub skipped_failed_writes: u64,
    /// The torn tail truncated, if there was one.
    pub torn_tail: Option<TornTail>,
    /// The damage recovered around ([`RecoveryMode::SkipCorrupt`] only; with
    /// [`RecoveryMode::Refuse`] corruption is an error).
    pub corruption: Vec<Corruption>,
}

/// How a replay ended, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayOutcome<'a> {
    /// Every byte read as a valid frame.
    Clean,
    /// An incomplete write at the end of the log was truncated; nothing acknowledged is lost.
    TornTailTruncated(&'a TornTail),
    /// Damaged frames followed by valid ones were skipped, and acknowledged data may be lost
    /// (a torn tail may have been truncated as well).
    CorruptionSkipped(&'a [Corruption]),
}

impl ReplayReport {
    /// How the replay ended.
    #[must_use]
    pub fn outcome(&self) -> ReplayOutcome<'_> {
        match (&self.torn_tail, self.corruption.is_empty()) {
            (_, false) => ReplayOutcome::CorruptionSkipped(&self.corruption),
            (Some(torn), true) => ReplayOutcome::TornTailTruncated(torn),
            (None, true) => ReplayOutcome::Clean,
        }
    }
}

/// A torn tail: bytes at the end of the log with no valid frame after them, truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The segment it starts in (later segments, holding no valid frame, were emptied too).
    pub file: PathBuf,
    /// Where it starts.
    pub offset: u64,
    /// Non-zero bytes cut.
    pub bytes: u64,
}

/// A damaged region followed by valid frames, recovered around.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Corruption {
    /// The damaged segment.
    pub file: PathBuf,
    /// Where the damage starts.
    pub offset: u64,
    /// Bytes of the damaged region (up to the next valid frame).
    pub bytes: u64,
    /// Valid frames after the damage, in this segment and the later ones.
    pub valid_frames_after: u64,
    /// The LSNs between the last valid frame before the damage and the first after it: the
    /// entries that may have been lost (`None` when the two are consecutive).
    pub lost_lsns: Option<RangeInclusive<Lsn>>,
    /// The LSN of the last valid frame before the damage ([`Lsn::ZERO`] when none).
    pub lsn_before: Lsn,
    /// The LSN of the first valid frame after the damage.
    pub lsn_after: Option<Lsn>,
    /// Where the damaged segment's original bytes were kept.
    pub moved_to: PathBuf,
}

/// Everything the journal needs from recovery.
pub(crate) struct Recovered {
    pub(crate) replay: Replay,
    pub(crate) segments: Vec<SegmentInfo>,
    pub(crate) active: Box<dyn FileHandle>,
    pub(crate) next_lsn: u64,
}

struct Loaded {
    seq: u64,
    path: PathBuf,
    len: usize,
    /// Bytes up to the last non-zero one.
    non_zero: usize,
    /// The file's bytes, kept only when it is damaged (to be copied and rewritten).
    damaged: Option<Vec<u8>>,
    scan: Scan,
    /// Its entries, failed writes left out.
    entries: Vec<Entry>,
}

/// A damaged region followed by valid frames.
struct Spot {
    file: usize,
    damage: Range<usize>,
    after: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Recovers the journal in `dir` (which exists and is locked).
#[allow(clippy::too_many_lines)] // Recovery is one sequence of steps; splitting it hides the order.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    config: &JournalConfig,
    failed: &[(u64, u64)],
) -> Result<Recovered, OpenError> {
    let mut seqs: Vec<u64> = fs
        .read_dir(dir)
        .map_err(io_error(dir))?
        .iter()
        .filter_map(|name| segment::parse_name(name))
        .collect();
    seqs.sort_unstable();
    let mut files = Vec::with_capacity(seqs.len());
    let mut skipped_failed_writes = 0;
    let mut last_lsn = 0;
    for seq in seqs {
        let path = segment::path(dir, seq);
        let data = fs.read(&path).map_err(io_error(&path))?;
        let scan = frame::scan(&data, last_lsn);
        last_lsn = scan
            .frames
            .iter()
            .map(|frame| frame.lsn)
            .chain(scan.base.map(|base| base.saturating_sub(1)))
            .fold(last_lsn, u64::max);
        let mut entries = Vec::with_capacity(scan.frames.len());
        for frame in &scan.frames {
            if poisoned::contains(failed, frame.lsn) {
                skipped_failed_writes += 1;
            } else {
                entries.push(Entry {
                    lsn: Lsn::new(frame.lsn),
                    payload: data[frame.payload.clone()].to_vec(),
                });
            }
        }
        files.push(Loaded {
            seq,
            path,
            len: data.len(),
            non_zero: data
                .iter()
                .rposition(|byte| *byte != 0)
                .map_or(0, |last| last + 1),
            damaged: (!scan.damage.is_empty()).then_some(data),
            scan,
            entries,
        });
    }

    // Every valid frame in log order, to count what follows a damaged region and to name the
    // LSNs around it.
    let frames: Vec<(usize, usize, u64)> = files
        .iter()
        .enumerate()
        .flat_map(|(index, file)| {
            file.scan
                .frames
                .iter()
                .map(move |frame| (index, frame.offset, frame.lsn))
        })
        .collect();
    let position = |file: usize, offset: usize| {
        frames.partition_point(|(index, at, _)| (*index, *at) < (file, offset))
    };
    let mut spots = Vec::new();
    let mut torn = None;
    'files: for (index, file) in files.iter().enumerate() {
        for damage in &file.scan.damage {
            let after = (frames.len() - position(index, damage.start)) as u64;
            if after == 0 {
                torn = Some((index, damage.clone()));
                break 'files;
            }
            spots.push(Spot {
                file: index,
                damage: damage.clone(),
                after,
            });
        }
    }
    if config.recovery == RecoveryMode::Refuse
        && let Some(first) = spots.first()
    {
        let file = &files[first.file];
        tracing::error!(path = %file.path.display(), offset = first.damage.start, valid_frames_after = first.after, "journal segment is damaged and valid frames follow; refusing to open");
        return Err(OpenError::Corrupt {
            file: file.path.clone(),
            offset: first.damage.start as u64,
            valid_frames_after: first.after,
        });
    }

    let mut report = ReplayReport {
        segments: files.len(),
        skipped_failed_writes,
        ..ReplayReport::default()
    };
    let entries: Vec<Entry> = files
        .iter_mut()
        .flat_map(|file| std::mem::take(&mut file.entries))
        .collect();
    report.entries = entries.len() as u64;
    if report.skipped_failed_writes > 0 {
        tracing::warn!(
            frames = report.skipped_failed_writes,
            "skipped journal frames whose write had failed before the restart"
        );
    }
    let max_lsn = frames
        .iter()
        .map(|(_, _, lsn)| *lsn)
        .chain(failed.iter().map(|(_, last)| *last))
        .chain(
            files
                .iter()
                .filter_map(|file| file.scan.base.map(|base| base.saturating_sub(1))),
        )
        .max()
        .unwrap_or(0);
    let next_lsn = max_lsn + 1;

    // Corruption (SkipCorrupt): keep a copy of each damaged segment, then rewrite it with its
    // valid frames. A crash in between leaves the damaged segment in place, to be handled again.
    let mut moved: Vec<Option<PathBuf>> = vec![None; files.len()];
    for spot in &spots {
        let file = &files[spot.file];
        let at = position(spot.file, spot.damage.start);
        let before = at.checked_sub(1).map(|index| frames[index].2);
        let next = frames.get(at).map(|frame| frame.2);
        let lost_lsns = match (before.unwrap_or(0) + 1, next) {
            (first, Some(next)) if first < next => Some(Lsn::new(first)..=Lsn::new(next - 1)),
            _ => None,
        };
        let moved_to = match &moved[spot.file] {
            Some(moved_to) => moved_to.clone(),
            None => {
                // A file with a damaged region kept its bytes.
                let data = file.damaged.as_deref().unwrap_or_default();
                let moved_to = preserve(fs, dir, &file.path, data)?;
                let base = file
                    .scan
                    .base
                    .or_else(|| file.scan.frames.first().map(|frame| frame.lsn))
                    .unwrap_or(next_lsn);
                let mut clean = frame::header(base).to_vec();
                for frame in &file.scan.frames {
                    clean.extend_from_slice(&data[frame.offset..frame.end]);
                }
                write_atomic(fs, &file.path, &clean)?;
                moved[spot.file] = Some(moved_to.clone());
                moved_to
            }
        };
        tracing::error!(path = %file.path.display(), offset = spot.damage.start, bytes = spot.damage.len(), valid_frames_after = spot.after, lost_lsns = ?lost_lsns, moved_to = %moved_to.display(), "journal segment was damaged; recovered every valid frame around the damage");
        report.corruption.push(Corruption {
            file: file.path.clone(),
            offset: spot.damage.start as u64,
            bytes: spot.damage.len() as u64,
            valid_frames_after: spot.after,
            lost_lsns,
            lsn_before: Lsn::new(before.unwrap_or(0)),
            lsn_after: next.map(Lsn::new),
            moved_to,
        });
    }

    // The length of each segment once repaired.
    let rewritten: Vec<bool> = moved.iter().map(Option::is_some).collect();
    let mut lengths: Vec<u64> = files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            if rewritten[index] {
                (HEADER_LEN
                    + file
                        .scan
                        .frames
                        .iter()
                        .map(|f| f.end - f.offset)
                        .sum::<usize>()) as u64
            } else {
                file.len as u64
            }
        })
        .collect();

    // A torn tail: cut it, and empty every later segment (none holds a valid frame).
    let mut to_sync: Vec<usize> = Vec::new();
    if let Some((index, damage)) = &torn {
        let file = &files[*index];
        let cut = if damage.start < HEADER_LEN {
            0
        } else {
            damage.start
        };
        let later: usize = files[index + 1..].iter().map(|later| later.non_zero).sum();
        let bytes = (damage.len() + later) as u64;
        tracing::warn!(path = %file.path.display(), offset = damage.start, bytes, "truncating the torn tail of the journal");
        report.torn_tail = Some(TornTail {
            file: file.path.clone(),
            offset: damage.start as u64,
            bytes,
        });
        if !rewritten[*index] {
            lengths[*index] = cut as u64;
            to_sync.push(*index);
        }
        for (later, length) in lengths.iter_mut().enumerate().skip(index + 1) {
            if *length > 0 {
                *length = 0;
                to_sync.push(later);
            }
        }
    }

    // Truncate and sync: each truncated segment, and the last one, whose frames replay just
    // returned (a crashed process may have left them unsynced).
    let last = files.len().checked_sub(1);
    if let Some(last) = last
        && !to_sync.contains(&last)
    {
        to_sync.push(last);
    }
    let mut active = None;
    for index in to_sync {
        let file = &files[index];
        let handle = fs
            .open(&file.path, OpenMode::Existing)
            .map_err(io_error(&file.path))?;
        if lengths[index] != file.len as u64 && !rewritten[index] {
            handle
                .set_len(lengths[index])
                .map_err(io_error(&file.path))?;
        }
        handle
            .sync(SyncSite::Recover)
            .map_err(io_error(&file.path))?;
        if Some(index) == last {
            active = Some(handle);
        }
    }

    // What the journal keeps of each segment.
    let mut segments = Vec::with_capacity(files.len() + 1);
    let mut previous_last = 0;
    for (index, file) in files.iter().enumerate() {
        let last_lsn = file
            .scan
            .frames
            .last()
            .map(|frame| frame.lsn)
            .or_else(|| file.scan.base.map(|base| base.saturating_sub(1)))
            .unwrap_or(previous_last);
        previous_last = last_lsn;
        let end = if rewritten[index] {
            lengths[index]
        } else {
            file.scan
                .frames
                .last()
                .map_or(HEADER_LEN as u64, |frame| frame.end as u64)
                .min(lengths[index])
        };
        segments.push(SegmentInfo {
            seq: file.seq,
            path: file.path.clone(),
            last_lsn,
            end,
            allocated: lengths[index],
        });
    }

    // The active segment: the last one, or a new one when there is none or the last holds no
    // header (emptied above, or created by a crash before its header reached the disk).
    let last_is_empty = match (files.last(), last) {
        (Some(file), Some(index)) => {
            lengths[index] < HEADER_LEN as u64 || (file.scan.base.is_none() && !rewritten[index])
        }
        _ => true,
    };
    let active = match (active, segments.last_mut()) {
        (Some(handle), Some(_)) if !last_is_empty => handle,
        (_, Some(info)) => {
            let (handle, allocated) = segment::create(
                fs,
                &info.path,
                next_lsn,
                config.preallocate_bytes,
                OpenMode::Truncate,
            )?;
            info.last_lsn = next_lsn - 1;
            info.end = HEADER_LEN as u64;
            info.allocated = allocated;
            handle
        }
        (_, None) => {
            let path = segment::path(dir, 1);
            let (handle, allocated) = segment::create(
                fs,
                &path,
                next_lsn,
                config.preallocate_bytes,
                OpenMode::CreateNew,
            )?;
            segments.push(SegmentInfo {
                seq: 1,
                path,
                last_lsn: next_lsn - 1,
                end: HEADER_LEN as u64,
                allocated,
            });
            handle
        }
    };
    fs.sync_dir(dir, SyncSite::OpenDir).map_err(io_error(dir))?;
    Ok(Recovered {
        replay: Replay { entries, report },
        segments,
        active,
        next_lsn,
    })
}

/// Keeps a copy of a damaged segment under `corrupt/`, durably, and returns its path.
fn preserve(
    fs: &dyn FileSystem,
    dir: &Path,
    path: &Path,
    data: &[u8],
) -> Result<PathBuf, OpenError> {
    let corrupt = dir.join(CORRUPT_DIR);
    create_dir_durable(fs, &corrupt)?;
    let existing = fs.read_dir(&corrupt).map_err(io_error(&corrupt))?;
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut candidate = name.clone();
    let mut copies = 0;
    while existing.iter().any(|taken| *taken == *candidate) {
        copies += 1;
        candidate = format!("{name}.{copies}");
    }
    let target = corrupt.join(candidate);
    let file = fs
        .open(&target, OpenMode::CreateNew)
        .map_err(io_error(&target))?;
    file.write_at(0, data).map_err(io_error(&target))?;
    file.sync(SyncSite::CorruptCopy)
        .map_err(io_error(&target))?;
    drop(file);
    fs.sync_dir(&corrupt, SyncSite::CorruptDir)
        .map_err(io_error(&corrupt))?;
    Ok(target)
}
