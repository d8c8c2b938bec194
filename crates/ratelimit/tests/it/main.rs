//! The integration tests of mainstay-ratelimit: one binary, a module per area.

mod accuracy;
mod cluster;
mod config;
mod events;
mod failover;
mod fleet;
mod http;
mod local;
mod metrics;
mod recovery;
mod redis;
mod support;
mod tls;
mod vectors;
