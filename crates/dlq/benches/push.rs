//! Push throughput and reopen time of mainstay-dlq, beside a bare `write + fdatasync` loop on
//! the same disk in the same run. Prints a table; `cargo bench -p mainstay-dlq --bench push`.
//!
//! Rows: the bare loop (one 256-byte record per `fdatasync`, one thread), per-push fsync mode and
//! grouped mode (32 concurrent pushers each), and reopen time for 1,000 and 100,000 entries
//! from a snapshot and from the journal alone.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use mainstay_dlq::{Dlq, DlqConfig, FailureClass, NewEntry, QueueConfig, SyncMode};

const PAYLOAD: usize = 256;
const PUSHERS: usize = 32;

fn config(mode: SyncMode, compact_after_bytes: u64) -> DlqConfig {
    DlqConfig {
        sync_mode: mode,
        total_capacity: 200_000,
        defaults: QueueConfig {
            capacity: 200_000,
            ttl: None,
            ..QueueConfig::default()
        },
        compact_after_bytes,
        ..DlqConfig::default()
    }
}

fn bare_loop(dir: &Path, ops: usize) -> f64 {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("bare"))
        .unwrap();
    let record = vec![7u8; PAYLOAD + 64];
    let start = Instant::now();
    for _ in 0..ops {
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

async fn pushers(dlq: &Dlq, total: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..PUSHERS)
        .map(|worker| {
            let dlq = dlq.clone();
            tokio::spawn(async move {
                for n in 0..total / PUSHERS {
                    let new = NewEntry::inline(
                        "bench",
                        format!("w{worker}-{n}"),
                        vec![1u8; PAYLOAD],
                        FailureClass::Transient,
                        "bench",
                    );
                    dlq.push(new).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    (total / PUSHERS * PUSHERS) as f64 / start.elapsed().as_secs_f64()
}

async fn push_rate(root: &Path, name: &str, mode: SyncMode, total: usize) -> f64 {
    let dir = root.join(name);
    let dlq = Dlq::open(&dir, config(mode, 1 << 40)).await.unwrap();
    let rate = pushers(&dlq, total).await;
    dlq.close().await.unwrap();
    rate
}

/// Median reopen time over `runs` opens.
async fn reopen(dir: &Path, runs: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let dlq = Dlq::open(dir, config(SyncMode::Grouped, 1 << 40))
            .await
            .unwrap();
        times.push(start.elapsed());
        drop(dlq);
    }
    times.sort();
    times[times.len() / 2]
}

async fn reopen_times(root: &Path, entries: usize) -> (Duration, Duration) {
    let dir = root.join(format!("reopen-{entries}"));
    let dlq = Dlq::open(&dir, config(SyncMode::Grouped, 1 << 40))
        .await
        .unwrap();
    pushers(&dlq, entries).await;
    assert_eq!(dlq.len(), entries / PUSHERS * PUSHERS);
    drop(dlq);
    let journal = reopen(&dir, 3).await;
    let dlq = Dlq::open(&dir, config(SyncMode::Grouped, 1 << 40))
        .await
        .unwrap();
    dlq.close().await.unwrap();
    drop(dlq);
    let snapshot = reopen(&dir, 5).await;
    (snapshot, journal)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Three interleaved rounds, medians reported, so that load on the shared disk hits every
    // case alike.
    let ops = 600;
    let (mut bare, mut per_push, mut grouped) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..3 {
        bare.push(bare_loop(root.path(), ops));
        runtime.block_on(async {
            let name = format!("per-push-{round}");
            per_push.push(push_rate(root.path(), &name, SyncMode::PerPush, ops).await);
            let name = format!("grouped-{round}");
            grouped.push(push_rate(root.path(), &name, SyncMode::Grouped, 32_000).await);
        });
        bare.push(bare_loop(root.path(), ops));
        println!(
            "round {round}: bare {:.0}, {:.0} /s, per-push {:.0}/s, grouped {:.0}/s",
            bare[bare.len() - 2],
            bare[bare.len() - 1],
            per_push[round],
            grouped[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (bare, per_push, grouped) = (
        median(&mut bare),
        median(&mut per_push),
        median(&mut grouped),
    );
    let (reopen_small, reopen_large) = runtime.block_on(async {
        let small = reopen_times(root.path(), 1_000).await;
        let large = reopen_times(root.path(), 100_000).await;
        (small, large)
    });
    println!(
        "mainstay-dlq push benchmark ({PUSHERS} pushers, {PAYLOAD}-byte payloads, 2 worker threads)"
    );
    println!("| case | pushes/s | ratio |");
    println!("|---|---:|---:|");
    println!("| bare write + fdatasync loop | {bare:.0} | 1.00x bare |");
    println!(
        "| per-push fsync mode | {per_push:.0} | {:.2}x bare |",
        per_push / bare
    );
    println!(
        "| grouped (group commit) | {grouped:.0} | {:.1}x per-push, {:.1}x bare |",
        grouped / per_push,
        grouped / bare
    );
    println!();
    println!("| reopen | from snapshot | from journal only |");
    println!("|---|---:|---:|");
    for (entries, (snapshot, journal)) in [(1_000, reopen_small), (100_000, reopen_large)] {
        println!(
            "| {entries} entries | {:.2} ms | {:.2} ms |",
            snapshot.as_secs_f64() * 1e3,
            journal.as_secs_f64() * 1e3
        );
    }
}
