//! The in-memory state and its bounds: admission, eviction by overflow policy, removal.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ulid::Ulid;

use crate::codec;
use crate::config::{OverflowPolicy, QueueConfig};
use crate::entry::{Entry, EntryId};
use crate::error::{PushError, WriteError};
use crate::metrics::{DlqMetrics, OldestAges, PushedLabels};

use super::*;

impl State {
    pub(super) fn config_for(&self, queue: &str) -> &QueueConfig {
        self.configs.get(queue).unwrap_or(&self.defaults)
    }

    pub(super) fn insert(&mut self, entry: Arc<Entry>) {
        self.payload_bytes += entry.payload.inline_len();
        self.queues
            .entry(entry.queue.clone())
            .or_default()
            .ids
            .insert(entry.id);
        if let Some(old) = self.entries.insert(entry.id, entry) {
            self.payload_bytes -= old.payload.inline_len();
        }
    }

    pub(super) fn take(&mut self, id: EntryId) -> Option<Arc<Entry>> {
        let entry = self.entries.remove(&id)?;
        self.payload_bytes -= entry.payload.inline_len();
        if let Some(queue) = self.queues.get_mut(&entry.queue) {
            queue.ids.remove(&id);
        }
        Some(entry)
    }

    pub(super) fn writable(&self) -> Result<(), WriteError> {
        let Some(journal) = self.journal.as_ref().filter(|_| !self.closed) else {
            return Err(WriteError::Closed);
        };
        match journal.failure() {
            Some(message) => Err(WriteError::Journal { message }),
            None => Ok(()),
        }
    }

    pub(super) fn next_id(&mut self, now: SystemTime) -> EntryId {
        let mut id = Ulid::from_datetime(now);
        if id <= self.last_id {
            id = self.last_id.increment().unwrap_or_else(|next| next);
        }
        self.last_id = id;
        EntryId::from_ulid(id)
    }

    pub(super) fn queue_len(&self, queue: &str) -> usize {
        self.queues.get(queue).map_or(0, |q| q.ids.len())
    }
}

impl OldestAges for Shared {
    fn oldest_ages(&self) -> Vec<(String, f64)> {
        let now = self.clock.system_time();
        let state = self.state.lock();
        state
            .queues
            .iter()
            .map(|(queue, queue_state)| {
                let age = queue_state.ids.first().map_or(0.0, |id| {
                    now.duration_since(id.created_at())
                        .unwrap_or(Duration::ZERO)
                        .as_secs_f64()
                });
                (queue.clone(), age)
            })
            .collect()
    }
}

impl Shared {
    pub(super) fn set_size(&self, state: &State, queue: &str) {
        self.metrics
            .size
            .get_or_create(&DlqMetrics::queue(queue))
            .set(len_i64(state.queue_len(queue)));
    }

    /// Removes `id`, appends its remove record and, for evictions and expiries in queues that
    /// archive, its archive line.
    pub(super) fn remove_logged(
        &self,
        state: &mut State,
        id: EntryId,
        removal: Removal,
        now: SystemTime,
    ) -> Option<Arc<Entry>> {
        let entry = state.take(id)?;
        state.record(|out| codec::encode_remove(id, out));
        let reason = match removal {
            Removal::Evicted => Some("evicted"),
            Removal::Expired => Some("expired"),
            Removal::Plain => None,
        };
        if let Some(reason) = reason
            && state.config_for(&entry.queue).archive
        {
            let view = entry.view();
            let line = ArchiveLine {
                archived_at: humantime::format_rfc3339_millis(now).to_string(),
                reason,
                entry: &view,
            };
            if serde_json::to_writer(&mut state.archive_buf, &line).is_ok() {
                state.archive_buf.push(b'\n');
                state.archive_pending = true;
            }
        }
        self.set_size(state, &entry.queue);
        Some(entry)
    }

    pub(super) fn evict(&self, state: &mut State, id: EntryId, now: SystemTime) {
        let Some(entry) = self.remove_logged(state, id, Removal::Evicted, now) else {
            return;
        };
        self.metrics
            .evictions
            .get_or_create(&DlqMetrics::queue(&entry.queue))
            .inc();
        if let Some(queue) = state.queues.get_mut(&entry.queue) {
            if !queue.evicting {
                queue.evicting = true;
                tracing::warn!(queue = %entry.queue, "dlq queue is full: evicting its oldest entries");
            }
            queue.burst_evictions += 1;
        }
    }

    /// Admits `entry` under the queue's and the DLQ's bounds, evicting or rejecting, and appends
    /// its push record.
    pub(super) fn admit(
        &self,
        state: &mut State,
        entry: Entry,
        now: SystemTime,
    ) -> Result<(), PushError> {
        let config = state.config_for(&entry.queue).clone();
        let queue_len = state.queue_len(&entry.queue);
        let reject = |what: PushError| {
            self.metrics
                .rejected
                .get_or_create(&DlqMetrics::queue(&entry.queue))
                .inc();
            Err(what)
        };
        let mut victims: Vec<EntryId> = Vec::new();
        if queue_len >= config.capacity {
            if config.overflow == OverflowPolicy::Reject {
                return reject(PushError::QueueFull {
                    queue: entry.queue.clone(),
                    capacity: config.capacity,
                });
            }
            if let Some(queue) = state.queues.get(&entry.queue) {
                victims.extend(
                    queue
                        .ids
                        .iter()
                        .take(queue_len + 1 - config.capacity)
                        .copied(),
                );
            }
        }
        let freed: u64 = victims
            .iter()
            .filter_map(|id| state.entries.get(id))
            .map(|e| e.payload.inline_len())
            .sum();
        let mut count_after = state.entries.len() + 1 - victims.len();
        let mut bytes_after = state.payload_bytes + entry.payload.inline_len() - freed;
        let over = |count: usize, bytes: u64| {
            count > self.config.total_capacity || bytes > self.config.max_total_payload_bytes
        };
        if over(count_after, bytes_after) {
            // The DLQ as a whole is full: the oldest entries of `evict` queues go first, so a
            // `reject` queue holding user data is never evicted by general queues.
            let chosen: HashSet<EntryId> = victims.iter().copied().collect();
            for (id, other) in &state.entries {
                if !over(count_after, bytes_after) {
                    break;
                }
                if chosen.contains(id)
                    || state.config_for(&other.queue).overflow != OverflowPolicy::Evict
                {
                    continue;
                }
                victims.push(*id);
                count_after -= 1;
                bytes_after -= other.payload.inline_len();
            }
            if over(count_after, bytes_after) {
                let what = if count_after > self.config.total_capacity {
                    "total_capacity"
                } else {
                    "max_total_payload_bytes"
                };
                return reject(PushError::TotalFull { what });
            }
        }
        let evicted_here = !victims.is_empty();
        for id in victims {
            self.evict(state, id, now);
        }
        if !evicted_here
            && let Some(queue) = state.queues.get_mut(&entry.queue)
            && queue.evicting
        {
            tracing::info!(queue = %entry.queue, evicted = queue.burst_evictions, "dlq eviction burst ended");
            queue.evicting = false;
            queue.burst_evictions = 0;
        }
        state.record(|out| codec::encode_push(&entry, out));
        self.metrics
            .pushed
            .get_or_create(&PushedLabels {
                queue: entry.queue.clone(),
                error_type: entry.error_class.as_str(),
            })
            .inc();
        let queue = entry.queue.clone();
        state.insert(Arc::new(entry));
        self.set_size(state, &queue);
        Ok(())
    }
}
