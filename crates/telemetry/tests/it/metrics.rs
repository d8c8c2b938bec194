//! HTTP metrics: families, labels with route templates and `unmatched`, parsed back from the
//! OpenMetrics text with no duplicate family.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::routing::get;
use mainstay_telemetry::http::{DURATION_BUCKETS, HttpMetrics, HttpMetricsLayer};
use prometheus_client::registry::Registry;

use crate::support::{get as request, send, stack};

/// A parsed exposition: families by name with their type, samples by `name{labels}`.
struct Exposition {
    families: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        let mut families = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                let previous = families.insert(name.to_owned(), kind.to_owned());
                assert!(previous.is_none(), "duplicate family {name}");
            } else if line.starts_with('#') {
                continue;
            } else {
                let (series, value) = line.rsplit_once(' ').expect("series value");
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
                let name = series.split('{').next().unwrap_or(series);
                let family_known = families.keys().any(|family| {
                    ["", "_total", "_bucket", "_sum", "_count", "_created"]
                        .iter()
                        .any(|suffix| name == format!("{family}{suffix}"))
                });
                assert!(family_known, "sample {name} has no family");
                let previous = samples.insert(series.to_owned(), value);
                assert!(previous.is_none(), "duplicate series {series}");
            }
        }
        Self { families, samples }
    }

    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in {:#?}", self.samples.keys()))
    }
}

fn encode(registry: &Registry) -> Exposition {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    Exposition::parse(&text)
}

fn router() -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(|| async { "user" }).post(|| async { "created" }),
        )
        .route(
            "/fail",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "x") }),
        )
        .route(
            "/late",
            get(|| async { (http::StatusCode::GATEWAY_TIMEOUT, "x") }),
        )
        .route(
            "/bad",
            get(|| async { (http::StatusCode::BAD_REQUEST, "x") }),
        )
}

#[tokio::test]
async fn families_and_labels_use_route_templates_and_unmatched() {
    let mut registry = Registry::default();
    let metrics = HttpMetrics::register(&mut registry);
    mainstay_telemetry::process::register_process_collector(&mut registry);
    let service = stack(router(), metrics);
    for (method, uri) in [
        ("GET", "/users/1"),
        ("GET", "/users/2"),
        ("POST", "/users/3"),
        ("GET", "/fail"),
        ("GET", "/late"),
        ("GET", "/bad"),
        ("GET", "/no/such/path-12345"),
        ("BREW", "/users/4"),
    ] {
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .expect("request");
        send(service.clone(), request).await;
    }
    let exposition = encode(&registry);

    assert_eq!(exposition.families["http_requests"], "counter");
    assert_eq!(
        exposition.families["http_request_duration_seconds"],
        "histogram"
    );
    assert_eq!(exposition.families["http_requests_in_flight"], "gauge");
    assert_eq!(exposition.families["http_errors"], "counter");

    let requests = |labels: &str| exposition.value(&format!("http_requests_total{{{labels}}}"));
    assert_eq!(
        requests(r#"method="GET",endpoint="/users/{id}",status_code="200""#),
        2.0
    );
    assert_eq!(
        requests(r#"method="POST",endpoint="/users/{id}",status_code="200""#),
        1.0
    );
    assert_eq!(
        requests(r#"method="GET",endpoint="/fail",status_code="500""#),
        1.0
    );
    assert_eq!(
        requests(r#"method="GET",endpoint="unmatched",status_code="404""#),
        1.0
    );
    // A non-standard method is folded into `_OTHER`; axum answers it 405.
    assert_eq!(
        requests(r#"method="_OTHER",endpoint="/users/{id}",status_code="405""#),
        1.0
    );

    let errors = |labels: &str| exposition.value(&format!("http_errors_total{{{labels}}}"));
    assert_eq!(
        errors(r#"method="GET",endpoint="/fail",error_type="server_error""#),
        1.0
    );
    assert_eq!(
        errors(r#"method="GET",endpoint="/late",error_type="timeout""#),
        1.0
    );
    assert_eq!(
        errors(r#"method="GET",endpoint="/bad",error_type="client_error""#),
        1.0
    );
    assert_eq!(
        errors(r#"method="GET",endpoint="unmatched",error_type="client_error""#),
        1.0
    );
    assert!(
        !exposition
            .samples
            .keys()
            .any(|series| series.contains("/users/1")
                || series.contains("path-12345")
                || series.contains("method=\"GET\",endpoint=\"/users/{id}\",error_type")),
        "raw paths never become labels, successes are no errors"
    );

    let labels = r#"method="GET",endpoint="/users/{id}""#;
    for bucket in DURATION_BUCKETS {
        let le = format!("{bucket:?}");
        let series = format!("http_request_duration_seconds_bucket{{le=\"{le}\",{labels}}}");
        assert!(
            exposition.samples.contains_key(&series),
            "missing bucket {series}"
        );
    }
    // An edge at every latency an alert or SLO uses (docs/decisions/0097).
    for edge in ["0.01", "0.1", "0.15", "0.5"] {
        let series = format!("http_request_duration_seconds_bucket{{le=\"{edge}\",{labels}}}");
        assert!(exposition.samples.contains_key(&series), "missing {series}");
    }
    assert_eq!(
        exposition.value(&format!(
            "http_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}}"
        )),
        2.0
    );
    assert_eq!(
        exposition.value(&format!("http_request_duration_seconds_count{{{labels}}}")),
        2.0
    );
    assert_eq!(exposition.value("http_requests_in_flight"), 0.0);

    let families: BTreeSet<_> = exposition.families.keys().cloned().collect();
    assert!(
        families.contains("process_resident_memory_bytes"),
        "{families:?}"
    );
}

#[tokio::test]
async fn in_flight_counts_requests_being_handled_and_cancelled_ones_leave() {
    let mut registry = Registry::default();
    let metrics = HttpMetrics::register(&mut registry);
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let gates = std::sync::Arc::new(std::sync::Mutex::new(Some((entered_tx, release_rx))));
    let router = Router::new().route(
        "/wait",
        get(move || {
            let gates = gates.lock().expect("lock").take();
            async move {
                if let Some((entered, release)) = gates {
                    let _ = entered.send(());
                    let _ = release.await;
                }
                "done"
            }
        }),
    );
    let service = stack(router, metrics.clone());
    let in_flight = tokio::spawn(send(
        service.clone(),
        request("/wait")
            .body(axum::body::Body::empty())
            .expect("request"),
    ));
    entered_rx.await.expect("handler entered");
    assert_eq!(encode(&registry).value("http_requests_in_flight"), 1.0);
    release_tx.send(()).expect("release");
    in_flight.await.expect("request completes");
    assert_eq!(encode(&registry).value("http_requests_in_flight"), 0.0);

    // A request whose future is dropped before it answers (client gone) leaves the gauge too.
    let pending = tower::service_fn(|_request: http::Request<axum::body::Body>| {
        std::future::pending::<Result<http::Response<axum::body::Body>, std::convert::Infallible>>()
    });
    let mut service = tower::Layer::layer(&HttpMetricsLayer::new(metrics, |_| None), pending);
    let future = tower::Service::call(
        &mut service,
        request("/x")
            .body(axum::body::Body::empty())
            .expect("request"),
    );
    assert_eq!(encode(&registry).value("http_requests_in_flight"), 1.0);
    drop(future);
    assert_eq!(encode(&registry).value("http_requests_in_flight"), 0.0);
}

#[tokio::test]
async fn an_inner_service_error_is_counted_as_service_error() {
    let mut registry = Registry::default();
    let metrics = HttpMetrics::register(&mut registry);
    let failing = tower::service_fn(|_request: http::Request<axum::body::Body>| async {
        Err::<http::Response<axum::body::Body>, _>(std::io::Error::other("inner failure"))
    });
    let layer = HttpMetricsLayer::new(metrics, |_| Some("/static".to_owned()));
    let service = tower::Layer::layer(&layer, failing);
    let result = tower::ServiceExt::oneshot(
        service,
        request("/static")
            .body(axum::body::Body::empty())
            .expect("request"),
    )
    .await;
    assert!(result.is_err());
    let exposition = encode(&registry);
    assert_eq!(
        exposition.value(
            r#"http_errors_total{method="GET",endpoint="/static",error_type="service_error"}"#
        ),
        1.0
    );
}
