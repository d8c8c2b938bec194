//! Journal durability: replay, compaction, torn and corrupt tails, bit flips, the lock and group
//! commit.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;

use mainstay_clock::ManualClock;
use mainstay_dlq::{
    Dlq, DlqConfig, DlqMetrics, FailureClass, NewEntry, OpenError, Payload, PinnedFile, PushError,
    SyncMode,
};
use prometheus_client::registry::Registry;

use crate::{HEADER, config, entry, frame_offsets, journal, keys, metric, open_with, segments};

async fn push_keys(dlq: &Dlq, keys: &[&str]) {
    for key in keys {
        dlq.push(entry("orders", key)).await.unwrap();
    }
}

#[tokio::test]
async fn acknowledged_entries_survive_reopen_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    let inline = h.dlq.push(entry("orders", "a").attempts(5)).await.unwrap();
    let file = PinnedFile {
        path: "/var/lib/mainstay/segments/0001.seg".into(),
        size: 4096,
        crc32c: 0xdead_beef,
    };
    let pinned = h
        .dlq
        .push(NewEntry::pinned_file(
            "tiering",
            "seg-1",
            file.clone(),
            FailureClass::Transient,
            "s3 unavailable",
        ))
        .await
        .unwrap();
    let before = (h.dlq.get(inline).unwrap(), h.dlq.get(pinned).unwrap());
    drop(h);

    let h = open_with(dir.path(), config(), &clock).await;
    assert_eq!(h.dlq.recovery().journal_records, 2);
    assert_eq!(h.dlq.get(inline).unwrap(), before.0);
    assert_eq!(h.dlq.get(pinned).unwrap(), before.1);
    assert_eq!(h.dlq.get(inline).unwrap().attempts(), 5);
    assert!(matches!(h.dlq.get(pinned).unwrap().payload(), Payload::File(f) if *f == file));
}

#[tokio::test]
async fn close_compacts_into_a_snapshot_and_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    push_keys(&h.dlq, &["a", "b", "c"]).await;
    let b = h.dlq.list(&Default::default(), None, 10).unwrap().entries[1].id();
    assert!(h.dlq.delete(b).await.unwrap());
    h.dlq.close().await.unwrap();
    assert!(dir.path().join("snapshot").exists());
    assert!(matches!(
        h.dlq.push(entry("orders", "d")).await,
        Err(PushError::Write(mainstay_dlq::WriteError::Closed))
    ));

    // The lock is free although `h` still exists.
    let again = open_with(dir.path(), config(), &clock).await;
    assert_eq!(again.dlq.recovery().snapshot_records, 2);
    assert_eq!(again.dlq.recovery().journal_records, 0);
    assert_eq!(keys(&again.dlq), ["a", "c"]);
}

#[tokio::test]
async fn journal_is_compacted_past_its_bound_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let config = DlqConfig {
        compact_after_bytes: 4096,
        ..config()
    };
    let h = open_with(dir.path(), config.clone(), &clock).await;
    for n in 0..100 {
        h.dlq
            .push(entry("orders", &format!("k{n:03}")))
            .await
            .unwrap();
    }
    assert!(dir.path().join("snapshot").exists());
    let journal_frames: usize = segments(dir.path())
        .iter()
        .map(|path| frame_offsets(&fs::read(path).unwrap()).1 - HEADER)
        .sum();
    assert!(
        journal_frames < 4096 + 200,
        "{journal_frames} bytes of journal"
    );
    drop(h);
    let h = open_with(dir.path(), config, &clock).await;
    assert_eq!(h.dlq.len(), 100);
    assert!(h.dlq.recovery().snapshot_records > 0);
}

#[tokio::test]
async fn a_torn_tail_is_truncated_reported_and_the_queue_opens() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    push_keys(&h.dlq, &["a", "b", "c"]).await;
    drop(h);
    let good_len = frame_offsets(&fs::read(journal(dir.path())).unwrap()).1;
    // Half a frame: a length that promises more bytes than were written.
    let mut file = OpenOptions::new()
        .write(true)
        .open(journal(dir.path()))
        .unwrap();
    file.seek(SeekFrom::Start(good_len as u64)).unwrap();
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(file);

    let h = open_with(dir.path(), config(), &clock).await;
    let report = h.dlq.recovery();
    assert!(report.torn_tail);
    assert!(!report.corrupt_tail);
    assert_eq!(report.truncated_bytes, 10);
    let bytes = fs::read(journal(dir.path())).unwrap();
    assert_eq!(frame_offsets(&bytes).1, good_len);
    assert!(
        bytes[good_len..].iter().all(|byte| *byte == 0),
        "the torn bytes are cut"
    );
    assert_eq!(metric(&h.registry, "dlq_journal_truncations_total"), 1.0);
    assert_eq!(keys(&h.dlq), ["a", "b", "c"]);
    // Appends continue on a clean boundary.
    h.dlq.push(entry("orders", "d")).await.unwrap();
    drop(h);
    let h = open_with(dir.path(), config(), &clock).await;
    assert!(!h.dlq.recovery().torn_tail);
    assert_eq!(keys(&h.dlq), ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn a_bit_flip_in_the_middle_is_detected_and_only_that_record_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    push_keys(&h.dlq, &["a", "b", "c", "d", "e"]).await;
    drop(h);
    let mut bytes = fs::read(journal(dir.path())).unwrap();
    let (offsets, _) = frame_offsets(&bytes);
    assert_eq!(offsets.len(), 5);
    bytes[offsets[2] + 20] ^= 0x04;
    fs::write(journal(dir.path()), &bytes).unwrap();

    let h = open_with(dir.path(), config(), &clock).await;
    assert_eq!(h.dlq.recovery().corrupt_records, 1);
    assert_eq!(
        metric(&h.registry, "dlq_journal_corrupt_records_total"),
        1.0
    );
    assert_eq!(keys(&h.dlq), ["a", "b", "d", "e"]);
}

#[tokio::test]
async fn a_bit_flip_in_the_last_record_is_a_torn_tail_truncated_quietly() {
    // Decision 0081 (superseding 0022): with nothing valid after it, a bad last frame cannot be
    // told from an interrupted write, so it is a torn tail: cut, nothing kept, no loss reported.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    push_keys(&h.dlq, &["a", "b", "c"]).await;
    drop(h);
    let mut bytes = fs::read(journal(dir.path())).unwrap();
    let (offsets, end) = frame_offsets(&bytes);
    let last = *offsets.last().unwrap();
    bytes[end - 3] ^= 0x80;
    fs::write(journal(dir.path()), &bytes).unwrap();

    let h = open_with(dir.path(), config(), &clock).await;
    let report = h.dlq.recovery().clone();
    assert!(report.torn_tail);
    assert!(!report.corrupt_tail);
    assert_eq!(report.corrupt_records, 0);
    assert_eq!(report.preserved, None);
    assert_eq!(report.truncated_bytes, (end - last) as u64);
    assert_eq!(
        frame_offsets(&fs::read(journal(dir.path())).unwrap()).1,
        last
    );
    assert_eq!(keys(&h.dlq), ["a", "b"]);
}

#[tokio::test]
async fn a_journal_already_covered_by_the_snapshot_is_not_replayed() {
    // A crash between the snapshot rename and the journal reset leaves the old journal beside a
    // snapshot that covers it.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    push_keys(&h.dlq, &["a", "b", "c"]).await;
    let b = h.dlq.list(&Default::default(), None, 10).unwrap().entries[1].id();
    h.dlq.delete(b).await.unwrap();
    let old_journal = fs::read(journal(dir.path())).unwrap();
    h.dlq.close().await.unwrap();
    fs::write(journal(dir.path()), &old_journal).unwrap();

    let h = open_with(dir.path(), config(), &clock).await;
    assert!(h.dlq.recovery().stale_journal);
    assert_eq!(keys(&h.dlq), ["a", "c"]);
    h.dlq.push(entry("orders", "d")).await.unwrap();
    drop(h);
    let h = open_with(dir.path(), config(), &clock).await;
    assert_eq!(h.dlq.recovery().journal_records, 1);
    assert_eq!(keys(&h.dlq), ["a", "c", "d"]);
}

#[tokio::test]
async fn a_second_opener_is_refused_until_the_holder_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let first = Dlq::open(dir.path(), config()).await.unwrap();
    let second = Dlq::open(dir.path(), config()).await;
    assert!(
        matches!(second, Err(OpenError::Locked { .. })),
        "{second:?}"
    );
    let message = second.unwrap_err().to_string();
    assert!(message.contains("locked by another process"), "{message}");
    drop(first);
    Dlq::open(dir.path(), config()).await.unwrap();
}

#[tokio::test]
async fn an_oversized_payload_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = DlqConfig {
        max_payload_bytes: 1024,
        ..config()
    };
    let dlq = Dlq::open(dir.path(), config).await.unwrap();
    let too_big = NewEntry::inline("orders", "k", vec![7u8; 1025], FailureClass::Permanent, "x");
    assert_eq!(
        dlq.push(too_big).await,
        Err(PushError::PayloadTooLarge {
            size: 1025,
            limit: 1024
        })
    );
    let fits = NewEntry::inline("orders", "k", vec![7u8; 1024], FailureClass::Permanent, "x");
    let id = dlq.push(fits).await.unwrap();
    assert!(
        matches!(dlq.get(id).unwrap().payload(), Payload::Inline(p) if p.data().len() == 1024 && p.verify())
    );
    assert_eq!(dlq.len(), 1);
}

async fn fsyncs_for(mode: SyncMode, pushes: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let metrics = DlqMetrics::register(&mut registry);
    let config = DlqConfig {
        sync_mode: mode,
        ..config()
    };
    let dlq = Dlq::builder(dir.path())
        .config(config)
        .metrics(metrics)
        .open()
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(pushes));
    let tasks: Vec<_> = (0..pushes)
        .map(|n| {
            let dlq = dlq.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                dlq.push(entry("orders", &format!("k{n}"))).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(dlq.len(), pushes);
    metric(&registry, "dlq_journal_fsyncs_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_fsyncs_and_per_push_mode_does_not() {
    let grouped = fsyncs_for(SyncMode::Grouped, 64).await;
    let per_push = fsyncs_for(SyncMode::PerPush, 64).await;
    assert_eq!(per_push, 64.0);
    assert!(
        grouped <= 32.0,
        "grouped mode used {grouped} fsyncs for 64 pushes"
    );
}
