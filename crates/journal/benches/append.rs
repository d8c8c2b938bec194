//! Acknowledged appends of `mainstay-journal` beside the disk's floors, in one run.
//!
//! `cargo bench -p mainstay-journal --bench append` (or `cargo xtask bench journal`) prints a
//! table. Two pairs, each compared as a ratio because the machines are shared and noisy:
//!
//! - grouped: `WRITERS` tasks, each writing 1 KiB entries one after the other through
//!   [`Journal::write`], against the group-commit floor at that concurrency (`WRITERS` framed
//!   records per positional write + `fdatasync` into a zero-filled file, as the journal writes);
//! - single: one writer (each entry its own sync), against the bare loop of one positional write +
//!   `fdatasync` per record into a zero-filled file.
//!
//! Each figure is the median of `ROUNDS` rounds, the journal and its floor alternating.

use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use mainstay_journal::{Journal, JournalConfig};

const VALUE: usize = 1024;
const WRITERS: usize = 64;
const GROUPED_ENTRIES: usize = 64 * 1_000;
const SINGLE_ENTRIES: usize = 2_000;
const ROUNDS: usize = 3;
/// A framed record as the journal writes it: `u32 len | u32 crc | u64 lsn | payload`.
const FRAME: usize = VALUE + 16;

/// Records per second of `per_write` framed records per positional write + fdatasync, into a
/// zero-filled file, `records` in all.
fn floor(dir: &Path, per_write: usize, records: usize) -> f64 {
    let group = vec![7u8; FRAME * per_write];
    let writes = records / per_write;
    let path = dir.join("floor");
    let file = std::fs::File::create(&path).expect("floor file");
    file.write_all_at(&vec![0u8; group.len() * writes], 0)
        .expect("zero fill");
    file.sync_all().expect("sync");
    let started = Instant::now();
    for write in 0..writes {
        file.write_all_at(&group, (write * group.len()) as u64)
            .expect("write");
        file.sync_data().expect("fdatasync");
    }
    let rate = (writes * per_write) as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(path).expect("remove floor file");
    rate
}

/// Entries per second acknowledged by `writers` concurrent writers, `entries` in all, and the
/// sorted latencies.
async fn journal(dir: &Path, writers: usize, entries: usize) -> (f64, Vec<Duration>) {
    let _ = std::fs::remove_dir_all(dir);
    let config = JournalConfig {
        segment_bytes: 256 * 1024 * 1024,
        ..JournalConfig::default()
    };
    let (journal, _) = Journal::open(dir, config).expect("open");
    let payload = vec![42u8; VALUE];
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let journal = journal.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(entries / writers);
                for _ in 0..entries / writers {
                    let at = Instant::now();
                    journal.write(&payload).await.expect("write");
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(entries);
    for task in tasks {
        latencies.extend(task.await.expect("writer"));
    }
    let rate = entries as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    (rate, latencies)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn p99(latencies: &[Duration]) -> f64 {
    latencies[latencies.len() * 99 / 100].as_secs_f64() * 1e3
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::Builder::new()
        .prefix("journal-bench")
        .tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))
        .expect("temp dir");
    let (mut grouped, mut grouped_floor, mut grouped_p99) = (Vec::new(), Vec::new(), Vec::new());
    let (mut single, mut single_floor) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (rate, latencies) = runtime.block_on(journal(
            &dir.path().join("grouped"),
            WRITERS,
            GROUPED_ENTRIES,
        ));
        grouped.push(rate);
        grouped_p99.push(p99(&latencies));
        grouped_floor.push(floor(dir.path(), WRITERS, GROUPED_ENTRIES));
        let (rate, _) = runtime.block_on(journal(&dir.path().join("single"), 1, SINGLE_ENTRIES));
        single.push(rate);
        single_floor.push(floor(dir.path(), 1, SINGLE_ENTRIES));
    }
    let (grouped, grouped_floor) = (median(grouped), median(grouped_floor));
    let (single, single_floor) = (median(single), median(single_floor));
    println!(
        "mainstay-journal appends: {VALUE} B entries, medians of {ROUNDS} rounds, 2 worker threads"
    );
    println!("{:<62}{:>12}", "measure", "value");
    let rows = [
        (
            format!("group-commit floor: {WRITERS} records per fdatasync (rec/s)"),
            format!("{grouped_floor:.0}"),
        ),
        (
            format!("journal, {WRITERS} writers: acknowledged entries/s"),
            format!("{grouped:.0}"),
        ),
        (
            "  ratio to the group-commit floor".to_owned(),
            format!("{:.2}", grouped / grouped_floor),
        ),
        (
            "  p99 latency (ms)".to_owned(),
            format!("{:.3}", median(grouped_p99)),
        ),
        (
            "bare loop: one write + fdatasync per record (rec/s)".to_owned(),
            format!("{single_floor:.0}"),
        ),
        (
            "journal, 1 writer: acknowledged entries/s".to_owned(),
            format!("{single:.0}"),
        ),
        (
            "  bare loop / journal (cost factor)".to_owned(),
            format!("{:.2}", single_floor / single),
        ),
    ];
    for (measure, value) in rows {
        println!("{measure:<62}{value:>12}");
    }
}
