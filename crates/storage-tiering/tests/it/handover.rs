//! Handing a stopped store's stranded records to the current writer of its prefix.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mainstay_storage_tiering::{
    HandoverError, HandoverSource, MaintenanceError, StrandedCollection, TieringPolicy,
};
use object_store::ObjectStore;
use object_store::memory::InMemory;

use crate::common::{config, open_on};

fn bytes(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

fn collection<'a>(source: &'a HandoverSource, name: &str) -> &'a StrandedCollection {
    source
        .collections()
        .iter()
        .find(|collection| collection.name == name)
        .expect("the collection is in the handed-over directory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_writers_stranded_records_go_to_the_current_writer_without_overwriting_it() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let first = open_on(config(&dir.path().join("a")), inner.clone(), "p").await;
    first
        .create_collection("c", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    first
        .create_collection("m", TieringPolicy::Memory)
        .await
        .unwrap();
    first.put("c", "old", bytes("1")).await.unwrap();
    first.put("c", "both", bytes("1")).await.unwrap();
    first.flush().await.unwrap();
    first.wait_uploaded(Duration::from_secs(10)).await.unwrap();
    // Acknowledged, never committed: an update, a new record, a delete, a memory collection.
    first.put("c", "both", bytes("2")).await.unwrap();
    first.put("c", "new", bytes("2")).await.unwrap();
    first.delete("c", "old").await.unwrap();
    first.put("m", "x", bytes("1")).await.unwrap();

    let second = open_on(config(&dir.path().join("b")), inner.clone(), "p").await;
    let takeover = second.last_lsn();
    second.put("c", "new", bytes("B")).await.unwrap();
    first.flush().await.unwrap();
    assert!(matches!(
        first.wait_uploaded(Duration::from_secs(10)).await,
        Err(MaintenanceError::Fenced(_))
    ));

    let data_a = dir.path().join("a").join("data");
    assert!(
        matches!(HandoverSource::open(&data_a), Err(HandoverError::Locked(_))),
        "a running store's directory is refused"
    );
    let _ = first.close(Duration::from_secs(1)).await;
    drop(first);

    let source = HandoverSource::open(&data_a).unwrap();
    let stranded = collection(&source, "c");
    let newest: Vec<(&str, Option<&[u8]>)> = stranded
        .records
        .iter()
        .map(|record| (record.id.as_str(), record.value.as_deref()))
        .collect();
    assert!(
        newest.contains(&("both", Some(b"2".as_slice()))),
        "{newest:?}"
    );
    assert!(
        newest.contains(&("new", Some(b"2".as_slice()))),
        "{newest:?}"
    );
    assert!(newest.contains(&("old", None)), "{newest:?}");
    assert!(
        stranded
            .records
            .windows(2)
            .all(|pair| pair[0].lsn < pair[1].lsn),
        "one version per id, in LSN order"
    );

    let report = second.accept_handover(stranded, takeover).await.unwrap();
    assert!(!report.created);
    assert_eq!(
        report.applied, 2,
        "both=2 and the delete of old: {report:?}"
    );
    assert_eq!(report.skipped, vec!["new".to_owned()], "{report:?}");
    let report = second
        .accept_handover(collection(&source, "m"), takeover)
        .await
        .unwrap();
    assert!(report.created, "{report:?}");
    assert_eq!(report.applied, 1);

    assert_eq!(second.get("c", "both").await.unwrap(), Some(bytes("2")));
    assert_eq!(second.get("c", "new").await.unwrap(), Some(bytes("B")));
    assert_eq!(second.get("c", "old").await.unwrap(), None);
    assert_eq!(second.get("m", "x").await.unwrap(), Some(bytes("1")));

    // Accepting the same records again changes nothing; after `finish` nothing is left.
    let again = second
        .accept_handover(collection(&source, "c"), takeover)
        .await
        .unwrap();
    assert_eq!(
        (again.applied, again.skipped.len()),
        (0, 1),
        "what was handed over is not a conflict, new=B still is: {again:?}"
    );
    let moved = source.finish().unwrap();
    assert!(moved.join("wal").is_dir());
    assert!(!data_a.join("wal").exists());
    let emptied = HandoverSource::open(&data_a).unwrap();
    assert!(
        emptied
            .collections()
            .iter()
            .all(|collection| collection.records.is_empty())
    );
    second.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_only_in_the_wal_are_read_and_a_torn_tail_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.object_store_url = None;
    let data = cfg.data_dir.clone();
    {
        let store = mainstay_storage_tiering::Store::open(cfg).await.unwrap();
        store
            .create_collection("m", TieringPolicy::Memory)
            .await
            .unwrap();
        store.put("m", "a", bytes("1")).await.unwrap();
        store.put("m", "a", bytes("2")).await.unwrap();
        store
            .put_batch("m", vec![("b".into(), bytes("3"))])
            .await
            .unwrap();
        // A crash: no close, so the records are in the WAL alone.
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let wal_file = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .max()
        .unwrap();
    let before = std::fs::read(&wal_file).unwrap();
    let end = before.iter().rposition(|byte| *byte != 0).unwrap() + 1;
    // A frame header promising more than is there: a write torn by the crash.
    let mut torn = before.clone();
    torn.splice(end..end + 8, [200, 0, 0, 0, 1, 2, 3, 4]);
    std::fs::write(&wal_file, &torn).unwrap();

    let source = HandoverSource::open(&data).unwrap();
    let records: Vec<(&str, &[u8])> = collection(&source, "m")
        .records
        .iter()
        .map(|record| {
            (
                record.id.as_str(),
                record.value.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        records,
        vec![("a", b"2".as_slice()), ("b", b"3".as_slice())]
    );
    assert_eq!(
        std::fs::read(&wal_file).unwrap(),
        torn,
        "the handover reads, it never repairs"
    );
    drop(source);

    assert!(matches!(
        HandoverSource::open(dir.path()),
        Err(HandoverError::NotADataDirectory(_))
    ));
}
