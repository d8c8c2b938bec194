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

/// The patterns every redactor applies, whatever the configured list says: any name holding
/// `token`, `secret`, `password`, `passwd`, `api_key` or `apikey`, and the header names
/// `authorization`, `cookie` and `set-cookie` (as whole names or last dot-separated segments).
pub const BUILT_IN_REDACT_PATTERNS: &[&str] = &[
    "*token*",
    "*secret*",
    "*password*",
    "*passwd*",
    "*api_key*",
    "*apikey*",
    "authorization",
    "cookie",
    "set-cookie",
];

/// Matches field names against redaction patterns.
///
/// Names and patterns are compared normalised: ASCII lower case, `-` read as `_` (so
/// `X-Api-Key`, `x_api_key` and `X_API_KEY` are one name). A pattern without `*` matches the
/// whole name or its last dot-separated segment (`http.request.header.authorization` matches
/// `authorization`); `*` matches any run of characters, against the whole name and the last
/// segment (`*token*` matches `access_token` and `http.token_type`).
#[derive(Debug, Clone)]
pub(crate) struct Redactor {
    patterns: Arc<[Pattern]>,
    /// Tells redactors apart in the per-thread cache of [`Redactor::is_denied_static`].
    id: u64,
}

/// Slots of the per-thread cache of decisions for `'static` field names.
const CACHE_SLOTS: usize = 128;

/// One cached decision: redactor id, name address, name length, decision.
type CacheEntry = (u64, usize, usize, bool);

thread_local! {
    static DECISIONS: std::cell::RefCell<[CacheEntry; CACHE_SLOTS]> =
        const { std::cell::RefCell::new([(0, 0, 0, false); CACHE_SLOTS]) };
}

static NEXT_REDACTOR_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Debug)]
enum Pattern {
    /// No `*`: the whole normalised name.
    Exact(Vec<u8>),
    /// `*text*`: anywhere in the name (the most common shape, matched without the general
    /// glob).
    Contains(Vec<u8>),
    /// Parts between `*`s; whether the pattern starts and ends with one.
    Glob {
        parts: Vec<Vec<u8>>,
        open_start: bool,
        open_end: bool,
    },
}

/// A name byte as the patterns see it.
const fn normal(byte: u8) -> u8 {
    match byte {
        b'-' => b'_',
        other => other.to_ascii_lowercase(),
    }
}

fn normalised(text: &str) -> Vec<u8> {
    text.trim().bytes().map(normal).collect()
}

impl Pattern {
    fn parse(text: &str) -> Option<Self> {
        let text = normalised(text);
        if text.is_empty() || text.iter().all(|b| *b == b'*') {
            return None;
        }
        if !text.contains(&b'*') {
            return Some(Pattern::Exact(text));
        }
        let parts: Vec<Vec<u8>> = text
            .split(|b| *b == b'*')
            .filter(|part| !part.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let open_start = text.first() == Some(&b'*');
        let open_end = text.last() == Some(&b'*');
        if open_start && open_end && parts.len() == 1 {
            return parts.into_iter().next().map(Pattern::Contains);
        }
        Some(Pattern::Glob {
            parts,
            open_start,
            open_end,
        })
    }

    /// Whether the normalised `name` matches.
    fn matches(&self, name: &[u8]) -> bool {
        match self {
            Pattern::Exact(text) => name == text.as_slice(),
            Pattern::Contains(text) => find(name, text).is_some(),
            Pattern::Glob {
                parts,
                open_start,
                open_end,
            } => glob(name, parts, *open_start, *open_end),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > haystack.len() {
        return None;
    }
    let (&first, rest) = needle.split_first()?;
    // The first byte decides most windows without a slice comparison.
    haystack
        .windows(needle.len())
        .position(|window| window[0] == first && &window[1..] == rest)
}

/// Matches `name` against `*`-separated `parts` (greedy left to right is exact for `*` alone).
fn glob(name: &[u8], parts: &[Vec<u8>], open_start: bool, open_end: bool) -> bool {
    let mut rest = name;
    for (index, part) in parts.iter().enumerate() {
        let anchored_start = index == 0 && !open_start;
        let last = index + 1 == parts.len();
        if last && !open_end {
            // The last part must end the name (and still follow what came before).
            if rest.len() < part.len() || !rest.ends_with(part) {
                return false;
            }
            return !anchored_start || rest.len() == part.len();
        }
        if anchored_start {
            let Some(after) = rest.strip_prefix(part.as_slice()) else {
                return false;
            };
            rest = after;
        } else {
            let Some(at) = find(rest, part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// Whether a field or setting named `name` holds a secret by the built-in patterns
/// ([`BUILT_IN_REDACT_PATTERNS`]): what the logs redact, for other places that print names and
/// values (a configuration dump).
///
/// ```
/// assert!(mainstay_telemetry::is_secret_name("client-secret"));
/// assert!(mainstay_telemetry::is_secret_name("redis.password"));
/// assert!(!mainstay_telemetry::is_secret_name("redis.url"));
/// ```
#[must_use]
pub fn is_secret_name(name: &str) -> bool {
    static BUILT_IN: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
    BUILT_IN.get_or_init(|| Redactor::new(&[])).is_denied(name)
}

/// Names up to this long are normalised on the stack.
const INLINE_NAME: usize = 64;

impl Redactor {
    /// The built-in patterns plus `extra` (blank entries are ignored; validation refuses them).
    pub(crate) fn new(extra: &[String]) -> Self {
        let patterns: Arc<[Pattern]> = BUILT_IN_REDACT_PATTERNS
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
            .filter_map(Pattern::parse)
            .collect();
        let id = NEXT_REDACTOR_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self { patterns, id }
    }

    /// [`is_denied`](Self::is_denied) for a name that lives as long as the program (a `tracing`
    /// field name): the decision is cached per thread by the name's address, which no other
    /// name can ever have, so a field costs one look-up after its first use.
    pub(crate) fn is_denied_static(&self, name: &'static str) -> bool {
        let address = name.as_ptr() as usize;
        let slot = ((address >> 3) ^ (address >> 11)) % CACHE_SLOTS;
        DECISIONS.with(|cache| {
            let mut cache = cache.borrow_mut();
            let entry = &mut cache[slot];
            if entry.0 == self.id && entry.1 == address && entry.2 == name.len() {
                return entry.3;
            }
            let denied = self.is_denied(name);
            *entry = (self.id, address, name.len(), denied);
            denied
        })
    }

    fn matches(&self, name: &[u8]) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(name))
    }

    /// Whether a field named `key` must be redacted: its normalised whole name or last
    /// dot-separated segment matches a pattern.
    pub(crate) fn is_denied(&self, key: &str) -> bool {
        let mut inline = [0_u8; INLINE_NAME];
        let heap: Vec<u8>;
        let name: &[u8] = if key.len() <= INLINE_NAME {
            for (slot, byte) in inline.iter_mut().zip(key.bytes()) {
                *slot = normal(byte);
            }
            &inline[..key.len()]
        } else {
            heap = key.bytes().map(normal).collect();
            &heap
        };
        if name.is_empty() {
            return false;
        }
        if self.matches(name) {
            return true;
        }
        match name.iter().rposition(|byte| *byte == b'.') {
            Some(dot) if dot + 1 < name.len() => self.matches(&name[dot + 1..]),
            _ => false,
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

/// A field formatter for the pretty format that prints denied fields as `[REDACTED]`.
pub(crate) fn pretty_fields(
    redactor: Redactor,
) -> impl for<'writer> tracing_subscriber::fmt::FormatFields<'writer> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(
        move |writer: &mut tracing_subscriber::fmt::format::Writer<'_>,
              field: &Field,
              value: &dyn fmt::Debug| {
            if redactor.is_denied_static(field.name()) {
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
        let redactor = Redactor::new(&[" Ssn ".to_owned(), "http.auth".to_owned(), "a".repeat(80)]);
        for denied in [
            "ssn",
            "SSN",
            "x.ssn",
            "a.b.Set-Cookie",
            "http.auth",
            "HTTP.AUTH",
            &"A".repeat(80),
            &format!("x.{}", "a".repeat(80)),
        ] {
            assert!(redactor.is_denied(denied), "{denied}");
        }
        for kept in [
            "ssns",
            "my_ssn",
            "ssn.x",
            "auth",
            "x.http.auth2",
            "",
            ".",
            "x.",
            &"a".repeat(79),
        ] {
            assert!(!redactor.is_denied(kept), "{kept}");
        }
    }

    /// Issue 15, point 5: names spelled otherwise than the list are redacted by pattern.
    #[test]
    fn built_in_patterns_catch_secrets_however_they_are_spelled() {
        let redactor = Redactor::new(&[]);
        for denied in [
            "access_token",
            "refresh-token",
            "Token",
            "client_secret",
            "CLIENT-SECRET",
            "db_password",
            "DB-Password",
            "passwd",
            "x-api-key",
            "X-Api-Key",
            "x_apikey",
            "Authorization",
            "http.request.header.authorization",
            "cookie",
            "Set-Cookie",
            "set_cookie",
            "http.request.header.x-api-key",
            &format!("{}_token", "a".repeat(70)),
        ] {
            assert!(redactor.is_denied(denied), "{denied}");
        }
        for kept in [
            "user",
            "api",
            "key",
            "authorized",
            "cookies_accepted",
            "credential_sha256",
            "http.route",
            "passage",
        ] {
            assert!(!redactor.is_denied(kept), "{kept}");
        }
    }

    /// The per-thread cache answers for the redactor that asked: two redactors that disagree on
    /// a name keep disagreeing, however often and in whichever order they ask.
    #[test]
    fn cached_decisions_belong_to_their_redactor() {
        let strict = Redactor::new(&["ssn".to_owned()]);
        let lenient = Redactor::new(&[]);
        for _ in 0..3 {
            assert!(strict.is_denied_static("ssn"));
            assert!(!lenient.is_denied_static("ssn"));
            assert!(strict.is_denied_static("access_token"));
            assert!(lenient.is_denied_static("access_token"));
            assert!(!strict.is_denied_static("route"));
        }
        // Many names share the slots: every answer still matches the uncached one.
        let names: Vec<&'static str> = (0..1000)
            .map(|n| {
                let name = if n % 2 == 0 {
                    format!("field_{n}_token")
                } else {
                    format!("field_{n}")
                };
                &*Box::leak(name.into_boxed_str())
            })
            .collect();
        let denied = names.iter().filter(|name| strict.is_denied(name)).count();
        assert_eq!(denied, 500, "half the names hold a secret");
        for name in names.iter().chain(names.iter()) {
            assert_eq!(
                strict.is_denied_static(name),
                strict.is_denied(name),
                "{name}"
            );
        }
    }

    #[test]
    fn configured_globs_anchor_where_they_have_no_star() {
        let redactor = Redactor::new(&[
            "x_*".to_owned(),
            "*_pin".to_owned(),
            "card*number".to_owned(),
            "**".to_owned(),
        ]);
        for denied in [
            "X-Trace",
            "x_",
            "user_pin",
            "USER-PIN",
            "card_number",
            "cardnumber",
            "a.card-no-number",
        ] {
            assert!(redactor.is_denied(denied), "{denied}");
        }
        for kept in [
            "ax_b",
            "pin_user",
            "card_number_2",
            "my_card_number",
            "user",
        ] {
            assert!(!redactor.is_denied(kept), "{kept}");
        }
    }
}
