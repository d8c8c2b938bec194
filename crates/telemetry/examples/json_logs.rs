//! Bunyan JSON logs on stdout: telemetry is initialised with the defaults (JSON lines, level
//! `info`, no OTLP endpoint, so nothing is exported), then a span with fields is entered and
//! events are logged inside it. Every line inside the span carries the span's fields and its
//! `trace_id` and `span_id`; the `api_key` field is written as `"[REDACTED]"`, and the error is
//! logged with its cause chain. The program keeps a copy of the lines and checks this.
//!
//! Run with `cargo run -p mainstay-telemetry --example json_logs` (`RUST_LOG` overrides the
//! level filter, as it does for [`mainstay_telemetry::init`]).

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};

use mainstay_telemetry::{ErrorChain, LogFormat, REDACTED, TelemetryConfig, init_with_writer};
use tracing_subscriber::fmt::MakeWriter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = TelemetryConfig {
        service_name: "checkout".into(),
        log_format: LogFormat::Json,
        ..TelemetryConfig::default()
    };
    config.validate()?;
    // `init(&config)` writes to stdout; here stdout plus a copy to check the lines with.
    let copy = Tee::default();
    let telemetry = init_with_writer(&config, copy.clone())?;

    // A span with fields: its START and END lines and every event inside carry them.
    let span = tracing::info_span!("charge", order_id = 42, customer = "c-1001");
    span.in_scope(|| {
        tracing::info!(amount_cents = 1999, api_key = "sk-live-123", "card charged");
        let cause = io::Error::other("connection reset");
        let error = io::Error::new(io::ErrorKind::TimedOut, cause);
        tracing::warn!(error = %ErrorChain(&error), "receipt email delayed");
    });
    drop(span);

    // The last step: writes the lines still queued for the writer thread.
    telemetry.shutdown()?;

    let written = copy
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let lines = String::from_utf8(written)?
        .lines()
        .map(serde_json::from_str::<serde_json::Value>)
        .collect::<Result<Vec<_>, _>>()?;
    let charged = lines
        .iter()
        .find(|line| {
            line["msg"]
                .as_str()
                .is_some_and(|msg| msg.ends_with("card charged"))
        })
        .ok_or("no `card charged` line")?;
    assert_eq!(charged["name"], "checkout");
    assert_eq!(charged["order_id"], 42);
    assert_eq!(charged["api_key"], REDACTED);
    assert!(charged["trace_id"].is_string() && charged["span_id"].is_string());
    let delayed = lines
        .iter()
        .find(|line| {
            line["msg"]
                .as_str()
                .is_some_and(|msg| msg.ends_with("receipt email delayed"))
        })
        .ok_or("no `receipt email delayed` line")?;
    assert_eq!(delayed["trace_id"], charged["trace_id"]);
    assert!(
        delayed["error"]
            .as_str()
            .is_some_and(|error| error.contains("connection reset"))
    );
    Ok(())
}

/// Writes each log line to stdout and appends it to a shared buffer.
#[derive(Clone, Default)]
struct Tee(Arc<Mutex<Vec<u8>>>);

impl<'a> MakeWriter<'a> for Tee {
    type Writer = Tee;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Write for Tee {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        io::stdout().write_all(bytes)?;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}
