//! `Dlq::erase_archived`: the archive rewritten without the lines of an erased key prefix, every
//! other line kept (unreadable ones too, reported), and lines archived after it still appended.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use mainstay_clock::ManualClock;
use mainstay_dlq::{Dlq, DlqConfig, UnreadableLine};

use crate::{config, entry, evicting, open_with};

const ERASED: &str = "0123456789ab-";

fn one_per_queue() -> DlqConfig {
    DlqConfig {
        queues: BTreeMap::from([("q".to_owned(), evicting(1))]),
        ..config()
    }
}

/// The archive's lines: the key of each line that parses, the line itself otherwise.
fn archive(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("archive.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(value) => value["entry"]["key"].as_str().unwrap().to_owned(),
                Err(_) => format!("unreadable: {line}"),
            },
        )
        .collect()
}

/// Pushes `keys` to the one-entry queue `q`: each push evicts (and archives) the one before.
async fn push_all(dlq: &Dlq, keys: &[&str]) {
    for key in keys {
        dlq.push(entry("q", key)).await.unwrap();
    }
}

#[tokio::test]
async fn erasing_a_prefix_from_the_archive_keeps_every_other_line_and_the_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let dlq = open_with(dir.path(), one_per_queue(), &clock).await.dlq;
    let erased = |n: u32| format!("{ERASED}orders/{n}");
    push_all(
        &dlq,
        &[
            &erased(1),
            &erased(2),
            "fedcba987654-orders/1",
            &erased(3),
            "other/1",
        ],
    )
    .await;
    // A line cut short (a crash while appending) and a foreign one, both unreadable; the first
    // holds the prefix.
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("archive.jsonl"))
        .unwrap();
    file.write_all(
        format!("{{\"archived_at\":\"x\",\"entry\":{{\"key\":\"{ERASED}orders/4\n").as_bytes(),
    )
    .unwrap();
    file.write_all(b"not json\n").unwrap();
    drop(file);
    push_all(&dlq, &["other/2"]).await;
    assert_eq!(archive(dir.path()).len(), 7, "{:?}", archive(dir.path()));

    let rewrite = dlq.erase_archived(ERASED).await.unwrap();
    assert_eq!((rewrite.removed, rewrite.kept), (3, 4), "{rewrite:?}");
    assert_eq!(
        rewrite.unreadable,
        vec![UnreadableLine::new(5, true), UnreadableLine::new(6, false),]
    );
    let left = archive(dir.path());
    assert_eq!(left.len(), 4, "{left:?}");
    assert_eq!(left[0], "fedcba987654-orders/1");
    assert!(
        left[1].starts_with("unreadable: {\"archived_at\""),
        "{left:?}"
    );
    assert_eq!(left[2], "unreadable: not json");
    assert_eq!(left[3], "other/1");
    assert!(!dir.path().join("archive.jsonl.tmp").exists());

    // Lines archived after the rewrite go to the new file.
    push_all(&dlq, &["other/3", &erased(5), "other/4"]).await;
    let left = archive(dir.path());
    assert_eq!(&left[4..], ["other/2", "other/3", &erased(5)], "{left:?}");
    // A second rewrite removes only what was archived since.
    let rewrite = dlq.erase_archived(ERASED).await.unwrap();
    assert_eq!(rewrite.removed, 1, "{rewrite:?}");
    dlq.close().await.unwrap();
    let dlq = open_with(dir.path(), one_per_queue(), &clock).await.dlq;
    let left = archive(dir.path());
    assert_eq!(&left[4..], ["other/2", "other/3"], "{left:?}");
    assert!(
        !fs::read_to_string(dir.path().join("archive.jsonl"))
            .unwrap()
            .lines()
            .any(|line| line.contains(&format!("{ERASED}orders/5"))),
    );
    // No archive at all: nothing to do.
    let empty = tempfile::tempdir().unwrap();
    let fresh = open_with(empty.path(), one_per_queue(), &clock).await.dlq;
    let rewrite = fresh.erase_archived(ERASED).await.unwrap();
    assert_eq!((rewrite.removed, rewrite.kept), (0, 0));
    assert!(!empty.path().join("archive.jsonl").exists());
    dlq.close().await.unwrap();
    assert!(matches!(
        dlq.erase_archived(ERASED).await,
        Err(mainstay_dlq::ArchiveError::Closed)
    ));
}
