//! SIGKILL during writes, uploads and compaction: the test binary re-executes itself as a child
//! that writes until killed, printing every acknowledged id; after each kill every acknowledged
//! record must be readable (or referenced by the DLQ with its data).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use mainstay_storage_tiering::{Store, StoreConfig, TieringPolicy};

const CHILD_ENV: &str = "MAINSTAY_STORAGE_CRASH_CHILD_DIR";
const COLLECTIONS: [(&str, TieringPolicy); 3] = [
    ("hot", TieringPolicy::MemoryS3),
    ("cold", TieringPolicy::S3Only),
    ("local", TieringPolicy::Memory),
];

fn crash_config(dir: &Path) -> StoreConfig {
    let mut cfg = StoreConfig {
        data_dir: dir.join("data"),
        object_store_url: Some(format!("file://{}", dir.join("objects").display())),
        memtable_bytes: 8 * 1024,
        block_bytes: 1024,
        wal_segment_bytes: 16 * 1024,
        ..StoreConfig::default()
    };
    cfg.compaction.min_segments = 2;
    cfg.compaction.interval = Duration::from_millis(30);
    cfg.compaction.grace_period = Duration::from_millis(10);
    cfg
}

fn value_of(id: &str) -> Bytes {
    Bytes::from(id.repeat(8))
}

/// The child: writes until it is killed. Does nothing unless started by the parent below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    // A distinct id space per run: the parent passes the round number.
    let round = std::env::var("MAINSTAY_STORAGE_CRASH_ROUND").unwrap_or_default();
    let store = Store::open(crash_config(&dir)).await.unwrap();
    for (name, policy) in COLLECTIONS {
        let _ = store.create_collection(name, policy).await;
    }
    let writers = (0..6).map(|task| {
        let store = store.clone();
        let round = round.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let (collection, _) = COLLECTIONS[(task + n) % 3];
                let id = format!("r{round}-t{task}-n{n}");
                if n % 7 == 3 {
                    let batch: Vec<_> = (0..5)
                        .map(|b| (format!("{id}-b{b}"), value_of(&format!("{id}-b{b}"))))
                        .collect();
                    store.put_batch(collection, batch).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    for b in 0..5 {
                        writeln!(out, "ACK {collection} {id}-b{b}").unwrap();
                    }
                    out.flush().unwrap();
                } else {
                    store.put(collection, &id, value_of(&id)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {collection} {id}").unwrap();
                    out.flush().unwrap();
                }
            }
        })
    });
    let compactor = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                for (name, _) in COLLECTIONS {
                    let _ = store.compact(name).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for writer in writers {
        let _ = writer.await;
    }
    compactor.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(String, String)> = Vec::new();
    for round in 0..5 {
        let exe = exe.clone();
        let root = dir.path().to_path_buf();
        let target = 400 + round * 150;
        let new = tokio::task::spawn_blocking(move || {
            let mut child = Command::new(exe)
                .args([
                    "crash::crash_child",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &root)
                .env("MAINSTAY_STORAGE_CRASH_ROUND", round.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let mut seen = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ")
                    && let Some((collection, id)) = rest.split_once(' ')
                {
                    seen.push((collection.to_owned(), id.to_owned()));
                    if seen.len() >= target {
                        break;
                    }
                }
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            seen
        })
        .await
        .unwrap();
        assert!(
            new.len() >= 400,
            "round {round}: the child acknowledged only {}",
            new.len()
        );
        acked.extend(new);

        let store = Store::open(crash_config(dir.path())).await.unwrap();
        for (collection, id) in &acked {
            let found = store.get(collection, id).await.unwrap();
            assert_eq!(
                found,
                Some(value_of(id)),
                "round {round}: {collection}/{id} acknowledged but lost"
            );
        }
        store.close(Duration::from_secs(5)).await.ok();
    }
    // The children got as far as uploading (and compacting) segments before being killed.
    let uploaded = std::fs::read_dir(dir.path().join("objects/segments/hot"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(uploaded >= 1, "no segment was uploaded");
    eprintln!(
        "{} acknowledged records checked, {uploaded} uploaded hot segments",
        acked.len()
    );
}
