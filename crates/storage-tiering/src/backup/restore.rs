//! [`restore`] and [`verify`]: choose a backup (and the point to restore at), stage its files
//! while checking each one's size and SHA-256 against `backup.json`, and rebuild a data
//! directory by writing the backup's records through a fresh store's write path.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use super::create::Staging;
use super::manifest::{
    BackupCatalog, BackupManifest, CATALOG_FILE, FileKind, MANIFEST_FILE, TAIL_FILE, sha256,
};
use super::{BackupTarget, LAST_SUCCESS_FILE, LAST_VERIFICATION_FILE, RestoreError, tail};
use crate::config::StoreConfig;
use crate::error::WriteError;
use crate::store::{DLQ_QUEUE, ListQuery, Store};

/// The point to restore at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestorePoint {
    /// Exactly the writes up to this LSN: inside some backup's window (from its
    /// `window_start_lsn` to its consistent LSN).
    Lsn(u64),
    /// The newest backup whose consistent point is at or before this time.
    Time(SystemTime),
}

/// How to restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// The point to restore at; the newest backup's consistent point when unset.
    pub at: Option<RestorePoint>,
    /// Collections whose name starts with one of these are not restored (erased
    /// organisations).
    pub exclude_collection_prefixes: Vec<String>,
    /// The object store of the restored store (its `object_store_url`): where the segments of
    /// object-store collections go. Required when the backup holds such collections.
    pub object_store: Option<String>,
}

impl RestoreOptions {
    /// Options restoring the newest point into a store with this object store.
    #[must_use]
    pub fn new(object_store: Option<String>) -> Self {
        Self {
            object_store,
            ..Self::default()
        }
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The backup restored.
    pub backup_id: String,
    /// Where it was.
    pub location: String,
    /// Its consistent LSN.
    pub consistent_lsn: u64,
    /// The LSN restored at (the consistent LSN unless `at` chose an earlier one).
    pub restored_lsn: u64,
    /// Collections restored.
    pub collections: u64,
    /// Records restored.
    pub records: u64,
    /// DLQ entries restored.
    pub dlq_entries: u64,
    /// Collections left out by `exclude_collection_prefixes`.
    pub excluded_collections: Vec<String>,
    /// Where the runtime settings file was restored, if the backup has one.
    pub settings_file: Option<PathBuf>,
}

/// How to verify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// A backup whose consistent point is older than this is `too_old`.
    pub max_age: Option<Duration>,
    /// The time to measure ages against (the system time when unset).
    pub now: Option<SystemTime>,
}

impl VerifyOptions {
    /// Options with this maximum age.
    #[must_use]
    pub fn max_age(max_age: Option<Duration>) -> Self {
        Self { max_age, now: None }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verification {
    /// Every file checks out and the restored store serves what the manifest says.
    Ok,
    /// A file is missing or damaged, or the restored store disagrees with the manifest.
    Damaged,
    /// The backup is sound but older than `max_age`.
    TooOld,
}

impl Verification {
    /// `ok`, `damaged` or `too_old`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Damaged => "damaged",
            Self::TooOld => "too_old",
        }
    }
}

/// One thing wrong with a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file, relative to the backup's directory (`backup.json`, `segments/c/x.seg`, ...).
    pub file: String,
    /// What is wrong.
    pub problem: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// `ok`, `damaged` or `too_old`.
    pub outcome: Verification,
    /// When the verification ran (unix seconds).
    pub checked_at: u64,
    /// The backup verified.
    pub backup_id: String,
    /// Where it is.
    pub location: String,
    /// Its consistent LSN (0 when `backup.json` is unreadable).
    pub consistent_lsn: u64,
    /// Its consistent point's time (unix seconds; 0 when `backup.json` is unreadable).
    pub consistent_at: u64,
    /// `checked_at - consistent_at`: the data an immediate restore would lose.
    pub rpo_seconds: u64,
    /// Files checked (`backup.json` included).
    pub files_checked: u64,
    /// Bytes checked.
    pub bytes_checked: u64,
    /// Records the restored store served.
    pub records: u64,
    /// DLQ entries the restored DLQ held.
    pub dlq_entries: u64,
    /// What is wrong, file by file (empty when `ok` or `too_old`).
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// One line for logs and terminals.
    #[must_use]
    pub fn summary(&self) -> String {
        let problems = match self.problems.first() {
            Some(first) => format!(
                " problems={} first=\"{}: {}\"",
                self.problems.len(),
                first.file,
                first.problem
            ),
            None => String::new(),
        };
        format!(
            "backup {} {}: lsn={} rpo={}s files={} bytes={} records={} dlq_entries={} location={}{problems}",
            self.backup_id,
            self.outcome.as_str(),
            self.consistent_lsn,
            self.rpo_seconds,
            self.files_checked,
            self.bytes_checked,
            self.records,
            self.dlq_entries,
            self.location,
        )
    }
}

/// Restores a backup into `data_dir`, which must be empty or missing. `location` is one backup
/// or a root of backups (then the newest, or the one `options.at` chooses). Every file is
/// checked against `backup.json` first; then the records are written through a new store's
/// write path (new LSNs, new segments, a new manifest in `options.object_store`), the DLQ is
/// rebuilt under `data_dir/dlq` and the settings file copied into `data_dir`. Opening a store
/// on `data_dir` afterwards serves every record of the backup at the chosen point.
///
/// # Errors
///
/// [`RestoreError::TargetNotEmpty`], [`RestoreError::OutsideWindow`] (naming what the backups
/// cover), [`RestoreError::NoBackup`], [`RestoreError::Damaged`] (naming each damaged file),
/// [`RestoreError::ObjectStoreNotEmpty`], [`RestoreError::Store`], [`RestoreError::Io`].
pub async fn restore(
    location: &BackupTarget,
    data_dir: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport, RestoreError> {
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::TargetNotEmpty(data_dir.to_path_buf()));
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(data_dir, &error)),
    }
    let (backup, point) = choose(location, options.at).await?;
    let staging = Staging::new("restore").map_err(|e| RestoreError::Io {
        path: std::env::temp_dir().display().to_string(),
        reason: e.to_string(),
    })?;
    let staged = stage(&backup, &staging.0).await;
    let manifest = match staged.manifest {
        Some(manifest) if staged.problems.is_empty() => manifest,
        _ => {
            return Err(RestoreError::Damaged {
                backup: backup.name(),
                problems: staged.problems,
            });
        }
    };
    let rebuilt = rebuild(&staging.0, &manifest, data_dir, options, point).await?;
    tracing::info!(backup = %manifest.id, lsn = rebuilt.restored_lsn, records = rebuilt.records, data_dir = %data_dir.display(), "backup restored");
    Ok(RestoreReport {
        backup_id: manifest.id.clone(),
        location: backup.url().to_owned(),
        consistent_lsn: manifest.consistent_point.lsn,
        restored_lsn: rebuilt.restored_lsn,
        collections: rebuilt.collections,
        records: rebuilt.records,
        dlq_entries: rebuilt.dlq_entries,
        excluded_collections: rebuilt.excluded,
        settings_file: rebuilt.settings_file,
    })
}

/// Verifies a backup (or the newest complete backup of a root): checks every file's size and
/// SHA-256 against `backup.json` (and `backup.json`'s own checksum), restores it into a
/// temporary directory, opens the restored store and DLQ, reads every record and entry and
/// compares their counts and the LSNs with the manifest. A damaged backup is a report with
/// outcome `damaged`, not an error.
///
/// # Errors
///
/// [`RestoreError::InvalidLocation`] or [`RestoreError::NoBackup`] when there is nothing to
/// verify; [`RestoreError::Io`] when the temporary directory cannot be made.
pub async fn verify(
    location: &BackupTarget,
    options: &VerifyOptions,
) -> Result<VerifyReport, RestoreError> {
    let now = options.now.unwrap_or_else(SystemTime::now);
    let checked_at = unix(now);
    let (backup, _) = choose(location, None).await?;
    let staging = Staging::new("verify").map_err(|e| RestoreError::Io {
        path: std::env::temp_dir().display().to_string(),
        reason: e.to_string(),
    })?;
    let files = staging.0.join("files");
    let staged = stage(&backup, &files).await;
    let mut report = VerifyReport {
        outcome: Verification::Damaged,
        checked_at,
        backup_id: backup.name(),
        location: backup.url().to_owned(),
        consistent_lsn: 0,
        consistent_at: 0,
        rpo_seconds: 0,
        files_checked: staged.files_checked,
        bytes_checked: staged.bytes_checked,
        records: 0,
        dlq_entries: 0,
        problems: staged.problems,
    };
    let Some(manifest) = staged.manifest else {
        return Ok(report);
    };
    report.backup_id.clone_from(&manifest.id);
    report.consistent_lsn = manifest.consistent_point.lsn;
    report.consistent_at = manifest.consistent_point.unix_time;
    report.rpo_seconds = checked_at.saturating_sub(report.consistent_at);
    if !report.problems.is_empty() {
        return Ok(report);
    }
    let data_dir = staging.0.join("data");
    let objects = staging.0.join("objects");
    let restore_options = RestoreOptions::new(Some(format!("file://{}", objects.display())));
    match rebuild(&files, &manifest, &data_dir, &restore_options, None).await {
        Ok(_) => {}
        Err(RestoreError::Damaged { problems, .. }) => {
            report.problems = problems;
            return Ok(report);
        }
        Err(other) => {
            report.problems.push(Problem {
                file: CATALOG_FILE.to_owned(),
                problem: format!("the backup does not restore: {other}"),
            });
            return Ok(report);
        }
    }
    // Opened again, as a restarted service would: everything must still be there.
    let config = StoreConfig {
        data_dir: data_dir.clone(),
        object_store_url: restore_options.object_store.clone(),
        ..StoreConfig::default()
    };
    let counted = match Store::open(config).await {
        Ok(store) => {
            let counted = count(&store).await;
            let _ = store.close(Duration::from_secs(30)).await;
            counted
        }
        Err(error) => Err(error.to_string()),
    };
    match counted {
        Ok((records, dlq_entries)) => {
            report.records = records;
            report.dlq_entries = dlq_entries;
            if records != manifest.counts.records {
                report.problems.push(Problem {
                    file: CATALOG_FILE.to_owned(),
                    problem: format!(
                        "the restored store serves {records} records, backup.json says {}",
                        manifest.counts.records
                    ),
                });
            }
            if dlq_entries != manifest.counts.dlq_entries {
                report.problems.push(Problem {
                    file: "dlq/snapshot".to_owned(),
                    problem: format!(
                        "the restored dlq holds {dlq_entries} entries, backup.json says {}",
                        manifest.counts.dlq_entries
                    ),
                });
            }
        }
        Err(error) => report.problems.push(Problem {
            file: CATALOG_FILE.to_owned(),
            problem: format!("the restored store does not open or read: {error}"),
        }),
    }
    report.outcome = if !report.problems.is_empty() {
        Verification::Damaged
    } else if options
        .max_age
        .is_some_and(|max| report.rpo_seconds > max.as_secs())
    {
        Verification::TooOld
    } else {
        Verification::Ok
    };
    Ok(report)
}

/// [`verify`], then writes the report as JSON to `<root>/last-verification.json` (atomically;
/// the root is `location`, or the root above it when `location` is one backup).
///
/// # Errors
///
/// As [`verify`]; [`RestoreError::Io`] when the report could not be written.
pub async fn verify_and_record(
    location: &BackupTarget,
    options: &VerifyOptions,
) -> Result<VerifyReport, RestoreError> {
    let report = verify(location, options).await?;
    let root = if location.is_backup().await.unwrap_or(false) {
        location.parent()
    } else {
        location.clone()
    };
    let mut json = serde_json::to_vec_pretty(&report).unwrap_or_default();
    json.push(b'\n');
    // The newest good one too, so that monitoring keeps the last success across failed runs
    // (decision 0115); it is written first, so the two never disagree on the newest success.
    let names: &[&str] = if report.outcome == Verification::Ok {
        &[LAST_SUCCESS_FILE, LAST_VERIFICATION_FILE]
    } else {
        &[LAST_VERIFICATION_FILE]
    };
    for name in names {
        root.put(name, Bytes::from(json.clone()))
            .await
            .map_err(|e| RestoreError::Io {
                path: format!("{}/{name}", root.url()),
                reason: e.to_string(),
            })?;
    }
    Ok(report)
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn io_error(path: &Path, error: &dyn std::fmt::Display) -> RestoreError {
    RestoreError::Io {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

fn damaged(backup: &BackupManifest, file: &str, problem: impl Into<String>) -> RestoreError {
    RestoreError::Damaged {
        backup: backup.id.clone(),
        problems: vec![Problem {
            file: file.to_owned(),
            problem: problem.into(),
        }],
    }
}

/// The backup to use and the LSN to restore at (`None`: its consistent point).
async fn choose(
    location: &BackupTarget,
    at: Option<RestorePoint>,
) -> Result<(BackupTarget, Option<u64>), RestoreError> {
    let unreadable = |reason: String| RestoreError::InvalidLocation {
        url: location.url().to_owned(),
        reason,
    };
    let candidates = if location.is_backup().await.map_err(unreadable)? {
        vec![location.clone()]
    } else {
        let ids = location.complete_backups().await.map_err(unreadable)?;
        ids.iter().map(|id| location.child(id)).collect()
    };
    let Some(newest) = candidates.last().cloned() else {
        return Err(RestoreError::NoBackup(location.url().to_owned()));
    };
    let Some(at) = at else {
        return Ok((newest, None));
    };
    // The windows of the readable backups, newest last (a damaged one is left out here and
    // reported as damaged when chosen directly).
    let mut windows = Vec::new();
    for candidate in candidates {
        if let Ok(Some(bytes)) = candidate.get(MANIFEST_FILE).await
            && let Ok(manifest) = BackupManifest::open(&bytes)
        {
            windows.push((candidate, manifest.consistent_point));
        }
    }
    let chosen = windows.iter().rev().find(|(_, point)| match at {
        RestorePoint::Lsn(lsn) => (point.window_start_lsn..=point.lsn).contains(&lsn),
        RestorePoint::Time(time) => point.unix_time <= unix(time),
    });
    if let Some((backup, point)) = chosen {
        let lsn = match at {
            RestorePoint::Lsn(lsn) => Some(lsn),
            RestorePoint::Time(_) => Some(point.lsn),
        };
        return Ok((backup.clone(), lsn));
    }
    let point = match at {
        RestorePoint::Lsn(lsn) => format!("lsn {lsn}"),
        RestorePoint::Time(time) => format!("time {}", humantime::format_rfc3339_seconds(time)),
    };
    let window = if windows.is_empty() {
        "no readable backup".to_owned()
    } else {
        windows
            .iter()
            .map(|(backup, point)| {
                format!(
                    "backup {} (lsn {}..={}, taken {})",
                    backup.name(),
                    point.window_start_lsn,
                    point.lsn,
                    humantime::format_rfc3339_seconds(
                        UNIX_EPOCH + Duration::from_secs(point.unix_time)
                    )
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(RestoreError::OutsideWindow { point, window })
}

/// A backup's files, copied into a local directory and checked.
struct Staged {
    manifest: Option<BackupManifest>,
    problems: Vec<Problem>,
    files_checked: u64,
    bytes_checked: u64,
}

/// Copies every file of `backup` into `dir`, checking `backup.json` and each file's size and
/// SHA-256; collects what is wrong rather than stopping at the first problem.
async fn stage(backup: &BackupTarget, dir: &Path) -> Staged {
    let mut staged = Staged {
        manifest: None,
        problems: Vec::new(),
        files_checked: 0,
        bytes_checked: 0,
    };
    let problem = |file: &str, problem: String| Problem {
        file: file.to_owned(),
        problem,
    };
    let bytes = match backup.get(MANIFEST_FILE).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            staged
                .problems
                .push(problem(MANIFEST_FILE, "missing".to_owned()));
            return staged;
        }
        Err(error) => {
            staged
                .problems
                .push(problem(MANIFEST_FILE, format!("unreadable: {error}")));
            return staged;
        }
    };
    staged.files_checked += 1;
    staged.bytes_checked += bytes.len() as u64;
    let manifest = match BackupManifest::open(&bytes) {
        Ok(manifest) => manifest,
        Err(reason) => {
            staged.problems.push(problem(MANIFEST_FILE, reason));
            return staged;
        }
    };
    for file in &manifest.files {
        let safe = !file.path.is_empty()
            && Path::new(&file.path)
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !safe || file.path == MANIFEST_FILE {
            staged.problems.push(problem(
                &file.path,
                "not a path inside the backup".to_owned(),
            ));
            continue;
        }
        let bytes = match backup.get(&file.path).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                staged
                    .problems
                    .push(problem(&file.path, "missing".to_owned()));
                continue;
            }
            Err(error) => {
                staged
                    .problems
                    .push(problem(&file.path, format!("unreadable: {error}")));
                continue;
            }
        };
        staged.files_checked += 1;
        staged.bytes_checked += bytes.len() as u64;
        if bytes.len() as u64 != file.size {
            staged.problems.push(problem(
                &file.path,
                format!(
                    "size is {} bytes, backup.json says {}",
                    bytes.len(),
                    file.size
                ),
            ));
            continue;
        }
        if sha256(&bytes) != file.sha256 {
            staged
                .problems
                .push(problem(&file.path, "sha256 mismatch".to_owned()));
            continue;
        }
        let target = dir.join(&file.path);
        let written = tokio::task::spawn_blocking(move || {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, &bytes)
        })
        .await;
        if let Ok(Err(error)) | Err(error) = written.map_err(std::io::Error::other) {
            staged
                .problems
                .push(problem(&file.path, format!("could not be staged: {error}")));
        }
    }
    staged.manifest = Some(manifest);
    staged
}

/// What [`rebuild`] did.
struct Rebuilt {
    restored_lsn: u64,
    collections: u64,
    records: u64,
    dlq_entries: u64,
    excluded: Vec<String>,
    settings_file: Option<PathBuf>,
}

/// Most records, and bytes, per write while restoring.
const BATCH_RECORDS: usize = 500;
const BATCH_BYTES: usize = 4 << 20;

/// Rebuilds `data_dir` from the staged, checked files of a backup.
async fn rebuild(
    staged: &Path,
    manifest: &BackupManifest,
    data_dir: &Path,
    options: &RestoreOptions,
    point: Option<u64>,
) -> Result<Rebuilt, RestoreError> {
    let read = |relative: &str| {
        let path = staged.join(relative);
        std::fs::read(&path).map_err(|e| damaged(manifest, relative, format!("unreadable: {e}")))
    };
    let catalog: BackupCatalog = serde_json::from_slice(&read(CATALOG_FILE)?)
        .map_err(|e| damaged(manifest, CATALOG_FILE, format!("does not parse: {e}")))?;
    let consistent = manifest.consistent_point.lsn;
    if catalog.consistent_lsn != consistent {
        return Err(damaged(
            manifest,
            CATALOG_FILE,
            format!(
                "consistent lsn {} differs from backup.json's {consistent}",
                catalog.consistent_lsn
            ),
        ));
    }
    let tail = tail::decode(&read(TAIL_FILE)?).map_err(|e| damaged(manifest, TAIL_FILE, e))?;
    if let Some(record) = tail
        .iter()
        .find(|r| r.lsn > consistent || r.lsn < catalog.tail_from_lsn)
    {
        return Err(damaged(
            manifest,
            TAIL_FILE,
            format!(
                "record at lsn {} is outside the backup's range {}..={consistent}",
                record.lsn, catalog.tail_from_lsn
            ),
        ));
    }
    let restored_lsn = point.unwrap_or(consistent);

    // The DLQ first: the store opens it as its own.
    let has_dlq = manifest
        .files
        .iter()
        .any(|f| f.kind == FileKind::DlqSnapshot);
    let dlq_dir = data_dir.join("dlq");
    let dlq_entries = if has_dlq {
        let (from, to) = (staged.join("dlq"), dlq_dir.clone());
        let restored = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&to).map_err(|source| mainstay_dlq::BackupError::Io {
                path: to.clone(),
                source,
            })?;
            mainstay_dlq::restore_backup(&from, &to)
        })
        .await
        .map_err(|e| io_error(&dlq_dir, &e))?;
        match restored {
            Ok(entries) => entries as u64,
            Err(mainstay_dlq::BackupError::Damaged { path, reason }) => {
                let file = path
                    .strip_prefix(staged)
                    .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
                return Err(damaged(manifest, &file, reason));
            }
            Err(other) => return Err(io_error(&dlq_dir, &other)),
        }
    } else {
        0
    };

    let config = StoreConfig {
        data_dir: data_dir.to_path_buf(),
        object_store_url: options.object_store.clone(),
        ..StoreConfig::default()
    };
    let store = Store::open(config)
        .await
        .map_err(|e| RestoreError::Store(e.to_string()))?;
    let result = replay(
        &store,
        staged,
        manifest,
        &catalog,
        &tail,
        options,
        restored_lsn,
    )
    .await;
    let closed = store.close(Duration::from_secs(300)).await;
    let (collections, records, excluded) = result?;
    closed.map_err(|e| RestoreError::Store(format!("closing the restored store: {e}")))?;

    let mut settings_file = None;
    for file in manifest
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Settings)
    {
        let name = Path::new(&file.path)
            .file_name()
            .map(ToOwned::to_owned)
            .unwrap_or_default();
        let target = data_dir.join(name);
        let bytes = read(&file.path)?;
        let path = target.clone();
        tokio::task::spawn_blocking(move || crate::store::write_atomic(&path, &bytes))
            .await
            .map_err(|e| io_error(&target, &e))?
            .map_err(|e| io_error(&target, &e))?;
        settings_file = Some(target);
    }
    Ok(Rebuilt {
        restored_lsn,
        collections,
        records,
        dlq_entries,
        excluded,
        settings_file,
    })
}

/// Writes the records of every collection not excluded into `store`: each segment's entries in
/// LSN order, then the tail's records above the segments up to `restored_lsn`. Returns the
/// collections and live records restored and the collections left out.
async fn replay(
    store: &Store,
    staged: &Path,
    manifest: &BackupManifest,
    catalog: &BackupCatalog,
    tail: &[crate::wal::WalRecord],
    options: &RestoreOptions,
    restored_lsn: u64,
) -> Result<(u64, u64, Vec<String>), RestoreError> {
    let live = store.collections();
    if !live.is_empty() {
        let names: Vec<String> = live.into_iter().map(|c| c.name).collect();
        return Err(RestoreError::ObjectStoreNotEmpty(names.join(", ")));
    }
    let mut excluded = Vec::new();
    let (mut collections, mut records) = (0u64, 0u64);
    for collection in &catalog.collections {
        if options
            .exclude_collection_prefixes
            .iter()
            .any(|prefix| collection.name.starts_with(prefix.as_str()))
        {
            excluded.push(collection.name.clone());
            continue;
        }
        store
            .create_collection(&collection.name, collection.policy)
            .await
            .map_err(|e| RestoreError::Store(e.to_string()))?;
        for segment in &collection.segments {
            let relative = format!("segments/{}/{}.seg", collection.name, segment.id);
            let path = staged.join(&relative);
            let decoded = tokio::task::spawn_blocking(move || {
                std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| crate::segment::decode_all(&bytes).map_err(|e| e.to_string()))
            })
            .await
            .map_err(|e| io_error(staged, &e))?;
            let (entries, footer, _) = decoded.map_err(|e| damaged(manifest, &relative, e))?;
            if footer.max_lsn != segment.max_lsn || footer.min_lsn != segment.min_lsn {
                return Err(damaged(
                    manifest,
                    &relative,
                    "its lsn range differs from catalog.json's",
                ));
            }
            let entries = entries.into_iter().map(|(id, e)| (id, e.value)).collect();
            write_all(store, &collection.name, entries).await?;
        }
        for record in tail.iter().filter(|r| {
            r.collection == collection.name
                && r.incarnation == collection.incarnation
                && r.lsn > collection.segments_max_lsn
                && r.lsn <= restored_lsn
        }) {
            write_all(store, &collection.name, record.entries.clone()).await?;
        }
        collections += 1;
        records += count_collection(store, &collection.name)
            .await
            .map_err(RestoreError::Store)?;
    }
    Ok((collections, records, excluded))
}

/// Writes `entries` (values and tombstones) in batches, waiting out backpressure.
async fn write_all(
    store: &Store,
    collection: &str,
    entries: Vec<(String, Option<Bytes>)>,
) -> Result<(), RestoreError> {
    let mut batch: Vec<(String, Option<Bytes>)> = Vec::new();
    let mut bytes = 0;
    let mut entries = entries.into_iter().peekable();
    while let Some((id, value)) = entries.next() {
        bytes += id.len() + value.as_ref().map_or(0, Bytes::len);
        batch.push((id, value));
        if batch.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES || entries.peek().is_none() {
            let mut waits = 0u32;
            loop {
                match store.write(collection, batch.clone()).await {
                    Ok(()) => break,
                    Err(WriteError::Backpressure { retry_after, .. }) if waits < 600 => {
                        waits += 1;
                        let _ = store.flush().await;
                        tokio::time::sleep(retry_after.min(Duration::from_secs(1))).await;
                    }
                    Err(error) => {
                        return Err(RestoreError::Store(format!(
                            "writing to collection {collection}: {error}"
                        )));
                    }
                }
            }
            batch.clear();
            bytes = 0;
        }
    }
    Ok(())
}

/// Live records of one collection, every one read.
async fn count_collection(store: &Store, collection: &str) -> Result<u64, String> {
    let mut records = 0u64;
    let mut cursor = None;
    loop {
        let page = store
            .list(
                collection,
                &ListQuery {
                    cursor,
                    limit: Some(1_000),
                    ..ListQuery::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        if page.degraded {
            return Err(format!(
                "collection {collection} could not be read in full: {:?} unavailable",
                page.unavailable_sources
            ));
        }
        records += page.records.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(records),
        }
    }
}

/// Records of every collection and DLQ entries (but the store's own segment queue) of a store.
async fn count(store: &Store) -> Result<(u64, u64), String> {
    let mut records = 0;
    for collection in store.collections() {
        records += count_collection(store, &collection.name).await?;
    }
    let dlq = store.dlq();
    let mut entries = 0u64;
    let mut cursor: Option<String> = None;
    loop {
        let page = dlq
            .list(
                &mainstay_dlq::Filter::default(),
                cursor.as_deref(),
                mainstay_dlq::MAX_PAGE_SIZE,
            )
            .map_err(|e| e.to_string())?;
        entries += page
            .entries
            .iter()
            .filter(|e| e.queue() != DLQ_QUEUE)
            .count() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((records, entries)),
        }
    }
}
