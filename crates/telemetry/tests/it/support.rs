//! Shared fixtures: a capturing log writer, an in-memory span exporter, a real OTLP/HTTP
//! receiver, and the layered test app.

use std::io::{self, Write};
#[cfg(feature = "otlp-http")]
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::MatchedPath;
use bytes::Bytes;
use mainstay_telemetry::http::{HttpMetrics, HttpMetricsLayer, RequestIdLayer, TraceLayer};
use mainstay_telemetry::{TelemetryConfig, TelemetryGuard};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::Value;
use tower::ServiceBuilder;
use tracing::Dispatch;

/// A `MakeWriter` that keeps every byte written, shared between clones.
#[derive(Clone, Debug, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// Every line parsed as JSON; a line that is not JSON fails the test.
    pub(crate) fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"))
            })
            .collect()
    }

    /// The lines whose `msg` contains `needle`.
    pub(crate) fn lines_with(&self, needle: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|line| line["msg"].as_str().is_some_and(|msg| msg.contains(needle)))
            .collect()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// An exporter that keeps the spans it is given.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryExporter(Arc<Mutex<Vec<SpanData>>>);

impl MemoryExporter {
    pub(crate) fn spans(&self) -> Vec<SpanData> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn span(&self, name: &str) -> SpanData {
        let spans = self.spans();
        spans
            .iter()
            .find(|span| span.name == name)
            .cloned()
            .unwrap_or_else(|| {
                let names: Vec<_> = spans.iter().map(|span| span.name.clone()).collect();
                panic!("no span {name:?} among {names:?}")
            })
    }
}

impl SpanExporter for MemoryExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch);
        std::future::ready(Ok(()))
    }
}

/// Everything sampled, logs captured, spans in memory.
pub(crate) struct Harness {
    pub(crate) dispatch: Dispatch,
    pub(crate) guard: TelemetryGuard,
    pub(crate) logs: Capture,
    pub(crate) spans: MemoryExporter,
}

impl Harness {
    pub(crate) fn new() -> Self {
        Self::with_config(&TelemetryConfig {
            sampling_ratio: 1.0,
            ..TelemetryConfig::default()
        })
    }

    pub(crate) fn with_config(config: &TelemetryConfig) -> Self {
        mainstay_telemetry::install_propagator();
        let logs = Capture::default();
        let spans = MemoryExporter::default();
        let (dispatch, guard) =
            mainstay_telemetry::build_with_exporter(config, logs.clone(), spans.clone())
                .expect("the test config is valid");
        Self {
            dispatch,
            guard,
            logs,
            spans,
        }
    }

    /// Exports every ended span to the in-memory exporter.
    pub(crate) fn flush(&self) {
        self.guard.force_flush().expect("in-memory export succeeds");
    }
}

pub(crate) const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub(crate) const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
pub(crate) const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `router` behind the full stack: request ids, trace layer, metrics inside the router.
pub(crate) fn stack(
    router: Router,
    metrics: HttpMetrics,
) -> impl tower::Service<
    http::Request<axum::body::Body>,
    Response = http::Response<axum::body::Body>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone {
    let router = router.layer(HttpMetricsLayer::new(metrics, |extensions| {
        extensions
            .get::<MatchedPath>()
            .map(|path| path.as_str().to_owned())
    }));
    ServiceBuilder::new()
        .layer(RequestIdLayer::new())
        .layer(TraceLayer::new())
        .service(router)
}

/// Sends one request through `service` and returns the response with its body.
pub(crate) async fn send<S>(
    service: S,
    request: http::Request<axum::body::Body>,
) -> (http::response::Parts, Bytes)
where
    S: tower::Service<
            http::Request<axum::body::Body>,
            Response = http::Response<axum::body::Body>,
            Error = std::convert::Infallible,
        >,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = service
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body reads").to_bytes();
    (parts, body)
}

pub(crate) fn get(uri: &str) -> http::request::Builder {
    http::Request::builder().method("GET").uri(uri)
}

/// A real OTLP/HTTP receiver on loopback, on its own thread and runtime so that a test may
/// block on a flush while it answers.
#[cfg(feature = "otlp-http")]
pub(crate) struct OtlpReceiver {
    pub(crate) addr: SocketAddr,
    received: Arc<
        Mutex<Vec<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>>,
    >,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(feature = "otlp-http")]
impl OtlpReceiver {
    pub(crate) fn start() -> Self {
        use opentelemetry_proto::tonic::collector::trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        };
        let received = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let sink = Arc::clone(&received);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                loop {
                    let (stream, _) = tokio::select! {
                        accepted = listener.accept() => accepted.expect("accept"),
                        _ = &mut shutdown_rx => return,
                    };
                    let sink = Arc::clone(&sink);
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let sink = Arc::clone(&sink);
                            async move {
                                use http_body_util::BodyExt;
                                use prost::Message;
                                let path = request.uri().path().to_owned();
                                let body = request.into_body().collect().await?.to_bytes();
                                let status = match ExportTraceServiceRequest::decode(body) {
                                    Ok(export) if path == "/v1/traces" => {
                                        sink.lock()
                                            .unwrap_or_else(PoisonError::into_inner)
                                            .push(export);
                                        200
                                    }
                                    _ => 400,
                                };
                                let reply = ExportTraceServiceResponse::default().encode_to_vec();
                                Ok::<_, hyper::Error>(
                                    http::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/x-protobuf")
                                        .body(http_body_util::Full::new(Bytes::from(reply)))
                                        .expect("response"),
                                )
                            }
                        },
                    );
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        let addr = addr_rx.recv().expect("receiver started");
        Self {
            addr,
            received,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Every span received so far, flattened.
    pub(crate) fn spans(
        &self,
    ) -> Vec<(
        opentelemetry_proto::tonic::resource::v1::Resource,
        opentelemetry_proto::tonic::trace::v1::Span,
    )> {
        let received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        received
            .iter()
            .flat_map(|export| export.resource_spans.iter())
            .flat_map(|resource_spans| {
                let resource = resource_spans.resource.clone().unwrap_or_default();
                resource_spans
                    .scope_spans
                    .iter()
                    .flat_map(|scope| scope.spans.iter())
                    .map(move |span| (resource.clone(), span.clone()))
            })
            .collect()
    }
}

#[cfg(feature = "otlp-http")]
impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
