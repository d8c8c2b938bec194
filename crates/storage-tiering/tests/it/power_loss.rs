//! Simulated power loss (issue 13, points 4 and 5): a seeded model test of the store whose WAL,
//! catalog, data-directory lock and DLQ journal live on [`SimFs`], which keeps written and
//! durable bytes apart and throws the unsynced ones away at a power cut.
//!
//! Each run creates and drops collections, writes and deletes records (memtables of 4 KiB and
//! WAL segments of 4 KiB, so that flushes, WAL rotations and trims happen every few steps), arms
//! a process death after a random number of file-system calls, kills the process (page cache
//! kept) or cuts the power (with or without the last write torn), and reopens. After every
//! reopen the store is checked against a plain model: every acknowledged create, drop, write
//! and delete holds; anything else there is an operation that failed or was cut short (its
//! outcome is unknown, so both are accepted, and the model learns which).
//!
//! Segment files are written with std's file system into a temp directory: they are synced
//! before anything refers to them, and this test is about the WAL and the catalog.
//!
//! `MAINSTAY_STORE_POWER_SEED` runs one seed and prints its steps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use mainstay_journal::fs::{FileSystem, SimFs, SyncSite};
use mainstay_storage_tiering::{Store, StoreConfig, TieringPolicy};

use crate::common::{config, list_all};

const SEED_ENV: &str = "MAINSTAY_STORE_POWER_SEED";
const RUNS: u64 = 15;
const STEPS: usize = 80;
const NAMES: [&str; 3] = ["c0", "c1", "c2"];

fn sim_config(dir: &Path) -> StoreConfig {
    let mut config = config(dir);
    config.wal_segment_bytes = 4096;
    config
}

async fn open(sim: &Arc<SimFs>, dir: &Path) -> Result<Store, String> {
    Store::builder(sim_config(dir))
        // A view for this process: threads the previous one left behind cannot touch the disk.
        .file_system(Arc::new(sim.process()) as Arc<dyn FileSystem>)
        .open()
        .await
        .map_err(|error| error.to_string())
}

/// One collection's records as the model knows them.
#[derive(Default, Clone)]
struct Records {
    /// Acknowledged writes not deleted since.
    present: BTreeMap<String, Bytes>,
    /// Writes that failed (the record may or may not be there).
    unknown_puts: BTreeMap<String, Bytes>,
    /// Deletes that failed (the record may or may not still be there).
    unknown_deletes: BTreeMap<String, Bytes>,
}

/// What the store must hold.
#[derive(Default)]
struct Model {
    /// Live collections whose create was acknowledged (and whose drop was not).
    live: BTreeMap<String, Records>,
    /// Creates that failed (the collection may or may not exist, empty).
    unknown_creates: BTreeSet<String>,
    /// Drops that failed (the collection may or may not still be there, with its records).
    unknown_drops: BTreeMap<String, Records>,
}

impl Model {
    /// Checks the reopened store and settles every unknown outcome from what it holds.
    async fn check(&mut self, store: &Store) -> Result<(), String> {
        let found: BTreeSet<String> = store.collections().into_iter().map(|c| c.name).collect();
        for name in self.live.keys() {
            if !found.contains(name) {
                return Err(format!("acknowledged collection {name} is lost"));
            }
        }
        for name in &found {
            let known = self.live.contains_key(name)
                || self.unknown_creates.contains(name)
                || self.unknown_drops.contains_key(name);
            if !known {
                return Err(format!(
                    "collection {name} is there, but its create was never acknowledged or its drop was"
                ));
            }
        }
        for (name, records) in std::mem::take(&mut self.unknown_drops) {
            if found.contains(&name) {
                self.live.insert(name, records);
            }
        }
        for name in std::mem::take(&mut self.unknown_creates) {
            if found.contains(&name) && !self.live.contains_key(&name) {
                self.live.insert(name, Records::default());
            }
        }
        for (name, records) in &mut self.live {
            let page = list_all(store, name).await;
            let mut held: BTreeMap<String, Bytes> = BTreeMap::new();
            for record in page.records {
                held.insert(record.id, record.value);
            }
            for (id, value) in &records.present {
                if held.get(id) != Some(value) {
                    return Err(format!(
                        "acknowledged write {name}/{id} is lost (found {:?})",
                        held.get(id).map(Bytes::len)
                    ));
                }
            }
            for (id, value) in &held {
                let expected = records.present.get(id) == Some(value)
                    || records.unknown_puts.get(id) == Some(value)
                    || records.unknown_deletes.get(id) == Some(value);
                if !expected {
                    return Err(format!(
                        "{name}/{id} is there, but it was never acknowledged or its delete was"
                    ));
                }
            }
            let unknown = std::mem::take(&mut records.unknown_puts)
                .into_iter()
                .chain(std::mem::take(&mut records.unknown_deletes));
            for (id, value) in unknown {
                if held.get(&id) == Some(&value) {
                    records.present.insert(id, value);
                }
            }
        }
        Ok(())
    }
}

/// A xorshift generator: the test needs no more than reproducible choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One step of a run: what it did, as a line of the run's log.
async fn step(store: &Store, model: &mut Model, rng: &mut Rng, sim: &SimFs, n: usize) -> String {
    let roll = rng.below(100);
    let live: Vec<String> = model.live.keys().cloned().collect();
    let pick = |rng: &mut Rng, from: &[String]| {
        from[usize::try_from(rng.below(from.len() as u64)).unwrap_or(0)].clone()
    };
    if roll < 45 && !live.is_empty() {
        let name = pick(rng, &live);
        let id = format!("k{n}");
        let size = usize::try_from(rng.below(400)).unwrap_or(0);
        let value = Bytes::from(vec![u8::try_from(n % 251).unwrap_or(0); size]);
        let records = model.live.get_mut(&name).expect("live");
        match store.put(&name, &id, value.clone()).await {
            Ok(()) => {
                records.present.insert(id.clone(), value);
                format!("put {name}/{id} ({size} bytes): ok")
            }
            Err(error) => {
                records.unknown_puts.insert(id.clone(), value);
                format!("put {name}/{id}: {error}")
            }
        }
    } else if roll < 55 && !live.is_empty() {
        let name = pick(rng, &live);
        let records = model.live.get_mut(&name).expect("live");
        let ids: Vec<String> = records.present.keys().cloned().collect();
        if ids.is_empty() {
            return format!("nothing to delete in {name}");
        }
        let id = pick(rng, &ids);
        let value = records.present.remove(&id).expect("present");
        match store.delete(&name, &id).await {
            Ok(()) => format!("delete {name}/{id}: ok"),
            Err(error) => {
                records.unknown_deletes.insert(id.clone(), value);
                format!("delete {name}/{id}: {error}")
            }
        }
    } else if roll < 62 {
        let free: Vec<String> = NAMES
            .iter()
            .map(|n| (*n).to_owned())
            .filter(|n| !model.live.contains_key(n))
            .collect();
        if free.is_empty() {
            return String::from("every name is taken");
        }
        let name = pick(rng, &free);
        match store.create_collection(&name, TieringPolicy::Memory).await {
            Ok(_) => {
                model.live.insert(name.clone(), Records::default());
                format!("create {name}: ok")
            }
            Err(error) => {
                model.unknown_creates.insert(name.clone());
                format!("create {name}: {error}")
            }
        }
    } else if roll < 67 && !live.is_empty() {
        let name = pick(rng, &live);
        let records = model.live.remove(&name).expect("live");
        match store.drop_collection(&name).await {
            Ok(true) => format!("drop {name}: ok"),
            Ok(false) => format!("drop {name}: it was not there (the model disagrees)"),
            Err(error) => {
                model.unknown_drops.insert(name.clone(), records);
                format!("drop {name}: {error}")
            }
        }
    } else if roll < 75 {
        format!(
            "flush: {:?}",
            store.flush().await.map_err(|e| e.to_string())
        )
    } else if roll < 85 {
        let calls = rng.below(40);
        sim.crash_after(calls);
        format!("the process dies after {calls} more file-system calls")
    } else {
        String::from("restart")
    }
}

/// One seeded run; the error says what broke, with the steps that led there.
async fn run(seed: u64, skipped: Option<SyncSite>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sim = Arc::new(SimFs::new(seed));
    sim.skip_syncs(skipped);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut model = Model::default();
    let mut log = Vec::new();
    let verbose = std::env::var(SEED_ENV).is_ok();
    let fail = |log: &[String], message: String| {
        Err(format!(
            "seed {seed} (skipped {skipped:?}): {message}\nsteps:\n{}",
            log.join("\n")
        ))
    };
    let mut store = Some(open(&sim, dir.path()).await?);
    for n in 0..STEPS {
        let Some(current) = store.as_ref() else {
            break;
        };
        let line = step(current, &mut model, &mut rng, &sim, n).await;
        if line.contains("the model disagrees") {
            return fail(&log, line);
        }
        if verbose {
            eprintln!("{line}");
        }
        let restart = sim.has_crashed() || line == "restart";
        log.push(line);
        if restart {
            drop(store.take());
            let how = rng.below(3);
            match how {
                0 => sim.crash(),
                1 => sim.power_cut(),
                _ => sim.power_cut_tearing_last_write(),
            }
            let line = format!(
                "{} and reopen",
                ["crash", "power cut", "power cut tearing the last write"][how as usize]
            );
            if verbose {
                eprintln!("{line}");
            }
            log.push(line);
            match open(&sim, dir.path()).await {
                Ok(reopened) => {
                    if let Err(message) = model.check(&reopened).await {
                        return fail(&log, message);
                    }
                    store = Some(reopened);
                }
                Err(error) => return fail(&log, format!("reopen failed: {error}")),
            }
        }
    }
    drop(store);
    sim.power_cut();
    let reopened = match open(&sim, dir.path()).await {
        Ok(reopened) => reopened,
        Err(error) => return fail(&log, format!("the last reopen failed: {error}")),
    };
    if let Err(message) = model.check(&reopened).await {
        return fail(&log, message);
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    match std::env::var(SEED_ENV) {
        Ok(seed) => vec![seed.parse().expect("MAINSTAY_STORE_POWER_SEED is a number")],
        Err(_) => (0..RUNS).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_create_drop_write_or_delete_is_lost_at_a_power_cut() {
    for seed in seeds() {
        if let Err(message) = run(seed, None).await {
            panic!("{message}");
        }
    }
}

/// The syncs the store relies on: the WAL's group commit (writes and deletes), and the
/// catalog's atomic replace (creates and drops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sync_the_store_relies_on_is_needed() {
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
            "with the {site} sync skipped, no run lost an acknowledged change: the test cannot see it"
        );
    }
}
