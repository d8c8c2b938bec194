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
