//! A health registry with two checks and its readiness report: a critical database check and a
//! non-critical threshold check fed with a queue's size. The program makes each of them worse in
//! turn and prints what the readiness probe answers, moving a manual clock past the cache interval
//! between probes so that every probe sees fresh results without waiting.
//!
//! Run with `cargo run -p mainstay-health --example readiness`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mainstay_clock::ManualClock;
use mainstay_health::{
    Check, CheckOutcome, Criticality, HealthConfig, HealthRegistry, Status, ThresholdCheck,
    Thresholds, View, async_trait,
};

/// A database check whose answer the program switches, as a connection pool would see its server
/// come and go.
#[derive(Debug, Default)]
struct Database {
    down: AtomicBool,
}

#[async_trait]
impl Check for Database {
    fn name(&self) -> &str {
        "database"
    }

    fn criticality(&self) -> Criticality {
        Criticality::Critical
    }

    async fn check(&self) -> CheckOutcome {
        if self.down.load(Ordering::Relaxed) {
            CheckOutcome::unhealthy("connection refused by 10.0.0.7:5432")
        } else {
            CheckOutcome::healthy()
        }
    }
}

/// Probes readiness in the public view, prints the status code and the report, and returns both.
async fn probe(health: &HealthRegistry, what: &str) -> Result<(u16, Status), serde_json::Error> {
    let ready = health.readiness(View::Public).await;
    println!("{what}: HTTP {}", ready.status_code);
    println!("{}\n", serde_json::to_string_pretty(&ready.report)?);
    Ok((ready.status_code, ready.report.status))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The built-in disk and memory checks read this machine; leave them out so the output is the
    // same everywhere.
    let mut config = HealthConfig::default();
    config.disk.enabled = false;
    config.memory.enabled = false;
    let cache_interval = config.cache_interval;

    let clock = ManualClock::new();
    let health = HealthRegistry::builder(config, "1.0.0")
        .clock(clock.shared())
        .build()?;
    let database = Arc::new(Database::default());
    let queue = ThresholdCheck::new(
        "dlq",
        Criticality::NonCritical,
        Thresholds {
            degraded_at: Some(100.0),
            unhealthy_at: Some(1_000.0),
        },
    )?;
    health.register(database.clone())?;
    health.register(Arc::new(queue.clone()))?;
    health.validate_check_names()?;

    assert_eq!(
        probe(&health, "before startup").await?,
        (503, Status::Unhealthy)
    );
    health.mark_started();
    assert_eq!(probe(&health, "started").await?, (200, Status::Healthy));

    // A non-critical check that is unhealthy degrades the service; it stays in rotation.
    queue.set(5_000.0);
    clock.advance(cache_interval);
    assert_eq!(
        probe(&health, "the queue is long").await?,
        (200, Status::Degraded)
    );

    // A critical check that is unhealthy takes the service out of rotation. The public view says
    // why without the check's own message, which names a host.
    database.down.store(true, Ordering::Relaxed);
    clock.advance(cache_interval);
    assert_eq!(
        probe(&health, "the database is down").await?,
        (503, Status::Unhealthy)
    );

    health.begin_shutdown();
    assert_eq!(
        probe(&health, "shutting down").await?,
        (503, Status::Unhealthy)
    );
    Ok(())
}
