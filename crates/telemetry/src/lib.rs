#![doc = include_str!("../README.md")]

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter};
use tracing::Dispatch;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

mod bunyan;
mod catalogue;
mod config;
pub mod http;
mod logs;
pub mod otel_env;
pub mod process;
mod traces;

pub use catalogue::METRICS;
pub use config::{ConfigError, LogFormat, OtlpProtocol, TelemetryConfig};
pub use logs::{BUILT_IN_REDACT_PATTERNS, is_secret_name};
pub use logs::{ErrorChain, REDACTED};
pub use traces::install_propagator;

// Third-party crates in the public API, re-exported so that a caller names their items at the
// version this crate uses without a dependency of its own (README, "Third-party types in the
// public API").
pub use opentelemetry_sdk;
pub use prometheus_client;
pub use serde;
pub use serde_json;
#[cfg(feature = "tower")]
pub use tower;
pub use tracing;
pub use tracing_subscriber;

/// Installs telemetry for the process, logging to stdout.
///
/// Sets the global `tracing` subscriber (and the `log` bridge), the global tracer provider and
/// the W3C propagator (trace context + baggage). The filter is `RUST_LOG` when that variable is
/// set, else [`TelemetryConfig::log_filter`]. With [`TelemetryConfig::otlp_endpoint`] set, spans
/// are batch-exported over OTLP; a collector that is down costs failed exports, never a panic.
///
/// # Errors
///
/// [`InitError`]: an invalid config, an invalid `RUST_LOG`, an exporter or export runtime that
/// cannot be built, or a global subscriber already installed.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, InitError> {
    init_with_writer(config, std::io::stdout)
}

/// [`init`], writing log lines to `writer` instead of stdout.
///
/// Log lines are handed to a dedicated writer thread, so runtime workers never block on the
/// destination; they are written in order, none is dropped (a full queue of 65,536 lines makes
/// loggers wait), and [`TelemetryGuard::force_flush`] and [`TelemetryGuard::shutdown`] wait for
/// them to be written.
///
/// # Errors
///
/// As [`init`].
pub fn init_with_writer<W>(config: &TelemetryConfig, writer: W) -> Result<TelemetryGuard, InitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|error| InitError::Filter {
                directives,
                source: Box::new(error),
            })?,
        _ => config_filter(config)?,
    };
    let (writer, log_worker) = logs::non_blocking(writer).map_err(InitError::LogWriter)?;
    let (dispatch, mut guard) = assemble(config, writer, filter, exporter_processor(config)?)?;
    guard.log_worker = Some(log_worker);
    opentelemetry::global::set_tracer_provider(guard.provider.clone());
    install_propagator();
    dispatch
        .try_init()
        .map_err(|error| InitError::AlreadyInitialized(Box::new(error)))?;
    Ok(guard)
}

/// Builds the subscriber of [`init`] without installing anything global: no subscriber, tracer
/// provider or propagator, and `RUST_LOG` is not read.
///
/// Use the returned [`Dispatch`] with `tracing::dispatcher::with_default` or `set_default`
/// (tests, embedding). Spans are exported when the config names an OTLP endpoint.
///
/// # Errors
///
/// [`InitError`]: an invalid config or an exporter that cannot be built.
pub fn build<W>(
    config: &TelemetryConfig,
    writer: W,
) -> Result<(Dispatch, TelemetryGuard), InitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    assemble(
        config,
        writer,
        config_filter(config)?,
        exporter_processor(config)?,
    )
}

/// [`build`] with spans batch-exported to `exporter` instead of the configured OTLP endpoint
/// (an in-memory exporter in tests, a custom backend).
///
/// # Errors
///
/// [`InitError`]: an invalid config.
pub fn build_with_exporter<W, E>(
    config: &TelemetryConfig,
    writer: W,
    exporter: E,
) -> Result<(Dispatch, TelemetryGuard), InitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    E: SpanExporter + 'static,
{
    assemble(
        config,
        writer,
        config_filter(config)?,
        (Some(traces::batch(exporter)), None),
    )
}

/// How long a flush waits for the log writer thread.
const LOG_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

type Processor = (
    Option<Box<dyn opentelemetry_sdk::trace::SpanProcessor>>,
    Option<traces::ExportRuntime>,
);

fn config_filter(config: &TelemetryConfig) -> Result<EnvFilter, InitError> {
    config.validate()?;
    EnvFilter::try_new(&config.log_filter).map_err(|error| InitError::Filter {
        directives: config.log_filter.clone(),
        source: Box::new(error),
    })
}

fn exporter_processor(config: &TelemetryConfig) -> Result<Processor, InitError> {
    config.validate()?;
    match &config.otlp_endpoint {
        Some(endpoint) => {
            let (processor, runtime) = traces::otlp(config, endpoint)?;
            Ok((Some(processor), Some(runtime)))
        }
        None => Ok((None, None)),
    }
}

fn assemble<W>(
    config: &TelemetryConfig,
    writer: W,
    filter: EnvFilter,
    (processor, runtime): Processor,
) -> Result<(Dispatch, TelemetryGuard), InitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    config.validate()?;
    let redactor = logs::Redactor::new(&config.redact_fields);
    let provider = traces::provider(config, processor, redactor.clone());
    let tracer = provider.tracer("mainstay-telemetry");
    let dispatch = match config.log_format {
        LogFormat::Json => Dispatch::new(json_subscriber(
            &config.service_name,
            writer,
            redactor,
            filter,
            tracer,
        )),
        LogFormat::Pretty => Dispatch::new(
            Registry::default()
                .with(filter)
                .with(otel_layer(tracer))
                .with(
                    tracing_subscriber::fmt::layer()
                        .fmt_fields(logs::pretty_fields(redactor))
                        .with_writer(writer),
                ),
        ),
    };
    Ok((
        dispatch,
        TelemetryGuard {
            provider,
            runtime,
            log_worker: None,
            shut_down: false,
        },
    ))
}

/// The subscriber of the JSON format.
///
/// The bunyan layer comes after the OpenTelemetry layer, which creates the OpenTelemetry data
/// the bunyan layer reads a new span's ids from. The OpenTelemetry layer skips the events of
/// unsampled spans ([`bunyan::RecordingSpanEvents`]). The level filter is outermost: with a
/// per-layer filter inside, that is where it keeps the subscriber's maximum level hint (and so
/// the static level check of `tracing` and `log` macros).
fn json_subscriber<W>(
    service_name: &str,
    writer: W,
    redactor: logs::Redactor,
    filter: EnvFilter,
    tracer: SdkTracer,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    Registry::default()
        .with(otel_layer(tracer).with_filter(bunyan::RecordingSpanEvents))
        .with(bunyan::BunyanLayer::new(service_name, writer, redactor))
        .with(filter)
}

/// The OpenTelemetry layer over `tracer`. Busy/idle timings and thread attributes cost a clock
/// read per enter and a string per span on every request; code location is kept.
fn otel_layer<S>(tracer: SdkTracer) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
}

/// Keeps telemetry running; shutting it down (or dropping it) flushes pending spans and log lines.
///
/// Keep it alive for the life of the process and call [`TelemetryGuard::shutdown`] last in the
/// shutdown sequence. With an exporter configured, the flush waits for the export (bounded by the
/// SDK's 5 s shutdown timeout), blocking the calling thread.
#[must_use = "dropping the guard shuts telemetry down at once"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
    runtime: Option<traces::ExportRuntime>,
    log_worker: Option<logs::LogWorker>,
    shut_down: bool,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("TelemetryGuard")
            .field("exporting", &self.runtime.is_some())
            .field("shut_down", &self.shut_down)
            .finish_non_exhaustive()
    }
}

impl TelemetryGuard {
    /// Exports every finished span now, without shutting down.
    ///
    /// # Errors
    ///
    /// [`ShutdownError::Flush`] when the exporter failed or timed out.
    pub fn force_flush(&self) -> Result<(), ShutdownError> {
        let spans = self
            .provider
            .force_flush()
            .map_err(|error| ShutdownError::Flush(Box::new(error)));
        self.flush_logs()?;
        spans
    }

    /// Waits for the log writer thread of [`init`] to write every queued line.
    fn flush_logs(&self) -> Result<(), ShutdownError> {
        match &self.log_worker {
            Some(worker) if !worker.flush(LOG_FLUSH_TIMEOUT) => Err(ShutdownError::Logs),
            _ => Ok(()),
        }
    }

    /// Flushes pending spans and log lines, and stops the exporter.
    ///
    /// # Errors
    ///
    /// [`ShutdownError::Shutdown`] when the final export failed or timed out; the exporter is
    /// stopped either way.
    pub fn shutdown(self) -> Result<(), ShutdownError> {
        self.shut_down_with(SdkTracerProvider::shutdown)
    }

    /// [`shutdown`](Self::shutdown) within `timeout`: the final export is given at most that
    /// long (a collector that does not answer cannot hold the process past it).
    ///
    /// # Errors
    ///
    /// As [`shutdown`](Self::shutdown).
    pub fn shutdown_within(self, timeout: std::time::Duration) -> Result<(), ShutdownError> {
        self.shut_down_with(|provider| provider.shutdown_with_timeout(timeout))
    }

    /// Stops the provider with `stop`, then the export runtime, then flushes the log lines.
    fn shut_down_with(
        mut self,
        stop: impl FnOnce(&SdkTracerProvider) -> opentelemetry_sdk::error::OTelSdkResult,
    ) -> Result<(), ShutdownError> {
        self.shut_down = true;
        let spans = stop(&self.provider).map_err(|error| ShutdownError::Shutdown(Box::new(error)));
        self.runtime.take();
        self.flush_logs()?;
        spans
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if !self.shut_down {
            // Errors cannot be reported from a drop; `shutdown` returns them.
            let _ = self.provider.shutdown();
            let _ = self.flush_logs();
        }
    }
}

/// Why telemetry could not be initialised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// The configuration holds an invalid value.
    #[error("invalid telemetry configuration: {0}")]
    Config(#[from] ConfigError),
    /// The log filter directives do not parse.
    #[error("invalid log filter {directives:?}: use directives such as `info,mainstay=debug`")]
    Filter {
        /// The rejected directives (from `RUST_LOG` or the config).
        directives: String,
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The OTLP exporter could not be built from the configuration.
    #[error("cannot build the OTLP span exporter: check otlp_endpoint and OTEL_EXPORTER_OTLP_*")]
    Exporter(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The log writer thread could not be started.
    #[error("cannot start the log writer thread")]
    LogWriter(#[source] std::io::Error),
    /// The export runtime's thread could not be started.
    #[error("cannot start the OTLP export runtime")]
    ExportRuntime(#[source] std::io::Error),
    /// A global `tracing` subscriber or `log` logger is already installed.
    #[error("a global tracing subscriber is already installed: call init once per process")]
    AlreadyInitialized(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why flushing or shutting down telemetry failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// A flush did not complete: the exporter failed or timed out.
    #[error("flushing spans failed: check that the OTLP collector is reachable")]
    Flush(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The log writer thread did not write the queued lines in time; some may be lost.
    #[error("flushing log lines timed out: the log destination is blocked or too slow")]
    Logs,
    /// The final flush or the exporter shutdown failed; pending spans may be lost.
    #[error("shutting down the tracer provider failed: pending spans may be lost")]
    Shutdown(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing::Subscriber as _;
    use tracing_subscriber::filter::LevelFilter;

    #[test]
    fn the_json_subscriber_keeps_the_filter_level_as_its_hint() {
        for (directives, level) in [
            ("info", LevelFilter::INFO),
            ("warn,app=debug", LevelFilter::DEBUG),
        ] {
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
            let subscriber = super::json_subscriber(
                "svc",
                std::io::sink,
                crate::logs::Redactor::new(&[]),
                tracing_subscriber::EnvFilter::new(directives),
                provider.tracer("test"),
            );
            assert_eq!(subscriber.max_level_hint(), Some(level), "{directives}");
        }
    }

    /// An OTLP endpoint on `protocol`.
    #[cfg(any(
        not(feature = "otlp-http"),
        not(feature = "otlp-grpc"),
        not(feature = "tls")
    ))]
    fn exporting(endpoint: &str, protocol: crate::OtlpProtocol) -> crate::TelemetryConfig {
        crate::TelemetryConfig {
            otlp_endpoint: Some(endpoint.to_owned()),
            otlp_protocol: protocol,
            ..crate::TelemetryConfig::default()
        }
    }

    /// `validate` refuses `config` on `key`, naming `feature`, and `build` (as `init`) returns
    /// that error typed, before any exporter exists.
    #[cfg(any(
        not(feature = "otlp-http"),
        not(feature = "otlp-grpc"),
        not(feature = "tls")
    ))]
    fn check_refused(config: &crate::TelemetryConfig, key: &str, feature: &str) {
        let refused = config.validate().expect_err("validate accepted it");
        assert_eq!(refused.key(), key, "{refused}");
        assert!(refused.to_string().contains(feature), "{refused}");
        match super::build(config, std::io::sink) {
            Err(super::InitError::Config(error)) => assert_eq!(error, refused),
            Err(other) => panic!("expected the config error, got {other}"),
            Ok(_) => panic!("build accepted an endpoint it cannot export to"),
        }
    }

    /// The exporter path itself (reached only after `validate`) refuses a transport that is not
    /// built in with the same typed error, so no caller can make it drop spans silently.
    #[cfg(any(not(feature = "otlp-http"), not(feature = "otlp-grpc")))]
    fn check_exporter_refuses(config: &crate::TelemetryConfig) {
        let endpoint = config.otlp_endpoint.as_deref().unwrap_or_default();
        match crate::traces::otlp(config, endpoint) {
            Err(super::InitError::Config(error)) => assert_eq!(error.key(), "otlp_protocol"),
            Err(other) => panic!("expected the config error, got {other}"),
            Ok(_) => panic!("an exporter was built for a transport that is not built in"),
        }
    }

    #[cfg(not(feature = "otlp-grpc"))]
    #[test]
    fn grpc_without_the_otlp_grpc_feature_is_refused_at_init() {
        let config = exporting("http://127.0.0.1:4317", crate::OtlpProtocol::Grpc);
        check_refused(&config, "otlp_protocol", "`otlp-grpc` feature");
        check_exporter_refuses(&config);
    }

    #[cfg(not(feature = "otlp-http"))]
    #[test]
    fn http_without_the_otlp_http_feature_is_refused_at_init() {
        let config = exporting("http://127.0.0.1:4318", crate::OtlpProtocol::HttpProtobuf);
        check_refused(&config, "otlp_protocol", "`otlp-http` feature");
        check_exporter_refuses(&config);
    }

    /// With a transport built in but not `tls`, an `https://` endpoint is refused at init
    /// rather than failing at each export.
    #[cfg(all(
        not(feature = "tls"),
        any(feature = "otlp-http", feature = "otlp-grpc")
    ))]
    #[test]
    fn https_without_the_tls_feature_is_refused_at_init() {
        let protocol = if cfg!(feature = "otlp-http") {
            crate::OtlpProtocol::HttpProtobuf
        } else {
            crate::OtlpProtocol::Grpc
        };
        let config = exporting("https://collector:4318", protocol);
        check_refused(&config, "otlp_endpoint", "`tls` feature");
    }

    /// Without an endpoint nothing is exported, so no transport is needed: logs and trace ids
    /// work in every feature set, whichever protocol the config names.
    #[test]
    fn without_an_endpoint_no_transport_is_needed() {
        for protocol in [crate::OtlpProtocol::HttpProtobuf, crate::OtlpProtocol::Grpc] {
            let config = crate::TelemetryConfig {
                otlp_protocol: protocol,
                ..crate::TelemetryConfig::default()
            };
            assert_eq!(config.validate(), Ok(()), "{protocol:?}");
            let (_dispatch, guard) = super::build(&config, std::io::sink).expect("build");
            guard.shutdown().expect("shutdown");
        }
    }

    /// Over gRPC alone, `tls` checks `otlp_ca_file` without reqwest's parser: a PEM file that
    /// holds no certificate (a key given by mistake) is still refused up front.
    #[cfg(all(feature = "tls", feature = "otlp-grpc", not(feature = "otlp-http")))]
    #[test]
    fn a_ca_file_without_a_certificate_is_refused_over_grpc_alone() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("ca.pem");
        std::fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let config = crate::TelemetryConfig {
            otlp_ca_file: Some(path),
            ..exporting("https://collector:4317", crate::OtlpProtocol::Grpc)
        };
        let error = config.validate().expect_err("a file without a certificate");
        assert_eq!(error.key(), "otlp_ca_file", "{error}");
    }

    /// An exporter that fails to build after its runtime exists (here tonic refuses a CA file
    /// that only looks like PEM) returns its error, also when `build` runs inside a runtime,
    /// where dropping the unused export runtime must not block.
    #[cfg(all(feature = "tls", feature = "otlp-grpc", not(feature = "otlp-http")))]
    #[tokio::test]
    async fn an_exporter_that_fails_to_build_inside_a_runtime_is_an_error_not_a_panic() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("ca.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let config = crate::TelemetryConfig {
            otlp_ca_file: Some(path),
            ..exporting("https://collector:4317", crate::OtlpProtocol::Grpc)
        };
        assert_eq!(config.validate(), Ok(()));
        match super::build(&config, std::io::sink) {
            Err(super::InitError::Exporter(_)) => {}
            Err(other) => panic!("expected the exporter error, got {other}"),
            Ok(_) => panic!("tonic accepted a certificate that is not one"),
        }
    }
}
