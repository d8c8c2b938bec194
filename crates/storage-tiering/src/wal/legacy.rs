//! A read-only reader of the WAL format from before the move onto `mainstay-journal` (decision
//! 0082): `NNNNNNNNNNNNNNNNNNNN.wal` files of frames `u32 payload length | u32
//! crc32c(payload) | payload`, payload `u64 lsn | body`, zero-filled ahead, and the `poisoned`
//! list of failed LSNs (`first last` per line; the journal keeps its own list in the same file
//! and format, over the same LSNs). Opening migrates such files into the journal and deletes
//! them; the handover reads them in a stopped directory that was never opened since.
//!
//! Damage is judged as before the move (decision 0075): a bad frame with nothing valid after it,
//! in its file or a later one, is a torn tail and ends the reading; a bad frame followed by valid
//! ones refuses under `refuse`, and is skipped under `skip_corrupt` with the file copied to the
//! quarantine first. Nothing here writes to the WAL directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::WalRecoveryMode;
use crate::error::WalError;

use super::{WalDamage, WalRecord, decode_payload, io_error, quarantine_copy};

/// The old `poisoned` list while old records are copied into the journal.
pub(crate) const POISONED_ASIDE: &str = "poisoned.before-journal";

/// Bytes of a frame before its payload.
pub(crate) const HEADER: usize = 8;
/// Largest payload accepted (a larger length is a torn or corrupt frame).
pub(crate) const MAX_FRAME: usize = 512 * 1024 * 1024;

/// What the old files hold.
#[derive(Debug, Default)]
pub(crate) struct Legacy {
    /// The old files, oldest first.
    pub(crate) files: Vec<PathBuf>,
    /// Their valid records in file order, failed writes left out.
    pub(crate) records: Vec<WalRecord>,
    pub(crate) poisoned_records: u64,
    pub(crate) truncated_bytes: u64,
    pub(crate) damage: Vec<WalDamage>,
}

/// The old WAL files in `dir`, oldest first.
pub(crate) fn files(dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(dir, error)),
    };
    let mut files = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if let Some(seq) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.strip_suffix(".wal"))
            .and_then(|name| name.parse::<u64>().ok())
        {
            files.push((seq, entry.path()));
        }
    }
    files.sort_unstable();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// The failed LSN ranges of the `poisoned` list in `dir`.
pub(crate) fn read_poisoned(dir: &Path) -> Result<Vec<std::ops::RangeInclusive<u64>>, WalError> {
    let aside = dir.join(POISONED_ASIDE);
    let path = if fs::metadata(&aside).is_ok() {
        aside
    } else {
        dir.join("poisoned")
    };
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error(&path, error)),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (first, last) = line.split_once(' ')?;
            Some(first.trim().parse::<u64>().ok()?..=last.trim().parse::<u64>().ok()?)
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(WalError::Unreadable { path })
}

/// The frame at `offset` of a file's bytes and its payload length, if it is whole and valid.
pub(crate) fn decode_frame(data: &[u8], offset: usize) -> Option<(WalRecord, usize)> {
    let header = data.get(offset..offset + HEADER)?;
    let len = usize::try_from(u32::from_le_bytes(header.get(..4)?.try_into().ok()?)).ok()?;
    let crc = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = data.get(offset + HEADER..offset + HEADER + len)?;
    (crc32c::crc32c(payload) == crc).then_some(())?;
    Some((decode_payload(payload)?, len))
}

/// Whether `data[offset..]` is all zeros: the preallocated space after the last frame.
fn zeros_from(data: &[u8], offset: usize) -> bool {
    data.get(offset..)
        .is_none_or(|rest| rest.iter().all(|b| *b == 0))
}

/// The offset of the first valid frame at or after `from` whose LSN is above `after` (LSNs only
/// grow in the log, which keeps a scan through damaged bytes from taking their noise for a
/// frame), if there is one.
fn resync(data: &[u8], from: usize, after: u64) -> Option<usize> {
    let last = data.len().checked_sub(HEADER + 8)?;
    (from..=last).find(|&offset| {
        let Some(header) = data.get(offset..offset + HEADER + 8) else {
            return false;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&header[HEADER..HEADER + 8]);
        let lsn = u64::from_le_bytes(lsn);
        (8..=MAX_FRAME).contains(&len)
            && offset + HEADER + len <= data.len()
            && lsn > after
            && lsn - after <= u64::from(u32::MAX)
            && decode_frame(data, offset).is_some()
    })
}

/// How many valid frames follow each other from `offset`.
fn count_frames(data: &[u8], mut offset: usize) -> u64 {
    let mut count = 0;
    while let Some((_, len)) = decode_frame(data, offset) {
        count += 1;
        offset += HEADER + len;
    }
    count
}

/// Reads the old WAL files of `dir` (blocking, read-only but for quarantine copies).
pub(crate) fn read(
    dir: &Path,
    mode: WalRecoveryMode,
    quarantine: &Path,
) -> Result<Legacy, WalError> {
    let files = files(dir)?;
    let mut legacy = Legacy::default();
    if files.is_empty() {
        return Ok(legacy);
    }
    let poisoned = read_poisoned(dir)?;
    let mut max_lsn = 0;
    let last_index = files.len() - 1;
    for (index, path) in files.iter().enumerate() {
        let data = fs::read(path).map_err(|e| io_error(path, e))?;
        let later_files = last_index - index;
        let mut offset = 0usize;
        let mut copy: Option<PathBuf> = None;
        while offset < data.len() {
            if zeros_from(&data, offset) {
                break;
            }
            if let Some((record, len)) = decode_frame(&data, offset) {
                if let Some(last) = legacy.damage.last_mut()
                    && last.lsn_after.is_none()
                    && last.file == *path
                {
                    last.lsn_after = Some(record.lsn);
                }
                offset += HEADER + len;
                max_lsn = max_lsn.max(record.lsn);
                if poisoned.iter().any(|range| range.contains(&record.lsn)) {
                    legacy.poisoned_records += 1;
                } else {
                    legacy.records.push(record);
                }
                continue;
            }
            let next = resync(&data, offset + 1, max_lsn);
            if next.is_none() && later_files == 0 {
                // A torn tail: never acknowledged.
                legacy.truncated_bytes = (data.len() - offset) as u64;
                break;
            }
            let valid_after = next.map_or(0, |next| count_frames(&data, next));
            if mode == WalRecoveryMode::Refuse {
                tracing::error!(path = %path.display(), offset, valid_after, later_files, "the wal is damaged in the middle; refusing to open (storage.wal_recovery = \"refuse\")");
                return Err(WalError::Corrupt {
                    path: path.clone(),
                    offset: offset as u64,
                    valid_after,
                    later_files,
                });
            }
            let copy = match &copy {
                Some(copy) => copy.clone(),
                None => copy
                    .insert(quarantine_copy(quarantine, path, &data)?)
                    .clone(),
            };
            let end = next.unwrap_or(data.len());
            tracing::error!(path = %path.display(), offset, bytes = end - offset, valid_after, copy = %copy.display(), "skipping damaged wal bytes; the records in them are lost (storage.wal_recovery = \"skip_corrupt\")");
            legacy.damage.push(WalDamage {
                file: path.clone(),
                copy,
                offset: offset as u64,
                bytes: (end - offset) as u64,
                lsn_before: max_lsn,
                lsn_after: None,
                // The old format does not say which LSN follows, so the count is not known; the
                // damage still shows in the summary's preserved copies.
                lost_records: 0,
            });
            offset = end;
        }
    }
    legacy.records.sort_by_key(|record| record.lsn);
    legacy.files = files;
    Ok(legacy)
}
