//! The service configuration: types, loading with figment, validation and the generated reference.
//!
//! Precedence, lowest first: the defaults of the types < the standard `OTEL_*` variables of the
//! telemetry keys (`OTEL_EXPORTER_OTLP_ENDPOINT`, ...; decision 0092) < `mainstay.toml` in the
//! working directory (or the file named by `--config PATH`) < `MAINSTAY_` environment variables,
//! where `__` separates the levels (`MAINSTAY_SERVER__ADDR`) < the admin overrides file. Every key
//! is documented in `docs/configuration.md`, generated from these types by `cargo xtask codegen`.
//!
//! The module is split along its seams: `types` holds the configuration structs and enums with
//! their defaults, `load` the figment layers, the validation and [`ConfigError`], `print` the
//! flattened, secret-masked view behind `config print` and `GET /admin/config`, and `reference`
//! the key table ([`KEY_DOCS`]) that `docs/configuration.md` is generated from.

mod load;
mod print;
mod reference;
mod types;

pub(crate) use load::from_ratelimit;
pub use load::{
    ADMIN_OVERRIDES_FILE, ConfigError, DEFAULT_CONFIG_FILE, ENV_PREFIX, STORAGE_CHECKS, figment,
    load,
};
pub(crate) use print::mask_url;
pub use print::{flatten, print};
pub use reference::{KEY_DOCS, reference};
pub use types::{
    AdminConfig, ApiKeyEntry, AuthConfig, BackupConfig, Config, ErasureConfig, Plan, RedisConfig,
    ServerConfig, ShutdownConfig, Tier,
};
