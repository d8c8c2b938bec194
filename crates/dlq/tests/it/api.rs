//! The surface the admin API uses: paging, get, delete, purge, export/import and JSON views;
//! plus the metric families.

use std::collections::HashSet;

use mainstay_clock::ManualClock;
use mainstay_dlq::{
    EntryId, FailureClass, Filter, ImportError, ImportReport, ListError, NewEntry, PinnedFile,
};

use crate::{config, entry, exposition, open_with};

#[tokio::test]
async fn listing_pages_through_every_entry_once_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    let mut pushed = Vec::new();
    for n in 0..25 {
        let queue = if n % 5 == 0 { "emails" } else { "orders" };
        pushed.push(h.dlq.push(entry(queue, &format!("k{n:02}"))).await.unwrap());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = h
            .dlq
            .list(&Filter::default(), cursor.as_deref(), 7)
            .unwrap();
        pages += 1;
        assert!(page.entries.len() <= 7);
        seen.extend(page.entries.iter().map(|e| e.id()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, pushed);

    let orders = h.dlq.list(&Filter::queue("orders"), None, 0).unwrap();
    assert_eq!(orders.entries.len(), 20);
    assert_eq!(orders.next_cursor, None);
    let page = h.dlq.list(&Filter::queue("emails"), None, 2).unwrap();
    let rest = h
        .dlq
        .list(&Filter::queue("emails"), page.next_cursor.as_deref(), 2)
        .unwrap();
    let ids: HashSet<EntryId> = page
        .entries
        .iter()
        .chain(&rest.entries)
        .map(|e| e.id())
        .collect();
    assert_eq!(ids.len(), 4);

    assert_eq!(
        h.dlq
            .list(&Filter::default(), Some("not-a-cursor"), 10)
            .unwrap_err(),
        ListError::InvalidCursor("not-a-cursor".into())
    );
}

#[tokio::test]
async fn get_delete_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    let a = h.dlq.push(entry("orders", "a")).await.unwrap();
    h.dlq.push(entry("orders", "b")).await.unwrap();
    h.dlq.push(entry("emails", "c")).await.unwrap();
    assert_eq!(h.dlq.get(a).unwrap().key(), "a");
    assert_eq!(h.dlq.peek("orders").unwrap().id(), a);
    assert!(h.dlq.delete(a).await.unwrap());
    assert!(!h.dlq.delete(a).await.unwrap());
    assert_eq!(h.dlq.get(a), None);
    assert_eq!(h.dlq.purge("orders").await.unwrap(), 1);
    assert_eq!(h.dlq.purge("orders").await.unwrap(), 0);
    let stats = h.dlq.stats();
    assert_eq!(
        stats
            .iter()
            .map(|s| (s.queue.as_str(), s.len))
            .collect::<Vec<_>>(),
        [("emails", 1), ("orders", 0)]
    );
    drop(h);
    let h = open_with(dir.path(), config(), &clock).await;
    assert_eq!(h.dlq.len(), 1);
}

#[tokio::test]
async fn export_and_import_round_trip_into_a_fresh_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    h.dlq
        .push(
            NewEntry::inline(
                "orders",
                "bin",
                vec![0u8, 255, 10, 13],
                FailureClass::Poisoned,
                "bad bytes",
            )
            .attempts(7),
        )
        .await
        .unwrap();
    h.dlq
        .push(NewEntry::pinned_file(
            "orders",
            "seg",
            PinnedFile {
                path: "/data/seg/42".into(),
                size: 10,
                crc32c: 99,
            },
            FailureClass::Transient,
            "s3 down",
        ))
        .await
        .unwrap();
    h.dlq.push(entry("emails", "not exported")).await.unwrap();
    let json = h.dlq.export("orders").unwrap();
    let document: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(document["format"], "mainstay-dlq");
    assert_eq!(document["entries"].as_array().unwrap().len(), 2);
    assert_eq!(document["entries"][0]["payload"]["type"], "inline");
    assert_eq!(document["entries"][0]["payload"]["base64"], "AP8KDQ==");
    assert_eq!(document["entries"][1]["payload"]["type"], "file");
    let file = dir.path().join("dlq.json");
    h.dlq.export_to_file("orders", &file).await.unwrap();

    let other = tempfile::tempdir().unwrap();
    let fresh = open_with(other.path(), config(), &clock).await;
    let report = fresh.dlq.import_file(&file).await.unwrap();
    assert_eq!(
        report,
        ImportReport {
            imported: 2,
            already_present: 0,
            rejected: 0
        }
    );
    let original = h
        .dlq
        .list(&Filter::queue("orders"), None, 10)
        .unwrap()
        .entries;
    let restored = fresh
        .dlq
        .list(&Filter::queue("orders"), None, 10)
        .unwrap()
        .entries;
    assert_eq!(original, restored);
    // Importing again changes nothing.
    let again = fresh.dlq.import(&json).await.unwrap();
    assert_eq!(again.already_present, 2);
    drop(fresh);
    let fresh = open_with(other.path(), config(), &clock).await;
    assert_eq!(
        fresh
            .dlq
            .list(&Filter::queue("orders"), None, 10)
            .unwrap()
            .entries,
        original
    );

    // A payload that does not match its checksum is refused before anything is added.
    let mut tampered: serde_json::Value = serde_json::from_slice(&json).unwrap();
    tampered["entries"][0]["payload"]["base64"] = "AP8KDg==".into();
    let third = tempfile::tempdir().unwrap();
    let empty = open_with(third.path(), config(), &clock).await;
    let err = empty
        .dlq
        .import(&serde_json::to_vec(&tampered).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::Entry { .. }), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(empty.dlq.is_empty());

    // A document that is not JSON: the parser's error is the source, behind a box.
    let err = empty.dlq.import(b"{ not json").await.unwrap_err();
    assert!(matches!(err, ImportError::Json(_)), "{err}");
    let source = std::error::Error::source(&err).expect("the parser's error");
    let parser = source
        .downcast_ref::<serde_json::Error>()
        .expect("a serde_json error");
    assert_eq!(parser.column(), 3, "{parser}");
    assert!(empty.dlq.is_empty());
}

#[tokio::test]
async fn views_serialise_for_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    let id = h.dlq.push(entry("orders", "a")).await.unwrap();
    let entry = h.dlq.get(id).unwrap();
    let view = serde_json::to_value(entry.view()).unwrap();
    assert_eq!(view["id"], id.to_string());
    assert_eq!(view["error_class"], "transient");
    assert_eq!(view["first_failure_at"], "2026-01-01T00:00:00.000Z");
    assert!(view["payload"]["base64"].is_string());
    let summary = serde_json::to_value(entry.summary()).unwrap();
    assert!(summary["payload"].get("base64").is_none());
    assert_eq!(summary["payload"]["size"], 12);
}

#[tokio::test]
async fn every_metric_family_is_exposed_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::default();
    let h = open_with(dir.path(), config(), &clock).await;
    h.dlq.push(entry("orders", "a")).await.unwrap();
    clock.advance(std::time::Duration::from_secs(90));
    let text = exposition(&h.registry);
    // Families with series are declared exactly once (empty families print nothing).
    for family in [
        "dlq_size",
        "dlq_pushed",
        "dlq_journal_bytes",
        "dlq_journal_fsyncs",
        "dlq_journal_truncations",
        "dlq_journal_corrupt_records",
        "dlq_oldest_entry_age_seconds",
    ] {
        let declared = text
            .lines()
            .filter(|l| l.starts_with(&format!("# TYPE {family} ")))
            .count();
        assert_eq!(declared, 1, "{family} in\n{text}");
    }
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let all = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), all, "a family is declared twice:\n{text}");
    assert!(
        text.contains("dlq_pushed_total{queue=\"orders\",error_type=\"transient\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dlq_oldest_entry_age_seconds{queue=\"orders\"} 90.0"),
        "{text}"
    );
    assert!(text.contains("dlq_size{queue=\"orders\"} 1"), "{text}");
}
