//! Traces: the SDK tracer provider, its sampler and resource, OTLP export and span redaction.
//!
//! A tracer provider is always built, with or without an exporter, so every span has valid
//! trace and span ids for the log lines. OTLP exporters run their I/O on a small dedicated Tokio
//! runtime owned by the guard: the SDK's batch processor exports from its own thread, where no
//! runtime is current, and an async HTTP or gRPC client needs one.

use std::path::Path;
use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};

#[cfg(any(feature = "otlp-http", feature = "otlp-grpc"))]
use crate::OtlpProtocol;
use crate::logs::{REDACTED, Redactor};
use crate::{InitError, TelemetryConfig};

/// How long one OTLP export may take before it is abandoned.
#[cfg(any(feature = "otlp-http", all(feature = "otlp-grpc", feature = "tls")))]
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the W3C `traceparent`/`tracestate` and baggage propagator as the global text map
/// propagator.
///
/// [`init`](crate::init) calls this; call it yourself only when you build the subscriber with
/// [`build`](crate::build) and still want `http::TraceLayer` and
/// [`http::inject_context`](crate::http::inject_context) to propagate context.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

/// Builds the tracer provider: parent-based ratio sampler, service resource, the given span
/// processor (if any) behind redaction.
pub(crate) fn provider(
    config: &TelemetryConfig,
    processor: Option<Box<dyn SpanProcessor>>,
    redactor: Redactor,
) -> SdkTracerProvider {
    let instance_id = config
        .service_instance_id
        .clone()
        .unwrap_or_else(|| ulid::Ulid::generate().to_string());
    let resource = Resource::builder()
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(name, value)| KeyValue::new(name.clone(), value.clone())),
        )
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new(
            "service.version",
            config.service_version.clone(),
        ))
        .with_attribute(KeyValue::new("service.instance.id", instance_id))
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio.clamp(0.0, 1.0),
        ))));
    if let Some(inner) = processor {
        builder = builder.with_span_processor(RedactingProcessor { inner, redactor });
    }
    builder.build()
}

/// A batch processor over `exporter`.
pub(crate) fn batch<E: SpanExporter + 'static>(exporter: E) -> Box<dyn SpanProcessor> {
    Box::new(BatchSpanProcessor::builder(exporter).build())
}

/// The dedicated runtime that runs OTLP export I/O. Shut down in the background on drop, so it
/// may be dropped from inside another runtime.
#[derive(Debug)]
pub(crate) struct ExportRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The certificates of a PEM CA file (`otlp_ca_file`), or what the key needs.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<u8>, &'static str> {
    if !cfg!(feature = "tls") {
        return Err("no CA file: trusting one needs the `tls` feature of mainstay-telemetry");
    }
    let pem =
        std::fs::read(path).map_err(|_| "a readable PEM file of one or more CA certificates")?;
    const NOT_PEM: &str =
        "a PEM file of one or more CA certificates (`-----BEGIN CERTIFICATE-----`)";
    // reqwest parses the certificates; without it (gRPC only) the marker is checked here, tonic
    // refuses PEM that does not decode when the exporter is built, and a decoded block that is no
    // certificate makes each export fail (logged by the exporter).
    #[cfg(all(feature = "tls", feature = "otlp-http"))]
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certificates) if !certificates.is_empty() => {}
        _ => return Err(NOT_PEM),
    }
    #[cfg(not(all(feature = "tls", feature = "otlp-http")))]
    if !pem
        .windows(CERTIFICATE_MARKER.len())
        .any(|window| window == CERTIFICATE_MARKER)
    {
        return Err(NOT_PEM);
    }
    Ok(pem)
}

/// The first line of a PEM certificate.
#[cfg(not(all(feature = "tls", feature = "otlp-http")))]
const CERTIFICATE_MARKER: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Builds the OTLP exporter for the configured endpoint and protocol, with its runtime.
///
/// The configured headers are set on every request after the exporter's own (which include
/// `OTEL_EXPORTER_OTLP_HEADERS`), so the configuration wins; an `https://` endpoint is verified
/// against the system roots and `otlp_ca_file`. A protocol whose feature is off is refused with
/// the error [`TelemetryConfig::validate`] gives for it.
pub(crate) fn otlp(
    config: &TelemetryConfig,
    endpoint: &str,
) -> Result<(Box<dyn SpanProcessor>, ExportRuntime), InitError> {
    match config.otlp_protocol {
        #[cfg(feature = "otlp-http")]
        OtlpProtocol::HttpProtobuf => http_exporter(config, endpoint),
        #[cfg(feature = "otlp-grpc")]
        OtlpProtocol::Grpc => grpc_exporter(config, endpoint),
        #[cfg(not(all(feature = "otlp-http", feature = "otlp-grpc")))]
        protocol => {
            let _ = endpoint;
            Err(InitError::Config(protocol.feature_off()))
        }
    }
}

/// The dedicated runtime of the export I/O and its handle. It is owned by an [`ExportRuntime`]
/// from the start, so that an exporter that fails to build drops it without blocking: dropping a
/// bare runtime inside another one (`init` from an async `main`) panics.
#[cfg(any(feature = "otlp-http", feature = "otlp-grpc"))]
fn export_runtime() -> Result<(ExportRuntime, tokio::runtime::Handle), InitError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("mainstay-otlp-export")
        .enable_all()
        .build()
        .map_err(InitError::ExportRuntime)?;
    let handle = runtime.handle().clone();
    Ok((ExportRuntime(Some(runtime)), handle))
}

/// The PEM of `otlp_ca_file`, if set.
#[cfg(any(feature = "otlp-http", feature = "otlp-grpc"))]
fn ca_pem(config: &TelemetryConfig) -> Result<Option<Vec<u8>>, InitError> {
    match &config.otlp_ca_file {
        Some(path) => Ok(Some(read_ca_file(path).map_err(|allowed| {
            InitError::Exporter(
                format!("otlp_ca_file {}: expected {allowed}", path.display()).into(),
            )
        })?)),
        None => Ok(None),
    }
}

/// `otlp_headers` as an HTTP header map (validated names and values; any other is skipped).
#[cfg(any(feature = "otlp-http", feature = "otlp-grpc"))]
fn export_headers(config: &TelemetryConfig) -> http::HeaderMap {
    config
        .otlp_headers
        .iter()
        .filter_map(|(name, value)| {
            let mut value = http::HeaderValue::from_str(value).ok()?;
            value.set_sensitive(true);
            Some((http::HeaderName::from_bytes(name.as_bytes()).ok()?, value))
        })
        .collect()
}

/// The OTLP/HTTP exporter: protobuf over a reqwest client that runs on the export runtime.
#[cfg(feature = "otlp-http")]
fn http_exporter(
    config: &TelemetryConfig,
    endpoint: &str,
) -> Result<(Box<dyn SpanProcessor>, ExportRuntime), InitError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};

    let headers = export_headers(config);
    let ca_pem = ca_pem(config)?;
    let (runtime, handle) = export_runtime()?;
    #[allow(unused_mut, reason = "only `tls` adds certificates")]
    let mut builder = reqwest::Client::builder().timeout(EXPORT_TIMEOUT);
    #[cfg(feature = "tls")]
    if let Some(pem) = &ca_pem {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|error| InitError::Exporter(Box::new(error)))?;
        builder = builder.tls_certs_merge(certificates);
    }
    #[cfg(not(feature = "tls"))]
    let _ = ca_pem;
    let client = builder
        .build()
        .map_err(|error| InitError::Exporter(Box::new(error)))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(http_traces_url(endpoint))
        .with_http_client(RuntimeHttpClient {
            client,
            handle,
            headers,
        })
        .build()
        .map_err(|error| InitError::Exporter(Box::new(error)))?;
    Ok((batch(exporter), runtime))
}

/// The OTLP/gRPC exporter over a tonic channel. For `https://` the channel is built here with
/// tonic's rustls (the system roots plus `otlp_ca_file`), so that `tls` needs no TLS feature of
/// opentelemetry-otlp, whose TLS features would bring tonic into an HTTP-only build.
#[cfg(feature = "otlp-grpc")]
fn grpc_exporter(
    config: &TelemetryConfig,
    endpoint: &str,
) -> Result<(Box<dyn SpanProcessor>, ExportRuntime), InitError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};

    let headers = export_headers(config);
    let ca_pem = ca_pem(config)?;
    let (runtime, handle) = export_runtime()?;
    // The tonic channel spawns its worker onto the current runtime while it is built.
    let entered = handle.enter();
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    #[cfg(feature = "tls")]
    if endpoint.starts_with("https://") {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(pem) = &ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        // The exporter requires the channel's timeout to be its own.
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .and_then(|channel| channel.tls_config(tls))
            .map_err(|error| InitError::Exporter(Box::new(error)))?
            .timeout(EXPORT_TIMEOUT)
            .connect_lazy();
        builder = builder.with_timeout(EXPORT_TIMEOUT).with_channel(channel);
    }
    #[cfg(not(feature = "tls"))]
    let _ = ca_pem;
    if !headers.is_empty() {
        builder = builder.with_interceptor(move |mut request: tonic::Request<()>| {
            let mut metadata = std::mem::take(request.metadata_mut()).into_headers();
            for (name, value) in &headers {
                metadata.insert(name.clone(), value.clone());
            }
            *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(metadata);
            Ok(request)
        });
    }
    let exporter = builder
        .build()
        .map_err(|error| InitError::Exporter(Box::new(error)))?;
    drop(entered);
    Ok((batch(exporter), runtime))
}

/// `http://host:4318` → `http://host:4318/v1/traces`; an endpoint with a path is kept as is.
#[cfg(feature = "otlp-http")]
fn http_traces_url(endpoint: &str) -> String {
    match endpoint.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.path(), "" | "/") && uri.query().is_none() => {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        }
        _ => endpoint.to_owned(),
    }
}

/// Runs each export request on the export runtime, whatever thread awaits it, with the
/// configured headers.
#[cfg(feature = "otlp-http")]
#[derive(Debug)]
struct RuntimeHttpClient {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
    /// `otlp_headers`, marked sensitive so that `Debug` hides their values.
    headers: http::HeaderMap,
}

#[cfg(feature = "otlp-http")]
#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeHttpClient {
    async fn send_bytes(
        &self,
        mut request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let client = self.client.clone();
        let task = self.handle.spawn(async move {
            opentelemetry_http::HttpClient::send_bytes(&client, request).await
        });
        match task.await {
            Ok(result) => result,
            Err(join_error) => Err(Box::new(join_error)),
        }
    }
}

/// Redacts denied span and event attributes before the inner processor (and so the exporter)
/// sees the span.
#[derive(Debug)]
struct RedactingProcessor {
    inner: Box<dyn SpanProcessor>,
    redactor: Redactor,
}

impl SpanProcessor for RedactingProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        redact_attributes(&self.redactor, &mut span.attributes);
        for event in &mut span.events.events {
            redact_attributes(&self.redactor, &mut event.attributes);
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn redact_attributes(redactor: &Redactor, attributes: &mut [KeyValue]) {
    for attribute in attributes {
        if redactor.is_denied(attribute.key.as_str()) {
            attribute.value = REDACTED.into();
        }
    }
}

#[cfg(all(test, feature = "otlp-http"))]
mod tests {
    use super::http_traces_url;

    #[test]
    fn http_endpoint_without_path_gets_the_traces_path() {
        assert_eq!(
            http_traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            http_traces_url("http://127.0.0.1:4318/"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            http_traces_url("http://collector/custom/traces"),
            "http://collector/custom/traces"
        );
    }
}
