//! Object-store tiers on in-process stores: `s3_only` reads through the block cache, corrupt
//! objects detected, degraded listings, fencing, re-queued segments, compaction, and gzip and
//! zstd segments side by side.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mainstay_storage_tiering::{
    Compression, ListQuery, MaintenanceError, OpenError, ReadError, StorageMetrics, Store,
    TieringPolicy,
};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use prometheus_client::registry::Registry;

use crate::common::{FaultStore, Mode, config, count_objects, list_all, open_on, value};

fn counter(registry: &Registry, name: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn segment_objects(store: &dyn ObjectStore, prefix: &str) -> Vec<Path> {
    use futures::TryStreamExt as _;
    store
        .list(Some(&Path::from(prefix)))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap()
}

/// The codec byte of a segment file (0 none, 1 gzip, 2 zstd): the first byte of the block index,
/// whose offset opens the 68-byte footer.
fn segment_codec(bytes: &[u8]) -> u8 {
    let footer = &bytes[bytes.len() - 68..];
    let index_offset = u64::from_le_bytes(footer[..8].try_into().unwrap());
    bytes[usize::try_from(index_offset).unwrap()]
}

/// The codec bytes of the segment objects under `prefix`, sorted.
async fn object_codecs(store: &dyn ObjectStore, prefix: &str) -> Vec<u8> {
    let mut codecs = Vec::new();
    for path in segment_objects(store, prefix).await {
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        codecs.push(segment_codec(&bytes));
    }
    codecs.sort_unstable();
    codecs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_only_reads_blocks_through_the_cache_after_upload() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let store = Store::builder(config(dir.path()))
        .metrics(metrics)
        .object_store(inner.clone(), "t")
        .open()
        .await
        .unwrap();
    store
        .create_collection("cold", TieringPolicy::S3Only)
        .await
        .unwrap();
    for i in 0..300 {
        store
            .put("cold", &format!("k{i:04}"), value(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    assert!(count_objects(&*inner, "t/segments/cold").await >= 1);
    // Local segment files are gone: the object store is the source of truth.
    let local = std::fs::read_dir(dir.path().join("data/segments/cold"))
        .unwrap()
        .count();
    assert_eq!(local, 0);
    assert_eq!(store.get("cold", "k0123").await.unwrap(), Some(value(123)));
    let misses = counter(&registry, "storage_cache_misses_total");
    assert!(misses >= 1);
    assert_eq!(store.get("cold", "k0123").await.unwrap(), Some(value(123)));
    assert_eq!(
        counter(&registry, "storage_cache_misses_total"),
        misses,
        "the second read hits the cache"
    );
    assert!(counter(&registry, "storage_cache_hits_total") >= 1);
    let page = store
        .list(
            "cold",
            &ListQuery {
                prefix: Some("k02".into()),
                limit: Some(1000),
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.records.len(), 100);
    assert_eq!(store.get("cold", "missing").await.unwrap(), None);
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_object_bytes_are_detected_never_served() {
    for (codec, codec_byte) in [
        (Compression::None, 0),
        (Compression::Gzip, 1),
        (Compression::Zstd, 2),
    ] {
        check_corrupt_blocks_are_detected(codec, codec_byte).await;
    }
}

/// Writes an `s3_only` collection under `codec`, flips one byte in the block area of every
/// segment object, and checks that reads either return the written value or `Corrupt`.
async fn check_corrupt_blocks_are_detected(codec: Compression, codec_byte: u8) {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut cfg = config(dir.path());
    cfg.compression = codec;
    let store = open_on(cfg.clone(), inner.clone(), "t").await;
    store
        .create_collection("cold", TieringPolicy::S3Only)
        .await
        .unwrap();
    for i in 0..100 {
        store
            .put("cold", &format!("k{i:03}"), value(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();
    // Flip one byte in the middle of the block area of every segment object.
    for path in segment_objects(&*inner, "t/segments/cold").await {
        let mut bytes = inner
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        assert_eq!(segment_codec(&bytes), codec_byte, "{codec:?}");
        let blocks_end = u64::from_le_bytes(bytes[bytes.len() - 68..][..8].try_into().unwrap());
        bytes[usize::try_from(blocks_end / 2).unwrap()] ^= 0x01;
        inner.put(&path, PutPayload::from(bytes)).await.unwrap();
    }
    let store = open_on(cfg, inner.clone(), "t").await;
    let mut corrupt = 0;
    for i in 0..100 {
        match store.get("cold", &format!("k{i:03}")).await {
            Ok(found) => assert_eq!(
                found,
                Some(value(i)),
                "{codec:?}: served bytes must be the written ones"
            ),
            Err(ReadError::Corrupt { .. }) => corrupt += 1,
            Err(other) => panic!("{codec:?}: {other}"),
        }
    }
    assert!(corrupt > 0, "{codec:?}: the damaged block was detected");
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_degrade_and_single_reads_fail_cleanly_when_the_store_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let store = open_on(config(dir.path()), fault.clone(), "t").await;
    store
        .create_collection("cold", TieringPolicy::S3Only)
        .await
        .unwrap();
    for i in 0..50 {
        store
            .put("cold", &format!("old{i:02}"), value(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();
    let store = open_on(config(dir.path()), fault.clone(), "t").await;
    store
        .put("cold", "new", Bytes::from_static(b"fresh"))
        .await
        .unwrap();
    fault.set(Mode::Unavailable);
    let page = store.list("cold", &ListQuery::default()).await.unwrap();
    assert!(page.degraded && page.partial_results());
    assert_eq!(page.unavailable_sources, vec!["object_store".to_owned()]);
    assert_eq!(page.records.len(), 1, "memory still answers");
    assert!(
        matches!(
            store.get("cold", "old07").await,
            Err(ReadError::Unavailable(_))
        ),
        "never a false not-found"
    );
    assert_eq!(
        store.get("cold", "new").await.unwrap(),
        Some(Bytes::from_static(b"fresh"))
    );
    fault.set(Mode::Healthy);
    assert_eq!(store.get("cold", "old07").await.unwrap(), Some(value(7)));
    store.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_on_the_prefix_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let first = open_on(config(&dir.path().join("a")), inner.clone(), "shared").await;
    first
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    first.put("c", "k", Bytes::from_static(b"1")).await.unwrap();
    first.flush().await.unwrap();
    first.wait_uploaded(Duration::from_secs(10)).await.unwrap();

    let second = open_on(config(&dir.path().join("b")), inner.clone(), "shared").await;
    assert_eq!(
        second.get("c", "k").await.unwrap(),
        Some(Bytes::from_static(b"1")),
        "the second writer sees committed data"
    );
    first
        .put("c", "k2", Bytes::from_static(b"2"))
        .await
        .unwrap();
    first.flush().await.unwrap();
    match first.wait_uploaded(Duration::from_secs(10)).await {
        Err(MaintenanceError::Fenced(fenced)) => {
            assert!(fenced.to_string().contains("another writer"))
        }
        other => panic!("expected the first writer to be fenced, got {other:?}"),
    }
    assert!(first.fenced().is_some());
    // The fenced writer's data stays safe locally (its WAL keeps it).
    assert_eq!(
        first.get("c", "k2").await.unwrap(),
        Some(Bytes::from_static(b"2"))
    );
    second.close(Duration::from_secs(1)).await.unwrap();
    first.close(Duration::from_secs(1)).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_on_one_prefix_leave_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let opens = (0..4).map(|n| {
        let inner = inner.clone();
        let cfg = config(&dir.path().join(format!("w{n}")));
        async move { Store::builder(cfg).object_store(inner, "p").open().await }
    });
    let results = futures::future::join_all(opens).await;
    let fenced = results
        .iter()
        .filter(|r| matches!(r, Err(OpenError::Fenced(_))))
        .count();
    let opened = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(fenced + opened, 4);
    assert!(opened >= 1);
    for store in results.into_iter().flatten() {
        store.close(Duration::from_secs(1)).await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_written_but_not_committed_are_requeued_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let mut cfg = config(dir.path());
    cfg.upload.base_delay = Duration::from_secs(3600);
    cfg.upload.max_delay = Duration::from_secs(3600);
    let store = open_on(cfg.clone(), fault.clone(), "t").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    fault.set(Mode::Unavailable);
    for i in 0..100 {
        store.put("c", &format!("k{i:03}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    assert!(
        store.close(Duration::from_millis(200)).await.is_err(),
        "uploads could not finish"
    );
    fault.set(Mode::Healthy);
    let store = Store::builder(cfg)
        .object_store(fault.clone(), "t")
        .open()
        .await
        .unwrap();
    let report = store.recovery().clone();
    assert!(report.requeued_segments >= 1, "{report:?}");
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    for i in 0..100 {
        assert_eq!(
            store.get("c", &format!("k{i:03}")).await.unwrap(),
            Some(value(i))
        );
    }
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn compaction_commits_a_new_manifest_and_deletes_inputs_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut cfg = config(dir.path());
    cfg.compaction.grace_period = Duration::from_millis(50);
    let store = open_on(cfg.clone(), inner.clone(), "t").await;
    store
        .create_collection("c", TieringPolicy::S3Only)
        .await
        .unwrap();
    for round in 0..3 {
        for i in 0..40 {
            store
                .put(
                    "c",
                    &format!("k{i:02}"),
                    Bytes::from(format!("{round}-{i}")),
                )
                .await
                .unwrap();
        }
        store.delete("c", "k00").await.unwrap();
        store.flush().await.unwrap();
    }
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    assert_eq!(count_objects(&*inner, "t/segments/c").await, 3);
    assert_eq!(store.compact("c").await.unwrap(), 3);
    assert_eq!(
        store.get("c", "k05").await.unwrap(),
        Some(Bytes::from("2-5"))
    );
    assert_eq!(store.get("c", "k00").await.unwrap(), None);
    let mut remaining = 4;
    for _ in 0..100 {
        remaining = count_objects(&*inner, "t/segments/c").await;
        if remaining == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(remaining, 1, "inputs deleted after the grace period");
    store.close(Duration::from_secs(1)).await.unwrap();
    let fresh = open_on(config(&dir.path().join("fresh")), inner.clone(), "t").await;
    assert_eq!(
        fresh.get("c", "k39").await.unwrap(),
        Some(Bytes::from("2-39"))
    );
    assert_eq!(
        fresh
            .list("c", &ListQuery::default())
            .await
            .unwrap()
            .records
            .len(),
        39
    );
    fresh.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_ambiguous_upload_failure_is_read_back_instead_of_uploaded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let mut cfg = config(dir.path());
    cfg.upload.base_delay = Duration::from_millis(5);
    cfg.upload.max_delay = Duration::from_millis(5);
    let store = open_on(cfg, fault.clone(), "t").await;
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    fault.set(Mode::Ambiguous);
    for i in 0..20 {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    // The first attempt landed but reported a failure; the retry reads the write id back.
    for _ in 0..200 {
        if fault.failed_puts.load(std::sync::atomic::Ordering::SeqCst) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    fault.set(Mode::Healthy);
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        fault.segment_puts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no second put of the same segment"
    );
    assert_eq!(count_objects(&*fault, "t/segments/c").await, 1);
    assert!(store.dlq().is_empty());
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_open_from_urls_and_reject_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.object_store_url = Some(format!("file://{}", dir.path().join("objects").display()));
    let store = Store::open(cfg.clone()).await.unwrap();
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    store.put("c", "k", Bytes::from_static(b"v")).await.unwrap();
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();
    assert!(dir.path().join("objects/manifest").is_dir());
    assert!(dir.path().join("objects/segments/c").is_dir());

    for bad in ["ftp://x", "s3://", "file://"] {
        let mut cfg = config(&dir.path().join("bad"));
        cfg.object_store_url = Some(bad.to_owned());
        match Store::open(cfg).await {
            Err(OpenError::ObjectStoreUrl { url, .. }) => assert_eq!(url, bad),
            other => panic!("{bad}: expected an url error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_families_register_once_beside_the_breaker_and_dlq_families() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let storage = StorageMetrics::register(&mut registry);
    let breakers = mainstay_resilience::ResilienceMetrics::register(&mut registry);
    let dlq = mainstay_dlq::DlqMetrics::register(&mut registry);
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = Store::builder(config(dir.path()))
        .metrics(storage)
        .resilience_metrics(breakers)
        .dlq_metrics(dlq)
        .object_store(inner, "m")
        .open()
        .await
        .unwrap();
    store
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    store.put("c", "k", Bytes::from_static(b"v")).await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let unique: std::collections::BTreeSet<&str> = families.iter().copied().collect();
    assert_eq!(
        families.len(),
        unique.len(),
        "duplicate families: {families:?}"
    );
    for name in [
        "storage_inserts",
        "storage_upload_attempts",
        "storage_backlog_bytes",
        "storage_cache_hits",
        "storage_compactions",
        "circuit_breaker_state",
        "dlq_journal_fsyncs",
        "storage_backlog_limit_bytes",
    ] {
        assert!(unique.contains(name), "{name} missing from {unique:?}");
    }
    // The backlog bound is exported beside the backlog, so an alert can compare the two.
    let limit = config(dir.path()).upload.max_backlog_bytes;
    assert!(
        text.contains(&format!(
            "storage_backlog_limit_bytes{{store=\"storage\"}} {limit}\n"
        )),
        "{text}"
    );
    // The insert latency histogram has an edge at every latency an alert or SLO uses.
    for edge in ["0.01", "0.1", "0.15", "0.5"] {
        let bucket =
            format!("storage_insert_duration_seconds_bucket{{le=\"{edge}\",store=\"storage\"}}");
        assert!(text.contains(&bucket), "{bucket} missing from\n{text}");
    }
    assert!(
        text.contains("# UNIT storage_orphan_deleted_bytes bytes\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_segments_upload_smaller_and_read_back_through_the_cache() {
    check_compressed_round_trip(Compression::Gzip, 1).await;
    check_compressed_round_trip(Compression::Zstd, 2).await;
}

/// Writes repetitive values under `codec` to an `s3_only` collection (read back by block ranges
/// from a fresh store) and to a `memory` collection (read back from its local file on reopen),
/// checking that every segment carries `codec_byte` and that the objects shrank.
async fn check_compressed_round_trip(codec: Compression, codec_byte: u8) {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut cfg = config(dir.path());
    cfg.compression = codec;
    let store = open_on(cfg.clone(), inner.clone(), "z").await;
    store
        .create_collection("cold", TieringPolicy::S3Only)
        .await
        .unwrap();
    store
        .create_collection("warm", TieringPolicy::Memory)
        .await
        .unwrap();
    let repetitive = |i: usize| Bytes::from(format!("{i:04}").repeat(50));
    for i in 0..200 {
        store
            .put("cold", &format!("k{i:04}"), repetitive(i))
            .await
            .unwrap();
        store
            .put("warm", &format!("k{i:04}"), repetitive(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    let mut stored = 0;
    for path in segment_objects(&*inner, "z/segments/cold").await {
        stored += inner.head(&path).await.unwrap().size;
    }
    assert!(
        stored * 4 < 200 * 200,
        "{codec:?}: {stored} bytes stored for 40,000 bytes of values"
    );
    let codecs = object_codecs(&*inner, "z/segments/cold").await;
    assert!(!codecs.is_empty());
    assert!(
        codecs.iter().all(|&c| c == codec_byte),
        "{codec:?}: {codecs:?}"
    );
    store.close(Duration::from_secs(1)).await.unwrap();
    let local: Vec<_> = std::fs::read_dir(cfg.data_dir.join("segments/warm"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(!local.is_empty());
    for file in &local {
        assert_eq!(
            segment_codec(&std::fs::read(file).unwrap()),
            codec_byte,
            "{codec:?}: {}",
            file.display()
        );
    }
    // The same data directory, opened without compression: local segments are decoded by the
    // codec they name, not by the setting.
    let reopened = open_on(config(dir.path()), inner.clone(), "z").await;
    for i in (0..200).step_by(13) {
        assert_eq!(
            reopened.get("warm", &format!("k{i:04}")).await.unwrap(),
            Some(repetitive(i)),
            "{codec:?}"
        );
    }
    reopened.close(Duration::from_secs(1)).await.unwrap();
    let fresh = open_on(config(&dir.path().join("fresh")), inner.clone(), "z").await;
    for i in (0..200).step_by(17) {
        assert_eq!(
            fresh.get("cold", &format!("k{i:04}")).await.unwrap(),
            Some(repetitive(i)),
            "{codec:?}"
        );
    }
    let page = list_all(&fresh, "cold").await;
    assert_eq!(page.records.len(), 200, "{codec:?}");
    fresh.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_zstd_segments_coexist_and_compaction_rewrites_with_the_current_codec() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let mut gzip = config(dir.path());
    gzip.compression = Compression::Gzip;
    gzip.compaction.grace_period = Duration::from_millis(50);
    let mut zstd = gzip.clone();
    zstd.compression = Compression::Zstd;
    let expected = |i: usize| {
        let round = if i >= 30 { "zstd" } else { "gzip" };
        Bytes::from(format!("{round}-{i:03}-").repeat(20))
    };
    let store = open_on(gzip, inner.clone(), "mix").await;
    store
        .create_collection("c", TieringPolicy::S3Only)
        .await
        .unwrap();
    for i in 0..60 {
        let written = Bytes::from(format!("gzip-{i:03}-").repeat(20));
        store.put("c", &format!("k{i:03}"), written).await.unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();
    let codecs = object_codecs(&*inner, "mix/segments/c").await;
    assert!(
        !codecs.is_empty() && codecs.iter().all(|&c| c == 1),
        "{codecs:?}"
    );
    // The same store reopened with zstd: new segments are zstd, old ones stay gzip.
    let store = open_on(zstd, inner.clone(), "mix").await;
    for i in 30..90 {
        store
            .put("c", &format!("k{i:03}"), expected(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    let mut codecs = object_codecs(&*inner, "mix/segments/c").await;
    codecs.dedup();
    assert_eq!(codecs, [1, 2], "both codecs in one collection");
    assert!(store.collections()[0].segments >= 2);
    for i in 0..90 {
        assert_eq!(
            store.get("c", &format!("k{i:03}")).await.unwrap(),
            Some(expected(i)),
            "k{i:03} before compaction"
        );
    }
    assert!(store.compact("c").await.unwrap() >= 2);
    assert_eq!(store.collections()[0].segments, 1);
    let mut remaining = Vec::new();
    for _ in 0..250 {
        remaining = object_codecs(&*inner, "mix/segments/c").await;
        if remaining.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(remaining, [2], "one zstd segment after compaction");
    store.close(Duration::from_secs(1)).await.unwrap();
    let fresh = open_on(config(&dir.path().join("fresh")), inner.clone(), "mix").await;
    let page = list_all(&fresh, "c").await;
    assert_eq!(page.records.len(), 90);
    for (i, record) in page.records.iter().enumerate() {
        assert_eq!(record.value, expected(i), "k{i:03} after compaction");
    }
    fresh.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn background_compaction_merges_a_size_tier() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.compaction.enabled = true;
    cfg.compaction.min_segments = 3;
    cfg.compaction.interval = Duration::from_secs(60);
    let store = Store::open(cfg).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    for round in 0..3 {
        for i in 0..20 {
            store
                .put("c", &format!("k{round}-{i:02}"), value(i))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
    }
    assert_eq!(store.collections()[0].segments, 3);
    // Three segments of one size tier: the next background pass (every 60 s) merges them.
    tokio::time::sleep(Duration::from_secs(61)).await;
    for _ in 0..50 {
        if store.collections()[0].segments == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.collections()[0].segments, 1);
    assert_eq!(store.get("c", "k1-07").await.unwrap(), Some(value(7)));
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_collection_removes_its_objects_and_dlq_entries() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let store = open_on(config(dir.path()), fault.clone(), "d").await;
    store
        .create_collection("gone", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    for i in 0..20 {
        store
            .put("gone", &format!("k{i:02}"), value(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    fault.set(Mode::Forbidden);
    store
        .put("gone", "late", Bytes::from_static(b"x"))
        .await
        .unwrap();
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    assert_eq!(store.dlq().len(), 1, "one pinned segment");
    fault.set(Mode::Healthy);
    assert_eq!(count_objects(&*fault, "d/segments/gone").await, 1);
    assert!(store.drop_collection("gone").await.unwrap());
    assert_eq!(count_objects(&*fault, "d/segments/gone").await, 0);
    assert!(store.dlq().is_empty());
    assert!(!dir.path().join("data/segments/gone").exists());
    store.close(Duration::from_secs(1)).await.unwrap();
    let fresh = open_on(config(&dir.path().join("fresh")), fault.clone(), "d").await;
    assert!(
        fresh.collections().is_empty(),
        "the manifest no longer lists it"
    );
    fresh.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_breaker_open_reads_answer_from_memory_and_the_cache_only() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let store = open_on(config(dir.path()), fault.clone(), "b").await;
    store
        .create_collection("cold", TieringPolicy::S3Only)
        .await
        .unwrap();
    for i in 0..100 {
        store
            .put("cold", &format!("k{i:03}"), value(i))
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        store.get("cold", "k000").await.unwrap(),
        Some(value(0)),
        "loads the index and the first block"
    );
    store
        .put("cold", "fresh", Bytes::from_static(b"new"))
        .await
        .unwrap();
    store.breaker().force_open();
    let reads_before = fault.segment_puts.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        store.get("cold", "k000").await.unwrap(),
        Some(value(0)),
        "a cached block still answers"
    );
    assert!(
        matches!(
            store.get("cold", "k099").await,
            Err(ReadError::Unavailable(_))
        ),
        "an uncached block is unavailable, not missing"
    );
    let page = list_all(&store, "cold").await;
    assert!(page.degraded);
    assert!(
        page.records.iter().any(|r| r.id == "fresh"),
        "memory answers"
    );
    assert_eq!(
        fault.segment_puts.load(std::sync::atomic::Ordering::SeqCst),
        reads_before
    );
    store.breaker().reset();
    assert_eq!(store.get("cold", "k099").await.unwrap(), Some(value(99)));
    store.close(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn compaction_settings_apply_to_the_running_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.compaction.enabled = false;
    cfg.compaction.min_segments = 3;
    cfg.compaction.interval = Duration::from_secs(60);
    let store = Store::open(cfg).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    for round in 0..3 {
        for i in 0..20 {
            store
                .put("c", &format!("k{round}-{i:02}"), value(i))
                .await
                .unwrap();
        }
        store.flush().await.unwrap();
    }
    // Disabled: the background pass leaves the three segments alone.
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(store.collections()[0].segments, 3);

    // An invalid setting is refused, naming the key, and changes nothing.
    let mut bad = store.compaction_config();
    bad.min_segments = 1;
    let error = store.set_compaction_config(bad).unwrap_err();
    assert_eq!(error.key, "compaction.min_segments");
    assert!(!store.compaction_config().enabled);

    // Enabled live: the next pass merges them.
    let mut enabled = store.compaction_config();
    enabled.enabled = true;
    store.set_compaction_config(enabled).unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    for _ in 0..50 {
        if store.collections()[0].segments == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.collections()[0].segments, 1);
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_manifest_commit_that_landed_but_failed_never_fences_its_own_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fault = FaultStore::new(Arc::new(InMemory::new()));
    let mut cfg = config(dir.path());
    cfg.upload.base_delay = Duration::from_millis(500);
    cfg.upload.max_delay = Duration::from_millis(500);
    let store = open_on(cfg.clone(), fault.clone(), "t").await;
    for name in ["a", "b"] {
        store
            .create_collection(name, TieringPolicy::MemoryS3)
            .await
            .unwrap();
    }
    for i in 0..20 {
        store.put("b", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    // The commit of a's segment lands, but the store sees a 503: it retries after 500 ms.
    fault
        .ambiguous_manifest_puts
        .store(1, std::sync::atomic::Ordering::SeqCst);
    for i in 0..20 {
        store.put("a", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    for _ in 0..100 {
        if fault
            .ambiguous_manifest_puts
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        fault
            .ambiguous_manifest_puts
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the commit landed and failed"
    );
    // Meanwhile another commit (b dropped) carries other content than the manifest that landed.
    assert!(store.drop_collection("b").await.unwrap());
    store.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    assert!(store.fenced().is_none(), "fenced by its own manifest");
    store.close(Duration::from_secs(1)).await.unwrap();
    // A fresh store reads a from the newest manifest, and b is gone.
    let fresh = open_on(config(&dir.path().join("fresh")), fault.clone(), "t").await;
    assert_eq!(fresh.get("a", "k07").await.unwrap(), Some(value(7)));
    assert!(fresh.get("b", "k07").await.is_err(), "b was dropped");
    fresh.close(Duration::from_secs(1)).await.unwrap();
}
