//! Configuration defaults, serde names, validation errors.

use mainstay_telemetry::{ConfigError, InitError, LogFormat, OtlpProtocol, TelemetryConfig};

#[test]
fn defaults_are_the_documented_ones() {
    let config = TelemetryConfig::default();
    assert_eq!(config.service_name, "mainstay");
    assert_eq!(config.service_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(config.service_instance_id, None);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.log_filter, "info");
    assert!(config.redact_fields.is_empty(), "extra patterns only");
    assert_eq!(
        mainstay_telemetry::BUILT_IN_REDACT_PATTERNS,
        [
            "*token*",
            "*secret*",
            "*password*",
            "*passwd*",
            "*api_key*",
            "*apikey*",
            "authorization",
            "cookie",
            "set-cookie"
        ]
    );
    assert_eq!(config.otlp_endpoint, None);
    assert_eq!(config.otlp_protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(config.sampling_ratio, 0.1);
    config.validate().expect("defaults are valid");
}

#[test]
fn serde_uses_the_documented_names_and_rejects_unknown_keys() {
    let config: TelemetryConfig = serde_json::from_str(
        r#"{"log_format":"pretty","otlp_protocol":"grpc","otlp_endpoint":"http://c:4317"}"#,
    )
    .expect("parses");
    assert_eq!(config.log_format, LogFormat::Pretty);
    assert_eq!(config.otlp_protocol, OtlpProtocol::Grpc);
    assert_eq!(config.sampling_ratio, 0.1, "missing keys take defaults");
    let http: TelemetryConfig =
        serde_json::from_str(r#"{"otlp_protocol":"http/protobuf"}"#).expect("parses");
    assert_eq!(http.otlp_protocol, OtlpProtocol::HttpProtobuf);
    let error =
        serde_json::from_str::<TelemetryConfig>(r#"{"sampling":0.5}"#).expect_err("unknown key");
    assert!(
        error.to_string().contains("unknown field `sampling`"),
        "{error}"
    );
    let round_trip: TelemetryConfig =
        serde_json::from_str(&serde_json::to_string(&config).expect("serializes")).expect("parses");
    assert_eq!(round_trip, config);
}

#[test]
fn invalid_values_name_the_key_the_value_and_what_is_allowed() {
    let cases: [(TelemetryConfig, &str, &str); 6] = [
        (
            TelemetryConfig {
                sampling_ratio: 1.5,
                ..Default::default()
            },
            "sampling_ratio",
            "1.5",
        ),
        (
            TelemetryConfig {
                sampling_ratio: f64::NAN,
                ..Default::default()
            },
            "sampling_ratio",
            "NaN",
        ),
        (
            TelemetryConfig {
                otlp_endpoint: Some("localhost:4318".into()),
                ..Default::default()
            },
            "otlp_endpoint",
            "localhost:4318",
        ),
        (
            TelemetryConfig {
                log_filter: "info,[".into(),
                ..Default::default()
            },
            "log_filter",
            "info,[",
        ),
        (
            TelemetryConfig {
                service_name: " ".into(),
                ..Default::default()
            },
            "service_name",
            " ",
        ),
        (
            TelemetryConfig {
                redact_fields: vec!["".into()],
                ..Default::default()
            },
            "redact_fields",
            "",
        ),
    ];
    for (config, key, value) in cases {
        let error = config.validate().expect_err(key);
        assert_eq!(error.key(), key);
        let ConfigError::Invalid {
            value: rejected,
            allowed,
            ..
        } = &error
        else {
            panic!("{key}: not an invalid value: {error:?}");
        };
        assert_eq!(rejected, value);
        assert!(!allowed.is_empty());
        let message = error.to_string();
        assert!(
            message.contains(key) && message.contains("expected"),
            "{message}"
        );
        // Building refuses it with the same error.
        let built = mainstay_telemetry::build(&config, std::io::sink);
        assert!(matches!(built, Err(InitError::Config(ref inner)) if inner == &error));
    }
}

#[test]
fn init_installs_globally_once_and_writes_every_line_in_order() {
    let logs = crate::support::Capture::default();
    let guard = mainstay_telemetry::init_with_writer(
        &TelemetryConfig {
            service_name: "global".into(),
            ..TelemetryConfig::default()
        },
        logs.clone(),
    )
    .expect("first init");
    // This thread has no scoped default, so the global subscriber receives the event.
    tracing::warn!("through the global subscriber");
    for sequence in 0..500 {
        tracing::info!(sequence, "ordered line");
    }
    // Lines go through the log writer thread; a flush waits until they are all written.
    guard.force_flush().expect("flushed");
    assert_eq!(logs.lines_with("through the global subscriber").len(), 1);
    let sequences: Vec<_> = logs
        .lines_with("ordered line")
        .iter()
        .map(|line| line["sequence"].as_u64().expect("sequence"))
        .collect();
    assert_eq!(
        sequences,
        (0..500).collect::<Vec<_>>(),
        "all lines, in order"
    );
    let second = mainstay_telemetry::init_with_writer(&TelemetryConfig::default(), std::io::sink);
    assert!(matches!(second, Err(InitError::AlreadyInitialized(_))));
    guard.shutdown().expect("no exporter, nothing to flush");
}

/// Issue 15, point 11: the OTLP keys refuse what cannot work, name the key, and never quote a
/// header value.
#[test]
fn otlp_headers_ca_file_and_resource_attributes_are_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let header = |name: &str, value: &str| TelemetryConfig {
        otlp_headers: [(name.to_owned(), value.to_owned())].into(),
        ..TelemetryConfig::default()
    };
    let cases = [
        (header("bad header", "s3cr3t"), "otlp_headers", "bad header"),
        (
            header("Authorization", "s3cr3t"),
            "otlp_headers",
            "Authorization",
        ),
        (
            header("authorization", "s3cr3t\n"),
            "otlp_headers",
            "authorization",
        ),
        (
            TelemetryConfig {
                otlp_ca_file: Some(dir.path().join("missing.pem")),
                ..TelemetryConfig::default()
            },
            "otlp_ca_file",
            "missing.pem",
        ),
        (
            TelemetryConfig {
                otlp_ca_file: Some(not_pem),
                ..TelemetryConfig::default()
            },
            "otlp_ca_file",
            "not.pem",
        ),
        (
            TelemetryConfig {
                resource_attributes: [("service.name".to_owned(), "x".to_owned())].into(),
                ..TelemetryConfig::default()
            },
            "resource_attributes",
            "service.name",
        ),
    ];
    for (config, key, value) in cases {
        let error = config.validate().expect_err(key);
        assert_eq!(error.key(), key, "{error}");
        let message = error.to_string();
        assert!(message.contains(value), "{message}");
        assert!(!message.contains("s3cr3t"), "{message}");
    }
    let valid = header("authorization", "Bearer s3cr3t");
    assert!(valid.validate().is_ok());
    // `Debug` shows which headers are sent, never their values.
    let shown = format!("{valid:?}");
    assert!(
        shown.contains("authorization") && !shown.contains("s3cr3t"),
        "{shown}"
    );
}

/// Without the `tls` feature an `https://` endpoint is refused up front rather than failing at
/// each export; with it, it is accepted.
#[cfg(feature = "otlp-http")]
#[test]
fn https_endpoints_need_the_tls_feature() {
    let config = TelemetryConfig {
        otlp_endpoint: Some("https://collector:4318".into()),
        ..TelemetryConfig::default()
    };
    let result = config.validate();
    if cfg!(feature = "tls") {
        assert!(result.is_ok(), "{result:?}");
    } else {
        let error = result.expect_err("https without tls");
        assert_eq!(error.key(), "otlp_endpoint");
        assert!(error.to_string().contains("`tls` feature"), "{error}");
    }
}
