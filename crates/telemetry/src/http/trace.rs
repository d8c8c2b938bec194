//! The server span and access log line of each request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use opentelemetry::trace::TraceContextExt as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{MatchedRoute, RequestId, method_label};

/// Opens a server span per request and writes one access-log line when the response is ready.
///
/// - The incoming W3C `traceparent`/`tracestate` and `baggage` headers are extracted through the
///   global propagator ([`install_propagator`](crate::install_propagator), which
///   [`init`](crate::init) calls); the span's parent is the incoming span, so the caller's trace
///   continues.
/// - The span is `http_request` (target `mainstay_telemetry::http`, level INFO) with fields
///   `otel.kind = "server"`, `method`, `path`, `request_id` (from [`RequestId`] or a valid
///   `x-request-id` header), and, once known, `route` (from [`MatchedRoute`]), `status` and
///   the span name (`"GET /users/{id}"`). 5xx responses set `otel.status_code = "ERROR"`.
/// - A sampled span also carries OpenTelemetry's HTTP server attributes, set on the exported
///   span only (log lines keep the short names above): `http.request.method`, `url.path`,
///   `url.scheme`, `network.protocol.version`, `server.address` (and `server.port`) from the
///   `Host`, `user_agent.original`, then `http.route`, `http.response.status_code`, and
///   `error.type` (the status code of a 5xx, or the error's type when the inner service failed
///   without a response, in which case no status is recorded). `client.address` is the
///   application's to set, as a pseudonym ([`set_client_pseudonym`](super::set_client_pseudonym)).
/// - The access line is an INFO event (target `mainstay_telemetry::access`, message
///   `request completed`) inside the span, carrying `status` and `latency_ms` plus the span's
///   `method`, `path`, `request_id`, `trace_id` and `span_id`.
///
/// The inner service is called and polled inside the span, so handler logs carry the request's
/// ids too.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl TraceLayer {
    /// The layer.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service made by [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for TraceService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let start = Instant::now();
        let method = method_label(request.method());
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
        });
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(RequestId::as_str)
            .or_else(|| {
                request
                    .headers()
                    .get(super::REQUEST_ID_HEADER)
                    .filter(|value| RequestId::is_valid(value.as_bytes()))
                    .and_then(|value| value.to_str().ok())
            });
        let span = {
            // The OpenTelemetry layer parents a new span on the current OpenTelemetry context.
            let _attached = parent.attach();
            tracing::info_span!(
                target: super::REQUEST_SPAN_TARGET,
                "http_request",
                otel.kind = "server",
                otel.name = method,
                otel.status_code = Empty,
                method = method,
                path = request.uri().path(),
                route = Empty,
                request_id,
                status = Empty,
            )
        };
        // OpenTelemetry's HTTP semantic conventions go on the exported span only (set on the
        // OpenTelemetry span, not as `tracing` fields), so log lines keep their short names and
        // an unsampled request pays nothing for them.
        let sampled = span.context().span().span_context().is_sampled();
        if sampled {
            semantic_attributes(&span, &request, method);
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        TraceFuture {
            inner,
            span,
            start,
            method,
            sampled,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`TraceService`].
    #[derive(Debug)]
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        span: tracing::Span,
        start: Instant,
        method: &'static str,
        sampled: bool,
    }
}

/// The request's attributes under OpenTelemetry's HTTP server conventions. `client.address` is
/// not among them: the raw address never leaves the process; the application sets a pseudonym
/// (see [`set_client_pseudonym`](crate::http::set_client_pseudonym)).
fn semantic_attributes<B>(span: &tracing::Span, request: &Request<B>, method: &'static str) {
    span.set_attribute("http.request.method", method);
    span.set_attribute("url.path", request.uri().path().to_owned());
    span.set_attribute(
        "url.scheme",
        request.uri().scheme_str().unwrap_or("http").to_owned(),
    );
    let version = match request.version() {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    };
    span.set_attribute("network.protocol.version", version);
    let host = request.uri().host().map(ToOwned::to_owned).or_else(|| {
        request
            .headers()
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok())
            .map(ToOwned::to_owned)
    });
    if let Some(host) = host {
        let (address, port) = split_host_port(&host);
        span.set_attribute("server.address", address.to_owned());
        if let Some(port) = port {
            span.set_attribute("server.port", i64::from(port));
        }
    }
    if let Some(agent) = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
    {
        span.set_attribute("user_agent.original", agent.to_owned());
    }
}

/// `host[:port]` (an IPv6 host in brackets) into host and port.
fn split_host_port(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((address, after)) = rest.split_once(']') {
            return (
                address,
                after.strip_prefix(':').and_then(|p| p.parse().ok()),
            );
        }
        return (host, None);
    }
    match host.rsplit_once(':') {
        Some((address, port)) if !address.contains(':') => (address, port.parse().ok()),
        _ => (host, None),
    }
}

impl<F, ResBody, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = std::task::ready!(this.inner.poll(cx));
        let latency_ms = this.start.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                let route = response
                    .extensions()
                    .get::<MatchedRoute>()
                    .map(|MatchedRoute(route)| route.as_str());
                // An unsampled span's fields go straight to its log fields (same lines, no
                // OpenTelemetry attributes built for nothing); otherwise they are recorded.
                let unsampled = crate::bunyan::unsampled_span_fields(this.span, |fields| {
                    if let Some(route) = route {
                        fields.str("route", route);
                    }
                });
                if *this.sampled {
                    this.span
                        .set_attribute("http.response.status_code", i64::from(status));
                    if let Some(route) = route {
                        this.span.set_attribute("http.route", route.to_owned());
                    }
                    if response.status().is_server_error() {
                        this.span.set_attribute("error.type", status.to_string());
                    }
                }
                if !unsampled && let Some(route) = route {
                    this.span.record("route", route);
                    // The OpenTelemetry span is already started, so `otel.name` can no
                    // longer be recorded; rename it directly (an unsampled span keeps no name).
                    let context = this.span.context();
                    let otel_span = context.span();
                    if otel_span.is_recording() {
                        otel_span.update_name(format!("{} {route}", this.method));
                    }
                }
                // The span's own fields (method, path, request_id, ids) join this line, so the
                // event carries only what the span does not hold yet.
                tracing::info!(
                    target: "mainstay_telemetry::access",
                    status,
                    latency_ms,
                    "request completed"
                );
                let server_error = response.status().is_server_error();
                let written = unsampled
                    && crate::bunyan::unsampled_span_fields(this.span, |fields| {
                        fields.u64("status", u64::from(status));
                        if server_error {
                            fields.str("otel.status_code", "ERROR");
                        }
                    });
                if !written {
                    this.span.record("status", status);
                    if server_error {
                        this.span.record("otel.status_code", "ERROR");
                    }
                }
            }
            Err(_) => {
                // No response was made: no status is invented; the error's type says what failed.
                let error_type = std::any::type_name::<E>();
                tracing::info!(
                    target: "mainstay_telemetry::access",
                    error_type,
                    latency_ms,
                    "request failed in the service"
                );
                this.span.record("otel.status_code", "ERROR");
                if *this.sampled {
                    this.span.set_attribute("error.type", error_type);
                }
            }
        }
        Poll::Ready(result)
    }
}
