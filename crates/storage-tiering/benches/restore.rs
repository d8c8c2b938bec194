//! Backup, verification and restore rates of a store of `MAINSTAY_BENCH_RESTORE_MIB` MiB (default
//! 1024), beside the disk's floor in the same run: a plain copy of the same backup's files with
//! one fsync each (what `cp -r` and a `sync` would cost). The recovery time of disaster recovery
//! (docs/operations/disaster-recovery.md) is extrapolated from these rates.
//!
//! `cargo xtask bench restore` prints a table and writes it as JSON to
//! `target/bench/restore.json`; figures are compared as ratios to the copy floor.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mainstay_storage_tiering::{
    BackupTarget, ListQuery, RestoreOptions, Store, StoreConfig, TieringPolicy, VerifyOptions,
    restore, verify,
};

const VALUE: usize = 4096;
const BATCH: usize = 256;

fn mib() -> u64 {
    std::env::var("MAINSTAY_BENCH_RESTORE_MIB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1024)
}

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        data_dir: dir.join("data"),
        object_store_url: Some(format!("file://{}", dir.join("objects").display())),
        ..StoreConfig::default()
    }
}

/// Bytes of every file under `dir`.
fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in walk(dir) {
        total += std::fs::metadata(&entry)
            .map(|meta| meta.len())
            .unwrap_or(0);
    }
    total
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// The floor: every file of `from` copied under `to` with an fsync each, and the directories'.
fn copy_floor(from: &Path, to: &Path) -> Duration {
    let started = Instant::now();
    for file in walk(from) {
        let target = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
        std::fs::File::open(&target).unwrap().sync_all().unwrap();
    }
    std::fs::File::open(to).unwrap().sync_all().unwrap();
    started.elapsed()
}

fn rate(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let target = mib() * 1024 * 1024;
    let records = (target as usize) / VALUE;
    let scratch = tempfile::tempdir_in(
        std::env::var("MAINSTAY_BENCH_DIR")
            .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
    )
    .unwrap();
    let dir = scratch.path();
    let store = Store::open(config(dir)).await.unwrap();
    // Half in a memory collection, half in a memory_s3 one uploading to a local object store.
    store
        .create_collection("hot", TieringPolicy::Memory)
        .await
        .unwrap();
    store
        .create_collection("tiered", TieringPolicy::MemoryS3)
        .await
        .unwrap();
    let value = Bytes::from(vec![0x5a; VALUE]);
    let wrote = Instant::now();
    for start in (0..records).step_by(BATCH) {
        let collection = if start < records / 2 { "hot" } else { "tiered" };
        let batch: Vec<(String, Bytes)> = (start..(start + BATCH).min(records))
            .map(|n| (format!("r{n:09}"), value.clone()))
            .collect();
        store.put_batch(collection, batch).await.unwrap();
    }
    store.flush().await.unwrap();
    store.wait_uploaded(Duration::from_secs(600)).await.unwrap();
    let wrote = wrote.elapsed();
    let data_bytes = size_of(&dir.join("data")) + size_of(&dir.join("objects"));

    let backups = dir.join("backups");
    let location = BackupTarget::parse(&backups.display().to_string()).unwrap();
    let started = Instant::now();
    let manifest = store.backup(&location).await.unwrap();
    let backup_took = started.elapsed();
    store.close(Duration::from_secs(60)).await.unwrap();
    let backup_bytes = size_of(&backups);

    let started = Instant::now();
    let report = verify(&location, &VerifyOptions::default()).await.unwrap();
    let verify_took = started.elapsed();
    assert_eq!(report.outcome.as_str(), "ok", "{:?}", report.problems);
    assert_eq!(report.records, records as u64);

    let restored = dir.join("restored");
    let restored_objects = format!("file://{}", dir.join("restored-objects").display());
    let started = Instant::now();
    let restore_report = restore(
        &location,
        &restored.join("data"),
        &RestoreOptions::new(Some(restored_objects.clone())),
    )
    .await
    .unwrap();
    let restore_took = started.elapsed();
    assert_eq!(restore_report.records, records as u64);

    // The restored store opens and serves: its recovery is part of the recovery time.
    let mut restored_config = config(&restored);
    restored_config.object_store_url = Some(restored_objects);
    let started = Instant::now();
    let reopened = Store::open(restored_config).await.unwrap();
    let open_took = started.elapsed();
    let page = reopened
        .list(
            "hot",
            &ListQuery {
                limit: Some(10),
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.records.len(), 10);
    reopened.close(Duration::from_secs(60)).await.unwrap();

    let floor_took = copy_floor(&backups, &dir.join("floor"));

    let rows = [
        ("backup (online, consistent)", backup_bytes, backup_took),
        ("verify (restore + read all)", backup_bytes, verify_took),
        ("restore", backup_bytes, restore_took),
        ("open the restored store", data_bytes, open_took),
        ("floor: copy + fsync each file", backup_bytes, floor_took),
    ];
    let floor = rate(backup_bytes, floor_took);
    println!(
        "restore bench: {records} records of {VALUE} B ({:.0} MiB of files; written in {:.1} s), backup {} with {} files",
        data_bytes as f64 / 1048576.0,
        wrote.as_secs_f64(),
        manifest.id,
        manifest.files.len()
    );
    println!("| phase | MiB | seconds | MiB/s | ratio to the copy floor |");
    println!("|---|---:|---:|---:|---:|");
    let mut json = Vec::new();
    for (phase, bytes, took) in rows {
        let mib_s = rate(bytes, took);
        println!(
            "| {phase} | {:.0} | {:.2} | {:.0} | {:.2} |",
            bytes as f64 / 1048576.0,
            took.as_secs_f64(),
            mib_s,
            mib_s / floor
        );
        json.push(serde_json::json!({
            "phase": phase, "bytes": bytes, "seconds": took.as_secs_f64(),
            "mib_per_second": mib_s, "ratio_to_floor": mib_s / floor,
        }));
    }
    let rto_rate = rate(backup_bytes, restore_took + open_took);
    println!(
        "restore + open: {:.0} MiB/s; extrapolated: 10 GiB in {:.0} s, 100 GiB in {:.0} s",
        rto_rate,
        10.0 * 1024.0 / rto_rate,
        100.0 * 1024.0 / rto_rate
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    std::fs::create_dir_all(&out).ok();
    let document = serde_json::json!({
        "records": records, "value_bytes": VALUE, "data_bytes": data_bytes,
        "backup_bytes": backup_bytes, "phases": json,
        "restore_and_open_mib_per_second": rto_rate,
    });
    std::fs::write(
        out.join("restore.json"),
        serde_json::to_string_pretty(&document).unwrap(),
    )
    .ok();
}
