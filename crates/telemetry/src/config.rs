//! The telemetry configuration: a plain serde struct with documented defaults and a `validate()`.

use serde::{Deserialize, Serialize};

/// Configuration of logs, traces and their export.
///
/// Deserialize it from the application's configuration (it rejects unknown keys), then call
/// [`TelemetryConfig::validate`] before [`init`](crate::init). `Default` gives the documented
/// defaults.
///
/// ```
/// use mainstay_telemetry::{LogFormat, TelemetryConfig};
///
/// let config = TelemetryConfig::default();
/// assert_eq!(config.service_name, "mainstay");
/// assert_eq!(config.log_format, LogFormat::Json);
/// assert_eq!(config.sampling_ratio, 0.1);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `service.name` resource attribute and the bunyan `name` of every log line.
    /// Default `"mainstay"`.
    pub service_name: String,
    /// `service.version` resource attribute. Default: this crate's version; the app overrides it
    /// with its own.
    pub service_version: String,
    /// `service.instance.id` resource attribute. Default `None`: a fresh ULID is made at start.
    pub service_instance_id: Option<String>,
    /// Log line format: `json` (bunyan, the default) or `pretty` (human-readable).
    pub log_format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directives. Default `"info"`. [`init`](crate::init) uses
    /// `RUST_LOG` instead when that variable is set.
    pub log_filter: String,
    /// More patterns of field names whose values are written as `"[REDACTED]"` in log lines and
    /// exported span attributes, added to [`BUILT_IN_REDACT_PATTERNS`](crate::BUILT_IN_REDACT_PATTERNS)
    /// (which always apply). Names and patterns are compared in ASCII lower case with `-` read as
    /// `_`; a pattern without `*` matches the whole name or its last dot-separated segment
    /// (`authorization` matches `http.request.header.authorization`), and `*` matches any run of
    /// characters (`*_pin` matches `card_pin`). Default: none.
    pub redact_fields: Vec<String>,
    /// OTLP collector endpoint, e.g. `http://127.0.0.1:4318` (HTTP) or `http://127.0.0.1:4317`
    /// (gRPC). Default `None`: spans are made (log lines carry trace ids) but not exported. For
    /// HTTP, an endpoint without a path gets `/v1/traces` appended. The standard
    /// `OTEL_EXPORTER_OTLP_*` variables the exporter reads (headers, compression) still apply.
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: `http/protobuf` (default) or `grpc`.
    pub otlp_protocol: OtlpProtocol,
    /// Ratio of new traces (requests without a sampled parent) that are sampled, from 0.0 to 1.0.
    /// Parent-based: a request whose incoming `traceparent` says sampled is always sampled.
    /// Default `0.1`.
    pub sampling_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: "mainstay".to_owned(),
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            service_instance_id: None,
            log_format: LogFormat::Json,
            log_filter: "info".to_owned(),
            redact_fields: Vec::new(),
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            sampling_ratio: 0.1,
        }
    }
}

impl TelemetryConfig {
    /// Checks every value, returning the first invalid one with its key and what is allowed.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the key (relative to the telemetry section, e.g.
    /// `sampling_ratio`), the rejected value and the allowed values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.service_name.trim().is_empty() {
            return Err(ConfigError::invalid(
                "service_name",
                &self.service_name,
                "a non-empty name",
            ));
        }
        if self.service_version.trim().is_empty() {
            return Err(ConfigError::invalid(
                "service_version",
                &self.service_version,
                "a non-empty version",
            ));
        }
        if let Some(instance_id) = &self.service_instance_id
            && instance_id.trim().is_empty()
        {
            return Err(ConfigError::invalid(
                "service_instance_id",
                instance_id,
                "a non-empty id, or no value for a generated one",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_filter).is_err() {
            return Err(ConfigError::invalid(
                "log_filter",
                &self.log_filter,
                "tracing filter directives such as `info` or `info,mainstay=debug`",
            ));
        }
        if let Some(empty) = self
            .redact_fields
            .iter()
            .find(|field| field.trim().trim_matches('*').is_empty())
        {
            return Err(ConfigError::invalid(
                "redact_fields",
                empty,
                "field-name patterns with at least one character besides `*`",
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !is_http_url(endpoint)
        {
            return Err(ConfigError::invalid(
                "otlp_endpoint",
                endpoint,
                "an absolute http:// or https:// URL such as http://127.0.0.1:4318",
            ));
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::invalid(
                "sampling_ratio",
                &self.sampling_ratio.to_string(),
                "a number from 0.0 to 1.0",
            ));
        }
        Ok(())
    }
}

fn is_http_url(endpoint: &str) -> bool {
    match endpoint.parse::<http::Uri>() {
        Ok(uri) => {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri
                    .authority()
                    .is_some_and(|authority| !authority.host().is_empty())
        }
        Err(_) => false,
    }
}

/// The log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One bunyan JSON object per line (the default; what log pipelines ingest).
    #[default]
    Json,
    /// Human-readable text, one record per line, for a terminal.
    Pretty,
}

/// The OTLP transport used when [`TelemetryConfig::otlp_endpoint`] is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (`http/protobuf`, the default; usually port 4318).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (`grpc`; usually port 4317).
    #[serde(rename = "grpc")]
    Grpc,
}

/// An invalid [`TelemetryConfig`] value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key holds a value outside what is allowed.
    #[error("invalid value {value:?} for {key}: expected {allowed}")]
    Invalid {
        /// The key, relative to the telemetry section (`sampling_ratio`).
        key: &'static str,
        /// The rejected value as written.
        value: String,
        /// What the key accepts.
        allowed: &'static str,
    },
}

impl ConfigError {
    fn invalid(key: &'static str, value: &str, allowed: &'static str) -> Self {
        Self::Invalid {
            key,
            value: value.to_owned(),
            allowed,
        }
    }

    /// The key that holds the invalid value, relative to the telemetry section.
    #[must_use]
    pub fn key(&self) -> &'static str {
        match self {
            Self::Invalid { key, .. } => key,
        }
    }
}
