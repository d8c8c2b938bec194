//! Opening a DLQ: the lock, the snapshot and journal replay, and the state they rebuild.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{OpenOptions, TryLockError};
use std::io;
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::Notify;
use ulid::Ulid;

use crate::error::OpenError;
use crate::journal::{self, LOCK_FILE};
use crate::metrics::{DlqMetrics, OldestAges};

use super::*;

impl DlqBuilder {
    /// Locks the directory, replays the snapshot and journal (truncating a torn or corrupt tail)
    /// and returns the handle. Blocking I/O runs on tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// [`OpenError::Locked`] when another process holds the directory, [`OpenError::Config`]
    /// for invalid configuration, [`OpenError::Io`] and [`OpenError::CorruptSnapshot`] for files
    /// that cannot be used.
    pub async fn open(self) -> Result<Dlq, OpenError> {
        self.config.validate()?;
        let dir = self.dir.clone();
        let (lock, loaded) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(journal::io_err(&dir))?;
            let lock_path = dir.join(LOCK_FILE);
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(journal::io_err(&lock_path))?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(OpenError::Locked { dir }),
                Err(TryLockError::Error(source)) => {
                    return Err(OpenError::Io {
                        path: lock_path,
                        source,
                    });
                }
            }
            let loaded = journal::load(&dir)?;
            Ok((lock, loaded))
        })
        .await
        .map_err(|join| OpenError::Io {
            path: self.dir.clone(),
            source: io::Error::other(join.to_string()),
        })??;

        let metrics = self.metrics.unwrap_or_else(DlqMetrics::unregistered);
        let report = loaded.report;
        if report.torn_tail || report.corrupt_tail {
            metrics.truncations.inc();
        }
        metrics.corrupt_records.inc_by(report.corrupt_records);
        metrics
            .journal_bytes
            .set(i64::try_from(loaded.journal_len).unwrap_or(i64::MAX));

        let mut state = State {
            entries: BTreeMap::new(),
            queues: BTreeMap::new(),
            configs: self.config.queues.clone(),
            defaults: self.config.defaults.clone(),
            payload_bytes: 0,
            last_id: Ulid::nil(),
            journal_buf: Vec::new(),
            archive_buf: Vec::new(),
            appended: 0,
            synced: 0,
            leader_active: false,
            group_target: 0,
            compact_requested: false,
            failed: None,
            closed: false,
            journal_len: loaded.journal_len,
            generation: loaded.generation,
            in_flight: HashSet::new(),
        };
        for (_, entry) in loaded.entries {
            state.last_id = state.last_id.max(entry.id.ulid());
            state.insert(Arc::new(entry));
        }
        for (queue, queue_state) in &state.queues {
            metrics
                .size
                .get_or_create(&DlqMetrics::queue(queue))
                .set(len_i64(queue_state.ids.len()));
        }
        tracing::info!(
            dir = %self.dir.display(),
            entries = report.entries,
            journal_records = report.journal_records,
            torn_tail = report.torn_tail,
            corrupt_tail = report.corrupt_tail,
            corrupt_records = report.corrupt_records,
            "dlq opened"
        );

        let shared = Arc::new(Shared {
            dir: self.dir,
            config: self.config,
            clock: self.clock,
            metrics,
            state: Mutex::new(state),
            synced: Notify::new(),
            idle: Condvar::new(),
            refilled: Condvar::new(),
            serial: tokio::sync::Mutex::new(()),
            files: Mutex::new(Files {
                journal: loaded.journal,
                archive: None,
            }),
            handlers: RwLock::new(HashMap::new()),
            lock_file: Mutex::new(Some(lock)),
            report,
        });
        let weak: Weak<dyn OldestAges> = Arc::downgrade(&shared) as Weak<dyn OldestAges>;
        shared.metrics.attach(weak);
        let guard = Arc::new(LockGuard {
            shared: Arc::clone(&shared),
        });
        Ok(Dlq { shared, guard })
    }
}
