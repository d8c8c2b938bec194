//! [`Store::backup`]: the consistent point, the copy under a retention lease, `backup.json` last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::ObjectStoreExt as _;

use super::lease::LeaseGuard;
use super::manifest::{
    BackupCatalog, BackupCounts, BackupFile, BackupManifest, CATALOG_FILE, CatalogCollection,
    CatalogSegment, ConsistentPoint, FORMAT, FORMAT_VERSION, FileKind, MANIFEST_FILE, TAIL_FILE,
    sha256,
};
use super::{BackupError, BackupTarget, tail};
use crate::collection::{Collection, Segment};
use crate::store::{DLQ_QUEUE, Shared, Store, blocking};
use crate::wal::WalRecord;

/// What the consistent point captured.
struct Captured {
    lsn: u64,
    at: SystemTime,
    /// The first WAL LSN not covered by a segment of some collection.
    tail_from: u64,
    collections: Vec<(Arc<Collection>, Vec<Arc<Segment>>)>,
}

impl Store {
    /// Writes a consistent online backup of the store, its DLQ and (when the target names one)
    /// the runtime settings file to `<dest>/<backup id>/`, and returns its manifest, which is
    /// written last as `backup.json`. Writes continue meanwhile: the backup holds exactly the
    /// writes acknowledged up to its consistent point's LSN (the segments then referenced,
    /// copied under a retention lease that compaction and orphan collection honour, and the
    /// WAL records beyond them). See the crate README, "Backups".
    ///
    /// # Errors
    ///
    /// [`BackupError::InsideLive`] for a destination inside the data directory or the store's
    /// object-store prefix; [`BackupError::Unavailable`] when the store is closed or fenced;
    /// [`BackupError::Source`], [`BackupError::Destination`], [`BackupError::Dlq`] naming the
    /// file that could not be read or written; [`BackupError::CollectionDropped`].
    /// A failed backup leaves no `backup.json`: it is not a complete backup.
    pub async fn backup(&self, dest: &BackupTarget) -> Result<BackupManifest, BackupError> {
        let shared = self.shared();
        check_destination(shared, dest)?;
        if shared.is_closed() {
            return Err(BackupError::Unavailable("the store is closed".to_owned()));
        }
        if let Some(fenced) = self.fenced() {
            return Err(BackupError::Unavailable(fenced.to_string()));
        }
        let (captured, _lease) = capture(shared);
        let unix_time = captured
            .at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = backup_id(captured.at);
        let target = dest.child(&id);
        tracing::info!(backup = %id, lsn = captured.lsn, destination = dest.url(), "backup started");
        let mut files = Vec::new();
        let mut catalog = BackupCatalog {
            consistent_lsn: captured.lsn,
            tail_from_lsn: captured.tail_from,
            collections: Vec::new(),
        };

        let segments_max: BTreeMap<&str, (u64, u64)> = captured
            .collections
            .iter()
            .map(|(c, segments)| {
                let max = segments.iter().map(|s| s.meta.max_lsn).max().unwrap_or(0);
                (c.name.as_str(), (c.incarnation, max))
            })
            .collect();
        // The segments first, each one's records counted; which ids are live per collection.
        let mut live: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
        let mut listed: BTreeMap<String, Vec<CatalogSegment>> = BTreeMap::new();
        for (collection, segments) in &captured.collections {
            let live = live.entry(collection.name.clone()).or_default();
            let listed = listed.entry(collection.name.clone()).or_default();
            for segment in segments {
                let bytes = read_segment(shared, collection, segment).await?;
                let decoded = {
                    let bytes = bytes.clone();
                    blocking(move || crate::segment::decode_all(&bytes)).await
                };
                let (entries, _, _) = decoded.map_err(|e| BackupError::Source {
                    path: segment.local_path.display().to_string(),
                    reason: format!("the segment does not decode: {e}"),
                })?;
                for (id, entry) in entries {
                    live.insert(id, entry.value.is_some());
                }
                let path = format!("segments/{}/{}.seg", collection.name, segment.meta.id);
                files.push(put(&target, &path, FileKind::Segment, bytes).await?);
                listed.push(CatalogSegment {
                    id: segment.meta.id.clone(),
                    min_lsn: segment.meta.min_lsn,
                    max_lsn: segment.meta.max_lsn,
                });
            }
        }

        // Then the WAL records beyond each collection's segments, up to the point (the lease
        // has kept them; writes after the point are in the WAL too and are left out).
        let tail: Vec<WalRecord> = {
            let wal = shared.wal.clone();
            let range = captured.tail_from..=captured.lsn;
            blocking(move || wal.read_range(range))
                .await
                .map_err(|e| BackupError::Source {
                    path: "wal".to_owned(),
                    reason: e.to_string(),
                })?
        };
        let tail: Vec<WalRecord> =
            tail.into_iter()
                .filter(|r| {
                    r.lsn <= captured.lsn
                        && segments_max.get(r.collection.as_str()).is_some_and(
                            |(incarnation, max)| *incarnation == r.incarnation && r.lsn > *max,
                        )
                })
                .collect();

        let mut counts = BackupCounts::default();
        for (collection, _) in &captured.collections {
            let live = live.entry(collection.name.clone()).or_default();
            for record in tail.iter().filter(|r| r.collection == collection.name) {
                for (id, value) in &record.entries {
                    live.insert(id.clone(), value.is_some());
                }
            }
            let records = live.values().filter(|live| **live).count() as u64;
            counts.collections += 1;
            counts.records += records;
            catalog.collections.push(CatalogCollection {
                name: collection.name.clone(),
                policy: collection.policy,
                incarnation: collection.incarnation,
                segments_max_lsn: segments_max
                    .get(collection.name.as_str())
                    .map_or(0, |(_, max)| *max),
                segments: listed.remove(&collection.name).unwrap_or_default(),
                records,
            });
        }
        let window_start_lsn = segments_max
            .values()
            .map(|(_, max)| *max)
            .max()
            .unwrap_or(0);
        let tail_bytes = Bytes::from(tail::encode(&tail));
        files.push(put(&target, TAIL_FILE, FileKind::WalTail, tail_bytes).await?);

        // The DLQ, staged in a temporary directory and copied.
        let staging = Staging::new(&id)?;
        let dlq_dir = staging.0.join("dlq");
        let dlq = shared.dlq.clone();
        let written = {
            let dir = dlq_dir.clone();
            blocking(move || dlq.write_backup(&dir, &[DLQ_QUEUE])).await?
        };
        counts.dlq_entries = written.entries as u64;
        for relative in &written.files {
            let source = dlq_dir.join(relative);
            let bytes = read_local(&source).await?;
            let relative = relative.to_string_lossy().replace('\\', "/");
            let kind = if relative == mainstay_dlq::BACKUP_SNAPSHOT_FILE {
                FileKind::DlqSnapshot
            } else {
                FileKind::DlqPayload
            };
            files.push(put(&target, &format!("dlq/{relative}"), kind, bytes).await?);
        }
        drop(staging);

        if let Some(settings) = dest.settings_path() {
            match tokio::fs::read(settings).await {
                Ok(bytes) => {
                    let name = settings.file_name().map_or_else(
                        || "settings".to_owned(),
                        |n| n.to_string_lossy().into_owned(),
                    );
                    let path = format!("settings/{name}");
                    files.push(put(&target, &path, FileKind::Settings, bytes.into()).await?);
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(BackupError::Source {
                        path: settings.display().to_string(),
                        reason: error.to_string(),
                    });
                }
            }
        }

        let catalog_bytes = serde_json::to_vec_pretty(&catalog).unwrap_or_default();
        files.insert(
            0,
            put(
                &target,
                CATALOG_FILE,
                FileKind::Catalog,
                catalog_bytes.into(),
            )
            .await?,
        );

        let (manifest, bytes) = BackupManifest {
            format: FORMAT.to_owned(),
            format_version: FORMAT_VERSION,
            id: id.clone(),
            source_version: env!("CARGO_PKG_VERSION").to_owned(),
            consistent_point: ConsistentPoint {
                lsn: captured.lsn,
                unix_time,
                window_start_lsn,
            },
            files,
            counts,
            checksum: String::new(),
        }
        .seal();
        target.put(MANIFEST_FILE, bytes.into()).await?;
        tracing::info!(
            backup = %id,
            lsn = captured.lsn,
            files = manifest.files.len(),
            records = counts.records,
            dlq_entries = counts.dlq_entries,
            "backup written"
        );
        Ok(manifest)
    }
}

/// Takes the consistent point: while no write is published, the LSN, the collections and their
/// segments (leased while the lease is held), and the first WAL LSN the tail needs.
fn capture(shared: &Arc<Shared>) -> (Captured, LeaseGuard) {
    // Keeps the whole WAL until the tail's first LSN is known.
    let lease = LeaseGuard {
        leases: Arc::clone(&shared.leases),
        id: shared.leases.acquire(0),
        remote: shared.remote.clone(),
    };
    let captured = shared.with_writes_paused(|lsn| {
        let at = SystemTime::now();
        let mut collections = Vec::new();
        let mut tail_from = lsn.saturating_add(1);
        for collection in shared.collections.read().values() {
            let data = collection.data.read();
            // Leased under the collection's lock: a compaction that replaces these segments
            // later finds them leased.
            shared
                .leases
                .hold_segments(lease.id, data.segments.iter().map(|s| s.meta.id.clone()));
            if let Some(lowest) = data.lowest_uncovered() {
                tail_from = tail_from.min(lowest);
            }
            collections.push((Arc::clone(collection), data.segments.clone()));
        }
        Captured {
            lsn,
            at,
            tail_from,
            collections,
        }
    });
    shared.leases.set_wal_from(lease.id, captured.tail_from);
    (captured, lease)
}

/// The bytes of a captured segment: its local file, else its object; checked against its size
/// and CRC-32C.
async fn read_segment(
    shared: &Shared,
    collection: &Collection,
    segment: &Segment,
) -> Result<Bytes, BackupError> {
    let path = segment.local_path.clone();
    let local = blocking(move || std::fs::read(path)).await;
    let bytes = match local {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let remote = shared
                .remote
                .as_ref()
                .filter(|_| collection.policy.uses_object_store());
            let dropped = || {
                collection
                    .dropped
                    .load(std::sync::atomic::Ordering::Acquire)
            };
            let Some(remote) = remote else {
                if dropped() {
                    return Err(BackupError::CollectionDropped(collection.name.clone()));
                }
                return Err(BackupError::Source {
                    path: segment.local_path.display().to_string(),
                    reason: error.to_string(),
                });
            };
            let object = remote.segment_path(&collection.name, &segment.meta.id);
            let fetched = remote.store.get(&object).await;
            match fetched {
                Ok(result) => result.bytes().await.map_err(|e| BackupError::Source {
                    path: object.to_string(),
                    reason: e.to_string(),
                })?,
                Err(_) if dropped() => {
                    return Err(BackupError::CollectionDropped(collection.name.clone()));
                }
                Err(e) => {
                    return Err(BackupError::Source {
                        path: object.to_string(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Err(error) => {
            return Err(BackupError::Source {
                path: segment.local_path.display().to_string(),
                reason: error.to_string(),
            });
        }
    };
    if bytes.len() as u64 != segment.meta.size || crc32c::crc32c(&bytes) != segment.meta.crc32c {
        return Err(BackupError::Source {
            path: segment.local_path.display().to_string(),
            reason: "the segment's size or crc32c differs from its metadata: it is damaged"
                .to_owned(),
        });
    }
    Ok(bytes)
}

/// Writes one file of the backup and describes it.
async fn put(
    target: &BackupTarget,
    path: &str,
    kind: FileKind,
    bytes: Bytes,
) -> Result<BackupFile, BackupError> {
    let file = BackupFile {
        path: path.to_owned(),
        kind,
        size: bytes.len() as u64,
        sha256: sha256(&bytes),
    };
    target.put(path, bytes).await?;
    Ok(file)
}

async fn read_local(path: &Path) -> Result<Bytes, BackupError> {
    tokio::fs::read(path)
        .await
        .map(Bytes::from)
        .map_err(|e| BackupError::Source {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// A temporary directory, removed when dropped.
pub(crate) struct Staging(pub(crate) PathBuf);

impl Staging {
    pub(crate) fn new(tag: &str) -> Result<Self, BackupError> {
        let dir =
            std::env::temp_dir().join(format!("mainstay-backup-{tag}-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(&dir).map_err(|e| BackupError::Source {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `<UTC time as YYYYMMDDTHHMMSSZ>-<ULID>`: sorts by creation time, unique.
fn backup_id(at: SystemTime) -> String {
    let time: String = humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{time}-{}", ulid::Ulid::from_datetime(at))
}

/// Refuses a destination inside the live data directory or the store's object-store prefix.
fn check_destination(shared: &Shared, dest: &BackupTarget) -> Result<(), BackupError> {
    let inside = |what: String| {
        Err(BackupError::InsideLive {
            url: dest.url().to_owned(),
            inside: what,
        })
    };
    if let Some(dir) = dest.local_dir() {
        let data_dir = &shared.config.data_dir;
        let data_dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.clone());
        if dir.starts_with(&data_dir) {
            return inside(format!("data directory {}", data_dir.display()));
        }
        if let Some(objects) = shared
            .config
            .object_store_url
            .as_deref()
            .and_then(|url| url.strip_prefix("file://"))
        {
            let objects = Path::new(objects);
            let objects = objects
                .canonicalize()
                .unwrap_or_else(|_| objects.to_path_buf());
            if dir.starts_with(&objects) {
                return inside(format!("object-store prefix {}", objects.display()));
            }
        }
        return Ok(());
    }
    let within = |outer: &str, inner: &str| {
        let outer = outer.trim_matches('/');
        let inner = inner.trim_matches('/');
        outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"))
    };
    if let (Some(live), Some(url)) = (
        shared
            .config
            .object_store_url
            .as_deref()
            .and_then(|u| u.strip_prefix("s3://")),
        dest.url().strip_prefix("s3://"),
    ) {
        let (live_bucket, live_prefix) = live.split_once('/').unwrap_or((live, ""));
        let (bucket, prefix) = url.split_once('/').unwrap_or((url, ""));
        if live_bucket == bucket && within(live_prefix, prefix) {
            return inside(format!("object-store prefix s3://{live}"));
        }
    }
    if let Some(remote) = &shared.remote
        && dest.same_store(&remote.store)
        && within(remote.prefix().as_ref(), dest.prefix())
    {
        return inside(format!(
            "object-store prefix {:?}",
            remote.prefix().as_ref()
        ));
    }
    Ok(())
}
