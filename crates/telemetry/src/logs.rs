//! Log lines: OpenTelemetry ids on bunyan records, field redaction, and error source chains.
//!
//! The JSON pipeline is `registry → OpenTelemetry layer → JsonStorageLayer → OtelIdsLayer →
//! BunyanFormattingLayer(RedactingMakeWriter)`. `OtelIdsLayer` writes `trace_id` and `span_id`
//! into each span's bunyan field storage as the span is created, so the span's START line, its
//! events and its END line all carry them. Bunyan has no hook for field values, so redaction
//! happens in the writer: every record arrives as one complete JSON line, which is re-parsed and
//! rewritten only when it may hold a denied field name.

use std::error::Error;
use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::callsite::{Callsite, Identifier};
use tracing::field::{Field, FieldSet, Visit};
use tracing::metadata::Kind;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Level, Metadata, Subscriber};
use tracing_bunyan_formatter::JsonStorage;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The value written in place of a redacted field.
pub const REDACTED: &str = "[REDACTED]";

/// Displays an error followed by its whole `source()` chain: `outer: middle: root`.
///
/// `tracing` records an error field with its `Display` only, which drops the causes. Record
/// errors through this wrapper so the log line keeps them:
///
/// ```
/// use mainstay_telemetry::ErrorChain;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("loading the catalogue failed")]
/// struct Load(#[source] std::io::Error);
///
/// let error = Load(std::io::Error::other("disk full"));
/// assert_eq!(ErrorChain(&error).to_string(), "loading the catalogue failed: disk full");
/// tracing::error!(error = %ErrorChain(&error), "request failed");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(formatter, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

/// Matches field names against the deny-list.
#[derive(Debug, Clone)]
pub(crate) struct Redactor {
    /// Lower-cased deny-list entries.
    denied: Arc<[String]>,
}

impl Redactor {
    pub(crate) fn new(fields: &[String]) -> Self {
        Self {
            denied: fields
                .iter()
                .map(|field| field.trim().to_ascii_lowercase())
                .filter(|field| !field.is_empty())
                .collect(),
        }
    }

    /// Whether a field named `key` must be redacted: the whole name or its last dot-separated
    /// segment equals a deny-list entry, ignoring ASCII case.
    pub(crate) fn is_denied(&self, key: &str) -> bool {
        let last_segment = key.rsplit('.').next().unwrap_or(key);
        self.denied.iter().any(|denied| {
            key.eq_ignore_ascii_case(denied) || last_segment.eq_ignore_ascii_case(denied)
        })
    }

    /// A cheap pre-check: false when the line holds no JSON key that could be denied, so it
    /// needs no parsing. A candidate is a deny-list entry (ignoring ASCII case) that starts
    /// right after a `"` or a `.` and is followed by a `"`: a whole key or its last segment.
    /// One pass over the line, comparing only at quotes and dots.
    fn may_match(&self, line: &[u8]) -> bool {
        line.iter().enumerate().any(|(index, byte)| {
            (*byte == b'"' || *byte == b'.')
                && line.get(index + 1..).is_some_and(|rest| {
                    self.denied.iter().any(|denied| {
                        let needle = denied.as_bytes();
                        rest.len() > needle.len()
                            && rest.get(needle.len()) == Some(&b'"')
                            && rest
                                .get(..needle.len())
                                .is_some_and(|candidate| candidate.eq_ignore_ascii_case(needle))
                    })
                })
        })
    }

    /// Rewrites a JSON line with denied fields redacted; `None` when nothing had to change or
    /// the line is not a JSON object.
    fn redact_line(&self, line: &[u8]) -> Option<Vec<u8>> {
        let mut record: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(line).ok()?;
        if !self.redact_map(&mut record) {
            return None;
        }
        let mut out = serde_json::to_vec(&record).ok()?;
        out.push(b'\n');
        Some(out)
    }

    fn redact_map(&self, map: &mut serde_json::Map<String, serde_json::Value>) -> bool {
        let mut changed = false;
        for (key, value) in map.iter_mut() {
            if self.is_denied(key) {
                *value = serde_json::Value::String(REDACTED.to_owned());
                changed = true;
            } else if let serde_json::Value::Object(inner) = value {
                changed |= self.redact_map(inner);
            }
        }
        changed
    }
}

/// A `MakeWriter` whose writers redact denied fields of each JSON line before passing it on.
#[derive(Debug)]
pub(crate) struct RedactingMakeWriter<M> {
    inner: M,
    redactor: Redactor,
}

impl<M> RedactingMakeWriter<M> {
    pub(crate) fn new(inner: M, redactor: Redactor) -> Self {
        Self { inner, redactor }
    }
}

impl<'a, M> MakeWriter<'a> for RedactingMakeWriter<M>
where
    M: MakeWriter<'a>,
{
    type Writer = RedactingWriter<'a, M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.inner.make_writer(),
            redactor: &self.redactor,
            pending: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        RedactingWriter {
            inner: self.inner.make_writer_for(meta),
            redactor: &self.redactor,
            pending: Vec::new(),
        }
    }
}

/// One record's writer: buffers until a full line is seen, then writes it redacted.
#[derive(Debug)]
pub(crate) struct RedactingWriter<'a, W: Write> {
    inner: W,
    redactor: &'a Redactor,
    pending: Vec<u8>,
}

impl<W: Write> RedactingWriter<'_, W> {
    fn emit(&mut self, line: &[u8]) -> io::Result<()> {
        if self.redactor.may_match(line)
            && let Some(redacted) = self.redactor.redact_line(line)
        {
            return self.inner.write_all(&redacted);
        }
        self.inner.write_all(line)
    }
}

impl<W: Write> Write for RedactingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() && buf.ends_with(b"\n") {
            // Bunyan writes each record with one `write_all` of a complete line: the fast path.
            self.emit(buf)?;
        } else {
            self.pending.extend_from_slice(buf);
            if self.pending.ends_with(b"\n") {
                let line = std::mem::take(&mut self.pending);
                self.emit(&line)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<'_, W> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            // A write error has nowhere to go from a drop; the record is lost either way.
            let _ = self.emit(&line);
        }
    }
}

/// Bytes waiting for the log writer thread before loggers block.
const QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// Pause of the log writer thread after each write, to batch lines.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// How often an idle log writer thread checks whether its loggers are gone.
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// The queue between loggers and the log writer thread: one growing byte buffer, so queueing a
/// line is one copy under a short lock, with no allocation and, under load, no wake-up.
#[derive(Debug, Default)]
struct Queue {
    state: std::sync::Mutex<QueueState>,
    /// Signalled when bytes arrive for a waiting writer thread.
    work: std::sync::Condvar,
    /// Signalled when the writer thread has taken bytes (space freed, flushes progressed).
    progress: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    buffer: Vec<u8>,
    /// Total bytes queued and total bytes written, for flushes.
    queued: u64,
    written: u64,
    writer_waiting: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut state = self.lock();
        while state.buffer.len() >= QUEUE_BYTES {
            // The destination is slower than the loggers: wait rather than drop lines.
            state = self
                .progress
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.buffer.extend_from_slice(line);
        state.queued += line.len() as u64;
        if state.writer_waiting {
            state.writer_waiting = false;
            self.work.notify_one();
        }
    }
}

/// A `MakeWriter` that hands each record to the log writer thread, so that no runtime worker
/// blocks on stdout or a file. Records keep their order; when 8 MiB are queued, loggers wait:
/// lines are never dropped.
#[derive(Debug, Clone)]
pub(crate) struct NonBlocking {
    queue: Arc<Queue>,
}

/// The handle of the log writer thread, kept by the guard to flush it.
#[derive(Debug)]
pub(crate) struct LogWorker {
    queue: Arc<Queue>,
}

impl LogWorker {
    /// Waits until every line queued before this call is written and flushed, at most
    /// `timeout`. False when the writer thread is too slow.
    pub(crate) fn flush(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.queue.lock();
        let target = state.queued;
        if state.writer_waiting {
            state.writer_waiting = false;
            self.queue.work.notify_one();
        }
        while state.written < target {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .queue
                .progress
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        true
    }
}

/// Starts the log writer thread over `writer`. It stops once every handle is dropped.
pub(crate) fn non_blocking<W>(writer: W) -> io::Result<(NonBlocking, LogWorker)>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let queue = Arc::new(Queue::default());
    let shared = Arc::clone(&queue);
    std::thread::Builder::new()
        .name("mainstay-log-writer".to_owned())
        .spawn(move || {
            let mut batch = Vec::new();
            loop {
                {
                    let mut state = shared.lock();
                    while state.buffer.is_empty() {
                        if Arc::strong_count(&shared) == 1 {
                            return;
                        }
                        state.writer_waiting = true;
                        state = shared
                            .work
                            .wait_timeout(state, IDLE_CHECK)
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .0;
                    }
                    std::mem::swap(&mut batch, &mut state.buffer);
                }
                // A failed write has nowhere to be reported; those lines are lost.
                let mut out = writer.make_writer();
                let _ = out.write_all(&batch);
                let _ = out.flush();
                drop(out);
                let mut state = shared.lock();
                state.written += batch.len() as u64;
                shared.progress.notify_all();
                drop(state);
                batch.clear();
                // Let lines gather before the next batch: under load this turns a wake-up and
                // a write per line into one per millisecond, at the cost of 1 ms of log delay.
                std::thread::sleep(BATCH_PAUSE);
            }
        })?;
    Ok((
        NonBlocking {
            queue: Arc::clone(&queue),
        },
        LogWorker { queue },
    ))
}

impl<'a> MakeWriter<'a> for NonBlocking {
    type Writer = NonBlockingWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        NonBlockingWriter { queue: &self.queue }
    }
}

/// One record's writer: each write is queued as it is (the redacting writer above it writes
/// whole lines).
#[derive(Debug)]
pub(crate) struct NonBlockingWriter<'a> {
    queue: &'a Queue,
}

impl Write for NonBlockingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.queue.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs the bunyan layer, except for the START and END records of the request span: the
/// request's access line carries the same fields, so each request writes one line
/// (docs/decisions/0041). Bunyan implements only these three callbacks.
#[derive(Debug)]
pub(crate) struct SkipRequestSpanLines<L>(pub(crate) L);

fn is_request_span(metadata: &Metadata<'_>) -> bool {
    metadata.target() == crate::http::REQUEST_SPAN_TARGET
}

impl<S, L> tracing_subscriber::Layer<S> for SkipRequestSpanLines<L>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    L: tracing_subscriber::Layer<S>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx);
    }

    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !is_request_span(attributes.metadata()) {
            self.0.on_new_span(attributes, id, ctx);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let skip = ctx
            .metadata(&id)
            .is_some_and(|metadata| is_request_span(metadata));
        if !skip {
            self.0.on_close(id, ctx);
        }
    }
}

/// A field formatter for the pretty format that prints denied fields as `[REDACTED]`.
pub(crate) fn pretty_fields(
    redactor: Redactor,
) -> impl for<'writer> tracing_subscriber::fmt::FormatFields<'writer> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(
        move |writer: &mut tracing_subscriber::fmt::format::Writer<'_>,
              field: &Field,
              value: &dyn fmt::Debug| {
            if redactor.is_denied(field.name()) {
                write!(writer, "{}={REDACTED}", field.name())
            } else if field.name() == "message" {
                write!(writer, "{value:?}")
            } else {
                write!(writer, "{}={value:?}", field.name())
            }
        },
    )
    .delimited(" ")
}

/// The hand-written callsite that owns the `trace_id` and `span_id` fields: a `Field` can only
/// come from a callsite's metadata, and `JsonStorage` is written through its `Visit` impl.
struct IdsCallsite;

static IDS_CALLSITE: IdsCallsite = IdsCallsite;

static IDS_METADATA: Metadata<'static> = Metadata::new(
    "otel_ids",
    "mainstay_telemetry",
    Level::TRACE,
    None,
    None,
    None,
    FieldSet::new(&["trace_id", "span_id"], Identifier(&IDS_CALLSITE)),
    Kind::SPAN,
);

impl Callsite for IdsCallsite {
    fn set_interest(&self, _interest: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        &IDS_METADATA
    }
}

/// Writes the OpenTelemetry `trace_id` and `span_id` of each new span into its bunyan storage.
///
/// Must sit after `JsonStorageLayer` (which creates the storage) and before the bunyan layer
/// (which prints the START line) in the layer stack.
#[derive(Debug, Default)]
pub(crate) struct OtelIdsLayer {
    // In a layer callback `dispatcher::get_default` is the no-op dispatch, so the dispatch this
    // layer belongs to is kept from registration; weak, as the dispatch owns the layer.
    dispatch: OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<S> tracing_subscriber::Layer<S> for OtelIdsLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, _attributes: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(dispatch) = self.dispatch.get().and_then(|weak| weak.upgrade()) else {
            return;
        };
        // No span extensions may be held here: `get_otel_context` locks them itself.
        let Some(otel_context) = tracing_opentelemetry::get_otel_context(id, &dispatch) else {
            return;
        };
        let span_context = otel_context.span().span_context().clone();
        if !span_context.is_valid() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(storage) = extensions.get_mut::<JsonStorage<'static>>() {
            let mut fields = IDS_METADATA.fields().iter();
            if let (Some(trace_field), Some(span_field)) = (fields.next(), fields.next()) {
                storage.record_str(&trace_field, &span_context.trace_id().to_string());
                storage.record_str(&span_field, &span_context.span_id().to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Redactor;

    #[test]
    fn the_pre_check_finds_whole_keys_and_last_segments_only() {
        let redactor = Redactor::new(&["token".to_owned(), "set-cookie".to_owned()]);
        assert!(redactor.may_match(br#"{"token":"x"}"#));
        assert!(redactor.may_match(br#"{"TOKEN":"x"}"#));
        assert!(redactor.may_match(br#"{"http.set-cookie":"x"}"#));
        assert!(!redactor.may_match(br#"{"tokens":"x","msg":"a token"}"#));
        assert!(!redactor.may_match(br#"{"my_token":"x"}"#));
        assert!(!redactor.may_match(b"token"));
    }
}
