//! A failed fsync poisons the journal: never retried, never reported as a success, and the
//! failed entries never come back after a restart, even when their bytes reached the disk.

use std::future::Future as _;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use mainstay_journal::fs::{FileSystem, SimFs, SyncFailure, SyncSite};
use mainstay_journal::{Journal, JournalConfig, Lsn, WriteError};

use crate::{HookFs, open_sim, payloads, small_segments, write_blocking};

fn failed(result: &Result<(), WriteError>) -> bool {
    matches!(result, Err(WriteError::Failed { .. }))
}

#[test]
fn a_failed_fsync_poisons_the_journal_and_is_never_retried() {
    for failure in [SyncFailure::DataWritten, SyncFailure::DataLost] {
        let sim = SimFs::new(1);
        let (journal, _) = open_sim(&sim, small_segments());
        write_blocking(&journal, 1, 3);
        sim.fail_next_sync(SyncSite::SegmentData, failure);
        let doomed: Vec<Lsn> = (0..4)
            .map(|n| journal.append(format!("doomed {n}").as_bytes()).unwrap())
            .collect();
        let error = journal.commit_blocking(doomed[3]).unwrap_err();
        assert!(
            error.to_string().contains("injected fsync failure"),
            "{error}"
        );
        let syncs = sim.syncs(SyncSite::SegmentData);
        for lsn in &doomed {
            assert!(
                failed(&journal.commit_blocking(*lsn)),
                "{lsn} reported durable"
            );
        }
        assert_eq!(
            sim.syncs(SyncSite::SegmentData),
            syncs,
            "the failed sync was retried"
        );
        assert!(journal.failure().is_some());
        assert!(matches!(
            journal.append(b"later"),
            Err(WriteError::Failed { .. })
        ));
        assert_eq!(
            journal.commit_blocking(Lsn::new(3)),
            Ok(()),
            "what was durable before stays so"
        );
        drop(journal);

        sim.power_cut();
        let (journal, replay) = open_sim(&sim, small_segments());
        assert_eq!(
            payloads(&replay).len(),
            3,
            "{failure:?}: failed writes came back"
        );
        let skipped = u64::from(failure == SyncFailure::DataWritten) * 4;
        assert_eq!(replay.report.skipped_failed_writes, skipped);
        let next = journal.append(b"next").unwrap();
        assert!(next > doomed[3], "a failed LSN is never handed out again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_waiting_writer_gets_the_failure() {
    let sim = SimFs::new(2);
    let (journal, _) = open_sim(&sim, JournalConfig::default());
    sim.fail_next_sync(SyncSite::SegmentData, SyncFailure::DataWritten);
    let writers: Vec<_> = (0..8)
        .map(|n| {
            let journal = journal.clone();
            tokio::spawn(async move { journal.write(format!("w{n}").as_bytes()).await })
        })
        .collect();
    for writer in writers {
        assert!(matches!(
            writer.await.unwrap(),
            Err(WriteError::Failed { .. })
        ));
    }
    drop(journal);
    sim.power_cut();
    let (_, replay) = open_sim(&sim, JournalConfig::default());
    assert!(replay.entries.is_empty());
}

#[test]
fn writers_hear_of_a_failure_only_once_it_is_recorded() {
    // While the failed LSNs are being written down, a waiting writer must still be waiting: if
    // it were told of the failure first, a power cut could bring its entry back.
    let sim = SimFs::new(3);
    let journal: Arc<OnceLock<Journal>> = Arc::new(OnceLock::new());
    let second: Arc<Mutex<Option<Lsn>>> = Arc::new(Mutex::new(None));
    let answered_early = Arc::new(Mutex::new(None));
    let fs: Arc<dyn FileSystem> = Arc::new(HookFs::new(sim.clone(), {
        let journal = Arc::clone(&journal);
        let second = Arc::clone(&second);
        let answered_early = Arc::clone(&answered_early);
        move |site| {
            let (Some(journal), Some(lsn)) = (journal.get(), *second.lock().unwrap()) else {
                return;
            };
            if site == SyncSite::ReplaceFile {
                let mut commit = pin!(journal.commit(lsn));
                let polled = commit
                    .as_mut()
                    .poll(&mut Context::from_waker(Waker::noop()));
                *answered_early.lock().unwrap() = Some(matches!(polled, Poll::Ready(_)));
            }
        }
    }));
    let (opened, _) = Journal::open_with(fs, "/journal", JournalConfig::default()).unwrap();
    let journal = journal.get_or_init(|| opened);
    let first = journal.append(b"first").unwrap();
    *second.lock().unwrap() = Some(journal.append(b"second").unwrap());
    sim.fail_next_sync(SyncSite::SegmentData, SyncFailure::DataWritten);
    assert!(failed(&journal.commit_blocking(first)));
    assert_eq!(
        *answered_early.lock().unwrap(),
        Some(false),
        "a writer heard of the failure before it was recorded"
    );
    sim.power_cut();
    assert!(sim.read(Path::new("/journal/poisoned")).is_ok());
    let (_, replay) = open_sim(&sim, JournalConfig::default());
    assert!(replay.entries.is_empty());
    assert_eq!(replay.report.skipped_failed_writes, 2);
}

#[test]
fn a_failed_rotation_poisons_the_journal() {
    let sim = SimFs::new(4);
    let (journal, _) = open_sim(&sim, small_segments());
    sim.fail_next_sync(SyncSite::SegmentCreate, SyncFailure::DataLost);
    let mut written = 0;
    let error = loop {
        assert!(written < 1000, "no write failed after the failed rotation");
        let lsn = match journal.append(&crate::payload(written)) {
            Ok(lsn) => lsn,
            Err(error) => break error,
        };
        // The round that filled the segment is durable; the rotation after it fails.
        journal.commit_blocking(lsn).unwrap();
        written += 1;
    };
    assert!(matches!(error, WriteError::Failed { .. }), "{error}");
    assert!(journal.failure().unwrap().contains("rotation"));
    drop(journal);
    sim.power_cut();
    let (_, replay) = open_sim(&sim, small_segments());
    assert_eq!(replay.entries.len() as u64, written);
}
