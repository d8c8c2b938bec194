use super::*;
use crate::collection::{Durability, Residency};
use crate::error::WriteError;

fn config(dir: &Path) -> StoreConfig {
    let mut config = StoreConfig {
        data_dir: dir.join("data"),
        ..StoreConfig::default()
    };
    config.compaction.enabled = false;
    config
}

fn bytes(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

/// A write whose fdatasync failed is refused, never served, and never replayed after a
/// restart although its frame reached the file (as the page cache may carry it to disk).
#[tokio::test]
async fn a_write_whose_fsync_failed_is_never_served_nor_replayed() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (store, _) = Store::open(config(dir.path())).await.expect("opens");
    store
        .create_collection("c", Policy::Memory)
        .await
        .expect("created");
    store
        .put("c", "k", bytes("v1"))
        .await
        .expect("acknowledged");
    store.shared.wal.fail_syncs();
    let failed = store.put("c", "k", bytes("v2")).await;
    assert!(matches!(failed, Err(WriteError::Wal(_))), "{failed:?}");
    let again = store.put("c", "other", bytes("v3")).await;
    assert!(matches!(again, Err(WriteError::Wal(_))), "{again:?}");
    assert!(store.wal_failure().is_some());
    assert_eq!(store.get("c", "k").await.expect("reads"), Some(bytes("v1")));
    assert_eq!(store.get("c", "other").await.expect("reads"), None);
    let page = store.list("c", &ListQuery::default()).await.expect("lists");
    assert_eq!(
        page.records,
        vec![Record {
            id: "k".to_owned(),
            value: bytes("v1")
        }]
    );
    assert!(store.flush().await.is_ok());
    drop(store);

    let (store, report) = Store::open(config(dir.path())).await.expect("reopens");
    assert_eq!(report.wal.poisoned_records, 1, "{report:?}");
    assert_eq!(store.get("c", "k").await.expect("reads"), Some(bytes("v1")));
    assert_eq!(store.get("c", "other").await.expect("reads"), None);
    store
        .put("c", "k", bytes("v4"))
        .await
        .expect("writes again");
    drop(store);
    // The poisoned frame's file was trimmed (its one good record is in a segment now).
    let (store, _) = Store::open(config(dir.path())).await.expect("reopens");
    assert_eq!(store.get("c", "k").await.expect("reads"), Some(bytes("v4")));
    assert_eq!(store.get("c", "other").await.expect("reads"), None);
}

/// Background compaction merges only LSN-adjacent segments: two small segments of one size
/// tier with a large one between them stay apart, so a point read still finds the newest
/// value and agrees with the listing (issue 12, point 1).
#[tokio::test]
async fn compaction_never_merges_segments_with_a_newer_one_between_them() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut cfg = config(dir.path());
    cfg.memtable_bytes = 65_536;
    cfg.compaction.min_segments = 2;
    let reopen = |cfg: StoreConfig| async move {
        let (store, _) = Store::open(cfg).await.expect("opens");
        store
    };
    let store = reopen(cfg.clone()).await;
    store
        .create_collection("c", Policy::Memory)
        .await
        .expect("created");
    store.put("c", "k", bytes("v1")).await.expect("put");
    store.close(Duration::from_secs(5)).await.expect("closes");
    let store = reopen(cfg.clone()).await;
    store.put("c", "k", bytes("v2")).await.expect("put");
    store.delete("c", "gone").await.expect("delete");
    for i in 0..200 {
        let value = Bytes::from(vec![b'x'; 1024]);
        store
            .put("c", &format!("big-{i:03}"), value)
            .await
            .expect("put");
    }
    store.close(Duration::from_secs(5)).await.expect("closes");
    let store = reopen(cfg.clone()).await;
    store.put("c", "x", bytes("x")).await.expect("put");
    store.close(Duration::from_secs(5)).await.expect("closes");
    let store = reopen(cfg).await;
    let collection = store.shared.collection("c").expect("exists");
    let sizes = |c: &Collection| {
        c.data
            .read()
            .segments
            .iter()
            .map(|s| (s.meta.size, s.meta.min_lsn, s.meta.max_lsn))
            .collect::<Vec<_>>()
    };
    let mut merged = 0;
    for _ in 0..4 {
        merged += store
            .shared
            .compact(&collection, false)
            .await
            .expect("compacts");
    }
    assert!(
        merged >= 2,
        "the adjacent segments of one tier were merged: {:?}",
        sizes(&collection)
    );
    assert_eq!(store.get("c", "k").await.expect("reads"), Some(bytes("v2")));
    let page = store
        .list(
            "c",
            &ListQuery {
                prefix: Some("k".to_owned()),
                ..ListQuery::default()
            },
        )
        .await
        .expect("lists");
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].value, bytes("v2"));
    let data = collection.data.read();
    let mut last_max = 0;
    for segment in &data.segments {
        assert!(
            segment.meta.min_lsn > last_max,
            "segment LSN ranges overlap: {:?}",
            data.segments
                .iter()
                .map(|s| (s.meta.min_lsn, s.meta.max_lsn))
                .collect::<Vec<_>>()
        );
        last_max = segment.meta.max_lsn;
    }
}

/// `s3_only` segments waiting for upload are read from their files through the bounded
/// block cache, never held in memory whole; reads stay right across the commit that deletes
/// the files (issue 12, point 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_s3_only_segments_are_served_from_their_files() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut cfg = config(dir.path());
    cfg.object_store_url = Some("memory://".to_owned());
    cfg.memtable_bytes = 4096;
    cfg.block_bytes = 512;
    cfg.cache_bytes = 2048;
    let (store, _) = Store::open(cfg).await.expect("opens");
    store
        .create_collection("cold", Policy::S3Only)
        .await
        .expect("created");
    // Uploads wait while the breaker is forced open.
    store.breaker().force_open();
    let value = |i: usize| Bytes::from(format!("value-{i:04}-{}", "y".repeat(40)));
    for i in 0..300 {
        store
            .put("cold", &format!("k{i:04}"), value(i))
            .await
            .expect("put");
    }
    store.flush().await.expect("flushed");
    let collection = store.shared.collection("cold").expect("exists");
    let segments = collection.data.read().segments.clone();
    assert!(segments.len() > 1, "several segments");
    for segment in &segments {
        let state = segment.state.lock();
        assert_eq!(state.durability, Durability::Pending);
        assert!(
            matches!(state.residency, Residency::LocalFile(_)),
            "{:?}",
            state.residency
        );
    }
    let check = |store: Store| async move {
        for i in (0..300).step_by(7) {
            assert_eq!(
                store.get("cold", &format!("k{i:04}")).await.expect("reads"),
                Some(value(i))
            );
        }
        let page = store
            .list(
                "cold",
                &ListQuery {
                    limit: Some(1000),
                    ..ListQuery::default()
                },
            )
            .await
            .expect("lists");
        assert_eq!(page.records.len(), 300);
        assert!(!page.degraded);
        assert!(store.shared.cache.lock().bytes() <= 2048);
    };
    check(store.clone()).await;
    store.breaker().reset();
    store
        .wait_uploaded(Duration::from_secs(10))
        .await
        .expect("uploaded");
    for segment in &collection.data.read().segments {
        let state = segment.state.lock();
        assert_eq!(state.durability, Durability::Committed);
        assert!(!state.has_local_file);
    }
    check(store).await;
}

/// Closing releases the WAL's directory (a store opens it again while the closed one lives) and
/// is no WAL failure: readiness and `storage_wal_failed` stay clear.
#[tokio::test]
async fn a_closed_store_frees_its_wal_and_reports_no_wal_failure() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (store, _) = Store::open(config(dir.path())).await.expect("opens");
    store
        .create_collection("c", Policy::Memory)
        .await
        .expect("created");
    store.put("c", "k", bytes("v")).await.expect("acknowledged");
    store
        .close(std::time::Duration::from_secs(1))
        .await
        .expect("closes");
    assert_eq!(store.wal_failure(), None);
    let (again, _) = Store::open(config(dir.path())).await.expect("reopens");
    assert_eq!(again.get("c", "k").await.expect("reads"), Some(bytes("v")));
    drop(store);
}
