//! Backups: a consistent online copy under concurrent writes and a racing compaction, a
//! verification that catches a changed byte in every kind of file, restores (at the newest
//! point and at an LSN inside the window), and the refusals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mainstay_dlq::{FailureClass, NewEntry, PinnedFile};
use mainstay_storage_tiering::{
    BackupError, BackupTarget, ListQuery, RestoreError, RestoreOptions, RestorePoint, Store,
    StoreConfig, TieringPolicy, Verification, VerifyOptions, backup_status, restore, verify,
    verify_and_record,
};
use object_store::{ObjectStore, ObjectStoreExt};

use crate::common::{FaultStore, config};
use crate::s3_server::S3Server;

/// The collections every test writes: one of each policy.
const COLLECTIONS: [(&str, TieringPolicy); 3] = [
    ("cold", TieringPolicy::S3Only),
    ("mem", TieringPolicy::Memory),
    ("tiered", TieringPolicy::MemoryS3),
];

/// A store in `dir/data` with its objects under `dir/objects` (`file://`).
fn store_config(dir: &Path) -> StoreConfig {
    StoreConfig {
        object_store_url: Some(format!("file://{}", dir.join("objects").display())),
        ..config(dir)
    }
}

async fn open(dir: &Path) -> Store {
    let store = Store::open(store_config(dir))
        .await
        .expect("the store opens");
    for (name, policy) in COLLECTIONS {
        store
            .create_collection(name, policy)
            .await
            .expect("created");
    }
    store
}

/// Every acknowledged write, with its LSN (one writer at a time, so `last_lsn` right after the
/// acknowledgement is the write's own).
#[derive(Debug, Default, Clone)]
struct History(Vec<(u64, String, String, Option<Bytes>)>);

impl History {
    async fn put(&mut self, store: &Store, collection: &str, id: &str, value: Bytes) {
        store
            .put(collection, id, value.clone())
            .await
            .expect("acknowledged");
        self.0
            .push((store.last_lsn(), collection.into(), id.into(), Some(value)));
    }

    async fn delete(&mut self, store: &Store, collection: &str, id: &str) {
        store.delete(collection, id).await.expect("acknowledged");
        self.0
            .push((store.last_lsn(), collection.into(), id.into(), None));
    }

    /// The records every collection holds once the writes up to `lsn` are applied.
    fn at(&self, lsn: u64) -> BTreeMap<String, BTreeMap<String, Bytes>> {
        let mut model: BTreeMap<String, BTreeMap<String, Bytes>> = COLLECTIONS
            .iter()
            .map(|(name, _)| ((*name).to_owned(), BTreeMap::new()))
            .collect();
        for (at, collection, id, value) in &self.0 {
            if *at > lsn {
                continue;
            }
            let records = model.entry(collection.clone()).or_default();
            match value {
                Some(value) => records.insert(id.clone(), value.clone()),
                None => records.remove(id),
            };
        }
        model
    }
}

/// Writes `n` records per collection (ids `{tag}{i}`), deleting every fifth, flushing once
/// half-way.
async fn write_some(store: &Store, history: &mut History, tag: &str, n: usize) {
    for i in 0..n {
        for (name, _) in COLLECTIONS {
            let value = Bytes::from(format!("{name}-{tag}-{i}-{}", "v".repeat(i % 40)));
            history
                .put(store, name, &format!("{tag}{i:04}"), value)
                .await;
            if i % 5 == 4 {
                history
                    .delete(store, name, &format!("{tag}{:04}", i - 2))
                    .await;
            }
        }
        if i == n / 2 {
            store.flush().await.expect("flushed");
        }
    }
}

/// Every record of every collection of `store`.
async fn contents(store: &Store) -> BTreeMap<String, BTreeMap<String, Bytes>> {
    let mut out = BTreeMap::new();
    for collection in store.collections() {
        let mut records = BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = store
                .list(
                    &collection.name,
                    &ListQuery {
                        cursor,
                        limit: Some(1000),
                        ..ListQuery::default()
                    },
                )
                .await
                .expect("a listing");
            assert!(!page.degraded);
            records.extend(page.records.into_iter().map(|r| (r.id, r.value)));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        out.insert(collection.name, records);
    }
    out
}

/// Restores `location` into `dir/<name>` (objects in `dir/<name>-objects`), opens it and returns
/// what it serves.
async fn restored(
    location: &BackupTarget,
    dir: &Path,
    name: &str,
    at: Option<RestorePoint>,
) -> BTreeMap<String, BTreeMap<String, Bytes>> {
    let data_dir = dir.join(name);
    let objects = format!("file://{}", dir.join(format!("{name}-objects")).display());
    let mut options = RestoreOptions::new(Some(objects.clone()));
    options.at = at;
    restore(location, &data_dir, &options)
        .await
        .expect("the backup restores");
    let config = StoreConfig {
        data_dir,
        object_store_url: Some(objects),
        ..StoreConfig::default()
    };
    let store = Store::open(config).await.expect("the restored store opens");
    let out = contents(&store).await;
    store.close(Duration::from_secs(10)).await.expect("closed");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_concurrent_writes_and_compaction_holds_exactly_the_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut history = History::default();
    write_some(&store, &mut history, "a", 60).await;
    store.flush().await.unwrap();
    write_some(&store, &mut history, "b", 60).await;

    // A writer keeps writing (and flushing) while the backup and compactions run; the
    // destination holds the backup's first segment until the writer has done two more rounds,
    // so that writes after the consistent point are in the WAL before the backup reads it.
    let stop = Arc::new(AtomicBool::new(false));
    let (rounds_tx, mut rounds) = tokio::sync::mpsc::unbounded_channel();
    let writer = {
        let (store, stop, mut history) = (store.clone(), Arc::clone(&stop), history.clone());
        tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) || round < 3 {
                write_some(&store, &mut history, &format!("w{round}-"), 20).await;
                round += 1;
                let _ = rounds_tx.send(round);
            }
            history
        })
    };
    let (target, destination) = held_destination(dir.path());
    let backup = {
        let (store, target) = (store.clone(), target.clone());
        tokio::spawn(async move { store.backup(&target).await })
    };
    let compactions = {
        let store = store.clone();
        tokio::spawn(async move { (store.compact("mem").await, store.compact("tiered").await) })
    };
    while destination.segment_puts.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    while rounds.try_recv().is_ok() {}
    for _ in 0..2 {
        rounds.recv().await.expect("the writer goes on");
    }
    destination.release_segment_puts();
    let manifest = backup.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let manifest = manifest.expect("the backup is written");
    let (mem, tiered) = compactions.await.unwrap();
    mem.expect("compacted");
    tiered.expect("compacted");
    let history = writer.await.unwrap();
    let point = manifest.consistent_point.lsn;
    assert!(
        history.0.iter().any(|(lsn, ..)| *lsn > point),
        "writes went on after the point"
    );

    let expected = history.at(point);
    let records: u64 = expected.values().map(|r| r.len() as u64).sum();
    assert_eq!(manifest.counts.records, records);
    assert_eq!(manifest.counts.collections, 3);
    assert_eq!(
        restored(&target, dir.path(), "restored", None).await,
        expected
    );
    store.close(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_during_the_copy_deletes_nothing_the_backup_still_copies() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = store_config(dir.path());
    config.compaction.grace_period = Duration::ZERO;
    let store = Store::open(config).await.unwrap();
    for (name, policy) in COLLECTIONS {
        store.create_collection(name, policy).await.unwrap();
    }
    let mut history = History::default();
    for round in 0..3 {
        write_some(&store, &mut history, &format!("r{round}-"), 10).await;
        store.flush().await.unwrap();
    }
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    let mem_dir = dir.path().join("data/segments/mem");
    let inputs = files(&mem_dir);
    assert!(inputs.len() >= 2, "segments to compact: {inputs:?}");

    // The destination holds the backup's first segment put until the compactions are done.
    let (target, destination) = held_destination(dir.path());
    let backup = {
        let (store, target) = (store.clone(), target.clone());
        tokio::spawn(async move { store.backup(&target).await })
    };
    while destination.segment_puts.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert!(store.compact("mem").await.unwrap() >= 2);
    assert!(store.compact("tiered").await.unwrap() >= 2);
    store.collect_orphans().await.unwrap();
    for input in &inputs {
        assert!(
            input.exists(),
            "{} was deleted under the backup's lease",
            input.display()
        );
    }
    destination.release_segment_puts();
    let manifest = backup.await.unwrap().expect("the backup completes");

    // Released: the inputs go now.
    while inputs.iter().any(|input| input.exists()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected = history.at(manifest.consistent_point.lsn);
    assert_eq!(
        restored(&target, dir.path(), "restored", None).await,
        expected
    );
    store.close(Duration::from_secs(10)).await.unwrap();
}

/// A destination in `dir/backups` whose segment puts wait until released.
fn held_destination(dir: &Path) -> (BackupTarget, Arc<FaultStore>) {
    let root = dir.join("backups");
    std::fs::create_dir_all(&root).unwrap();
    let destination = FaultStore::new(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(root).unwrap(),
    ));
    destination.hold_segment_puts.store(true, Ordering::SeqCst);
    let target = BackupTarget::with_object_store(
        "held",
        Arc::clone(&destination) as Arc<dyn ObjectStore>,
        "",
    );
    (target, destination)
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A store with records in segments and in the WAL only, a DLQ with an inline and a pinned
/// entry, and a settings file; backed up into `dir/backups`. Returns the backup's directory.
async fn full_backup(dir: &Path) -> (PathBuf, u64) {
    let store = open(dir).await;
    let mut history = History::default();
    write_some(&store, &mut history, "a", 30).await;
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    write_some(&store, &mut history, "b", 10).await;
    let pinned = dir.join("pinned.bin");
    std::fs::write(&pinned, b"a pinned payload").unwrap();
    store
        .dlq()
        .push(NewEntry::inline(
            "app",
            "k1",
            &b"inline"[..],
            FailureClass::Transient,
            "boom",
        ))
        .await
        .unwrap();
    store
        .dlq()
        .push(NewEntry::pinned_file(
            "app",
            "k2",
            PinnedFile {
                path: pinned,
                size: 16,
                crc32c: crc32c::crc32c(b"a pinned payload"),
            },
            FailureClass::Transient,
            "boom",
        ))
        .await
        .unwrap();
    let settings = dir.join("admin-config.toml");
    std::fs::write(&settings, "[compaction]\nmin_segments = 3\n").unwrap();
    let root = dir.join("backups");
    let target = BackupTarget::parse(root.to_str().unwrap())
        .unwrap()
        .settings_file(&settings);
    let manifest = store.backup(&target).await.unwrap();
    store.close(Duration::from_secs(10)).await.unwrap();
    let records = history
        .at(manifest.consistent_point.lsn)
        .values()
        .map(|r| r.len() as u64)
        .sum();
    (root.join(&manifest.id), records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_sound_backup_and_names_the_file_of_every_changed_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (backup, records) = full_backup(dir.path()).await;
    let report = verify(
        &BackupTarget::parse(dir.path().join("backups").to_str().unwrap()).unwrap(),
        &VerifyOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Verification::Ok, "{:?}", report.problems);
    assert_eq!((report.records, report.dlq_entries), (records, 2));
    assert!(report.files_checked >= 8, "{report:?}");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("backup.json")).unwrap()).unwrap();
    let of_kind = |kind: &str| -> String {
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == kind)
            .unwrap_or_else(|| panic!("the backup has a {kind} file"))["path"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut cases: Vec<String> = [
        "catalog",
        "segment",
        "wal_tail",
        "dlq_snapshot",
        "dlq_payload",
        "settings",
    ]
    .into_iter()
    .map(of_kind)
    .collect();
    cases.push("backup.json".to_owned());
    for (n, file) in cases.iter().enumerate() {
        let copy = dir.path().join(format!("damaged-{n}")).join("b");
        copy_dir(&backup, &copy);
        let path = copy.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let report = verify(
            &BackupTarget::parse(copy.to_str().unwrap()).unwrap(),
            &VerifyOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(report.outcome, Verification::Damaged, "{file}");
        assert_eq!(report.problems[0].file, *file, "{:?}", report.problems);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_backup_is_too_old_and_the_report_is_recorded_in_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let (backup, _) = full_backup(dir.path()).await;
    let root = BackupTarget::parse(dir.path().join("backups").to_str().unwrap()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("backup.json")).unwrap()).unwrap();
    let taken = manifest["consistent_point"]["unix_time"].as_u64().unwrap();
    let later = UNIX_EPOCH + Duration::from_secs(taken + 7_200);
    let options = VerifyOptions {
        max_age: Some(Duration::from_secs(3_600)),
        now: Some(later),
    };
    let report = verify_and_record(&root, &options).await.unwrap();
    assert_eq!(report.outcome, Verification::TooOld);
    assert_eq!(report.rpo_seconds, 7_200);
    let recorded: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("backups/last-verification.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(recorded["outcome"], "too_old");
    assert_eq!(recorded["backup_id"], manifest["id"]);

    let fresh = VerifyOptions {
        now: Some(UNIX_EPOCH + Duration::from_secs(taken + 60)),
        ..options
    };
    assert_eq!(
        verify(&root, &fresh).await.unwrap().outcome,
        Verification::Ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_names_the_newest_complete_backup_and_reads_one_manifest_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut history = History::default();
    let destination = FaultStore::new(Arc::new(object_store::memory::InMemory::new()));
    let root = BackupTarget::with_object_store(
        "memory",
        Arc::clone(&destination) as Arc<dyn ObjectStore>,
        "backups",
    );
    let mut ids = Vec::new();
    for round in 0..4 {
        write_some(&store, &mut history, &format!("r{round}"), 5).await;
        ids.push(store.backup(&root).await.unwrap().id);
    }
    // A newer backup that never finished: no `backup.json`.
    destination
        .put(
            &object_store::path::Path::from("backups/99999999T999999Z-unfinished/catalog.json"),
            Bytes::from_static(b"{}").into(),
        )
        .await
        .unwrap();
    destination.backup_manifest_heads.store(0, Ordering::SeqCst);
    let status = backup_status(&root).await.unwrap();
    assert_eq!(
        status.newest_backup.as_ref().map(|(id, _)| id),
        ids.last(),
        "{status:?}"
    );
    // The unfinished one and the newest complete one; not the three older backups.
    assert_eq!(destination.backup_manifest_heads.load(Ordering::SeqCst), 2);
    store.close(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_non_empty_directory_and_a_point_outside_the_window() {
    let dir = tempfile::tempdir().unwrap();
    full_backup(dir.path()).await;
    let root = BackupTarget::parse(dir.path().join("backups").to_str().unwrap()).unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("something"), b"x").unwrap();
    let refused = restore(&root, &target, &RestoreOptions::default()).await;
    assert!(
        matches!(refused, Err(RestoreError::TargetNotEmpty(_))),
        "{refused:?}"
    );

    let mut options = RestoreOptions {
        at: Some(RestorePoint::Time(SystemTime::UNIX_EPOCH)),
        ..RestoreOptions::default()
    };
    let refused = restore(&root, &dir.path().join("new"), &options).await;
    match refused {
        Err(RestoreError::OutsideWindow { window, .. }) => {
            assert!(window.contains("lsn"), "{window}")
        }
        other => panic!("not refused: {other:?}"),
    }
    options.at = Some(RestorePoint::Lsn(u64::MAX));
    let refused = restore(&root, &dir.path().join("new"), &options).await;
    assert!(
        matches!(refused, Err(RestoreError::OutsideWindow { .. })),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_at_an_lsn_inside_the_window_holds_the_writes_up_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut history = History::default();
    write_some(&store, &mut history, "a", 20).await;
    store.flush().await.unwrap();
    // Only in the WAL from here on: the window of the backup.
    write_some(&store, &mut history, "b", 20).await;
    let root = dir.path().join("backups");
    let target = BackupTarget::parse(root.to_str().unwrap()).unwrap();
    let manifest = store.backup(&target).await.unwrap();
    store.close(Duration::from_secs(10)).await.unwrap();
    let point = manifest.consistent_point;
    assert!(point.window_start_lsn < point.lsn, "{point:?}");
    let inside = (point.window_start_lsn + point.lsn) / 2;
    let at = restored(&target, dir.path(), "at", Some(RestorePoint::Lsn(inside))).await;
    assert_eq!(at, history.at(inside));
    assert_ne!(history.at(inside), history.at(point.lsn));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_inside_the_live_data_or_prefix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for inside in [
        dir.path().join("data/backups").display().to_string(),
        format!("file://{}", dir.path().join("objects/backups").display()),
    ] {
        let refused = store.backup(&BackupTarget::parse(&inside).unwrap()).await;
        assert!(
            matches!(refused, Err(BackupError::InsideLive { .. })),
            "{inside}: {refused:?}"
        );
    }
    store.close(Duration::from_secs(10)).await.unwrap();

    let server = S3Server::start().await;
    let client = server.client();
    let s3_dir = tempfile::tempdir().unwrap();
    let store = Store::builder(config(s3_dir.path()))
        .object_store(Arc::clone(&client), "live")
        .open()
        .await
        .unwrap();
    let refused = store
        .backup(&BackupTarget::with_object_store(
            "s3://test/live/backups",
            Arc::clone(&client),
            "live/backups",
        ))
        .await;
    assert!(
        matches!(refused, Err(BackupError::InsideLive { .. })),
        "{refused:?}"
    );
    store.close(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_to_s3_verifies_and_restores() {
    let server = S3Server::start().await;
    let client = server.client();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder(config(dir.path()))
        .object_store(Arc::clone(&client), "live")
        .open()
        .await
        .unwrap();
    for (name, policy) in COLLECTIONS {
        store.create_collection(name, policy).await.unwrap();
    }
    let mut history = History::default();
    write_some(&store, &mut history, "a", 20).await;
    let target = BackupTarget::with_object_store("s3://test/backups", client, "backups");
    let manifest = store.backup(&target).await.unwrap();
    store.close(Duration::from_secs(10)).await.unwrap();
    let report = verify(&target, &VerifyOptions::default()).await.unwrap();
    assert_eq!(report.outcome, Verification::Ok, "{:?}", report.problems);
    assert_eq!(report.backup_id, manifest.id);
    let expected = history.at(manifest.consistent_point.lsn);
    assert_eq!(
        restored(&target, dir.path(), "restored", None).await,
        expected
    );
}
