//! The public API on the real file system: the lock, rotation and trimming, LSNs across restarts,
//! input errors.

use mainstay_journal::{
    DirLock, Journal, JournalConfig, LOCK_FILE, LockError, Lsn, MAX_PAYLOAD, OpenError,
    ReplayOutcome, WriteError, write_atomic,
};

use crate::{
    payload, payloads, segment_files, small_segments, write_blocking, write_until_rotation,
};

#[test]
fn a_second_opener_is_refused_until_the_first_is_dropped() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("journal");
    let (journal, _) = Journal::open(&dir, JournalConfig::default()).unwrap();
    assert!(dir.join(LOCK_FILE).exists());
    match Journal::open(&dir, JournalConfig::default()) {
        Err(OpenError::Locked { dir: locked }) => assert_eq!(locked, dir),
        other => panic!("expected the lock to be held, got {other:?}"),
    }
    assert!(matches!(
        DirLock::acquire(&dir),
        Err(LockError::Held { .. })
    ));
    drop(journal);
    let (_journal, replay) = Journal::open(&dir, JournalConfig::default()).unwrap();
    assert_eq!(replay.report.outcome(), ReplayOutcome::Clean);
}

#[test]
fn entries_survive_reopening_across_rotated_segments() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("journal");
    let (journal, replay) = Journal::open(&dir, small_segments()).unwrap();
    assert!(replay.entries.is_empty());
    let lsns = write_blocking(&journal, 1, 150);
    assert_eq!(lsns.first(), Some(&Lsn::new(1)));
    assert_eq!(journal.durable_lsn(), Lsn::new(150));
    assert!(journal.segments() > 3, "1 KiB segments rotate");
    assert_eq!(segment_files(&dir).len(), journal.segments());
    drop(journal);

    let (journal, replay) = Journal::open(&dir, small_segments()).unwrap();
    assert_eq!(replay.report.outcome(), ReplayOutcome::Clean);
    assert_eq!(
        payloads(&replay),
        (1..=150).map(payload).collect::<Vec<_>>()
    );
    assert_eq!(journal.append(b"next").unwrap(), Lsn::new(151));
}

#[test]
fn trimming_deletes_covered_segments_and_lsns_keep_growing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("journal");
    let (journal, _) = Journal::open(&dir, small_segments()).unwrap();
    write_blocking(&journal, 1, 50);
    write_until_rotation(&journal, 51);
    let last = journal.durable_lsn();
    let before = journal.segments();
    assert_eq!(journal.trim(Lsn::new(0)).unwrap(), 0);
    assert_eq!(
        journal.trim(last).unwrap(),
        before - 1,
        "every closed segment is covered"
    );
    assert_eq!(journal.segments(), 1, "the active segment stays");
    assert_eq!(segment_files(&dir).len(), 1);
    drop(journal);

    // Every entry was trimmed; the active segment's header keeps the LSN floor.
    let (journal, replay) = Journal::open(&dir, small_segments()).unwrap();
    assert!(replay.entries.is_empty());
    assert_eq!(
        journal.append(b"after the trim").unwrap(),
        Lsn::new(last.get() + 1)
    );
}

#[test]
fn rolling_lets_a_trim_delete_every_entry_written_so_far() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("journal");
    let (journal, _) = Journal::open(&dir, JournalConfig::default()).unwrap();
    write_blocking(&journal, 1, 20);
    let last = journal.durable_lsn();
    // Without a roll the active segment holds every entry, and a trim keeps it.
    assert_eq!(journal.trim(last).unwrap(), 0);
    assert!(journal.roll().unwrap(), "a segment with entries is closed");
    assert!(!journal.roll().unwrap(), "an empty active segment is kept");
    assert_eq!(journal.trim(last).unwrap(), 1);
    assert_eq!(segment_files(&dir).len(), 1);
    let marker = payload(7);
    for file in segment_files(&dir) {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !bytes
                .windows(marker.len())
                .any(|window| window == marker.as_slice()),
            "no entry written before the roll is left on disk"
        );
    }
    // Writing goes on in the new segment, with the LSNs going on.
    assert_eq!(write_blocking(&journal, 21, 1), [Lsn::new(21)]);
    drop(journal);
    let (_, replay) = Journal::open(&dir, JournalConfig::default()).unwrap();
    assert_eq!(payloads(&replay), vec![payload(21)]);
}

#[test]
fn a_partial_trim_keeps_segments_holding_uncovered_entries() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("journal");
    let (journal, _) = Journal::open(&dir, small_segments()).unwrap();
    write_blocking(&journal, 1, 50);
    journal.trim(Lsn::new(25)).unwrap();
    drop(journal);
    let (_, replay) = Journal::open(&dir, small_segments()).unwrap();
    let first = replay.entries.first().unwrap().lsn;
    assert!(first <= Lsn::new(26), "entry 26 is still there");
    assert_eq!(replay.entries.last().unwrap().lsn, Lsn::new(50));
}

#[test]
fn invalid_input_gets_a_typed_error() {
    let temp = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(temp.path(), JournalConfig::default()).unwrap();
    let huge = vec![0u8; MAX_PAYLOAD + 1];
    assert_eq!(
        journal.append(&huge),
        Err(WriteError::TooLarge {
            size: MAX_PAYLOAD + 1,
            limit: MAX_PAYLOAD
        })
    );
    assert_eq!(
        journal.commit_blocking(Lsn::new(7)),
        Err(WriteError::NotAppended { lsn: Lsn::new(7) })
    );
    assert_eq!(journal.commit_blocking(Lsn::ZERO), Ok(()));
    let bad = JournalConfig {
        segment_bytes: 10,
        ..JournalConfig::default()
    };
    match Journal::open(temp.path().join("other"), bad) {
        Err(OpenError::Config(error)) => assert_eq!(error.key, "segment_bytes"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn write_atomic_replaces_a_file_on_the_real_file_system() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("snapshot");
    write_atomic(&mainstay_journal::fs::RealFs, &path, b"one").unwrap();
    write_atomic(&mainstay_journal::fs::RealFs, &path, b"two").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    assert!(!temp.path().join("snapshot.tmp").exists());
}

#[tokio::test]
async fn async_writes_are_durable_when_they_return() {
    let temp = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(temp.path(), JournalConfig::default()).unwrap();
    let lsn = journal.write(b"one").await.unwrap();
    assert_eq!(journal.durable_lsn(), lsn);
    assert_eq!(journal.last_lsn(), lsn);
    assert_eq!(journal.failure(), None);
    assert_eq!(journal.dir(), temp.path());
}
