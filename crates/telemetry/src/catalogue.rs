//! The catalogue of the metric families this crate registers (see [`METRICS`]).

use mainstay_clock::catalogue::{MetricFamily, MetricKind};

const OWNER: &str = "mainstay-telemetry";

/// Every metric family `http::HttpMetrics::register` and
/// [`register_process_collector`](crate::process::register_process_collector) register, as the
/// exposition shows it. A test compares it with a real exposition.
pub const METRICS: &[MetricFamily] = &[
    MetricFamily {
        name: "http_requests",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["method", "endpoint", "status_code"],
        help: "HTTP requests answered, by method, route template and status code",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "http_request_duration_seconds",
        kind: MetricKind::Histogram,
        unit: Some("seconds"),
        labels: &["method", "endpoint"],
        help: "Time from receiving an HTTP request to its response headers",
        owner: OWNER,
        buckets: Some(&crate::http::DURATION_BUCKETS),
    },
    MetricFamily {
        name: "http_requests_in_flight",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &[],
        help: "HTTP requests being handled now",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "http_errors",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["method", "endpoint", "error_type"],
        help: "HTTP requests answered with an error, by method, route template and error type",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "process_resident_memory_bytes",
        kind: MetricKind::Gauge,
        unit: Some("bytes"),
        labels: &[],
        help: "Resident memory size in bytes",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "process_virtual_memory_bytes",
        kind: MetricKind::Gauge,
        unit: Some("bytes"),
        labels: &[],
        help: "Virtual memory size in bytes",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "process_cpu_seconds",
        kind: MetricKind::Counter,
        unit: Some("seconds"),
        labels: &[],
        help: "Total user and system CPU time spent in seconds",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "process_open_fds",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &[],
        help: "Number of open file descriptors",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "process_max_fds",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &[],
        help: "Maximum number of open file descriptors",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "process_threads",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &[],
        help: "Number of OS threads in the process",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "process_start_time_seconds",
        kind: MetricKind::Gauge,
        unit: Some("seconds"),
        labels: &[],
        help: "Start time of the process since the Unix epoch in seconds",
        owner: OWNER,
        buckets: None,
    },
];

// The process families come from `/proc`, which only Linux has.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::convert::Infallible;

    use mainstay_clock::catalogue::{SampleRule, check_exposition};
    use prometheus_client::registry::Registry;
    use tower::{Layer, ServiceExt};

    use super::METRICS;
    use crate::http::{HttpMetrics, HttpMetricsLayer};

    /// One request answered 500 through the metrics layer writes every HTTP family; the process
    /// collector writes its families on every encode.
    #[tokio::test]
    async fn the_catalogue_matches_the_exposition() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        crate::process::register_process_collector(&mut registry);
        let service = HttpMetricsLayer::new(metrics, |_| Some("/catalogue".to_owned())).layer(
            tower::service_fn(|_: http::Request<()>| async {
                let mut response = http::Response::new(());
                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                Ok::<_, Infallible>(response)
            }),
        );
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(response.status(), 500);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            check_exposition(METRICS, &text, SampleRule::Required),
            Ok(()),
            "{text}"
        );
    }
}
