//! The object-store manifest: commits, the local copy, fencing and the claim after an outage.

use std::fs::{self};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crate::collection::{Collection, Durability, Residency, Segment};
use crate::config::TieringPolicy;
use crate::error::Fenced;
use crate::orphans::{self, MANIFESTS_KEPT};
use crate::remote::{self, Manifest, ManifestCollection};
use crate::segment::SegmentMeta;
use crate::upload::{self};

use super::*;

/// After an open during an outage: claims the prefix once the object store answers (based on
/// the local manifest copy, if the newest manifest is that copy's writer's or older; else this
/// store is fenced), then starts the upload worker and the orphan pass that follows an open.
/// Retries with the upload backoff meanwhile.
pub(super) async fn reconcile_task(weak: Weak<Shared>) {
    let mut attempt = 0;
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let Some(remote) = shared.remote.clone() else {
            return;
        };
        if shared.is_closed() {
            return;
        }
        attempt += 1;
        let local = shared.manifest.lock().await.clone();
        let claim = remote.claim(Some(&local), |manifest| {
            leave_out_dropped(manifest, &shared.dropped.lock());
            // Collections created during the outage are committed with the claim.
            shared.include_live_collections(manifest);
        });
        let limit = shared.config.upload.attempt_timeout;
        match tokio::time::timeout(limit, claim)
            .await
            .unwrap_or_else(|_| Err(remote::RemoteError::timeout().into()))
        {
            Ok(claimed) => {
                let version = claimed.version;
                {
                    let mut current = shared.manifest.lock().await;
                    *current = claimed;
                    shared.save_manifest_copy(&current).await;
                }
                shared.claimed.store(true, Ordering::Release);
                let mut tasks = vec![tokio::spawn(upload::run_worker(Arc::downgrade(&shared)))];
                if shared.collects_orphans() {
                    tasks.push(tokio::spawn(orphans::after_open(Arc::downgrade(&shared))));
                }
                shared.tasks.lock().extend(tasks);
                shared.upload_notify.notify_one();
                shared.progress.notify_waiters();
                tracing::info!(
                    version,
                    "the object store answers: prefix claimed, uploads resume"
                );
                return;
            }
            Err(remote::CommitError::Fenced(fenced)) => {
                shared.fence(fenced);
                return;
            }
            Err(remote::CommitError::Remote(error)) => {
                tracing::debug!(%error, attempt, "the object store still cannot be claimed");
            }
        }
        let delay = shared.config.upload.backoff(attempt);
        drop(shared);
        tokio::time::sleep(delay).await;
    }
}

/// Removes from `manifest` every collection entry of an incarnation a tombstone names.
pub(super) fn leave_out_dropped(manifest: &mut Manifest, dropped: &[CatalogEntry]) {
    for tombstone in dropped {
        if manifest
            .collections
            .get(&tombstone.name)
            .is_some_and(|entry| entry.incarnation <= tombstone.incarnation)
        {
            manifest.collections.remove(&tombstone.name);
        }
    }
}

impl Shared {
    /// Applies `change` to the current manifest and commits it as the next version.
    pub(crate) async fn commit_manifest(
        &self,
        change: impl FnOnce(&mut Manifest),
    ) -> Result<(), crate::remote::CommitError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        if let Some(fenced) = self.fenced.lock().clone() {
            return Err(fenced.into());
        }
        if self.lock.lock().is_none() {
            // Closed: the directory (and the prefix) may belong to another store now.
            return Err(crate::remote::RemoteError::closed().into());
        }
        if !self.claimed.load(Ordering::Acquire) {
            return Err(crate::remote::RemoteError::unclaimed().into());
        }
        let mut current = self.manifest.lock().await;
        let epoch = remote.epoch();
        if self.manifest_uncertain.load(Ordering::Acquire) {
            // An earlier commit failed: it may have landed after all, and another writer may
            // have claimed the prefix since (at the version we did not get). Read the newest
            // before writing: another epoch there fences us; our own landed attempt is skipped.
            let newest = remote
                .latest_manifest()
                .await
                .map_err(crate::remote::CommitError::Remote)?;
            match newest {
                Some(newest) if newest.epoch == epoch && newest.writer == remote.writer => {
                    current.version = current.version.max(newest.version);
                }
                newest => {
                    let version = newest.map_or(0, |m| m.version);
                    return Err(self.fence(Fenced { version }).into());
                }
            }
            self.manifest_uncertain.store(false, Ordering::Release);
        }
        let mut next = current.clone();
        change(&mut next);
        self.include_live_collections(&mut next);
        // A dropped incarnation never goes back into the manifest (an upload of it may finish
        // after the drop).
        leave_out_dropped(&mut next, &self.dropped.lock());
        next.version = current.version + 1;
        next.epoch = epoch;
        next.writer.clone_from(&remote.writer);
        match remote.commit(&next).await {
            Ok(()) => {
                let version = next.version;
                *current = next;
                // Before any caller deletes local files the commit made redundant.
                self.save_manifest_copy(&current).await;
                drop(current);
                // The newest MANIFESTS_KEPT stay; one whose delete fails is left to orphan
                // collection.
                if version > MANIFESTS_KEPT {
                    remote.delete_manifest(version - MANIFESTS_KEPT).await;
                }
                Ok(())
            }
            Err(crate::remote::CommitError::Fenced(fenced)) => Err(self.fence(fenced).into()),
            Err(other) => {
                // The put may have landed all the same (a lost response, a timeout), or not.
                // The version is not retired blindly (a new writer may claim it, and our next
                // version would then hide its claim): the next commit reads the newest first.
                self.manifest_uncertain.store(true, Ordering::Release);
                Err(other)
            }
        }
    }

    /// Writes `data_dir/manifest.json`, the copy of the last committed manifest an open during an
    /// outage starts from. On failure the copy is removed (a stale copy would miss segments whose
    /// local files the commit let go), so such an open is refused until a later commit writes it.
    pub(crate) async fn save_manifest_copy(&self, manifest: &Manifest) {
        let bytes = serde_json::to_vec(manifest).unwrap_or_default();
        let (path, fs) = (self.manifest_copy_path.clone(), Arc::clone(&self.fs));
        let saved = blocking(move || {
            write_atomic_on(&*fs, &path, &bytes).inspect_err(|_| {
                let _ = fs.remove_file(&path);
            })
        })
        .await;
        if let Err(error) = saved {
            tracing::error!(%error, "could not write the local manifest copy; an open during an object-store outage is refused until the next commit writes it");
        }
    }

    /// Adds an empty entry for every live object-store collection the manifest lacks (or holds
    /// under an older incarnation), so that a collection is in the manifest from its creation,
    /// not from its first segment.
    pub(super) fn include_live_collections(&self, manifest: &mut Manifest) {
        for collection in self.collections.read().values() {
            if collection.policy.uses_object_store() {
                Shared::add_to_manifest(manifest, collection, &[]);
            }
        }
    }

    /// Whether the manifest in force is behind the catalog: it lists a dropped incarnation, or,
    /// with `new_collections`, lacks a live object-store collection (or holds it under an older
    /// incarnation). Never while the prefix is unclaimed (nothing can be committed then; the
    /// claim reconciles).
    pub(crate) async fn manifest_behind(&self, new_collections: bool) -> bool {
        if self.remote.is_none() || !self.is_claimed() {
            return false;
        }
        let manifest = self.manifest.lock().await;
        let dropped = self.dropped.lock().clone();
        let lists_dropped = manifest.collections.iter().any(|(name, entry)| {
            dropped
                .iter()
                .any(|t| t.name == *name && t.incarnation == entry.incarnation)
        });
        lists_dropped
            || (new_collections
                && self.collections.read().values().any(|c| {
                    c.policy.uses_object_store()
                        && !c.dropped.load(Ordering::Acquire)
                        && manifest
                            .collections
                            .get(&c.name)
                            .is_none_or(|entry| entry.incarnation < c.incarnation)
                }))
    }

    /// Whether the store holds its object-store prefix (always, without an object store).
    pub(crate) fn is_claimed(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }

    /// Records that another writer claimed the prefix: uploads, commits and orphan collection
    /// stop, and writes are refused.
    pub(crate) fn fence(&self, fenced: Fenced) -> Fenced {
        tracing::error!(
            version = fenced.version,
            "fenced by another writer; uploads stop"
        );
        *self.fenced.lock() = Some(fenced.clone());
        self.instruments.fenced.set(1);
        self.progress.notify_waiters();
        fenced
    }

    /// Adds `segments` of `collection` to the manifest entry of the collection.
    pub(crate) fn add_to_manifest(
        manifest: &mut Manifest,
        collection: &Collection,
        segments: &[SegmentMeta],
    ) {
        // A dropped incarnation's segments never enter a manifest, and an older incarnation
        // never replaces a newer one's entry.
        if collection.dropped.load(Ordering::Acquire)
            || manifest
                .collections
                .get(&collection.name)
                .is_some_and(|entry| entry.incarnation > collection.incarnation)
        {
            return;
        }
        let entry = manifest
            .collections
            .entry(collection.name.clone())
            .or_insert_with(|| ManifestCollection {
                incarnation: collection.incarnation,
                policy: collection.policy,
                segments: Vec::new(),
            });
        if entry.incarnation != collection.incarnation {
            *entry = ManifestCollection {
                incarnation: collection.incarnation,
                policy: collection.policy,
                segments: Vec::new(),
            };
        }
        for meta in segments {
            if !entry.segments.iter().any(|s| s.id == meta.id) {
                entry.segments.push(meta.clone());
            }
        }
    }

    /// Marks segments committed: `s3_only` ones leave memory, local files go.
    pub(crate) async fn after_commit(&self, collection: &Collection, segments: &[Arc<Segment>]) {
        let mut files = Vec::new();
        for segment in segments {
            let mut state = segment.state.lock();
            if collection.policy == TieringPolicy::S3Only {
                // The object holds the same bytes as the file: its block index stays valid.
                state.residency = match &state.residency {
                    Residency::LocalFile(index) => Residency::Remote(Some(Arc::clone(index))),
                    _ => Residency::Remote(None),
                };
            }
            if state.has_local_file {
                state.has_local_file = false;
                files.push(segment.local_path.clone());
            }
        }
        if !files.is_empty() {
            blocking(move || {
                for file in files {
                    let _ = fs::remove_file(file);
                }
            })
            .await;
        }
        // Committed last: whoever sees the backlog at zero sees the local files gone too.
        for segment in segments {
            segment.state.lock().durability = Durability::Committed;
        }
    }
}
