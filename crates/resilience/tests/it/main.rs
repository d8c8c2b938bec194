//! Integration tests of mainstay-resilience: one binary, a module per area.

mod breaker;
mod budget;
mod bulkhead;
mod concurrency;
mod config;
mod failsafe_gaps;
mod helpers;
mod keyed;
#[cfg(feature = "tower")]
mod layers;
mod metrics;
mod policy;
mod presets;
mod reconfigure;
mod registry;
mod retry;
mod stale;
mod support;
