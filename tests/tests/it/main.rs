//! End-to-end tests against the built `mainstay-api` binary.

mod config;
mod http;
mod observability;
mod shutdown;
