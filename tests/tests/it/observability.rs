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

/// A private CA (self-signed) and a server certificate it signed for `127.0.0.1` and `localhost`,
/// written as PEM files to a temporary directory.
struct TestPki {
    dir: tempfile::TempDir,
    server_cert_pem: String,
    server_key_pem: String,
}

impl TestPki {
    fn generate() -> anyhow::Result<Self> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mainstay test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
        let server_key = rcgen::KeyPair::generate()?;
        let server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let server_cert = server_params.signed_by(&server_key, &ca)?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
        Ok(Self {
            dir,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    fn rustls_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(
            self.server_cert_pem.as_bytes(),
        )?];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())?;
        Ok(
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?,
        )
    }
}

/// One export as a TLS receiver saw it: the `authorization` header (or gRPC metadata) and the
/// batch.
#[derive(Debug, Clone)]
struct TlsExport {
    authorization: Option<String>,
    tenant: Option<String>,
    request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
}

impl TlsExport {
    fn has_trace(&self, trace_id: &str) -> bool {
        self.spans().any(|span| hex(&span.trace_id) == trace_id)
    }

    fn spans(&self) -> impl Iterator<Item = &opentelemetry_proto::tonic::trace::v1::Span> {
        self.request
            .resource_spans
            .iter()
            .flat_map(|resource| resource.scope_spans.iter())
            .flat_map(|scope| scope.spans.iter())
    }

    fn resource_attribute(&self, name: &str) -> Option<String> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        self.request
            .resource_spans
            .iter()
            .filter_map(|resource| resource.resource.as_ref())
            .flat_map(|resource| resource.attributes.iter())
            .find(|attribute| attribute.key == name)
            .and_then(
                |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(text) => Some(text.clone()),
                    _ => None,
                },
            )
    }
}

type Exports = std::sync::Arc<std::sync::Mutex<Vec<TlsExport>>>;

/// An OTLP receiver behind TLS (the [`TestPki`] server certificate) on an ephemeral loopback
/// port, over HTTP/protobuf (`POST /v1/traces`) or gRPC; keeps every export with its headers.
struct TlsReceiver {
    port: u16,
    exports: Exports,
    task: tokio::task::JoinHandle<()>,
}

impl TlsReceiver {
    async fn start(pki: &TestPki, grpc: bool) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let exports = Exports::default();
        let task = if grpc {
            let identity =
                tonic::transport::Identity::from_pem(&pki.server_cert_pem, &pki.server_key_pem);
            let service = opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                GrpcTlsReceiver { exports: exports.clone() },
            );
            let mut server = tonic::transport::Server::builder()
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
            tokio::spawn(async move {
                let _ = server
                    .add_service(service)
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                    .await;
            })
        } else {
            let acceptor =
                tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(pki.rustls_config()?));
            let exports = exports.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let exports = exports.clone();
                    tokio::spawn(async move {
                        let Ok(stream) = acceptor.accept(stream).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(
                            move |request: hyper::Request<hyper::body::Incoming>| {
                                let exports = exports.clone();
                                async move { receive_http(&exports, request).await }
                            },
                        );
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    });
                }
            })
        };
        Ok(Self {
            port,
            exports,
            task,
        })
    }

    fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn exports(&self) -> Vec<TlsExport> {
        self.exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn wait_for(
        &self,
        timeout: Duration,
        predicate: impl Fn(&TlsExport) -> bool,
    ) -> anyhow::Result<TlsExport> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(export) = self.exports().into_iter().find(|export| predicate(export)) {
                return Ok(export);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no matching export within {timeout:?}; received {:?}",
                self.exports()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive_http(
    exports: &Exports,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, hyper::Error> {
    use http_body_util::BodyExt;
    use prost::Message;
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let (authorization, tenant) = (header("authorization"), header("x-tenant"));
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    if path == "/v1/traces"
        && let Ok(request) =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body,
            )
    {
        exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(TlsExport {
                authorization,
                tenant,
                request,
            });
    }
    let reply =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::default()
            .encode_to_vec();
    Ok(hyper::Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(bytes::Bytes::from(reply)))
        .unwrap_or_default())
}

#[derive(Debug, Clone)]
struct GrpcTlsReceiver {
    exports: Exports,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for GrpcTlsReceiver
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let metadata = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let (authorization, tenant) = (metadata("authorization"), metadata("x-tenant"));
        self.exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(TlsExport {
                authorization,
                tenant,
                request: request.into_inner(),
            });
        Ok(tonic::Response::new(Default::default()))
    }
}

const OTLP_TOKEN: &str = "Bearer sentinel-otlp-token-7c1d";

/// Issue 15, point 11: an `https://` collector whose certificate a private CA signed receives the
/// spans, with the `telemetry.otlp_headers` of the file winning over `OTEL_EXPORTER_OTLP_HEADERS`
/// (whose other headers still arrive); the token never reaches a log line.
async fn spans_reach_an_https_collector(protocol: &str) -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let receiver = TlsReceiver::start(&pki, protocol == "grpc").await?;
    let mut api = Api::builder()
        .config_toml(&format!(
            "[telemetry]\notlp_endpoint = \"{}\"\notlp_protocol = \"{protocol}\"\n\
             otlp_ca_file = \"{}\"\n\n[telemetry.otlp_headers]\nauthorization = \"{OTLP_TOKEN}\"\n",
            receiver.endpoint(),
            pki.ca_file(),
        ))
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20loses,x-tenant=acme",
        )
        .env("MAINSTAY_TELEMETRY__LOG_FILTER", "debug")
        .start()?;
    let response = reqwest::Client::new()
        .get(api.url("/health/live"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    api.terminate()?;
    assert!(api.wait_exit(Duration::from_secs(20))?.success());
    let export = receiver
        .wait_for(Duration::from_secs(5), |export| export.has_trace(TRACE_ID))
        .await?;
    assert_eq!(export.authorization.as_deref(), Some(OTLP_TOKEN));
    assert_eq!(export.tenant.as_deref(), Some("acme"));
    assert_eq!(
        export.resource_attribute("service.name").as_deref(),
        Some("mainstay-api")
    );
    let lines = api.lines();
    assert!(
        lines
            .iter()
            .all(|line| !line.contains("sentinel-otlp-token")),
        "the OTLP token appears in a log line"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_over_http_protobuf() -> anyhow::Result<()> {
    spans_reach_an_https_collector("http/protobuf").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_https_collector_over_grpc() -> anyhow::Result<()> {
    spans_reach_an_https_collector("grpc").await
}

/// Issue 15, point 11: with a silent `mainstay.toml`, the standard `OTEL_*` variables alone
/// configure the export: endpoint, CA, headers, service name, resource attributes and ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_variables_alone_configure_the_export() -> anyhow::Result<()> {
    let pki = TestPki::generate()?;
    let receiver = TlsReceiver::start(&pki, false).await?;
    let mut api = Api::builder()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.ca_file())
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20sentinel-otlp-token-7c1d",
        )
        .env("OTEL_SERVICE_NAME", "otel-named")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=e2e,service.version=9.9.9",
        )
        .env("OTEL_TRACES_SAMPLER_ARG", "1.0")
        .start()?;
    // No traceparent: only the ratio of 1.0 samples the request.
    let response = reqwest::get(api.url("/health/live")).await?;
    assert_eq!(response.status(), 200);
    api.terminate()?;
    assert!(api.wait_exit(Duration::from_secs(20))?.success());
    let export = receiver
        .wait_for(Duration::from_secs(5), |export| {
            export.spans().any(|span| span.kind == 2)
        })
        .await?;
    assert_eq!(export.authorization.as_deref(), Some(OTLP_TOKEN));
    assert_eq!(
        export.resource_attribute("service.name").as_deref(),
        Some("otel-named")
    );
    assert_eq!(
        export.resource_attribute("service.version").as_deref(),
        Some("9.9.9")
    );
    assert_eq!(
        export
            .resource_attribute("deployment.environment.name")
            .as_deref(),
        Some("e2e")
    );
    Ok(())
}

/// The `config print` line of `key`.
fn printed_line(builder: mainstay_tests::ApiBuilder, key: &str) -> anyhow::Result<String> {
    let (status, out, err) = builder.args(&["config", "print"]).run()?;
    anyhow::ensure!(status.success(), "config print failed: {err}");
    out.lines()
        .find(|line| line.starts_with(&format!("{key} = ")))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {key} in {out}"))
}

/// Issue 15, point 11: defaults < `OTEL_*` < `mainstay.toml` < `MAINSTAY_*` < admin overrides,
/// and `config print` names the source, the `OTEL_*` variable included.
#[test]
fn otel_variables_rank_between_the_defaults_and_the_file() -> anyhow::Result<()> {
    let data_dir = tempfile::tempdir()?;
    std::fs::write(
        data_dir.path().join("admin-config.toml"),
        "[telemetry]\nservice_name = \"from-admin\"\n",
    )?;
    let data_dir = data_dir.path().display().to_string();
    let file = "[telemetry]\nservice_name = \"from-file\"\n";
    for (otel, toml, mainstay, admin, expected, source) in [
        (false, false, false, false, "mainstay-api", "# default"),
        (
            true,
            false,
            false,
            false,
            "from-otel",
            "# `OTEL_SERVICE_NAME` environment variable",
        ),
        (true, true, false, false, "from-file", "# TOML file"),
        (
            true,
            true,
            true,
            false,
            "from-mainstay",
            "# `MAINSTAY_` environment variable",
        ),
        (true, true, true, true, "from-admin", "# TOML file"),
    ] {
        let mut builder = Api::builder();
        if otel {
            builder = builder.env("OTEL_SERVICE_NAME", "from-otel");
        }
        if toml {
            builder = builder.config_toml(file);
        }
        if mainstay {
            builder = builder.env("MAINSTAY_TELEMETRY__SERVICE_NAME", "from-mainstay");
        }
        if admin {
            builder = builder.env("MAINSTAY_STORAGE__DATA_DIR", &data_dir);
        }
        let line = printed_line(builder, "telemetry.service_name")?;
        let row = (otel, toml, mainstay, admin);
        assert!(
            line.starts_with(&format!("telemetry.service_name = \"{expected}\"  ")),
            "{row:?}: {line}"
        );
        assert!(line.contains(source), "{row:?}: {line}");
        if admin {
            assert!(line.contains("admin-config.toml"), "{row:?}: {line}");
        }
    }
    Ok(())
}

/// Issue 15, point 11: header values from `OTEL_EXPORTER_OTLP_HEADERS` or the file are masked
/// in `config print` (names kept) and the variable is named as the source.
#[test]
fn otlp_headers_are_masked_in_config_print() -> anyhow::Result<()> {
    let line = printed_line(
        Api::builder().env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20sentinel-otlp-token-7c1d",
        ),
        "telemetry.otlp_headers",
    )?;
    assert_eq!(
        line,
        "telemetry.otlp_headers = {\"authorization\":\"[REDACTED]\"}  \
         # `OTEL_EXPORTER_OTLP_HEADERS` environment variable"
    );
    let line = printed_line(
        Api::builder().config_toml(&format!(
            "[telemetry.otlp_headers]\nx-api-key = \"{OTLP_TOKEN}\"\n"
        )),
        "telemetry.otlp_headers",
    )?;
    assert!(!line.contains("sentinel"), "{line}");
    assert!(line.contains("\"x-api-key\":\"[REDACTED]\""), "{line}");
    Ok(())
}

/// Issue 15, point 11: a malformed `OTEL_*` value is a configuration error naming the variable
/// (exit 2), at start-up and in `config check`, and never quotes a header value.
#[test]
fn malformed_otel_variables_stop_start_up_with_exit_2() -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken = listener.local_addr()?;
    for (variable, value) in [
        ("OTEL_TRACES_SAMPLER_ARG", "lots"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "sentinel-otlp-token-7c1d"),
        ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz"),
        // Well-formed, but the file it names is missing: the key's error names the variable.
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
    ] {
        for args in [&[][..], &["config", "check"][..]] {
            // A taken address: were the value accepted, start-up would fail (exit 1), not hang.
            let (status, out, err) = Api::builder()
                .env(variable, value)
                .env("MAINSTAY_SERVER__ADDR", &taken.to_string())
                .args(args)
                .run()?;
            assert_eq!(status.code(), Some(2), "{variable} {args:?}: {out}{err}");
            assert!(err.contains(variable), "{variable} {args:?}: {err}");
            assert!(!err.contains("sentinel"), "{err}");
        }
    }
    Ok(())
}
