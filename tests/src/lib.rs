//! Harness for the end-to-end tests: runs the real `mainstay-api` binary and the real peers it talks
//! to (an OTLP/HTTP receiver, a private redis-server), and reads what the process prints.
//!
//! The binary is the one `cargo xtask ci` built and named in `MAINSTAY_E2E_API_BIN`; without that
//! variable the harness builds it once with cargo and uses cargo's own report of its path.

pub mod load;
pub mod otlp;
pub mod process;
pub mod redis;

pub use process::{Api, ApiBuilder, api_bin};
