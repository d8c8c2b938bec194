//! The file-system seam: every file operation of the journal goes through [`FileSystem`], so that
//! the same code runs on the real file system ([`RealFs`]) and on a simulated one ([`SimFs`]) that
//! separates what was written from what is durable and can cut the power.
//!
//! Every `fsync` names its call site with a [`SyncSite`]. The simulated file system can skip the
//! sync of one site, which is how the tests show that each sync is needed: with any one of them
//! skipped, the power-loss model test finds a lost acknowledged entry.

mod real;
mod sim;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::Path;

pub use real::RealFs;
pub use sim::{SimFs, SyncFailure};

/// Declares [`SyncSite`] and its [`SyncSite::ALL`] and [`SyncSite::name`] from one list, so that
/// a variant cannot exist without being in `ALL` (which the tests iterate).
macro_rules! sync_sites {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// Where in the code a file or directory is synced.
        ///
        /// Each variant is one call site of [`FileHandle::sync`] or [`FileSystem::sync_dir`];
        /// [`SyncSite::ALL`] lists them all, and the power-loss tests skip each in turn and
        /// expect the model checker to fail. The enum and `ALL` are generated from one list, so
        /// a new sync site is covered by those tests from the moment it exists.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum SyncSite {
            $($(#[$doc])* $variant,)+
        }

        impl SyncSite {
            /// Every sync site, in declaration order.
            pub const ALL: &'static [SyncSite] = &[$(SyncSite::$variant,)+];

            /// A stable name for logs and test output.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(SyncSite::$variant => $name,)+
                }
            }
        }
    };
}

sync_sites! {
    /// The group commit's `fdatasync` of the active segment: what makes an append durable.
    SegmentData => "segment-data",
    /// A new segment's header (with its first LSN) and zero-filled space, before the segment is
    /// used: without it, trimming the segments before it could lose the LSN floor.
    SegmentCreate => "segment-create",
    /// The journal directory after a new segment was created in it.
    SegmentCreateDir => "segment-create-dir",
    /// At open: each segment recovery truncated, and the last segment, so that every entry
    /// replay returned is durable (a crashed process may have left unsynced frames behind).
    Recover => "recover",
    /// At open: the journal directory, so that the last segment's entry is durable before new
    /// frames go into it.
    OpenDir => "open-dir",
    /// A parent directory after a directory was created in it (and, at open, the journal
    /// directory's parent).
    CreateDir => "create-dir",
    /// The temporary file of an atomic replace, before the rename.
    ReplaceFile => "replace-file",
    /// The directory of an atomic replace, after the rename.
    ReplaceDir => "replace-dir",
    /// The copy of a damaged segment under `corrupt/`.
    CorruptCopy => "corrupt-copy",
    /// The `corrupt/` directory after the copy of a damaged segment was created in it.
    CorruptDir => "corrupt-dir",
}

impl SyncSite {
    /// The position of this site in [`SyncSite::ALL`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SyncSite {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// How [`FileSystem::open`] opens a file for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the file; fail with [`io::ErrorKind::AlreadyExists`] if it exists.
    CreateNew,
    /// Create the file or empty an existing one.
    Truncate,
    /// Open an existing file as it is.
    Existing,
}

/// The file operations the journal needs, on paths.
///
/// Implementations: [`RealFs`] (std's file system) and [`SimFs`] (in memory, with power cuts).
/// Paths are absolute for [`SimFs`]; [`RealFs`] takes whatever std takes.
pub trait FileSystem: fmt::Debug + Send + Sync {
    /// Creates one directory (its parent must exist); [`io::ErrorKind::AlreadyExists`] if the
    /// path exists.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of a directory, in no particular order.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Opens a file for positional writes.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FileHandle>>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of a directory durable (`fsync` of the directory).
    fn sync_dir(&self, path: &Path, site: SyncSite) -> io::Result<()>;
    /// Takes an exclusive advisory lock on the file at `path` (created if missing) without
    /// waiting: `None` when another holder has it. The lock is released when the returned guard
    /// is dropped or the process ends.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn HeldLock>>>;
}

/// A file open for writing.
pub trait FileHandle: fmt::Debug + Send + Sync {
    /// Writes all of `bytes` at `offset`, growing the file if needed.
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data and length durable (`fdatasync`).
    fn sync(&self, site: SyncSite) -> io::Result<()>;
}

/// An advisory lock, released on drop.
pub trait HeldLock: fmt::Debug + Send + Sync {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_site_once_in_order() {
        for (position, site) in SyncSite::ALL.iter().enumerate() {
            assert_eq!(site.index(), position, "{site} is out of place in ALL");
        }
        let mut names: Vec<&str> = SyncSite::ALL.iter().map(|site| site.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SyncSite::ALL.len(), "two sites share a name");
    }
}
