//! The `tracing` layer that writes the bunyan lines: span START and END lines and event lines,
//! built from the core fields and the span field store in a reused per-thread buffer, and the
//! per-layer filter that spares the OpenTelemetry layer the events of unsampled spans.

use std::cell::RefCell;
use std::fmt;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::TraceContextExt as _;
use tracing::dispatcher::WeakDispatch;
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use super::encoder::{escape_into, write_hex, write_number, write_str, write_time};
#[cfg(feature = "tower")]
use super::fields::SpanFields;
use super::fields::{Fields, Message, Recorder};
use crate::logs::{REDACTED, Redactor};

/// A per-thread line buffer that grew past this is dropped rather than kept.
const KEEP_BUFFER_BYTES: usize = 64 * 1024;

/// Whether a span is the request span of [`TraceLayer`](crate::http::TraceLayer), whose START and
/// END lines are not written: its access line carries the same fields (docs/decisions/0041).
fn is_request_span(metadata: &Metadata<'_>) -> bool {
    metadata.target() == crate::http::REQUEST_SPAN_TARGET
}

/// The `tracing` layer that writes one bunyan JSON object per line for span starts and ends and
/// for events.
///
/// Sits after the OpenTelemetry layer in the stack: a new span's ids are read from it.
pub(crate) struct BunyanLayer {
    /// Not generic, so that [`unsampled_span_fields`] can find the layer in a `Dispatch`.
    sink: Box<dyn LineSink>,
    redactor: Redactor,
    /// `{"v":0,"name":"<service name>"`.
    head: Vec<u8>,
    /// `,"hostname":"<host>","pid":<pid>`.
    host_pid: Vec<u8>,
    /// Core fields on the deny-list, written as `"[REDACTED]"`.
    denied: DeniedCore,
    // In a layer callback `dispatcher::get_default` is the no-op dispatch, so the dispatch this
    // layer belongs to is kept from registration; weak, as the dispatch owns the layer.
    dispatch: OnceLock<WeakDispatch>,
}

/// Where finished lines go: a `MakeWriter`, behind one virtual call per line.
trait LineSink: Send + Sync + 'static {
    fn write_line(&self, line: &[u8], metadata: &Metadata<'_>);
}

struct Sink<W>(W);

impl<W> LineSink for Sink<W>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    fn write_line(&self, line: &[u8], metadata: &Metadata<'_>) {
        // A write error has nowhere to go: logging must not fail the caller.
        let _ = self.0.make_writer_for(metadata).write_all(line);
    }
}

impl fmt::Debug for BunyanLayer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BunyanLayer")
            .field("head", &String::from_utf8_lossy(&self.head))
            .finish_non_exhaustive()
    }
}

/// Which of the per-line core fields are denied.
#[derive(Debug, Clone, Copy)]
struct DeniedCore {
    msg: bool,
    level: bool,
    time: bool,
    target: bool,
    line: bool,
    file: bool,
}

impl BunyanLayer {
    /// Lines named `service_name`, written to `make_writer`, with `redactor`'s fields redacted.
    pub(crate) fn new<W>(service_name: &str, make_writer: W, redactor: Redactor) -> Self
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let hostname = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        Self::with_host(service_name, &hostname, make_writer, redactor)
    }

    fn with_host<W>(service_name: &str, hostname: &str, make_writer: W, redactor: Redactor) -> Self
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let mut head = b"{".to_vec();
        write_str(&mut head, "v");
        head.push(b':');
        if redactor.is_denied("v") {
            write_str(&mut head, REDACTED);
        } else {
            head.push(b'0');
        }
        core_entry(&mut head, "name", redactor.is_denied("name"), |out| {
            write_str(out, service_name);
        });
        let mut host_pid = Vec::new();
        core_entry(
            &mut host_pid,
            "hostname",
            redactor.is_denied("hostname"),
            |out| {
                write_str(out, hostname);
            },
        );
        core_entry(&mut host_pid, "pid", redactor.is_denied("pid"), |out| {
            write_number(out, std::process::id());
        });
        let denied = DeniedCore {
            msg: redactor.is_denied("msg"),
            level: redactor.is_denied("level"),
            time: redactor.is_denied("time"),
            target: redactor.is_denied("target"),
            line: redactor.is_denied("line"),
            file: redactor.is_denied("file"),
        };
        Self {
            sink: Box::new(Sink(make_writer)),
            redactor,
            head,
            host_pid,
            denied,
            dispatch: OnceLock::new(),
        }
    }

    /// Writes the core fields of a line, from `{` to `file`, into `out`; `msg` writes the
    /// message as a JSON string.
    fn begin_line(
        &self,
        out: &mut Vec<u8>,
        metadata: &Metadata<'_>,
        msg: impl FnOnce(&mut Vec<u8>),
    ) {
        out.extend_from_slice(&self.head);
        core_entry(out, "msg", self.denied.msg, msg);
        core_entry(out, "level", self.denied.level, |out| {
            write_number(out, bunyan_level(metadata.level()));
        });
        out.extend_from_slice(&self.host_pid);
        core_entry(out, "time", self.denied.time, |out| {
            write_time(out, SystemTime::now());
        });
        core_entry(out, "target", self.denied.target, |out| {
            write_str(out, metadata.target());
        });
        core_entry(out, "line", self.denied.line, |out| match metadata.line() {
            Some(line) => write_number(out, line),
            None => out.extend_from_slice(b"null"),
        });
        core_entry(out, "file", self.denied.file, |out| match metadata.file() {
            Some(file) => write_str(out, file),
            None => out.extend_from_slice(b"null"),
        });
    }

    /// A span's START or END line.
    fn span_line(&self, out: &mut Vec<u8>, metadata: &Metadata<'_>, kind: &str, fields: &Fields) {
        self.begin_line(out, metadata, |out| {
            out.push(b'"');
            write_span_context(out, metadata.name(), kind);
            out.push(b'"');
        });
        fields.write_to(out);
        out.extend_from_slice(b"}\n");
    }

    fn emit(&self, line: &[u8], metadata: &Metadata<'_>) {
        self.sink.write_line(line, metadata);
    }

    /// The OpenTelemetry ids of a new span, once the OpenTelemetry layer has created it.
    fn otel_ids(&self, id: &Id) -> Option<OtelIds> {
        let dispatch: Dispatch = self.dispatch.get()?.upgrade()?;
        // No span extensions may be held here: `get_otel_context` locks them itself.
        let context = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid().then(|| OtelIds {
            trace_id: span_context.trace_id().to_bytes(),
            span_id: span_context.span_id().to_bytes(),
            recording: span.is_recording(),
        })
    }
}

/// Writes `,"key":value` (or `"[REDACTED]"` when `denied`).
fn core_entry(out: &mut Vec<u8>, key: &str, denied: bool, value: impl FnOnce(&mut Vec<u8>)) {
    out.push(b',');
    write_str(out, key);
    out.push(b':');
    if denied {
        write_str(out, REDACTED);
    } else {
        value(out);
    }
}

/// Bunyan's numeric level.
fn bunyan_level(level: &Level) -> u16 {
    match *level {
        Level::ERROR => 50,
        Level::WARN => 40,
        Level::INFO => 30,
        Level::DEBUG => 20,
        _ => 10,
    }
}

/// `[NAME - KIND]`: the span name upper-cased, as tracing-bunyan-formatter wrote it, escaped
/// for a JSON string.
fn write_span_context(out: &mut Vec<u8>, name: &str, kind: &str) {
    out.push(b'[');
    if name.is_ascii() {
        let start = out.len();
        escape_into(out, name);
        if let Some(written) = out.get_mut(start..) {
            written.make_ascii_uppercase();
        }
    } else {
        escape_into(out, &name.to_uppercase());
    }
    out.extend_from_slice(b" - ");
    out.extend_from_slice(kind.as_bytes());
    out.push(b']');
}

/// OpenTelemetry ids of a span, as bytes.
#[derive(Debug, Clone, Copy)]
struct OtelIds {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// Whether the OpenTelemetry span records (it is sampled); its events are exported then.
    recording: bool,
}

/// What this layer keeps on each span.
#[derive(Debug)]
struct SpanState {
    fields: Fields,
    /// When the span was first entered, for `elapsed_milliseconds` on its END line.
    entered: Option<Instant>,
    /// False when the OpenTelemetry span is known not to record (not sampled).
    recording: bool,
}

/// The per-layer filter of the OpenTelemetry layer in the JSON pipeline: every span, and the
/// events of spans whose OpenTelemetry span records.
///
/// The OpenTelemetry layer turns each event inside a span into a span event (its fields
/// formatted into attributes) and then hands it to the span, which drops it when the span was
/// not sampled. With a 10% sampling ratio that was nine events built for nothing out of ten,
/// among them every access line. Events outside any span are left out too: the OpenTelemetry
/// layer ignores them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RecordingSpanEvents;

impl<S> tracing_subscriber::layer::Filter<S> for RecordingSpanEvents
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn enabled(&self, _metadata: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        // The span the OpenTelemetry layer would attach the event to.
        let span = event
            .parent()
            .and_then(|id| cx.span(id))
            .or_else(|| event.is_contextual().then(|| cx.lookup_current()).flatten());
        span.is_some_and(|span| {
            span.extensions()
                .get::<SpanState>()
                .is_none_or(|state| state.recording)
        })
    }
}

#[cfg(feature = "tower")]
/// Writes fields straight into the log fields of `span` when its OpenTelemetry span is known not
/// to record (not sampled), instead of recording them through `tracing`; false when that is not
/// the case (another subscriber, the pretty format, a sampled span): record them as usual then.
///
/// For such a span, a `tracing` record reaches every layer, and all the OpenTelemetry layer does
/// with it is build attributes that the unsampled span drops. The log lines come out the same.
pub(crate) fn unsampled_span_fields(
    span: &tracing::Span,
    write: impl FnOnce(&mut SpanFields<'_>),
) -> bool {
    span.with_subscriber(|(id, dispatch)| {
        let layer = dispatch.downcast_ref::<BunyanLayer>()?;
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let mut extensions = data.extensions_mut();
        let state = extensions
            .get_mut::<SpanState>()
            .filter(|state| !state.recording)?;
        write(&mut SpanFields {
            fields: &mut state.fields,
            redactor: &layer.redactor,
        });
        state.fields.compact_if_sparse();
        Some(())
    })
    .flatten()
    .is_some()
}

/// Per-thread buffers reused by every line.
#[derive(Debug, Default)]
struct Scratch {
    line: Vec<u8>,
    fields: Fields,
    message: Message,
}

impl Scratch {
    fn clear(&mut self) {
        if self.line.capacity() > KEEP_BUFFER_BYTES {
            *self = Self::default();
        } else {
            self.line.clear();
            self.fields.clear();
            self.message.text.clear();
            self.message.is_text = false;
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `work` with this thread's buffers, or fresh ones when they are in use (a line logged
/// while formatting another, from a `Debug` impl or the writer).
fn with_scratch(work: impl FnOnce(&mut Scratch)) {
    let mut work = Some(work);
    let _ = SCRATCH.try_with(|cell| {
        if let Ok(mut scratch) = cell.try_borrow_mut()
            && let Some(work) = work.take()
        {
            scratch.clear();
            work(&mut scratch);
            scratch.clear();
        }
    });
    if let Some(work) = work {
        work(&mut Scratch::default());
    }
}

impl<S> tracing_subscriber::Layer<S> for BunyanLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let ids = self.otel_ids(id);
        let Some(span) = ctx.span(id) else { return };
        let mut fields = span
            .parent()
            .and_then(|parent| {
                parent
                    .extensions()
                    .get::<SpanState>()
                    .map(|state| state.fields.with_room(attributes.fields().len() + 2))
            })
            .unwrap_or_else(|| Fields::with_capacity(attributes.fields().len() + 2));
        attributes.record(&mut Recorder {
            fields: &mut fields,
            redactor: &self.redactor,
            message: None,
        });
        if let Some(ids) = ids {
            fields.insert(&self.redactor, "trace_id", |out| {
                write_hex(out, &ids.trace_id)
            });
            fields.insert(&self.redactor, "span_id", |out| {
                write_hex(out, &ids.span_id)
            });
        }
        let metadata = span.metadata();
        if !is_request_span(metadata) {
            with_scratch(|scratch| {
                self.span_line(&mut scratch.line, metadata, "START", &fields);
                self.emit(&scratch.line, metadata);
            });
        }
        span.extensions_mut().insert(SpanState {
            fields,
            entered: None,
            recording: ids.is_none_or(|ids| ids.recording),
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        with_scratch(|scratch| {
            // Recorded outside the span's lock: `Debug` impls may do anything.
            values.record(&mut Recorder {
                fields: &mut scratch.fields,
                redactor: &self.redactor,
                message: None,
            });
            if let Some(state) = span.extensions_mut().get_mut::<SpanState>() {
                state.fields.merge(&scratch.fields);
            }
        });
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if is_request_span(span.metadata()) {
            return;
        }
        if let Some(state) = span.extensions_mut().get_mut::<SpanState>()
            && state.entered.is_none()
        {
            state.entered = Some(Instant::now());
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let metadata = span.metadata();
        if is_request_span(metadata) {
            return;
        }
        with_scratch(|scratch| {
            {
                let mut extensions = span.extensions_mut();
                let Some(state) = extensions.get_mut::<SpanState>() else {
                    return;
                };
                let elapsed = state.entered.map_or(0, |entered| {
                    u64::try_from(entered.elapsed().as_millis()).unwrap_or_default()
                });
                state
                    .fields
                    .insert(&self.redactor, "elapsed_milliseconds", |out| {
                        write_number(out, elapsed);
                    });
                self.span_line(&mut scratch.line, metadata, "END", &state.fields);
            }
            self.emit(&scratch.line, metadata);
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // As tracing-bunyan-formatter: the line carries the fields of the current span.
        let current = ctx.lookup_current();
        with_scratch(|scratch| {
            let Scratch {
                line,
                fields,
                message,
            } = scratch;
            event.record(&mut Recorder {
                fields,
                redactor: &self.redactor,
                message: Some(message),
            });
            let metadata = event.metadata();
            self.begin_line(line, metadata, |out| {
                out.push(b'"');
                if let Some(span) = &current {
                    write_span_context(out, span.name(), "EVENT");
                    out.push(b' ');
                }
                if message.is_text {
                    escape_into(out, &message.text);
                } else {
                    escape_into(out, metadata.target());
                }
                out.push(b'"');
            });
            fields.write_to(line);
            if let Some(span) = &current {
                write_span_fields(line, span);
            }
            line.extend_from_slice(b"}\n");
            self.emit(line, metadata);
        });
    }
}

fn write_span_fields<S>(out: &mut Vec<u8>, span: &SpanRef<'_, S>)
where
    S: for<'lookup> LookupSpan<'lookup>,
{
    if let Some(state) = span.extensions().get::<SpanState>() {
        state.fields.write_to(out);
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex, PoisonError};

    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::{BunyanLayer, Redactor};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl io::Write for Capture {
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
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[derive(Debug)]
    #[expect(dead_code, reason = "read through `Debug` only")]
    struct Custom {
        quote: &'static str,
    }

    /// Every kind of line and field the formatter meets.
    fn scenario() {
        tracing::info!("plain \"quoted\" \\ line\twith\ncontrols \u{1} and ünïcödé");
        tracing::warn!(
            count = -3_i64,
            total = 7_u64,
            ratio = 0.25_f64,
            whole = 2.0_f64,
            not_a_number = f64::NAN,
            flag = true,
            text = "a \"b\"",
            custom = ?Custom { quote: "\"x\"" },
            shown = %"display",
            big = 340_282_366_920_938_463_463_374_607_431_768_211_455_u128,
            r#type = ?"raw",
            log.ignored = ?"skipped",
            name = "not the service name",
            "fields of every type"
        );
        tracing::error!(message = 42_i64, answer = 1);
        tracing::debug!(no_message = 1);
        let outer = tracing::info_span!("outer_span", shared = "outer", only_outer = 1);
        outer.in_scope(|| {
            tracing::info!(shared = "event", "in the outer span");
            let inner = tracing::warn_span!(
                "größe",
                shared = "inner",
                later = tracing::field::Empty,
                msg = "dropped"
            );
            inner.in_scope(|| {
                tracing::info!("in the inner span");
                inner.record("later", "recorded");
                inner.record("shared", 5);
                tracing::info!(parent: None, "explicit root, still the current span's fields");
            });
            drop(inner);
        });
        drop(outer);
        let never_entered = tracing::info_span!("never_entered", x = 1);
        drop(never_entered);
    }

    fn run(dispatch: &tracing::Dispatch) {
        tracing::dispatcher::with_default(dispatch, scenario);
    }

    /// A line with its `time` value replaced, to compare the rest byte for byte.
    fn without_time(line: &str) -> (String, String) {
        let key = "\"time\":\"";
        let start = line.find(key).map(|index| index + key.len()).expect("time");
        let end = line[start..]
            .find('"')
            .map(|length| start + length)
            .expect("end");
        (
            format!("{}TIME{}", &line[..start], &line[end..]),
            line[start..end].to_owned(),
        )
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the fraction without trailing zeros.
    fn is_rfc3339_utc(time: &str) -> bool {
        let bytes = time.as_bytes();
        let digits = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
        };
        let fraction = time.get(19..time.len().saturating_sub(1)).unwrap_or("");
        digits(0..4)
            && digits(5..7)
            && digits(8..10)
            && digits(11..13)
            && digits(14..16)
            && digits(17..19)
            && time.get(4..5) == Some("-")
            && time.get(10..11) == Some("T")
            && time.ends_with('Z')
            && (fraction.is_empty()
                || (fraction.len() <= 10
                    && fraction.starts_with('.')
                    && fraction[1..].bytes().all(|byte| byte.is_ascii_digit())
                    && !fraction.ends_with('0')))
    }

    #[test]
    fn lines_match_tracing_bunyan_formatter() {
        let theirs = Capture::default();
        let ours = Capture::default();
        run(&tracing::Dispatch::new(
            tracing_subscriber::Registry::default()
                .with(tracing_bunyan_formatter::JsonStorageLayer)
                .with(tracing_bunyan_formatter::BunyanFormattingLayer::new(
                    "svc \"q\"".to_owned(),
                    theirs.clone(),
                )),
        ));
        run(&tracing::Dispatch::new(
            tracing_subscriber::Registry::default().with(BunyanLayer::new(
                "svc \"q\"",
                ours.clone(),
                Redactor::new(&[]),
            )),
        ));
        let (theirs, ours) = (theirs.lines(), ours.lines());
        assert_eq!(theirs.len(), ours.len(), "{theirs:#?}\n{ours:#?}");
        assert_eq!(ours.len(), 13, "{ours:#?}");
        for (their_line, our_line) in theirs.iter().zip(&ours) {
            let mut their_value: Value = serde_json::from_str(their_line).expect("their JSON");
            let mut our_value: Value = serde_json::from_str(our_line).expect("our JSON");
            // Same time format (their clock read is another one).
            let (their_rest, their_time) = without_time(their_line);
            let (our_rest, our_time) = without_time(our_line);
            assert!(is_rfc3339_utc(&their_time), "{their_time}");
            assert!(is_rfc3339_utc(&our_time), "{our_time}");
            their_value["time"] = Value::Null;
            our_value["time"] = Value::Null;
            // A span's duration is measured by each layer's own clock reads: both whole
            // milliseconds, on the same lines, not the same number (one run may cross a
            // millisecond boundary the other does not).
            for value in [&mut their_value, &mut our_value] {
                if let Some(elapsed) = value.get_mut("elapsed_milliseconds") {
                    assert!(elapsed.is_u64(), "{elapsed}");
                    *elapsed = Value::Null;
                }
            }
            assert_eq!(
                their_value, our_value,
                "\ntheirs {their_line}\nours   {our_line}"
            );
            // With at most one extra field, the order is fixed: the lines are byte-identical.
            let core = 10;
            if our_value
                .as_object()
                .is_some_and(|map| map.len() <= core + 1)
                && our_value.get("elapsed_milliseconds").is_none()
            {
                assert_eq!(their_rest, our_rest);
            }
        }
    }

    #[test]
    fn denied_fields_and_core_fields_are_redacted_when_recorded() {
        let logs = Capture::default();
        let redactor = Redactor::new(&["target".to_owned(), "cookie".to_owned()]);
        let dispatch = tracing::Dispatch::new(
            tracing_subscriber::Registry::default().with(BunyanLayer::new(
                "svc",
                logs.clone(),
                redactor,
            )),
        );
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("s", http.cookie = tracing::field::Empty);
            span.record("http.cookie", "secret-1");
            span.in_scope(|| tracing::info!(Cookie = ?"secret-2", "hello"));
        });
        let text = logs.lines().join("\n");
        assert!(!text.contains("secret"), "{text}");
        let event: Value = serde_json::from_str(&logs.lines()[1]).expect("json");
        assert_eq!(event["target"], "[REDACTED]");
        assert_eq!(event["Cookie"], "[REDACTED]");
        assert_eq!(event["http.cookie"], "[REDACTED]");
        assert_eq!(event["msg"], "[S - EVENT] hello");
    }
}
