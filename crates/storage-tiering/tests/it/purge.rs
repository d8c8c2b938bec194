//! Physical purge of dropped collections (`Store::purge_dropped`, issue 18 point 6): no byte of
//! them is left under the data directory or in the object store, records only in the WAL
//! included, while live collections keep every record, also after a reopen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use mainstay_storage_tiering::{Store, TieringPolicy};

use crate::common::{config, list_all};

const MARKER: &str = "zqMARKERpurge7x";

/// Every file under `dir` holding `needle`.
fn scan(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|window| window == needle))
            {
                hits.push(path);
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_leaves_no_byte_of_dropped_collections_in_any_tier() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let mut cfg = config(dir.path());
    cfg.object_store_url = Some(format!("file://{}", objects.display()));
    let store = Store::open(cfg.clone()).await.unwrap();
    for (name, policy) in [
        ("gone-s3", TieringPolicy::MemoryS3),
        ("gone-mem", TieringPolicy::Memory),
        ("kept", TieringPolicy::MemoryS3),
    ] {
        store.create_collection(name, policy).await.unwrap();
    }
    let value = |i: usize| Bytes::from(format!("{MARKER} {i:03} {}", "v".repeat(100)));
    for name in ["gone-s3", "gone-mem"] {
        for i in 0..20 {
            store
                .put(name, &format!("{MARKER}-{i:03}"), value(i))
                .await
                .unwrap();
        }
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    // Only in the WAL and memory.
    for name in ["gone-s3", "gone-mem"] {
        for i in 100..103 {
            store
                .put(name, &format!("{MARKER}-{i:03}"), value(i))
                .await
                .unwrap();
        }
    }
    for i in 0..20 {
        store
            .put("kept", &format!("keep-{i:03}"), Bytes::from_static(b"kept"))
            .await
            .unwrap();
    }
    let before = scan(dir.path(), MARKER.as_bytes());
    assert!(
        before.iter().any(|path| path.starts_with(&objects)),
        "{before:?}"
    );
    assert!(
        before
            .iter()
            .any(|path| path.starts_with(dir.path().join("data/wal"))),
        "{before:?}"
    );

    assert!(store.drop_collection("gone-s3").await.unwrap());
    assert!(store.drop_collection("gone-mem").await.unwrap());
    let report = store
        .purge_dropped("gone-", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    let hits = scan(dir.path(), MARKER.as_bytes());
    assert!(hits.is_empty(), "the marker is left in {hits:?}");
    assert!(report.trimmed_wal_files >= 1, "{report:?}");
    assert_eq!(list_all(&store, "kept").await.records.len(), 20);
    // Writes go on after a purge.
    store
        .put("kept", "after", Bytes::from_static(b"after"))
        .await
        .unwrap();
    store.close(Duration::from_secs(10)).await.unwrap();
    drop(store);

    let store = Store::open(cfg).await.unwrap();
    let names: Vec<String> = store.collections().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(list_all(&store, "kept").await.records.len(), 21);
    assert!(scan(dir.path(), MARKER.as_bytes()).is_empty());
}
