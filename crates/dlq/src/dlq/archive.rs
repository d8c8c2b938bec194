//! Rewriting the archive without the lines of some keys ([`Dlq::erase_archived`]), for an
//! erasure: a temp file in the DLQ directory, fsync'd, renamed over `archive.jsonl`, and the
//! directory fsync'd, all under the archive's lock, so that lines archived meanwhile wait and
//! are neither lost nor written to the file being replaced.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::Deserialize;

use crate::error::ArchiveError;
use crate::files::{ARCHIVE_FILE, ARCHIVE_TEMP_FILE};

use super::*;

/// What [`Dlq::erase_archived`] did to the archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveRewrite {
    /// Lines removed: their entry's key starts with the prefix.
    pub removed: u64,
    /// Lines kept, unreadable ones included.
    pub kept: u64,
    /// Lines that do not parse as an archive line (a torn write, a hand edit), by line number
    /// (1-based, in the archive as it was): kept as they were, since whose they are cannot be
    /// told. Each says whether its bytes hold the prefix, so that a caller can tell the lines
    /// that may still hold data of the erased keys.
    pub unreadable: Vec<UnreadableLine>,
}

/// A line of the archive that does not parse, kept by [`Dlq::erase_archived`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnreadableLine {
    /// Its number in the archive as it was (1-based).
    pub line: u64,
    /// Whether its bytes hold the prefix anywhere: it may hold data of an erased key.
    pub holds_prefix: bool,
}

impl UnreadableLine {
    /// An unreadable line (for comparisons in tests of callers).
    #[must_use]
    pub fn new(line: u64, holds_prefix: bool) -> Self {
        Self { line, holds_prefix }
    }
}

/// What writing the temp file came to.
enum Outcome {
    /// The temp file is written and synced: rename it over the archive.
    Written(ArchiveRewrite),
    /// Nothing to remove or add: the archive stays as it is.
    Unchanged(ArchiveRewrite),
}

/// The one field of an archive line the rewrite reads.
#[derive(Deserialize)]
struct KeyOnly {
    entry: EntryKey,
}

#[derive(Deserialize)]
struct EntryKey {
    key: String,
}

impl Dlq {
    /// Rewrites the archive (`archive.jsonl`) without the lines of entries whose key starts
    /// with `key_prefix` (an erasure's collection tag), crash-safely: the kept lines go to a
    /// temp file in the DLQ directory, which is fsync'd and renamed over the archive, and the
    /// directory is fsync'd. A crash before the rename leaves the old archive whole (the temp
    /// file is removed at the next open); after it, the new one. Lines archived while it runs
    /// wait for it (it holds the archive's lock) and are appended to the new file; lines
    /// buffered but not written yet are filtered too. Returns what it removed and kept.
    ///
    /// A line that does not parse is kept as it was and reported in
    /// [`ArchiveRewrite::unreadable`], never dropped: whether it holds an erased key's data
    /// is for the caller to decide ([`UnreadableLine::holds_prefix`]). An archive that ends in
    /// a torn line gets the line ending it lacked, so that the next line appended stays
    /// readable.
    ///
    /// # Errors
    ///
    /// [`ArchiveError::Io`] when the archive cannot be read or the new one cannot be written
    /// (the old archive is then untouched), [`ArchiveError::Closed`] once the queue is closed.
    pub async fn erase_archived(&self, key_prefix: &str) -> Result<ArchiveRewrite, ArchiveError> {
        if self.shared.state.lock().closed {
            return Err(ArchiveError::Closed);
        }
        let shared = Arc::clone(&self.shared);
        let prefix = key_prefix.to_owned();
        tokio::task::spawn_blocking(move || shared.erase_archived(&prefix))
            .await
            .map_err(|join| ArchiveError::Io {
                path: self.shared.dir.join(ARCHIVE_FILE),
                source: io::Error::other(join.to_string()),
            })?
    }
}

impl Shared {
    /// [`Dlq::erase_archived`] on a blocking thread.
    fn erase_archived(&self, prefix: &str) -> Result<ArchiveRewrite, ArchiveError> {
        // The appenders' lock (`write_archive`): held until the new file is in place.
        let mut file = self.archive.lock();
        let buffered = std::mem::take(&mut self.state.lock().archive_buf);
        let (rewritten, replaced) = self.rewrite_archive(prefix, &buffered);
        let mut state = self.state.lock();
        if replaced {
            // The buffered lines are in the new file (or erased), and the appenders' handle
            // points at the replaced file: it is reopened at the next line.
            *file = None;
        } else if rewritten.is_err() {
            // Nothing was replaced: the buffered lines go to the archive with the next write.
            let mut lines = buffered;
            lines.extend_from_slice(&state.archive_buf);
            state.archive_buf = lines;
        }
        state.archive_pending = !state.archive_buf.is_empty();
        drop(state);
        drop(file);
        let rewrite = rewritten?;
        if !rewrite.unreadable.is_empty() {
            tracing::warn!(dir = %self.dir.display(), unreadable = rewrite.unreadable.len(), "dlq archive holds lines that do not parse; they were kept");
        }
        tracing::info!(dir = %self.dir.display(), removed = rewrite.removed, kept = rewrite.kept, "dlq archive rewritten");
        Ok(rewrite)
    }

    /// Writes the kept lines of the archive and of `buffered` to the temp file and renames it
    /// over the archive; returns the report, or why it failed, and whether the archive was
    /// replaced (also when the directory's fsync failed after the rename).
    fn rewrite_archive(
        &self,
        prefix: &str,
        buffered: &[u8],
    ) -> (Result<ArchiveRewrite, ArchiveError>, bool) {
        match self.write_temp_archive(prefix, buffered) {
            Ok(Outcome::Written(report)) => {
                let path = self.dir.join(ARCHIVE_FILE);
                if let Err(source) = fs::rename(self.dir.join(ARCHIVE_TEMP_FILE), &path) {
                    let _ = fs::remove_file(self.dir.join(ARCHIVE_TEMP_FILE));
                    return (Err(ArchiveError::Io { path, source }), false);
                }
                let synced = File::open(&self.dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(|source| ArchiveError::Io {
                        path: self.dir.clone(),
                        source,
                    });
                (synced.map(|()| report), true)
            }
            Ok(Outcome::Unchanged(report)) => (Ok(report), false),
            Err(error) => (Err(error), false),
        }
    }

    /// Writes the kept lines of the archive and of `buffered` to the temp file and fsyncs it.
    /// When nothing is removed and nothing buffered, the archive stays as it is (the temp file
    /// is removed).
    fn write_temp_archive(&self, prefix: &str, buffered: &[u8]) -> Result<Outcome, ArchiveError> {
        let path = self.dir.join(ARCHIVE_FILE);
        let temp = self.dir.join(ARCHIVE_TEMP_FILE);
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ArchiveError::Io { path, source }
        };
        let old = match File::open(&path) {
            Ok(old) => Some(BufReader::new(old)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error(&path)(error)),
        };
        if old.is_none() && buffered.is_empty() {
            return Ok(Outcome::Unchanged(ArchiveRewrite::default()));
        }
        let mut report = ArchiveRewrite::default();
        let mut out = BufWriter::new(File::create(&temp).map_err(io_error(&temp))?);
        let mut number = 0u64;
        let mut filter = |line: &[u8], out: &mut BufWriter<File>| -> io::Result<()> {
            number += 1;
            let body = line.strip_suffix(b"\n").unwrap_or(line);
            if body.iter().all(u8::is_ascii_whitespace) {
                return out.write_all(line);
            }
            match serde_json::from_slice::<KeyOnly>(body) {
                Ok(parsed) if parsed.entry.key.starts_with(prefix) => {
                    report.removed += 1;
                    return Ok(());
                }
                Ok(_) => {}
                Err(_) => report.unreadable.push(UnreadableLine {
                    line: number,
                    holds_prefix: prefix.is_empty()
                        || body
                            .windows(prefix.len())
                            .any(|window| window == prefix.as_bytes()),
                }),
            }
            report.kept += 1;
            out.write_all(body)?;
            out.write_all(b"\n")
        };
        let copied = (|| {
            let mut line = Vec::new();
            if let Some(mut old) = old {
                loop {
                    line.clear();
                    if old.read_until(b'\n', &mut line).map_err(io_error(&path))? == 0 {
                        break;
                    }
                    filter(&line, &mut out).map_err(io_error(&temp))?;
                }
            }
            for line in buffered.split_inclusive(|byte| *byte == b'\n') {
                filter(line, &mut out).map_err(io_error(&temp))?;
            }
            out.into_inner()
                .map_err(io::IntoInnerError::into_error)
                .and_then(|file| file.sync_all())
                .map_err(io_error(&temp))
        })();
        if let Err(error) = copied {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        #[cfg(test)]
        let armed = self.before_rename.lock().take();
        #[cfg(test)]
        match armed {
            // A crash here: the temp file is complete, the archive untouched.
            Some(BeforeRename::Crash) => {
                return Err(io_error(&temp)(io::Error::other("crash before the rename")));
            }
            Some(BeforeRename::Pause { reached, resume }) => {
                let _ = reached.send(());
                let _ = resume.recv();
            }
            None => {}
        }
        if report.removed == 0 && buffered.is_empty() {
            // Nothing to remove: the archive stays as it is.
            let _ = fs::remove_file(&temp);
            return Ok(Outcome::Unchanged(report));
        }
        Ok(Outcome::Written(report))
    }
}

/// What the next rewrite does after its temp file is synced, before the rename (tests only).
#[cfg(test)]
pub(super) enum BeforeRename {
    /// Stops as a crash would: the temp file stays, the archive is not replaced.
    Crash,
    /// Says it got there and waits to be let go on.
    Pause {
        reached: std::sync::mpsc::Sender<()>,
        resume: std::sync::mpsc::Receiver<()>,
    },
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;

    use super::*;
    use crate::config::{DlqConfig, QueueConfig};
    use crate::entry::{FailureClass, NewEntry};

    const ERASED: &str = "0123456789ab-";

    async fn open(dir: &Path) -> Dlq {
        let config = DlqConfig {
            queues: BTreeMap::from([(
                "q".to_owned(),
                QueueConfig {
                    capacity: 1,
                    ..QueueConfig::default()
                },
            )]),
            ..DlqConfig::default()
        };
        Dlq::open(dir, config).await.expect("opens")
    }

    /// Pushes `keys` to the one-entry queue `q`: each push archives the one before.
    async fn push_all(dlq: &Dlq, keys: &[&str]) {
        for key in keys {
            dlq.push(NewEntry::inline(
                "q",
                *key,
                &b"payload"[..],
                FailureClass::Permanent,
                "failed",
            ))
            .await
            .expect("pushed");
        }
    }

    fn archived_keys(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join(ARCHIVE_FILE))
            .unwrap_or_default()
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line).expect("a line")["entry"]["key"]
                    .as_str()
                    .expect("a key")
                    .to_owned()
            })
            .collect()
    }

    /// A crash between the temp file and the rename leaves the old archive whole; the next
    /// open removes the temp file, and the rewrite done again removes the lines.
    #[tokio::test]
    async fn a_crash_before_the_rename_leaves_the_old_archive_whole() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let erased = format!("{ERASED}orders/1");
        let dlq = open(dir.path()).await;
        push_all(&dlq, &[&erased, "other/1", "other/2"]).await;
        let before = fs::read(dir.path().join(ARCHIVE_FILE)).expect("an archive");
        *dlq.shared.before_rename.lock() = Some(BeforeRename::Crash);
        let crashed = dlq.erase_archived(ERASED).await;
        assert!(
            matches!(crashed, Err(ArchiveError::Io { .. })),
            "{crashed:?}"
        );
        assert_eq!(
            fs::read(dir.path().join(ARCHIVE_FILE)).expect("an archive"),
            before
        );
        assert!(dir.path().join(ARCHIVE_TEMP_FILE).exists());
        drop(dlq);

        let dlq = open(dir.path()).await;
        assert!(!dir.path().join(ARCHIVE_TEMP_FILE).exists());
        assert_eq!(archived_keys(dir.path()), [erased.as_str(), "other/1"]);
        let rewrite = dlq.erase_archived(ERASED).await.expect("rewrites");
        assert_eq!((rewrite.removed, rewrite.kept), (1, 1));
        assert_eq!(archived_keys(dir.path()), ["other/1"]);
    }

    /// A line archived while the rewrite runs waits for it and lands in the new archive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_line_archived_during_the_rewrite_is_not_lost() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let erased = format!("{ERASED}orders/1");
        let dlq = open(dir.path()).await;
        push_all(&dlq, &[&erased, "other/1"]).await;
        let (reached, reached_rx) = mpsc::channel();
        let (resume, resume_rx) = mpsc::channel();
        *dlq.shared.before_rename.lock() = Some(BeforeRename::Pause {
            reached,
            resume: resume_rx,
        });
        let rewrite = tokio::spawn({
            let dlq = dlq.clone();
            async move { dlq.erase_archived(ERASED).await }
        });
        tokio::task::spawn_blocking(move || reached_rx.recv())
            .await
            .expect("joins")
            .expect("the rewrite paused");
        // Evicts (and archives) other/1 while the rewrite holds its temp file.
        let push = tokio::spawn({
            let dlq = dlq.clone();
            async move { push_all(&dlq, &["other/2"]).await }
        });
        // Its line is buffered; writing it waits for the rewrite, which holds the archive. (The
        // bound only ends the wait of a broken build: a write that never waits fails here.)
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while dlq.shared.archive_waits.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(
            waited.is_ok() && !push.is_finished(),
            "the push's archive line was written while the rewrite held the archive"
        );
        resume.send(()).expect("the rewrite waits");
        let rewrite = rewrite.await.expect("joins").expect("rewrites");
        push.await.expect("joins");
        assert_eq!(rewrite.removed, 1, "{rewrite:?}");
        assert_eq!(archived_keys(dir.path()), ["other/1"]);
        dlq.close().await.expect("closes");
    }
}
