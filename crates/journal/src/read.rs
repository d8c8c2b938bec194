//! [`read_entries`]: a read-only scan of a journal directory, for a directory another process
//! owns (stopped, or live in this process) and must not be changed.

use std::ops::RangeInclusive;
use std::path::Path;

use crate::error::{OpenError, ReadError};
use crate::frame;
use crate::fs::FileSystem;
use crate::lsn::Lsn;
use crate::poisoned;
use crate::replay::Entry;
use crate::segment;

/// Every valid entry in the journal directory `dir` with an LSN in `lsns`, in LSN order, without
/// locking or changing anything: no torn tail is cut, no damage repaired or reported (damaged
/// regions are read past, as replay reads past them), and the entries of failed writes are left
/// out as replay leaves them out. A missing directory holds no entries.
///
/// It may run beside a [`Journal`](crate::Journal) that is open on `dir`: it then sees the
/// frames written so far, which may include some that are not durable yet; keep to LSNs at or
/// below [`Journal::durable_lsn`](crate::Journal::durable_lsn) for durable entries only.
///
/// ```
/// use mainstay_journal::{Journal, JournalConfig, Lsn, fs::RealFs, read_entries};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let (journal, _) = Journal::open(dir.path(), JournalConfig::default())?;
/// for payload in [b"one", b"two", b"six"] {
///     journal.write(payload).await?;
/// }
/// let entries = read_entries(&RealFs, dir.path(), Lsn::new(2)..=Lsn::new(3))?;
/// assert_eq!(entries.len(), 2);
/// assert_eq!(entries[0].payload, b"two");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`ReadError::Io`] when the directory or a segment cannot be read, [`ReadError::PoisonedList`]
/// when the list of failed writes is unreadable.
pub fn read_entries(
    fs: &dyn FileSystem,
    dir: &Path,
    lsns: RangeInclusive<Lsn>,
) -> Result<Vec<Entry>, ReadError> {
    let names = match fs.read_dir(dir) {
        Ok(names) => names,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ReadError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let failed = poisoned::read(fs, dir).map_err(|error| match error {
        OpenError::PoisonedList { path, line } => ReadError::PoisonedList { path, line },
        OpenError::Io { path, source } => ReadError::Io { path, source },
        other => ReadError::Io {
            path: dir.join(poisoned::FILE),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    let mut seqs: Vec<u64> = names
        .iter()
        .filter_map(|name| segment::parse_name(name))
        .collect();
    seqs.sort_unstable();
    let mut entries = Vec::new();
    let mut last = 0;
    for seq in seqs {
        let path = segment::path(dir, seq);
        let data = match fs.read(&path) {
            Ok(data) => data,
            // Trimmed by the journal since the listing.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ReadError::Io { path, source }),
        };
        let scan = frame::scan(&data, last);
        for found in &scan.frames {
            last = last.max(found.lsn);
            let lsn = Lsn::new(found.lsn);
            if lsns.contains(&lsn) && !poisoned::contains(&failed, found.lsn) {
                entries.push(Entry {
                    lsn,
                    payload: data[found.payload.clone()].to_vec(),
                });
            }
        }
    }
    entries.sort_by_key(|entry| entry.lsn);
    entries.dedup_by_key(|entry| entry.lsn);
    Ok(entries)
}
