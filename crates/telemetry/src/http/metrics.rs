//! RED metrics for HTTP servers: requests, durations, in-flight requests and errors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Extensions, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{DURATION_BUCKETS, MatchedRoute, method_label};

/// The `endpoint` label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    endpoint: String,
    status_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    method: &'static str,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    method: &'static str,
    endpoint: String,
    error_type: &'static str,
}

type DurationFamily = Family<EndpointLabels, Histogram, fn() -> Histogram>;

/// The HTTP server metric families, registered once per registry and shared by every
/// [`HttpMetricsLayer`] (cheap to clone).
///
/// | family | type | labels |
/// |---|---|---|
/// | `http_requests_total` | counter | `method`, `endpoint`, `status_code` |
/// | `http_request_duration_seconds` | histogram ([`DURATION_BUCKETS`]) | `method`, `endpoint` |
/// | `http_requests_in_flight` | gauge | none |
/// | `http_errors_total` | counter | `method`, `endpoint`, `error_type` |
///
/// `endpoint` is the route template from the layer's callback, or `unmatched`; never a raw
/// path. `method` is a standard method name or `_OTHER`. `error_type` is `timeout` (408, 504),
/// `client_error` (other 4xx), `server_error` (other 5xx) or `service_error` (the inner service
/// returned an error instead of a response; such a request has no `http_requests_total` sample).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: DurationFamily,
    in_flight: Gauge,
    errors: Family<ErrorLabels, Counter>,
}

impl HttpMetrics {
    /// Registers the families in `registry` and returns their handles. Call it once per
    /// registry: a second call would register duplicate families.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(DURATION_BUCKETS.iter().copied())
            }),
            in_flight: Gauge::default(),
            errors: Family::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status code",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from receiving an HTTP request to its response headers",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "http_errors",
            "HTTP requests answered with an error, by method, route template and error type",
            metrics.errors.clone(),
        );
        metrics
    }
}

/// The `error_type` of a status, or `None` for a success.
fn error_type(status: http::StatusCode) -> Option<&'static str> {
    match status.as_u16() {
        408 | 504 => Some("timeout"),
        400..=499 => Some("client_error"),
        500..=599 => Some("server_error"),
        _ => None,
    }
}

type RouteOf = dyn Fn(&Extensions) -> Option<String> + Send + Sync;

/// Records [`HttpMetrics`] for every request.
///
/// `route_of` reads the route template from the request extensions (with axum,
/// `MatchedPath`); `None` labels the request `endpoint="unmatched"`. The template is also put in
/// the response extensions as [`MatchedRoute`] for [`TraceLayer`](super::TraceLayer).
#[derive(Clone)]
pub struct HttpMetricsLayer {
    // Shared behind one `Arc` so that a request clones one pointer, not four.
    metrics: Arc<HttpMetrics>,
    route_of: Arc<RouteOf>,
}

impl fmt::Debug for HttpMetricsLayer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("HttpMetricsLayer")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl HttpMetricsLayer {
    /// A layer recording into `metrics`, labelling requests with the template `route_of` finds.
    pub fn new(
        metrics: HttpMetrics,
        route_of: impl Fn(&Extensions) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            metrics: Arc::new(metrics),
            route_of: Arc::new(route_of),
        }
    }
}

impl<S> tower::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
            route_of: Arc::clone(&self.route_of),
        }
    }
}

/// The service made by [`HttpMetricsLayer`].
#[derive(Clone)]
pub struct HttpMetricsService<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
    route_of: Arc<RouteOf>,
}

impl<S: fmt::Debug> fmt::Debug for HttpMetricsService<S> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("HttpMetricsService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for HttpMetricsService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = HttpMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let route = (self.route_of)(request.extensions());
        let method = method_label(request.method());
        self.metrics.in_flight.inc();
        HttpMetricsFuture {
            inner: self.inner.call(request),
            record: Some(Record {
                metrics: Arc::clone(&self.metrics),
                method,
                route,
                start: Instant::now(),
            }),
        }
    }
}

/// What the future needs to record once the response is ready; dropping it ends the in-flight
/// count, also when the request is cancelled.
#[derive(Debug)]
struct Record {
    metrics: Arc<HttpMetrics>,
    method: &'static str,
    route: Option<String>,
    start: Instant,
}

impl Drop for Record {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

impl Record {
    /// Records the duration and the outcome; gives the route template back.
    fn finish(&mut self, status: Option<http::StatusCode>) -> Option<String> {
        let matched = self.route.is_some();
        // One `String` moves from label set to label set: a look-up clones it only when it
        // adds a new series.
        let mut endpoint_labels = EndpointLabels {
            method: self.method,
            endpoint: self.route.take().unwrap_or_else(|| UNMATCHED.to_owned()),
        };
        self.metrics
            .duration
            .get_or_create(&endpoint_labels)
            .observe(self.start.elapsed().as_secs_f64());
        let mut endpoint = std::mem::take(&mut endpoint_labels.endpoint);
        let error = match status {
            Some(status) => {
                let labels = RequestLabels {
                    method: self.method,
                    endpoint,
                    status_code: status.as_u16(),
                };
                self.metrics.requests.get_or_create(&labels).inc();
                endpoint = labels.endpoint;
                error_type(status)
            }
            None => Some("service_error"),
        };
        if let Some(error_type) = error {
            let labels = ErrorLabels {
                method: self.method,
                endpoint,
                error_type,
            };
            self.metrics.errors.get_or_create(&labels).inc();
            endpoint = labels.endpoint;
        }
        matched.then_some(endpoint)
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`HttpMetricsService`].
    #[derive(Debug)]
    pub struct HttpMetricsFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
    }
}

impl<F, ResBody, E> Future for HttpMetricsFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let Some(mut record) = this.record.take() {
            match &mut result {
                Ok(response) => {
                    if let Some(route) = record.finish(Some(response.status())) {
                        response.extensions_mut().insert(MatchedRoute(route));
                    }
                }
                Err(_) => {
                    record.finish(None);
                }
            }
        }
        Poll::Ready(result)
    }
}
