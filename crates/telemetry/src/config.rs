//! The telemetry configuration: a plain serde struct with documented defaults and a `validate()`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

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
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
    /// More `service`-independent resource attributes of every exported span, e.g.
    /// `deployment.environment.name = "prod"`. `service.name`, `service.version` and
    /// `service.instance.id` come from their own keys and cannot be set here. Default: none.
    pub resource_attributes: BTreeMap<String, String>,
    /// OTLP collector endpoint, e.g. `http://127.0.0.1:4318` (HTTP) or `https://collector:4317`
    /// (gRPC). Default `None`: spans are made (log lines carry trace ids) but not exported. For
    /// HTTP, an endpoint without a path gets `/v1/traces` appended. `https://` needs the `tls`
    /// feature: the server certificate is verified against the system roots and
    /// [`otlp_ca_file`](Self::otlp_ca_file).
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: `http/protobuf` (default, the `otlp-http` feature) or `grpc` (the
    /// `otlp-grpc` feature). With an endpoint set, [`validate`](Self::validate) refuses a
    /// transport whose feature is off, naming the feature.
    pub otlp_protocol: OtlpProtocol,
    /// Headers sent with every export (gRPC metadata for `grpc`), e.g. an `authorization` a
    /// collector requires. Their values are secrets: `Debug` shows only the names. They win over
    /// the same headers in `OTEL_EXPORTER_OTLP_HEADERS`, which the exporter also reads. Default:
    /// none.
    pub otlp_headers: BTreeMap<String, String>,
    /// A PEM file of CA certificates trusted for an `https://` endpoint besides the system roots
    /// (a private CA or a self-signed collector). Needs the `tls` feature. Default `None`.
    pub otlp_ca_file: Option<PathBuf>,
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
            resource_attributes: BTreeMap::new(),
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            otlp_headers: BTreeMap::new(),
            otlp_ca_file: None,
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
        if let Some(name) = self.resource_attributes.keys().find(|name| {
            name.trim().is_empty()
                || matches!(
                    name.as_str(),
                    "service.name" | "service.version" | "service.instance.id"
                )
        }) {
            return Err(ConfigError::invalid(
                "resource_attributes",
                name,
                "non-empty attribute names other than service.name, service.version and \
                 service.instance.id (they have their own keys)",
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            if !is_http_url(endpoint) {
                return Err(ConfigError::invalid(
                    "otlp_endpoint",
                    endpoint,
                    "an absolute http:// or https:// URL such as http://127.0.0.1:4318",
                ));
            }
            if !self.otlp_protocol.is_built_in() {
                return Err(self.otlp_protocol.feature_off());
            }
            if !cfg!(feature = "tls") && endpoint.starts_with("https://") {
                return Err(ConfigError::invalid(
                    "otlp_endpoint",
                    endpoint,
                    "an http:// URL (https:// needs the `tls` feature of mainstay-telemetry)",
                ));
            }
        }
        for (name, value) in &self.otlp_headers {
            // The value is a secret: the error names the header, never its value.
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
                || name.bytes().any(|byte| byte.is_ascii_uppercase())
            {
                return Err(ConfigError::invalid(
                    "otlp_headers",
                    name,
                    "lower-case header names (token characters) with values of visible ASCII \
                     and spaces (the value is not shown)",
                ));
            }
        }
        if let Some(path) = &self.otlp_ca_file {
            crate::traces::read_ca_file(path).map_err(|allowed| {
                ConfigError::invalid("otlp_ca_file", &path.display().to_string(), allowed)
            })?;
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

impl fmt::Debug for TelemetryConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values are credentials: only their names are shown.
        let headers: BTreeMap<&str, &str> = self
            .otlp_headers
            .keys()
            .map(|name| (name.as_str(), crate::REDACTED))
            .collect();
        formatter
            .debug_struct("TelemetryConfig")
            .field("service_name", &self.service_name)
            .field("service_version", &self.service_version)
            .field("service_instance_id", &self.service_instance_id)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("redact_fields", &self.redact_fields)
            .field("resource_attributes", &self.resource_attributes)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("otlp_protocol", &self.otlp_protocol)
            .field("otlp_headers", &headers)
            .field("otlp_ca_file", &self.otlp_ca_file)
            .field("sampling_ratio", &self.sampling_ratio)
            .finish()
    }
}

pub(crate) fn is_http_url(endpoint: &str) -> bool {
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
#[non_exhaustive]
pub enum LogFormat {
    /// One bunyan JSON object per line (the default; what log pipelines ingest).
    #[default]
    Json,
    /// Human-readable text, one record per line, for a terminal.
    Pretty,
}

/// The OTLP transport used when [`TelemetryConfig::otlp_endpoint`] is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OtlpProtocol {
    /// Protobuf over HTTP (`http/protobuf`, the default; usually port 4318).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// gRPC (`grpc`; usually port 4317).
    #[serde(rename = "grpc")]
    Grpc,
}

impl OtlpProtocol {
    /// Whether this crate was built with the transport (its feature is on).
    pub(crate) fn is_built_in(self) -> bool {
        match self {
            Self::HttpProtobuf => cfg!(feature = "otlp-http"),
            Self::Grpc => cfg!(feature = "otlp-grpc"),
        }
    }

    /// The error for an endpoint configured with this transport while its feature is off.
    pub(crate) fn feature_off(self) -> ConfigError {
        match self {
            Self::HttpProtobuf => ConfigError::invalid(
                "otlp_protocol",
                "http/protobuf",
                "a transport built into mainstay-telemetry: `http/protobuf` needs its \
                 `otlp-http` feature",
            ),
            Self::Grpc => ConfigError::invalid(
                "otlp_protocol",
                "grpc",
                "a transport built into mainstay-telemetry: `grpc` needs its `otlp-grpc` \
                 feature",
            ),
        }
    }
}

/// An invalid [`TelemetryConfig`] value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
