//! The background upload worker, the DLQ path for segments that cannot be uploaded, and the
//! redrive handler that uploads them for real.
//!
//! The worker takes batches of pending segments (`upload.batch_segments` / `upload.batch_bytes`),
//! uploads them with at most `upload.parallelism` in flight, then commits one manifest for the
//! batch. Every attempt needs a permit of the upload circuit breaker (a rejection is not an
//! attempt: the segment waits); a first attempt deposits into the retry budget and every retry
//! withdraws from it (an empty budget postpones the retry). A transient failure is retried with
//! exponential backoff up to `upload.max_attempts`; a permanent one (403, 401, 400 and the other
//! 4xx but 408/429, 501, 505, ...: see `remote::classify_with_status`) or exhausted attempts pin
//! the local file and push a DLQ entry that references it. The WAL keeps every record until its
//! segment is committed or pinned.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use mainstay_dlq::{
    Entry as DlqEntry, FailureClass, HandlerError, NewEntry, PinnedFile, RedriveHandler,
};
use tokio::time::Instant;

use crate::collection::{Collection, Durability, Segment};
use crate::remote::{CommitError, ErrorKind, UploadError};
use crate::store::{DLQ_QUEUE, Shared};

/// A segment waiting for upload. It belongs to one incarnation of its collection: a segment of a
/// dropped collection is never committed, even under a new collection of the same name.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) collection: Arc<Collection>,
    pub(crate) segment: Arc<Segment>,
    pub(crate) attempts: u32,
    pub(crate) not_before: Instant,
}

/// Segments waiting for upload, and uploaded ones waiting for the manifest commit.
#[derive(Debug, Default)]
pub(crate) struct UploadQueue {
    pending: VecDeque<Pending>,
    uploaded: Vec<(Arc<Collection>, Arc<Segment>)>,
    in_flight: usize,
}

impl UploadQueue {
    pub(crate) fn push(&mut self, collection: Arc<Collection>, segment: Arc<Segment>) {
        self.pending.push_back(Pending {
            collection,
            segment,
            attempts: 0,
            not_before: Instant::now(),
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len() + self.uploaded.len() + self.in_flight
    }

    /// Forgets the segments of this incarnation of a collection (it was dropped).
    pub(crate) fn remove_collection(&mut self, collection: &Arc<Collection>) {
        self.pending
            .retain(|p| !Arc::ptr_eq(&p.collection, collection));
        self.uploaded.retain(|(c, _)| !Arc::ptr_eq(c, collection));
    }

    fn take_batch(&mut self, segments: usize, bytes: u64, now: Instant) -> Vec<Pending> {
        let mut batch = Vec::new();
        if segments == 0 {
            return batch;
        }
        let mut total = 0u64;
        let mut rest = VecDeque::new();
        while let Some(pending) = self.pending.pop_front() {
            let fits = batch.is_empty()
                || (batch.len() < segments && total + pending.segment.meta.size <= bytes);
            if pending.not_before <= now && fits {
                total += pending.segment.meta.size;
                batch.push(pending);
            } else {
                rest.push_back(pending);
            }
        }
        self.pending = rest;
        self.in_flight += batch.len();
        batch
    }

    fn next_due(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.not_before).min()
    }
}

enum Outcome {
    Uploaded(Pending),
    Retry(Pending, Duration),
    Rejected(Pending),
    Dead(Pending, FailureClass, String),
    Fenced(Pending),
}

/// Reads a segment's local file (blocking pool).
async fn read_local(segment: &Segment) -> std::io::Result<Bytes> {
    let path = segment.local_path.clone();
    match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(read) => read.map(Bytes::from),
        Err(error) => Err(std::io::Error::other(error)),
    }
}

async fn upload_one(shared: &Shared, mut pending: Pending) -> Outcome {
    let Some(remote) = shared.remote.as_ref() else {
        return Outcome::Rejected(pending);
    };
    let Ok(permit) = shared.breaker.try_acquire_owned() else {
        shared.instruments.upload_rejected.inc();
        return Outcome::Rejected(pending);
    };
    let config = &shared.config.upload;
    if pending.attempts == 0 {
        shared.budget.deposit();
    } else if !shared.budget.try_withdraw() {
        // Dropping the permit without an outcome counts nothing.
        drop(permit);
        shared.instruments.upload_budget_exhausted.inc();
        let delay = config.backoff(pending.attempts);
        return Outcome::Retry(pending, delay);
    }
    pending.attempts += 1;
    let bytes = match read_local(&pending.segment).await {
        Ok(bytes) if crc32c::crc32c(&bytes) == pending.segment.meta.crc32c => bytes,
        read => {
            let why = match read {
                Ok(_) => "fails its checksum".to_owned(),
                Err(error) => format!("is unreadable: {error}"),
            };
            match rebuild_from_wal(shared, &pending).await {
                Ok(bytes) => {
                    tracing::warn!(collection = %pending.collection.name, segment = %pending.segment.meta.id, "the local segment file {why}; rebuilt it from the wal");
                    bytes
                }
                Err(error) => {
                    // Dropping the permit without an outcome counts nothing.
                    drop(permit);
                    // Never dead-letter a damaged file: that would let the WAL go. The WAL keeps
                    // the records while the segment waits.
                    tracing::error!(collection = %pending.collection.name, segment = %pending.segment.meta.id, %error, "the local segment file {why} and could not be rebuilt; its records stay in the wal");
                    return Outcome::Retry(pending, config.max_delay);
                }
            }
        }
    };
    let started = std::time::Instant::now();
    let check_first = pending.attempts > 1;
    let result = tokio::time::timeout(
        config.attempt_timeout,
        remote.upload_segment(
            &pending.collection.name,
            &pending.segment.meta,
            bytes,
            check_first,
        ),
    )
    .await
    .unwrap_or_else(|_| Err(UploadError::Remote(crate::remote::RemoteError::timeout())));
    shared
        .instruments
        .upload_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            permit.success();
            shared.instruments.upload_success.inc();
            Outcome::Uploaded(pending)
        }
        Err(UploadError::Conflict) => {
            permit.failure();
            shared.instruments.upload_permanent.inc();
            Outcome::Fenced(pending)
        }
        Err(UploadError::Remote(error)) if error.kind == ErrorKind::Transient => {
            permit.failure();
            shared.instruments.upload_transient.inc();
            if pending.attempts >= config.max_attempts {
                let message = format!("upload failed {} times: {error}", pending.attempts);
                Outcome::Dead(pending, FailureClass::Exhausted, message)
            } else {
                let delay = config.backoff(pending.attempts);
                Outcome::Retry(pending, delay)
            }
        }
        Err(UploadError::Remote(error)) => {
            permit.failure();
            shared.instruments.upload_permanent.inc();
            Outcome::Dead(
                pending,
                FailureClass::Permanent,
                format!("upload failed permanently: {error}"),
            )
        }
    }
}

/// Rewrites a pending segment's local file from the WAL records of its LSN range (the WAL keeps
/// them until the segment is committed or pinned) and returns its bytes, which must match the
/// segment's checksum.
async fn rebuild_from_wal(shared: &Shared, pending: &Pending) -> Result<Bytes, String> {
    let meta = &pending.segment.meta;
    let range = meta.min_lsn..=meta.max_lsn;
    let wal = shared.wal.clone();
    let records = crate::store::blocking(move || wal.read_range(range))
        .await
        .map_err(|e| e.to_string())?;
    let entries =
        crate::store::rebuild_entries(&records, &pending.collection, (meta.min_lsn, meta.max_lsn));
    if entries.len() as u64 != meta.records {
        return Err(format!(
            "the wal holds {} of its {} records",
            entries.len(),
            meta.records
        ));
    }
    let write_id = meta
        .write_id
        .parse::<ulid::Ulid>()
        .map_err(|e| format!("bad write id: {e}"))?;
    let (bytes, _) = crate::segment::encode(
        &entries,
        shared.config.block_bytes,
        u128::from(write_id),
        Some((meta.min_lsn, meta.max_lsn)),
        shared.config.compression,
    );
    if crc32c::crc32c(&bytes) != meta.crc32c {
        return Err("the rebuilt file differs from the one the segment was made as".to_owned());
    }
    let path = pending.segment.local_path.clone();
    let written = bytes.clone();
    crate::store::blocking(move || crate::store::write_atomic(&path, &written))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Bytes::from(bytes))
}

/// Pins a segment and references it from a DLQ entry; on failure (a full queue) it goes back to
/// the queue, never dropped.
async fn dead_letter(shared: &Shared, pending: Pending, class: FailureClass, message: String) {
    let meta = &pending.segment.meta;
    let file = PinnedFile {
        path: pending.segment.local_path.clone(),
        size: meta.size,
        crc32c: meta.crc32c,
    };
    let key = format!("{}/{}", pending.collection.name, meta.id);
    let entry = NewEntry::pinned_file(DLQ_QUEUE, key, file, class, message.clone())
        .attempts(pending.attempts.max(1));
    match shared.dlq.push(entry).await {
        Ok(_) => {
            tracing::warn!(collection = %pending.collection.name, segment = %meta.id, %message, "segment pinned and sent to the dlq");
            pending.segment.state.lock().durability = Durability::Pinned;
            shared.instruments.dead_lettered.inc();
        }
        Err(error) => {
            tracing::error!(%error, segment = %meta.id, "could not dead-letter a segment; it stays queued");
            let delay = shared.config.upload.max_delay;
            let mut queue = shared.queue.lock();
            queue.pending.push_back(Pending {
                not_before: Instant::now() + delay,
                ..pending
            });
        }
    }
}

/// Commits every uploaded segment to the manifest. Returns false when the commit failed.
async fn commit_uploaded(shared: &Shared) -> bool {
    let uploaded = std::mem::take(&mut shared.queue.lock().uploaded);
    if uploaded.is_empty() {
        return true;
    }
    let mut by_collection: Vec<(Arc<Collection>, Vec<Arc<Segment>>)> = Vec::new();
    for (collection, segment) in &uploaded {
        // Only the live incarnation's segments: a dropped (perhaps re-created) collection's
        // uploads are left to orphan collection.
        let live = shared
            .collection(&collection.name)
            .is_some_and(|live| Arc::ptr_eq(&live, collection));
        if !live {
            continue;
        }
        match by_collection
            .iter_mut()
            .find(|(c, _)| Arc::ptr_eq(c, collection))
        {
            Some((_, segments)) => segments.push(Arc::clone(segment)),
            None => by_collection.push((Arc::clone(collection), vec![Arc::clone(segment)])),
        }
    }
    let Ok(permit) = shared.breaker.try_acquire_owned() else {
        shared.queue.lock().uploaded.extend(uploaded);
        return false;
    };
    let committed = shared
        .commit_manifest(|manifest| {
            for (collection, segments) in &by_collection {
                let metas: Vec<_> = segments.iter().map(|s| s.meta.clone()).collect();
                Shared::add_to_manifest(manifest, collection, &metas);
            }
        })
        .await;
    match committed {
        Ok(()) => {
            permit.success();
            for (collection, segments) in &by_collection {
                shared.after_commit(collection, segments).await;
            }
            true
        }
        Err(CommitError::Fenced(_)) => {
            permit.failure();
            false
        }
        Err(CommitError::Remote(error)) => {
            if error.kind == ErrorKind::Transient {
                permit.failure();
            } else {
                permit.failure();
                tracing::error!(%error, "manifest commit failed permanently; retrying later");
            }
            shared.queue.lock().uploaded.extend(uploaded);
            false
        }
    }
}

/// Files an upload's outcome: back into the queue, into the uploaded list, or to the DLQ.
async fn settle(shared: &Shared, outcome: Outcome) -> bool {
    let mut rejected = false;
    let mut fenced = false;
    let dead = {
        let mut queue = shared.queue.lock();
        queue.in_flight = queue.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Uploaded(p) => {
                queue.uploaded.push((p.collection, p.segment));
                None
            }
            Outcome::Retry(p, delay) => {
                queue.pending.push_back(Pending {
                    not_before: Instant::now() + delay,
                    ..p
                });
                None
            }
            Outcome::Rejected(p) => {
                rejected = true;
                queue.pending.push_front(p);
                None
            }
            Outcome::Dead(p, class, message) => Some((p, class, message)),
            Outcome::Fenced(p) => {
                queue.pending.push_front(p);
                fenced = true;
                None
            }
        }
    };
    if fenced {
        // Another writer's object at our segment's name: fenced (logged and counted there).
        shared.fence(crate::error::Fenced { version: 0 });
    }
    if let Some((pending, class, message)) = dead {
        dead_letter(shared, pending, class, message).await;
    }
    rejected
}

/// The worker loop; ends when the store is dropped, closed or fenced.
///
/// Up to `upload.parallelism` uploads run at once as their own tasks; a manifest is committed
/// once `upload.batch_segments` segments or `upload.batch_bytes` bytes are uploaded, or when
/// nothing else is in flight, so that uploads and commits overlap.
pub(crate) async fn run_worker(weak: Weak<Shared>) {
    let mut in_flight: futures::stream::FuturesUnordered<tokio::task::JoinHandle<Outcome>> =
        futures::stream::FuturesUnordered::new();
    let mut completed: Option<Outcome> = None;
    let mut pause_until: Option<Instant> = None;
    loop {
        let (notify, wake_at) = {
            let Some(shared) = weak.upgrade() else { return };
            if shared.closed.load(Ordering::Acquire) || shared.fenced.lock().is_some() {
                shared.progress.notify_waiters();
                return;
            }
            let config = shared.config.upload.clone();
            if let Some(outcome) = completed.take()
                && settle(&shared, outcome).await
            {
                pause_until = Some(Instant::now() + config.breaker_poll_interval);
            }
            let now = Instant::now();
            if pause_until.is_some_and(|until| until <= now) {
                pause_until = None;
            }
            if pause_until.is_none() {
                let room = config.parallelism.saturating_sub(in_flight.len());
                let launch = shared.queue.lock().take_batch(room, u64::MAX, now);
                for pending in launch {
                    let shared = Arc::clone(&shared);
                    in_flight.push(tokio::spawn(
                        async move { upload_one(&shared, pending).await },
                    ));
                }
            }
            let (count, bytes) = {
                let queue = shared.queue.lock();
                let bytes: u64 = queue.uploaded.iter().map(|(_, s)| s.meta.size).sum();
                (queue.uploaded.len(), bytes)
            };
            let batch_full = count >= config.batch_segments || bytes >= config.batch_bytes;
            if count > 0 && (batch_full || in_flight.is_empty()) && !commit_uploaded(&shared).await
            {
                pause_until = Some(Instant::now() + config.breaker_poll_interval);
            }
            shared.update_gauges();
            if count > 0 {
                shared.trim_wal().await;
            }
            if shared.fenced.lock().is_some() {
                shared.progress.notify_waiters();
                return;
            }
            let wake_at = {
                let queue = shared.queue.lock();
                let waiting = !queue.pending.is_empty() || !queue.uploaded.is_empty();
                match pause_until {
                    Some(pause) => waiting.then_some(pause),
                    None if in_flight.len() < config.parallelism => queue.next_due(),
                    None => None,
                }
            };
            (Arc::clone(&shared.upload_notify), wake_at)
        };
        let notified = notify.notified();
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => match done {
                Ok(outcome) => completed = Some(outcome),
                Err(error) => {
                    // An upload task panicked: its segment stays pending in its collection (the
                    // WAL keeps its records) and is re-queued on the next open.
                    tracing::error!(%error, "an upload task failed");
                    if let Some(shared) = weak.upgrade() {
                        let mut queue = shared.queue.lock();
                        queue.in_flight = queue.in_flight.saturating_sub(1);
                    }
                }
            },
            () = notified => {}
            () = sleep_until_opt(wake_at) => {}
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Re-uploads a pinned segment from the DLQ and commits it; the entry is removed on success.
#[derive(Debug)]
pub(crate) struct Redrive {
    pub(crate) shared: Weak<Shared>,
}

#[async_trait]
impl RedriveHandler for Redrive {
    async fn redrive(&self, entry: &DlqEntry) -> Result<(), HandlerError> {
        let shared = self
            .shared
            .upgrade()
            .ok_or_else(|| HandlerError::new("the store is closed"))?;
        let (name, id) = entry.key().split_once('/').ok_or_else(|| {
            HandlerError::new("malformed segment key").with_class(FailureClass::Poisoned)
        })?;
        let Some(collection) = shared.collection(name) else {
            // The collection was dropped: nothing left to upload.
            return Ok(());
        };
        let segment = collection
            .data
            .read()
            .segments
            .iter()
            .find(|s| s.meta.id == id)
            .cloned();
        let Some(segment) = segment else {
            return Ok(());
        };
        if segment.durability() == Durability::Committed {
            return Ok(());
        }
        let remote = shared
            .remote
            .as_ref()
            .ok_or_else(|| HandlerError::new("no object store is configured"))?;
        let bytes = read_local(&segment)
            .await
            .map_err(|e| HandlerError::new(format!("pinned segment unreadable: {e}")))?;
        if crc32c::crc32c(&bytes) != segment.meta.crc32c {
            return Err(HandlerError::new("pinned segment fails its checksum")
                .with_class(FailureClass::Poisoned));
        }
        let permit = shared
            .breaker
            .try_acquire_owned()
            .map_err(|_| HandlerError::new("the upload circuit breaker is open"))?;
        match remote
            .upload_segment(name, &segment.meta, bytes, true)
            .await
        {
            Ok(()) => permit.success(),
            Err(error) => {
                permit.failure();
                return Err(HandlerError::new(format!("re-upload failed: {error}")));
            }
        }
        shared
            .commit_manifest(|manifest| {
                Shared::add_to_manifest(manifest, &collection, std::slice::from_ref(&segment.meta))
            })
            .await
            .map_err(|e| HandlerError::new(format!("manifest commit failed: {e}")))?;
        shared
            .after_commit(&collection, std::slice::from_ref(&segment))
            .await;
        shared.update_gauges();
        shared.trim_wal().await;
        tracing::info!(
            collection = name,
            segment = id,
            "redrive uploaded a pinned segment"
        );
        Ok(())
    }
}
