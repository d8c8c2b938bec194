//! Handing a stopped store's acknowledged records to the current writer of its prefix.
//!
//! A store fenced by another writer refuses writes, but what it acknowledged and had not
//! committed to the object store is still in its data directory: in its WAL and its local
//! segments (pending, pinned, or the whole of a `memory` collection). [`HandoverSource`] opens
//! such a directory for recovery only (it takes the directory's lock, reads the catalog, the WAL
//! and the local segments, and writes nothing, neither there nor in the object store) and yields,
//! per collection, the newest version of every record it holds. [`Store::accept_handover`]
//! replays them into the current writer through its normal write path, skipping every id the
//! current writer wrote since it took over (decision 0072). [`HandoverSource::finish`] moves the
//! WAL and the segments aside once every record was accepted, so that an interrupted handover
//! can simply be run again.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;

use crate::collection::lookup_memory;
use crate::config::TieringPolicy;
use crate::error::{CollectionError, ReadError, WriteError};
use crate::names::valid_collection_name;
use crate::segment;
use crate::store::Store;
use crate::wal;

/// Why a data directory could not be read, or moved aside, for a handover.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// The directory has no `catalog.json`: it is not a store's data directory.
    #[error(
        "{0} is not a data directory of the store (no catalog.json); pass the fenced instance's storage.data_dir"
    )]
    NotADataDirectory(PathBuf),
    /// A running process holds the directory.
    #[error("data directory {0} is locked by a running process; stop the fenced instance first")]
    Locked(PathBuf),
    /// A file could not be read, or moved aside.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds damaged frames before valid ones, or fails its checksum.
    #[error(
        "{path} is corrupt at offset {offset}; nothing was handed over: restore the file or move it aside and run the handover again"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage starts (0 for a segment that failed its checksum).
        offset: u64,
    },
    /// A segment file is compressed with a codec this build leaves out (it is not corrupt).
    #[error("{path} cannot be read: {source}; nothing was handed over")]
    MissingFeature {
        /// The file.
        path: PathBuf,
        /// The codec's feature.
        source: crate::MissingFeature,
    },
}

/// The newest version of one record in a handed-over directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrandedRecord {
    /// The record id.
    pub id: String,
    /// The LSN that wrote this version, in the fenced store's sequence.
    pub lsn: u64,
    /// The value; `None` for a delete.
    pub value: Option<Bytes>,
}

/// One collection of a handed-over directory, its records in LSN order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrandedCollection {
    /// The store's name of the collection.
    pub name: String,
    /// Its tiering policy.
    pub policy: TieringPolicy,
    /// The newest version of each record, oldest first.
    pub records: Vec<StrandedRecord>,
}

/// A stopped store's data directory, opened read-only for a handover. Holds the directory's lock
/// until dropped or [finished](HandoverSource::finish), so the fenced instance cannot start on it
/// meanwhile.
#[derive(Debug)]
pub struct HandoverSource {
    data_dir: PathBuf,
    collections: Vec<StrandedCollection>,
    _lock: mainstay_journal::DirLock,
}

#[derive(Deserialize)]
struct Catalog {
    collections: Vec<CatalogEntry>,
}

#[derive(Deserialize)]
struct CatalogEntry {
    name: String,
    policy: TieringPolicy,
    incarnation: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HandoverError + '_ {
    move |source| HandoverError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl HandoverSource {
    /// Opens `data_dir` for a handover (blocking: call it off the async workers): takes its lock,
    /// reads its catalog, every local segment and the WAL, and keeps the newest version of every
    /// record of a collection in the catalog. Writes nothing: a torn WAL tail is left as it is
    /// (it was never acknowledged) and the object store is not touched.
    ///
    /// # Errors
    ///
    /// [`HandoverError::Locked`] while a process holds the directory,
    /// [`HandoverError::NotADataDirectory`] without a catalog, [`HandoverError::Corrupt`] for a
    /// damaged WAL frame followed by valid ones or a segment failing its checksum.
    pub fn open(data_dir: &Path) -> Result<Self, HandoverError> {
        let catalog_path = data_dir.join("catalog.json");
        let bytes = match fs::read(&catalog_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(HandoverError::NotADataDirectory(data_dir.to_path_buf()));
            }
            Err(error) => return Err(io(&catalog_path)(error)),
        };
        let lock = mainstay_journal::DirLock::acquire(data_dir).map_err(|error| match error {
            mainstay_journal::LockError::Io { path, source } => io(&path)(source),
            _ => HandoverError::Locked(data_dir.to_path_buf()),
        })?;
        let catalog: Catalog = serde_json::from_slice(&bytes).map_err(|error| {
            io(&catalog_path)(std::io::Error::new(std::io::ErrorKind::InvalidData, error))
        })?;
        let mut newest: BTreeMap<String, (TieringPolicy, u64, BTreeMap<String, StrandedRecord>)> =
            catalog
                .collections
                .into_iter()
                .filter(|entry| valid_collection_name(&entry.name))
                .map(|entry| {
                    (
                        entry.name,
                        (entry.policy, entry.incarnation, BTreeMap::new()),
                    )
                })
                .collect();
        let keep = |records: &mut BTreeMap<String, StrandedRecord>,
                    id: String,
                    lsn: u64,
                    value: Option<Bytes>| {
            if records.get(&id).is_none_or(|known| known.lsn < lsn) {
                records.insert(id.clone(), StrandedRecord { id, lsn, value });
            }
        };
        let segments_dir = data_dir.join("segments");
        for (name, (_, incarnation, records)) in &mut newest {
            for (path, entries) in read_segments(&segments_dir.join(name), *incarnation)? {
                tracing::debug!(path = %path.display(), records = entries.len(), "handover: read a local segment");
                for (id, entry) in entries {
                    keep(records, id, entry.lsn, entry.value);
                }
            }
        }
        for record in read_wal(&data_dir.join("wal"))? {
            let Some((_, incarnation, records)) = newest.get_mut(&record.collection) else {
                continue;
            };
            if *incarnation != record.incarnation {
                continue;
            }
            for (id, value) in record.entries {
                keep(records, id, record.lsn, value);
            }
        }
        let collections = newest
            .into_iter()
            .map(|(name, (policy, _, records))| {
                let mut records: Vec<StrandedRecord> = records.into_values().collect();
                records.sort_by_key(|record| record.lsn);
                StrandedCollection {
                    name,
                    policy,
                    records,
                }
            })
            .collect();
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            collections,
            _lock: lock,
        })
    }

    /// The collections of the directory, by name, each with its records in LSN order.
    #[must_use]
    pub fn collections(&self) -> &[StrandedCollection] {
        &self.collections
    }

    /// Moves the WAL and the local segments into `handed-over-<unix seconds>/` inside the data
    /// directory (blocking), once every record was accepted by the current writer, and releases
    /// the lock. The catalog stays, so a second handover of the directory finds nothing to do.
    /// Returns the new directory.
    ///
    /// # Errors
    ///
    /// [`HandoverError::Io`] when a rename or fsync fails; what was not moved is still in place
    /// and a repeated handover hands it over again (the current writer skips what it has).
    pub fn finish(self) -> Result<PathBuf, HandoverError> {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let aside = self.data_dir.join(format!("handed-over-{seconds}"));
        fs::create_dir_all(&aside).map_err(io(&aside))?;
        for part in ["wal", "segments"] {
            let from = self.data_dir.join(part);
            if from.exists() {
                let to = aside.join(part);
                fs::rename(&from, &to).map_err(io(&from))?;
            }
        }
        wal::sync_dir(&aside).map_err(io(&aside))?;
        wal::sync_dir(&self.data_dir).map_err(io(&self.data_dir))?;
        Ok(aside)
    }
}

/// A local segment file and its records.
type LocalSegment = (PathBuf, Vec<(String, segment::Entry)>);

/// The verified local segment files of one collection incarnation (blocking, read-only).
fn read_segments(dir: &Path, incarnation: u64) -> Result<Vec<LocalSegment>, HandoverError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(dir)(error)),
    };
    let mut out = Vec::new();
    for entry in listing {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((file_incarnation, _id)) =
            name.strip_suffix(".seg").and_then(|n| n.split_once('-'))
        else {
            continue;
        };
        if file_incarnation.parse::<u64>().ok() != Some(incarnation) {
            continue;
        }
        let path = entry.path();
        let bytes = fs::read(&path).map_err(io(&path))?;
        let (records, _, _) = segment::decode_all(&bytes).map_err(|error| match error {
            crate::SegmentError::MissingFeature(source) => HandoverError::MissingFeature {
                path: path.clone(),
                source,
            },
            crate::SegmentError::Corrupt(_) => HandoverError::Corrupt {
                path: path.clone(),
                offset: 0,
            },
        })?;
        out.push((path, records));
    }
    Ok(out)
}

/// Every intact record of the WAL in `dir`, in LSN order (blocking, read-only): the journal's
/// entries (damaged regions read past, as the stopped store's own recovery would keep every
/// valid frame; a torn tail is no entry), and those of WAL files of the format before the
/// journal (decision 0082), which a directory not opened since still holds: there a torn tail
/// of the last file ends the reading, and damage followed by valid frames is an error.
fn read_wal(dir: &Path) -> Result<Vec<wal::WalRecord>, HandoverError> {
    let files = wal::legacy::files(dir).map_err(|error| match error {
        crate::error::WalError::Io { path, source } => io(&path)(source),
        other => io(dir)(std::io::Error::other(other.to_string())),
    })?;
    let last = files.len().saturating_sub(1);
    let mut records = Vec::new();
    for (index, path) in files.iter().enumerate() {
        let mut data = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut data))
            .map_err(io(path))?;
        let mut offset = 0usize;
        while offset < data.len() {
            let rest = data.get(offset..).unwrap_or_default();
            // Zeros to the end of the file are the space allocated ahead of the frames.
            if rest.iter().all(|byte| *byte == 0) {
                break;
            }
            match wal::legacy::decode_frame(&data, offset) {
                Some((record, len)) => {
                    offset += wal::legacy::HEADER + len;
                    records.push(record);
                }
                // A torn tail was never acknowledged: the fenced store's own recovery would
                // cut it off too.
                None if index == last => break,
                None => {
                    return Err(HandoverError::Corrupt {
                        path: path.clone(),
                        offset: offset as u64,
                    });
                }
            }
        }
    }
    let entries = mainstay_journal::read_entries(
        &mainstay_journal::fs::RealFs,
        dir,
        mainstay_journal::Lsn::ZERO..=mainstay_journal::Lsn::new(u64::MAX),
    )
    .map_err(|error| io(dir)(std::io::Error::other(error.to_string())))?;
    records.extend(
        entries
            .into_iter()
            .filter_map(|entry| wal::decode_body(entry.lsn.get(), &entry.payload)),
    );
    records.sort_by_key(|record| record.lsn);
    records.dedup_by_key(|record| record.lsn);
    Ok(records)
}

/// What [`Store::accept_handover`] did with one collection's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandoverReport {
    /// The collection did not exist on this store and was created with the given policy.
    pub created: bool,
    /// Records written (puts and deletes).
    pub applied: usize,
    /// Ids this store wrote after it took over: its version was kept and the stranded one
    /// dropped. Reconcile them by hand if the stranded version mattered.
    pub skipped: Vec<String>,
    /// Records this store already has: the same value (handed over before), or a newer
    /// inherited version (committed before the takeover), and deletes of ids it does not hold.
    pub superseded: usize,
}

/// Why [`Store::accept_handover`] stopped. Records before the failure may have been written;
/// running the handover again skips them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The collection could not be created.
    #[error("could not create the collection: {0}")]
    Collection(#[from] CollectionError),
    /// This store's version of a record could not be read (the object store may be down).
    #[error("could not read the current version of a record: {0}")]
    Read(#[from] ReadError),
    /// A write was refused.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl Store {
    /// Replays a handed-over collection's records through the normal write path (puts in
    /// batches, deletes one by one, each acknowledged once fsync'd). `takeover_lsn` is
    /// [`Store::last_lsn`] read right after this store opened: a record this store holds with a
    /// higher LSN was written after the takeover and always wins. A stranded record is written
    /// only when this store has no version of its id, or an inherited one (LSN at most
    /// `takeover_lsn`) that is older than the stranded one; a stranded delete of an id this
    /// store does not have is done already. A collection this store lacks is created with
    /// the stranded policy. The caller must keep other writers of the collection out meanwhile,
    /// or a write between the check and the replay could be overwritten (decision 0072).
    ///
    /// # Errors
    ///
    /// [`AcceptError`] when the collection cannot be created, a current version cannot be read
    /// or a write is refused; what was written before stays, and a repeated call skips it.
    pub async fn accept_handover(
        &self,
        stranded: &StrandedCollection,
        takeover_lsn: u64,
    ) -> Result<HandoverReport, AcceptError> {
        let mut report = HandoverReport::default();
        match self
            .create_collection(&stranded.name, stranded.policy)
            .await
        {
            Ok(()) => report.created = true,
            Err(CollectionError::AlreadyExists(_)) => {}
            Err(error) => return Err(error.into()),
        }
        let limits = self.shared().config.limits.clone();
        let mut batch: Vec<(String, Bytes)> = Vec::new();
        let mut batch_bytes = 0usize;
        for record in &stranded.records {
            let current = self.current_version(&stranded.name, &record.id).await?;
            match &current {
                // The same value or the same delete: handed over before, or written twice.
                Some((_, value)) if *value == record.value => {
                    report.superseded += 1;
                    continue;
                }
                // Written here since the takeover: this store's version wins.
                Some((lsn, _)) if *lsn > takeover_lsn => {
                    report.skipped.push(record.id.clone());
                    continue;
                }
                // Inherited in this version or a newer one, or a delete of what is not here.
                Some((lsn, _)) if *lsn >= record.lsn => {
                    report.superseded += 1;
                    continue;
                }
                Some((_, None)) | None if record.value.is_none() => {
                    report.superseded += 1;
                    continue;
                }
                _ => {}
            }
            match &record.value {
                Some(value) => {
                    if batch.len() == limits.max_batch_records
                        || batch_bytes + value.len() > limits.max_batch_bytes
                    {
                        report.applied += batch.len();
                        self.put_batch(&stranded.name, std::mem::take(&mut batch))
                            .await?;
                        batch_bytes = 0;
                    }
                    batch_bytes += value.len();
                    batch.push((record.id.clone(), value.clone()));
                }
                None => {
                    // Each id appears once, so a delete may overtake the puts batched before it.
                    self.delete(&stranded.name, &record.id).await?;
                    report.applied += 1;
                }
            }
        }
        if !batch.is_empty() {
            report.applied += batch.len();
            self.put_batch(&stranded.name, batch).await?;
        }
        Ok(report)
    }

    /// This store's newest version of `id`: its LSN and its value (`None` for a tombstone);
    /// `None` when the store holds no version.
    async fn current_version(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<Option<(u64, Option<Bytes>)>, ReadError> {
        let shared = self.shared();
        let coll = shared
            .collection(collection)
            .ok_or_else(|| ReadError::UnknownCollection(collection.to_owned()))?;
        let segments = {
            let data = coll.data.read();
            if let Some(entry) = lookup_memory(&data, id) {
                return Ok(Some((entry.lsn, entry.value)));
            }
            data.segments.clone()
        };
        for segment in segments.iter().rev() {
            if let Some(entry) = shared.segment_lookup(&coll, segment, id).await? {
                return Ok(Some((entry.lsn, entry.value)));
            }
        }
        Ok(None)
    }
}
