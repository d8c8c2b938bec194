//! Server spans continue the caller's trace; children keep their parent across `.await` and
//! `tokio::spawn`; spans reach an in-memory exporter and a real OTLP/HTTP receiver.

use axum::Router;
use axum::routing::get;
use mainstay_telemetry::TelemetryConfig;
use mainstay_telemetry::http::{HttpMetrics, inject_context};
use opentelemetry::trace::{SpanKind, Status};
use prometheus_client::registry::Registry;
use tracing::Instrument;

#[cfg(feature = "otlp-http")]
use crate::support::OtlpReceiver;
use crate::support::{Harness, PARENT_SPAN_ID, TRACE_ID, TRACEPARENT, get as request, send, stack};

async fn spawning_handler() -> &'static str {
    tracing::info!("handler before await");
    tokio::task::yield_now().await;
    tracing::info!("handler after await");
    let child = tokio::spawn(
        async {
            tokio::task::yield_now().await;
            tracing::info!("inside the spawned child");
        }
        .instrument(tracing::info_span!("spawned_child")),
    );
    let _ = child.await;
    // A task spawned with the current span (rather than a new one) logs under it too.
    let _ =
        tokio::spawn(async { tracing::info!("spawned in current span") }.in_current_span()).await;
    "ok"
}

fn app() -> Router {
    Router::new()
        .route("/users/{id}", get(spawning_handler))
        .route(
            "/boom",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/outgoing",
            get(|| async {
                let mut headers = http::HeaderMap::new();
                inject_context(&mut headers);
                let value = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                format!("{}\n{}", value("traceparent"), value("baggage"))
            }),
        )
}

fn stacked() -> impl tower::Service<
    http::Request<axum::body::Body>,
    Response = http::Response<axum::body::Body>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone {
    stack(app(), HttpMetrics::register(&mut Registry::default()))
}

#[tokio::test]
async fn incoming_traceparent_is_the_parent_of_the_server_span_and_on_every_log_line() {
    let harness = Harness::new();
    let _default = tracing::dispatcher::set_default(&harness.dispatch);
    let request = request("/users/7")
        .header("traceparent", TRACEPARENT)
        .body(axum::body::Body::empty())
        .expect("request");
    let (parts, _) = send(stacked(), request).await;
    assert_eq!(parts.status, 200);
    harness.flush();

    let server = harness.spans.span("GET /users/{id}");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(server.parent_span_id.to_string(), PARENT_SPAN_ID);
    assert!(server.parent_span_is_remote);
    let server_span_id = server.span_context.span_id().to_string();

    // Every line of the request carries the caller's trace id; the handler's own lines (before
    // and after an `.await`) carry the server span's id.
    let lines = harness.logs.lines();
    let request_lines: Vec<_> = lines
        .iter()
        .filter(|line| line.get("request_id").is_some())
        .collect();
    assert!(request_lines.len() >= 6, "{lines:#?}");
    for line in &request_lines {
        assert_eq!(line["trace_id"], TRACE_ID, "{line}");
        assert!(
            line["span_id"].as_str().is_some_and(|id| id.len() == 16),
            "{line}"
        );
    }
    // One access line per request; the server span's own START/END records are not written.
    let access = harness.logs.lines_with("request completed");
    assert_eq!(access.len(), 1);
    assert_eq!(access[0]["trace_id"], TRACE_ID);
    assert_eq!(access[0]["span_id"], server_span_id.as_str());
    assert!(
        harness
            .logs
            .lines_with("[HTTP_REQUEST - ")
            .iter()
            .all(|line| {
                line["msg"]
                    .as_str()
                    .is_some_and(|msg| msg.contains("- EVENT]"))
            })
    );
    // A span opened in the handler has its START line, carrying its own ids.
    let child_start = &harness.logs.lines_with("[SPAWNED_CHILD - START]")[0];
    assert_eq!(child_start["trace_id"], TRACE_ID);
    assert_ne!(child_start["span_id"], server_span_id.as_str());
    for message in [
        "handler before await",
        "handler after await",
        "spawned in current span",
    ] {
        let line = &harness.logs.lines_with(message)[0];
        assert_eq!(line["span_id"], server_span_id.as_str(), "{message}");
    }
}

#[tokio::test]
async fn a_span_in_a_spawned_task_is_a_child_of_the_server_span() {
    let harness = Harness::new();
    let _default = tracing::dispatcher::set_default(&harness.dispatch);
    let request = request("/users/7")
        .header("traceparent", TRACEPARENT)
        .body(axum::body::Body::empty())
        .expect("request");
    send(stacked(), request).await;
    harness.flush();

    let server = harness.spans.span("GET /users/{id}");
    let child = harness.spans.span("spawned_child");
    assert_eq!(child.parent_span_id, server.span_context.span_id());
    assert_eq!(
        child.span_context.trace_id(),
        server.span_context.trace_id()
    );
    let line = &harness.logs.lines_with("inside the spawned child")[0];
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(
        line["span_id"],
        child.span_context.span_id().to_string().as_str()
    );
}

#[tokio::test]
async fn a_request_without_traceparent_starts_a_new_trace() {
    let harness = Harness::new();
    let _default = tracing::dispatcher::set_default(&harness.dispatch);
    send(
        stacked(),
        request("/users/1")
            .body(axum::body::Body::empty())
            .expect("request"),
    )
    .await;
    harness.flush();
    let server = harness.spans.span("GET /users/{id}");
    assert_ne!(server.span_context.trace_id().to_string(), TRACE_ID);
    assert_eq!(server.parent_span_id, opentelemetry::trace::SpanId::INVALID);
}

#[tokio::test]
async fn server_span_holds_route_status_and_request_id_and_marks_5xx_as_error() {
    let harness = Harness::new();
    let _default = tracing::dispatcher::set_default(&harness.dispatch);
    let request = request("/boom")
        .header("x-request-id", "req-500")
        .body(axum::body::Body::empty())
        .expect("request");
    send(stacked(), request).await;
    harness.flush();
    let span = harness.spans.span("GET /boom");
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|attribute| attribute.key.as_str() == key)
            .map(|attribute| attribute.value.to_string())
    };
    assert_eq!(attribute("route").as_deref(), Some("/boom"));
    assert_eq!(attribute("status").as_deref(), Some("500"));
    assert_eq!(attribute("request_id").as_deref(), Some("req-500"));
    assert_eq!(attribute("method").as_deref(), Some("GET"));
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
}

/// Issue 15, point 10: the exported server span carries OpenTelemetry's HTTP server
/// attributes; the log lines keep their short names.
#[tokio::test]
async fn server_spans_carry_the_http_semantic_conventions_and_logs_keep_short_names() {
    let harness = Harness::new();
    let _default = tracing::dispatcher::set_default(&harness.dispatch);
    let request = request("/users/42?x=1")
        .header("host", "api.example.test:8443")
        .header("user-agent", "probe/1.0")
        .version(http::Version::HTTP_11)
        .body(axum::body::Body::empty())
        .expect("request");
    send(stacked(), request).await;
    let boom = request_for("/boom");
    send(stacked(), boom).await;
    harness.flush();
    let attributes = |name: &str| -> std::collections::BTreeMap<String, String> {
        harness
            .spans
            .span(name)
            .attributes
            .iter()
            .map(|attribute| (attribute.key.to_string(), attribute.value.to_string()))
            .collect()
    };
    let ok = attributes("GET /users/{id}");
    for (key, value) in [
        ("http.request.method", "GET"),
        ("url.path", "/users/42"),
        ("url.scheme", "http"),
        ("http.route", "/users/{id}"),
        ("http.response.status_code", "200"),
        ("server.address", "api.example.test"),
        ("server.port", "8443"),
        ("user_agent.original", "probe/1.0"),
        ("network.protocol.version", "1.1"),
    ] {
        assert_eq!(
            ok.get(key).map(String::as_str),
            Some(value),
            "{key} in {ok:?}"
        );
    }
    assert!(!ok.contains_key("error.type"), "{ok:?}");
    let failed = attributes("GET /boom");
    assert_eq!(failed.get("error.type").map(String::as_str), Some("500"));
    assert_eq!(
        failed.get("http.response.status_code").map(String::as_str),
        Some("500")
    );
    let line = &harness.logs.lines_with("request completed")[0];
    assert_eq!(line["method"], "GET");
    assert!(line.get("http.request.method").is_none(), "{line}");
}

fn request_for(path: &str) -> http::Request<axum::body::Body> {
    request(path)
        .body(axum::body::Body::empty())
        .expect("request")
}

#[tokio::test]
async fn inject_context_forwards_the_current_span_and_baggage() {
    let harness = Harness::new();
    let _default = tracing::dispatcher::set_default(&harness.dispatch);
    let request = request("/outgoing")
        .header("traceparent", TRACEPARENT)
        .header("baggage", "tenant=acme")
        .body(axum::body::Body::empty())
        .expect("request");
    let (_, body) = send(stacked(), request).await;
    harness.flush();
    let server = harness.spans.span("GET /outgoing");
    let body = String::from_utf8(body.to_vec()).expect("utf-8");
    let (traceparent, baggage) = body.split_once('\n').expect("two lines");
    assert_eq!(
        traceparent,
        format!("00-{TRACE_ID}-{}-01", server.span_context.span_id())
    );
    assert_eq!(baggage, "tenant=acme");
}

#[test]
fn inject_context_outside_a_span_injects_nothing() {
    let harness = Harness::new();
    tracing::dispatcher::with_default(&harness.dispatch, || {
        let mut headers = http::HeaderMap::new();
        inject_context(&mut headers);
        assert!(headers.is_empty());
    });
}

#[tokio::test]
async fn unsampled_requests_still_log_trace_ids_without_exporting() {
    let harness = Harness::with_config(&TelemetryConfig {
        sampling_ratio: 0.0,
        ..TelemetryConfig::default()
    });
    let _default = tracing::dispatcher::set_default(&harness.dispatch);
    send(
        stacked(),
        request("/users/1")
            .body(axum::body::Body::empty())
            .expect("request"),
    )
    .await;
    harness.flush();
    assert!(harness.spans.spans().is_empty());
    let access = &harness.logs.lines_with("request completed")[0];
    let trace_id = access["trace_id"].as_str().expect("trace id");
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, "00000000000000000000000000000000");
}

#[tokio::test]
async fn a_sampled_parent_is_honoured_even_at_ratio_zero() {
    let harness = Harness::with_config(&TelemetryConfig {
        sampling_ratio: 0.0,
        ..TelemetryConfig::default()
    });
    let _default = tracing::dispatcher::set_default(&harness.dispatch);
    let request = request("/users/1")
        .header("traceparent", TRACEPARENT)
        .body(axum::body::Body::empty())
        .expect("request");
    send(stacked(), request).await;
    harness.flush();
    assert_eq!(
        harness
            .spans
            .span("GET /users/{id}")
            .span_context
            .trace_id()
            .to_string(),
        TRACE_ID
    );
}

#[test]
fn logs_carry_trace_ids_with_no_exporter_configured() {
    let logs = crate::support::Capture::default();
    let (dispatch, guard) =
        mainstay_telemetry::build(&TelemetryConfig::default(), logs.clone()).expect("build");
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("work");
        let _entered = span.enter();
        tracing::info!("inside");
    });
    for line in logs.lines() {
        let trace_id = line["trace_id"].as_str().expect("trace id on every line");
        assert_eq!(trace_id.len(), 32, "{line}");
        assert_ne!(trace_id, "00000000000000000000000000000000");
    }
    assert_eq!(logs.lines().len(), 3, "START, event, END");
    guard.shutdown().expect("nothing to flush");
}

#[cfg(feature = "otlp-http")]
#[tokio::test]
async fn spans_reach_a_real_otlp_http_receiver_with_the_service_resource() {
    let receiver = OtlpReceiver::start();
    let config = TelemetryConfig {
        service_name: "otlp-test".into(),
        service_version: "9.9.9".into(),
        service_instance_id: Some("instance-1".into()),
        sampling_ratio: 1.0,
        otlp_endpoint: Some(format!("http://{}", receiver.addr)),
        ..TelemetryConfig::default()
    };
    mainstay_telemetry::install_propagator();
    let logs = crate::support::Capture::default();
    let (dispatch, guard) = mainstay_telemetry::build(&config, logs).expect("build");
    {
        let _default = tracing::dispatcher::set_default(&dispatch);
        let request = request("/users/3")
            .header("traceparent", TRACEPARENT)
            .body(axum::body::Body::empty())
            .expect("request");
        send(stacked(), request).await;
    }
    // Shutdown flushes the batch: nothing was exported before it (the batch delay is 5 s).
    guard.shutdown().expect("the receiver accepts the export");

    let spans = receiver.spans();
    let (resource, server) = spans
        .iter()
        .find(|(_, span)| span.name == "GET /users/{id}")
        .unwrap_or_else(|| panic!("server span not received: {spans:?}"));
    assert_eq!(hex(&server.trace_id), TRACE_ID);
    assert_eq!(hex(&server.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(
        server.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    let resource_attribute = |key: &str| {
        resource
            .attributes
            .iter()
            .find(|attribute| attribute.key == key)
            .and_then(|attribute| attribute.value.as_ref())
            .and_then(|value| value.value.as_ref())
            .map(|value| match value {
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(text) => {
                    text.clone()
                }
                other => format!("{other:?}"),
            })
    };
    assert_eq!(
        resource_attribute("service.name").as_deref(),
        Some("otlp-test")
    );
    assert_eq!(
        resource_attribute("service.version").as_deref(),
        Some("9.9.9")
    );
    assert_eq!(
        resource_attribute("service.instance.id").as_deref(),
        Some("instance-1")
    );
    // The spawned child travelled too, under the server span.
    let child = spans
        .iter()
        .find(|(_, span)| span.name == "spawned_child")
        .expect("child span received");
    assert_eq!(child.1.parent_span_id, server.span_id);
}

#[cfg(feature = "otlp-http")]
#[test]
fn an_unreachable_collector_costs_a_failed_export_not_a_panic() {
    // Bind then drop a listener: nothing listens on that port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("port");
    let config = TelemetryConfig {
        sampling_ratio: 1.0,
        otlp_endpoint: Some(format!("http://{addr}")),
        ..TelemetryConfig::default()
    };
    let (dispatch, guard) =
        mainstay_telemetry::build(&config, crate::support::Capture::default()).expect("build");
    tracing::dispatcher::with_default(&dispatch, || {
        drop(tracing::info_span!("lost").entered());
    });
    // The export fails (connection refused); shutdown reports or logs it, and returns.
    let _ = guard.shutdown();
}

#[cfg(feature = "otlp-grpc")]
#[test]
fn the_grpc_exporter_builds_without_a_collector() {
    let config = TelemetryConfig {
        otlp_endpoint: Some("http://127.0.0.1:4317".into()),
        otlp_protocol: mainstay_telemetry::OtlpProtocol::Grpc,
        ..TelemetryConfig::default()
    };
    let (_dispatch, guard) =
        mainstay_telemetry::build(&config, crate::support::Capture::default()).expect("build");
    // Nothing was recorded, so shutdown has nothing to send.
    guard.shutdown().expect("empty shutdown");
}

#[cfg(feature = "otlp-http")]
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The route, status and error status recorded on the server span once the response is known
/// reach the access line and any later line of the span, whether or not the request is sampled
/// (unsampled spans take a shorter path to their log fields).
#[tokio::test]
async fn late_span_fields_reach_the_logs_sampled_or_not() {
    for ratio in [0.0, 1.0] {
        let harness = Harness::with_config(&TelemetryConfig {
            sampling_ratio: ratio,
            ..TelemetryConfig::default()
        });
        let _default = tracing::dispatcher::set_default(&harness.dispatch);
        let captured = std::sync::Arc::new(std::sync::Mutex::new(None));
        let keep = std::sync::Arc::clone(&captured);
        let router = Router::new().route(
            "/items/{id}",
            get(move || {
                let keep = std::sync::Arc::clone(&keep);
                async move {
                    *keep.lock().expect("lock") = Some(tracing::Span::current());
                    (http::StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }),
        );
        let request = request("/items/9")
            .header("x-request-id", "late-fields")
            .body(axum::body::Body::empty())
            .expect("request");
        let (parts, _) = send(
            stack(router, HttpMetrics::register(&mut Registry::default())),
            request,
        )
        .await;
        assert_eq!(parts.status, 503);
        let span = captured.lock().expect("lock").take().expect("span");
        span.in_scope(|| tracing::info!("after the response"));
        drop(span);
        harness.flush();

        let access = &harness.logs.lines_with("request completed")[0];
        assert_eq!(access["route"], "/items/{id}", "{ratio}: {access}");
        assert_eq!(access["status"], 503, "{ratio}: {access}");
        let later = &harness.logs.lines_with("after the response")[0];
        assert_eq!(later["route"], "/items/{id}", "{ratio}: {later}");
        assert_eq!(later["status"], 503, "{ratio}: {later}");
        assert_eq!(later["otel.status_code"], "ERROR", "{ratio}: {later}");
        assert_eq!(later["request_id"], "late-fields", "{ratio}: {later}");
        assert_eq!(later["trace_id"], access["trace_id"], "{ratio}");
        assert_eq!(later["span_id"], access["span_id"], "{ratio}");

        let spans = harness.spans.spans();
        if ratio == 0.0 {
            assert!(spans.is_empty(), "{spans:?}");
        } else {
            let server = harness.spans.span("GET /items/{id}");
            let attribute = |key: &str| {
                server
                    .attributes
                    .iter()
                    .find(|attribute| attribute.key.as_str() == key)
                    .map(|attribute| attribute.value.to_string())
            };
            assert_eq!(attribute("route").as_deref(), Some("/items/{id}"));
            assert_eq!(attribute("status").as_deref(), Some("503"));
            assert!(matches!(server.status, Status::Error { .. }));
        }
    }
}
