//! The write path: acknowledgement after fsync, group commit, torn tails, all-or-nothing batches,
//! the directory lock and WAL trimming.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use mainstay_storage_tiering::{OpenError, StorageMetrics, Store, TieringPolicy};
use prometheus_client::registry::Registry;

use crate::common::{config, value};

fn wal_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(data.join("wal"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// The end of the frames in a WAL file: the rest is zero-filled preallocation.
fn frames_end(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |last| last as u64 + 1)
}

fn metric(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    text.lines()
        .filter(|line| line.starts_with(name) && line.as_bytes().get(name.len()) == Some(&b'{'))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store
        .create_collection("notes", TieringPolicy::Memory)
        .await
        .unwrap();
    for i in 0..300 {
        store
            .put("notes", &format!("n{i:04}"), value(i))
            .await
            .unwrap();
    }
    store.delete("notes", "n0007").await.unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();

    let store = Store::open(config(dir.path())).await.unwrap();
    let report = store.recovery().clone();
    for i in 0..300 {
        let expected = (i != 7).then(|| value(i));
        assert_eq!(
            store.get("notes", &format!("n{i:04}")).await.unwrap(),
            expected,
            "record {i}"
        );
    }
    // Memtables were flushed into local segments at close, so little or nothing is replayed, and
    // the zero-filled rest of the WAL files is a clean end, not a torn tail.
    assert!(report.replayed_records < 300, "{report:?}");
    assert_eq!(report.wal.truncated_bytes, 0, "{report:?}");
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let metrics = StorageMetrics::register(&mut registry);
    let store = Store::builder(config(dir.path()))
        .metrics(metrics)
        .open()
        .await
        .unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    let writes = (0..64).map(|i| {
        let store = store.clone();
        async move {
            store
                .put("c", &format!("k{i}"), Bytes::from_static(b"v"))
                .await
        }
    });
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    let fsyncs = metric(&registry, "storage_wal_fsyncs_total");
    assert!(
        (1.0..64.0).contains(&fsyncs),
        "64 concurrent writes took {fsyncs} fsyncs"
    );
    assert_eq!(metric(&registry, "storage_inserts_total"), 64.0);
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_truncated_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.memtable_bytes = 1024 * 1024; // everything stays in the WAL
    let store = Store::open(cfg.clone()).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    for i in 0..20 {
        store.put("c", &format!("k{i:02}"), value(i)).await.unwrap();
    }
    // A crash: no close, the store is dropped with its memtable unflushed.
    drop(store);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let last = wal_files(&cfg.data_dir)
        .into_iter()
        .rfind(|f| frames_end(f) > 0)
        .unwrap();
    // A frame header promising 200 bytes right after the last frame, then nothing: a torn write.
    let end = frames_end(&last);
    let mut file = OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(end).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(end)).unwrap();
    file.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();

    let store = Store::open(cfg.clone()).await.unwrap();
    let report = store.recovery().clone();
    assert_eq!(report.wal.truncated_bytes, 7, "{report:?}");
    assert_eq!(report.replayed_records, 20);
    for i in 0..20 {
        assert_eq!(
            store.get("c", &format!("k{i:02}")).await.unwrap(),
            Some(value(i))
        );
    }
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_by_a_crash_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.memtable_bytes = 1024 * 1024;
    let store = Store::open(cfg.clone()).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    store
        .put("c", "before", Bytes::from_static(b"1"))
        .await
        .unwrap();
    let batch: Vec<(String, Bytes)> = (0..50).map(|i| (format!("b{i:02}"), value(i))).collect();
    store.put_batch("c", batch).await.unwrap();
    drop(store);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Cut the batch's frame in the middle, as a crash during its write would.
    let last = wal_files(&cfg.data_dir)
        .into_iter()
        .rfind(|f| frames_end(f) > 0)
        .unwrap();
    let len = frames_end(&last);
    OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 100)
        .unwrap();

    let store = Store::open(cfg).await.unwrap();
    let report = store.recovery().clone();
    assert!(report.wal.truncated_bytes > 0);
    assert_eq!(
        store.get("c", "before").await.unwrap(),
        Some(Bytes::from_static(b"1"))
    );
    for i in 0..50 {
        assert_eq!(
            store.get("c", &format!("b{i:02}")).await.unwrap(),
            None,
            "batch member {i} must not survive alone"
        );
    }
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_inside_an_older_wal_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.memtable_bytes = 1024 * 1024;
    cfg.wal_segment_bytes = 4096;
    let store = Store::open(cfg.clone()).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    for i in 0..300 {
        store.put("c", &format!("k{i:03}"), value(i)).await.unwrap();
    }
    drop(store);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let files = wal_files(&cfg.data_dir);
    assert!(files.len() > 2, "the wal rotated by size: {files:?}");
    let first = files.first().unwrap();
    let mut bytes = fs::read(first).unwrap();
    bytes[20] ^= 0xff;
    fs::write(first, bytes).unwrap();
    match Store::open(cfg).await {
        Err(OpenError::Wal(error)) => assert!(error.to_string().contains("corrupt"), "{error}"),
        other => panic!("expected a corrupt-wal error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    match Store::open(config(dir.path())).await {
        Err(OpenError::Locked { path }) => assert!(path.ends_with("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn covered_wal_files_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.wal_segment_bytes = 4096;
    let store = Store::open(cfg.clone()).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    for i in 0..400 {
        store.put("c", &format!("k{i:03}"), value(i)).await.unwrap();
    }
    store.flush().await.unwrap();
    store
        .put("c", "tail", Bytes::from_static(b"t"))
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert!(
        store.wal_files() <= 2,
        "{} wal files left after every record reached a segment",
        store.wal_files()
    );
    store.close(Duration::from_secs(1)).await.unwrap();
    let store = Store::open(cfg).await.unwrap();
    for i in (0..400).step_by(37) {
        assert_eq!(
            store.get("c", &format!("k{i:03}")).await.unwrap(),
            Some(value(i))
        );
    }
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lsns_keep_growing_after_the_wal_was_trimmed_away() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    store
        .put("c", "k", Bytes::from_static(b"old"))
        .await
        .unwrap();
    store.close(Duration::from_secs(1)).await.unwrap(); // flushed: the wal is trimmed
    let store = Store::open(config(dir.path())).await.unwrap();
    store
        .put("c", "k", Bytes::from_static(b"new"))
        .await
        .unwrap();
    store.close(Duration::from_secs(1)).await.unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.collections()[0].segments, 2);
    assert_eq!(
        store.get("c", "k").await.unwrap(),
        Some(Bytes::from_static(b"new")),
        "the newer write wins"
    );
    store.close(Duration::from_secs(1)).await.unwrap();
}

/// Opens a store with small WAL files and two `memory` collections, puts one record into
/// `quiet`, then enough into `busy` to rotate the WAL many times; returns the store and registry.
async fn quiet_and_busy(
    dir: &Path,
    configure: impl FnOnce(&mut StoreConfigAlias),
) -> (Store, Registry) {
    let mut cfg = config(dir);
    cfg.wal_segment_bytes = 4096;
    configure(&mut cfg);
    let mut registry = Registry::default();
    let store = Store::builder(cfg)
        .metrics(StorageMetrics::register(&mut registry))
        .open()
        .await
        .expect("opens");
    for name in ["quiet", "busy"] {
        store
            .create_collection(name, TieringPolicy::Memory)
            .await
            .expect("created");
    }
    store
        .put("quiet", "q", Bytes::from_static(b"quiet"))
        .await
        .expect("put");
    for i in 0..300 {
        store
            .put("busy", &format!("b{i:04}"), Bytes::from(vec![b'v'; 300]))
            .await
            .expect("put");
    }
    (store, registry)
}

type StoreConfigAlias = mainstay_storage_tiering::StoreConfig;

/// Waits (on paused time) until the WAL holds at most `files` files, for at most 20 s.
async fn wait_for_wal_files(store: &Store, files: usize) {
    for _ in 0..200 {
        if store.wal_files() <= files {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A quiet collection's memtable is frozen after `flush_interval`, so it no longer pins every
/// later WAL file (issue 12, point 8); the gauges report the files on disk.
#[tokio::test(start_paused = true)]
async fn a_quiet_memtable_is_frozen_after_the_flush_interval_and_the_wal_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let (store, registry) = quiet_and_busy(dir.path(), |cfg| {
        cfg.flush_interval = Duration::from_secs(1);
    })
    .await;
    assert!(
        metric(&registry, "storage_wal_bytes_total") > 20.0 * 4096.0,
        "the busy collection rotated the wal many times"
    );
    wait_for_wal_files(&store, 2).await;
    assert!(store.wal_files() <= 2, "wal files: {}", store.wal_files());
    assert_eq!(
        metric(&registry, "storage_wal_files"),
        store.wal_files() as f64
    );
    assert!(metric(&registry, "storage_wal_disk_bytes") > 0.0);
    assert_eq!(
        store.get("quiet", "q").await.unwrap(),
        Some(Bytes::from_static(b"quiet"))
    );
}

/// Past `max_wal_bytes`, the memtable holding the oldest record is frozen even though its flush
/// interval has not passed.
#[tokio::test(start_paused = true)]
async fn past_max_wal_bytes_the_oldest_memtable_is_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 3 * 1024 * 1024;
    let (store, registry) = quiet_and_busy(dir.path(), |cfg| {
        cfg.flush_interval = Duration::from_secs(3600);
        cfg.max_wal_bytes = limit;
    })
    .await;
    assert!(metric(&registry, "storage_wal_bytes_total") > 20.0 * 4096.0);
    wait_for_wal_files(&store, 3).await;
    let on_disk = metric(&registry, "storage_wal_disk_bytes");
    assert!(
        on_disk <= limit as f64,
        "{on_disk} bytes of wal on disk, {} files",
        store.wal_files()
    );
    assert_eq!(
        store.get("quiet", "q").await.unwrap(),
        Some(Bytes::from_static(b"quiet"))
    );
    // The frozen memtable is a segment now: it survives a restart without its WAL files.
    store.close(Duration::from_secs(5)).await.unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(
        store.get("quiet", "q").await.unwrap(),
        Some(Bytes::from_static(b"quiet"))
    );
}

/// The puts of the fixture `fixtures/data-dir-before-journal` (collection, id, value), in the
/// order they were written; `fixtures/README.md` says how it was made.
fn before_journal_puts() -> Vec<(&'static str, String, Bytes)> {
    (0..40u32)
        .map(|i| {
            let collection = if i % 3 == 0 { "invoices" } else { "orders" };
            let value = format!("value {i} ").repeat(1 + i as usize % 5);
            (collection, format!("r{i:03}"), Bytes::from(value))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_written_before_the_journal_move_opens_with_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/data-dir-before-journal");
    let data = dir.path().join("data");
    for relative in [
        "catalog.json",
        "dlq/journal",
        "wal/00000000000000000001.wal",
    ] {
        let to = data.join(relative);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(fixture.join(relative), &to).unwrap();
    }
    let store = Store::open(config(dir.path())).await.unwrap();
    let report = store.recovery().clone();
    // 30 puts, one batch of the 6 later orders, 4 more invoices, 2 deletes.
    assert_eq!(report.replayed_records, 37, "{report:?}");
    let deleted = [("orders", "r001"), ("invoices", "r003")];
    for (collection, id, value) in before_journal_puts() {
        let expected = (!deleted.contains(&(collection, id.as_str()))).then_some(value);
        assert_eq!(
            store.get(collection, &id).await.unwrap(),
            expected,
            "{collection}/{id}"
        );
    }
    // New writes get LSNs above the old ones and survive a reopen beside them.
    store.put("orders", "after", value(1)).await.unwrap();
    assert!(store.last_lsn() > 37);
    store.close(Duration::from_secs(1)).await.unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.get("orders", "after").await.unwrap(), Some(value(1)));
    assert_eq!(
        store.get("invoices", "r039").await.unwrap(),
        Some(before_journal_puts()[39].2.clone())
    );
    store.close(Duration::from_secs(1)).await.unwrap();
}

/// Flips the first payload byte of the `n`th frame (from 0) of a `mainstay-journal` segment
/// (header 24 bytes; frame `u32 len | u32 crc | u64 lsn | payload`, len = 8 + payload).
fn damage_frame(segment: &Path, n: usize) {
    let mut bytes = fs::read(segment).unwrap();
    let mut pos = 24;
    for _ in 0..n {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        assert!(len > 0, "fewer than {n} frames in {}", segment.display());
        pos += 8 + len;
    }
    bytes[pos + 16] ^= 0x5a;
    fs::write(segment, bytes).unwrap();
}

/// Issue 19: the record store and the DLQ report recovery the same way. The same damage (one
/// frame in the middle of each one's log) gives the same summary from both, and its counts are
/// what a reader finds: records lost are the records missing, records recovered the ones there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_the_dlq_summarise_the_same_damage_alike() {
    use mainstay_dlq::{Dlq, DlqConfig, FailureClass, NewEntry};
    use mainstay_journal::RecoveryOutcome;
    use mainstay_storage_tiering::WalRecoveryMode;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.memtable_bytes = 1024 * 1024; // everything stays in the WAL
    cfg.wal_recovery = WalRecoveryMode::SkipCorrupt;
    let store = Store::open(cfg.clone()).await.unwrap();
    assert_eq!(store.recovery().summary().outcome(), RecoveryOutcome::Clean);
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    let dlq_dir = dir.path().join("dlq-alone");
    let dlq = Dlq::open(&dlq_dir, DlqConfig::default()).await.unwrap();
    assert_eq!(dlq.recovery().summary().outcome(), RecoveryOutcome::Clean);
    for i in 0..10 {
        let key = format!("k{i:02}");
        store.put("c", &key, value(i)).await.unwrap();
        let entry = NewEntry::inline("q", key, value(i), FailureClass::Transient, "boom");
        dlq.push(entry).await.unwrap();
    }
    // A crash of both: no close.
    drop((store, dlq));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let wal = wal_files(&cfg.data_dir)
        .into_iter()
        .find(|f| frames_end(f) > 0)
        .unwrap();
    damage_frame(&wal, 4);
    let mut segments: Vec<PathBuf> = fs::read_dir(dlq_dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    damage_frame(&segments[0], 4);

    let store = Store::open(cfg.clone()).await.unwrap();
    let dlq = Dlq::open(&dlq_dir, DlqConfig::default()).await.unwrap();
    let mut in_store = 0;
    for i in 0..10 {
        if store.get("c", &format!("k{i:02}")).await.unwrap().is_some() {
            in_store += 1;
        }
    }
    let in_dlq = dlq.len() as u64;
    let (of_store, of_dlq) = (store.recovery().summary(), dlq.recovery().summary());
    for (summary, present, name) in [(&of_store, in_store, "store"), (&of_dlq, in_dlq, "dlq")] {
        assert_eq!(
            summary.outcome(),
            RecoveryOutcome::DataLost,
            "{name}: {summary:?}"
        );
        assert_eq!(summary.lost_records, 10 - present, "{name}: {summary:?}");
        assert_eq!(summary.recovered_records, present, "{name}: {summary:?}");
        assert_eq!(summary.truncated_bytes, 0, "{name}: {summary:?}");
        assert_eq!(summary.preserved.len(), 1, "{name}: {summary:?}");
        assert!(summary.preserved[0].exists(), "{name}: {summary:?}");
    }
    assert_eq!(
        (of_store.lost_records, of_store.recovered_records),
        (of_dlq.lost_records, of_dlq.recovered_records),
        "the same damage is summarised alike"
    );
    store.close(Duration::from_secs(1)).await.unwrap();
}
