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
    let store = Store::open(config(dir.path())).await.expect("opens");
    store
        .create_collection("c", TieringPolicy::Memory)
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

    let store = Store::open(config(dir.path())).await.expect("reopens");
    let report = store.recovery().clone();
    assert_eq!(report.wal.poisoned_records, 1, "{report:?}");
    assert_eq!(store.get("c", "k").await.expect("reads"), Some(bytes("v1")));
    assert_eq!(store.get("c", "other").await.expect("reads"), None);
    store
        .put("c", "k", bytes("v4"))
        .await
        .expect("writes again");
    drop(store);
    // The poisoned frame's file was trimmed (its one good record is in a segment now).
    let store = Store::open(config(dir.path())).await.expect("reopens");
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
    let reopen = |cfg: StoreConfig| async move { Store::open(cfg).await.expect("opens") };
    let store = reopen(cfg.clone()).await;
    store
        .create_collection("c", TieringPolicy::Memory)
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
    let store = Store::open(cfg).await.expect("opens");
    store
        .create_collection("cold", TieringPolicy::S3Only)
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
    let store = Store::open(config(dir.path())).await.expect("opens");
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .expect("created");
    store.put("c", "k", bytes("v")).await.expect("acknowledged");
    store
        .close(std::time::Duration::from_secs(1))
        .await
        .expect("closes");
    assert_eq!(store.wal_failure(), None);
    let again = Store::open(config(dir.path())).await.expect("reopens");
    assert_eq!(again.get("c", "k").await.expect("reads"), Some(bytes("v")));
    drop(store);
}

/// The object-store prefix `tests/it/fixtures/compressed-prefix` (segments written with the
/// default features: collections `gzip_memory_s3`, `gzip_s3_only`, `zstd_memory_s3`,
/// `zstd_s3_only`, records `r1` to `r5`), in memory under the prefix `p`, with its files.
async fn compressed_prefix() -> (Arc<dyn ObjectStore>, Vec<(String, Vec<u8>)>) {
    use object_store::ObjectStoreExt as _;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/compressed-prefix");
    let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let mut files = vec![(
        "manifest/00000000000000000006.json".to_owned(),
        std::fs::read(root.join("manifest/00000000000000000006.json")).expect("the manifest"),
    )];
    for collection in std::fs::read_dir(root.join("segments")).expect("segments") {
        let collection = collection.expect("an entry").path();
        for segment in std::fs::read_dir(&collection).expect("a collection") {
            let segment = segment.expect("an entry").path();
            let relative = segment
                .strip_prefix(&root)
                .expect("under the root")
                .to_string_lossy()
                .into_owned();
            files.push((relative, std::fs::read(&segment).expect("a segment")));
        }
    }
    for (relative, bytes) in &files {
        inner
            .put(
                &object_store::path::Path::from(format!("p/{relative}")),
                object_store::PutPayload::from(bytes.clone()),
            )
            .await
            .expect("put");
    }
    (inner, files)
}

/// The value of record `r{i}` in the collections of `codec` in the fixture.
#[cfg(all(feature = "gzip", feature = "zstd"))]
fn fixture_value(codec: &str, i: usize) -> Bytes {
    Bytes::from(format!("{codec} value {i} ").repeat(8))
}

#[cfg(all(feature = "gzip", feature = "zstd"))]
#[tokio::test]
async fn the_compressed_prefix_fixture_reads_back_with_the_default_features() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (inner, _) = compressed_prefix().await;
    let store = Store::builder(config(dir.path()))
        .object_store(inner, "p")
        .open()
        .await
        .expect("opens");
    for collection in [
        "gzip_memory_s3",
        "gzip_s3_only",
        "zstd_memory_s3",
        "zstd_s3_only",
    ] {
        let codec = &collection[..4];
        for i in 1..=5 {
            assert_eq!(
                store
                    .get(collection, &format!("r{i}"))
                    .await
                    .expect("reads"),
                Some(fixture_value(codec, i)),
                "{collection}"
            );
        }
    }
    store.close(Duration::from_secs(5)).await.expect("closed");
}

/// Reads of `codec`'s collections in the fixture fail with [`ReadError::MissingFeature`] naming
/// the codec's feature (never as corrupt data), and every object stays as it was.
#[cfg(not(all(feature = "gzip", feature = "zstd")))]
async fn check_segments_of_a_left_out_codec(codec: &'static str) {
    use object_store::ObjectStoreExt as _;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (inner, files) = compressed_prefix().await;
    let store = Store::builder(config(dir.path()))
        .object_store(inner.clone(), "p")
        .open()
        .await
        .expect("opens: the segments are read on first use");
    for policy in ["memory_s3", "s3_only"] {
        let collection = format!("{codec}_{policy}");
        for _attempt in 0..2 {
            match store.get(&collection, "r1").await {
                Err(crate::ReadError::MissingFeature {
                    collection: named,
                    source,
                }) => {
                    assert_eq!(
                        (named.as_str(), source.feature),
                        (collection.as_str(), codec)
                    );
                    let message = source.to_string();
                    assert!(
                        message.contains(&format!("{codec}-compressed"))
                            && message.contains(&format!("feature `{codec}`")),
                        "{message}"
                    );
                }
                other => panic!("{collection}: {other:?}"),
            }
        }
        let listed = store.list(&collection, &ListQuery::default()).await;
        assert!(
            matches!(listed, Err(crate::ReadError::MissingFeature { .. })),
            "{collection}: {listed:?}"
        );
    }
    store.collect_orphans().await.expect("collects");
    store.close(Duration::from_secs(5)).await.expect("closed");
    for (relative, bytes) in files.iter().filter(|(path, _)| path.contains("segments/")) {
        let kept = inner
            .get(&object_store::path::Path::from(format!("p/{relative}")))
            .await
            .expect("the object is still there")
            .bytes()
            .await
            .expect("its bytes");
        assert_eq!(&kept[..], &bytes[..], "{relative}");
    }
}

#[cfg(not(feature = "gzip"))]
#[tokio::test]
async fn gzip_segments_without_the_gzip_feature_fail_reads_with_a_typed_error() {
    check_segments_of_a_left_out_codec("gzip").await;
}

#[cfg(not(feature = "zstd"))]
#[tokio::test]
async fn zstd_segments_without_the_zstd_feature_fail_reads_with_a_typed_error() {
    check_segments_of_a_left_out_codec("zstd").await;
}

/// A local segment file compressed with a codec this build leaves out stops the open with
/// [`OpenError::MissingFeature`]: the file is not deleted (the committed copy case), not set aside
/// nor rebuilt from the WAL (the local-only case), and opens again once the feature is there.
#[cfg(not(feature = "gzip"))]
#[tokio::test]
async fn a_local_gzip_segment_without_the_gzip_feature_stops_the_open_and_is_kept() {
    let (_, files) = compressed_prefix().await;
    let (_, gzip_segment) = files
        .iter()
        .find(|(path, _)| path.contains("gzip_memory_s3"))
        .expect("a gzip segment");
    for policy in [TieringPolicy::MemoryS3, TieringPolicy::Memory] {
        let dir = tempfile::tempdir().expect("a temp dir");
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let open = || {
            Store::builder(config(dir.path()))
                .object_store(inner.clone(), "p")
                .open()
        };
        let (store, _) = open().await.expect("opens");
        store.create_collection("c", policy).await.expect("created");
        store.put("c", "k", bytes("v")).await.expect("put");
        store.flush().await.expect("flushed");
        store
            .wait_uploaded(Duration::from_secs(5))
            .await
            .expect("uploaded");
        store.close(Duration::from_secs(5)).await.expect("closed");
        let segments = dir.path().join("data/segments/c");
        let mut local = walk(&segments);
        if policy == TieringPolicy::MemoryS3 {
            // The local copy of a committed segment that a crash left before its removal.
            assert!(local.is_empty(), "{local:?}");
            use futures::TryStreamExt as _;
            let objects: Vec<_> = inner
                .list(Some(&object_store::path::Path::from("p/segments/c")))
                .try_collect()
                .await
                .expect("lists");
            assert_eq!(objects.len(), 1, "{objects:?}");
            let name = objects[0].location.filename().expect("a name");
            local.push(segments.join(format!("1-{name}")));
        }
        assert_eq!(local.len(), 1, "{policy:?}: {local:?}");
        std::fs::write(&local[0], gzip_segment).expect("replaced");
        match open().await {
            Err(OpenError::MissingFeature(missing)) => {
                assert_eq!(missing.feature, "gzip", "{policy:?}");
                assert!(
                    missing
                        .to_string()
                        .contains(&local[0].display().to_string()),
                    "{missing}"
                );
            }
            other => panic!("{policy:?}: {:?}", other.map(|_| ())),
        }
        assert_eq!(
            std::fs::read(&local[0]).expect("the file is still there"),
            *gzip_segment,
            "{policy:?}"
        );
        assert!(
            walk(&dir.path().join("data/corrupt")).is_empty(),
            "{policy:?}: nothing set aside"
        );
    }
}

/// Every file under `dir` (none when it does not exist).
#[cfg(not(feature = "gzip"))]
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A configured codec or an `s3://` URL this build cannot serve is refused at open, before the
/// data directory is created.
#[cfg(not(all(feature = "aws", feature = "gzip", feature = "zstd")))]
#[tokio::test]
async fn a_configuration_that_needs_a_left_out_feature_is_refused_at_open() {
    use crate::config::Compression;
    let dir = tempfile::tempdir().expect("a temp dir");
    let cases: Vec<(&str, StoreConfig)> = vec![
        #[cfg(not(feature = "gzip"))]
        (
            "gzip",
            StoreConfig {
                compression: Compression::Gzip,
                ..config(dir.path())
            },
        ),
        #[cfg(not(feature = "zstd"))]
        (
            "zstd",
            StoreConfig {
                compression: Compression::Zstd,
                ..config(dir.path())
            },
        ),
        #[cfg(not(feature = "aws"))]
        (
            "aws",
            StoreConfig {
                object_store_url: Some("s3://bucket/prefix".to_owned()),
                ..config(dir.path())
            },
        ),
    ];
    for (feature, config) in cases {
        match Store::open(config.clone()).await {
            Err(OpenError::MissingFeature(missing)) => {
                assert_eq!(missing.feature, feature, "{config:?}");
                assert!(
                    missing
                        .to_string()
                        .contains(&format!("cargo feature `{feature}`")),
                    "{missing}"
                );
            }
            other => panic!("{feature}: {:?}", other.map(|_| ())),
        }
        assert!(!config.data_dir.exists(), "{feature}: nothing created");
    }
    #[cfg(not(feature = "aws"))]
    {
        assert!(matches!(
            crate::open_object_store("s3://bucket/prefix"),
            Err(OpenError::MissingFeature(crate::MissingFeature {
                feature: "aws",
                ..
            }))
        ));
        let master_key = crate::keyring::MasterKey::generate();
        match crate::keyring::Keyring::builder_from_url("s3://bucket/keys", master_key) {
            Err(crate::keyring::KeyringOpenError::Url { reason, .. }) => {
                assert!(reason.contains("cargo feature `aws`"), "{reason}");
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
