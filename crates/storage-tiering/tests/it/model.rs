//! The model-based fault test of the record store: seeded random sequences of operations (puts,
//! batches, deletes, collections created, dropped and re-created, flushes, compactions, orphan
//! collection, clean restarts, crashes, object-store faults, a broken catalog write and a second
//! writer taking over the prefix) run against the store and against a plain in-memory model (a
//! `BTreeMap` per collection), and after every step every record of every collection is read back
//! through `get` and through a paged listing and compared with the model.
//!
//! - A write the store acknowledged updates the model; one that returned an error must leave no
//!   trace, now and after any later restart or crash. A write cut off by a SIGKILL may be present
//!   or absent (all of a batch or none of it); the first read after the restart decides which, and
//!   the model follows from then on.
//! - While an object-store fault is active, reads that need the store may answer
//!   `ReadError::Unavailable` (or hang, cut short by the harness) and listings may be degraded, but
//!   never a wrong value or a false "not found"; `memory` collections never depend on the store.
//!   Once the fault is healed (and the breaker's open duration has passed) everything is exact.
//! - Crashes: in-process, the store's runtime is dropped without `close` (every task dies with it);
//!   in at least 10% of the sequences the store runs in a child process (this test binary,
//!   re-executed, driven over stdin/stdout with one JSON line per command) that is SIGKILLed,
//!   sometimes while a write is in flight. Those sequences keep their objects in a `file://` store
//!   so that they survive the kill.
//! - Time is paused tokio time (one runtime per store incarnation): the background compaction,
//!   orphan collection, upload retries and the breaker run on it without sleeping.
//!
//! Environment: `MAINSTAY_MODEL_SEQUENCES` (default 300), `MAINSTAY_MODEL_SEED` (run that one seed
//! and print its steps), `MAINSTAY_MODEL_MINUTES` (fresh random seeds for that long; `cargo xtask
//! soak storage --minutes N`), `MAINSTAY_MODEL_ALL_FAILURES` (keep going after a failure and
//! summarise every kind found). A failure prints its seed and the shortest step list found by
//! removing steps while it still fails, as Rust to paste into `regressions()`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child as Process, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt as _;
use mainstay_resilience::BreakerConfig;
use mainstay_storage_tiering::{
    CollectionError, DLQ_QUEUE, ListQuery, MaintenanceError, ReadError, Store, StoreConfig,
    TieringPolicy, WriteError,
};
use object_store::ObjectStore;
use object_store::ObjectStoreExt as _;
use object_store::memory::InMemory;
use serde::{Deserialize, Serialize};

use crate::common::{FaultStore, Mode};

/// Seeds that found bugs; they run before the others (with their generated steps).
const REGRESSIONS: &[u64] = &[];

/// Shrunk step lists of the bugs this test found (issue 12), run first; the seed gives the
/// configuration. Each failed on the code of the issue as its comment says.
fn regressions() -> Vec<(u64, Vec<Step>)> {
    vec![
        // Point 3: a create whose catalog write failed answered an error, yet the collection was
        // live (the collections differ from the model).
        (
            0x5eed_0002,
            vec![Step::BreakCatalog, Step::Create { c: 2, p: P::S3Only }],
        ),
        // Point 3 (and 10): a failed drop removed the collection anyway, the failed create made a
        // new one that acknowledged writes, and the restart brought back the old one: the
        // acknowledged batch is lost.
        (
            0x5eed_0007,
            vec![
                Step::Create { c: 1, p: P::S3Only },
                Step::BreakCatalog,
                Step::Recreate { c: 1, p: P::S3Only },
                Step::Write(W::Batch {
                    c: 1,
                    kv: vec![(0, 15), (0, 16), (6, 17), (10, 18)],
                }),
                Step::Restart,
            ],
        ),
        // Point 1: the background compaction merged the two small segments around a large one;
        // the output took the newest LSN, so `get` found the older value first.
        (
            0x5eed_0009,
            vec![
                Step::Create {
                    c: 2,
                    p: P::MemoryS3,
                },
                Step::Write(W::Put { c: 2, k: 0, v: 6 }),
                Step::Restart,
                Step::Write(W::Put { c: 2, k: 0, v: 24 }),
                Step::Restart,
                Step::Write(W::Put { c: 2, k: 7, v: 32 }),
                Step::Restart,
                Step::Advance { ms: 25_000 },
            ],
        ),
        // Point 1: the same with a tombstone, which then hid a newer value (a lost record).
        (
            0x5eed_0025,
            vec![
                Step::Create {
                    c: 2,
                    p: P::MemoryS3,
                },
                Step::Write(W::Delete { c: 2, k: 0 }),
                Step::Flush,
                Step::Write(W::Batch {
                    c: 2,
                    kv: vec![(7, 9), (7, 10), (10, 11), (5, 12), (0, 13), (3, 14)],
                }),
                Step::Restart,
                Step::Write(W::Put { c: 2, k: 9, v: 53 }),
                Step::Restart,
                Step::Advance { ms: 25_000 },
            ],
        ),
        // Point 4: a failed commit retired its manifest version; after the takeover the old
        // writer's drop landed at the next version, the new writer was fenced and lost the
        // collection's committed records at its restart. (Found by seed 0x5eed00b1.)
        (
            0x5eed_00b1,
            vec![
                Step::Create { c: 1, p: P::S3Only },
                Step::Write(W::Put { c: 1, k: 6, v: 5 }),
                Step::Flush,
                Step::Advance { ms: 10 },
                Step::Fault(F::FailManifests),
                Step::Drop { c: 1 },
                Step::Fault(F::Healthy),
                Step::Takeover,
                Step::Stale(S::Drop { c: 1 }),
                Step::Restart,
            ],
        ),
        // Point 5: the writer taken over from acknowledged a write.
        (
            0x5eed_0012,
            vec![
                Step::Create { c: 3, p: P::S3Only },
                Step::Takeover,
                Step::Stale(S::Write(W::Put { c: 3, k: 8, v: 3 })),
            ],
        ),
        // Point 7: a damaged local segment whose records the WAL still held made open fail.
        (
            0x5eed_000c,
            vec![
                Step::Create { c: 3, p: P::S3Only },
                Step::Write(W::Put { c: 3, k: 7, v: 2 }),
                Step::Flush,
                Step::Crash {
                    write: None,
                    yields: 14,
                    corrupt: true,
                },
            ],
        ),
        // Point 9: the collection was dropped and re-created while its segment uploaded slowly;
        // the old segment was committed under the new collection and its record came back.
        // (Found by seed 0x5eed0004. A race: the upload must be taken before the drop and
        // finish after the create; this list hits it in about two runs of three, so regressions
        // run several times.)
        (
            0x5eed_0004,
            vec![
                Step::Create { c: 0, p: P::S3Only },
                Step::Write(W::Put { c: 0, k: 0, v: 2 }),
                Step::Create { c: 2, p: P::S3Only },
                Step::Fault(F::Slow),
                Step::Write(W::Put { c: 2, k: 1, v: 6 }),
                Step::Flush,
                Step::Recreate { c: 2, p: P::S3Only },
                Step::Restart,
            ],
        ),
        // Found by a soak after the fixes (fresh seed 0xbc8a591899924cdb): the segment holding
        // k9=v3 was pinned for the DLQ; after a restart during an outage the committed segment
        // holding the newer k9=v4 could not be read, and the degraded listing showed v3. A
        // degraded listing now leaves out entries older than a segment it could not read.
        (
            0xbc8a_5918_9992_4cdb,
            vec![
                Step::Create {
                    c: 3,
                    p: P::MemoryS3,
                },
                Step::Fault(F::Fail),
                Step::Write(W::Put { c: 3, k: 9, v: 3 }),
                Step::Restart,
                Step::Write(W::Put { c: 3, k: 9, v: 4 }),
                Step::Crash {
                    write: Some(W::Put { c: 1, k: 2, v: 71 }),
                    yields: 26,
                    corrupt: false,
                },
                Step::Restart,
                Step::Fault(F::Fail),
                Step::Restart,
            ],
        ),
        // Found by a soak (fresh seed 0xbc8a5918999250d6): a collection dropped while the store,
        // restarted during an outage, had not claimed its prefix yet; `wait_uploaded` said all
        // was uploaded, and a writer taking over found the collection in the manifest. It now
        // waits for the claim.
        (
            0xbc8a_5918_9992_50d6,
            vec![
                Step::Create {
                    c: 1,
                    p: P::MemoryS3,
                },
                Step::Restart,
                Step::Fault(F::Fail),
                Step::Restart,
                Step::Drop { c: 1 },
                Step::Takeover,
            ],
        ),
        // Found by a soak (fresh seed 0xfd15bbfd19fc595b): uploads timed out on a hanging store
        // and opened the breaker; the collection they were for was dropped, so nothing was left
        // to upload and nothing made the breaker's half-open trial. Reads answered "the breaker
        // is open" long after the store was back. A read is now the trial once the open duration
        // has passed.
        (
            0xfd15_bbfd_19fc_595b,
            vec![
                Step::Create { c: 2, p: P::S3Only },
                Step::Write(W::Batch {
                    c: 2,
                    kv: vec![(11, 2), (11, 3), (10, 4), (7, 5)],
                }),
                Step::Create { c: 0, p: P::S3Only },
                Step::Restart,
                Step::Write(W::Put { c: 2, k: 10, v: 6 }),
                Step::Flush,
                Step::Fault(F::Healthy),
                Step::Fault(F::Hang),
                Step::Write(W::Batch {
                    c: 0,
                    kv: vec![(8, 7), (8, 8), (9, 9), (1, 10), (6, 11), (11, 12)],
                }),
                Step::Compact { c: 2 },
                Step::Recreate { c: 0, p: P::Memory },
            ],
        ),
    ]
}

/// How often each of `regressions()` runs.
const REGRESSION_RUNS: usize = 5;

/// Collections `c0`..`c3` and record ids `k00`..`k11`: a small space, so that ids are overwritten,
/// deleted and re-created often, and every id is read after every step.
const COLLECTIONS: u8 = 4;
const KEYS: u8 = 12;
/// The object-store prefix of every store.
const PREFIX: &str = "m";
/// One sequence in this many runs in a child process (at least 10% are required).
const CHILD_EVERY: u64 = 8;
const CHILD_ENV: &str = "MAINSTAY_MODEL_CHILD";
/// The longest a single read or listing page may take (paused time) before it counts as hung.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long (paused time) a command may wait on a hanging object store before the harness heals
/// the store to let it finish.
const HANG_LIMIT: Duration = Duration::from_secs(120);
/// How long the parent waits for a child's answer (real time) before it calls the child stuck.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Steps and their generation.

/// A tiering policy, as steps name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum P {
    Memory,
    MemoryS3,
    S3Only,
}

impl P {
    fn policy(self) -> TieringPolicy {
        match self {
            P::Memory => TieringPolicy::Memory,
            P::MemoryS3 => TieringPolicy::MemoryS3,
            P::S3Only => TieringPolicy::S3Only,
        }
    }
}

/// An object-store fault (or its absence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum F {
    /// Healthy again; the harness then waits out the breaker's open duration.
    Healthy,
    /// Every call fails like a 503 (puts, gets, listings, deletes).
    Fail,
    /// Only manifest puts (commits) fail.
    FailManifests,
    /// Segment puts and the next manifest put land but report a failure.
    Ambiguous,
    /// Every call waits until the fault changes.
    Hang,
    /// Every call is delayed a little.
    Slow,
    /// Writes fail like a 403 (uploads go to the DLQ).
    Forbidden,
}

/// A record write, as steps and the crash step name it. `v` numbers a value (see [`value`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum W {
    Put { c: u8, k: u8, v: u32 },
    Batch { c: u8, kv: Vec<(u8, u32)> },
    Delete { c: u8, k: u8 },
}

/// What a writer that another one took over from is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum S {
    Write(W),
    Drop { c: u8 },
    Flush,
    Compact { c: u8 },
    CollectOrphans,
}

/// One step of a sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Step {
    Write(W),
    Create {
        c: u8,
        p: P,
    },
    Drop {
        c: u8,
    },
    /// Drop and create again at once (no read in between).
    Recreate {
        c: u8,
        p: P,
    },
    Flush,
    Compact {
        c: u8,
    },
    CollectOrphans,
    /// Lets paused time run forward (background compaction, orphan collection, retries).
    Advance {
        ms: u64,
    },
    Fault(F),
    /// Makes `data/catalog.json.tmp` a directory, so that catalog writes fail.
    BreakCatalog,
    FixCatalog,
    /// `close` and open again.
    Restart,
    /// Kill the store (SIGKILL for a child, a dropped runtime in-process), with `write` in flight
    /// after `yields` scheduler turns (or microseconds, for a child); `corrupt` damages a local
    /// segment that the WAL still covers (one neither committed nor pinned) before the reopen.
    Crash {
        write: Option<W>,
        yields: u8,
        corrupt: bool,
    },
    /// A second store opens on the prefix with a fresh data directory and becomes the writer.
    Takeover,
    /// The writer that was taken over from is asked to do something.
    Stale(S),
}

/// The value numbered `n`: unique per sequence, mostly small, now and then large enough to fill
/// a memtable in a few writes.
fn value(n: u32) -> String {
    let len = if n % 7 == 3 {
        300 + (n as usize * 37) % 700
    } else {
        (n as usize * 13) % 40
    };
    format!("v{n}-{}", "x".repeat(len))
}

fn coll(c: u8) -> String {
    format!("c{c}")
}

fn key(k: u8) -> String {
    format!("k{k:02}")
}

/// SplitMix64: small, seeded, good enough to pick steps.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x6a09_e667_f3bc_c909)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// The per-sequence configuration, drawn from the seed.
#[derive(Debug, Clone)]
struct SeqConfig {
    /// Whether the store runs in a child process (SIGKILLed at its crash steps).
    child: bool,
    memtable_bytes: u64,
    min_segments: usize,
    max_attempts: u32,
    max_backlog_bytes: u64,
    page: usize,
    parallelism: usize,
    batch_segments: usize,
}

impl SeqConfig {
    fn draw(rng: &mut Rng) -> Self {
        let memtable_bytes = rng.pick(&[1024, 2048, 4096]);
        Self {
            child: false,
            memtable_bytes,
            min_segments: 2 + rng.below(3) as usize,
            max_attempts: rng.pick(&[2, 1000]),
            max_backlog_bytes: memtable_bytes * (4 + rng.below(9)),
            page: 1 + rng.below(4) as usize,
            parallelism: 1 + rng.below(3) as usize,
            batch_segments: 1 + rng.below(4) as usize,
        }
    }

    /// The breaker's open duration: after a heal the harness waits this long (paused time).
    const OPEN: Duration = Duration::from_millis(300);

    fn store_config(&self, data_dir: &Path) -> StoreConfig {
        let mut cfg = StoreConfig {
            data_dir: data_dir.to_path_buf(),
            memtable_bytes: self.memtable_bytes,
            block_bytes: 512,
            wal_segment_bytes: 4096,
            ..StoreConfig::default()
        };
        cfg.upload.breaker = BreakerConfig {
            minimum_calls: 3,
            half_open_successes: 1,
            ..BreakerConfig::failure_rate(0.5, Duration::from_secs(2), Self::OPEN)
        };
        cfg.upload.base_delay = Duration::from_millis(5);
        cfg.upload.max_delay = Duration::from_millis(80);
        cfg.upload.breaker_poll_interval = Duration::from_millis(50);
        cfg.upload.attempt_timeout = Duration::from_millis(100);
        cfg.upload.max_attempts = self.max_attempts;
        cfg.upload.max_backlog_bytes = self.max_backlog_bytes;
        cfg.upload.backpressure_retry_after = Duration::from_millis(50);
        cfg.upload.parallelism = self.parallelism;
        cfg.upload.batch_segments = self.batch_segments;
        cfg.compaction.enabled = true;
        cfg.compaction.min_segments = self.min_segments;
        cfg.compaction.interval = Duration::from_secs(20);
        cfg.compaction.grace_period = Duration::from_secs(30);
        cfg.compaction.collect_orphans = true;
        cfg
    }
}

/// A sequence: its configuration and steps, both from the seed.
fn generate(seed: u64) -> (SeqConfig, Vec<Step>) {
    let mut rng = Rng::new(seed);
    let mut cfg = SeqConfig::draw(&mut rng);
    // One seed in eight runs its store in a child process: of consecutive seeds, 12.5%.
    cfg.child = seed.is_multiple_of(CHILD_EVERY);
    let count = 40 + rng.below(17) as usize;
    let mut steps = Vec::with_capacity(count + 2);
    // What the generator expects to exist (steps may fail: this only steers the choices).
    let mut exists: [Option<P>; COLLECTIONS as usize] = [None; COLLECTIONS as usize];
    let mut next_value = 1u32;
    let mut took_over = false;
    let policies = [P::Memory, P::MemoryS3, P::S3Only];
    for _ in 0..2 {
        let c = rng.below(u64::from(COLLECTIONS)) as u8;
        let p = rng.pick(&policies);
        exists[c as usize] = Some(p);
        steps.push(Step::Create { c, p });
    }
    let write = |rng: &mut Rng, exists: &[Option<P>], next_value: &mut u32| -> W {
        let live: Vec<u8> = (0..COLLECTIONS)
            .filter(|c| exists[*c as usize].is_some())
            .collect();
        let c = if live.is_empty() || rng.chance(0.05) {
            rng.below(u64::from(COLLECTIONS)) as u8
        } else {
            rng.pick(&live)
        };
        let mut v = || {
            *next_value += 1;
            *next_value
        };
        match rng.below(10) {
            0..=5 => W::Put {
                c,
                k: rng.below(u64::from(KEYS)) as u8,
                v: v(),
            },
            6 | 7 => {
                let n = 1 + rng.below(6);
                W::Batch {
                    c,
                    // Ids may repeat within a batch: the later one wins.
                    kv: (0..n)
                        .map(|_| (rng.below(u64::from(KEYS)) as u8, v()))
                        .collect(),
                }
            }
            _ => W::Delete {
                c,
                k: rng.below(u64::from(KEYS)) as u8,
            },
        }
    };
    while steps.len() < count {
        if rng.chance(0.04) {
            let c = rng.below(u64::from(COLLECTIONS)) as u8;
            let mut v = || {
                next_value += 1;
                next_value
            };
            let put = |k: u8, v: u32| Step::Write(W::Put { c, k, v });
            // Scenarios the bugs of the past needed, more likely than by chance.
            match rng.below(3) {
                // A commit fails (its version is retired), the store heals, another writer takes
                // over, and the first one tries to commit again.
                0 => {
                    took_over = true;
                    let p = rng.pick(&[P::MemoryS3, P::S3Only]);
                    if exists[c as usize].is_none() {
                        exists[c as usize] = Some(p);
                        steps.push(Step::Create { c, p });
                    }
                    steps.extend([
                        put(rng.below(u64::from(KEYS)) as u8, v()),
                        Step::Flush,
                        Step::Fault(F::FailManifests),
                        if rng.chance(0.5) {
                            Step::Compact { c }
                        } else {
                            Step::Drop { c }
                        },
                        Step::Fault(F::Healthy),
                        Step::Takeover,
                        Step::Stale(if rng.chance(0.5) {
                            S::Drop { c }
                        } else {
                            S::Compact { c }
                        }),
                    ]);
                    for p in &mut exists {
                        if *p == Some(P::Memory) {
                            *p = None;
                        }
                    }
                }
                // A collection is dropped and re-created while its segment uploads slowly.
                1 => {
                    let p = rng.pick(&policies);
                    exists[c as usize] = Some(p);
                    steps.extend([
                        Step::Fault(F::Slow),
                        put(rng.below(u64::from(KEYS)) as u8, v()),
                        Step::Flush,
                        Step::Recreate { c, p },
                        Step::Advance { ms: 200 },
                        Step::Restart,
                    ]);
                }
                // Small, large and small segments (size tiers) with an id overwritten across
                // them, then the background compaction.
                _ => {
                    let k = rng.below(u64::from(KEYS)) as u8;
                    steps.push(put(k, v()));
                    steps.push(Step::Restart);
                    steps.push(if rng.chance(0.5) {
                        put(k, v())
                    } else {
                        Step::Write(W::Delete { c, k })
                    });
                    for _ in 0..(2 + rng.below(4)) {
                        // Values numbered 3 mod 7 are the large ones.
                        let large = loop {
                            let n = v();
                            if n % 7 == 3 {
                                break n;
                            }
                        };
                        steps.push(put(rng.below(u64::from(KEYS)) as u8, large));
                    }
                    steps.push(Step::Restart);
                    steps.push(put(rng.below(u64::from(KEYS)) as u8, v()));
                    steps.push(Step::Restart);
                    steps.push(Step::Advance { ms: 25_000 });
                }
            }
            continue;
        }
        let roll = rng.below(1000);
        let step = match roll {
            0..=399 => Step::Write(write(&mut rng, &exists, &mut next_value)),
            400..=449 => {
                let c = rng.below(u64::from(COLLECTIONS)) as u8;
                let p = rng.pick(&policies);
                exists[c as usize] = Some(p);
                Step::Create { c, p }
            }
            450..=479 => {
                let c = rng.below(u64::from(COLLECTIONS)) as u8;
                exists[c as usize] = None;
                Step::Drop { c }
            }
            480..=509 => {
                let c = rng.below(u64::from(COLLECTIONS)) as u8;
                let p = rng.pick(&policies);
                exists[c as usize] = Some(p);
                Step::Recreate { c, p }
            }
            510..=569 => Step::Flush,
            570..=609 => Step::Compact {
                c: rng.below(u64::from(COLLECTIONS)) as u8,
            },
            610..=629 => Step::CollectOrphans,
            630..=689 => Step::Advance {
                ms: rng.pick(&[10, 200, 3_000, 25_000, 40_000]),
            },
            690..=779 => Step::Fault(if rng.chance(0.45) {
                F::Healthy
            } else {
                rng.pick(&[
                    F::Fail,
                    F::Fail,
                    F::FailManifests,
                    F::Ambiguous,
                    F::Hang,
                    F::Slow,
                    F::Slow,
                    F::Forbidden,
                ])
            }),
            780..=794 => Step::BreakCatalog,
            795..=809 => Step::FixCatalog,
            810..=859 => Step::Restart,
            860..=919 => {
                let in_flight = rng.chance(0.5);
                Step::Crash {
                    write: in_flight.then(|| write(&mut rng, &exists, &mut next_value)),
                    yields: rng.below(40) as u8,
                    corrupt: !in_flight && rng.chance(0.4),
                }
            }
            920..=939 => {
                took_over = true;
                for p in &mut exists {
                    if *p == Some(P::Memory) {
                        *p = None;
                    }
                }
                Step::Takeover
            }
            _ if took_over => Step::Stale(match rng.below(6) {
                0..=2 => S::Write(write(&mut rng, &exists, &mut next_value)),
                3 => S::Drop {
                    c: rng.below(u64::from(COLLECTIONS)) as u8,
                },
                4 => S::Flush,
                _ => {
                    if rng.chance(0.5) {
                        S::Compact {
                            c: rng.below(u64::from(COLLECTIONS)) as u8,
                        }
                    } else {
                        S::CollectOrphans
                    }
                }
            }),
            _ => Step::Write(write(&mut rng, &exists, &mut next_value)),
        };
        steps.push(step);
    }
    // A child-process sequence is SIGKILLed at least once.
    if cfg.child && !steps.iter().any(|s| matches!(s, Step::Crash { .. })) {
        let at = 2 + rng.below((steps.len() - 2) as u64) as usize;
        steps.insert(
            at,
            Step::Crash {
                write: Some(write(&mut rng, &exists, &mut next_value)),
                yields: rng.below(40) as u8,
                corrupt: false,
            },
        );
    }
    steps.retain(|step| !left_out(step));
    (cfg, steps)
}

/// Whether `MAINSTAY_MODEL_WITHOUT` (a comma-separated list of `catalog`, `takeover`,
/// `stale-writes`, `crash`, `corrupt`, `faults`, `recreate`) leaves this step out: to look past a
/// known bug for the next.
fn left_out(step: &Step) -> bool {
    let Ok(without) = std::env::var("MAINSTAY_MODEL_WITHOUT") else {
        return false;
    };
    let names: Vec<&str> = without.split(',').map(str::trim).collect();
    let kind = match step {
        Step::BreakCatalog | Step::FixCatalog => "catalog",
        Step::Stale(S::Write(_)) if names.contains(&"stale-writes") => "stale-writes",
        Step::Takeover | Step::Stale(_) => "takeover",
        Step::Crash { corrupt: true, .. } if names.contains(&"corrupt") => "corrupt",
        Step::Crash { .. } => "crash",
        Step::Fault(_) => "faults",
        Step::Recreate { .. } => "recreate",
        _ => return false,
    };
    names.contains(&kind)
}

// ---------------------------------------------------------------------------------------------
// Commands to a store and what it answers (one JSON line each way for a child process).

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Cmd {
    Write(W),
    Create { c: u8, p: P },
    Drop { c: u8 },
    Recreate { c: u8, p: P },
    Flush,
    Compact { c: u8 },
    CollectOrphans,
    CheckFencing,
    Advance { ms: u64 },
    Fault(F),
    WaitUploaded { ms: u64 },
    Pinned,
    Observe { page: usize },
    Close { ms: u64 },
}

/// How an operation failed, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    UnknownCollection,
    AlreadyExists,
    Fenced,
    Backpressure,
    Wal,
    Closed,
    ObjectStore,
    Io,
    Deadline,
    /// The input was refused as invalid (never expected: the harness sends valid input).
    Invalid,
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Failure {
    kind: Kind,
    message: String,
}

type Outcome = Result<(), Failure>;

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Reply {
    Opened(Result<(), String>),
    Done(Outcome),
    Dropped(Result<bool, Failure>),
    Recreated(Result<bool, Failure>, Outcome),
    Pinned(Vec<String>),
    Observed(Observation),
}

/// A reply, and whether the harness had to heal the object store for the command to finish.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Answer {
    reply: Reply,
    healed: bool,
}

/// One read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Read {
    Value(String),
    Missing,
    UnknownCollection,
    Unavailable(String),
    Hung,
    Error(String),
}

/// How a paged listing ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum ListEnd {
    Complete,
    UnknownCollection,
    Unavailable(String),
    Hung,
    Error(String),
    /// More pages than records could need: the cursor does not advance.
    Loop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Listing {
    records: Vec<(String, String)>,
    degraded: bool,
    end: ListEnd,
}

/// Everything the store shows: its collections and, for every collection name and id of the
/// sequence's space, a `get` and a paged listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Observation {
    collections: Vec<(String, String)>,
    gets: Vec<Vec<Read>>,
    listings: Vec<Listing>,
}

fn write_failure(error: &WriteError) -> Failure {
    let kind = match error {
        WriteError::UnknownCollection(_) => Kind::UnknownCollection,
        WriteError::Fenced(_) => Kind::Fenced,
        WriteError::Backpressure { .. } => Kind::Backpressure,
        WriteError::Wal(_) => Kind::Wal,
        WriteError::Closed => Kind::Closed,
        WriteError::InvalidCollection(_)
        | WriteError::InvalidId
        | WriteError::ValueTooLarge { .. }
        | WriteError::TooManyRecords { .. }
        | WriteError::BatchTooLarge { .. }
        | WriteError::EmptyBatch => Kind::Invalid,
        other => panic!("a write error the model does not know yet: {other}"),
    };
    Failure {
        kind,
        message: error.to_string(),
    }
}

fn collection_failure(error: &CollectionError) -> Failure {
    let kind = match error {
        CollectionError::AlreadyExists(_) => Kind::AlreadyExists,
        CollectionError::Unknown(_) => Kind::UnknownCollection,
        CollectionError::ObjectStore(_) => Kind::ObjectStore,
        CollectionError::Io { .. } => Kind::Io,
        CollectionError::InvalidName(_) | CollectionError::NoObjectStore(_) => Kind::Invalid,
        other => panic!("a collection error the model does not know yet: {other}"),
    };
    Failure {
        kind,
        message: error.to_string(),
    }
}

fn maintenance_failure(error: &MaintenanceError) -> Failure {
    let kind = match error {
        MaintenanceError::UnknownCollection(_) => Kind::UnknownCollection,
        MaintenanceError::Fenced(_) => Kind::Fenced,
        MaintenanceError::ObjectStore(_) => Kind::ObjectStore,
        MaintenanceError::Io { .. } => Kind::Io,
        MaintenanceError::Deadline(_) => Kind::Deadline,
        _ => Kind::Other,
    };
    Failure {
        kind,
        message: error.to_string(),
    }
}

async fn write(store: &Store, w: &W) -> Outcome {
    let result = match w {
        W::Put { c, k, v } => store.put(&coll(*c), &key(*k), Bytes::from(value(*v))).await,
        W::Batch { c, kv } => {
            let records = kv
                .iter()
                .map(|(k, v)| (key(*k), Bytes::from(value(*v))))
                .collect();
            store.put_batch(&coll(*c), records).await
        }
        W::Delete { c, k } => store.delete(&coll(*c), &key(*k)).await,
    };
    result.map_err(|e| write_failure(&e))
}

async fn read(store: &Store, c: u8, k: u8) -> Read {
    match tokio::time::timeout(READ_TIMEOUT, store.get(&coll(c), &key(k))).await {
        Err(_) => Read::Hung,
        Ok(Ok(Some(found))) => Read::Value(String::from_utf8_lossy(&found).into_owned()),
        Ok(Ok(None)) => Read::Missing,
        Ok(Err(ReadError::UnknownCollection(_))) => Read::UnknownCollection,
        Ok(Err(ReadError::Unavailable(reason))) => Read::Unavailable(reason),
        Ok(Err(other)) => Read::Error(other.to_string()),
    }
}

async fn list(store: &Store, c: u8, page: usize) -> Listing {
    let mut listing = Listing {
        records: Vec::new(),
        degraded: false,
        end: ListEnd::Complete,
    };
    let mut cursor = None;
    // Every id fits in KEYS pages of one; a few more for pages cut short at a boundary.
    for _ in 0..(2 * usize::from(KEYS) + 4) {
        let query = ListQuery {
            prefix: None,
            cursor: cursor.take(),
            limit: Some(page),
        };
        let page = match tokio::time::timeout(READ_TIMEOUT, store.list(&coll(c), &query)).await {
            Err(_) => {
                listing.end = ListEnd::Hung;
                return listing;
            }
            Ok(Err(ReadError::UnknownCollection(_))) => {
                listing.end = ListEnd::UnknownCollection;
                return listing;
            }
            Ok(Err(ReadError::Unavailable(reason))) => {
                listing.end = ListEnd::Unavailable(reason);
                return listing;
            }
            Ok(Err(other)) => {
                listing.end = ListEnd::Error(other.to_string());
                return listing;
            }
            Ok(Ok(page)) => page,
        };
        listing.degraded |= page.degraded;
        listing.records.extend(
            page.records
                .into_iter()
                .map(|r| (r.id, String::from_utf8_lossy(&r.value).into_owned())),
        );
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return listing,
        }
    }
    listing.end = ListEnd::Loop;
    listing
}

async fn observe(store: &Store, page: usize) -> Observation {
    let collections = store
        .collections()
        .into_iter()
        .map(|c| (c.name, c.policy.as_str().to_owned()))
        .collect();
    let mut gets = Vec::new();
    let mut listings = Vec::new();
    for c in 0..COLLECTIONS {
        let mut reads = Vec::new();
        for k in 0..KEYS {
            reads.push(read(store, c, k).await);
        }
        gets.push(reads);
        listings.push(list(store, c, page).await);
    }
    Observation {
        collections,
        gets,
        listings,
    }
}

async fn pinned(store: &Store) -> Vec<String> {
    let filter = mainstay_dlq::Filter::queue(DLQ_QUEUE);
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    while let Ok(page) = store
        .dlq()
        .list(&filter, cursor.as_deref(), mainstay_dlq::MAX_PAGE_SIZE)
    {
        keys.extend(page.entries.iter().map(|e| e.key().to_owned()));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    keys
}

/// Runs one command on a store (inside its runtime). `Fault` is applied by the caller.
async fn execute(store: &Store, cmd: &Cmd) -> Reply {
    match cmd {
        Cmd::Write(w) => Reply::Done(write(store, w).await),
        Cmd::Create { c, p } => Reply::Done(
            store
                .create_collection(&coll(*c), p.policy())
                .await
                .map_err(|e| collection_failure(&e)),
        ),
        Cmd::Drop { c } => Reply::Dropped(
            store
                .drop_collection(&coll(*c))
                .await
                .map_err(|e| collection_failure(&e)),
        ),
        Cmd::Recreate { c, p } => {
            let dropped = store
                .drop_collection(&coll(*c))
                .await
                .map_err(|e| collection_failure(&e));
            let created = store
                .create_collection(&coll(*c), p.policy())
                .await
                .map_err(|e| collection_failure(&e));
            Reply::Recreated(dropped, created)
        }
        Cmd::Flush => Reply::Done(store.flush().await.map_err(|e| maintenance_failure(&e))),
        Cmd::Compact { c } => Reply::Done(
            store
                .compact(&coll(*c))
                .await
                .map(|_| ())
                .map_err(|e| maintenance_failure(&e)),
        ),
        Cmd::CollectOrphans => Reply::Done(
            store
                .collect_orphans()
                .await
                .map(|_| ())
                .map_err(|e| maintenance_failure(&e)),
        ),
        Cmd::CheckFencing => Reply::Done(
            store
                .check_fencing()
                .await
                .map_err(|e| maintenance_failure(&e)),
        ),
        Cmd::Advance { ms } => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            Reply::Done(Ok(()))
        }
        Cmd::Fault(_) => Reply::Done(Ok(())),
        Cmd::WaitUploaded { ms } => Reply::Done(
            store
                .wait_uploaded(Duration::from_millis(*ms))
                .await
                .map_err(|e| maintenance_failure(&e)),
        ),
        Cmd::Pinned => Reply::Pinned(pinned(store).await),
        Cmd::Observe { page } => Reply::Observed(observe(store, *page).await),
        Cmd::Close { ms } => Reply::Done(
            store
                .close(Duration::from_millis(*ms))
                .await
                .map_err(|e| maintenance_failure(&e)),
        ),
    }
}

fn apply_fault(store: &FaultStore, fault: F) {
    store.fail_lists.store(fault == F::Fail, Ordering::SeqCst);
    store.fail_deletes.store(fault == F::Fail, Ordering::SeqCst);
    store
        .fail_manifest_puts
        .store(fault == F::FailManifests, Ordering::SeqCst);
    store
        .ambiguous_manifest_puts
        .store(u64::from(fault == F::Ambiguous), Ordering::SeqCst);
    store.set(match fault {
        F::Healthy | F::FailManifests => Mode::Healthy,
        F::Fail => Mode::Unavailable,
        F::Ambiguous => Mode::Ambiguous,
        F::Hang => Mode::Hang,
        F::Slow => Mode::Slow,
        F::Forbidden => Mode::Forbidden,
    });
}

// ---------------------------------------------------------------------------------------------
// Store incarnations: in this process on their own paused runtime, or in a child process.

/// A store on its own current-thread runtime with paused time: nothing of it runs between
/// commands, and dropping the runtime kills every task, as a crash does.
struct Local {
    store: Option<Store>,
    runtime: tokio::runtime::Runtime,
    faults: Arc<FaultStore>,
}

impl Local {
    fn open(config: StoreConfig, faults: Arc<FaultStore>) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .map_err(|e| e.to_string())?;
        let opened = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                Store::builder(config)
                    .object_store(faults.clone(), PREFIX)
                    .open(),
            )
            .await
        });
        match opened {
            Ok(Ok(store)) => Ok(Self {
                store: Some(store),
                runtime,
                faults,
            }),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("open did not finish within 30 s".to_owned()),
        }
    }

    /// Runs a command. One still running after [`HANG_LIMIT`] (it waits on a hanging object
    /// store and has no timeout of its own) is let finish by healing the object store, as an
    /// outage ends; the answer says so.
    fn call(&mut self, cmd: &Cmd) -> Answer {
        let Some(store) = &self.store else {
            return Answer {
                reply: Reply::Done(Err(Failure {
                    kind: Kind::Closed,
                    message: "crashed".to_owned(),
                })),
                healed: false,
            };
        };
        let faults = &self.faults;
        self.runtime.block_on(async {
            let running = execute(store, cmd);
            tokio::pin!(running);
            match tokio::time::timeout(HANG_LIMIT, &mut running).await {
                Ok(reply) => Answer {
                    reply,
                    healed: false,
                },
                Err(_) => {
                    apply_fault(faults, F::Healthy);
                    Answer {
                        reply: running.await,
                        healed: true,
                    }
                }
            }
        })
    }

    /// Drops the store without `close`, `w` in flight after `yields` turns of the scheduler;
    /// returns the write's outcome if it finished.
    fn crash(self, w: Option<&W>, yields: u8) -> Option<Outcome> {
        let slot: Arc<Mutex<Option<Outcome>>> = Arc::new(Mutex::new(None));
        if let (Some(w), Some(store)) = (w, self.store.clone()) {
            let (w, slot) = (w.clone(), Arc::clone(&slot));
            self.runtime.spawn(async move {
                let outcome = write(&store, &w).await;
                *slot.lock().unwrap() = Some(outcome);
            });
            self.runtime.block_on(async {
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
            });
        }
        drop(self);
        slot.lock().unwrap().take()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // A store's handles may spawn on drop: drop it inside its runtime, then the runtime with
        // every task still running (a crash).
        let _guard = self.runtime.enter();
        self.store.take();
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ChildSpec {
    config: StoreConfig,
    objects: PathBuf,
    fault: F,
}

/// A store in a child process: this test binary re-executed (`model_child`).
struct Child {
    process: Process,
    stdin: ChildStdin,
    replies: mpsc::Receiver<String>,
}

impl Child {
    fn spawn(spec: &ChildSpec) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut process = Command::new(exe)
            .args([
                "model::model_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                serde_json::to_string(spec).map_err(|e| e.to_string())?,
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start the child: {e}"))?;
        let stdin = process.stdin.take().ok_or("no stdin")?;
        let stdout = process.stdout.take().ok_or("no stdout")?;
        let (sender, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print its "test ... " before the first answer on the same line.
                if let Some(at) = line.find("@@ ")
                    && sender.send(line[at + 3..].to_owned()).is_err()
                {
                    break;
                }
            }
        });
        let mut child = Self {
            process,
            stdin,
            replies,
        };
        match child.receive()?.reply {
            Reply::Opened(Ok(())) => Ok(child),
            Reply::Opened(Err(error)) => {
                child.kill();
                Err(error)
            }
            other => Err(format!("the child answered {other:?} instead of opening")),
        }
    }

    fn receive(&mut self) -> Result<Answer, String> {
        let line = self
            .replies
            .recv_timeout(CHILD_TIMEOUT)
            .map_err(|e| format!("the child did not answer: {e}"))?;
        serde_json::from_str(&line).map_err(|e| format!("bad answer {line:?}: {e}"))
    }

    fn send(&mut self, cmd: &Cmd) -> Result<(), String> {
        let line = serde_json::to_string(cmd).map_err(|e| e.to_string())?;
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the child is gone: {e}"))
    }

    fn call(&mut self, cmd: &Cmd) -> Result<Answer, String> {
        self.send(cmd)?;
        self.receive()
    }

    fn kill(&mut self) {
        let _ = self.process.kill(); // SIGKILL
        let _ = self.process.wait();
    }

    /// SIGKILLs the child, `w` in flight for about `micros` microseconds; the write's outcome if
    /// the child answered before it died.
    fn crash(mut self, w: Option<&W>, micros: u8) -> Option<Outcome> {
        if let Some(w) = w
            && self.send(&Cmd::Write(w.clone())).is_ok()
        {
            std::thread::sleep(Duration::from_micros(u64::from(micros) * 20));
        }
        self.kill();
        // What the child wrote before it died is still in the pipe.
        let mut outcome = None;
        while let Ok(line) = self.replies.recv_timeout(Duration::from_secs(5)) {
            if let Ok(Answer {
                reply: Reply::Done(done),
                ..
            }) = serde_json::from_str(&line)
            {
                outcome = Some(done);
            }
        }
        w.and(outcome)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child: runs a store and answers commands until its stdin closes. Does nothing unless
/// started by [`Child::spawn`].
#[test]
fn model_child() {
    let Some(spec) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let spec: ChildSpec = serde_json::from_str(&spec.to_string_lossy()).expect("a child spec");
    std::fs::create_dir_all(&spec.objects).expect("the objects directory");
    let inner: Arc<dyn ObjectStore> = Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(&spec.objects)
            .expect("a file object store"),
    );
    let faults = FaultStore::new(inner);
    apply_fault(&faults, spec.fault);
    let answer = |answer: &Answer| {
        let mut out = std::io::stdout().lock();
        let line = serde_json::to_string(answer).expect("serialises");
        writeln!(out, "@@ {line}").expect("stdout");
        out.flush().expect("stdout");
    };
    let mut local = match Local::open(spec.config, faults.clone()) {
        Ok(local) => local,
        Err(error) => {
            answer(&Answer {
                reply: Reply::Opened(Err(error)),
                healed: false,
            });
            return;
        }
    };
    answer(&Answer {
        reply: Reply::Opened(Ok(())),
        healed: false,
    });
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let cmd: Cmd = serde_json::from_str(&line).expect("a command");
        if let Cmd::Fault(fault) = cmd {
            apply_fault(&faults, fault);
        }
        answer(&local.call(&cmd));
    }
}

enum Writer {
    Local(Local),
    Child(Child),
}

impl Writer {
    fn call(&mut self, cmd: &Cmd) -> Result<Answer, Violation> {
        match self {
            Writer::Local(local) => Ok(local.call(cmd)),
            Writer::Child(child) => child
                .call(cmd)
                .map_err(|e| Violation::new("child process failed", e)),
        }
    }

    fn crash(self, w: Option<&W>, yields: u8) -> Option<Outcome> {
        match self {
            Writer::Local(local) => local.crash(w, yields),
            Writer::Child(child) => child.crash(w, yields),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The model and the checks.

#[derive(Debug, Clone)]
struct Violation {
    /// What kind of bug: shrinking keeps a step list only while it fails with the same kind.
    category: &'static str,
    detail: String,
}

impl Violation {
    fn new(category: &'static str, detail: impl Into<String>) -> Self {
        Self {
            category,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct ModelCollection {
    policy: P,
    records: BTreeMap<String, String>,
    /// Whether a write to this incarnation was ever acknowledged (see `takeover`).
    written: bool,
}

/// A write whose outcome is unknown (its process was killed while it was in flight).
#[derive(Debug, Clone)]
struct Doubt {
    c: u8,
    entries: Vec<(String, Option<String>)>,
}

fn entries(w: &W) -> (u8, Vec<(String, Option<String>)>) {
    match w {
        W::Put { c, k, v } => (*c, vec![(key(*k), Some(value(*v)))]),
        W::Batch { c, kv } => (
            *c,
            kv.iter().map(|(k, v)| (key(*k), Some(value(*v)))).collect(),
        ),
        W::Delete { c, k } => (*c, vec![(key(*k), None)]),
    }
}

/// Counters that show a run checked something.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    steps: u64,
    acknowledged: u64,
    refused: u64,
    exact_reads: u64,
    degraded_reads: u64,
    crashes: u64,
    kills: u64,
    restarts: u64,
    takeovers: u64,
    healed_hangs: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.steps += other.steps;
        self.acknowledged += other.acknowledged;
        self.refused += other.refused;
        self.exact_reads += other.exact_reads;
        self.degraded_reads += other.degraded_reads;
        self.crashes += other.crashes;
        self.kills += other.kills;
        self.restarts += other.restarts;
        self.takeovers += other.takeovers;
        self.healed_hangs += other.healed_hangs;
    }
}

struct Harness {
    cfg: SeqConfig,
    root: tempfile::TempDir,
    /// The object store under the fault store (in-process sequences), or the directory of the
    /// `file://` store (child sequences).
    objects: Arc<dyn ObjectStore>,
    objects_dir: PathBuf,
    faults: Arc<FaultStore>,
    current: Option<Writer>,
    data_dir: PathBuf,
    generation: u32,
    /// The writer the current one took over from, until the next takeover.
    stale: Option<Writer>,
    collections: BTreeMap<u8, ModelCollection>,
    doubt: Option<Doubt>,
    fault: F,
    /// The fault was healed and the breaker's open duration has passed.
    settled: bool,
    stats: Stats,
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The stores go before their directories.
        self.current.take();
        self.stale.take();
    }
}

fn scratch_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut builder = tempfile::Builder::new();
        builder.prefix("mainstay-model-");
        builder
    };
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return dir;
    }
    builder.tempdir().expect("a temp dir")
}

/// A small runtime for the harness's own object-store reads.
fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

impl Harness {
    fn new(cfg: SeqConfig) -> Result<Self, Violation> {
        let root = scratch_root();
        let objects_dir = root.path().join("objects");
        std::fs::create_dir_all(&objects_dir).expect("objects dir");
        let objects: Arc<dyn ObjectStore> = if cfg.child {
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(&objects_dir)
                    .expect("a file object store"),
            )
        } else {
            Arc::new(InMemory::new())
        };
        let faults = FaultStore::new(Arc::clone(&objects));
        let data_dir = root.path().join("data-0");
        let mut harness = Self {
            cfg,
            root,
            objects,
            objects_dir,
            faults,
            current: None,
            data_dir,
            generation: 0,
            stale: None,
            collections: BTreeMap::new(),
            doubt: None,
            fault: F::Healthy,
            settled: true,
            stats: Stats::default(),
        };
        let writer = harness.open(&harness.data_dir.clone())?;
        harness.current = Some(writer);
        Ok(harness)
    }

    fn fault_active(&self) -> bool {
        self.fault != F::Healthy || !self.settled
    }

    /// Opens a store on `data_dir` under the current fault; when that fails while a fault is
    /// active, heals it and tries again (open needs a readable object store).
    fn open(&mut self, data_dir: &Path) -> Result<Writer, Violation> {
        let first = self.open_once(data_dir);
        let error = match first {
            Ok(writer) => return Ok(writer),
            Err(error) => error,
        };
        if self.fault == F::Healthy {
            return Err(Violation::new(
                "the store does not open",
                format!("{}: {error}", data_dir.display()),
            ));
        }
        self.fault = F::Healthy;
        self.settled = true;
        apply_fault(&self.faults, F::Healthy);
        self.open_once(data_dir).map_err(|error| {
            Violation::new(
                "the store does not open",
                format!("{} (after healing the fault): {error}", data_dir.display()),
            )
        })
    }

    fn open_once(&self, data_dir: &Path) -> Result<Writer, String> {
        // Between fork and exec a child process started by another sequence holds copies of this
        // process's descriptors, the data directory's lock among them: a refusal as locked is
        // retried for a while (a lock that stays is reported).
        let mut tries = 0;
        loop {
            match self.open_attempt(data_dir) {
                Err(error) if error.contains("is locked by another process") && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    fn open_attempt(&self, data_dir: &Path) -> Result<Writer, String> {
        let config = self.cfg.store_config(data_dir);
        if self.cfg.child {
            Child::spawn(&ChildSpec {
                config,
                objects: self.objects_dir.clone(),
                fault: self.fault,
            })
            .map(Writer::Child)
        } else {
            Local::open(config, self.faults.clone()).map(Writer::Local)
        }
    }

    fn current(&mut self) -> &mut Writer {
        self.current.as_mut().expect("a current writer")
    }

    fn call(&mut self, cmd: &Cmd) -> Result<Reply, Violation> {
        let answer = self.current().call(cmd)?;
        if answer.healed {
            self.healed(cmd);
        }
        Ok(answer.reply)
    }

    /// A command waited on the hanging object store past [`HANG_LIMIT`] and the harness healed
    /// the store (its own calls have no timeout): the fault is over, the breaker not yet settled.
    fn healed(&mut self, cmd: &Cmd) {
        self.fault = F::Healthy;
        self.settled = false;
        self.stats.healed_hangs += 1;
        if std::env::var_os("MAINSTAY_MODEL_VERBOSE").is_some() {
            eprintln!("model: {cmd:?} waited on the hanging object store; healed it");
        }
    }

    fn set_fault(&mut self, fault: F) -> Result<(), Violation> {
        self.fault = fault;
        if self.cfg.child {
            self.call(&Cmd::Fault(fault))?;
        } else {
            apply_fault(&self.faults, fault);
        }
        if fault == F::Healthy {
            // Past the breaker's open duration reads go to the store again.
            self.call(&Cmd::Advance {
                ms: u64::try_from(SeqConfig::OPEN.as_millis()).unwrap_or(300) + 50,
            })?;
            self.settled = true;
        } else {
            self.settled = false;
        }
        Ok(())
    }

    /// Applies an acknowledged write to the model.
    fn acknowledge(&mut self, w: &W, what: &str) -> Result<(), Violation> {
        let (c, entries) = entries(w);
        let Some(collection) = self.collections.get_mut(&c) else {
            return Err(Violation::new(
                "a write to a collection that does not exist was acknowledged",
                format!("{what} {w:?}: {} does not exist", coll(c)),
            ));
        };
        for (id, value) in entries {
            match value {
                Some(value) => collection.records.insert(id, value),
                None => collection.records.remove(&id),
            };
        }
        collection.written = true;
        self.stats.acknowledged += 1;
        Ok(())
    }

    fn refused(&mut self, w: &W, failure: &Failure) -> Result<(), Violation> {
        let (c, _) = entries(w);
        self.stats.refused += 1;
        match failure.kind {
            Kind::Invalid => Err(Violation::new(
                "valid input refused",
                format!("{w:?}: {}", failure.message),
            )),
            Kind::UnknownCollection if self.collections.contains_key(&c) => Err(Violation::new(
                "a collection of the model is unknown to the store",
                format!("{w:?}: {}", failure.message),
            )),
            // Backpressure, a fenced or closed store, a failed WAL: refused, so never visible.
            _ => Ok(()),
        }
    }

    fn dropped(&mut self, c: u8, result: &Result<bool, Failure>) -> Result<(), Violation> {
        match result {
            Ok(existed) => {
                let known = self.collections.remove(&c).is_some();
                if *existed != known {
                    return Err(Violation::new(
                        "drop disagrees about existence",
                        format!(
                            "drop {} answered {existed}, the model has it: {known}",
                            coll(c)
                        ),
                    ));
                }
            }
            Err(failure) if failure.kind == Kind::Invalid => {
                return Err(Violation::new(
                    "valid input refused",
                    failure.message.clone(),
                ));
            }
            // A failed drop changes nothing.
            Err(_) => {}
        }
        Ok(())
    }

    fn created(&mut self, c: u8, p: P, result: &Outcome) -> Result<(), Violation> {
        match result {
            Ok(()) => {
                if self.collections.contains_key(&c) {
                    return Err(Violation::new(
                        "a collection was created twice",
                        format!("create {} succeeded, it exists", coll(c)),
                    ));
                }
                self.collections.insert(
                    c,
                    ModelCollection {
                        policy: p,
                        records: BTreeMap::new(),
                        written: false,
                    },
                );
            }
            Err(failure) => match failure.kind {
                Kind::AlreadyExists if !self.collections.contains_key(&c) => {
                    return Err(Violation::new(
                        "create refused for a collection that does not exist",
                        failure.message.clone(),
                    ));
                }
                Kind::Invalid => {
                    return Err(Violation::new(
                        "valid input refused",
                        failure.message.clone(),
                    ));
                }
                // A failed create leaves nothing.
                _ => {}
            },
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), Violation> {
        self.stats.steps += 1;
        match step {
            Step::Write(w) => match self.call(&Cmd::Write(w.clone()))? {
                Reply::Done(Ok(())) => self.acknowledge(w, "write")?,
                Reply::Done(Err(failure)) => self.refused(w, &failure)?,
                other => return Err(unexpected(&other)),
            },
            Step::Create { c, p } => match self.call(&Cmd::Create { c: *c, p: *p })? {
                Reply::Done(result) => self.created(*c, *p, &result)?,
                other => return Err(unexpected(&other)),
            },
            Step::Drop { c } => match self.call(&Cmd::Drop { c: *c })? {
                Reply::Dropped(result) => self.dropped(*c, &result)?,
                other => return Err(unexpected(&other)),
            },
            Step::Recreate { c, p } => match self.call(&Cmd::Recreate { c: *c, p: *p })? {
                Reply::Recreated(dropped, created) => {
                    self.dropped(*c, &dropped)?;
                    self.created(*c, *p, &created)?;
                }
                other => return Err(unexpected(&other)),
            },
            Step::Flush => {
                self.call(&Cmd::Flush)?;
            }
            Step::Compact { c } => {
                self.call(&Cmd::Compact { c: *c })?;
            }
            Step::CollectOrphans => {
                self.call(&Cmd::CollectOrphans)?;
            }
            Step::Advance { ms } => {
                self.call(&Cmd::Advance { ms: *ms })?;
            }
            Step::Fault(fault) => self.set_fault(*fault)?,
            Step::BreakCatalog => {
                let _ = std::fs::create_dir_all(self.data_dir.join("catalog.json.tmp"));
            }
            Step::FixCatalog => self.fix_catalog(),
            Step::Restart => {
                self.stats.restarts += 1;
                self.call(&Cmd::Close { ms: 2_000 })?;
                drop(self.current.take());
                self.fix_catalog();
                let writer = self.open(&self.data_dir.clone())?;
                self.current = Some(writer);
            }
            Step::Crash {
                write,
                yields,
                corrupt,
            } => self.crash(write.as_ref(), *yields, *corrupt)?,
            Step::Takeover => self.takeover()?,
            Step::Stale(op) => self.stale(op)?,
        }
        self.check()
    }

    fn fix_catalog(&self) {
        let broken = self.data_dir.join("catalog.json.tmp");
        if broken.is_dir() {
            let _ = std::fs::remove_dir_all(broken);
        }
    }

    fn crash(&mut self, w: Option<&W>, yields: u8, corrupt: bool) -> Result<(), Violation> {
        self.stats.crashes += 1;
        if self.cfg.child {
            self.stats.kills += 1;
        }
        let pinned = if corrupt {
            match self.call(&Cmd::Pinned)? {
                Reply::Pinned(keys) => keys,
                other => return Err(unexpected(&other)),
            }
        } else {
            Vec::new()
        };
        let writer = self.current.take().expect("a current writer");
        match (w, writer.crash(w, yields)) {
            (Some(w), Some(Ok(()))) => self.acknowledge(w, "write before the crash")?,
            (Some(w), Some(Err(failure))) => self.refused(w, &failure)?,
            (Some(w), None) => {
                let (c, entries) = entries(w);
                self.doubt = Some(Doubt { c, entries });
            }
            (None, _) => {}
        }
        if corrupt {
            self.corrupt_pending_segment(&pinned);
        }
        self.fix_catalog();
        // The reopen after a crash runs healthy, so that the first read decides an in-flight
        // write.
        self.fault = F::Healthy;
        self.settled = true;
        apply_fault(&self.faults, F::Healthy);
        let writer = self.open(&self.data_dir.clone())?;
        self.current = Some(writer);
        Ok(())
    }

    /// The segment ids the newest manifest lists.
    fn committed_segments(&self) -> Vec<String> {
        let objects = Arc::clone(&self.objects);
        block_on(async move {
            let dir = object_store::path::Path::from(format!("{PREFIX}/manifest"));
            let listed: Vec<_> = objects
                .list(Some(&dir))
                .try_collect()
                .await
                .unwrap_or_default();
            let Some(newest) = listed.iter().max_by_key(|m| m.location.to_string()) else {
                return Vec::new();
            };
            let Ok(found) = objects.get(&newest.location).await else {
                return Vec::new();
            };
            let Ok(bytes) = found.bytes().await else {
                return Vec::new();
            };
            let manifest: serde_json::Value =
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            let mut ids = Vec::new();
            if let Some(collections) = manifest["collections"].as_object() {
                for entry in collections.values() {
                    for segment in entry["segments"].as_array().into_iter().flatten() {
                        if let Some(id) = segment["id"].as_str() {
                            ids.push(id.to_owned());
                        }
                    }
                }
            }
            ids
        })
    }

    /// Damages one local segment file of an object-store collection that is neither committed
    /// nor pinned: its records are still in the WAL, so nothing may be lost.
    fn corrupt_pending_segment(&self, pinned: &[String]) {
        let committed = self.committed_segments();
        for (c, collection) in &self.collections {
            if collection.policy == P::Memory {
                continue;
            }
            let dir = self.data_dir.join("segments").join(coll(*c));
            let Ok(files) = std::fs::read_dir(&dir) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                // `<incarnation>-<id>.seg`; the id itself ends in `-e<epoch>`.
                let Some(id) = name
                    .strip_suffix(".seg")
                    .and_then(|n| n.split_once('-'))
                    .map(|(_, id)| id.to_owned())
                else {
                    continue;
                };
                let pinned_key = format!("{}/{id}", coll(*c));
                if committed.contains(&id) || pinned.contains(&pinned_key) {
                    continue;
                }
                if let Ok(mut bytes) = std::fs::read(file.path())
                    && !bytes.is_empty()
                {
                    let at = bytes.len() / 2;
                    bytes[at] ^= 0xff;
                    let _ = std::fs::write(file.path(), bytes);
                    return;
                }
            }
        }
    }

    fn takeover(&mut self) -> Result<(), Violation> {
        // The model's object-store collections must all be committed before the takeover.
        self.call(&Cmd::Flush)?;
        match self.call(&Cmd::WaitUploaded { ms: 5_000 })? {
            Reply::Done(Ok(())) => {}
            // Not everything uploaded (a fault, a fenced store): no takeover now.
            _ => return Ok(()),
        }
        // Segments pinned for the DLQ are held by this writer's data directory, not the object
        // store: a new writer cannot serve them, so there is no takeover while there are any.
        match self.call(&Cmd::Pinned)? {
            Reply::Pinned(keys) if keys.is_empty() => {}
            _ => return Ok(()),
        }
        self.stats.takeovers += 1;
        self.generation += 1;
        let data_dir = self.root.path().join(format!("data-{}", self.generation));
        let writer = self.open(&data_dir)?;
        let mut previous = self.current.replace(writer);
        // The old writer learns of the takeover when it next reads the newest manifest (a commit,
        // an orphan pass or `check_fencing`, as here): fenced from then on, it refuses every
        // write.
        // Writes it acknowledged before it learnt are stranded in its data directory until a
        // handover (not modelled: the takeover happens with nothing left to upload).
        // A child process keeps its own fault store: heal the old writer's first, so that it can
        // read the manifest. If it still cannot learn of the takeover, it would go on
        // acknowledging writes into its own data directory (stranded until a handover, which
        // the model does not follow): it takes no more steps then.
        let mut fenced = false;
        if let Some(old) = previous.as_mut() {
            old.call(&Cmd::Fault(F::Healthy))?;
            let answer = old.call(&Cmd::CheckFencing)?;
            fenced = matches!(
                answer.reply,
                Reply::Done(Err(Failure {
                    kind: Kind::Fenced,
                    ..
                }))
            );
        }
        if !fenced {
            previous = None;
        }
        // The writer before the previous one goes for good.
        self.stale = previous;
        self.data_dir = data_dir;
        // `memory` collections live only in the first store's data directory: they are not the
        // new writer's. Object-store collections never written to have no segment, so no
        // manifest entry, and the new writer cannot know them: they are dropped from the model
        // when the new writer does not list them (a gap of the store, reported to the lead).
        self.collections.retain(|_, c| c.policy != P::Memory);
        let listed = match self.call(&Cmd::Observe { page: 1_000 })? {
            Reply::Observed(observation) => observation.collections,
            other => return Err(unexpected(&other)),
        };
        self.collections.retain(|c, collection| {
            collection.written || listed.iter().any(|(name, _)| *name == coll(*c))
        });
        Ok(())
    }

    fn stale(&mut self, op: &S) -> Result<(), Violation> {
        let Some(stale) = self.stale.as_mut() else {
            return Ok(());
        };
        let cmd = match op {
            S::Write(w) => Cmd::Write(w.clone()),
            S::Drop { c } => Cmd::Drop { c: *c },
            S::Flush => Cmd::Flush,
            S::Compact { c } => Cmd::Compact { c: *c },
            S::CollectOrphans => Cmd::CollectOrphans,
        };
        let answer = stale.call(&cmd)?;
        if answer.healed && !self.cfg.child {
            // In-process writers share the fault store: the current one's fault is over too.
            self.healed(&cmd);
        }
        let reply = answer.reply;
        if let (S::Write(w), Reply::Done(Ok(()))) = (op, &reply) {
            return Err(Violation::new(
                "a writer that was taken over from acknowledged a write",
                format!("{w:?} was acknowledged by the old writer"),
            ));
        }
        Ok(())
    }

    /// Reads every id of every collection name and lists every collection; compares with the
    /// model.
    fn check(&mut self) -> Result<(), Violation> {
        let page = self.cfg.page;
        let observation = match self.call(&Cmd::Observe { page })? {
            Reply::Observed(observation) => observation,
            other => return Err(unexpected(&other)),
        };
        self.resolve_doubt(&observation)?;
        let faulty = self.fault_active();

        let mut expected: Vec<(String, String)> = self
            .collections
            .iter()
            .map(|(c, m)| (coll(*c), m.policy.policy().as_str().to_owned()))
            .collect();
        expected.sort();
        let mut shown = observation.collections.clone();
        shown.sort();
        if shown != expected {
            return Err(Violation::new(
                "the collections differ from the model",
                format!("store: {shown:?}, model: {expected:?}"),
            ));
        }

        for c in 0..COLLECTIONS {
            let name = coll(c);
            let model = self.collections.get(&c);
            let memory = model.is_some_and(|m| m.policy == P::Memory);
            for k in 0..KEYS {
                let id = key(k);
                let got = &observation.gets[c as usize][k as usize];
                let want = model.map(|m| m.records.get(&id));
                match (got, want) {
                    (Read::UnknownCollection, None) => {}
                    (_, None) => {
                        return Err(Violation::new(
                            "a collection that does not exist answers",
                            format!("get {name}/{id}: {got:?}"),
                        ));
                    }
                    (Read::Value(found), Some(Some(wanted))) if found == wanted => {
                        self.stats.exact_reads += 1;
                    }
                    (Read::Missing, Some(None)) => self.stats.exact_reads += 1,
                    (Read::Unavailable(_) | Read::Hung, Some(_)) if faulty && !memory => {
                        self.stats.degraded_reads += 1;
                    }
                    (Read::Value(found), Some(Some(wanted))) => {
                        return Err(Violation::new(
                            "get returns a wrong value",
                            format!(
                                "get {name}/{id}: {} instead of {}",
                                short(found),
                                short(wanted)
                            ),
                        ));
                    }
                    (Read::Value(found), Some(None)) => {
                        return Err(Violation::new(
                            "get returns a record that must not exist",
                            format!(
                                "get {name}/{id}: {} (deleted, never written or refused)",
                                short(found)
                            ),
                        ));
                    }
                    (Read::Missing, Some(Some(wanted))) => {
                        return Err(Violation::new(
                            "get loses an acknowledged record",
                            format!("get {name}/{id}: not found instead of {}", short(wanted)),
                        ));
                    }
                    (other, Some(_)) => {
                        return Err(Violation::new(
                            "get fails",
                            format!(
                                "get {name}/{id}: {other:?} (fault {:?}, settled {})",
                                self.fault, self.settled
                            ),
                        ));
                    }
                }
            }

            let listing = &observation.listings[c as usize];
            let Some(model) = model else {
                if listing.end != ListEnd::UnknownCollection {
                    return Err(Violation::new(
                        "a collection that does not exist answers",
                        format!("list {name}: {:?}", listing.end),
                    ));
                }
                continue;
            };
            if listing.end == ListEnd::UnknownCollection {
                return Err(Violation::new(
                    "a collection of the model is unknown to the store",
                    format!("list {name}"),
                ));
            }
            let ids: Vec<&String> = listing.records.iter().map(|(id, _)| id).collect();
            if ids.windows(2).any(|pair| pair[0] >= pair[1]) {
                return Err(Violation::new(
                    "a listing is out of order or repeats ids",
                    format!("list {name}: {ids:?}"),
                ));
            }
            for (id, found) in &listing.records {
                match model.records.get(id) {
                    Some(wanted) if wanted == found => {}
                    Some(wanted) => {
                        return Err(Violation::new(
                            "a listing shows a wrong value",
                            format!(
                                "list {name}: {id} = {} instead of {}",
                                short(found),
                                short(wanted)
                            ),
                        ));
                    }
                    None => {
                        return Err(Violation::new(
                            "a listing shows a record that must not exist",
                            format!("list {name}: {id} = {}", short(found)),
                        ));
                    }
                }
            }
            let complete = listing.end == ListEnd::Complete && !listing.degraded;
            if complete {
                if listing.records.len() != model.records.len() {
                    let missing: Vec<&String> = model
                        .records
                        .keys()
                        .filter(|id| !listing.records.iter().any(|(r, _)| r == *id))
                        .collect();
                    return Err(Violation::new(
                        "a listing loses acknowledged records",
                        format!("list {name} (page {page}) misses {missing:?}"),
                    ));
                }
            } else {
                let allowed = faulty
                    && !memory
                    && matches!(
                        listing.end,
                        ListEnd::Complete | ListEnd::Unavailable(_) | ListEnd::Hung
                    );
                if !allowed {
                    return Err(Violation::new(
                        "a listing is degraded or fails",
                        format!(
                            "list {name}: end {:?}, degraded {} (fault {:?}, settled {})",
                            listing.end, listing.degraded, self.fault, self.settled
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Decides a write cut off by a crash from the first reads after it: all of it happened or
    /// none, and the model follows.
    fn resolve_doubt(&mut self, observation: &Observation) -> Result<(), Violation> {
        let Some(doubt) = self.doubt.take() else {
            return Ok(());
        };
        let Some(collection) = self.collections.get(&doubt.c) else {
            return Ok(());
        };
        let before = collection.records.clone();
        let mut after = before.clone();
        for (id, value) in &doubt.entries {
            match value {
                Some(value) => after.insert(id.clone(), value.clone()),
                None => after.remove(id),
            };
        }
        let mut applied: Option<bool> = None;
        for k in 0..KEYS {
            let id = key(k);
            if before.get(&id) == after.get(&id) {
                continue;
            }
            let seen = match &observation.gets[doubt.c as usize][k as usize] {
                Read::Value(v) => Some(Some(v.clone())),
                Read::Missing => Some(None),
                _ => None,
            };
            let Some(seen) = seen else {
                // Not readable now: decide later.
                self.doubt = Some(doubt);
                return Ok(());
            };
            let this = if seen.as_ref() == after.get(&id) {
                true
            } else if seen.as_ref() == before.get(&id) {
                false
            } else {
                return Err(Violation::new(
                    "a write cut off by a crash left a value it never wrote",
                    format!(
                        "{}/{id}: {seen:?}, write {:?}",
                        coll(doubt.c),
                        doubt.entries
                    ),
                ));
            };
            if applied.is_some_and(|a| a != this) {
                return Err(Violation::new(
                    "a batch cut off by a crash was applied in part",
                    format!("{}: {:?}", coll(doubt.c), doubt.entries),
                ));
            }
            applied = Some(this);
        }
        if applied == Some(true)
            && let Some(collection) = self.collections.get_mut(&doubt.c)
        {
            collection.records = after;
            collection.written = true;
        }
        Ok(())
    }
}

fn unexpected(reply: &Reply) -> Violation {
    Violation::new("unexpected answer", format!("{reply:?}"))
}

fn short(value: &str) -> String {
    if value.len() > 24 {
        format!("{}...({} bytes)", &value[..24], value.len())
    } else {
        value.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Running, shrinking, reporting.

#[derive(Debug, Clone)]
struct Found {
    step: usize,
    violation: Violation,
}

/// Runs `steps` from scratch; the first violation, if any.
fn run(cfg: &SeqConfig, steps: &[Step]) -> (Result<(), Found>, Stats) {
    let mut harness = match Harness::new(cfg.clone()) {
        Ok(harness) => harness,
        Err(violation) => return (Err(Found { step: 0, violation }), Stats::default()),
    };
    if let Err(violation) = harness.check() {
        return (Err(Found { step: 0, violation }), harness.stats);
    }
    for (index, step) in steps.iter().enumerate() {
        if let Err(violation) = harness.step(step) {
            return (
                Err(Found {
                    step: index,
                    violation,
                }),
                harness.stats,
            );
        }
    }
    // At the end, healed: everything must be exact.
    if harness.fault != F::Healthy || !harness.settled {
        let healed = harness.set_fault(F::Healthy).and_then(|()| harness.check());
        if let Err(violation) = healed {
            return (
                Err(Found {
                    step: steps.len(),
                    violation,
                }),
                harness.stats,
            );
        }
    }
    (Ok(()), harness.stats)
}

/// Removes chunks of steps, then single steps, while the sequence still fails the same way;
/// each try runs from scratch. Stops at `deadline`. Returns the shortest list and how it fails.
fn shrink(cfg: &SeqConfig, steps: &[Step], found: &Found, deadline: Instant) -> (Vec<Step>, Found) {
    let category = found.violation.category;
    let mut best: Vec<Step> = steps[..(found.step + 1).min(steps.len())].to_vec();
    let mut best_found = found.clone();
    let mut chunk = best.len().div_ceil(2);
    while chunk >= 1 && Instant::now() < deadline {
        let mut start = 0;
        while start < best.len() && Instant::now() < deadline {
            let end = (start + chunk).min(best.len());
            let mut candidate = best.clone();
            candidate.drain(start..end);
            match run(cfg, &candidate).0 {
                Err(found) if found.violation.category == category => {
                    // Steps after the failing one do not matter.
                    candidate.truncate(found.step + 1);
                    best = candidate;
                    best_found = found;
                }
                _ => start += chunk,
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    (best, best_found)
}

fn rust_write(w: &W) -> String {
    match w {
        W::Put { c, k, v } => format!("W::Put {{ c: {c}, k: {k}, v: {v} }}"),
        W::Batch { c, kv } => format!("W::Batch {{ c: {c}, kv: vec!{kv:?} }}"),
        W::Delete { c, k } => format!("W::Delete {{ c: {c}, k: {k} }}"),
    }
}

/// A step as Rust source, for `regressions()`.
fn rust_step(step: &Step) -> String {
    match step {
        Step::Write(w) => format!("Step::Write({})", rust_write(w)),
        Step::Create { c, p } => format!("Step::Create {{ c: {c}, p: P::{p:?} }}"),
        Step::Drop { c } => format!("Step::Drop {{ c: {c} }}"),
        Step::Recreate { c, p } => format!("Step::Recreate {{ c: {c}, p: P::{p:?} }}"),
        Step::Compact { c } => format!("Step::Compact {{ c: {c} }}"),
        Step::Advance { ms } => format!("Step::Advance {{ ms: {ms} }}"),
        Step::Fault(f) => format!("Step::Fault(F::{f:?})"),
        Step::Crash {
            write,
            yields,
            corrupt,
        } => format!(
            "Step::Crash {{ write: {}, yields: {yields}, corrupt: {corrupt} }}",
            write
                .as_ref()
                .map_or_else(|| "None".to_owned(), |w| format!("Some({})", rust_write(w)))
        ),
        Step::Stale(op) => format!(
            "Step::Stale({})",
            match op {
                S::Write(w) => format!("S::Write({})", rust_write(w)),
                S::Drop { c } => format!("S::Drop {{ c: {c} }}"),
                S::Compact { c } => format!("S::Compact {{ c: {c} }}"),
                other => format!("S::{other:?}"),
            }
        ),
        other => format!("Step::{other:?}"),
    }
}

fn rust(steps: &[Step]) -> String {
    let mut out = String::from("vec![\n");
    for step in steps {
        let _ = writeln!(out, "    {},", rust_step(step));
    }
    out.push(']');
    out
}

fn report(seed: u64, cfg: &SeqConfig, steps: &[Step], found: &Found, deadline: Instant) -> String {
    let (shrunk, shrunk_found) = shrink(cfg, steps, found, deadline);
    let without = std::env::var("MAINSTAY_MODEL_WITHOUT")
        .map(|w| format!(" MAINSTAY_MODEL_WITHOUT={w}"))
        .unwrap_or_default();
    format!(
        "model test failed: seed {seed:#x} ({}), step {} of {}: {}: {}\n\
         shortest failing step list found ({} steps, failing at its last: {}; run the seed's \
         generated steps alone with MAINSTAY_MODEL_SEED={seed:#x}{without} (a case of \
         `regressions()` fails in the default run), paste the list into `regressions()` as \
         ({seed:#x}, ...)):\n{}\n",
        if cfg.child {
            "child process"
        } else {
            "in process"
        },
        found.step,
        steps.len(),
        found.violation.category,
        found.violation.detail,
        shrunk.len(),
        shrunk_found.violation.detail,
        rust(&shrunk)
    )
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// What one seed's run came to.
struct SeedResult {
    seed: u64,
    cfg: SeqConfig,
    steps: Vec<Step>,
    outcome: Result<(), Found>,
    stats: Stats,
}

fn run_seed(seed: u64, steps: Option<Vec<Step>>) -> SeedResult {
    let (cfg, generated) = generate(seed);
    let steps = steps.unwrap_or(generated);
    let (outcome, stats) = run(&cfg, &steps);
    SeedResult {
        seed,
        cfg,
        steps,
        outcome,
        stats,
    }
}

#[test]
fn model_sequences() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let all_failures = std::env::var_os("MAINSTAY_MODEL_ALL_FAILURES").is_some();
    if let Some(seed) = env_u64("MAINSTAY_MODEL_SEED") {
        let (cfg, steps) = generate(seed);
        eprintln!("seed {seed:#x}: {cfg:?}\n{}", rust(&steps));
        let result = run_seed(seed, None);
        if let Err(found) = &result.outcome {
            let deadline = Instant::now() + Duration::from_secs(180);
            panic!("{}", report(seed, &cfg, &steps, found, deadline));
        }
        eprintln!("seed {seed:#x} passed: {:?}", result.stats);
        return;
    }
    let minutes = env_u64("MAINSTAY_MODEL_MINUTES");
    let sequences = env_u64("MAINSTAY_MODEL_SEQUENCES").unwrap_or(300);
    let started = Instant::now();
    let stop_at = minutes.map(|m| started + Duration::from_secs(m * 60));
    // Fixed seeds in CI, so that a failure there is the same failure here; fresh ones in a soak.
    let base: u64 = if minutes.is_some() {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
    } else {
        0x5eed_0000
    };
    // Some bugs are races: each regression runs a few times.
    let mut explicit: Vec<(u64, Option<Vec<Step>>)> = regressions()
        .into_iter()
        .flat_map(|(seed, steps)| std::iter::repeat_n((seed, Some(steps)), REGRESSION_RUNS))
        .collect();
    explicit.extend(REGRESSIONS.iter().map(|seed| (*seed, None)));
    let explicit = Arc::new(explicit);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicU64::new(0));
    let results: Arc<Mutex<Vec<SeedResult>>> = Arc::new(Mutex::new(Vec::new()));
    let totals: Arc<Mutex<Stats>> = Arc::new(Mutex::new(Stats::default()));
    let threads = 3;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (explicit, next, stop, ran, killed, results, totals) = (
                Arc::clone(&explicit),
                Arc::clone(&next),
                Arc::clone(&stop),
                Arc::clone(&ran),
                Arc::clone(&killed),
                Arc::clone(&results),
                Arc::clone(&totals),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    let (seed, steps) = match explicit.get(index) {
                        Some((seed, steps)) => (*seed, steps.clone()),
                        None => {
                            let n = (index - explicit.len()) as u64;
                            let done = match stop_at {
                                Some(at) => Instant::now() >= at,
                                None => n >= sequences,
                            };
                            if done {
                                return;
                            }
                            (base.wrapping_add(n), None)
                        }
                    };
                    let result = run_seed(seed, steps);
                    ran.fetch_add(1, Ordering::SeqCst);
                    if result.stats.kills > 0 {
                        killed.fetch_add(1, Ordering::SeqCst);
                    }
                    totals.lock().unwrap().add(&result.stats);
                    if let Err(found) = &result.outcome {
                        // Printed at once: a run cut short by a timeout still tells the seed.
                        eprintln!(
                            "model: seed {seed:#x} failed at step {}: {}: {}",
                            found.step, found.violation.category, found.violation.detail
                        );
                        if !all_failures {
                            stop.store(true, Ordering::SeqCst);
                        }
                        results.lock().unwrap().push(result);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a model worker");
    }
    let totals = *totals.lock().unwrap();
    let ran = ran.load(Ordering::SeqCst);
    let killed = killed.load(Ordering::SeqCst);
    eprintln!(
        "model: {ran} sequences ({killed} with a SIGKILLed child) in {:.1} s: {totals:?}",
        started.elapsed().as_secs_f64()
    );
    let failures = std::mem::take(&mut *results.lock().unwrap());
    if !failures.is_empty() {
        let mut message = String::new();
        let mut shown: Vec<&str> = Vec::new();
        let budget = if let Some(seconds) = env_u64("MAINSTAY_MODEL_SHRINK_SECS") {
            Duration::from_secs(seconds)
        } else if minutes.is_some() || all_failures {
            Duration::from_secs(60)
        } else {
            // Inside nextest's slow-test limit.
            Duration::from_secs(40)
        };
        for failure in &failures {
            let Err(found) = &failure.outcome else {
                continue;
            };
            if shown.contains(&found.violation.category) {
                let _ = writeln!(
                    message,
                    "(also seed {:#x}: {})",
                    failure.seed, found.violation.category
                );
                continue;
            }
            shown.push(found.violation.category);
            message.push_str(&report(
                failure.seed,
                &failure.cfg,
                &failure.steps,
                found,
                Instant::now() + budget,
            ));
        }
        panic!("{message}");
    }
    // The run checked something: acknowledged writes read back exactly, crashes and kills.
    assert!(
        ran >= sequences.min(300) || minutes.is_some(),
        "only {ran} sequences ran"
    );
    assert!(
        totals.acknowledged * 2 > totals.acknowledged + totals.refused,
        "most writes were refused: {totals:?}"
    );
    assert!(
        totals.exact_reads > totals.steps * 10,
        "few exact reads: {totals:?}"
    );
    if minutes.is_none() && std::env::var_os("MAINSTAY_MODEL_WITHOUT").is_none() {
        assert!(
            killed * 10 >= ran,
            "only {killed} of {ran} sequences SIGKILLed a child"
        );
    }
}
