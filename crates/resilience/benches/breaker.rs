//! The cost of one call through a circuit breaker, against two peers (failsafe 1.3 and
//! tower-resilience 0.13's circuit breaker) and an uncontended mutex (the floor), on one thread and
//! on two threads sharing one breaker; the heap allocations of one call, counted by a counting
//! global allocator (`stats_alloc`) before the timings, and failing the run if any of ours
//! allocates; and the cost of a new key in a full keyed set of 1,000 and of 100,000 breakers, and
//! of an existing key.
//!
//! Run with `cargo xtask bench breaker` (`cargo bench -p mainstay-resilience --bench breaker`).

use std::alloc::System;
use std::future::Ready;
use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use failsafe::{CircuitBreaker as _, Config, backoff, failure_policy};
use mainstay_resilience::{
    BreakerConfig, CircuitBreaker, ErrorClass, KeyedBreakerConfig, KeyedBreakers, Outcome,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::util::ServiceFn;
use tower::{Layer as _, Service, ServiceExt as _, service_fn};
use tower_resilience::circuitbreaker::{
    CircuitBreaker as TowerBreaker, CircuitBreakerLayer, DefaultClassifier, FailureModel,
};

/// Every allocation of the process goes through this counter, so the allocations of a call are
/// measured, not claimed.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn classify(_: &()) -> ErrorClass {
    ErrorClass::TRANSIENT
}

fn consecutive() -> CircuitBreaker {
    CircuitBreaker::new("bench", BreakerConfig::critical_dependency()).expect("valid")
}

fn failure_rate() -> CircuitBreaker {
    CircuitBreaker::new("bench", BreakerConfig::object_store_uploads()).expect("valid")
}

fn opened() -> CircuitBreaker {
    let breaker = CircuitBreaker::new(
        "bench",
        BreakerConfig::consecutive(1, Duration::from_secs(3_600)),
    )
    .expect("valid");
    let _ = breaker.call(&classify, || Err::<(), _>(()));
    breaker
}

type Failsafe = failsafe::StateMachine<failure_policy::ConsecutiveFailures<backoff::Constant>, ()>;

fn failsafe_breaker() -> Failsafe {
    Config::new()
        .failure_policy(failure_policy::consecutive_failures(
            5,
            backoff::constant(Duration::from_secs(3_600)),
        ))
        .build()
}

fn failsafe_opened() -> Failsafe {
    let breaker = failsafe_breaker();
    for _ in 0..5 {
        let _ = breaker.call(|| Err::<(), _>(()));
    }
    breaker
}

/// The inner service of the tower-resilience peer: fails when asked to, answers at once.
type Inner = ServiceFn<fn(bool) -> Ready<Result<u32, ()>>>;
type TowerResilience = TowerBreaker<Inner, DefaultClassifier>;

fn inner(fail: bool) -> Ready<Result<u32, ()>> {
    std::future::ready(if fail { Err(()) } else { Ok(black_box(1)) })
}

/// tower-resilience's breaker on the consecutive rule (5 failures, open for an hour), like ours.
fn tower_resilience_breaker() -> TowerResilience {
    let layer = CircuitBreakerLayer::builder()
        .failure_model(FailureModel::ConsecutiveFailures { k: 5 })
        .wait_duration_in_open(Duration::from_secs(3_600))
        .build()
        .expect("a valid configuration");
    layer.layer(service_fn(inner as fn(bool) -> Ready<Result<u32, ()>>))
}

thread_local! {
    /// The peer's service is async and, when its state's lock is taken, waits on tokio's timer:
    /// each thread drives it on a runtime of its own.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

fn tower_resilience_call(breaker: &mut TowerResilience, fail: bool) -> bool {
    RUNTIME.with(|runtime| {
        runtime.block_on(async {
            match breaker.ready().await {
                Ok(ready) => ready.call(fail).await.is_ok(),
                Err(_) => false,
            }
        })
    })
}

fn tower_resilience_opened() -> TowerResilience {
    let mut breaker = tower_resilience_breaker();
    for _ in 0..5 {
        tower_resilience_call(&mut breaker, true);
    }
    assert!(
        !tower_resilience_call(&mut breaker, false),
        "the peer must be open"
    );
    breaker
}

/// The calls measured: each returns whether it was admitted, so that nothing is optimised away.
#[derive(Clone)]
enum Subject {
    Mutex(Arc<Mutex<u64>>),
    Ours(CircuitBreaker),
    Failsafe(Arc<Failsafe>),
    TowerResilience(TowerResilience),
}

impl Subject {
    #[inline]
    fn call(&mut self) -> bool {
        match self {
            Self::Mutex(mutex) => match mutex.lock() {
                Ok(mut guard) => {
                    *guard += 1;
                    true
                }
                Err(_) => false,
            },
            Self::Ours(breaker) => breaker
                .call(&classify, || Ok::<_, ()>(black_box(1_u32)))
                .is_ok(),
            Self::Failsafe(breaker) => breaker.call(|| Ok::<_, ()>(black_box(1_u32))).is_ok(),
            Self::TowerResilience(breaker) => tower_resilience_call(breaker, false),
        }
    }

    fn ours(&self) -> bool {
        matches!(self, Self::Ours(_))
    }
}

fn subjects() -> Vec<(&'static str, Subject)> {
    vec![
        ("mutex_floor", Subject::Mutex(Arc::new(Mutex::new(0)))),
        ("consecutive_success", Subject::Ours(consecutive())),
        ("window_success", Subject::Ours(failure_rate())),
        ("rejected", Subject::Ours(opened())),
        (
            "failsafe_success",
            Subject::Failsafe(Arc::new(failsafe_breaker())),
        ),
        (
            "failsafe_rejected",
            Subject::Failsafe(Arc::new(failsafe_opened())),
        ),
        (
            "tower_resilience_success",
            Subject::TowerResilience(tower_resilience_breaker()),
        ),
        (
            "tower_resilience_rejected",
            Subject::TowerResilience(tower_resilience_opened()),
        ),
    ]
}

/// Counts the heap allocations of one call of every subject (after a warm-up, so that one-time
/// initialisation is not counted) and fails the run when one of ours allocates.
fn allocations(_criterion: &mut Criterion) {
    const CALLS: u64 = 100_000;
    let mut allocating = Vec::new();
    eprintln!("allocations per call ({CALLS} calls, counting global allocator):");
    let permit_breaker = consecutive();
    let mut subjects: Vec<(&str, Subject)> = subjects();
    subjects.push(("consecutive_permit", Subject::Ours(permit_breaker.clone())));
    for (name, mut subject) in subjects {
        let permit = name == "consecutive_permit";
        let call = |subject: &mut Subject| {
            if permit {
                match permit_breaker.try_acquire() {
                    Ok(permit) => permit.record(black_box(Outcome::Success)),
                    Err(rejected) => {
                        black_box(rejected);
                    }
                }
            } else {
                black_box(subject.call());
            }
        };
        for _ in 0..1_000 {
            call(&mut subject);
        }
        let region = Region::new(ALLOCATOR);
        for _ in 0..CALLS {
            call(&mut subject);
        }
        let change = region.change();
        let per_call = change.allocations as f64 / CALLS as f64;
        eprintln!(
            "  {name:<28} {per_call:>6.2} allocations, {:>8.1} bytes",
            change.bytes_allocated as f64 / CALLS as f64
        );
        if subject.ours() && change.allocations != 0 {
            allocating.push(name);
        }
    }
    assert!(
        allocating.is_empty(),
        "a breaker call allocated on the heap: {allocating:?}"
    );
}

fn single_thread(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("single_thread");
    for (name, mut subject) in subjects() {
        group.bench_function(name, |bencher| bencher.iter(|| black_box(subject.call())));
    }
    // The permit API directly, without a closure or classification.
    let breaker = consecutive();
    group.bench_function("consecutive_permit", |bencher| {
        bencher.iter(|| match breaker.try_acquire() {
            Ok(permit) => permit.record(black_box(Outcome::Success)),
            Err(rejected) => {
                black_box(rejected);
            }
        })
    });
    group.finish();
}

/// Two threads call the same subject `iterations` times each; the time reported is the wall time
/// divided by `iterations`, so the cost of one call while another thread contends.
fn two_threads(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("two_threads");
    for (name, subject) in subjects() {
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                let barrier = Arc::new(Barrier::new(3));
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let (mut subject, barrier) = (subject.clone(), barrier.clone());
                        thread::spawn(move || {
                            barrier.wait();
                            for _ in 0..iterations {
                                black_box(subject.call());
                            }
                        })
                    })
                    .collect();
                barrier.wait();
                let start = Instant::now();
                for worker in workers {
                    worker.join().expect("no panic");
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// A new key in a full keyed set: the least recently used breaker is evicted. The cost must not
/// grow with the set's size.
fn keyed_new_key(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("keyed_new_key");
    for size in [1_000_usize, 100_000] {
        let config = KeyedBreakerConfig {
            max_keys: size,
            idle_timeout: Duration::from_secs(3_600),
            ..KeyedBreakerConfig::default()
        };
        let set = KeyedBreakers::new("bench", config).expect("valid");
        for key in 0..size as u64 {
            drop(set.get(&key));
        }
        let mut next = size as u64;
        group.bench_function(format!("full_set_of_{size}"), |bencher| {
            bencher.iter_batched(
                || {
                    next += 1;
                    next
                },
                |key| drop(black_box(set.get(&key))),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// An existing key of a keyed set (the lookup every call through a keyed breaker makes): its
/// breaker becomes the most recently used, under the set's lock. One thread, and two threads
/// looking up keys of the same set.
fn keyed_existing_key(criterion: &mut Criterion) {
    const KEYS: u64 = 1_000;
    let mut group = criterion.benchmark_group("keyed_existing_key");
    let set = Arc::new(KeyedBreakers::new("bench", KeyedBreakerConfig::default()).expect("valid"));
    for key in 0..KEYS {
        drop(set.get(&key));
    }
    let mut key = 0;
    group.bench_function("one_thread", |bencher| {
        bencher.iter(|| {
            key = (key + 1) % KEYS;
            black_box(set.get(&key))
        })
    });
    group.bench_function("two_threads", |bencher| {
        bencher.iter_custom(|iterations| {
            let barrier = Arc::new(Barrier::new(3));
            let workers: Vec<_> = (0..2)
                .map(|worker| {
                    let (set, barrier) = (set.clone(), barrier.clone());
                    thread::spawn(move || {
                        barrier.wait();
                        for call in 0..iterations {
                            black_box(set.get(&((call * 2 + worker) % KEYS)));
                        }
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            for worker in workers {
                worker.join().expect("no panic");
            }
            start.elapsed()
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = allocations, single_thread, two_threads, keyed_new_key, keyed_existing_key
}
criterion_main!(benches);
