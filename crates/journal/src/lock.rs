//! [`DirLock`]: one process per data directory.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::LockError;
use crate::fs::{FileSystem, HeldLock, RealFs};

/// The name of the lock file in a locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// An exclusive advisory lock on a directory (on its `LOCK` file), held until dropped.
///
/// The lock is an OS advisory lock (`flock` through std's `File::try_lock`), which the kernel
/// releases when the process ends: a second process is refused, and a crash leaves no stale
/// lock. The `LOCK` file itself carries nothing; it is not synced.
///
/// ```
/// use mainstay_journal::{DirLock, LockError};
///
/// let dir = tempfile::tempdir()?;
/// let lock = DirLock::acquire(dir.path())?;
/// assert!(matches!(DirLock::acquire(dir.path()), Err(LockError::Held { .. })));
/// drop(lock);
/// DirLock::acquire(dir.path())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct DirLock {
    dir: PathBuf,
    _held: Box<dyn HeldLock>,
}

impl DirLock {
    /// Locks `dir` (which must exist) on the real file system.
    ///
    /// # Errors
    ///
    /// [`LockError::Held`] when another holder has it, [`LockError::Io`] when the lock file
    /// cannot be created or locked.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        Self::acquire_with(&RealFs, dir)
    }

    /// Locks `dir` (which must exist) on `fs`.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire).
    pub fn acquire_with(fs: &dyn FileSystem, dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        match fs.try_lock(&path) {
            Ok(Some(held)) => Ok(DirLock {
                dir: dir.to_path_buf(),
                _held: held,
            }),
            Ok(None) => Err(LockError::Held {
                dir: dir.to_path_buf(),
            }),
            Err(source) => Err(LockError::Io { path, source }),
        }
    }

    /// The locked directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl fmt::Debug for DirLock {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DirLock")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}
