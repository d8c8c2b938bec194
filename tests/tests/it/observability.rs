//! Logs, traces and metrics of the running service.

use std::collections::HashSet;
use std::time::Duration;

use mainstay_tests::Api;
use mainstay_tests::otlp::OtlpReceiver;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_reaches_the_logs_and_the_exported_server_span() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let mut api = Api::builder()
        .env(
            "MAINSTAY_TELEMETRY__OTLP_ENDPOINT",
            &format!("{}/v1/traces", receiver.endpoint()),
        )
        .env("MAINSTAY_TELEMETRY__OTLP_PROTOCOL", "http/protobuf")
        .start()?;
    let response = reqwest::Client::new()
        .get(api.url("/health/live"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .header("x-request-id", "traced-request")
        .send()
        .await?;
    assert_eq!(response.status(), 200);

    // Every log line of the request carries the incoming trace id.
    let line = api.wait_for_log(Duration::from_secs(5), |line| {
        line["request_id"] == "traced-request"
    })?;
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    let request_lines: Vec<_> = api
        .json_lines()
        .into_iter()
        .filter(|line| line["request_id"] == "traced-request")
        .collect();
    assert!(
        request_lines
            .iter()
            .all(|line| line["trace_id"] == TRACE_ID),
        "{request_lines:?}"
    );

    // Shutdown flushes the batch exporter; the server span's parent is the incoming span.
    api.terminate()?;
    let status = api.wait_exit(Duration::from_secs(20))?;
    assert!(status.success(), "{status}");
    let span = receiver
        .wait_for_span(Duration::from_secs(5), |span| {
            hex(&span.span.trace_id) == TRACE_ID
        })
        .await?;
    assert_eq!(hex(&span.span.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(span.span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(span.service_name.as_deref(), Some("mainstay-api"));
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_grpc_too() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start_grpc().await?;
    let mut api = Api::builder()
        .env("MAINSTAY_TELEMETRY__OTLP_ENDPOINT", &receiver.endpoint())
        .env("MAINSTAY_TELEMETRY__OTLP_PROTOCOL", "grpc")
        .start()?;
    let response = reqwest::Client::new()
        .get(api.url("/health/live"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    api.terminate()?;
    assert!(api.wait_exit(Duration::from_secs(20))?.success());
    let span = receiver
        .wait_for_span(Duration::from_secs(5), |span| {
            hex(&span.span.trace_id) == TRACE_ID
        })
        .await?;
    assert_eq!(hex(&span.span.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(span.service_name.as_deref(), Some("mainstay-api"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_is_bunyan_json_with_trace_ids() -> anyhow::Result<()> {
    let mut api = Api::builder().start()?;
    reqwest::get(api.url("/health/live")).await?;
    api.wait_for_log(Duration::from_secs(5), |line| {
        line["request_id"].is_string()
    })?;
    let lines = api.json_lines();
    assert!(!lines.is_empty());
    for line in &lines {
        for field in [
            "time", "level", "msg", "name", "hostname", "pid", "v", "target",
        ] {
            assert!(!line[field].is_null(), "missing {field}: {line}");
        }
        assert!(line["level"].is_number(), "{line}");
    }
    // Lines inside a request span carry its trace and span ids even with no exporter configured.
    let in_request: Vec<_> = lines
        .iter()
        .filter(|line| line["request_id"].is_string())
        .collect();
    assert!(!in_request.is_empty());
    for line in in_request {
        let trace_id = line["trace_id"].as_str().unwrap_or_default();
        assert_eq!(trace_id.len(), 32, "{line}");
        assert_ne!(trace_id, "0".repeat(32));
        assert_eq!(
            line["span_id"].as_str().unwrap_or_default().len(),
            16,
            "{line}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_openmetrics_with_route_templates_and_no_duplicate_family() -> anyhow::Result<()>
{
    let api = Api::builder().start()?;
    let client = reqwest::Client::new();
    client.get(api.url("/health/live")).send().await?;
    client.get(api.url("/no/such/path/12345")).send().await?;
    client.get(api.url("/v1/whoami")).send().await?;
    let response = client.get(api.url("/metrics")).send().await?;
    assert!(
        response.headers()["content-type"]
            .to_str()?
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await?;
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );

    let mut families = HashSet::new();
    for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
        let name = line
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        assert!(families.insert(name.clone()), "duplicate family {name}");
    }
    for family in [
        "http_requests",
        "http_request_duration_seconds",
        "http_requests_in_flight",
        "http_errors",
        "process_resident_memory_bytes",
        "process_cpu_seconds",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            families.contains(family),
            "missing family {family}:\n{text}"
        );
    }
    let has = |needle: &str| text.lines().any(|line| line.contains(needle));
    assert!(has(r#"endpoint="/health/live""#), "{text}");
    assert!(has(r#"endpoint="/v1/whoami""#), "{text}");
    assert!(has(r#"endpoint="unmatched""#), "{text}");
    assert!(
        !text.contains("/no/such/path"),
        "a raw path never becomes a label"
    );
    assert!(has(r#"status_code="404""#), "{text}");
    assert!(
        has(r#"http_request_duration_seconds_bucket{"#)
            && has(r#"le="0.005""#)
            && has(r#"le="10.0""#),
        "{text}"
    );
    Ok(())
}

/// Issue 15, point 5: no raw API key or admin token reaches a log line or an exported span, at
/// debug level, whether the key is valid, unknown, or sent as a bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_api_key_or_admin_token_is_ever_logged() -> anyhow::Result<()> {
    const KEY: &str = "sentinel-api-key-5f1c2a";
    const WRONG_KEY: &str = "sentinel-wrong-key-9d3e7b";
    const ADMIN: &str = "sentinel-admin-token-0123456789abcdef";
    let receiver = OtlpReceiver::start().await?;
    let mut api = Api::builder()
        .config_toml(&format!(
            "[[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"acme\"\n",
            mainstay_tests::sha256_hex(KEY)
        ))
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN)
        .env("MAINSTAY_TELEMETRY__LOG_FILTER", "debug")
        .env("MAINSTAY_TELEMETRY__SAMPLING_RATIO", "1.0")
        .env(
            "MAINSTAY_TELEMETRY__OTLP_ENDPOINT",
            &format!("{}/v1/traces", receiver.endpoint()),
        )
        .env("MAINSTAY_TELEMETRY__OTLP_PROTOCOL", "http/protobuf")
        .start()?;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for (header, value) in [
        ("x-api-key", KEY),
        ("X-Api-Key", WRONG_KEY),
        ("authorization", &format!("Bearer {KEY}") as &str),
        ("authorization", &format!("Bearer {WRONG_KEY}")),
    ] {
        let response = client
            .get(api.url("/v1/collections"))
            .header(header, value)
            .send()
            .await?;
        statuses.push(response.status().as_u16());
    }
    for token in [ADMIN, WRONG_KEY] {
        let response = client
            .get(api.url("/admin/config"))
            .bearer_auth(token)
            .send()
            .await?;
        statuses.push(response.status().as_u16());
    }
    assert!(
        statuses.contains(&401),
        "a wrong key was refused: {statuses:?}"
    );
    assert!(
        statuses.iter().any(|status| *status < 400),
        "a valid key or token passed: {statuses:?}"
    );
    api.wait_for_log(Duration::from_secs(5), |line| {
        line["target"] == "audit" && line["outcome"] == 401
    })?;
    // Six requests, six server spans (sampled at 1.0); the exporter sends them in batches.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while receiver.spans().len() < 6 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let spans = receiver.spans();
    assert!(spans.len() >= 6, "{} spans exported", spans.len());
    // Issue 15, point 10: `/v1` server spans carry `client.address` as a pseudonym, never the
    // address itself.
    let client_addresses: Vec<String> = spans
        .iter()
        .flat_map(|span| span.span.attributes.iter())
        .filter(|attribute| attribute.key == "client.address")
        .map(|attribute| format!("{:?}", attribute.value))
        .collect();
    assert!(
        client_addresses.len() >= 4,
        "{} spans with client.address",
        client_addresses.len()
    );
    assert!(
        client_addresses
            .iter()
            .all(|value| !value.contains("127.0.0.1") && value.len() > 40),
        "{client_addresses:?}"
    );
    let lines = api.lines();
    assert!(lines.len() > 10, "the service logged at debug level");
    for secret in [KEY, WRONG_KEY, ADMIN] {
        assert!(
            lines.iter().all(|line| !line.contains(secret)),
            "{secret} appears in a log line"
        );
        let exported = format!("{spans:?}");
        assert!(
            !exported.contains(secret),
            "{secret} appears in an exported span"
        );
    }
    Ok(())
}
