//! Log lines: field redaction, the non-blocking writer of `init`, the pretty format's fields,
//! and error source chains. The JSON lines themselves are written by [`crate::bunyan`].

use std::error::Error;
use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use tracing::field::Field;
use tracing_subscriber::fmt::MakeWriter;

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
    /// For each lower-cased first byte, bit `n` set when an entry starting with that byte is
    /// `n` bytes long (bit 63: 63 or more): most names are cleared by one look-up.
    starts: Arc<[u64; 256]>,
}

impl Redactor {
    pub(crate) fn new(fields: &[String]) -> Self {
        let denied: Arc<[String]> = fields
            .iter()
            .map(|field| field.trim().to_ascii_lowercase())
            .filter(|field| !field.is_empty())
            .collect();
        let mut starts = [0_u64; 256];
        for field in denied.iter() {
            if let Some(first) = field.bytes().next() {
                starts[usize::from(first)] |= Self::length_bit(field);
            }
        }
        Self {
            denied,
            starts: Arc::new(starts),
        }
    }

    fn length_bit(name: &str) -> u64 {
        1 << name.len().min(63)
    }

    fn matches(&self, name: &str) -> bool {
        let Some(first) = name.bytes().next() else {
            return false;
        };
        self.starts[usize::from(first.to_ascii_lowercase())] & Self::length_bit(name) != 0
            && self
                .denied
                .iter()
                .any(|denied| name.eq_ignore_ascii_case(denied))
    }

    /// Whether a field named `key` must be redacted: the whole name or its last dot-separated
    /// segment equals a deny-list entry, ignoring ASCII case.
    pub(crate) fn is_denied(&self, key: &str) -> bool {
        let last_segment = match key.bytes().rposition(|byte| byte == b'.') {
            Some(dot) => key.get(dot + 1..).unwrap_or(key),
            None => key,
        };
        self.matches(key) || (last_segment.len() != key.len() && self.matches(last_segment))
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

#[cfg(test)]
mod tests {
    use super::Redactor;

    #[test]
    fn whole_names_and_last_segments_match_without_case() {
        let redactor = Redactor::new(&[
            " Token ".to_owned(),
            "set-cookie".to_owned(),
            "http.auth".to_owned(),
            "a".repeat(80),
        ]);
        for denied in [
            "token",
            "TOKEN",
            "x.token",
            "a.b.Set-Cookie",
            "Token",
            "http.auth",
            "HTTP.AUTH",
            &"A".repeat(80),
            &format!("x.{}", "a".repeat(80)),
        ] {
            assert!(redactor.is_denied(denied), "{denied}");
        }
        for kept in [
            "tokens",
            "my_token",
            "token.x",
            "auth",
            "x.http.auth2",
            "",
            ".",
            &"a".repeat(79),
        ] {
            assert!(!redactor.is_denied(kept), "{kept}");
        }
        assert!(!Redactor::new(&[]).is_denied("password"));
    }
}
