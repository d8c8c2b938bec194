//! Collections and the catalog file that makes them durable.

use std::fs::{self};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use crate::collection::{Collection, Data};
use crate::config::TieringPolicy;
use crate::error::CollectionError;
use crate::names::valid_collection_name;

use super::*;

impl Store {
    /// Creates a collection with a tiering policy.
    ///
    /// # Errors
    ///
    /// [`CollectionError`] for an invalid or taken name, an object-store policy without a store,
    /// or a failed catalog write (then the collection does not exist and the create can be
    /// retried).
    pub async fn create_collection(
        &self,
        name: &str,
        policy: TieringPolicy,
    ) -> Result<(), CollectionError> {
        if !valid_collection_name(name) {
            return Err(CollectionError::InvalidName(name.to_owned()));
        }
        if policy.uses_object_store() && self.shared.remote.is_none() {
            return Err(CollectionError::NoObjectStore(policy.as_str()));
        }
        // The collection is live only once its catalog entry is durable: a failed write leaves
        // nothing behind (the incarnation number it took is simply never used).
        let _catalog = self.shared.catalog_write.lock().await;
        if self.shared.collections.read().contains_key(name) {
            return Err(CollectionError::AlreadyExists(name.to_owned()));
        }
        let incarnation = {
            let mut next = self.shared.next_incarnation.lock();
            let value = *next;
            *next += 1;
            value
        };
        let mut entries = self.shared.catalog_entries();
        entries.push(CatalogEntry {
            name: name.to_owned(),
            policy,
            incarnation,
        });
        let dropped = self.shared.dropped.lock().clone();
        self.shared.write_catalog(entries, dropped).await?;
        self.shared.collections.write().insert(
            name.to_owned(),
            Arc::new(Collection {
                name: name.to_owned(),
                policy,
                incarnation,
                data: RwLock::new(Data::default()),
                flush_lock: tokio::sync::Mutex::new(()),
                compact_lock: tokio::sync::Mutex::new(()),
                flush_scheduled: AtomicBool::new(false),
                dropped: AtomicBool::new(false),
            }),
        );
        Ok(())
    }

    /// Drops a collection: its records, local files, objects and DLQ entries. Returns whether it
    /// existed. The drop is durable once the catalog is; the manifest catches up on its next
    /// commit when it cannot be committed now (objects are deleted only once no manifest of this
    /// store lists them, else by orphan collection).
    ///
    /// # Errors
    ///
    /// [`CollectionError`] for an invalid name or a failed catalog write (then nothing was
    /// dropped and the collection stays usable).
    pub async fn drop_collection(&self, name: &str) -> Result<bool, CollectionError> {
        if !valid_collection_name(name) {
            return Err(CollectionError::InvalidName(name.to_owned()));
        }
        // The catalog is the local truth and goes first: once it is durable without the
        // collection (and with a tombstone of its incarnation, which keeps the manifest's entry
        // from bringing it back at the next open), the drop has happened; before, nothing has
        // changed and the collection stays fully usable. The manifest catches up on its next
        // commit, which leaves out tombstoned incarnations.
        let catalog = self.shared.catalog_write.lock().await;
        let Some(collection) = self.shared.collection(name) else {
            return Ok(false);
        };
        let uses_manifest = self.shared.remote.is_some() && collection.policy.uses_object_store();
        let mut dropped = self.shared.dropped.lock().clone();
        if uses_manifest {
            dropped.push(CatalogEntry {
                name: name.to_owned(),
                policy: collection.policy,
                incarnation: collection.incarnation,
            });
        }
        let entries = self
            .shared
            .catalog_entries()
            .into_iter()
            .filter(|entry| entry.name != name)
            .collect();
        self.shared.write_catalog(entries, dropped.clone()).await?;
        *self.shared.dropped.lock() = dropped;
        self.shared.collections.write().remove(name);
        collection.dropped.store(true, Ordering::SeqCst);
        let _flush = collection.flush_lock.lock().await;
        let _compact = collection.compact_lock.lock().await;
        self.shared.queue.lock().remove_collection(&collection);
        let segments = std::mem::take(&mut collection.data.write().segments);
        let dir = self.shared.segments_dir.join(name);
        let _ = blocking(move || fs::remove_dir_all(&dir)).await;
        // A new collection of this name may be created from here on: its queue entries and files
        // are its own.
        drop(catalog);
        let listed = uses_manifest
            && self
                .shared
                .manifest
                .lock()
                .await
                .collections
                .get(name)
                .is_some_and(|entry| entry.incarnation <= collection.incarnation);
        let committed = if listed {
            match self.shared.commit_manifest(|_| {}).await {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, collection = name, "the manifest still lists a dropped collection; its next commit leaves it out");
                    false
                }
            }
        } else {
            true
        };
        // Objects go only once no manifest of ours references them; otherwise orphan collection
        // deletes them after the manifest caught up.
        if let Some(remote) = &self.shared.remote
            && committed
        {
            for segment in &segments {
                let _ = remote
                    .delete(&remote.segment_path(name, &segment.meta.id))
                    .await;
                self.shared.cache.lock().forget(&segment.meta.id);
            }
        }
        let prefix = format!("{name}/");
        for (id, _) in dlq_entries(&self.shared.dlq)
            .into_iter()
            .filter(|(_, key)| key.starts_with(&prefix))
        {
            let _ = self.shared.dlq.delete(id).await;
        }
        self.shared.update_gauges();
        self.shared.trim_wal().await;
        Ok(true)
    }

    /// The collections, by name.
    #[must_use]
    pub fn collections(&self) -> Vec<CollectionInfo> {
        self.shared
            .collections
            .read()
            .values()
            .map(|c| CollectionInfo {
                name: c.name.clone(),
                policy: c.policy,
                segments: c.data.read().segments.len(),
            })
            .collect()
    }
}

impl Shared {
    pub(super) async fn persist_catalog(&self) -> Result<(), CollectionError> {
        let _guard = self.catalog_write.lock().await;
        let dropped = self.dropped.lock().clone();
        self.write_catalog(self.catalog_entries(), dropped).await
    }

    /// The catalog entries of the live collections.
    pub(super) fn catalog_entries(&self) -> Vec<CatalogEntry> {
        self.collections
            .read()
            .values()
            .map(|c| CatalogEntry {
                name: c.name.clone(),
                policy: c.policy,
                incarnation: c.incarnation,
            })
            .collect()
    }

    /// Writes the catalog durably; the caller holds `catalog_write`.
    pub(super) async fn write_catalog(
        &self,
        collections: Vec<CatalogEntry>,
        dropped: Vec<CatalogEntry>,
    ) -> Result<(), CollectionError> {
        let file = CatalogFile {
            next_incarnation: *self.next_incarnation.lock(),
            lsn_floor: self.wal.last_lsn(),
            collections,
            dropped,
        };
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        let (path, fs) = (self.catalog_path.clone(), Arc::clone(&self.fs));
        blocking(move || {
            write_atomic_on(&*fs, &path, &bytes)
                .map_err(|source| CollectionError::Io { path, source })
        })
        .await
    }
}
