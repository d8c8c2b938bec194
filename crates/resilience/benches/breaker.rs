//! The cost of one call through a circuit breaker, against failsafe 1.3 and an uncontended mutex
//! (the floor), on one thread and on two threads sharing one breaker.
//!
//! Run with `cargo bench -p mainstay-resilience --bench breaker`.

use std::hint::black_box;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::{CircuitBreaker as _, Config, backoff, failure_policy};
use mainstay_resilience::{BreakerConfig, CircuitBreaker, ErrorClass, Outcome};

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

/// The calls measured: each returns whether it was admitted, so that nothing is optimised away.
#[derive(Clone)]
enum Subject {
    Mutex(Arc<Mutex<u64>>),
    Ours(CircuitBreaker),
    Failsafe(Arc<Failsafe>),
}

impl Subject {
    #[inline]
    fn call(&self) -> bool {
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
        }
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
    ]
}

fn single_thread(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("single_thread");
    for (name, subject) in subjects() {
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
                        let (subject, barrier) = (subject.clone(), barrier.clone());
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

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = single_thread, two_threads
}
criterion_main!(benches);
