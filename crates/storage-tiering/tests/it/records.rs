//! The records API over the memory tier: input bounds, names that cannot escape into paths,
//! reads, listings with prefixes and cursors across memtable and segments, and collections.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use mainstay_storage_tiering::{
    CollectionError, ListQuery, ReadError, Store, TieringPolicy, WriteError,
};

use crate::common::{config, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_ids_never_escape_into_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    for bad in ["..", "../x", "a/b", "a%2Fb", "%2e%2e", "A", "", "-x"] {
        assert!(
            matches!(
                store.create_collection(bad, TieringPolicy::Memory).await,
                Err(CollectionError::InvalidName(_))
            ),
            "{bad}"
        );
        assert!(
            matches!(
                store.put(bad, "id", Bytes::new()).await,
                Err(WriteError::InvalidCollection(_))
            ),
            "{bad}"
        );
    }
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    for bad in ["..", ".", "a/b", "a%2Fb", "a\\b", "", "é", &"x".repeat(513)] {
        assert!(
            matches!(
                store.put("c", bad, Bytes::new()).await,
                Err(WriteError::InvalidId)
            ),
            "{bad:?}"
        );
        assert!(
            matches!(store.get("c", bad).await, Err(ReadError::InvalidId)),
            "{bad:?}"
        );
    }
    store
        .put("c", &"x".repeat(512), Bytes::from_static(b"ok"))
        .await
        .unwrap();
    store.flush().await.unwrap();
    // Nothing but generated names under the data directory.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains("xxxx") && !name.contains(".."),
                "unexpected file name {name}"
            );
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_bounds_name_their_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.limits.max_value_bytes = 100;
    cfg.limits.max_batch_records = 3;
    cfg.limits.max_batch_bytes = 150;
    cfg.limits.max_page_size = 10;
    cfg.limits.default_page_size = 5;
    let store = Store::open(cfg).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    assert!(matches!(
        store.put("c", "k", Bytes::from(vec![0; 101])).await,
        Err(WriteError::ValueTooLarge {
            size: 101,
            limit: 100
        })
    ));
    let four: Vec<_> = (0..4).map(|i| (format!("k{i}"), Bytes::new())).collect();
    assert!(matches!(
        store.put_batch("c", four).await,
        Err(WriteError::TooManyRecords {
            records: 4,
            limit: 3
        })
    ));
    let big: Vec<_> = (0..2)
        .map(|i| (format!("k{i}"), Bytes::from(vec![0; 80])))
        .collect();
    assert!(matches!(
        store.put_batch("c", big).await,
        Err(WriteError::BatchTooLarge {
            bytes: 160,
            limit: 150
        })
    ));
    assert!(matches!(
        store.put_batch("c", Vec::new()).await,
        Err(WriteError::EmptyBatch)
    ));
    let query = ListQuery {
        limit: Some(11),
        ..ListQuery::default()
    };
    assert!(matches!(
        store.list("c", &query).await,
        Err(ReadError::PageTooLarge {
            asked: 11,
            limit: 10
        })
    ));
    let query = ListQuery {
        cursor: Some("not-a-cursor".into()),
        ..ListQuery::default()
    };
    assert!(matches!(
        store.list("c", &query).await,
        Err(ReadError::InvalidCursor)
    ));
    assert!(matches!(
        store.put("nope", "k", Bytes::new()).await,
        Err(WriteError::UnknownCollection(_))
    ));
    assert!(matches!(
        store.get("nope", "k").await,
        Err(ReadError::UnknownCollection(_))
    ));
    assert!(matches!(
        store.create_collection("s", TieringPolicy::MemoryS3).await,
        Err(CollectionError::NoObjectStore(_))
    ));
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_page_in_id_order_across_memtable_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..600 {
        let prefix = if i % 3 == 0 { "a" } else { "b" };
        let id = format!("{prefix}-{:04}", (i * 7919) % 600);
        store.put("c", &id, value(i)).await.unwrap();
        expected.insert(id, value(i));
        if i % 150 == 0 {
            store.flush().await.unwrap();
        }
    }
    // Overwrites and deletes spread over segments and the memtable.
    for (n, id) in expected
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
        .enumerate()
    {
        if n % 10 == 0 {
            store.delete("c", &id).await.unwrap();
            expected.remove(&id);
        } else if n % 10 == 1 {
            store
                .put("c", &id, Bytes::from_static(b"new"))
                .await
                .unwrap();
            expected.insert(id, Bytes::from_static(b"new"));
        }
    }
    assert!(store.collections()[0].segments >= 3);
    for (prefix, limit) in [
        (None, 7),
        (Some("a-"), 13),
        (Some("b-01"), 1),
        (Some("zzz"), 5),
    ] {
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let query = ListQuery {
                prefix: prefix.map(str::to_owned),
                cursor: cursor.clone(),
                limit: Some(limit),
            };
            let page = store.list("c", &query).await.unwrap();
            assert!(!page.degraded);
            assert!(page.records.len() <= limit);
            seen.extend(page.records.into_iter().map(|r| (r.id, r.value)));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let want: Vec<_> = expected
            .iter()
            .filter(|(k, _)| k.starts_with(prefix.unwrap_or("")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(seen, want, "prefix {prefix:?}");
    }
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_collection_does_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    for i in 0..200 {
        store.put("c", &format!("k{i:03}"), value(i)).await.unwrap();
    }
    assert!(store.drop_collection("c").await.unwrap());
    assert!(!store.drop_collection("c").await.unwrap());
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    assert_eq!(store.get("c", "k001").await.unwrap(), None);
    store.close(Duration::from_secs(1)).await.unwrap();
    // Old WAL records of the first incarnation are not replayed into the new one.
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.get("c", "k001").await.unwrap(), None);
    assert!(
        store
            .list("c", &ListQuery::default())
            .await
            .unwrap()
            .records
            .is_empty()
    );
    store.close(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_segments_and_drops_overwritten_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store
        .create_collection("c", TieringPolicy::Memory)
        .await
        .unwrap();
    for round in 0..4 {
        for i in 0..50 {
            store
                .put(
                    "c",
                    &format!("k{i:02}"),
                    Bytes::from(format!("{round}-{i}")),
                )
                .await
                .unwrap();
        }
        store.delete("c", "k00").await.unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.collections()[0].segments, 4);
    assert_eq!(store.compact("c").await.unwrap(), 4);
    assert_eq!(store.collections()[0].segments, 1);
    assert_eq!(store.get("c", "k00").await.unwrap(), None);
    assert_eq!(
        store.get("c", "k07").await.unwrap(),
        Some(Bytes::from("3-7"))
    );
    store.close(Duration::from_secs(1)).await.unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.collections()[0].segments, 1);
    assert_eq!(store.get("c", "k00").await.unwrap(), None);
    assert_eq!(
        store
            .list("c", &ListQuery::default())
            .await
            .unwrap()
            .records
            .len(),
        49
    );
    store.close(Duration::from_secs(1)).await.unwrap();
}
