//! Torn tail versus corruption, on the real file system: a damaged frame with nothing valid after
//! it is truncated quietly; one followed by valid frames is refused (or recovered around), also
//! when the damage is in a length field.

use std::ops::Range;
use std::path::{Path, PathBuf};

use mainstay_journal::{
    CORRUPT_DIR, Journal, JournalConfig, Lsn, OpenError, RecoveryMode, ReplayOutcome,
};

use crate::{payload, segment_files, small_segments, write_blocking, write_until_rotation};

/// The byte ranges of the frames of a segment, read with the documented format.
fn frame_spans(data: &[u8]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut offset = 24;
    while offset + 16 <= data.len() {
        let len = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        let end = offset + 8 + len;
        if len == 0 || end > data.len() {
            break;
        }
        spans.push(offset..end);
        offset = end;
    }
    spans
}

/// A journal in a temporary directory with entries 1..=`count` committed and closed.
fn journal_with(count: u64, config: &JournalConfig) -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("journal");
    let (journal, _) = Journal::open(&dir, config.clone()).unwrap();
    write_blocking(&journal, 1, count);
    (temp, dir)
}

fn skip_corrupt() -> JournalConfig {
    JournalConfig {
        recovery: RecoveryMode::SkipCorrupt,
        ..JournalConfig::default()
    }
}

fn lsns(dir: &Path, config: JournalConfig) -> Vec<u64> {
    let (_, replay) = Journal::open(dir, config).unwrap();
    replay.entries.iter().map(|entry| entry.lsn.get()).collect()
}

#[test]
fn a_flipped_bit_in_the_tenth_of_twenty_frames_is_corruption_with_ten_valid_frames_after() {
    let (_temp, dir) = journal_with(20, &JournalConfig::default());
    let segment = segment_files(&dir).remove(0);
    let mut data = std::fs::read(&segment).unwrap();
    let tenth = frame_spans(&data)[9].clone();
    data[tenth.start + 20] ^= 0x04;
    std::fs::write(&segment, &data).unwrap();

    let refused = Journal::open(&dir, JournalConfig::default()).unwrap_err();
    let OpenError::Corrupt {
        file,
        offset,
        valid_frames_after,
    } = &refused
    else {
        panic!("expected corruption, got {refused}");
    };
    assert_eq!(
        (file, *offset, *valid_frames_after),
        (&segment, tenth.start as u64, 10)
    );
    let message = refused.to_string();
    assert!(
        message.contains(&segment.display().to_string()) && message.contains("skip_corrupt"),
        "the error names the file and what to do: {message}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        data,
        "a refused open changes nothing"
    );

    let (journal, replay) = Journal::open(&dir, skip_corrupt()).unwrap();
    let expected: Vec<u64> = (1..=20).filter(|lsn| *lsn != 10).collect();
    let got: Vec<u64> = replay.entries.iter().map(|entry| entry.lsn.get()).collect();
    assert_eq!(
        got, expected,
        "every valid frame before and after the damage"
    );
    assert_eq!(replay.entries[9].payload, payload(11));
    let ReplayOutcome::CorruptionSkipped([corruption]) = replay.report.outcome() else {
        panic!("expected one corruption, got {:?}", replay.report);
    };
    assert_eq!(corruption.file, segment);
    assert_eq!(corruption.offset, tenth.start as u64);
    assert_eq!(corruption.bytes, tenth.len() as u64);
    assert_eq!(corruption.valid_frames_after, 10);
    assert_eq!(corruption.lost_lsns, Some(Lsn::new(10)..=Lsn::new(10)));
    assert_eq!(
        (corruption.lsn_before, corruption.lsn_after),
        (Lsn::new(9), Some(Lsn::new(11)))
    );
    assert_eq!(
        corruption.moved_to.parent(),
        Some(dir.join(CORRUPT_DIR).as_path())
    );
    assert_eq!(
        std::fs::read(&corruption.moved_to).unwrap(),
        data,
        "the damaged segment is kept as it was"
    );
    journal
        .commit_blocking(journal.append(b"after").unwrap())
        .unwrap();
    drop(journal);

    let (_, replay) = Journal::open(&dir, JournalConfig::default()).unwrap();
    assert_eq!(replay.report.outcome(), ReplayOutcome::Clean);
    assert_eq!(replay.entries.len(), 20);
    assert_eq!(replay.entries[19].payload, b"after");
}

#[test]
fn a_last_frame_cut_midway_is_a_torn_tail() {
    let (_temp, dir) = journal_with(20, &JournalConfig::default());
    let segment = segment_files(&dir).remove(0);
    let data = std::fs::read(&segment).unwrap();
    let last = frame_spans(&data)[19].clone();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(last.start as u64 + 20)
        .unwrap();

    let (journal, replay) = Journal::open(&dir, JournalConfig::default()).unwrap();
    let ReplayOutcome::TornTailTruncated(torn) = replay.report.outcome() else {
        panic!("expected a torn tail, got {:?}", replay.report);
    };
    assert_eq!(
        (&torn.file, torn.offset, torn.bytes),
        (&segment, last.start as u64, 20)
    );
    assert_eq!(replay.entries.len(), 19);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        last.start as u64,
        "the torn tail is truncated"
    );
    assert!(
        !dir.join(CORRUPT_DIR).exists(),
        "a torn tail is not corruption"
    );
    let lsn = journal.append(b"new").unwrap();
    journal.commit_blocking(lsn).unwrap();
    drop(journal);
    assert_eq!(
        lsns(&dir, JournalConfig::default()),
        (1..=20).collect::<Vec<_>>()
    );
}

#[test]
fn a_last_frame_half_written_over_zero_filled_space_is_a_torn_tail() {
    let (_temp, dir) = journal_with(20, &JournalConfig::default());
    let segment = segment_files(&dir).remove(0);
    let mut data = std::fs::read(&segment).unwrap();
    let last = frame_spans(&data)[19].clone();
    let half = last.start + last.len() / 2;
    data[half..last.end].fill(0);
    std::fs::write(&segment, &data).unwrap();

    let (_, replay) = Journal::open(&dir, JournalConfig::default()).unwrap();
    let ReplayOutcome::TornTailTruncated(torn) = replay.report.outcome() else {
        panic!("expected a torn tail, got {:?}", replay.report);
    };
    assert_eq!(torn.offset, last.start as u64);
    assert_eq!(replay.entries.len(), 19);
}

#[test]
fn a_damaged_length_followed_by_valid_frames_is_corruption_not_a_torn_tail() {
    for (name, length) in [
        ("past the end of the file", 0x7fff_fff0_u32),
        ("zero", 0),
        ("one byte short", 0),
    ] {
        let (_temp, dir) = journal_with(20, &JournalConfig::default());
        let segment = segment_files(&dir).remove(0);
        let mut data = std::fs::read(&segment).unwrap();
        let tenth = frame_spans(&data)[9].clone();
        let length = if name == "one byte short" {
            tenth.len() as u32 - 9
        } else {
            length
        };
        data[tenth.start..tenth.start + 4].copy_from_slice(&length.to_le_bytes());
        std::fs::write(&segment, &data).unwrap();
        match Journal::open(&dir, JournalConfig::default()) {
            Err(OpenError::Corrupt {
                offset,
                valid_frames_after,
                ..
            }) => assert_eq!(
                (offset, valid_frames_after),
                (tenth.start as u64, 10),
                "length {name}"
            ),
            other => panic!("length {name}: expected corruption, got {other:?}"),
        }
    }
}

#[test]
fn damage_at_the_end_of_a_closed_segment_is_corruption_when_later_segments_hold_frames() {
    let (_temp, dir) = journal_with(60, &small_segments());
    let segments = segment_files(&dir);
    assert!(segments.len() >= 3, "small segments rotate");
    let first = &segments[0];
    let mut data = std::fs::read(first).unwrap();
    let spans = frame_spans(&data);
    let last = spans.last().unwrap().clone();
    data[last.end - 1] ^= 0x80;
    std::fs::write(first, &data).unwrap();
    let in_first = spans.len() as u64;

    match Journal::open(&dir, small_segments()) {
        Err(OpenError::Corrupt {
            file,
            offset,
            valid_frames_after,
        }) => {
            assert_eq!(file, *first);
            assert_eq!(offset, last.start as u64);
            assert_eq!(valid_frames_after, 60 - in_first);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let config = JournalConfig {
        recovery: RecoveryMode::SkipCorrupt,
        ..small_segments()
    };
    let expected: Vec<u64> = (1..=60).filter(|lsn| *lsn != in_first).collect();
    assert_eq!(lsns(&dir, config), expected);
    assert_eq!(lsns(&dir, small_segments()), expected, "repaired for good");
}

#[test]
fn a_damaged_segment_header_is_corruption_if_frames_follow_and_torn_if_none_do() {
    let (_temp, dir) = journal_with(60, &small_segments());
    {
        let (journal, _) = Journal::open(&dir, small_segments()).unwrap();
        let next = write_until_rotation(&journal, 61);
        assert_eq!(journal.durable_lsn(), Lsn::new(next - 1));
    }
    let total = {
        let (_, replay) = Journal::open(&dir, small_segments()).unwrap();
        replay.entries.len()
    };
    let segments = segment_files(&dir);
    let mut data = std::fs::read(&segments[1]).unwrap();
    data[2] ^= 0x01;
    std::fs::write(&segments[1], &data).unwrap();
    match Journal::open(&dir, small_segments()) {
        Err(OpenError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (segments[1].clone(), 0));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let config = JournalConfig {
        recovery: RecoveryMode::SkipCorrupt,
        ..small_segments()
    };
    let (_, replay) = Journal::open(&dir, config).unwrap();
    assert_eq!(
        replay.entries.len(),
        total,
        "a header holds no entry: nothing is lost"
    );
    assert_eq!(replay.report.corruption[0].lost_lsns, None);

    // The active segment was created with its header and nothing else: damage there has no
    // valid frame after it.
    let segments = segment_files(&dir);
    let active = segments.last().unwrap();
    let mut data = std::fs::read(active).unwrap();
    assert!(frame_spans(&data).is_empty());
    data[5] ^= 0x10;
    std::fs::write(active, &data).unwrap();
    let (journal, replay) = Journal::open(&dir, small_segments()).unwrap();
    assert!(matches!(
        replay.report.outcome(),
        ReplayOutcome::TornTailTruncated(torn) if torn.offset == 0
    ));
    assert_eq!(replay.entries.len(), total);
    let lsn = journal.append(b"next").unwrap();
    assert_eq!(
        lsn,
        Lsn::new(total as u64 + 1),
        "LSNs go on after a torn header"
    );
}

#[test]
fn stray_bytes_in_the_zero_filled_space_are_a_torn_tail() {
    let (_temp, dir) = journal_with(5, &JournalConfig::default());
    let segment = segment_files(&dir).remove(0);
    let mut data = std::fs::read(&segment).unwrap();
    let end = frame_spans(&data)[4].end;
    data[end + 1000] = 0xff;
    std::fs::write(&segment, &data).unwrap();
    let (_, replay) = Journal::open(&dir, JournalConfig::default()).unwrap();
    assert!(matches!(
        replay.report.outcome(),
        ReplayOutcome::TornTailTruncated(torn) if torn.offset == end as u64 && torn.bytes == 1001
    ));
    assert_eq!(replay.entries.len(), 5);
}
