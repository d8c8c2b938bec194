//! The durable list of LSN ranges whose writes failed (`poisoned`, one `first last` line per
//! failure): their writers were told the write failed, yet the page cache may still carry their
//! frames to the disk, so replay skips them (decision 0071).

use std::io;
use std::path::Path;

use crate::durable::write_atomic;
use crate::error::{FileError, OpenError};
use crate::fs::FileSystem;

/// The file's name in the journal directory.
pub(crate) const FILE: &str = "poisoned";

/// The ranges in the list (empty when there is none).
pub(crate) fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<(u64, u64)>, OpenError> {
    let path = dir.join(FILE);
    let bytes = match fs.read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(OpenError::Io { path, source }),
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut ranges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let range = line.split_once(' ').and_then(|(first, last)| {
            Some((first.trim().parse().ok()?, last.trim().parse().ok()?))
        });
        match range {
            Some((first, last)) if first <= last => ranges.push((first, last)),
            _ => {
                return Err(OpenError::PoisonedList {
                    path,
                    line: index + 1,
                });
            }
        }
    }
    Ok(ranges)
}

/// Replaces the list with `ranges` (atomically).
pub(crate) fn write(
    fs: &dyn FileSystem,
    dir: &Path,
    ranges: &[(u64, u64)],
) -> Result<(), FileError> {
    let text: String = ranges
        .iter()
        .map(|(first, last)| format!("{first} {last}\n"))
        .collect();
    write_atomic(fs, &dir.join(FILE), text.as_bytes())
}

/// Whether `lsn` is in one of `ranges`.
pub(crate) fn contains(ranges: &[(u64, u64)], lsn: u64) -> bool {
    ranges
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&lsn))
}
