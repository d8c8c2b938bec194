#![doc = include_str!("../README.md")]

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

// Third-party crates in the public API, re-exported so that a caller names their items at the
// version this crate uses without a dependency of its own (README, "Third-party types in the
// public API").
pub use prometheus_client;
pub use serde;
pub use serde_json;
#[cfg(feature = "openapi")]
pub use utoipa;
