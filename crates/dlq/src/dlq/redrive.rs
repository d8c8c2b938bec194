//! Redrive: handlers per queue, and the redrive of a filter's entries through them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::codec;
use crate::entry::{EntryId, clip_message, to_millis};
use crate::error::{RedriveError, WriteError};
use crate::metrics::RedrivenLabels;
use crate::query::{Filter, HandlerError, RedriveHandler, RedriveReport};

use super::*;

/// Removes an entry from the in-flight set when a redrive of it ends, however it ends.
struct InFlight<'a> {
    shared: &'a Shared,
    id: EntryId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.shared.state.lock().in_flight.remove(&self.id);
    }
}

impl Dlq {
    /// Registers the handler that redrives `queue`'s entries, replacing any earlier one.
    pub fn register_handler(&self, queue: impl Into<String>, handler: Arc<dyn RedriveHandler>) {
        self.shared.handlers.write().insert(queue.into(), handler);
    }

    /// Removes `queue`'s handler; `true` when there was one.
    #[must_use = "false means no handler was registered"]
    pub fn unregister_handler(&self, queue: &str) -> bool {
        self.shared.handlers.write().remove(queue).is_some()
    }

    /// Whether `queue` has a registered handler.
    #[must_use]
    pub fn has_handler(&self, queue: &str) -> bool {
        self.shared.handlers.read().contains_key(queue)
    }

    /// Redrives the entries matching `filter` through their queues' handlers, at most
    /// `redrive_rate_per_second`.
    ///
    /// # Errors
    ///
    /// As [`Dlq::redrive_with`].
    pub async fn redrive(&self, filter: &Filter) -> Result<RedriveReport, RedriveError> {
        self.redrive_with(filter, &CancellationToken::new()).await
    }

    /// Redrives the entries matching `filter`, stopping between entries once `cancel` fires.
    ///
    /// An entry is removed only after its handler succeeded; one whose handler fails stays with
    /// attempts, last failure and redrive count updated. Entries already being redriven by
    /// another call are skipped.
    ///
    /// # Errors
    ///
    /// [`RedriveError::NoHandler`] before anything is redriven when the filter's queue or a
    /// matching entry's queue has no handler; [`RedriveError::Write`] when the journal failed.
    pub async fn redrive_with(
        &self,
        filter: &Filter,
        cancel: &CancellationToken,
    ) -> Result<RedriveReport, RedriveError> {
        let now = self.shared.clock.system_time();
        let targets: Vec<(EntryId, String)> = {
            let state = self.shared.state.lock();
            state.writable()?;
            state
                .entries
                .values()
                .filter(|e| filter.matches(e, now))
                .map(|e| (e.id, e.queue.clone()))
                .collect()
        };
        let handlers: HashMap<String, Arc<dyn RedriveHandler>> = {
            let registered = self.shared.handlers.read();
            let mut handlers = HashMap::new();
            for queue in filter.queue.iter().chain(targets.iter().map(|(_, q)| q)) {
                if handlers.contains_key(queue) {
                    continue;
                }
                let Some(handler) = registered.get(queue) else {
                    return Err(RedriveError::NoHandler {
                        queue: queue.clone(),
                    });
                };
                handlers.insert(queue.clone(), Arc::clone(handler));
            }
            handlers
        };
        let gap = match self.shared.config.redrive_rate_per_second {
            0 => None,
            rate => Some(Duration::from_secs(1) / rate),
        };
        let mut report = RedriveReport {
            matched: targets.len(),
            ..RedriveReport::default()
        };
        for (index, (id, queue)) in targets.iter().enumerate() {
            if cancel.is_cancelled() {
                report.cancelled = true;
                break;
            }
            if index > 0
                && let Some(gap) = gap
            {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => {
                        report.cancelled = true;
                        break;
                    }
                    () = self.shared.clock.sleep(gap) => {}
                }
            }
            let entry = {
                let mut state = self.shared.state.lock();
                match state.entries.get(id).map(|e| (**e).clone()) {
                    Some(entry) if state.in_flight.insert(*id) => entry,
                    _ => {
                        report.skipped += 1;
                        continue;
                    }
                }
            };
            let _in_flight = InFlight {
                shared: &self.shared,
                id: *id,
            };
            let Some(handler) = handlers.get(queue) else {
                report.skipped += 1;
                continue;
            };
            let outcome = handler.redrive(&entry).await;
            let label = match &outcome {
                Ok(()) => "succeeded",
                Err(_) => "failed",
            };
            match outcome {
                Ok(()) => {
                    self.remove_redriven(*id).await?;
                    report.succeeded += 1;
                }
                Err(err) => {
                    self.record_failure(*id, &err).await?;
                    report.failed += 1;
                }
            }
            self.shared
                .metrics
                .redriven
                .get_or_create(&RedrivenLabels {
                    queue: queue.clone(),
                    outcome: label,
                })
                .inc();
        }
        tracing::info!(
            matched = report.matched,
            succeeded = report.succeeded,
            failed = report.failed,
            skipped = report.skipped,
            cancelled = report.cancelled,
            "dlq redrive finished"
        );
        Ok(report)
    }

    pub(super) async fn remove_redriven(&self, id: EntryId) -> Result<(), WriteError> {
        let _serial = self.shared.serial().await;
        let seq = {
            let mut state = self.shared.state.lock();
            state.writable()?;
            let now = self.shared.clock.system_time();
            if self
                .shared
                .remove_logged(&mut state, id, Removal::Plain, now)
                .is_none()
            {
                return Ok(());
            }
            self.shared.log(&mut state)?
        };
        self.shared.commit(seq).await
    }

    pub(super) async fn record_failure(
        &self,
        id: EntryId,
        err: &HandlerError,
    ) -> Result<(), WriteError> {
        let _serial = self.shared.serial().await;
        let seq = {
            let mut state = self.shared.state.lock();
            state.writable()?;
            let now_ms = to_millis(self.shared.clock.system_time());
            let Some(current) = state.entries.get(&id) else {
                return Ok(());
            };
            let mut updated = (**current).clone();
            updated.attempts = updated.attempts.saturating_add(1);
            updated.redrive_count = updated.redrive_count.saturating_add(1);
            updated.last_failure_ms = now_ms;
            updated.message = clip_message(err.message().to_owned());
            if let Some(class) = err.class() {
                updated.error_class = class;
            }
            state.record(|out| codec::encode_update(&updated, out));
            state.entries.insert(id, Arc::new(updated));
            self.shared.log(&mut state)?
        };
        self.shared.commit(seq).await
    }
}
