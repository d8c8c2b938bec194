//! Integration tests of mainstay-telemetry: one binary, a module per area.

mod config;
mod logs;
mod metrics;
mod process;
mod request_id;
mod support;
mod traces;
