//! Harness for the end-to-end tests: runs the real `mainstay-api` binary and the real peers it talks
//! to (an OTLP/HTTP receiver, a private redis-server), and reads what the process prints.
//!
//! The binary is the one `cargo xtask ci` built and named in `MAINSTAY_E2E_API_BIN`; without that
//! variable the harness builds it once with cargo and uses cargo's own report of its path.

pub mod load;
pub mod metrics;
pub mod otlp;
pub mod process;
pub mod prometheus;
pub mod redis;

pub use process::{Api, ApiBuilder, api_bin};

/// The lowercase hex SHA-256 of `text`, as `printf %s TEXT | sha256sum` prints it: what
/// `auth.api_keys[].key_sha256` holds.
#[must_use]
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}
