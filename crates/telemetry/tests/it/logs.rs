//! Bunyan JSON lines, redaction in events and spans, error chains, the pretty format.

use mainstay_telemetry::{ErrorChain, LogFormat, TelemetryConfig};

use crate::support::{Capture, Harness};

#[test]
fn lines_keep_the_bunyan_core_fields() {
    let harness = Harness::new();
    tracing::dispatcher::with_default(&harness.dispatch, || {
        tracing::warn!(attempt = 3, "retrying");
    });
    let line = &harness.logs.lines_with("retrying")[0];
    for field in ["time", "msg", "name", "hostname", "pid", "v", "target"] {
        assert!(line.get(field).is_some(), "{field} missing from {line}");
    }
    assert_eq!(line["level"], 40, "bunyan's numeric warn level");
    assert_eq!(line["name"], "mainstay");
    assert_eq!(line["attempt"], 3);
}

#[test]
fn denied_fields_are_redacted_in_events_and_spans() {
    let harness = Harness::new();
    tracing::dispatcher::with_default(&harness.dispatch, || {
        let span = tracing::info_span!("login", api_key = "key-4711", user = "ann");
        let _entered = span.enter();
        tracing::info!(
            password = "hunter2",
            Authorization = "Bearer abc.def",
            http.cookie = "session=s3cr3t-cookie",
            set_cookie_count = 1,
            "signing in"
        );
    });
    harness.flush();
    let text = harness.logs.text();
    for secret in ["key-4711", "hunter2", "Bearer abc.def", "s3cr3t-cookie"] {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }
    let start = &harness.logs.lines_with("[LOGIN - START]")[0];
    assert_eq!(start["api_key"], "[REDACTED]");
    assert_eq!(start["user"], "ann");
    let event = &harness.logs.lines_with("signing in")[0];
    assert_eq!(event["password"], "[REDACTED]");
    assert_eq!(event["Authorization"], "[REDACTED]", "matched without case");
    assert_eq!(
        event["http.cookie"], "[REDACTED]",
        "matched on the last segment"
    );
    assert_eq!(event["api_key"], "[REDACTED]", "inherited span field");
    assert_eq!(
        event["set_cookie_count"], 1,
        "a name merely containing a word is kept"
    );
    assert_eq!(event["user"], "ann");
    assert!(
        event["trace_id"].is_string(),
        "redacted lines keep their other fields"
    );

    // The exported span and its events are redacted too.
    let span = harness.spans.span("login");
    let value = |attributes: &[opentelemetry::KeyValue], key: &str| {
        attributes
            .iter()
            .find(|attribute| attribute.key.as_str() == key)
            .map(|attribute| attribute.value.to_string())
    };
    assert_eq!(
        value(&span.attributes, "api_key").as_deref(),
        Some("[REDACTED]")
    );
    let event = span
        .events
        .iter()
        .find(|event| event.name == "signing in")
        .expect("event");
    assert_eq!(
        value(&event.attributes, "password").as_deref(),
        Some("[REDACTED]")
    );
    assert_eq!(
        value(&event.attributes, "http.cookie").as_deref(),
        Some("[REDACTED]")
    );
}

#[test]
fn the_deny_list_is_configurable() {
    let harness = Harness::with_config(&TelemetryConfig {
        redact_fields: vec!["ssn".into()],
        ..TelemetryConfig::default()
    });
    tracing::dispatcher::with_default(&harness.dispatch, || {
        tracing::info!(ssn = "123-45-6789", password = "visible", "custom list");
    });
    let line = &harness.logs.lines_with("custom list")[0];
    assert_eq!(line["ssn"], "[REDACTED]");
    assert_eq!(
        line["password"], "[REDACTED]",
        "the built-in patterns apply whatever the list says"
    );
}

/// Issue 15, point 5: secrets are redacted by pattern over normalised names, in event fields,
/// span fields and exported attributes alike, however the name is spelled.
#[test]
fn secret_fields_are_redacted_by_pattern_in_events_spans_and_exports() {
    let harness = Harness::new();
    tracing::dispatcher::with_default(&harness.dispatch, || {
        let span = tracing::info_span!(
            "call",
            client_secret = "sentinel-client-secret",
            "x-api-key" = "sentinel-x-api-key",
            route = "/v1/things"
        );
        let _entered = span.enter();
        tracing::info!(
            access_token = "sentinel-access-token",
            db_password = "sentinel-db-password",
            "X-Api-Key" = "sentinel-upper-api-key",
            Authorization = "sentinel-authorization",
            http.request.header.refresh_token = "sentinel-refresh-token",
            Set_Cookie = "sentinel-set-cookie",
            cookies_accepted = true,
            "calling"
        );
    });
    harness.flush();
    let text = harness.logs.text();
    assert!(text.contains("calling"), "the event was logged: {text}");
    assert!(
        !text.contains("sentinel-"),
        "a secret leaked into a log line: {text}"
    );
    let event = &harness.logs.lines_with("calling")[0];
    for field in [
        "access_token",
        "db_password",
        "X-Api-Key",
        "Authorization",
        "http.request.header.refresh_token",
        "Set_Cookie",
        "client_secret",
        "x-api-key",
    ] {
        assert_eq!(event[field], "[REDACTED]", "{field}");
    }
    assert_eq!(event["route"], "/v1/things");
    assert_eq!(event["cookies_accepted"], true);

    let span = harness.spans.span("call");
    let exported: Vec<String> = span
        .attributes
        .iter()
        .map(|attribute| attribute.value.to_string())
        .chain(span.events.iter().flat_map(|event| {
            event
                .attributes
                .iter()
                .map(|attribute| attribute.value.to_string())
        }))
        .collect();
    assert!(
        exported.iter().any(|value| value == "/v1/things"),
        "the span was exported with its attributes: {exported:?}"
    );
    assert!(
        exported.iter().all(|value| !value.contains("sentinel-")),
        "a secret leaked into an exported span: {exported:?}"
    );
}

#[test]
fn errors_are_logged_with_their_source_chain() {
    #[derive(Debug, thiserror::Error)]
    #[error("saving the order failed")]
    struct Save(#[source] Connect);
    #[derive(Debug, thiserror::Error)]
    #[error("connecting to the database failed")]
    struct Connect(#[source] std::io::Error);

    let error = Save(Connect(std::io::Error::other("connection refused")));
    let harness = Harness::new();
    tracing::dispatcher::with_default(&harness.dispatch, || {
        tracing::error!(error = %ErrorChain(&error), "request failed");
    });
    let line = &harness.logs.lines_with("request failed")[0];
    assert_eq!(
        line["error"],
        "saving the order failed: connecting to the database failed: connection refused"
    );
    assert_eq!(line["level"], 50);
}

#[test]
fn the_filter_drops_lines_below_its_level() {
    let harness = Harness::with_config(&TelemetryConfig {
        log_filter: "warn".into(),
        ..TelemetryConfig::default()
    });
    tracing::dispatcher::with_default(&harness.dispatch, || {
        tracing::info!("quiet");
        tracing::warn!("loud");
    });
    assert!(harness.logs.lines_with("quiet").is_empty());
    assert_eq!(harness.logs.lines_with("loud").len(), 1);
}

#[test]
fn the_pretty_format_is_human_readable_and_redacted_in_events_and_spans() {
    let logs = Capture::default();
    let config = TelemetryConfig {
        log_format: LogFormat::Pretty,
        ..TelemetryConfig::default()
    };
    let (dispatch, _guard) = mainstay_telemetry::build(&config, logs.clone()).expect("build");
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("checkout", token = "tok-99");
        let _entered = span.enter();
        tracing::info!(password = "hunter2", items = 2, "paying");
    });
    let text = logs.text();
    assert!(serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap_or("")).is_err());
    assert!(text.contains("paying"), "{text}");
    assert!(text.contains("password=[REDACTED]"), "{text}");
    assert!(text.contains("token=[REDACTED]"), "{text}");
    assert!(text.contains("items=2"), "{text}");
    assert!(
        !text.contains("hunter2") && !text.contains("tok-99"),
        "{text}"
    );
}
