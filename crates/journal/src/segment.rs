//! Segment files: names, creation, and what the journal knows of each.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::durable::parent_of;
use crate::error::FileError;
use crate::frame::{self, HEADER_LEN};
use crate::fs::{FileHandle, FileSystem, OpenMode, SyncSite};

const SUFFIX: &str = ".seg";

/// The path of segment `seq` in `dir`.
pub(crate) fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}{SUFFIX}"))
}

/// The sequence number of a segment file name (`None` for other files).
pub(crate) fn parse_name(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the journal knows of a segment on disk.
#[derive(Debug, Clone)]
pub(crate) struct SegmentInfo {
    pub(crate) seq: u64,
    pub(crate) path: PathBuf,
    /// The highest LSN in it, or the one before its first when it holds none.
    pub(crate) last_lsn: u64,
    /// Where its frames end (where the next frame goes).
    pub(crate) end: u64,
    /// Its length on disk, zero-filled space included.
    pub(crate) allocated: u64,
}

/// Creates the segment at `path` (or empties it, with [`OpenMode::Truncate`]) with its header
/// for `base` and `preallocate` bytes of zeros, and makes it durable, entry included, before any
/// frame goes in. Returns the open file and its length.
pub(crate) fn create(
    fs: &dyn FileSystem,
    path: &Path,
    base: u64,
    preallocate: u64,
    mode: OpenMode,
) -> Result<(Box<dyn FileHandle>, u64), FileError> {
    let failed = |operation: &'static str, at: &Path| {
        let at = at.to_path_buf();
        move |source| FileError {
            operation,
            path: at,
            source,
        }
    };
    let file = fs.open(path, mode).map_err(failed("creating", path))?;
    let len = usize::try_from(preallocate)
        .unwrap_or(usize::MAX)
        .max(HEADER_LEN);
    let mut bytes = vec![0; len];
    bytes[..HEADER_LEN].copy_from_slice(&frame::header(base));
    file.write_at(0, &bytes).map_err(failed("writing", path))?;
    file.sync(SyncSite::SegmentCreate)
        .map_err(failed("syncing", path))?;
    let dir = parent_of(path);
    fs.sync_dir(dir, SyncSite::SegmentCreateDir)
        .map_err(failed("syncing directory", dir))?;
    Ok((file, len as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_other_files_are_ignored() {
        let path = path(Path::new("/j"), 42);
        assert_eq!(path, Path::new("/j/00000000000000000042.seg"));
        assert_eq!(parse_name(path.file_name().unwrap()), Some(42));
        for other in [
            "LOCK",
            "poisoned",
            "00000000000000000042.seg.tmp",
            ".seg",
            "x1.seg",
        ] {
            assert_eq!(parse_name(OsStr::new(other)), None, "{other}");
        }
    }
}
