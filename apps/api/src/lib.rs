//! The mainstay reference API: every mainstay crate composed in one axum service.
//!
//! The binary (`src/main.rs`) only calls [`cli::main`]. The code is laid out by feature: each area
//! of the API has its own file under [`routes`], and cross-cutting pieces ([`auth`], [`problem`],
//! [`server`]) sit beside them, so a new feature adds files rather than edits.

pub mod app;
pub mod auth;
pub mod backup;
pub mod backup_client;
pub mod backup_schedule;
pub mod backup_status;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod erasure;
pub mod faults;
pub mod probe;
pub mod problem;
pub mod routes;
pub mod server;
