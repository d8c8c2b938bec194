//! Insert throughput of a `memory_s3` collection uploading to the in-process S3 server, beside the
//! disk's bare group-commit floor and object_store's raw put rate to the same server, and the cost
//! of sealing values with the keyring (`storage.encryption`: inserts with and without it), in one
//! run.
//!
//! `cargo bench -p mainstay-storage-tiering --bench inserts` prints a table; figures are compared
//! as ratios (see the crate README).

use std::io::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use mainstay_storage_tiering::keyring::{Keyring, MasterKey};
use mainstay_storage_tiering::{Store, StoreConfig, TieringPolicy};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};

#[path = "../tests/it/s3_server.rs"]
mod s3_server;

const VALUE: usize = 1024;
const WRITERS: usize = 64;
const RECORDS: usize = 120_000;
/// Records of each side of the encryption comparison, in `SEAL_ROUNDS` rounds per side.
const SEALED_RECORDS: usize = 128_000;
/// Rounds per side, run plain, sealed, sealed, plain (and again), so that neither side always
/// runs on the fuller store or right after a flush.
const SEAL_ROUNDS: usize = 8;

/// One write of many framed records, then one fdatasync: the best the disk can do.
fn floor(dir: &std::path::Path) -> f64 {
    let records = 65_536;
    let frame = vec![7u8; VALUE + 8 + 40];
    let mut best = 0f64;
    for round in 0..3 {
        let mut buffer = Vec::with_capacity(records * frame.len());
        let started = Instant::now();
        for _ in 0..records {
            buffer.extend_from_slice(&frame);
        }
        let mut file = std::fs::File::create(dir.join(format!("floor-{round}"))).unwrap();
        file.write_all(&buffer).unwrap();
        file.sync_data().unwrap();
        best = best.max(records as f64 / started.elapsed().as_secs_f64());
    }
    best
}

/// The same disk at this benchmark's concurrency: `WRITERS` framed records per write, then one
/// fdatasync, into a zero-filled file (as the WAL writes): the best group commit can do when each
/// of `WRITERS` writers has one record in flight.
fn grouped_floor(dir: &std::path::Path) -> f64 {
    use std::os::unix::fs::FileExt as _;
    let rounds = 1_000;
    let frame = vec![7u8; VALUE + 8 + 40];
    let group: Vec<u8> = frame.repeat(WRITERS);
    let path = dir.join("grouped-floor");
    let file = std::fs::File::create(&path).unwrap();
    file.write_all_at(&vec![0u8; group.len() * rounds], 0)
        .unwrap();
    file.sync_all().unwrap();
    let started = Instant::now();
    for round in 0..rounds {
        file.write_all_at(&group, (round * group.len()) as u64)
            .unwrap();
        file.sync_data().unwrap();
    }
    let rate = (rounds * WRITERS) as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(path).unwrap();
    rate
}

/// Concurrent writers of 1 KiB values, each sealed first when a keyring is given (as the API
/// does with `storage.encryption`); returns acknowledged records/s and sorted latencies.
async fn insert(
    store: &Store,
    keyring: Option<&Keyring>,
    collection: &'static str,
    records: usize,
) -> (f64, Vec<Duration>) {
    let value = Bytes::from(vec![42u8; VALUE]);
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            let value = value.clone();
            let keyring = keyring.cloned();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(records / WRITERS);
                for n in 0..records / WRITERS {
                    let id = format!("w{writer:02}-{n:07}");
                    let at = Instant::now();
                    let stored = match &keyring {
                        Some(keyring) => Bytes::from(
                            keyring
                                .seal("bench-org", collection, &id, &value)
                                .await
                                .unwrap(),
                        ),
                        // A fresh buffer per record, as a request body is (and as a sealed
                        // value is): one shared buffer would flatter the plain side.
                        None => Bytes::copy_from_slice(&value),
                    };
                    store.put(collection, &id, stored).await.unwrap();
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(records);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    (rate, latencies)
}

fn counter(registry: &prometheus_client::registry::Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    sorted
        .get(sorted.len() * p / 100)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let floor = floor(dir.path());
        let grouped = grouped_floor(dir.path());
        let mut config = StoreConfig { data_dir: dir.path().join("data"), ..StoreConfig::default() };
        // The raw put rate is measured with objects of the default segment size.
        let segment_bytes = usize::try_from(config.memtable_bytes).unwrap();
        // `BENCH_MEMTABLE_BYTES` overrides the memtable bound, to see what segment flushes cost
        // (a bound above the bench's 120 MB writes no segment during the inserts).
        if let Some(bytes) = std::env::var("BENCH_MEMTABLE_BYTES").ok().and_then(|v| v.parse().ok()) {
            config.memtable_bytes = bytes;
            config.max_wal_bytes = config.max_wal_bytes.max(bytes * 4);
            config.upload.max_backlog_bytes = config.upload.max_backlog_bytes.max(bytes * 4);
        }

        let server = s3_server::S3Server::start().await;
        let client = server.client();
        // object_store's raw put rate: segment-sized objects, `upload.parallelism` in flight.
        let object = Bytes::from(vec![1u8; segment_bytes]);
        let puts = 48;
        let started = Instant::now();
        futures::stream::iter(0..puts)
            .map(|i| {
                let client = client.clone();
                let object = object.clone();
                async move { client.put(&Path::from(format!("raw/{i}")), PutPayload::from(object)).await.unwrap() }
            })
            .buffer_unordered(config.upload.parallelism)
            .collect::<Vec<_>>()
            .await;
        let raw = (puts * object.len()) as f64 / started.elapsed().as_secs_f64();

        let mut upload_config = config.clone();
        upload_config.upload.breaker_poll_interval = Duration::from_millis(5);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = mainstay_storage_tiering::StorageMetrics::register(&mut registry);
        let store = Store::builder(upload_config).metrics(metrics).object_store(client.clone(), "bench").open().await.unwrap();
        store.create_collection("local", TieringPolicy::Memory).await.unwrap();
        store.create_collection("bench", TieringPolicy::MemoryS3).await.unwrap();
        store.create_collection("drain", TieringPolicy::MemoryS3).await.unwrap();

        // The WAL path alone (no uploads), then inserts while uploads run beside them.
        if std::env::var_os("BENCH_MEMORY_ONLY").is_some() {
            eprintln!("inserting");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let (local_rate, local_latencies) = insert(&store, None, "local", RECORDS).await;
        let fsyncs = counter(&registry, "storage_wal_fsyncs_total");
        // `BENCH_MEMORY_ONLY=1` stops here, so that a profile of the run shows the WAL path alone.
        if std::env::var_os("BENCH_MEMORY_ONLY").is_some() {
            println!("memory policy: {local_rate:.0} records/s ({:.2} of the group-commit floor {grouped:.0}), p99 {:.3} ms, {:.1} per fsync",
                local_rate / grouped, percentile(&local_latencies, 99), RECORDS as f64 / fsyncs);
            return;
        }
        // Encryption's cost: the same inserts into `memory` collections, plain and sealed in
        // alternating rounds (ABBA), each round into a collection of its own.
        let keyring = Keyring::builder(std::sync::Arc::new(object_store::memory::InMemory::new()), MasterKey::generate())
            .open()
            .await
            .unwrap();
        let (mut plain_rates, mut sealed_rates) = (Vec::new(), Vec::new());
        let (mut plain_latencies, mut sealed_latencies) = (Vec::new(), Vec::new());
        for round in 0..2 * SEAL_ROUNDS {
            let sealed = matches!(round % 4, 1 | 2);
            let name: &'static str = Box::leak(format!("{}{round}", if sealed { "sealed" } else { "plain" }).into_boxed_str());
            store.create_collection(name, TieringPolicy::Memory).await.unwrap();
            let keyring = sealed.then_some(&keyring);
            let (rate, latencies) = insert(&store, keyring, name, SEALED_RECORDS / SEAL_ROUNDS).await;
            if sealed {
                sealed_rates.push(rate);
                sealed_latencies.extend(latencies);
            } else {
                plain_rates.push(rate);
                plain_latencies.extend(latencies);
            }
        }
        plain_latencies.sort_unstable();
        sealed_latencies.sort_unstable();
        let median = |rates: &mut Vec<f64>| {
            rates.sort_by(f64::total_cmp);
            (rates[rates.len() / 2 - 1] + rates[rates.len() / 2]) / 2.0
        };
        let rounds = |rates: &[f64]| rates.iter().map(|rate| format!("{:.0}k", rate / 1e3)).collect::<Vec<_>>().join(" ");
        let rounds_text = format!("plain rounds {}; sealed rounds {}", rounds(&plain_rates), rounds(&sealed_rates));
        let (plain_rate, sealed_rate) = (median(&mut plain_rates), median(&mut sealed_rates));
        // The seal alone, on one thread: the CPU cost per value.
        let value = vec![42u8; VALUE];
        let seals = 50_000;
        let started = Instant::now();
        for n in 0..seals {
            let sealed = keyring.seal("bench-org", "sealed", &n.to_string(), &value).await.unwrap();
            std::hint::black_box(sealed);
        }
        let seal_rate = seals as f64 / started.elapsed().as_secs_f64();
        let (rate, latencies) = insert(&store, None, "bench", RECORDS).await;
        store.flush().await.unwrap();
        store.wait_uploaded(Duration::from_secs(300)).await.unwrap();

        // Upload throughput: build a backlog with the breaker forced open, then time the drain.
        store.breaker().force_open();
        let _ = insert(&store, None, "drain", RECORDS).await;
        store.flush().await.unwrap();
        let backlog = store.backlog_bytes();
        let started = Instant::now();
        store.breaker().reset();
        store.wait_uploaded(Duration::from_secs(300)).await.unwrap();
        let drained = backlog as f64 / started.elapsed().as_secs_f64();
        store.close(Duration::from_secs(10)).await.unwrap();

        let floor_bytes = floor * VALUE as f64;
        println!("storage-tiering inserts: {RECORDS} x {VALUE} B values, {WRITERS} writers, in-process S3 (s3s-fs), 2 worker threads");
        println!("{:<56} {:>12}", "measure", "value");
        println!("{:<56} {:>12.0}", "disk floor: one write + one fdatasync (records/s)", floor);
        println!("{:<56} {:>12.0}", format!("group-commit floor: {WRITERS} records per fdatasync"), grouped);
        println!("{:<56} {:>12.0}", "memory policy: acknowledged inserts (records/s)", local_rate);
        println!("{:<56} {:>12.2}", "  ratio to floor", local_rate / floor);
        println!("{:<56} {:>12.2}", "  ratio to the group-commit floor", local_rate / grouped);
        println!("{:<56} {:>12.3}", "  p50 / p99 latency (ms)", percentile(&local_latencies, 50));
        println!("{:<56} {:>12.3}", "", percentile(&local_latencies, 99));
        println!("{:<56} {:>12.1}", "  records per fsync (group size)", RECORDS as f64 / fsyncs);
        println!("{:<56} {:>12.0}", "memory_s3 while uploading: acknowledged inserts (rec/s)", rate);
        println!("{:<56} {:>12.2}", "  ratio to floor", rate / floor);
        println!("{:<56} {:>12.2}", "  ratio to the group-commit floor", rate / grouped);
        println!("{:<56} {:>12.3}", "  p50 / p99 latency (ms)", percentile(&latencies, 50));
        println!("{:<56} {:>12.3}", "", percentile(&latencies, 99));
        println!("{:<56} {:>12.0}", format!("memory, plain ({SEALED_RECORDS}, median of {SEAL_ROUNDS} rounds): inserts/s"), plain_rate);
        println!("{:<56} {:>12.0}", format!("memory, sealed by the keyring (same): inserts/s"), sealed_rate);
        println!("{:<56} {:>12.3}", "  ratio sealed / plain", sealed_rate / plain_rate);
        println!("{:<56} {:>12.3}", "  p99 latency plain / sealed (ms)", percentile(&plain_latencies, 99));
        println!("{:<56} {:>12.3}", "", percentile(&sealed_latencies, 99));
        println!("  {rounds_text}");
        println!("{:<56} {:>12.0}", format!("seal of {VALUE} B on one thread (seals/s)"), seal_rate);
        println!("{:<56} {:>12.1}", "raw object_store put rate (MiB/s)", raw / 1_048_576.0);
        println!("{:<56} {:>12.1}", "upload drain of a backlog (MiB/s)", drained / 1_048_576.0);
        println!("{:<56} {:>12.2}", "  ratio to raw put rate", drained / raw);
        println!("{:<56} {:>12.1}", "floor in MiB/s of values (same bytes)", floor_bytes / 1_048_576.0);
    });
}
