//! Commits: a mutation's records go to the journal, whose group commit makes them durable
//! (concurrent mutations share one `fdatasync`); archive lines are written before the removals
//! that produced them are committed; compaction writes a snapshot covering the journal up to an
//! LSN with `write_atomic` and trims the segments it covers.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mainstay_journal::{Journal, Lsn, write_atomic};

use crate::config::SyncMode;
use crate::entry::Entry;
use crate::error::WriteError;
use crate::files::{self, SNAPSHOT_FILE};

use super::*;

/// Whether a compaction runs in any case or only while the journal is past its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compaction {
    Now,
    /// Now, and the active journal segment closed first, so that the trim leaves no byte of a
    /// deleted entry on disk ([`Dlq::compact`](super::Dlq::compact), which an erasure relies on).
    NowRolled,
    IfDue,
}

/// Bytes a journal frame adds to its record.
const FRAME_OVERHEAD: u64 = 16;

fn journal_error(error: impl fmt::Display) -> WriteError {
    WriteError::Journal {
        message: error.to_string(),
    }
}

impl State {
    /// Buffers one record of the mutation in progress.
    pub(super) fn record(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let mut record = Vec::new();
        encode(&mut record);
        self.records.push(record);
    }
}

impl Shared {
    /// Appends the records of the mutation in progress to the journal (under the state lock, so
    /// the journal's order is the state's); returns the last LSN, `None` when there were none.
    pub(super) fn log(&self, state: &mut State) -> Result<Option<Lsn>, WriteError> {
        let records = std::mem::take(&mut state.records);
        let Some(journal) = state.journal.as_ref() else {
            return Err(WriteError::Closed);
        };
        let mut last = None;
        let mut bytes = 0;
        for record in &records {
            last = Some(journal.append(record).map_err(journal_error)?);
            bytes += record.len() as u64 + FRAME_OVERHEAD;
        }
        state.journal_bytes += bytes;
        self.metrics
            .journal_bytes
            .set(i64::try_from(state.journal_bytes).unwrap_or(i64::MAX));
        Ok(last)
    }

    /// Waits until everything up to `lsn` is durable (archive lines first), then compacts if
    /// the journal grew past its bound.
    pub(super) async fn commit(self: &Arc<Self>, lsn: Option<Lsn>) -> Result<(), WriteError> {
        let Some(lsn) = lsn else {
            return Ok(());
        };
        self.write_archive().await?;
        let journal = self.journal()?;
        journal.commit(lsn).await.map_err(journal_error)?;
        self.count_syncs(&journal);
        let due = self.state.lock().journal_bytes > self.config.compact_after_bytes;
        if due && let Err(error) = self.compact(Compaction::IfDue).await {
            // The push is durable in the journal; the next commit tries again.
            tracing::error!(dir = %self.dir.display(), %error, "dlq compaction failed");
        }
        Ok(())
    }

    fn journal(&self) -> Result<Journal, WriteError> {
        let state = self.state.lock();
        match &state.journal {
            Some(journal) => Ok(journal.clone()),
            None => Err(WriteError::Closed),
        }
    }

    /// Adds the journal's syncs since the last count to `dlq_journal_fsyncs_total`.
    fn count_syncs(&self, journal: &Journal) {
        let syncs = journal.syncs();
        let counted = self.syncs_counted.fetch_max(syncs, Ordering::Relaxed);
        if syncs > counted {
            self.metrics.fsyncs.inc_by(syncs - counted);
        }
    }

    /// Writes and syncs buffered archive lines on the blocking pool, so that an evicted or
    /// expired entry is in the archive before its removal is durable. Waits for a write already
    /// in flight (it holds the file).
    pub(super) async fn write_archive(self: &Arc<Self>) -> Result<(), WriteError> {
        if !self.state.lock().archive_pending {
            return Ok(());
        }
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            let mut file = shared.archive.try_lock().unwrap_or_else(|| {
                shared.archive_waits.fetch_add(1, Ordering::SeqCst);
                shared.archive.lock()
            });
            #[cfg(not(test))]
            let mut file = shared.archive.lock();
            let lines = std::mem::take(&mut shared.state.lock().archive_buf);
            let written = (|| {
                if lines.is_empty() {
                    return Ok(());
                }
                let file = match &mut *file {
                    Some(file) => file,
                    slot @ None => slot.insert(files::open_archive(&shared.dir)?),
                };
                file.write_all(&lines)?;
                file.sync_data()
            })();
            let mut state = shared.state.lock();
            state.archive_pending = !state.archive_buf.is_empty();
            written.map_err(|error| {
                tracing::error!(dir = %shared.dir.display(), %error, "dlq archive write failed");
                journal_error(format_args!("archive write failed: {error}"))
            })
        })
        .await
        .map_err(journal_error)?
    }

    /// Writes a snapshot of the whole state, which covers the journal up to its last LSN, and
    /// trims the journal segments it covers. Everything the snapshot holds is committed to the
    /// journal first, so a snapshot never makes durable a write that failed.
    pub(super) async fn compact(self: &Arc<Self>, when: Compaction) -> Result<(), WriteError> {
        let _one = self.compaction.lock().await;
        if when == Compaction::IfDue
            && self.state.lock().journal_bytes <= self.config.compact_after_bytes
        {
            // Another committer compacted while this one waited.
            return Ok(());
        }
        self.write_archive().await?;
        let (journal, entries, covered, bytes_covered) = {
            let state = self.state.lock();
            let Some(journal) = state.journal.clone() else {
                return Err(WriteError::Closed);
            };
            let entries: Vec<Arc<Entry>> = state.entries.values().cloned().collect();
            let covered = journal.last_lsn();
            (journal, entries, covered, state.journal_bytes)
        };
        journal.commit(covered).await.map_err(journal_error)?;
        self.count_syncs(&journal);
        let snapshot = files::encode_snapshot(&entries, covered.get());
        let fs = Arc::clone(&self.fs);
        let path = self.dir.join(SNAPSHOT_FILE);
        let trim_journal = journal.clone();
        let roll = when == Compaction::NowRolled;
        let trimmed = tokio::task::spawn_blocking(move || {
            write_atomic(&*fs, &path, &snapshot).map_err(journal_error)?;
            if roll {
                trim_journal.roll().map_err(journal_error)?;
            }
            trim_journal.trim(covered).map_err(journal_error)
        })
        .await
        .map_err(journal_error)??;
        self.metrics.fsyncs.inc();
        let mut state = self.state.lock();
        state.journal_bytes = state.journal_bytes.saturating_sub(bytes_covered);
        self.metrics
            .journal_bytes
            .set(i64::try_from(state.journal_bytes).unwrap_or(i64::MAX));
        drop(state);
        tracing::info!(dir = %self.dir.display(), entries = entries.len(), covered = covered.get(), trimmed_segments = trimmed, "dlq journal compacted into a snapshot");
        Ok(())
    }

    /// Closes the journal and releases the directory lock (idempotent).
    pub(super) fn release(&self) {
        let journal = {
            let mut state = self.state.lock();
            state.closed = true;
            state.journal.take()
        };
        drop(journal);
        self.lock.lock().take();
    }

    pub(super) async fn serial(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.config.sync_mode {
            SyncMode::PerPush => Some(self.serial.lock().await),
            SyncMode::Grouped => None,
        }
    }
}
