//! Erasure of an organisation that can be proven (issue 18, point 6; decision 0112).
//!
//! `DELETE /admin/organisations/{org}` first records the erasure in the [`ErasureLedger`]
//! (durably on the local disk, then in the object store under `<prefix>/_erasure/ledger/`, beside
//! the store's `segments/` and `manifest/`, which no backup of the store copies, and with
//! `backup.url` in the backup root's `_erasure/ledger/`, decision 0121), blocks the
//! organisation's API keys (403 `.../organisation-erased`), then drops every collection of the
//! organisation, deletes its dead-letter entries and their pinned files, rewrites the DLQ archive
//! without the views of its evicted and expired entries, forgets its batch idempotency answers,
//! and purges the dropped data physically ([`Store::purge_dropped`]: WAL rolled and trimmed,
//! local directories removed, objects deleted without the orphan grace period, the DLQ journal
//! compacted). The ledger holds the SHA-256 of the organisation's name,
//! never the name: every step works from the 12-hex-digit tag that starts the store's names of
//! its collections. A purge that cannot finish (an upload pending, the object store down) is
//! retried by a background task every `erasure.retry_interval` until it is complete, before
//! `erasure.deadline`; the ledger drives the task, so it survives a restart.
//!
//! [`Store::purge_dropped`]: mainstay_storage_tiering::Store::purge_dropped

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::Storage;
use crate::config::ErasureConfig;

/// Where the ledger lives under the object store's prefix.
pub const LEDGER_PREFIX: &str = "_erasure/ledger";

/// The tiers an erasure clears, in the order it clears them.
pub const TIERS: &[&str] = &[
    "ledger",
    "keys",
    "memory",
    "dlq",
    "dlq_archive",
    "idempotency_cache",
    "wal",
    "local_segments",
    "object_store",
];

/// Where an erasure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasureState {
    /// Recorded; the organisation's data is not yet dropped everywhere.
    Pending,
    /// Dropped from every live view; the physical purge (WAL, files, objects) is not finished.
    Purging,
    /// Nothing of the organisation is left in any tier.
    Complete,
}

/// One tier of an erasure and whether it is cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErasureStep {
    /// `ledger`, `keys`, `memory`, `dlq`, `dlq_archive`, `idempotency_cache`, `wal`,
    /// `local_segments` or `object_store`.
    pub tier: String,
    /// Whether nothing of the organisation is left in it.
    pub done: bool,
}

/// One erasure as the ledger keeps it (`<hash>.json`) and `GET .../erasure` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErasureRecord {
    /// Lowercase hex SHA-256 of the organisation's name (the name is never stored).
    pub org_hash: String,
    /// RFC 3339 time of the request.
    pub requested_at: String,
    /// RFC 3339 time by which the erasure must be complete.
    pub deadline: String,
    /// RFC 3339 time it became complete.
    #[serde(default)]
    pub completed_at: Option<String>,
    /// Where it is.
    pub state: ErasureState,
    /// Each tier, in the order they are cleared.
    pub steps: Vec<ErasureStep>,
    /// What still holds data of the organisation, in words (empty once complete).
    #[serde(default)]
    pub remaining: Vec<String>,
    /// Lowercase hex SHA-256 digests of the organisation's API keys at the time of the request
    /// (as `auth.api_keys[].key_sha256` holds them): refused with 403 from then on.
    #[serde(default)]
    pub blocked_keys: Vec<String>,
}

impl ErasureRecord {
    /// A new erasure of the organisation whose name hashes to `org_hash`, requested `now`.
    #[must_use]
    pub fn new(org_hash: String, now: SystemTime, deadline: Duration) -> Self {
        Self {
            org_hash,
            requested_at: rfc3339(now),
            deadline: rfc3339(now + deadline),
            completed_at: None,
            state: ErasureState::Pending,
            steps: TIERS
                .iter()
                .map(|tier| ErasureStep {
                    tier: (*tier).to_owned(),
                    done: false,
                })
                .collect(),
            remaining: Vec::new(),
            blocked_keys: Vec::new(),
        }
    }

    /// The tag that starts the store's names of the organisation's collections (12 hex digits).
    #[must_use]
    pub fn collection_tag(&self) -> &str {
        self.org_hash.get(..12).unwrap_or(&self.org_hash)
    }

    fn set(&mut self, tier: &str, done: bool) {
        if let Some(step) = self.steps.iter_mut().find(|step| step.tier == tier) {
            step.done = done;
        }
    }

    fn all_done(&self) -> bool {
        self.steps.iter().all(|step| step.done)
    }

    /// The deadline as a time, when it parses.
    #[must_use]
    pub fn deadline_time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.deadline).ok()
    }
}

/// The lowercase hex SHA-256 of an organisation's name, as the ledger keys it.
#[must_use]
pub fn organisation_hash(organisation: &str) -> String {
    hex::encode(Sha256::digest(organisation.as_bytes()))
}

fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
}

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The local copy could not be read or written.
    #[error("erasure ledger {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A ledger file does not parse.
    #[error(
        "erasure ledger {path}: not a ledger record: {reason}; restore it from the object store copy under `{LEDGER_PREFIX}/`"
    )]
    Invalid {
        /// The file or object.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The object store could not be reached.
    #[error("erasure ledger in the object store: {0}")]
    ObjectStore(String),
}

/// The erasure ledger: one JSON record per erased organisation, by the SHA-256 of its name, in
/// a local directory (`<data_dir>/erasure/`), in the object store
/// (`<prefix>/_erasure/ledger/<hash>.json`) and, with `backup.url`, in the backup root
/// (`<backup.url>/_erasure/ledger/<hash>.json`, decision 0121). The local copy is written first
/// and is the truth for this instance; the remote copies are what a restore from backup reads
/// (see [`erased_collection_prefixes`]): the backup root's outlives the store's prefix.
#[derive(Debug)]
pub struct ErasureLedger {
    local_dir: PathBuf,
    /// Each remote copy: its URL (for logs), its object store and the ledger's directory in it.
    remotes: Vec<(String, Arc<dyn ObjectStore>, ObjectPath)>,
    records: parking_lot::Mutex<BTreeMap<String, ErasureRecord>>,
}

impl ErasureLedger {
    /// Opens the ledger: reads the local copy in `local_dir` (creating it) and, for each remote
    /// copy (`remote_urls`: the object store as `storage.object_store_url` names it, the backup
    /// root as `backup.url` does), merges the records found there that the local copy lacks (a
    /// new data directory on a shared prefix, a restored one), then writes to each remote copy
    /// the records it lacks (a backup root configured after erasures), best effort.
    ///
    /// # Errors
    ///
    /// [`LedgerError`] when a URL cannot be opened, the local directory cannot be read or a
    /// record does not parse. An unreachable object store is not an error: the records found
    /// locally and in the other copies are used.
    pub async fn open(local_dir: &Path, remote_urls: &[String]) -> Result<Self, LedgerError> {
        let mut remotes = Vec::new();
        for url in remote_urls {
            if remotes.iter().any(|(known, _, _)| known == url) {
                continue;
            }
            let (store, prefix) = mainstay_storage_tiering::open_object_store(url)
                .map_err(|error| LedgerError::ObjectStore(error.to_string()))?;
            let mut root = ObjectPath::from(prefix.as_str());
            for part in LEDGER_PREFIX.split('/') {
                root = root.clone().join(part);
            }
            remotes.push((url.clone(), store, root));
        }
        let dir = local_dir.to_path_buf();
        let local = tokio::task::spawn_blocking(move || read_local(&dir))
            .await
            .map_err(|error| LedgerError::ObjectStore(error.to_string()))??;
        let ledger = Self {
            local_dir: local_dir.to_path_buf(),
            remotes,
            records: parking_lot::Mutex::new(local),
        };
        let mut found_in = Vec::new();
        for (url, store, root) in &ledger.remotes {
            // An object store that does not answer must not hold the start back: the local
            // copy is this instance's truth.
            let found = tokio::time::timeout(Duration::from_secs(10), remote_records(store, root))
                .await
                .unwrap_or_else(|_| {
                    Err(LedgerError::ObjectStore("no answer within 10 s".to_owned()))
                });
            match found {
                Ok(found) => {
                    let hashes: Vec<String> = found.iter().map(|r| r.org_hash.clone()).collect();
                    for record in found {
                        let missing = !ledger.records.lock().contains_key(&record.org_hash);
                        if missing {
                            ledger.write_local(&record).await?;
                            ledger
                                .records
                                .lock()
                                .insert(record.org_hash.clone(), record);
                        }
                    }
                    found_in.push(Some(hashes));
                }
                Err(error) => {
                    tracing::warn!(%error, url = %url, "could not read an erasure ledger copy; using the others");
                    found_in.push(None);
                }
            }
        }
        // A copy that answered and lacks records gets them (a backup root added later).
        for ((url, store, root), found) in ledger.remotes.iter().zip(found_in) {
            let Some(found) = found else { continue };
            for record in ledger.records() {
                if !found.contains(&record.org_hash)
                    && let Err(error) = put_record(store, root, &record).await
                {
                    tracing::warn!(%error, url = %url, "could not copy an erasure ledger record");
                }
            }
        }
        Ok(ledger)
    }

    /// Every record, by organisation hash.
    #[must_use]
    pub fn records(&self) -> Vec<ErasureRecord> {
        self.records.lock().values().cloned().collect()
    }

    /// The record of the organisation whose name hashes to `org_hash`.
    #[must_use]
    pub fn get(&self, org_hash: &str) -> Option<ErasureRecord> {
        self.records.lock().get(org_hash).cloned()
    }

    /// Saves a record: durably in the local copy (an error then), then in the object store
    /// (returns whether that worked; the `ledger` step stays open until it did).
    ///
    /// # Errors
    ///
    /// [`LedgerError::Io`] when the local copy could not be written.
    pub async fn save(&self, record: &mut ErasureRecord) -> Result<bool, LedgerError> {
        record.set("ledger", true);
        self.write_local(record).await?;
        let mut stored = true;
        for (url, store, root) in &self.remotes {
            if let Err(error) = put_record(store, root, record).await {
                tracing::warn!(%error, url = %url, "could not write an erasure ledger copy; retried by the erasure task");
                stored = false;
            }
        }
        if !stored {
            record.set("ledger", false);
            self.write_local(record).await?;
        }
        self.records
            .lock()
            .insert(record.org_hash.clone(), record.clone());
        Ok(stored)
    }

    async fn write_local(&self, record: &ErasureRecord) -> Result<(), LedgerError> {
        let dir = self.local_dir.clone();
        let name = format!("{}.json", record.org_hash);
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        tokio::task::spawn_blocking(move || write_atomic(&dir, &name, &bytes))
            .await
            .map_err(|error| LedgerError::ObjectStore(error.to_string()))?
    }
}

/// Writes `record` into the ledger directory `root` of `store`.
async fn put_record(
    store: &Arc<dyn ObjectStore>,
    root: &ObjectPath,
    record: &ErasureRecord,
) -> Result<(), object_store::Error> {
    let path = root.clone().join(format!("{}.json", record.org_hash));
    let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
    store.put(&path, bytes.into()).await.map(|_| ())
}

/// Every record in the ledger directory `root` of `store`.
async fn remote_records(
    store: &Arc<dyn ObjectStore>,
    root: &ObjectPath,
) -> Result<Vec<ErasureRecord>, LedgerError> {
    use futures::TryStreamExt as _;
    let listed: Vec<object_store::ObjectMeta> = store
        .list(Some(root))
        .try_collect()
        .await
        .map_err(|error| LedgerError::ObjectStore(error.to_string()))?;
    let mut records = Vec::new();
    for meta in listed {
        if meta.location.extension() != Some("json") {
            continue;
        }
        let bytes = store
            .get(&meta.location)
            .await
            .map_err(|error| LedgerError::ObjectStore(error.to_string()))?
            .bytes()
            .await
            .map_err(|error| LedgerError::ObjectStore(error.to_string()))?;
        let record: ErasureRecord =
            serde_json::from_slice(&bytes).map_err(|error| LedgerError::Invalid {
                path: meta.location.to_string(),
                reason: error.to_string(),
            })?;
        records.push(record);
    }
    Ok(records)
}

/// The collection-name prefixes of every organisation in the ledger (the 12-hex-digit tags, as
/// `exclude_collection_prefixes` of a restore takes them): a restore from a backup taken before
/// an erasure leaves these collections out, so it never brings an erased organisation back.
#[must_use]
pub fn erased_collection_prefixes(ledger: &ErasureLedger) -> Vec<String> {
    let mut prefixes: Vec<String> = ledger
        .records()
        .iter()
        .map(|record| record.collection_tag().to_owned())
        .collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes
}

fn read_local(dir: &Path) -> Result<BTreeMap<String, ErasureRecord>, LedgerError> {
    let io = |source| LedgerError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut records = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|source| LedgerError::Io {
            path: path.clone(),
            source,
        })?;
        let record: ErasureRecord =
            serde_json::from_slice(&bytes).map_err(|error| LedgerError::Invalid {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
        records.insert(record.org_hash.clone(), record);
    }
    Ok(records)
}

/// Writes `dir/name` by temp file, fsync, rename and fsync of the directory.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LedgerError> {
    let path = dir.join(name);
    let temporary = dir.join(format!(".{name}.tmp"));
    let io = |source| LedgerError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io)
}

/// The erasure metrics (no label names an organisation).
#[derive(Debug, Clone, Default)]
pub struct ErasureMetrics {
    requested: Counter,
    completed: Counter,
    pending: Gauge,
}

impl ErasureMetrics {
    /// Registers `organisation_erasures_requested_total`, `organisation_erasures_completed_total`
    /// and `organisation_erasures_pending`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "organisation_erasures_requested",
            "Erasures of organisations requested (DELETE /admin/organisations/{org})",
            metrics.requested.clone(),
        );
        registry.register(
            "organisation_erasures_completed",
            "Erasures of organisations physically complete in every tier",
            metrics.completed.clone(),
        );
        registry.register(
            "organisation_erasures_pending",
            "Erasures of organisations recorded but not yet physically complete",
            metrics.pending.clone(),
        );
        metrics
    }
}

/// The erasures of this instance: the ledger, the settings, the metrics, and the lock that runs
/// one erasure at a time.
#[derive(Debug, Clone)]
pub struct Erasures {
    /// The ledger.
    pub ledger: Arc<ErasureLedger>,
    config: ErasureConfig,
    metrics: ErasureMetrics,
    running: Arc<tokio::sync::Mutex<()>>,
    wake: Arc<tokio::sync::Notify>,
    /// The keyring of `storage.encryption`: an erasure destroys the organisation's data key.
    keyring: Option<mainstay_storage_tiering::keyring::Keyring>,
}

impl Erasures {
    /// The erasures over a ledger.
    #[must_use]
    pub fn new(ledger: ErasureLedger, config: ErasureConfig, metrics: ErasureMetrics) -> Self {
        let erasures = Self {
            ledger: Arc::new(ledger),
            config,
            metrics,
            running: Arc::default(),
            wake: Arc::default(),
            keyring: None,
        };
        erasures.update_pending();
        erasures
    }

    /// Destroys each erased organisation's data key in `keyring` (the step `keys`; without a
    /// keyring there is no key and the step is done at once).
    #[must_use]
    pub fn with_keyring(
        mut self,
        keyring: Option<mainstay_storage_tiering::keyring::Keyring>,
    ) -> Self {
        self.keyring = keyring;
        self
    }

    /// The SHA-256 digests of every key the ledger blocks.
    #[must_use]
    pub fn blocked_keys(&self) -> Vec<[u8; 32]> {
        self.ledger
            .records()
            .iter()
            .flat_map(|record| record.blocked_keys.clone())
            .filter_map(|hex_digest| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(&hex_digest, &mut digest).ok()?;
                Some(digest)
            })
            .collect()
    }

    fn update_pending(&self) {
        let pending = self
            .ledger
            .records()
            .iter()
            .filter(|record| record.state != ErasureState::Complete)
            .count();
        self.metrics
            .pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Records a new erasure of the organisation whose name hashes to `org_hash` (or returns
    /// the one under way), blocking `keys`. The record is durable in the local ledger before
    /// this returns.
    ///
    /// # Errors
    ///
    /// [`LedgerError`] when the local ledger cannot be written: nothing was erased.
    pub async fn request(
        &self,
        org_hash: String,
        keys: &[[u8; 32]],
        now: SystemTime,
    ) -> Result<ErasureRecord, LedgerError> {
        let _running = self.running.lock().await;
        let mut record = match self.ledger.get(&org_hash) {
            Some(record) if record.state != ErasureState::Complete => record,
            _ => {
                self.metrics.requested.inc();
                ErasureRecord::new(org_hash, now, self.config.deadline)
            }
        };
        for key in keys {
            let key = hex::encode(key);
            if !record.blocked_keys.contains(&key) {
                record.blocked_keys.push(key);
            }
        }
        self.ledger.save(&mut record).await?;
        self.update_pending();
        tracing::info!(target: "audit", org_hash = %record.org_hash, deadline = %record.deadline, blocked_keys = record.blocked_keys.len(), "erasure requested");
        Ok(record)
    }

    /// Runs the steps of an erasure that are not done yet: the logical ones (collections, DLQ,
    /// idempotency answers) always, the physical purge when `purge` is given (the time to wait
    /// for uploads). Saves and returns the record.
    ///
    /// # Errors
    ///
    /// [`LedgerError`] when the local ledger cannot be written.
    pub async fn advance(
        &self,
        storage: &Storage,
        org_hash: &str,
        purge: Option<Duration>,
        now: impl Fn() -> SystemTime,
    ) -> Result<Option<ErasureRecord>, LedgerError> {
        let _running = self.running.lock().await;
        let Some(mut record) = self.ledger.get(org_hash) else {
            return Ok(None);
        };
        if record.state == ErasureState::Complete {
            return Ok(Some(record));
        }
        let prefix = format!("{}-", record.collection_tag());
        record.remaining.clear();
        // A record written before a tier was added (`dlq_archive`) gets it, not done.
        record.steps = TIERS
            .iter()
            .map(|tier| ErasureStep {
                tier: (*tier).to_owned(),
                done: record
                    .steps
                    .iter()
                    .any(|step| step.tier == *tier && step.done),
            })
            .collect();
        // The data key first: from here on no copy of a sealed value opens, wherever it is
        // (a backup, a lagging replica of the object store), before any byte is purged.
        let keys_done = match &self.keyring {
            None => true,
            Some(keyring) => match keyring.destroy_hashed(&record.org_hash).await {
                Ok(()) => true,
                Err(error) => {
                    record
                        .remaining
                        .push(format!("keys: could not destroy the data key: {error}"));
                    false
                }
            },
        };
        record.set("keys", keys_done);
        // Memory (and the catalog): every collection of the organisation.
        let mut dropped_all = true;
        for info in storage.store.collections() {
            if !info.name.starts_with(&prefix) {
                continue;
            }
            if let Err(error) = storage.store.drop_collection(&info.name).await {
                dropped_all = false;
                record
                    .remaining
                    .push(format!("memory: could not drop a collection: {error}"));
            }
        }
        record.set("memory", dropped_all);
        // The DLQ: every entry keyed by one of its collections, with its pinned file.
        let dlq_done = erase_dlq_entries(storage, &prefix, &mut record.remaining).await;
        record.set("dlq", dlq_done);
        // The DLQ archive: the views of its entries evicted or expired before (after the entries
        // went, so that none of them is archived after the rewrite).
        let archive_done = erase_dlq_archive(storage, &prefix, &mut record.remaining).await;
        record.set("dlq_archive", archive_done);
        storage.idempotency.forget_prefix(&prefix);
        record.set("idempotency_cache", true);
        if dropped_all {
            record.state = ErasureState::Purging;
        }
        if let Some(timeout) = purge
            && dropped_all
        {
            match storage.store.purge_dropped(&prefix, timeout).await {
                Ok(report) => {
                    let left = |tier: &str| report.remaining.iter().any(|r| r.starts_with(tier));
                    record.set("wal", !left("wal"));
                    record.set("local_segments", !left("local_segments"));
                    record.set("object_store", !left("object_store"));
                    // The DLQ journal still held deleted entries until compacted.
                    if left("dlq") {
                        record.set("dlq", false);
                    }
                    record.remaining.extend(report.remaining);
                }
                Err(error) => record.remaining.push(format!("purge: {error}")),
            }
        }
        let stored = self.ledger.save(&mut record).await?;
        if !stored {
            record
                .remaining
                .push("ledger: the object-store copy is not written yet".to_owned());
        }
        if record.all_done() {
            record.state = ErasureState::Complete;
            record.completed_at = Some(rfc3339(now()));
            record.remaining.clear();
            self.ledger.save(&mut record).await?;
            self.metrics.completed.inc();
            tracing::info!(target: "audit", org_hash = %record.org_hash, completed_at = ?record.completed_at, "erasure complete");
        }
        self.update_pending();
        Ok(Some(record))
    }

    /// Wakes the background task (after a request without `?purge=now`).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Finishes every unfinished erasure of the ledger once; returns how many are still
    /// unfinished. Logs an error for each past its deadline.
    pub async fn finish_pending(&self, storage: &Storage, purge_timeout: Duration) -> usize {
        let mut unfinished = 0;
        for record in self.ledger.records() {
            if record.state == ErasureState::Complete {
                continue;
            }
            match self
                .advance(
                    storage,
                    &record.org_hash,
                    Some(purge_timeout),
                    SystemTime::now,
                )
                .await
            {
                Ok(Some(record)) if record.state == ErasureState::Complete => {}
                Ok(Some(record)) => {
                    unfinished += 1;
                    if record
                        .deadline_time()
                        .is_some_and(|deadline| SystemTime::now() > deadline)
                    {
                        tracing::error!(org_hash = %record.org_hash, deadline = %record.deadline, remaining = ?record.remaining, "an erasure is past its deadline; see docs/runbooks/scenario-erase-tenant.md");
                    } else {
                        tracing::warn!(org_hash = %record.org_hash, remaining = ?record.remaining, "an erasure is not complete yet; retrying");
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    unfinished += 1;
                    tracing::error!(%error, "could not write the erasure ledger");
                }
            }
        }
        unfinished
    }

    /// Starts the task that finishes unfinished erasures: at once (after a restart the ledger
    /// says what is left), when woken, and every `erasure.retry_interval`. Ends when the
    /// returned handle is dropped.
    #[must_use]
    pub fn spawn(&self, storage: Storage, purge_timeout: Duration) -> crate::app::AbortOnDrop {
        let erasures = self.clone();
        crate::app::AbortOnDrop::new(tokio::spawn(async move {
            loop {
                erasures.finish_pending(&storage, purge_timeout).await;
                let _ =
                    tokio::time::timeout(erasures.config.retry_interval, erasures.wake.notified())
                        .await;
            }
        }))
    }
}

/// Rewrites the DLQ archive without the lines of keys starting with `prefix`; returns whether
/// none is left. A line that does not parse is kept by the DLQ; one whose bytes hold `prefix`
/// may be the organisation's, so the step stays open (an operator removes the line: see
/// docs/runbooks/scenario-erase-tenant.md) and the erasure is retried.
async fn erase_dlq_archive(storage: &Storage, prefix: &str, remaining: &mut Vec<String>) -> bool {
    match storage.dlq.erase_archived(prefix).await {
        Ok(rewrite) => {
            let suspect: Vec<String> = rewrite
                .unreadable
                .iter()
                .filter(|line| line.holds_prefix)
                .map(|line| line.line.to_string())
                .collect();
            if suspect.is_empty() {
                return true;
            }
            remaining.push(format!(
                "dlq_archive: lines {} of archive.jsonl do not parse and hold the organisation's tag; remove them by hand",
                suspect.join(", ")
            ));
            false
        }
        Err(error) => {
            remaining.push(format!("dlq_archive: {error}"));
            false
        }
    }
}

/// Deletes every DLQ entry whose key starts with `prefix` (any queue) and the file a pinned
/// entry points at; returns whether all went.
async fn erase_dlq_entries(storage: &Storage, prefix: &str, remaining: &mut Vec<String>) -> bool {
    let filter = mainstay_dlq::Filter::default();
    let mut doomed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        match storage
            .dlq
            .list(&filter, cursor.as_deref(), mainstay_dlq::MAX_PAGE_SIZE)
        {
            Ok(page) => {
                doomed.extend(
                    page.entries
                        .into_iter()
                        .filter(|entry| entry.key().starts_with(prefix)),
                );
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            Err(error) => {
                remaining.push(format!("dlq: could not list the entries: {error}"));
                return false;
            }
        }
    }
    let mut done = true;
    for entry in doomed {
        if let mainstay_dlq::Payload::File(file) = entry.payload() {
            let path = file.path.clone();
            let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
            if let Ok(Err(error)) = removed
                && error.kind() != std::io::ErrorKind::NotFound
            {
                done = false;
                remaining.push(format!("dlq: could not delete a pinned file: {error}"));
            }
        }
        if let Err(error) = storage.dlq.delete(entry.id()).await {
            done = false;
            remaining.push(format!("dlq: could not delete an entry: {error}"));
        }
    }
    done
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use mainstay_storage_tiering::{Store, StoreConfig, TieringPolicy};

    use std::io::Write as _;

    use super::{
        ErasureLedger, ErasureMetrics, ErasureState, Erasures, erased_collection_prefixes,
        organisation_hash,
    };
    use crate::app::Storage;
    use crate::config::ErasureConfig;

    /// A store (memory policy only, with a `memory://` object store) and its DLQ in `dir`.
    pub(crate) async fn storage(dir: &Path) -> Storage {
        let dlq = mainstay_dlq::Dlq::open(dir.join("dlq"), mainstay_dlq::DlqConfig::default())
            .await
            .unwrap();
        let config = StoreConfig {
            data_dir: dir.join("data"),
            object_store_url: Some("memory://".to_owned()),
            ..StoreConfig::default()
        };
        let store = Store::builder(config)
            .dlq(dlq.clone())
            .open()
            .await
            .unwrap();
        Storage {
            store,
            dlq,
            idempotency: Arc::default(),
            takeover_lsn: 0,
            write_gate: Arc::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_background_task_finishes_an_erasure_left_unfinished_before_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(dir.path()).await;
        let tag = crate::routes::collections::tag("acme");
        let name = format!("{tag}-orders");
        storage
            .store
            .create_collection(&name, TieringPolicy::MemoryS3)
            .await
            .unwrap();
        storage
            .store
            .put(&name, "r1", bytes::Bytes::from_static(b"value"))
            .await
            .unwrap();
        let config = ErasureConfig {
            deadline: Duration::from_secs(24 * 3600),
            retry_interval: Duration::from_secs(600),
        };
        let ledger_dir = dir.path().join("erasure");
        let org_hash = organisation_hash("acme");
        {
            // Requested and dropped, but the instance stops before the purge.
            let ledger = ErasureLedger::open(&ledger_dir, &[]).await.unwrap();
            let erasures = Erasures::new(ledger, config.clone(), ErasureMetrics::default());
            erasures
                .request(org_hash.clone(), &[[7u8; 32]], SystemTime::now())
                .await
                .unwrap();
            let record = erasures
                .advance(&storage, &org_hash, None, SystemTime::now)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(record.state, ErasureState::Purging);
        }
        // After a restart the ledger alone drives the task.
        let ledger = ErasureLedger::open(&ledger_dir, &[]).await.unwrap();
        assert_eq!(erased_collection_prefixes(&ledger), vec![tag.clone()]);
        let erasures = Erasures::new(ledger, config.clone(), ErasureMetrics::default());
        assert_eq!(erasures.blocked_keys(), vec![[7u8; 32]]);
        let started = tokio::time::Instant::now();
        let _task = erasures.spawn(storage.clone(), Duration::from_secs(5));
        let mut record = erasures.ledger.get(&org_hash).unwrap();
        while record.state != ErasureState::Complete && started.elapsed() < config.deadline {
            tokio::time::sleep(config.retry_interval).await;
            record = erasures.ledger.get(&org_hash).unwrap();
        }
        assert_eq!(record.state, ErasureState::Complete, "{record:?}");
        assert!(record.steps.iter().all(|step| step.done), "{record:?}");
        assert!(
            started.elapsed() < config.deadline,
            "complete before the deadline"
        );
        let completed = humantime::parse_rfc3339(record.completed_at.as_deref().unwrap()).unwrap();
        assert!(completed <= record.deadline_time().unwrap());
        assert!(storage.store.collections().is_empty());
    }

    /// Pushes `keys` to the queue `deliveries`, set to hold one entry: each push evicts the
    /// one before into the archive.
    async fn archive_keys(storage: &Storage, keys: &[String]) {
        storage
            .dlq
            .set_queue_config(
                "deliveries",
                mainstay_dlq::QueueConfig {
                    capacity: 1,
                    ..mainstay_dlq::QueueConfig::default()
                },
            )
            .unwrap();
        for key in keys {
            storage
                .dlq
                .push(mainstay_dlq::NewEntry::inline(
                    "deliveries",
                    key.clone(),
                    format!("payload of {key}").into_bytes(),
                    mainstay_dlq::FailureClass::Permanent,
                    "delivery failed",
                ))
                .await
                .unwrap();
        }
    }

    fn archive(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("dlq/archive.jsonl")).unwrap_or_default()
    }

    fn step(record: &super::ErasureRecord, tier: &str) -> bool {
        record
            .steps
            .iter()
            .find(|step| step.tier == tier)
            .unwrap_or_else(|| panic!("no step {tier}: {record:?}"))
            .done
    }

    /// The views of the organisation's evicted dead-letter entries leave `archive.jsonl`; the
    /// other organisations' stay. A line that does not parse but holds the organisation's tag
    /// keeps the step `dlq_archive` open until it is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_erasure_removes_the_organisations_lines_from_the_dlq_archive() {
        const MARKER: &str = "zqARCHIVEDmarker5";
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(dir.path()).await;
        let tag = crate::routes::collections::tag("acme");
        let other = crate::routes::collections::tag("other");
        archive_keys(
            &storage,
            &[
                format!("{tag}-orders/{MARKER}-1"),
                format!("{other}-orders/kept-1"),
                format!("{tag}-orders/{MARKER}-2"),
                format!("{other}-orders/kept-2"),
                format!("{other}-orders/kept-3"),
            ],
        )
        .await;
        assert_eq!(archive(dir.path()).matches(MARKER).count(), 2);
        // A torn line that holds the tag: whose it is cannot be told.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("dlq/archive.jsonl"))
            .unwrap();
        writeln!(file, "{{\"entry\":{{\"key\":\"{tag}-orders/torn").unwrap();
        drop(file);

        let ledger = ErasureLedger::open(&dir.path().join("erasure"), &[])
            .await
            .unwrap();
        let erasures = Erasures::new(ledger, ErasureConfig::default(), ErasureMetrics::default());
        let org_hash = organisation_hash("acme");
        erasures
            .request(org_hash.clone(), &[], SystemTime::now())
            .await
            .unwrap();
        let purge = Some(Duration::from_secs(5));
        let record = erasures
            .advance(&storage, &org_hash, purge, SystemTime::now)
            .await
            .unwrap()
            .unwrap();
        let left = archive(dir.path());
        assert!(!left.contains(MARKER), "{left}");
        assert_eq!(left.matches("kept-").count(), 2, "{left}");
        assert!(!step(&record, "dlq_archive"), "{record:?}");
        assert_ne!(record.state, ErasureState::Complete);
        assert!(
            record
                .remaining
                .iter()
                .any(|line| line.starts_with("dlq_archive: lines 5 ")),
            "{record:?}"
        );

        // The operator removes the line; the next pass completes.
        let kept: String = left
            .lines()
            .filter(|line| !line.contains("/torn"))
            .map(|line| format!("{line}\n"))
            .collect();
        std::fs::write(dir.path().join("dlq/archive.jsonl"), kept).unwrap();
        let record = erasures
            .advance(&storage, &org_hash, purge, SystemTime::now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.state, ErasureState::Complete, "{record:?}");
        assert!(step(&record, "dlq_archive"));
        assert_eq!(archive(dir.path()).matches("kept-").count(), 2);
        assert!(!archive(dir.path()).contains(&tag));
    }

    /// A ledger record written before the `dlq_archive` step existed gets it, not done, and
    /// completes only once the archive is rewritten.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_without_the_dlq_archive_step_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage(dir.path()).await;
        let tag = crate::routes::collections::tag("acme");
        archive_keys(
            &storage,
            &[format!("{tag}-orders/old-1"), format!("{tag}-orders/old-2")],
        )
        .await;
        let org_hash = organisation_hash("acme");
        let mut old = super::ErasureRecord::new(
            org_hash.clone(),
            SystemTime::now(),
            Duration::from_secs(3600),
        );
        old.steps.retain(|step| step.tier != "dlq_archive");
        let ledger_dir = dir.path().join("erasure");
        std::fs::create_dir_all(&ledger_dir).unwrap();
        std::fs::write(
            ledger_dir.join(format!("{org_hash}.json")),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let ledger = ErasureLedger::open(&ledger_dir, &[]).await.unwrap();
        let erasures = Erasures::new(ledger, ErasureConfig::default(), ErasureMetrics::default());
        let record = erasures
            .advance(
                &storage,
                &org_hash,
                Some(Duration::from_secs(5)),
                SystemTime::now,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.state, ErasureState::Complete, "{record:?}");
        assert!(step(&record, "dlq_archive"));
        assert_eq!(record.steps.len(), super::TIERS.len());
        assert!(!archive(dir.path()).contains(&tag));
    }

    /// Decision 0121: each remote copy gets every record: one saved while only the object store
    /// was configured reaches a backup root added later, at the next open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_remote_copy_added_later_gets_the_records_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let (objects, backups) = (dir.path().join("objects"), dir.path().join("backups"));
        std::fs::create_dir_all(&objects).unwrap();
        std::fs::create_dir_all(&backups).unwrap();
        let url = |path: &Path| format!("file://{}", path.display());
        let local = dir.path().join("erasure");
        let ledger = ErasureLedger::open(&local, &[url(&objects)]).await.unwrap();
        let mut record = super::ErasureRecord::new(
            organisation_hash("acme"),
            SystemTime::now(),
            Duration::from_secs(3600),
        );
        assert!(ledger.save(&mut record).await.unwrap());
        let in_backups = || {
            std::fs::read_dir(backups.join(super::LEDGER_PREFIX))
                .map(|files| files.count())
                .unwrap_or(0)
        };
        assert_eq!(in_backups(), 0);
        drop(ledger);
        let ledger = ErasureLedger::open(&local, &[url(&objects), url(&backups)])
            .await
            .unwrap();
        assert_eq!(in_backups(), 1, "the backup root got the record");
        // And a restore that reads only the backup root finds it.
        let scratch = dir.path().join("scratch");
        let read = ErasureLedger::open(&scratch, &[url(&backups)])
            .await
            .unwrap();
        assert_eq!(read.records().len(), 1);
        assert_eq!(ledger.records(), read.records());
    }
}
