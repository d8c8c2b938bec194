//! The API the storage WAL needs beside appends: an LSN floor at open, a read-only scan of a
//! directory, and stats for metrics.

use std::sync::Arc;

use mainstay_journal::fs::{FileSystem, RealFs, SimFs, SyncFailure, SyncSite};
use mainstay_journal::{Journal, JournalConfig, Lsn, read_entries};

use crate::{open_sim, payload, small_segments, write_blocking, write_until_rotation};

fn open_sim_above(sim: &SimFs, floor: u64) -> Journal {
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    Journal::open_with_floor(fs, "/journal", small_segments(), Lsn::new(floor))
        .expect("open the journal")
        .0
}

#[test]
fn new_lsns_start_above_the_floor_even_in_an_empty_or_trimmed_directory() {
    // An empty directory.
    let sim = SimFs::new(7);
    let journal = open_sim_above(&sim, 500);
    assert_eq!(journal.durable_lsn(), Lsn::new(500));
    assert_eq!(write_blocking(&journal, 1, 1), [Lsn::new(501)]);
    drop(journal);

    // A floor below what the directory holds changes nothing.
    let journal = open_sim_above(&sim, 10);
    assert_eq!(write_blocking(&journal, 2, 1), [Lsn::new(502)]);

    // Everything trimmed: the directory alone would start again just above its last segment's
    // base, the floor (what the caller keeps elsewhere) starts above it.
    let next = write_until_rotation(&journal, 3);
    let closed = journal.segments() - 1;
    assert_eq!(journal.trim(journal.durable_lsn()).unwrap(), closed);
    let last = journal.durable_lsn().get();
    drop(journal);
    let journal = open_sim_above(&sim, last + 1000);
    assert_eq!(write_blocking(&journal, next, 1), [Lsn::new(last + 1001)]);
    drop(journal);

    // The floor is not written down: an open without it goes on from the frames on disk.
    let (journal, replay) = open_sim(&sim, small_segments());
    assert_eq!(
        replay.entries.last().map(|entry| entry.lsn),
        Some(Lsn::new(last + 1001))
    );
    assert_eq!(
        write_blocking(&journal, next + 1, 1),
        [Lsn::new(last + 1002)]
    );
}

#[test]
fn skipping_lsns_keeps_copied_entries_at_their_lsns_across_a_reopen() {
    let sim = SimFs::new(11);
    let (journal, _) = open_sim(&sim, small_segments());
    write_blocking(&journal, 1, 3);
    journal.skip_to(Lsn::new(10));
    assert_eq!(write_blocking(&journal, 4, 1), [Lsn::new(10)]);
    journal.skip_to(Lsn::new(5));
    assert_eq!(
        write_blocking(&journal, 5, 1),
        [Lsn::new(11)],
        "a lower LSN changes nothing"
    );
    drop(journal);
    sim.power_cut();
    let (journal, replay) = open_sim(&sim, small_segments());
    let lsns: Vec<u64> = replay.entries.iter().map(|entry| entry.lsn.get()).collect();
    assert_eq!(lsns, [1, 2, 3, 10, 11]);
    assert_eq!(replay.entries[3].payload, payload(4));
    assert_eq!(write_blocking(&journal, 6, 1), [Lsn::new(12)]);
}

#[test]
fn a_closed_journal_refuses_writes_and_frees_its_directory() {
    let temp = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(temp.path(), JournalConfig::default()).unwrap();
    let durable = write_blocking(&journal, 1, 2);
    let pending = journal.append(&payload(3)).unwrap();
    let clone = journal.clone();
    journal.close();
    assert!(clone.append(&payload(4)).is_err());
    assert!(clone.commit_blocking(pending).is_err());
    assert_eq!(clone.commit_blocking(durable[1]), Ok(()));
    let (_again, replay) = Journal::open(temp.path(), JournalConfig::default()).unwrap();
    assert_eq!(replay.entries.len(), 2);
}

#[test]
fn read_entries_scans_without_changing_the_directory_and_leaves_failed_writes_out() {
    let sim = SimFs::new(3);
    let (journal, _) = open_sim(&sim, small_segments());
    write_blocking(&journal, 1, 80);
    assert!(journal.segments() > 2, "the test wants several segments");
    sim.fail_next_sync(SyncSite::SegmentData, SyncFailure::DataWritten);
    let doomed = journal.append(b"doomed").unwrap();
    assert!(journal.commit_blocking(doomed).is_err());

    // Beside the open journal: every entry in range, in order, the failed one left out.
    let all = read_entries(&sim, "/journal".as_ref(), Lsn::ZERO..=Lsn::new(u64::MAX)).unwrap();
    let lsns: Vec<u64> = all.iter().map(|entry| entry.lsn.get()).collect();
    assert_eq!(lsns, (1..=80).collect::<Vec<_>>());
    assert_eq!(all[16].payload, payload(17));
    let some = read_entries(&sim, "/journal".as_ref(), Lsn::new(12)..=Lsn::new(30)).unwrap();
    assert_eq!(some.first().map(|entry| entry.lsn), Some(Lsn::new(12)));
    assert_eq!(some.len(), 19);
    drop(journal);

    // A torn tail is read past and left in place.
    let sim = SimFs::new(4);
    let (journal, _) = open_sim(&sim, small_segments());
    write_blocking(&journal, 1, 10);
    assert_eq!(journal.segments(), 1);
    drop(journal);
    let names = sim.peek_dir("/journal".as_ref()).unwrap();
    let name = names
        .iter()
        .find(|name| name.to_string_lossy().ends_with(".seg"))
        .unwrap();
    let segment = std::path::Path::new("/journal").join(name);
    let before = sim.peek(&segment).unwrap();
    let end = before.iter().rposition(|byte| *byte != 0).unwrap();
    sim.flip_bit(&segment, end as u64, 0).unwrap();
    let torn = read_entries(&sim, "/journal".as_ref(), Lsn::ZERO..=Lsn::new(u64::MAX)).unwrap();
    assert_eq!(torn.len(), 9, "the torn last frame is not an entry");
    let mut damaged = before.clone();
    damaged[end] ^= 1;
    assert_eq!(sim.peek(&segment).unwrap(), damaged, "nothing was changed");

    // A directory that is not there holds nothing.
    assert!(
        read_entries(
            &RealFs,
            "/no/such/journal".as_ref(),
            Lsn::ZERO..=Lsn::new(9)
        )
        .unwrap()
        .is_empty()
    );
}

#[tokio::test]
async fn stats_count_group_syncs_and_the_segments_on_disk() {
    let temp = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        segment_bytes: 1024,
        preallocate_bytes: 4096,
        ..JournalConfig::default()
    };
    let (journal, _) = Journal::open(temp.path(), config).unwrap();
    let start = journal.stats();
    assert_eq!((start.syncs, start.segments), (0, 1));
    assert_eq!(start.disk_bytes, 4096);
    for n in 0..30u64 {
        journal.write(&payload(n)).await.unwrap();
    }
    let stats = journal.stats();
    assert_eq!(stats.syncs, 30, "one sync per sequential write");
    assert_eq!(stats.segments, journal.segments());
    assert!(stats.segments > 1);
    let on_disk: u64 = crate::segment_files(temp.path())
        .iter()
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum();
    assert_eq!(stats.disk_bytes, on_disk);
}
