//! Simulated power loss (issue 13, point 5): a seeded model test of the DLQ on
//! [`SimFs`], which keeps written and durable bytes apart and throws the unsynced ones away at a
//! power cut.
//!
//! Each run pushes (payloads of random size, so that segments rotate and compactions run),
//! deletes, compacts, arms a process death after a random number of file-system calls, kills the
//! process (page cache kept) and cuts the power (with or without the last write torn), reopening
//! after each. After every reopen the queue is checked against a plain model: every push and
//! delete that was acknowledged holds, and nothing else is there but operations that failed or
//! were cut short (their outcome is unknown, so both are accepted, and the model learns which).
//!
//! `MAINSTAY_DLQ_SEED` runs one seed and prints its steps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use mainstay_dlq::{Dlq, DlqConfig, EntryId, FailureClass, Filter, NewEntry, QueueConfig};
use mainstay_journal::fs::{SimFs, SyncSite};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIR: &str = "/data/dlq";
const SEED_ENV: &str = "MAINSTAY_DLQ_SEED";
const RUNS: u64 = 60;
const STEPS: usize = 80;

fn sim_config() -> DlqConfig {
    DlqConfig {
        total_capacity: 1_000_000,
        max_total_payload_bytes: 1 << 30,
        defaults: QueueConfig {
            capacity: 1_000_000,
            ttl: None,
            // The archive is written with std's file system, not through `SimFs`.
            archive: false,
            ..QueueConfig::default()
        },
        // Small, so that compactions (snapshot + trim) and rotations (1 KiB segments) happen
        // every few steps.
        compact_after_bytes: 4096,
        redrive_rate_per_second: 0,
        ..DlqConfig::default()
    }
}

async fn open(sim: &Arc<SimFs>) -> Result<Dlq, mainstay_dlq::OpenError> {
    Dlq::builder(DIR)
        .config(sim_config())
        // A view for this process: threads the previous one left behind cannot touch the disk.
        .file_system(Arc::new(sim.process()) as Arc<dyn mainstay_journal::fs::FileSystem>)
        .open()
        .await
}

/// What the queue must hold.
#[derive(Default)]
struct Model {
    /// Acknowledged pushes not deleted since, by key.
    present: BTreeMap<String, EntryId>,
    /// Pushes that failed (the key may or may not be there, with any id).
    unknown_pushes: BTreeSet<String>,
    /// Deletes that failed (the entry may or may not still be there).
    unknown_deletes: BTreeMap<String, EntryId>,
}

impl Model {
    /// Checks the reopened queue and settles every unknown outcome from what it holds.
    fn check(&mut self, dlq: &Dlq) -> Result<(), String> {
        let mut found: BTreeMap<String, EntryId> = BTreeMap::new();
        let mut cursor = None;
        loop {
            let page = dlq
                .list(&Filter::default(), cursor.as_deref(), 1000)
                .map_err(|e| e.to_string())?;
            for entry in &page.entries {
                if found.insert(entry.key().to_owned(), entry.id()).is_some() {
                    return Err(format!("{} is there twice", entry.key()));
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        for (key, id) in &self.present {
            if found.get(key) != Some(id) {
                return Err(format!("acknowledged push {key} ({id}) is lost"));
            }
        }
        for (key, id) in &found {
            let expected = self.present.get(key) == Some(id)
                || self.unknown_pushes.contains(key)
                || self.unknown_deletes.get(key) == Some(id);
            if !expected {
                return Err(format!(
                    "{key} ({id}) is there, but it was never acknowledged or its delete was"
                ));
            }
        }
        for (key, id) in std::mem::take(&mut self.unknown_deletes) {
            if found.get(&key) == Some(&id) {
                self.present.insert(key, id);
            }
        }
        for key in std::mem::take(&mut self.unknown_pushes) {
            if let Some(id) = found.get(&key) {
                self.present.insert(key, *id);
            }
        }
        Ok(())
    }
}

/// One seeded run; the error says what broke, with the steps that led there.
async fn run(seed: u64, skipped: Option<SyncSite>) -> Result<(), String> {
    let sim = Arc::new(SimFs::new(seed));
    sim.skip_syncs(skipped);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let mut log = Vec::new();
    let verbose = std::env::var(SEED_ENV).is_ok();
    let fail = |log: &[String], message: String| {
        Err(format!(
            "seed {seed} (skipped {skipped:?}): {message}\nsteps:\n{}",
            log.join("\n")
        ))
    };
    let mut dlq = Some(open(&sim).await.map_err(|e| e.to_string())?);
    for step in 0..STEPS {
        let Some(queue) = dlq.as_ref() else {
            break;
        };
        let roll = rng.random_range(0..100);
        let line = if roll < 55 {
            let key = format!("k{step}");
            let size = rng.random_range(0..700);
            let new = NewEntry::inline("q", &key, vec![7u8; size], FailureClass::Transient, "x");
            match queue.push(new).await {
                Ok(id) => {
                    model.present.insert(key.clone(), id);
                    format!("push {key} ({size} bytes): ok")
                }
                Err(error) => {
                    model.unknown_pushes.insert(key.clone());
                    format!("push {key}: {error}")
                }
            }
        } else if roll < 75 && !model.present.is_empty() {
            let index = rng.random_range(0..model.present.len());
            let Some((key, id)) = model
                .present
                .iter()
                .nth(index)
                .map(|(k, v)| (k.clone(), *v))
            else {
                return fail(&log, "the model lost count".to_owned());
            };
            model.present.remove(&key);
            match queue.delete(id).await {
                Ok(true) => format!("delete {key}: ok"),
                Ok(false) => return fail(&log, format!("delete {key}: the entry was not there")),
                Err(error) => {
                    model.unknown_deletes.insert(key.clone(), id);
                    format!("delete {key}: {error}")
                }
            }
        } else if roll < 82 {
            format!("compact: {:?}", queue.compact().await)
        } else if roll < 90 {
            let calls = rng.random_range(0..25);
            sim.crash_after(calls);
            format!("the process dies after {calls} more file-system calls")
        } else {
            String::from("restart")
        };
        if verbose {
            eprintln!("{line}");
        }
        log.push(line);
        let restart = sim.has_crashed() || log.last().is_some_and(|l| l == "restart");
        if restart {
            drop(dlq.take());
            let how = rng.random_range(0..3);
            match how {
                0 => sim.crash(),
                1 => sim.power_cut(),
                _ => sim.power_cut_tearing_last_write(),
            }
            let restart = format!(
                "{} and reopen",
                ["crash", "power cut", "power cut tearing the last write"][how]
            );
            if verbose {
                eprintln!("{restart}");
            }
            log.push(restart);
            match open(&sim).await {
                Ok(reopened) => {
                    if let Err(message) = model.check(&reopened) {
                        return fail(&log, message);
                    }
                    dlq = Some(reopened);
                }
                Err(error) => return fail(&log, format!("reopen failed: {error}")),
            }
        }
    }
    drop(dlq);
    sim.power_cut();
    let reopened = open(&sim).await.map_err(|e| e.to_string())?;
    if let Err(message) = model.check(&reopened) {
        return fail(&log, message);
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    match std::env::var(SEED_ENV) {
        Ok(seed) => vec![seed.parse().expect("MAINSTAY_DLQ_SEED is a number")],
        Err(_) => (0..RUNS).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_push_or_delete_is_lost_at_a_power_cut() {
    assert!(Path::new(DIR).is_absolute());
    for seed in seeds() {
        if let Err(message) = run(seed, None).await {
            panic!("{message}");
        }
    }
}

/// The syncs the DLQ relies on: the journal's group commit (pushes and deletes), and the
/// snapshot's atomic replace (compaction trims the journal once the snapshot is durable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sync_the_dlq_relies_on_is_needed() {
    for site in [
        SyncSite::SegmentData,
        SyncSite::ReplaceFile,
        SyncSite::ReplaceDir,
    ] {
        let mut caught = None;
        for seed in 0..RUNS * 4 {
            if let Err(message) = run(seed, Some(site)).await {
                caught = Some(message);
                break;
            }
        }
        assert!(
            caught.is_some(),
            "with the {site} sync skipped, no run lost an acknowledged write: the test cannot see it"
        );
    }
}
