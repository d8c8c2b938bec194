//! Integration tests of mainstay-health: one binary, a module per area.

mod aggregation;
mod builtin;
mod caching;
mod config;
mod lifecycle;
mod metrics;
mod report_json;
mod support;
mod timeouts;
