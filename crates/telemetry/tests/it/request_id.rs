//! Request ids: accepted when safe, replaced otherwise, echoed, and on the request's log lines.

use axum::Router;
use axum::routing::get;
use mainstay_telemetry::http::{HttpMetrics, RequestId};
use prometheus_client::registry::Registry;

use crate::support::{Harness, get as request, send, stack};

/// Sends `incoming` (if any) as `x-request-id`; returns the echoed id, the id the handler saw
/// (extension and header) and the access log line.
async fn check(incoming: Option<&[u8]>) -> (String, String, serde_json::Value) {
    let harness = Harness::new();
    let _default = tracing::dispatcher::set_default(&harness.dispatch);
    let router = Router::new().route(
        "/",
        get(
            |id: axum::Extension<RequestId>, headers: http::HeaderMap| async move {
                tracing::info!("in handler");
                let header = headers
                    .get("x-request-id")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                assert_eq!(header, id.0.0, "header and extension agree");
                id.0.0
            },
        ),
    );
    let mut builder = request("/");
    if let Some(incoming) = incoming {
        builder = builder.header(
            "x-request-id",
            http::HeaderValue::from_bytes(incoming).expect("header bytes"),
        );
    }
    let service = stack(router, HttpMetrics::register(&mut Registry::default()));
    let (parts, body) = send(
        service,
        builder.body(axum::body::Body::empty()).expect("request"),
    )
    .await;
    let echoed = parts
        .headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .expect("echoed")
        .to_owned();
    let seen = String::from_utf8(body.to_vec()).expect("utf-8");
    // Every line of the request (the handler's and the access line) carries the id.
    let lines = harness.logs.lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["request_id"], echoed.as_str(), "{line}");
    }
    assert_eq!(harness.logs.lines_with("in handler").len(), 1);
    let access = harness.logs.lines_with("request completed")[0].clone();
    (echoed, seen, access)
}

fn is_generated(id: &str) -> bool {
    id.len() == 26 && id.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

#[tokio::test]
async fn a_safe_incoming_id_is_accepted_echoed_and_logged() {
    let long = "a".repeat(128);
    for incoming in ["abc-123", "A.b_c:d-9", long.as_str()] {
        let (echoed, seen, access) = check(Some(incoming.as_bytes())).await;
        assert_eq!(echoed, incoming);
        assert_eq!(seen, incoming);
        assert_eq!(access["request_id"], incoming);
        assert_eq!(access["status"], 200);
        assert_eq!(access["method"], "GET");
        assert_eq!(access["path"], "/");
        assert!(access["latency_ms"].is_number());
    }
}

#[tokio::test]
async fn an_unsafe_incoming_id_is_replaced() {
    let too_long = "a".repeat(129);
    let unsafe_ids: [&[u8]; 5] = [
        b"",
        too_long.as_bytes(),
        b"has space",
        b"quote\"injection",
        b"caf\xc3\xa9",
    ];
    for incoming in unsafe_ids {
        let (echoed, seen, access) = check(Some(incoming)).await;
        assert!(is_generated(&echoed), "{echoed:?} for {incoming:?}");
        assert_eq!(seen, echoed);
        assert_eq!(access["request_id"], echoed.as_str());
    }
}

#[tokio::test]
async fn a_missing_id_is_generated_fresh_per_request() {
    let (first, seen, _) = check(None).await;
    assert!(is_generated(&first));
    assert_eq!(seen, first);
    let (second, _, _) = check(None).await;
    assert_ne!(first, second);
}

#[test]
fn validity_rule() {
    assert!(RequestId::is_valid(b"x"));
    assert!(RequestId::is_valid("a".repeat(128).as_bytes()));
    assert!(!RequestId::is_valid("a".repeat(129).as_bytes()));
    assert!(!RequestId::is_valid(b"a/b"));
    assert!(!RequestId::is_valid(b"a\nb"));
}
