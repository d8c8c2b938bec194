//! Simulated power loss: a seeded model test over [`SimFs`], and the same test run once per sync
//! site with that sync skipped.
//!
//! Each run drives a journal in `/journal` and an application snapshot in `/snapshot` (written
//! with `write_atomic`, followed by a trim of the covered segments) through random steps:
//! appends, commits, rotations (segments are 1 KiB), snapshots, failed fsyncs (with or without
//! the data reaching the disk), bit rot in an acknowledged frame, clean reopens, process crashes
//! at a random file-system call (the page cache survives) and power cuts (with or without the
//! last write torn). After every restart the application state (the snapshot plus the replayed
//! entries above it) is checked against a plain model:
//!
//! - every acknowledged entry is there with its bytes (an entry is acknowledged when its commit
//!   returned, and everything a replay returned counts as acknowledged from then on);
//! - nothing else is there but entries appended and not yet answered: not an entry whose writer
//!   was told its write failed, not bytes nobody appended;
//! - LSNs grow, also across failed writes, trims and restarts;
//! - bit rot in a frame with valid frames after it is refused as corruption naming the file, the
//!   offset and the number of valid frames after it, then recovered around with `SkipCorrupt`,
//!   losing that entry only, its segment kept in `corrupt/` for good.
//!
//! Environment: `MAINSTAY_JOURNAL_SEED` runs one seed and prints its steps,
//! `MAINSTAY_JOURNAL_RUNS` sets how many seeds the model test runs (default [`RUNS`]),
//! `MAINSTAY_JOURNAL_SKIP` (a [`SyncSite`] name) skips that sync, as the skip test does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mainstay_journal::fs::{FileSystem, SimFs, SyncFailure, SyncSite};
use mainstay_journal::{
    Journal, JournalConfig, Lsn, OpenError, RecoveryMode, Replay, WriteError, write_atomic,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIR: &str = "/journal";
const SNAPSHOT: &str = "/snapshot";
const SEED_ENV: &str = "MAINSTAY_JOURNAL_SEED";
const RUNS_ENV: &str = "MAINSTAY_JOURNAL_RUNS";
const SKIP_ENV: &str = "MAINSTAY_JOURNAL_SKIP";
/// Seeds the model test runs by default.
const RUNS: u64 = 250;
/// Steps of one run.
const STEPS: usize = 60;
/// Seeds tried per skipped sync site before concluding that nothing needs the sync.
const SKIP_RUNS: u64 = 250;

/// A failed check, with what is needed to re-run it.
struct Failure {
    seed: u64,
    skipped: Option<SyncSite>,
    message: String,
    log: Vec<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let skipped = self
            .skipped
            .map(|site| format!(" with the {site} sync skipped"))
            .unwrap_or_default();
        writeln!(
            formatter,
            "power-loss model failed for seed {:#x}{skipped}: {}",
            self.seed, self.message
        )?;
        let skip = self
            .skipped
            .map(|site| format!(" {SKIP_ENV}={site}"))
            .unwrap_or_default();
        writeln!(
            formatter,
            "re-run it with {SEED_ENV}={:#x}{skip} cargo nextest run -p mainstay-journal power_cuts --no-capture; last steps:",
            self.seed
        )?;
        let start = self.log.len().saturating_sub(40);
        for line in &self.log[start..] {
            writeln!(formatter, "  {line}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Restart {
    /// The process dies; the page cache survives.
    Crash,
    PowerCut,
    PowerCutTearing,
}

/// A frame found on disk with the documented format.
#[derive(Debug)]
struct DiskFrame {
    path: PathBuf,
    offset: usize,
    len: usize,
    lsn: u64,
}

/// One run of the model.
struct Run {
    sim: SimFs,
    rng: StdRng,
    config: JournalConfig,
    journal: Option<Journal>,
    /// Entries that must be in the application state.
    acked: BTreeMap<u64, Vec<u8>>,
    /// Entries appended whose outcome is unknown: they may or may not be there.
    pending: BTreeMap<u64, Vec<u8>>,
    /// LSNs whose writers were told the write failed: never to be seen.
    failed: BTreeSet<u64>,
    /// Copies of damaged segments recovery reported keeping, with their bytes.
    preserved: Vec<(PathBuf, Vec<u8>)>,
    cuts: u64,
    /// The simulated process is set to die after some calls (the model reads with
    /// `SimFs::peek`, which does not count).
    armed: bool,
    log: Vec<String>,
    verbose: bool,
    payloads: u64,
}

type Check = Result<(), String>;

impl Run {
    fn new(seed: u64, skipped: Option<SyncSite>, verbose: bool) -> Self {
        let sim = SimFs::new(seed);
        sim.skip_syncs(skipped);
        let mut rng = StdRng::seed_from_u64(seed);
        let preallocate_bytes = [0, 256, 2048][rng.random_range(0..3)];
        Run {
            sim,
            rng,
            config: JournalConfig {
                segment_bytes: 1024,
                preallocate_bytes,
                ..JournalConfig::default()
            },
            journal: None,
            acked: BTreeMap::new(),
            pending: BTreeMap::new(),
            failed: BTreeSet::new(),
            preserved: Vec::new(),
            cuts: 0,
            armed: false,
            log: Vec::new(),
            verbose,
            payloads: 0,
        }
    }

    fn note(&mut self, line: String) {
        if self.verbose {
            eprintln!("{line}");
        }
        self.log.push(line);
    }

    fn open(&self, recovery: RecoveryMode) -> Result<(Journal, Replay), OpenError> {
        // A view for this process: threads the previous one left behind cannot touch the disk.
        let fs: Arc<dyn FileSystem> = Arc::new(self.sim.process());
        let config = JournalConfig {
            recovery,
            ..self.config.clone()
        };
        Journal::open_with(fs, DIR, config)
    }

    fn payload(&mut self) -> Vec<u8> {
        self.payloads += 1;
        let mut payload = format!("payload {} ", self.payloads).into_bytes();
        let extra = self.rng.random_range(0..200);
        payload.extend((0..extra).map(|_| self.rng.random::<u8>()));
        payload
    }

    fn append(&mut self, count: usize) {
        for _ in 0..count {
            let payload = self.payload();
            let Some(journal) = &self.journal else {
                return;
            };
            match journal.append(&payload) {
                Ok(lsn) => {
                    self.pending.insert(lsn.get(), payload);
                }
                // Poisoned, or the process died: nothing was appended.
                Err(_) => return,
            }
        }
        self.note(format!("append {count} (pending {})", self.pending.len()));
    }

    fn commit(&mut self) -> Check {
        let (Some(journal), Some(&last)) = (&self.journal, self.pending.keys().next_back()) else {
            return Ok(());
        };
        match journal.commit_blocking(Lsn::new(last)) {
            Ok(()) => {
                let durable = journal.durable_lsn().get();
                if durable < last {
                    return Err(format!(
                        "commit of {last} returned with durable lsn {durable}"
                    ));
                }
                let done: Vec<u64> = self
                    .pending
                    .range(..=durable)
                    .map(|(lsn, _)| *lsn)
                    .collect();
                for lsn in done {
                    if let Some(payload) = self.pending.remove(&lsn) {
                        self.acked.insert(lsn, payload);
                    }
                }
                self.note(format!("commit up to {last}: acknowledged"));
            }
            Err(WriteError::Failed { reason }) if self.sim.has_crashed() => {
                // The process died during the commit: nobody heard an answer.
                self.note(format!("commit up to {last}: the process died ({reason})"));
                self.journal = None;
            }
            Err(WriteError::Failed { reason }) => {
                // An injected fsync failure: every entry not yet durable failed.
                let failed: Vec<u64> = self.pending.keys().copied().collect();
                self.note(format!(
                    "commit up to {last}: failed ({reason}): {failed:?}"
                ));
                self.failed.extend(failed);
                self.pending.clear();
                self.journal = None;
            }
            Err(other) => return Err(format!("commit of {last}: unexpected error {other}")),
        }
        Ok(())
    }

    /// Commits everything, writes a snapshot of the application state up to the durable LSN
    /// and trims the journal below it.
    fn snapshot(&mut self) -> Check {
        self.commit()?;
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        if !self.pending.is_empty() {
            return Ok(());
        }
        let covered = journal.durable_lsn().get();
        let bytes = encode_snapshot(covered, &self.acked);
        if let Err(error) = write_atomic(&self.sim, Path::new(SNAPSHOT), &bytes) {
            self.note(format!("snapshot up to {covered}: failed ({error})"));
            return Ok(());
        }
        let trimmed = journal.trim(Lsn::new(covered));
        self.note(format!("snapshot up to {covered}, trim: {trimmed:?}"));
        Ok(())
    }

    fn work(&mut self) -> Check {
        match self.rng.random_range(0..10) {
            0..4 => {
                let count = self.rng.random_range(1..6);
                self.append(count);
                Ok(())
            }
            4..6 => self.commit(),
            6..9 => {
                let count = self.rng.random_range(1..6);
                self.append(count);
                self.commit()
            }
            _ => self.snapshot(),
        }
    }

    fn restart(&mut self, how: Restart) -> Check {
        self.journal = None;
        self.armed = false;
        match how {
            Restart::Crash => self.sim.crash(),
            Restart::PowerCut => self.sim.power_cut(),
            Restart::PowerCutTearing => self.sim.power_cut_tearing_last_write(),
        }
        self.cuts += 1;
        self.note(format!("restart: {how:?}"));
        self.recover()
    }

    fn random_restart(&mut self) -> Restart {
        [Restart::Crash, Restart::PowerCut, Restart::PowerCutTearing][self.rng.random_range(0..3)]
    }

    /// Opens the journal after a restart (sometimes dying during recovery, which means another
    /// restart) and checks it.
    fn recover(&mut self) -> Check {
        if !self.armed && self.rng.random_ratio(1, 4) {
            let after = self.rng.random_range(0..20);
            self.note(format!("the process dies after {after} file-system calls"));
            self.sim.crash_after(after);
            self.armed = true;
        }
        match self.open(RecoveryMode::Refuse) {
            Ok((journal, replay)) => self.check(journal, &replay, &BTreeSet::new()),
            Err(error) if self.sim.has_crashed() => {
                self.note(format!("the process died opening: {error}"));
                let how = self.random_restart();
                self.restart(how)
            }
            Err(error) => Err(format!("open failed: {error}")),
        }
    }

    /// Checks the application state after an open against the model, then adopts it.
    fn check(&mut self, journal: Journal, replay: &Replay, lost: &BTreeSet<u64>) -> Check {
        self.note(format!(
            "open: {} entries, {:?}",
            replay.entries.len(),
            replay.report
        ));
        if let Some(pair) = replay
            .entries
            .windows(2)
            .find(|pair| pair[0].lsn >= pair[1].lsn)
        {
            return Err(format!(
                "replay out of order: {} then {}",
                pair[0].lsn, pair[1].lsn
            ));
        }
        let (covered, mut state) = match self.sim.peek(Path::new(SNAPSHOT)) {
            Ok(bytes) => decode_snapshot(&bytes)
                .ok_or_else(|| format!("the snapshot is damaged ({} bytes)", bytes.len()))?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => (0, BTreeMap::new()),
            Err(error) => return Err(format!("the snapshot is unreadable: {error}")),
        };
        for entry in &replay.entries {
            if entry.lsn.get() > covered {
                state.insert(entry.lsn.get(), entry.payload.clone());
            }
        }
        for (lsn, payload) in &self.acked {
            match state.get(lsn) {
                Some(found) if found == payload => {}
                Some(_) => return Err(format!("acknowledged entry {lsn} came back changed")),
                None if lost.contains(lsn) => {}
                None => return Err(format!("acknowledged entry {lsn} was lost")),
            }
        }
        for (lsn, payload) in &state {
            if self.failed.contains(lsn) {
                return Err(format!(
                    "entry {lsn}, whose writer was told it failed, came back"
                ));
            }
            match self.acked.get(lsn).or_else(|| self.pending.get(lsn)) {
                Some(expected) if expected == payload => {}
                Some(_) => return Err(format!("entry {lsn} came back with other bytes")),
                None => return Err(format!("entry {lsn} appeared but was never appended")),
            }
        }
        for (path, bytes) in &self.preserved {
            match self.sim.peek(path) {
                Ok(found) if found == *bytes => {}
                _ => {
                    return Err(format!(
                        "the copy of a damaged segment {} is gone or changed",
                        path.display()
                    ));
                }
            }
        }
        let next = journal.last_lsn().get() + 1;
        if let Some(highest) = self.failed.iter().chain(self.acked.keys()).max()
            && next <= *highest
        {
            return Err(format!(
                "the next lsn {next} is not above {highest}, already used"
            ));
        }
        // Everything replay returned is durable from now on.
        self.acked = state;
        self.pending.clear();
        self.journal = Some(journal);
        Ok(())
    }

    /// Flips a bit in an acknowledged frame that has valid frames after it, expects a refusal
    /// naming it, then recovers with `SkipCorrupt`.
    fn bit_rot(&mut self) -> Check {
        self.commit()?;
        if self.journal.is_none() || !self.pending.is_empty() {
            return Ok(());
        }
        self.journal = None;
        let frames = frames_on_disk(&self.sim)?;
        if frames.len() < 2 {
            return self.recover();
        }
        let index = self.rng.random_range(0..frames.len() - 1);
        let frame = &frames[index];
        let byte = frame.offset + self.rng.random_range(0..frame.len);
        let bit = self.rng.random_range(0..8);
        self.sim
            .flip_bit(&frame.path, byte as u64, bit)
            .map_err(|error| format!("flip: {error}"))?;
        let damaged = self
            .sim
            .peek(&frame.path)
            .map_err(|error| error.to_string())?;
        let after = (frames.len() - index - 1) as u64;
        self.note(format!(
            "bit rot: frame of lsn {} in {} at {} (byte {byte}), {after} valid frames after",
            frame.lsn,
            frame.path.display(),
            frame.offset
        ));
        match self.open(RecoveryMode::Refuse) {
            Err(OpenError::Corrupt {
                file,
                offset,
                valid_frames_after,
            }) if file == frame.path
                && offset == frame.offset as u64
                && valid_frames_after == after => {}
            other => {
                return Err(format!(
                    "bit rot at {} of {}: expected corruption with {after} valid frames after, got {:?}",
                    frame.offset,
                    frame.path.display(),
                    other.map(|(_, replay)| replay.report)
                ));
            }
        }
        let (journal, replay) = self
            .open(RecoveryMode::SkipCorrupt)
            .map_err(|error| format!("open with skip_corrupt failed: {error}"))?;
        let [corruption] = replay.report.corruption.as_slice() else {
            return Err(format!("expected one corruption, got {:?}", replay.report));
        };
        if !corruption
            .lost_lsns
            .as_ref()
            .is_some_and(|lost| lost.contains(&Lsn::new(frame.lsn)))
        {
            return Err(format!(
                "the lost lsns {:?} do not name {}",
                corruption.lost_lsns, frame.lsn
            ));
        }
        self.preserved.push((corruption.moved_to.clone(), damaged));
        let lost = BTreeSet::from([frame.lsn]);
        self.check(journal, &replay, &lost)
    }

    fn step(&mut self) -> Check {
        if self.journal.is_none() || self.sim.has_crashed() {
            let how = self.random_restart();
            return self.restart(how);
        }
        match self.rng.random_range(0..100) {
            0..70 => self.work(),
            70..73 => {
                let failure = if self.rng.random_bool(0.5) {
                    SyncFailure::DataWritten
                } else {
                    SyncFailure::DataLost
                };
                self.note(format!("the next group sync fails: {failure:?}"));
                self.sim.fail_next_sync(SyncSite::SegmentData, failure);
                let count = self.rng.random_range(1..4);
                self.append(count);
                self.commit()
            }
            73..85 => {
                let after = self.rng.random_range(0..40);
                self.note(format!("the process dies after {after} file-system calls"));
                self.sim.crash_after(after);
                self.armed = true;
                for _ in 0..self.rng.random_range(1..10) {
                    if self.sim.has_crashed() || self.journal.is_none() {
                        break;
                    }
                    self.work()?;
                }
                let how = self.random_restart();
                self.restart(how)
            }
            85..93 => {
                let how = self.random_restart();
                self.restart(how)
            }
            93..97 => {
                self.journal = None;
                self.note("clean reopen".to_owned());
                self.recover()
            }
            _ if self.armed => self.work(),
            _ => self.bit_rot(),
        }
    }
}

/// Runs one seed; returns the number of restarts (crashes and power cuts).
fn run(seed: u64, skipped: Option<SyncSite>, verbose: bool) -> Result<u64, Failure> {
    let mut run = Run::new(seed, skipped, verbose);
    let mut result = run.recover();
    for _ in 0..STEPS {
        if result.is_err() {
            break;
        }
        result = run.step();
    }
    if result.is_ok() {
        result = run.restart(Restart::PowerCutTearing);
    }
    match result {
        Ok(()) => Ok(run.cuts),
        Err(message) => Err(Failure {
            seed,
            skipped,
            message,
            log: run.log,
        }),
    }
}

fn encode_snapshot(covered: u64, entries: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
    let mut out = covered.to_le_bytes().to_vec();
    for (lsn, payload) in entries.range(..=covered) {
        out.extend_from_slice(&lsn.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }
    let checksum = crc32c::crc32c(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

fn decode_snapshot(bytes: &[u8]) -> Option<(u64, BTreeMap<u64, Vec<u8>>)> {
    let (body, checksum) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(checksum.try_into().ok()?) {
        return None;
    }
    let covered = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    let mut entries = BTreeMap::new();
    let mut rest = &body[8..];
    while !rest.is_empty() {
        let lsn = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        let len = u32::from_le_bytes(rest.get(8..12)?.try_into().ok()?) as usize;
        entries.insert(lsn, rest.get(12..12 + len)?.to_vec());
        rest = &rest[12 + len..];
    }
    Some((covered, entries))
}

/// Every valid frame of the journal's segments, in log order, read with the documented format.
fn frames_on_disk(sim: &SimFs) -> Result<Vec<DiskFrame>, String> {
    let names: Vec<_> = sim
        .peek_dir(Path::new(DIR))
        .map_err(|error| error.to_string())?
        .into_iter()
        .filter(|name| name.to_string_lossy().ends_with(".seg"))
        .collect();
    let mut frames = Vec::new();
    for name in names {
        let path = Path::new(DIR).join(name);
        let data = sim.peek(&path).map_err(|error| error.to_string())?;
        let mut offset = 24;
        while let Some(head) = data.get(offset..offset + 16) {
            let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
            let Some(payload) = data.get(offset + 16..offset + 8 + len).filter(|_| len >= 8) else {
                break;
            };
            let crc = crc32c::crc32c_append(
                crc32c::crc32c_append(crc32c::crc32c(payload), &head[..4]),
                &head[8..16],
            );
            if crc != u32::from_le_bytes(head[4..8].try_into().unwrap()) {
                break;
            }
            frames.push(DiskFrame {
                path: path.clone(),
                offset,
                len: 8 + len,
                lsn: u64::from_le_bytes(head[8..16].try_into().unwrap()),
            });
            offset += 8 + len;
        }
    }
    Ok(frames)
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[test]
fn power_cuts_never_lose_an_acknowledged_entry() {
    let started = Instant::now();
    let (seeds, verbose) = match env_u64(SEED_ENV) {
        Some(seed) => (seed..seed + 1, true),
        None => (0..env_u64(RUNS_ENV).unwrap_or(RUNS), false),
    };
    // A failure of the skip test is re-run here with the site it skipped.
    let skipped = std::env::var(SKIP_ENV).ok().map(|name| {
        *SyncSite::ALL
            .iter()
            .find(|site| site.name() == name)
            .unwrap_or_else(|| panic!("{SKIP_ENV}: no sync site is named {name}"))
    });
    let runs = seeds.end - seeds.start;
    let mut cuts = 0;
    for seed in seeds {
        match run(seed, skipped, verbose) {
            Ok(restarts) => cuts += restarts,
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!(
        "{runs} seeds, {cuts} crashes and power cuts, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if runs == RUNS {
        assert!(cuts >= 2000, "only {cuts} crashes and power cuts");
    }
}

#[test]
fn every_sync_site_is_needed() {
    // Each sync skipped in turn (as if its call were deleted) must make the model fail on some
    // seed; two threads share the sites.
    let started = Instant::now();
    let sites: Vec<SyncSite> = SyncSite::ALL.to_vec();
    let results: Vec<(SyncSite, Option<Failure>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = sites
            .chunks(sites.len().div_ceil(2))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|site| {
                            let found =
                                (0..SKIP_RUNS).find_map(|seed| run(seed, Some(*site), false).err());
                            (*site, found)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    });
    let mut uncovered = Vec::new();
    for (site, found) in results {
        match found {
            Some(failure) => eprintln!(
                "{site} skipped: seed {:#x} fails: {}",
                failure.seed, failure.message
            ),
            None => uncovered.push(site),
        }
    }
    eprintln!(
        "every sync skipped in turn in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        uncovered.is_empty(),
        "with these syncs skipped, {SKIP_RUNS} seeds still pass, so no test shows they are needed: {uncovered:?}"
    );
}

/// Concurrent writers (async tasks and blocking threads, so that leaders hand over and rotations
/// race appends) until the process dies at a random file-system call, then a torn power cut:
/// every write acknowledged before is there, once, in order, and nothing else.
#[test]
fn concurrent_writers_keep_every_acknowledged_entry_through_a_crash() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for seed in 0..40_u64 {
        let sim = SimFs::new(seed);
        // A slow disk: each group sync gives the CPU away, so that writers append meanwhile.
        let fs: Arc<dyn FileSystem> = Arc::new(crate::HookFs::new(sim.clone(), |site| {
            if site == SyncSite::SegmentData {
                for _ in 0..50 {
                    std::thread::yield_now();
                }
            }
        }));
        let config = JournalConfig {
            segment_bytes: 1024,
            preallocate_bytes: 256,
            ..JournalConfig::default()
        };
        let (journal, _) = Journal::open_with(Arc::clone(&fs), DIR, config.clone()).unwrap();
        sim.crash_after(100 + seed * 37);
        let acked = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let tasks: Vec<_> = (0..6)
            .map(|writer| {
                let journal = journal.clone();
                let acked = Arc::clone(&acked);
                runtime.spawn(async move {
                    for n in 0.. {
                        let payload = format!("task {writer} entry {n}").into_bytes();
                        let Ok(lsn) = journal.write(&payload).await else {
                            return;
                        };
                        acked.lock().unwrap().insert(lsn.get(), payload);
                    }
                })
            })
            .collect();
        let threads: Vec<_> = (0..2)
            .map(|writer| {
                let journal = journal.clone();
                let acked = Arc::clone(&acked);
                std::thread::spawn(move || {
                    for n in 0.. {
                        let payload = format!("thread {writer} entry {n}").into_bytes();
                        let Ok(lsn) = journal.append(&payload) else {
                            return;
                        };
                        if journal.commit_blocking(lsn).is_err() {
                            return;
                        }
                        acked.lock().unwrap().insert(lsn.get(), payload);
                    }
                })
            })
            .collect();
        for task in tasks {
            runtime.block_on(task).unwrap();
        }
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(
            sim.has_crashed(),
            "seed {seed}: the writers stopped before the crash"
        );
        drop(journal);
        sim.power_cut_tearing_last_write();

        let (_, replay) = Journal::open_with(fs, DIR, config).unwrap();
        let acked = acked.lock().unwrap();
        assert!(acked.len() > 10, "seed {seed}: only {} writes", acked.len());
        let found: BTreeMap<u64, Vec<u8>> = replay
            .entries
            .iter()
            .map(|entry| (entry.lsn.get(), entry.payload.clone()))
            .collect();
        assert_eq!(
            found.len(),
            replay.entries.len(),
            "seed {seed}: an lsn twice"
        );
        assert!(
            replay
                .entries
                .windows(2)
                .all(|pair| pair[0].lsn < pair[1].lsn),
            "seed {seed}: out of order"
        );
        for (lsn, payload) in acked.iter() {
            assert_eq!(
                found.get(lsn),
                Some(payload),
                "seed {seed}: acknowledged {lsn} lost"
            );
        }
        let written = |payload: &[u8]| {
            let text = String::from_utf8_lossy(payload);
            text.starts_with("task ") || text.starts_with("thread ")
        };
        assert!(
            found.values().all(|payload| written(payload)),
            "seed {seed}: bytes nobody wrote"
        );
    }
}
