//! Durable file operations on any [`FileSystem`]: atomic replace and directory creation.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::FileError;
use crate::fs::{FileSystem, OpenMode, SyncSite};

fn failed(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError {
        operation,
        path,
        source,
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Replaces the file at `path` with `contents` atomically: after a crash or power cut at any
/// point, the file holds either its old contents or all of the new ones.
///
/// Writes `path` + `.tmp`, syncs it, renames it over `path` and syncs the directory. One writer
/// per path: two concurrent replaces of the same path share the temporary file.
///
/// ```
/// use std::path::Path;
/// use mainstay_journal::{fs::{FileSystem, SimFs}, write_atomic};
///
/// let sim = SimFs::new(1);
/// write_atomic(&sim, Path::new("/snapshot"), b"version 1")?;
/// sim.power_cut();
/// assert_eq!(sim.read(Path::new("/snapshot"))?, b"version 1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`FileError`] naming the step and the path that failed; the file at `path` is then
/// unchanged or wholly replaced.
pub fn write_atomic(fs: &dyn FileSystem, path: &Path, contents: &[u8]) -> Result<(), FileError> {
    let mut tmp_name: OsString = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let file = fs
        .open(&tmp, OpenMode::Truncate)
        .map_err(failed("creating", &tmp))?;
    file.write_at(0, contents)
        .map_err(failed("writing", &tmp))?;
    file.sync(SyncSite::ReplaceFile)
        .map_err(failed("syncing", &tmp))?;
    drop(file);
    fs.rename(&tmp, path)
        .map_err(failed("renaming into", path))?;
    let dir = parent_of(path);
    fs.sync_dir(dir, SyncSite::ReplaceDir)
        .map_err(failed("syncing directory", dir))
}

/// Creates `path` and its missing parents so that they survive a power cut: the parent of every
/// directory it creates is synced, and so is the parent of `path` itself even when `path`
/// existed (a process that crashed right after creating it may not have synced its parent).
///
/// A directory above `path` that a crashed process created without syncing its parent is not
/// made durable: the data directory a service is given is expected to exist.
///
/// # Errors
///
/// [`FileError`] naming the directory that could not be created or synced.
pub fn create_dir_durable(fs: &dyn FileSystem, path: &Path) -> Result<(), FileError> {
    let mut chain: Vec<PathBuf> = path
        .ancestors()
        .filter(|dir| !dir.as_os_str().is_empty() && dir.parent().is_some())
        .map(Path::to_path_buf)
        .collect();
    chain.reverse();
    let last = chain.len().saturating_sub(1);
    for (position, dir) in chain.iter().enumerate() {
        let created = match fs.create_dir(dir) {
            Ok(()) => true,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(error) => return Err(failed("creating directory", dir)(error)),
        };
        if created || position == last {
            let parent = parent_of(dir);
            fs.sync_dir(parent, SyncSite::CreateDir)
                .map_err(failed("syncing directory", parent))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::SimFs;

    #[test]
    fn created_directories_survive_a_power_cut() {
        let sim = SimFs::new(1);
        create_dir_durable(&sim, Path::new("/a/b/c")).unwrap();
        sim.power_cut();
        assert_eq!(
            sim.read_dir(Path::new("/a/b/c")).unwrap(),
            Vec::<OsString>::new()
        );
        assert_eq!(sim.syncs(SyncSite::CreateDir), 3);
        create_dir_durable(&sim, Path::new("/a/b/c")).unwrap();
        assert_eq!(
            sim.syncs(SyncSite::CreateDir),
            4,
            "the leaf's parent is synced again"
        );
    }

    #[test]
    fn a_replace_is_all_or_nothing_at_every_crash_point() {
        for crash_at in 0..8 {
            let sim = SimFs::new(crash_at);
            write_atomic(&sim, Path::new("/state"), b"old").unwrap();
            sim.crash_after(crash_at);
            let result = write_atomic(&sim, Path::new("/state"), b"new contents");
            sim.power_cut_tearing_last_write();
            let now = sim.read(Path::new("/state")).unwrap();
            assert!(
                now == b"old" || now == b"new contents",
                "crash after {crash_at} calls left {now:?}"
            );
            if result.is_ok() {
                assert_eq!(now, b"new contents", "a replace that returned is durable");
            }
        }
    }
}
