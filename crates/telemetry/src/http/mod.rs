//! Tower layers for HTTP servers over `http` types: request ids, server spans with access logs,
//! and RED metrics labelled by route template.
//!
//! The layers, their services and `HttpMetrics` need the `tower` feature; [`RequestId`],
//! [`inject_context`], [`set_client_pseudonym`] and the constants are always here.
//!
//! Stack them outermost first: `RequestIdLayer` → `TraceLayer` → the router, with
//! `HttpMetricsLayer` applied inside the router (axum's `Router::layer`) so the matched route
//! template is in the request extensions when it runs:
//!
//! ```
//! use axum::{Router, extract::MatchedPath, routing::get};
//! use mainstay_telemetry::http::{HttpMetrics, HttpMetricsLayer, RequestIdLayer, TraceLayer};
//! use prometheus_client::registry::Registry;
//! use tower::ServiceBuilder;
//!
//! let mut registry = Registry::default();
//! let metrics = HttpMetrics::register(&mut registry);
//! let router: Router = Router::new()
//!     .route("/users/{id}", get(|| async { "user" }))
//!     .layer(HttpMetricsLayer::new(metrics, |extensions| {
//!         extensions.get::<MatchedPath>().map(|path| path.as_str().to_owned())
//!     }));
//! let service = ServiceBuilder::new()
//!     .layer(RequestIdLayer::new())
//!     .layer(TraceLayer::new())
//!     .service(router);
//! # let _ = service;
//! ```

use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[cfg(feature = "tower")]
mod metrics;
mod request_id;
#[cfg(feature = "tower")]
mod trace;

#[cfg(feature = "tower")]
pub use metrics::{HttpMetrics, HttpMetricsFuture, HttpMetricsLayer, HttpMetricsService};
pub use request_id::{REQUEST_ID_HEADER, RequestId};
#[cfg(feature = "tower")]
pub use request_id::{RequestIdFuture, RequestIdLayer, RequestIdService};
#[cfg(feature = "tower")]
pub use trace::{TraceFuture, TraceLayer, TraceService};
// The `http` types in this module's signatures, re-exported so that a caller names them at the
// version this crate uses without a dependency of its own (README, "Third-party types in the
// public API"). Items rather than the crate: `mainstay_telemetry::http` is this module.
pub use http::{Extensions, HeaderMap, Request, Response};

/// Buckets of `http_request_duration_seconds`, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `tracing` target of the server span opened by `TraceLayer`. Its bunyan START and END
/// records are not written: the access line of the request carries the same fields.
pub const REQUEST_SPAN_TARGET: &str = "mainstay_telemetry::http";

/// The route template a request matched, put in the response extensions by
/// `HttpMetricsLayer` so that the outer `TraceLayer` can name its span after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRoute(pub String);

/// Injects the current span's OpenTelemetry context (W3C `traceparent`, `tracestate` and
/// `baggage`) into the headers of an outgoing request, through the global propagator.
///
/// Call it inside the span that makes the request, so the callee's span becomes its child.
/// Nothing is injected when the current span has no valid OpenTelemetry context.
pub fn inject_context(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
    });
}

#[cfg(feature = "tower")]
/// A bounded `method` label value: the standard methods by name, anything else `_OTHER`.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Sets `client.address` on the current request's exported span to the pseudonym `pseudonym`
/// makes: a stable pseudonym of the caller's address (an HMAC, as the rate limiter's
/// identities), never the address itself. `pseudonym` runs only when the span is sampled, so an
/// unsampled request pays nothing for it. Call it from the middleware that knows the caller.
pub fn set_client_pseudonym(pseudonym: impl FnOnce() -> String) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::Span::current();
    if span.context().span().span_context().is_sampled() {
        span.set_attribute("client.address", pseudonym());
    }
}
