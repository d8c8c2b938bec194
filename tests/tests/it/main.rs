//! End-to-end tests against the built `mainstay-api` binary.

mod auth;
mod backup;
mod backup_status;
mod config;
mod dlq_damage;
mod drill;
mod encryption;
mod export_outage;
mod health;
mod http;
mod metrics_catalogue;
mod observability;
mod outage;
mod probe;
mod prometheus;
mod ratelimit;
mod records;
mod runbooks;
mod shutdown;
mod stateless;
mod store_faults;
mod tenants;
mod unprivileged;
mod wal_damage;
