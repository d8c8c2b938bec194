//! Expiry: removing entries past their queue's TTL, once or in a background task.

use std::sync::Arc;

use crate::entry::{EntryId, to_millis};
use crate::error::WriteError;
use crate::metrics::DlqMetrics;

use super::*;

/// The task started by [`Dlq::spawn_cleanup`]; dropping it stops the cleanup.
#[derive(Debug)]
pub struct CleanupTask {
    handle: tokio::task::JoinHandle<()>,
}

impl CleanupTask {
    /// Stops the cleanup.
    pub fn abort(&self) {
        self.handle.abort();
    }
}

impl Drop for CleanupTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Dlq {
    /// Archives and removes every entry whose TTL has passed; returns how many.
    ///
    /// # Errors
    ///
    /// [`WriteError`] when the journal failed or the queue is closed.
    pub async fn cleanup_expired(&self) -> Result<usize, WriteError> {
        let _serial = self.shared.serial().await;
        let (count, seq) = {
            let mut state = self.shared.state.lock();
            state.writable()?;
            let now = self.shared.clock.system_time();
            let now_ms = to_millis(now);
            let expired: Vec<EntryId> = state
                .entries
                .values()
                .filter(|e| e.expires_at_ms.is_some_and(|at| at <= now_ms))
                .map(|e| e.id)
                .collect();
            for id in &expired {
                if let Some(entry) =
                    self.shared
                        .remove_logged(&mut state, *id, Removal::Expired, now)
                {
                    self.shared
                        .metrics
                        .expired
                        .get_or_create(&DlqMetrics::queue(&entry.queue))
                        .inc();
                }
            }
            if expired.is_empty() {
                return Ok(0);
            }
            (expired.len(), self.shared.log(&mut state)?)
        };
        self.shared.commit(seq).await?;
        tracing::info!(expired = count, "dlq cleanup archived expired entries");
        Ok(count)
    }

    /// Starts a task that runs [`Dlq::cleanup_expired`] every `cleanup_interval` on the
    /// configured clock; it stops when the returned handle is dropped or the DLQ is closed.
    #[must_use = "dropping the handle stops the cleanup"]
    pub fn spawn_cleanup(&self) -> CleanupTask {
        let weak = Arc::downgrade(&self.guard);
        let clock = Arc::clone(&self.shared.clock);
        let interval = self.shared.config.cleanup_interval;
        let handle = tokio::spawn(async move {
            loop {
                clock.sleep(interval).await;
                let Some(guard) = weak.upgrade() else {
                    return;
                };
                let shared = Arc::clone(&guard.shared);
                match (Self { shared, guard }).cleanup_expired().await {
                    Ok(_) => {}
                    Err(WriteError::Closed) => return,
                    Err(err) => tracing::error!(error = %err, "dlq cleanup failed"),
                }
            }
        });
        CleanupTask { handle }
    }
}
