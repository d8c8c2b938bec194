//! A local segment that fails verification never costs WAL data: it is rebuilt from the WAL at
//! open and before upload, and refused only when the WAL no longer holds its records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mainstay_storage_tiering::{OpenError, Store, StoreConfig, TieringPolicy};
use object_store::memory::InMemory;

use crate::common::{FaultStore, Mode, config, fast_uploads, list_all, open_on, value};

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Flips a byte in the middle of the file's first block.
fn damage(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(file, bytes).unwrap();
}

async fn records(cfg: &StoreConfig, count: usize) {
    let store = Store::open(cfg.clone()).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    for i in 0..count {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_local_segment_is_rebuilt_from_the_wal_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    records(&cfg, 50).await;
    let files = segment_files(&cfg.data_dir.join("segments/c"));
    assert_eq!(files.len(), 1);
    damage(&files[0]);
    let store = Store::open(cfg.clone()).await.expect("opens");
    let report = store.recovery().clone();
    assert_eq!(report.rebuilt_segments, 1);
    let page = list_all(&store, "c").await;
    assert_eq!(page.records.len(), 50);
    for (i, record) in page.records.iter().enumerate() {
        assert_eq!(record.value, value(i));
    }
    assert_eq!(
        segment_files(&cfg.data_dir.join("corrupt")).len(),
        1,
        "the damaged file is kept"
    );
    store.close(Duration::from_secs(1)).await.unwrap();
    let report = Store::open(cfg)
        .await
        .expect("opens again")
        .recovery()
        .clone();
    assert_eq!(report.rebuilt_segments, 0, "the rebuilt file verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_local_segment_whose_wal_is_gone_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Small WAL files: the ones the segment covers are closed and deleted after its flush.
    cfg.wal_segment_bytes = 4096;
    records(&cfg, 400).await;
    let files = segment_files(&cfg.data_dir.join("segments/c"));
    let file = files.first().unwrap().clone();
    damage(&file);
    match Store::open(cfg).await {
        Err(OpenError::CorruptSegment { path, .. }) => assert_eq!(path, file),
        other => panic!("expected a corrupt segment error, got {other:?}"),
    }
}

/// A pending segment whose file is damaged before its upload is rebuilt from the WAL and
/// uploaded; it is never dead-lettered as a damaged file (which would let its WAL go).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_segment_damaged_before_upload_is_rebuilt_and_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(InMemory::new());
    let objects = FaultStore::new(inner.clone());
    let cfg = fast_uploads(dir.path(), 1000, Duration::from_secs(1));
    let store = open_on(cfg.clone(), objects.clone(), "p").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    objects.set(Mode::Unavailable);
    for i in 0..50 {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    let files = segment_files(&cfg.data_dir.join("segments/c"));
    assert_eq!(files.len(), 1);
    damage(&files[0]);
    objects.set(Mode::Healthy);
    store
        .wait_uploaded(Duration::from_secs(10))
        .await
        .expect("uploaded");
    assert!(store.dlq().is_empty(), "nothing was dead-lettered");
    store.close(Duration::from_secs(1)).await.unwrap();
    // A fresh data directory reads what the object store holds.
    let fresh = tempfile::tempdir().unwrap();
    let store = open_on(config(fresh.path()), inner, "p").await;
    let page = list_all(&store, "c").await;
    assert_eq!(page.records.len(), 50);
    for (i, record) in page.records.iter().enumerate() {
        assert_eq!(record.value, value(i));
    }
}

/// A pending segment whose footer is damaged too (so its LSN range is lost) is rebuilt from the
/// WAL records no other segment covers: the WAL keeps every record of a segment waiting for
/// upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_segment_with_a_damaged_footer_is_rebuilt_from_the_uncovered_wal_records() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(InMemory::new());
    let objects = FaultStore::new(inner.clone());
    let cfg = fast_uploads(dir.path(), 1000, Duration::from_secs(1));
    let store = open_on(cfg.clone(), objects.clone(), "p").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    // A committed segment first, then one that waits for upload, then records in the memtable.
    for i in 0..20 {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    objects.set(Mode::Unavailable);
    for i in 20..40 {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    for i in 40..45 {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    let _ = store.close(Duration::from_millis(50)).await;
    let files = segment_files(&cfg.data_dir.join("segments/c"));
    // The two pending segments (closing froze the memtable); the older is damaged, so its
    // records lie between the committed segment and the newer pending one.
    assert_eq!(files.len(), 2, "only the pending segments are local");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();

    objects.set(Mode::Healthy);
    let store = Store::builder(cfg.clone())
        .object_store(objects.clone(), "p")
        .open()
        .await
        .expect("opens");
    let report = store.recovery().clone();
    assert_eq!(report.rebuilt_segments, 1, "{report:?}");
    let page = list_all(&store, "c").await;
    assert_eq!(page.records.len(), 45);
    for (i, record) in page.records.iter().enumerate() {
        assert_eq!(record.value, value(i));
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let store = open_on(config(fresh.path()), inner, "p").await;
    assert_eq!(list_all(&store, "c").await.records.len(), 45);
}
