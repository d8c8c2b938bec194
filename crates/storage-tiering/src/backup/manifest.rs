//! `backup.json`: the backup manifest, written last. It lists every other file with its size
//! and SHA-256, and carries a SHA-256 of itself (computed with `checksum` empty), so that a
//! changed byte anywhere in a backup, this file included, is found.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::TieringPolicy;

/// The manifest's file name in a backup.
pub(crate) const MANIFEST_FILE: &str = "backup.json";
/// The catalog's file name in a backup.
pub(crate) const CATALOG_FILE: &str = "catalog.json";
/// The WAL tail's file name in a backup.
pub(crate) const TAIL_FILE: &str = "wal-tail.bin";

/// `format` of a backup manifest.
pub(crate) const FORMAT: &str = "mainstay-backup";
/// `format_version` of the manifests this version writes (and the newest it reads).
pub(crate) const FORMAT_VERSION: u32 = 1;

/// A backup's manifest (`backup.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackupManifest {
    /// Always `"mainstay-backup"`.
    pub format: String,
    /// The version of the format when written (1 for this release).
    pub format_version: u32,
    /// The backup's id, its directory name: `<UTC time>-<ULID>`, sorting by creation time.
    pub id: String,
    /// The version of mainstay-storage-tiering that wrote it.
    pub source_version: String,
    /// The consistent point: the backup holds exactly the acknowledged writes up to it.
    pub consistent_point: ConsistentPoint,
    /// Every file of the backup but this one, relative to the backup's directory.
    pub files: Vec<BackupFile>,
    /// What the backup holds.
    pub counts: BackupCounts,
    /// SHA-256 (hex) of this document serialised with `checksum` empty.
    pub checksum: String,
}

/// A backup's consistent point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsistentPoint {
    /// The LSN: every acknowledged write up to it is in the backup, none after it.
    pub lsn: u64,
    /// Unix time (seconds) when the point was taken.
    pub unix_time: u64,
    /// The earliest LSN the backup can be restored at (`--at`): the newest LSN its segments
    /// hold; from there to `lsn` the WAL tail holds every write.
    pub window_start_lsn: u64,
}

/// What kind of file a backup file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FileKind {
    /// `catalog.json`.
    Catalog,
    /// A segment file.
    Segment,
    /// `wal-tail.bin`.
    WalTail,
    /// The DLQ's snapshot.
    DlqSnapshot,
    /// A pinned DLQ payload file.
    DlqPayload,
    /// The runtime admin settings file.
    Settings,
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackupFile {
    /// Path relative to the backup's directory, `/`-separated.
    pub path: String,
    /// What it is.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// What a backup holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackupCounts {
    /// Collections.
    pub collections: u64,
    /// Records (live ones: deleted records are not counted).
    pub records: u64,
    /// DLQ entries (the store's own segment queue is not backed up: its segments are).
    pub dlq_entries: u64,
}

/// The backup's catalog: collections with their segments, and the tail's range.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupCatalog {
    pub(crate) consistent_lsn: u64,
    /// The first LSN the tail may hold.
    pub(crate) tail_from_lsn: u64,
    pub(crate) collections: Vec<CatalogCollection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CatalogCollection {
    pub(crate) name: String,
    pub(crate) policy: TieringPolicy,
    pub(crate) incarnation: u64,
    /// Segment ids in LSN order; files `segments/<name>/<id>.seg`.
    pub(crate) segments: Vec<CatalogSegment>,
    /// The newest LSN its segments hold: the tail's records of this collection above it apply.
    pub(crate) segments_max_lsn: u64,
    /// Live records at the consistent point.
    pub(crate) records: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CatalogSegment {
    pub(crate) id: String,
    pub(crate) min_lsn: u64,
    pub(crate) max_lsn: u64,
}

/// Hex SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl BackupManifest {
    /// The file's bytes, with `checksum` set.
    pub(crate) fn seal(mut self) -> (Self, Vec<u8>) {
        self.checksum = String::new();
        let unsealed = serde_json::to_vec_pretty(&self).unwrap_or_default();
        self.checksum = sha256(&unsealed);
        let bytes = serde_json::to_vec_pretty(&self).unwrap_or_default();
        (self, bytes)
    }

    /// Parses `bytes` and checks them: they must be exactly what [`seal`](Self::seal) writes for
    /// the parsed document, with a matching checksum.
    pub(crate) fn open(bytes: &[u8]) -> Result<Self, String> {
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("does not parse: {e}"))?;
        if manifest.format != FORMAT {
            return Err(format!("format is {:?}, not {FORMAT:?}", manifest.format));
        }
        if manifest.format_version > FORMAT_VERSION {
            return Err(format!(
                "format version {} is newer than this version reads ({FORMAT_VERSION}): use a newer mainstay",
                manifest.format_version
            ));
        }
        let claimed = manifest.checksum.clone();
        let (sealed, expected) = manifest.seal();
        if sealed.checksum != claimed || expected != bytes {
            return Err("checksum mismatch: the file was changed after it was written".to_owned());
        }
        Ok(sealed)
    }
}
