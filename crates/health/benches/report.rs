//! Cost of answering a probe: `liveness()` and a cached `readiness()` against a bare async fn
//! returning a comparable struct, with and without JSON encoding, in the same run.
//!
//! Run with `cargo bench -p mainstay-health --bench report`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mainstay_health::{
    Check, CheckOutcome, Criticality, HealthConfig, HealthMetrics, HealthRegistry, View,
    async_trait,
};
use serde::Serialize;

/// A trivial check, so readiness has three entries to render.
#[derive(Debug)]
struct Named(&'static str);

#[async_trait]
impl Check for Named {
    fn name(&self) -> &str {
        self.0
    }
    fn criticality(&self) -> Criticality {
        Criticality::Critical
    }
    async fn check(&self) -> CheckOutcome {
        CheckOutcome::healthy()
    }
}

/// What a bare handler would return: a status and a tiny body.
#[derive(Debug, Serialize)]
struct Bare {
    status: &'static str,
}

async fn bare() -> (u16, Bare) {
    (200, Bare { status: "healthy" })
}

fn probes(criterion: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("bench runtime");
    let mut prometheus = prometheus_client::registry::Registry::default();
    let config = HealthConfig {
        // Long enough that every measured readiness call is answered from the cache.
        cache_interval: Duration::from_secs(3600),
        ..HealthConfig::default()
    };
    let registry = HealthRegistry::builder(config, "0.1.0")
        .metrics(HealthMetrics::register(&mut prometheus))
        .build()
        .expect("valid config");
    for name in ["redis", "object_store", "dlq"] {
        registry
            .register(Arc::new(Named(name)))
            .expect("unique names");
    }
    registry.mark_started();
    // Fill the cache once (disk, memory and the three checks above).
    let warm = runtime.block_on(registry.readiness(View::Public));
    assert_eq!(warm.report.checks.len(), 5);

    let mut group = criterion.benchmark_group("probe");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("bare_async_fn", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    black_box(bare().await);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("liveness", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    black_box(registry.liveness().await);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("readiness_cached", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    black_box(registry.readiness(View::Public).await);
                }
                start.elapsed()
            })
        });
    });
    group.finish();

    // The same, including the JSON body an HTTP handler would write.
    let mut group = criterion.benchmark_group("probe_json");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("bare_async_fn", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let (code, body) = bare().await;
                    black_box((code, serde_json::to_vec(&body).expect("encodes")));
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("liveness", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let response = registry.liveness().await;
                    let body = serde_json::to_vec(&response.report).expect("encodes");
                    black_box((response.status_code, body));
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("readiness_cached", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let response = registry.readiness(View::Public).await;
                    let body = serde_json::to_vec(&response.report).expect("encodes");
                    black_box((response.status_code, body));
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, probes);
criterion_main!(benches);
