//! Dependency health checks and Kubernetes liveness, readiness and startup reports.
//!
//! A [`HealthRegistry`] runs [`Check`]s concurrently, each on its own task under its own timeout
//! (a hanging or panicking check is reported `unhealthy` and never delays the report past that
//! timeout), aggregates their statuses, caches the results for `cache_interval` (a burst of probes
//! makes at most one call per check per interval; concurrent probes share the one in-flight run),
//! and renders plain serde [`Report`]s with an HTTP status code hint.
//!
//! ```
//! use std::sync::Arc;
//! use mainstay_health::{
//!     Check, CheckOutcome, Criticality, HealthConfig, HealthMetrics, HealthRegistry, Status, View,
//!     async_trait,
//! };
//!
//! #[derive(Debug)]
//! struct Database;
//!
//! #[async_trait]
//! impl Check for Database {
//!     fn name(&self) -> &str {
//!         "database"
//!     }
//!     fn criticality(&self) -> Criticality {
//!         Criticality::Critical
//!     }
//!     async fn check(&self) -> CheckOutcome {
//!         CheckOutcome::healthy()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut prometheus = prometheus_client::registry::Registry::default();
//! let metrics = HealthMetrics::register(&mut prometheus);
//! let mut config = HealthConfig::default();
//! config.disk.enabled = false;
//! config.memory.enabled = false;
//!
//! let health = HealthRegistry::builder(config, "1.0.0").metrics(metrics).build()?;
//! health.register(Arc::new(Database))?;
//! health.validate_check_names()?;
//!
//! assert_eq!(health.readiness(View::Public).await.status_code, 503); // not started yet
//! health.mark_started();
//! let ready = health.readiness(View::Public).await;
//! assert_eq!((ready.status_code, ready.report.status), (200, Status::Healthy));
//! assert_eq!(health.liveness().await.status_code, 200);
//!
//! health.begin_shutdown();
//! assert_eq!(health.readiness(View::Public).await.status_code, 503);
//! # Ok(()) }
//! ```
//!
//! # Probes
//!
//! | fn | runs checks | 503 when |
//! |---|---|---|
//! | [`HealthRegistry::liveness`] | never | never |
//! | [`HealthRegistry::startup`] | never | before [`HealthRegistry::mark_started`] |
//! | [`HealthRegistry::readiness`] | cached | before startup, after [`HealthRegistry::begin_shutdown`], or aggregate `unhealthy` |
//! | [`HealthRegistry::deps`] | cached | aggregate `unhealthy` |
//!
//! Aggregation: a critical check `unhealthy` makes the service `unhealthy`; a non-critical check
//! `unhealthy`, or any check `degraded`, makes it `degraded`; otherwise it is `healthy`.
//!
//! # Built-in checks
//!
//! [`DiskSpaceCheck`] (`disk`), [`MemoryCheck`] (`memory`), registered by the builder unless
//! disabled in [`HealthConfig`], and [`ThresholdCheck`], which other components feed.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `openapi` | no | `utoipa::ToSchema` for [`Report`], [`CheckReport`] and [`Status`] |
//!
//! # MSRV
//!
//! Rust 1.95.

mod catalogue;
mod check;
mod checks;
mod config;
mod metrics;
mod registry;
mod report;

pub use async_trait::async_trait;
pub use catalogue::METRICS;
pub use check::{Check, CheckOutcome, Criticality, Status};
pub use checks::{
    DiskReader, DiskReading, DiskSpaceCheck, MemoryCheck, MemoryReader, MemoryReading,
    ProcMemoryReader, StatvfsReader, ThresholdCheck, ThresholdError, Thresholds,
};
pub use config::{CheckOverride, ConfigError, DiskConfig, HealthConfig, MemoryConfig};
pub use metrics::HealthMetrics;
pub use registry::{HealthRegistry, HealthRegistryBuilder, RegisterError};
pub use report::{CheckReport, ProbeResponse, Report, View};
