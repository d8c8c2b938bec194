//! Group commit: the leader writes and `fdatasync`s batches of journal records; compaction
//! rewrites the snapshot.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::SyncMode;
use crate::entry::Entry;
use crate::error::WriteError;
use crate::journal::{self, HEADER_LEN};

use super::*;

/// The longest the leader waits for its next batch to fill.
pub(super) const MAX_GROUP_WAIT: Duration = Duration::from_micros(500);

impl Shared {
    /// Waits until everything up to `seq` is durable, leading a batch when no one is.
    pub(super) async fn commit(self: &Arc<Self>, seq: u64) -> Result<(), WriteError> {
        loop {
            let notified = self.synced.notified();
            tokio::pin!(notified);
            {
                let mut state = self.state.lock();
                if state.synced >= seq {
                    return Ok(());
                }
                if state.group_target != 0 && state.appended - state.synced >= state.group_target {
                    self.refilled.notify_one();
                }
                if let Some(message) = &state.failed {
                    return Err(WriteError::Journal {
                        message: message.clone(),
                    });
                }
                if state.leader_active {
                    // Registered under the lock: the leader's wake-up cannot be missed.
                    notified.as_mut().enable();
                } else {
                    state.leader_active = true;
                    drop(state);
                    self.start_leader();
                    continue;
                }
            }
            notified.await;
        }
    }

    pub(super) fn start_leader(self: &Arc<Self>) {
        let shared = Arc::clone(self);
        // A detached task, so a dropped push future cannot strand the leader role. It yields
        // once before taking the first batch; between batches the leader waits for the next to
        // fill (`await_group`).
        // All bookkeeping lives inside the blocking closure, which runs to completion.
        drop(tokio::spawn(async move {
            tokio::task::yield_now().await;
            drop(tokio::task::spawn_blocking(move || shared.lead()));
        }));
    }

    /// The leader loop: write and sync batches until the buffers are empty, compacting when
    /// asked to.
    pub(super) fn lead(&self) {
        let mut files = self.files.lock();
        loop {
            let step = {
                let mut state = self.state.lock();
                if state.failed.is_some() {
                    state.leader_active = false;
                    Step::Done
                } else if state.compact_requested {
                    state.compact_requested = false;
                    Step::Compact
                } else if state.journal_buf.is_empty() && state.archive_buf.is_empty() {
                    // Nothing buffered: everything appended so far was written (or compacted).
                    state.synced = state.appended;
                    state.leader_active = false;
                    Step::Done
                } else {
                    Step::Write {
                        journal: std::mem::take(&mut state.journal_buf),
                        archive: std::mem::take(&mut state.archive_buf),
                        from: state.synced,
                        seq: state.appended,
                    }
                }
            };
            let result = match step {
                Step::Done => {
                    self.synced.notify_waiters();
                    self.idle.notify_all();
                    return;
                }
                Step::Write {
                    journal,
                    archive,
                    from,
                    seq,
                } => {
                    let started = Instant::now();
                    let written = self.write_batch(&mut files, &journal, &archive, seq);
                    if written.is_ok() {
                        self.await_group(seq - from, seq, started.elapsed());
                    }
                    written
                }
                Step::Compact => self.compact(&mut files),
            };
            if let Err(err) = result {
                tracing::error!(dir = %self.dir.display(), error = %err, "dlq journal write failed; refusing writes until reopened");
                let mut state = self.state.lock();
                state.failed = Some(err.to_string());
                state.leader_active = false;
                drop(state);
                self.synced.notify_waiters();
                self.idle.notify_all();
                return;
            }
        }
    }

    /// Lets the next batch fill before the leader writes it: waits until a record waits for each
    /// pusher the last batch saw (the records it carried plus those appended while it was
    /// written), at most half the time that batch took and never more than [`MAX_GROUP_WAIT`].
    /// Without it, batches alternate between the few pushers that came back at once and everyone
    /// else.
    pub(super) fn await_group(&self, carried: u64, seq: u64, took: Duration) {
        let mut state = self.state.lock();
        let pushers = carried + state.appended.saturating_sub(seq);
        if pushers < 2 {
            return;
        }
        let deadline = Instant::now() + (took / 2).min(MAX_GROUP_WAIT);
        state.group_target = pushers;
        while state.failed.is_none()
            && !state.closed
            && !state.compact_requested
            && state.appended - state.synced < pushers
        {
            if self.refilled.wait_until(&mut state, deadline).timed_out() {
                break;
            }
        }
        state.group_target = 0;
    }

    pub(super) fn write_archive(&self, files: &mut Files, archive: &[u8]) -> io::Result<()> {
        if archive.is_empty() {
            return Ok(());
        }
        let file = match &mut files.archive {
            Some(file) => file,
            slot @ None => slot.insert(journal::open_archive(&self.dir)?),
        };
        file.write_all(archive)?;
        file.sync_data()
    }

    pub(super) fn write_batch(
        &self,
        files: &mut Files,
        journal: &[u8],
        archive: &[u8],
        seq: u64,
    ) -> io::Result<()> {
        // The archive is durable before the removals that sent entries there.
        self.write_archive(files, archive)?;
        if !journal.is_empty() {
            files.journal.write_all(journal)?;
            files.journal.sync_data()?;
            self.metrics.fsyncs.inc();
        }
        let mut state = self.state.lock();
        state.synced = seq;
        state.journal_len += journal.len() as u64;
        self.metrics
            .journal_bytes
            .set(i64::try_from(state.journal_len).unwrap_or(i64::MAX));
        if state.journal_len > self.config.compact_after_bytes {
            state.compact_requested = true;
        }
        drop(state);
        self.synced.notify_waiters();
        Ok(())
    }

    /// Writes a snapshot of the whole state (which includes every buffered record) and starts
    /// an empty journal of the next generation.
    pub(super) fn compact(&self, files: &mut Files) -> io::Result<()> {
        let (entries, archive, seq, generation) = {
            let mut state = self.state.lock();
            // Buffered records are reflected in the entries the snapshot is written from.
            state.journal_buf.clear();
            let entries: Vec<Arc<Entry>> = state.entries.values().cloned().collect();
            (
                entries,
                std::mem::take(&mut state.archive_buf),
                state.appended,
                state.generation,
            )
        };
        self.write_archive(files, &archive)?;
        journal::write_snapshot(&self.dir, &entries, generation)?;
        files.journal = journal::new_journal(&self.dir, generation + 1)?;
        self.metrics.fsyncs.inc();
        let mut state = self.state.lock();
        state.generation = generation + 1;
        state.journal_len = HEADER_LEN as u64;
        state.synced = seq;
        self.metrics.journal_bytes.set(HEADER_LEN as i64);
        drop(state);
        self.synced.notify_waiters();
        tracing::info!(dir = %self.dir.display(), entries = entries.len(), generation = generation + 1, "dlq journal compacted into a snapshot");
        Ok(())
    }

    pub(super) async fn serial(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.config.sync_mode {
            SyncMode::PerPush => Some(self.serial.lock().await),
            SyncMode::Grouped => None,
        }
    }
}
