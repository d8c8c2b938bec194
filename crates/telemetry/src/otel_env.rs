//! The standard OpenTelemetry environment variables, read into [`TelemetryConfig`] settings.
//!
//! An application layers these settings just above its defaults, so that its own configuration
//! file and variables win over them (docs/decisions/0092). Each setting names the variable it
//! came from, for `config print` and for error messages.
//!
//! | variable | key |
//! |---|---|
//! | `OTEL_SERVICE_NAME` | `service_name` |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `resource_attributes`; `service.name` (when `OTEL_SERVICE_NAME` is unset), `service.version` and `service.instance.id` go to their own keys |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `otlp_endpoint` |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | `otlp_protocol` (`grpc` or `http/protobuf`) |
//! | `OTEL_EXPORTER_OTLP_HEADERS` | `otlp_headers` (names in lower case) |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE` | `otlp_ca_file` |
//! | `OTEL_TRACES_SAMPLER_ARG` | `sampling_ratio` |
//!
//! Lists (`k=v,k2=v2`) are read as the specification says: entries separated by `,`, whitespace
//! around keys and values ignored, keys and values percent-decoded. An empty variable counts as
//! unset. A malformed value is an [`OtelEnvError`] naming the variable (never a header value).
//!
//! [`TelemetryConfig`]: crate::TelemetryConfig

use serde_json::Value;

/// `OTEL_SERVICE_NAME`.
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// `OTEL_RESOURCE_ATTRIBUTES`.
pub const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
pub const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// `OTEL_EXPORTER_OTLP_HEADERS`.
pub const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// `OTEL_EXPORTER_OTLP_CERTIFICATE`.
pub const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
/// `OTEL_TRACES_SAMPLER_ARG`.
pub const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

/// Every variable read here.
pub const VARIABLES: &[&str] = &[
    SERVICE_NAME,
    RESOURCE_ATTRIBUTES,
    ENDPOINT,
    PROTOCOL,
    HEADERS,
    CERTIFICATE,
    SAMPLER_ARG,
];

/// Each variable with the key (relative to the telemetry section) it sets; `OTEL_RESOURCE_ATTRIBUTES`
/// also sets `service_name`, `service_version` and `service_instance_id` from their attributes.
pub const KEYS: &[(&str, &str)] = &[
    (SERVICE_NAME, "service_name"),
    (RESOURCE_ATTRIBUTES, "resource_attributes"),
    (ENDPOINT, "otlp_endpoint"),
    (PROTOCOL, "otlp_protocol"),
    (HEADERS, "otlp_headers"),
    (CERTIFICATE, "otlp_ca_file"),
    (SAMPLER_ARG, "sampling_ratio"),
];

/// One telemetry setting taken from an `OTEL_*` variable.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSetting {
    /// The variable it came from (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub variable: &'static str,
    /// The key, relative to the telemetry section (`otlp_endpoint`).
    pub key: &'static str,
    /// The value, as the configuration would hold it.
    pub value: Value,
}

/// A malformed `OTEL_*` variable. The message never holds a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid environment variable {variable}: {reason}")]
pub struct OtelEnvError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong and what is allowed.
    pub reason: String,
}

fn error(variable: &'static str, reason: impl Into<String>) -> OtelEnvError {
    OtelEnvError {
        variable,
        reason: reason.into(),
    }
}

/// Reads the variables through `lookup` (`|name| std::env::var(name).ok()` in an application).
///
/// # Errors
///
/// [`OtelEnvError`] for the first malformed variable.
///
/// ```
/// use mainstay_telemetry::otel_env::settings;
///
/// let env = |name: &str| match name {
///     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("https://collector:4318".to_owned()),
///     "OTEL_EXPORTER_OTLP_HEADERS" => Some("Authorization=Bearer%20s3cr3t".to_owned()),
///     _ => None,
/// };
/// let settings = settings(env)?;
/// assert_eq!(settings[0].key, "otlp_endpoint");
/// assert_eq!(settings[1].value["authorization"], "Bearer s3cr3t");
/// # Ok::<(), mainstay_telemetry::otel_env::OtelEnvError>(())
/// ```
pub fn settings(lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<OtelSetting>, OtelEnvError> {
    let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    let mut settings = Vec::new();
    let mut push = |variable: &'static str, key: &'static str, value: Value| {
        settings.push(OtelSetting {
            variable,
            key,
            value,
        });
    };
    if let Some(endpoint) = get(ENDPOINT) {
        let endpoint = endpoint.trim();
        if !crate::config::is_http_url(endpoint) {
            return Err(error(
                ENDPOINT,
                "expected an absolute http:// or https:// URL such as https://collector:4318",
            ));
        }
        push(ENDPOINT, "otlp_endpoint", Value::from(endpoint));
    }
    if let Some(protocol) = get(PROTOCOL) {
        let protocol = protocol.trim();
        if !matches!(protocol, "grpc" | "http/protobuf") {
            return Err(error(
                PROTOCOL,
                format!("{protocol:?} is not supported: expected `grpc` or `http/protobuf`"),
            ));
        }
        push(PROTOCOL, "otlp_protocol", Value::from(protocol));
    }
    if let Some(headers) = get(HEADERS) {
        let headers = parse_list(&headers).map_err(|reason| error(HEADERS, reason))?;
        let mut map = serde_json::Map::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(&value).is_err()
            {
                return Err(error(
                    HEADERS,
                    format!(
                        "header {name:?} is not a valid header name and value (the value is not shown)"
                    ),
                ));
            }
            map.insert(name, Value::from(value));
        }
        push(HEADERS, "otlp_headers", Value::Object(map));
    }
    if let Some(path) = get(CERTIFICATE) {
        push(CERTIFICATE, "otlp_ca_file", Value::from(path.trim()));
    }
    let service_name = get(SERVICE_NAME);
    if let Some(name) = &service_name {
        push(SERVICE_NAME, "service_name", Value::from(name.trim()));
    }
    if let Some(attributes) = get(RESOURCE_ATTRIBUTES) {
        let attributes =
            parse_list(&attributes).map_err(|reason| error(RESOURCE_ATTRIBUTES, reason))?;
        let mut others = serde_json::Map::new();
        for (name, value) in attributes {
            match name.as_str() {
                "service.name" if service_name.is_none() => {
                    push(RESOURCE_ATTRIBUTES, "service_name", Value::from(value));
                }
                // OTEL_SERVICE_NAME wins over the attribute, as the specification says.
                "service.name" => {}
                "service.version" => {
                    push(RESOURCE_ATTRIBUTES, "service_version", Value::from(value));
                }
                "service.instance.id" => {
                    push(
                        RESOURCE_ATTRIBUTES,
                        "service_instance_id",
                        Value::from(value),
                    );
                }
                _ => {
                    others.insert(name, Value::from(value));
                }
            }
        }
        if !others.is_empty() {
            push(
                RESOURCE_ATTRIBUTES,
                "resource_attributes",
                Value::Object(others),
            );
        }
    }
    if let Some(ratio) = get(SAMPLER_ARG) {
        let ratio = ratio
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .ok_or_else(|| {
                error(
                    SAMPLER_ARG,
                    format!("{ratio:?}: expected a sampling ratio from 0.0 to 1.0"),
                )
            })?;
        push(SAMPLER_ARG, "sampling_ratio", Value::from(ratio));
    }
    Ok(settings)
}

/// Parses `k=v,k2=v2` (W3C-baggage-like, as the specification's lists): entries separated by
/// `,`, empty entries skipped, whitespace around keys and values trimmed, both percent-decoded.
/// The error says what is wrong without quoting any value.
///
/// # Errors
///
/// An entry without `=`, an empty key, a bad `%` escape or an escape that is not UTF-8.
///
/// ```
/// let list = mainstay_telemetry::otel_env::parse_list("a=1, b = x%3Dy ,").unwrap();
/// assert_eq!(list, vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "x=y".to_owned())]);
/// assert!(mainstay_telemetry::otel_env::parse_list("a").is_err());
/// ```
pub fn parse_list(input: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries = Vec::new();
    for (position, entry) in input.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let number = position + 1;
        let Some((key, value)) = entry.split_once('=') else {
            return Err(format!(
                "entry {number} has no `=`: expected comma-separated key=value pairs"
            ));
        };
        let key = percent_decode(key.trim())
            .ok_or_else(|| format!("entry {number} has a malformed %-escape in its key"))?;
        if key.is_empty() {
            return Err(format!("entry {number} has an empty key"));
        }
        let value = percent_decode(value.trim()).ok_or_else(|| {
            format!("entry {number} ({key}) has a malformed %-escape in its value")
        })?;
        entries.push((key, value));
    }
    Ok(entries)
}

/// `%XX` escapes decoded; `None` for a truncated or non-hex escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    fn keys(settings: &[OtelSetting]) -> Vec<(&'static str, &'static str, Value)> {
        settings
            .iter()
            .map(|setting| (setting.variable, setting.key, setting.value.clone()))
            .collect()
    }

    #[test]
    fn every_variable_maps_to_its_key() {
        let settings = settings(env(&[
            (ENDPOINT, " https://collector:4318 "),
            (PROTOCOL, "grpc"),
            (HEADERS, "Authorization=Bearer%20t0k,x-tenant = acme"),
            (CERTIFICATE, "/etc/ssl/collector.pem"),
            (SERVICE_NAME, "orders"),
            (
                RESOURCE_ATTRIBUTES,
                "service.name=ignored,service.version=1.2,deployment.environment.name=prod",
            ),
            (SAMPLER_ARG, "0.25"),
        ]))
        .expect("valid");
        assert_eq!(
            keys(&settings),
            vec![
                (ENDPOINT, "otlp_endpoint", json!("https://collector:4318")),
                (PROTOCOL, "otlp_protocol", json!("grpc")),
                (
                    HEADERS,
                    "otlp_headers",
                    json!({"authorization": "Bearer t0k", "x-tenant": "acme"})
                ),
                (CERTIFICATE, "otlp_ca_file", json!("/etc/ssl/collector.pem")),
                (SERVICE_NAME, "service_name", json!("orders")),
                (RESOURCE_ATTRIBUTES, "service_version", json!("1.2")),
                (
                    RESOURCE_ATTRIBUTES,
                    "resource_attributes",
                    json!({"deployment.environment.name": "prod"})
                ),
                (SAMPLER_ARG, "sampling_ratio", json!(0.25)),
            ]
        );
    }

    #[test]
    fn the_service_name_attribute_applies_without_otel_service_name() {
        let settings =
            settings(env(&[(RESOURCE_ATTRIBUTES, "service.name=billing")])).expect("valid");
        assert_eq!(
            keys(&settings),
            vec![(RESOURCE_ATTRIBUTES, "service_name", json!("billing"))]
        );
    }

    #[test]
    fn empty_variables_are_unset() {
        let settings = settings(env(&[(ENDPOINT, ""), (SAMPLER_ARG, "  ")])).expect("valid");
        assert!(settings.is_empty(), "{settings:?}");
    }

    #[test]
    fn malformed_variables_are_named_and_never_quote_header_values() {
        for (variable, value, expected) in [
            (
                ENDPOINT,
                "collector:4318",
                "absolute http:// or https:// URL",
            ),
            (PROTOCOL, "http/json", "not supported"),
            (HEADERS, "authorization", "entry 1 has no `=`"),
            (HEADERS, "a=1,=2", "entry 2 has an empty key"),
            (HEADERS, "authorization=s3cr3t%zz", "malformed %-escape"),
            (HEADERS, "bad header=s3cr3t", "not a valid header name"),
            (
                HEADERS,
                "authorization=s3cr3t%0A",
                "not a valid header name and value",
            ),
            (RESOURCE_ATTRIBUTES, "a=%E2%28", "malformed %-escape"),
            (SAMPLER_ARG, "1.5", "from 0.0 to 1.0"),
            (SAMPLER_ARG, "half", "from 0.0 to 1.0"),
        ] {
            let error = settings(env(&[(variable, value)])).expect_err(value);
            assert_eq!(error.variable, variable);
            let message = error.to_string();
            assert!(message.contains(variable), "{message}");
            assert!(message.contains(expected), "{value}: {message}");
            assert!(!message.contains("s3cr3t"), "{message}");
        }
    }

    #[test]
    fn percent_decoding_follows_the_specification() {
        assert_eq!(percent_decode("a%20b%2C%3D"), Some("a b,=".to_owned()));
        assert_eq!(percent_decode("%C3%A9"), Some("é".to_owned()));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
