//! Group commit: concurrent writers share one sync, which runs off the runtime's threads, and a
//! writer waits for its own LSN only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mainstay_journal::fs::{FileSystem, SimFs, SyncSite};
use mainstay_journal::{Journal, JournalConfig};

use crate::{Gate, HookFs, payload};

/// A journal whose group-commit syncs pass through `gate`.
fn gated(gate: &Arc<Gate>) -> Journal {
    let gate = Arc::clone(gate);
    let fs: Arc<dyn FileSystem> = Arc::new(HookFs::new(SimFs::new(1), move |site| {
        if site == SyncSite::SegmentData {
            gate.pass();
        }
    }));
    Journal::open_with(fs, "/journal", JournalConfig::default())
        .expect("open")
        .0
}

async fn await_waiting(gate: &Arc<Gate>, count: usize) {
    let gate = Arc::clone(gate);
    let came = tokio::task::spawn_blocking(move || gate.await_waiting(count))
        .await
        .unwrap();
    assert!(came, "no sync reached the gate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_one_sync() {
    let gate = Gate::closed();
    let _open = gate.open_on_drop();
    let journal = gated(&gate);
    let writers: Vec<_> = (0..16)
        .map(|n| {
            let journal = journal.clone();
            tokio::spawn(async move { journal.write(&payload(n)).await })
        })
        .collect();
    // Every writer appends while the first sync is held at the gate.
    while journal.last_lsn().get() < 16 {
        tokio::task::yield_now().await;
    }
    gate.open();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    assert_eq!(journal.durable_lsn().get(), 16);
    assert!(
        gate.passed() <= 2,
        "16 concurrent writes took {} syncs",
        gate.passed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_waits_for_its_own_lsn_only() {
    let gate = Gate::closed();
    let _open = gate.open_on_drop();
    let journal = gated(&gate);
    let first = journal.append(b"first").unwrap();
    let leader = tokio::spawn({
        let journal = journal.clone();
        async move { journal.commit(first).await }
    });
    await_waiting(&gate, 1).await; // the first round syncs `first` alone
    let second = journal.append(b"second").unwrap();
    let follower = tokio::spawn({
        let journal = journal.clone();
        async move { journal.commit(second).await }
    });
    gate.release(1);
    // The leading writer returns while the round carrying `second` is held at the gate.
    tokio::time::timeout(Duration::from_secs(20), leader)
        .await
        .expect("the first writer waited for a later round")
        .unwrap()
        .unwrap();
    assert_eq!(
        journal.durable_lsn(),
        first,
        "only the first round is durable"
    );
    await_waiting(&gate, 1).await;
    assert!(!follower.is_finished());
    gate.open();
    follower.await.unwrap().unwrap();
    assert_eq!(journal.durable_lsn(), second);
}

#[tokio::test]
async fn syncs_run_off_the_runtime_thread() {
    let threads = Arc::new(Mutex::new(Vec::new()));
    let fs: Arc<dyn FileSystem> = Arc::new(HookFs::new(SimFs::new(2), {
        let threads = Arc::clone(&threads);
        move |site| {
            if site == SyncSite::SegmentData {
                threads.lock().unwrap().push(std::thread::current().id());
            }
        }
    }));
    let (journal, _) = Journal::open_with(fs, "/journal", JournalConfig::default()).unwrap();
    for n in 0..5 {
        journal.write(&payload(n)).await.unwrap();
    }
    let threads = threads.lock().unwrap();
    assert!(!threads.is_empty());
    assert!(
        threads.iter().all(|id| *id != std::thread::current().id()),
        "an fdatasync ran on the runtime's thread"
    );
}

#[test]
fn appends_go_on_while_a_rotation_syncs() {
    let gate = Gate::closed();
    let _open = gate.open_on_drop();
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fs: Arc<dyn FileSystem> = Arc::new(HookFs::new(SimFs::new(3), {
        let gate = Arc::clone(&gate);
        let armed = Arc::clone(&armed);
        move |site| {
            if site == SyncSite::SegmentCreate && armed.load(std::sync::atomic::Ordering::SeqCst) {
                gate.pass();
            }
        }
    }));
    let (journal, _) = Journal::open_with(fs, "/journal", crate::small_segments()).unwrap();
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    // This writer's commit leads the round that fills the segment, then the rotation, whose
    // new segment's sync is held at the gate.
    let writer = std::thread::spawn({
        let journal = journal.clone();
        move || {
            let mut n = 0;
            loop {
                let lsn = journal.append(&payload(n)).unwrap();
                journal.commit_blocking(lsn).unwrap();
                if journal.segments() > 1 {
                    return lsn;
                }
                n += 1;
            }
        }
    });
    assert!(gate.await_waiting(1), "no rotation reached the gate");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn({
        let journal = journal.clone();
        move || sender.send(journal.append(b"during the rotation"))
    });
    let during = receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("an append waited for the rotation's fsyncs")
        .unwrap();
    gate.open();
    let filled = writer.join().unwrap();
    assert!(during > filled);
    journal.commit_blocking(during).unwrap();
    assert_eq!(journal.segments(), 2);
}
