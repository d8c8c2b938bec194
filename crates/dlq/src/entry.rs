//! Entries: what a DLQ holds, what a pusher hands in, and the JSON views of both.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// Schema version written with every entry.
pub const SCHEMA_VERSION: u16 = 1;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// Longest error message kept, in bytes; longer messages are cut at a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Longest pinned file path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// The id of an entry: a ULID, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(Ulid);

impl EntryId {
    pub(crate) fn from_ulid(ulid: Ulid) -> Self {
        Self(ulid)
    }

    pub(crate) fn ulid(self) -> Ulid {
        self.0
    }

    /// The time encoded in the id (when the entry was first pushed).
    #[must_use]
    pub fn created_at(&self) -> SystemTime {
        self.0.datetime()
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for EntryId {
    type Err = InvalidEntryId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s)
            .map(Self)
            .map_err(|_| InvalidEntryId(s.chars().take(64).collect()))
    }
}

/// A string that is not an entry id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid entry id {0:?}: expected a 26-character ULID")]
pub struct InvalidEntryId(String);

/// Why the work failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// A failure that may pass (a timeout, an unavailable dependency).
    Transient,
    /// A failure that will not pass by retrying (a validation error).
    Permanent,
    /// Retries ran out.
    Exhausted,
    /// The input itself makes the consumer fail.
    Poisoned,
}

impl FailureClass {
    /// The snake_case name used in labels and JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Exhausted => "exhausted",
            Self::Poisoned => "poisoned",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Transient => 1,
            Self::Permanent => 2,
            Self::Exhausted => 3,
            Self::Poisoned => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Transient),
            2 => Some(Self::Permanent),
            3 => Some(Self::Exhausted),
            4 => Some(Self::Poisoned),
            _ => None,
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Inline payload bytes with their CRC-32C.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlinePayload {
    data: Bytes,
    crc32c: u32,
}

impl InlinePayload {
    /// Wraps `data`, computing its checksum.
    #[must_use]
    pub fn new(data: Bytes) -> Self {
        let crc32c = crc32c::crc32c(&data);
        Self { data, crc32c }
    }

    pub(crate) fn from_parts(data: Bytes, crc32c: u32) -> Self {
        Self { data, crc32c }
    }

    /// The payload bytes.
    #[must_use]
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The CRC-32C of the payload.
    #[must_use]
    pub fn crc32c(&self) -> u32 {
        self.crc32c
    }

    /// Whether the bytes still match the checksum.
    #[must_use]
    pub fn verify(&self) -> bool {
        crc32c::crc32c(&self.data) == self.crc32c
    }
}

/// A local file the owner keeps pinned until the entry is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedFile {
    /// Where the file is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its CRC-32C.
    pub crc32c: u32,
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Bytes held by the DLQ.
    Inline(InlinePayload),
    /// A reference to a pinned local file.
    File(PinnedFile),
}

impl Payload {
    /// Bytes held in memory for this payload (0 for a file reference).
    #[must_use]
    pub fn inline_len(&self) -> u64 {
        match self {
            Self::Inline(inline) => inline.data.len() as u64,
            Self::File(_) => 0,
        }
    }
}

/// One dead-lettered piece of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub(crate) id: EntryId,
    pub(crate) queue: String,
    pub(crate) key: String,
    pub(crate) payload: Payload,
    pub(crate) error_class: FailureClass,
    pub(crate) message: String,
    pub(crate) attempts: u32,
    pub(crate) first_failure_ms: u64,
    pub(crate) last_failure_ms: u64,
    pub(crate) expires_at_ms: Option<u64>,
    pub(crate) redrive_count: u32,
    pub(crate) schema_version: u16,
}

impl Entry {
    /// The entry id.
    #[must_use]
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The queue that holds it.
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The owner's key for the work (a record id, a message id).
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The class of the last failure.
    #[must_use]
    pub fn error_class(&self) -> FailureClass {
        self.error_class
    }

    /// The message of the last failure.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Attempts so far, including failed redrives.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// When the work first failed.
    #[must_use]
    pub fn first_failure(&self) -> SystemTime {
        from_millis(self.first_failure_ms)
    }

    /// When the work last failed (a failed redrive moves it).
    #[must_use]
    pub fn last_failure(&self) -> SystemTime {
        from_millis(self.last_failure_ms)
    }

    /// When cleanup archives the entry, if its queue has a TTL.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at_ms.map(from_millis)
    }

    /// How many redrives were tried.
    #[must_use]
    pub fn redrive_count(&self) -> u32 {
        self.redrive_count
    }

    /// The schema version the entry was written with.
    #[must_use]
    pub fn schema_version(&self) -> u16 {
        self.schema_version
    }

    /// The JSON view with the payload (inline bytes as base64).
    #[must_use]
    pub fn view(&self) -> EntryView {
        self.make_view(true)
    }

    /// The JSON view without inline payload bytes, for listings.
    #[must_use]
    pub fn summary(&self) -> EntryView {
        self.make_view(false)
    }

    fn make_view(&self, with_data: bool) -> EntryView {
        let payload = match &self.payload {
            Payload::Inline(inline) => PayloadView::Inline {
                size: inline.data.len() as u64,
                crc32c: inline.crc32c,
                base64: with_data.then(|| STANDARD.encode(&inline.data)),
            },
            Payload::File(file) => PayloadView::File {
                path: file.path.clone(),
                size: file.size,
                crc32c: file.crc32c,
            },
        };
        EntryView {
            id: self.id,
            queue: self.queue.clone(),
            key: self.key.clone(),
            error_class: self.error_class,
            message: self.message.clone(),
            attempts: self.attempts,
            first_failure_at: format_time(self.first_failure_ms),
            last_failure_at: format_time(self.last_failure_ms),
            expires_at: self.expires_at_ms.map(format_time),
            redrive_count: self.redrive_count,
            schema_version: self.schema_version,
            payload,
        }
    }
}

/// The JSON form of an entry, used by `export`/`import` and the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryView {
    /// The entry id.
    pub id: EntryId,
    /// The queue.
    pub queue: String,
    /// The owner's key.
    pub key: String,
    /// The class of the last failure.
    pub error_class: FailureClass,
    /// The message of the last failure.
    pub message: String,
    /// Attempts so far.
    pub attempts: u32,
    /// RFC 3339 time of the first failure.
    pub first_failure_at: String,
    /// RFC 3339 time of the last failure.
    pub last_failure_at: String,
    /// RFC 3339 expiry time, or null.
    pub expires_at: Option<String>,
    /// Redrives tried.
    pub redrive_count: u32,
    /// Schema version of the entry.
    pub schema_version: u16,
    /// The payload.
    pub payload: PayloadView,
}

/// The JSON form of a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PayloadView {
    /// Inline bytes.
    Inline {
        /// Length in bytes.
        size: u64,
        /// CRC-32C of the bytes.
        crc32c: u32,
        /// The bytes in standard base64; absent in listings.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    /// A pinned local file.
    File {
        /// Where the file is.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Its CRC-32C.
        crc32c: u32,
    },
}

/// What a pusher hands to [`Dlq::push`](crate::Dlq::push).
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub(crate) queue: String,
    pub(crate) key: String,
    pub(crate) payload: Payload,
    pub(crate) error_class: FailureClass,
    pub(crate) message: String,
    pub(crate) attempts: u32,
    pub(crate) first_failure: Option<SystemTime>,
}

impl NewEntry {
    /// An entry carrying `data` inline (checksummed by the DLQ).
    #[must_use]
    pub fn inline(
        queue: impl Into<String>,
        key: impl Into<String>,
        data: impl Into<Bytes>,
        error_class: FailureClass,
        message: impl Into<String>,
    ) -> Self {
        Self::with_payload(
            queue,
            key,
            Payload::Inline(InlinePayload::new(data.into())),
            error_class,
            message,
        )
    }

    /// An entry referring to a local file that the owner keeps pinned until the entry is gone.
    #[must_use]
    pub fn pinned_file(
        queue: impl Into<String>,
        key: impl Into<String>,
        file: PinnedFile,
        error_class: FailureClass,
        message: impl Into<String>,
    ) -> Self {
        Self::with_payload(queue, key, Payload::File(file), error_class, message)
    }

    fn with_payload(
        queue: impl Into<String>,
        key: impl Into<String>,
        payload: Payload,
        error_class: FailureClass,
        message: impl Into<String>,
    ) -> Self {
        Self {
            queue: queue.into(),
            key: key.into(),
            payload,
            error_class,
            message: message.into(),
            attempts: 1,
            first_failure: None,
        }
    }

    /// Sets the attempts made before dead-lettering (default 1).
    #[must_use]
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Sets when the work first failed (default: the push time).
    #[must_use]
    pub fn first_failure(mut self, at: SystemTime) -> Self {
        self.first_failure = Some(at);
        self
    }
}

/// Cuts `message` to [`MAX_MESSAGE_BYTES`] at a character boundary.
pub(crate) fn clip_message(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

pub(crate) fn to_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(from_millis(ms)).to_string()
}

pub(crate) fn parse_time(field: &'static str, value: &str) -> Result<u64, String> {
    humantime::parse_rfc3339_weak(value)
        .map(to_millis)
        .map_err(|err| format!("{field} {value:?} is not an RFC 3339 time: {err}"))
}

pub(crate) fn decode_base64(value: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(value)
        .map_err(|err| format!("payload base64 is invalid: {err}"))
}
