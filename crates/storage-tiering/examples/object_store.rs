//! A store on an object store: the objects live in a local directory (a `file://` URL), so the
//! example needs no server. Records written to a `memory_s3` collection are frozen into a
//! segment and uploaded; the uploaded objects (segments and manifests) are listed; then a new
//! store, on an empty data directory as after the loss of a disk, opens from the same object
//! store and reads the records back.
//!
//! Run with `cargo run -p mainstay-storage-tiering --example object_store` (everything lives in a
//! temporary directory that is deleted at the end).

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use mainstay_storage_tiering::{ListQuery, Store, StoreConfig, TieringPolicy, open_object_store};

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let objects_dir = dir.path().join("objects");
    std::fs::create_dir(&objects_dir)?;
    let url = format!("file://{}", objects_dir.display());
    let config = |data_dir: &str| StoreConfig {
        data_dir: dir.path().join(data_dir),
        object_store_url: Some(url.clone()),
        ..StoreConfig::default()
    };

    // The first store: each put is durable in its WAL once it returns.
    let store = Store::open(config("data-1")).await?;
    store
        .create_collection("orders", TieringPolicy::MemoryS3)
        .await?;
    let orders = [
        ("o-1", "{\"total\":42}"),
        ("o-2", "{\"total\":7}"),
        ("o-3", "{\"total\":19}"),
    ];
    for (id, value) in orders {
        store.put("orders", id, Bytes::from(value)).await?;
    }
    // Freeze the memtable into a segment, queued for upload, and wait until it is committed.
    store.flush().await?;
    store.wait_uploaded(TIMEOUT).await?;
    store.close(TIMEOUT).await?;

    // What the object store holds now: the segment and the manifests that list it.
    let (object_store, prefix) = open_object_store(&url)?;
    let prefix = (!prefix.is_empty()).then(|| object_store::path::Path::from(prefix));
    let mut listed: Vec<_> = object_store.list(prefix.as_ref()).try_collect().await?;
    listed.sort_by(|a, b| a.location.cmp(&b.location));
    println!("objects in {url}:");
    for object in &listed {
        println!("  {} ({} bytes)", object.location, object.size);
    }
    assert!(
        listed
            .iter()
            .any(|object| object.location.as_ref().starts_with("segments/orders/")),
        "no segment of `orders` was uploaded"
    );

    // A second store on an empty data directory: everything comes from the object store.
    let store = Store::open(config("data-2")).await?;
    let page = store.list("orders", &ListQuery::default()).await?;
    println!("orders read back from the object store:");
    for record in &page.records {
        println!(
            "  {}: {}",
            record.id,
            String::from_utf8_lossy(&record.value)
        );
    }
    for (id, value) in orders {
        assert_eq!(store.get("orders", id).await?, Some(Bytes::from(value)));
    }
    assert_eq!(page.records.len(), orders.len());
    store.close(TIMEOUT).await?;
    Ok(())
}
