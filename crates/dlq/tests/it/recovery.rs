//! Recovery rules of decision 0081: damage in the middle of the journal is refused under
//! `journal_recovery = "refuse"` and recovered around by default, and a directory written by the
//! pre-journal format (the fixture in `tests/fixtures/legacy-v1`) is migrated at open.

use std::fs;
use std::path::Path;

use mainstay_clock::ManualClock;
use mainstay_dlq::{DlqConfig, FailureClass, JournalRecovery, OpenError, Payload};

use crate::{config, entry, frame_offsets, journal, keys, metric, open_with};

#[tokio::test]
async fn damage_in_the_middle_is_refused_on_request_and_skipped_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    for key in ["a", "b", "c", "d", "e"] {
        h.dlq.push(entry("orders", key)).await.unwrap();
    }
    drop(h);
    let path = journal(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let (offsets, _) = frame_offsets(&bytes);
    // The length field of the third frame: the old reader took this for a torn tail and
    // dropped d and e with it.
    bytes[offsets[2] + 1] ^= 0x40;
    fs::write(&path, &bytes).unwrap();

    let refuse = DlqConfig {
        journal_recovery: JournalRecovery::Refuse,
        ..config()
    };
    let refused = mainstay_dlq::Dlq::open(dir.path(), refuse)
        .await
        .unwrap_err();
    match &refused {
        OpenError::CorruptJournal {
            file,
            offset,
            valid_frames_after,
        } => {
            assert_eq!(file, &path);
            assert_eq!(*offset, offsets[2] as u64);
            assert_eq!(*valid_frames_after, 2);
        }
        other => panic!("expected CorruptJournal, got {other:?}"),
    }
    assert!(
        refused.to_string().contains("dlq.journal_recovery"),
        "{refused}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "refusing changed the file");

    let h = open_with(dir.path(), config(), &clock).await;
    let report = h.dlq.recovery().clone();
    assert_eq!(keys(&h.dlq), ["a", "b", "d", "e"]);
    assert_eq!(report.corrupt_records, 1);
    assert!(!report.torn_tail);
    let kept = report.preserved.expect("the damaged segment is kept");
    assert!(
        kept.starts_with(dir.path().join("log").join("corrupt")),
        "{kept:?}"
    );
    assert_eq!(
        fs::read(&kept).unwrap(),
        bytes,
        "the copy is the segment as found"
    );
    assert_eq!(
        metric(&h.registry, "dlq_journal_corrupt_records_total"),
        1.0
    );
    drop(h);
    // The segment was rewritten without the damage: even `refuse` opens it now.
    let refuse = DlqConfig {
        journal_recovery: JournalRecovery::Refuse,
        ..config()
    };
    let dlq = mainstay_dlq::Dlq::open(dir.path(), refuse).await.unwrap();
    assert_eq!(keys(&dlq), ["a", "b", "d", "e"]);
}

fn copy_fixture(to: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-v1");
    for name in ["journal", "snapshot"] {
        fs::copy(fixture.join(name), to.join(name)).unwrap();
    }
}

fn check_fixture_state(dlq: &mainstay_dlq::Dlq) {
    let page = dlq.list(&Default::default(), None, 1000).unwrap();
    let by_key: Vec<(&str, &str)> = page.entries.iter().map(|e| (e.queue(), e.key())).collect();
    assert_eq!(by_key, [("tiering", "c"), ("orders", "d"), ("audit", "e")]);
    let c = &page.entries[0];
    assert!(
        matches!(c.payload(), Payload::File(file) if file.path == Path::new("/data/segments/0001.seg") && file.size == 4096 && file.crc32c == 0xdead_beef)
    );
    let d = &page.entries[1];
    assert!(
        matches!(d.payload(), Payload::Inline(inline) if inline.data().as_ref() == b"payload of d" && inline.verify())
    );
    let e = &page.entries[2];
    assert_eq!((e.attempts(), e.redrive_count()), (2, 1));
    assert_eq!(e.error_class(), FailureClass::Permanent);
}

#[tokio::test]
async fn a_directory_of_the_pre_journal_format_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    assert!(h.dlq.recovery().migrated);
    check_fixture_state(&h.dlq);
    assert!(
        !dir.path().join("journal").exists(),
        "the old journal is gone"
    );
    assert!(
        fs::read(dir.path().join("snapshot"))
            .unwrap()
            .starts_with(b"MSDLQSN2")
    );
    h.dlq.push(entry("orders", "f")).await.unwrap();
    drop(h);

    let h = open_with(dir.path(), config(), &clock).await;
    assert!(!h.dlq.recovery().migrated);
    assert_eq!(keys(&h.dlq), ["c", "d", "e", "f"]);
}

#[tokio::test]
async fn a_migration_cut_short_after_its_snapshot_is_finished_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let clock = ManualClock::default();
    drop(open_with(dir.path(), config(), &clock).await);
    // A crash between the new snapshot and the removal of the old journal leaves both.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-v1");
    fs::copy(fixture.join("journal"), dir.path().join("journal")).unwrap();

    let h = open_with(dir.path(), config(), &clock).await;
    assert!(!h.dlq.recovery().migrated);
    check_fixture_state(&h.dlq);
    assert!(
        !dir.path().join("journal").exists(),
        "the covered old journal is removed"
    );
}
