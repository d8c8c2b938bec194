//! `export` and `import`: a queue as the JSON document operators keep as `dlq.json`.
//!
//! ```json
//! { "format": "mainstay-dlq", "version": 1, "queue": "orders",
//!   "exported_at": "2026-01-01T00:00:00.000Z", "entries": [ ...entry views... ] }
//! ```

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::valid_queue_name;
use crate::dlq::Dlq;
use crate::entry::{
    Entry, EntryView, InlinePayload, MAX_KEY_BYTES, MAX_PATH_BYTES, Payload, PayloadView,
    PinnedFile, clip_message, decode_base64, parse_time,
};
use crate::error::{ExportError, ImportError};
use crate::query::ImportReport;

const FORMAT: &str = "mainstay-dlq";
const VERSION: u32 = 1;

/// The export document.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: String,
    version: u32,
    queue: String,
    exported_at: String,
    entries: Vec<EntryView>,
}

fn entry_from_view(view: EntryView, max_payload: usize) -> Result<Entry, String> {
    if !valid_queue_name(&view.queue) {
        return Err(format!("queue {:?} is not a valid queue name", view.queue));
    }
    if view.key.is_empty() || view.key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key of {} bytes is not 1 to 1024 bytes",
            view.key.len()
        ));
    }
    let payload = match view.payload {
        PayloadView::Inline {
            size,
            crc32c,
            base64,
        } => {
            let data = decode_base64(
                base64
                    .as_deref()
                    .ok_or("inline payload has no base64 data")?,
            )?;
            if data.len() as u64 != size {
                return Err(format!("payload is {} bytes, size says {size}", data.len()));
            }
            if data.len() > max_payload {
                return Err(format!(
                    "payload of {} bytes exceeds max_payload_bytes {max_payload}",
                    data.len()
                ));
            }
            let inline = InlinePayload::from_parts(Bytes::from(data), crc32c);
            if !inline.verify() {
                return Err("payload checksum does not match its data".to_owned());
            }
            Payload::Inline(inline)
        }
        PayloadView::File { path, size, crc32c } => {
            let len = path.to_str().map_or(0, str::len);
            if len == 0 || len > MAX_PATH_BYTES {
                return Err("pinned file path is empty, too long or not UTF-8".to_owned());
            }
            Payload::File(PinnedFile { path, size, crc32c })
        }
    };
    Ok(Entry {
        id: view.id,
        queue: view.queue,
        key: view.key,
        payload,
        error_class: view.error_class,
        message: clip_message(view.message),
        attempts: view.attempts,
        first_failure_ms: parse_time("first_failure_at", &view.first_failure_at)?,
        last_failure_ms: parse_time("last_failure_at", &view.last_failure_at)?,
        expires_at_ms: view
            .expires_at
            .as_deref()
            .map(|at| parse_time("expires_at", at))
            .transpose()?,
        redrive_count: view.redrive_count,
        schema_version: view.schema_version,
    })
}

impl Dlq {
    /// The entries of `queue` as a JSON export document (inline payloads in base64).
    ///
    /// # Errors
    ///
    /// [`ExportError::Json`] if encoding fails.
    pub fn export(&self, queue: &str) -> Result<Vec<u8>, ExportError> {
        let document = Document {
            format: FORMAT.to_owned(),
            version: VERSION,
            queue: queue.to_owned(),
            exported_at: humantime::format_rfc3339_millis(self.now()).to_string(),
            entries: self.entries_of(queue).iter().map(|e| e.view()).collect(),
        };
        serde_json::to_vec_pretty(&document).map_err(|error| ExportError::Json(error.into()))
    }

    /// Writes [`Dlq::export`] of `queue` to `path` atomically (temp + fsync + rename +
    /// fsync(dir)), on the blocking pool.
    ///
    /// # Errors
    ///
    /// [`ExportError`] when encoding or writing fails.
    pub async fn export_to_file(
        &self,
        queue: &str,
        path: impl Into<PathBuf>,
    ) -> Result<(), ExportError> {
        let path = path.into();
        let bytes = self.export(queue)?;
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            if target.file_name().is_none() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "no file name",
                ));
            }
            mainstay_journal::write_atomic(&mainstay_journal::fs::RealFs, &target, &bytes)
                .map_err(|error| error.source)
        })
        .await
        .map_err(|join| std::io::Error::other(join.to_string()));
        written
            .and_then(|r| r)
            .map_err(|source| ExportError::Io { path, source })
    }

    /// Adds the entries of an export document, keeping their ids; entries already present are
    /// left alone and entries that do not fit are counted as rejected. Every entry is checked
    /// (queue name, key, payload size and checksum, times) before anything is added.
    ///
    /// # Errors
    ///
    /// [`ImportError`] for an invalid document or entry, or when the journal failed.
    pub async fn import(&self, json: &[u8]) -> Result<ImportReport, ImportError> {
        let document: Document =
            serde_json::from_slice(json).map_err(|error| ImportError::Json(error.into()))?;
        if document.format != FORMAT || document.version != VERSION {
            return Err(ImportError::Format {
                format: document.format,
                version: document.version,
            });
        }
        let max_payload = self.max_payload_bytes();
        let mut entries = Vec::with_capacity(document.entries.len());
        for view in document.entries {
            let id = view.id;
            entries.push(
                entry_from_view(view, max_payload)
                    .map_err(|reason| ImportError::Entry { id, reason })?,
            );
        }
        Ok(self.admit_all(entries).await?)
    }

    /// Reads an export document from `path` (on the blocking pool) and imports it.
    ///
    /// # Errors
    ///
    /// As [`Dlq::import`], plus [`ImportError::Io`] when the file cannot be read.
    pub async fn import_file(&self, path: impl AsRef<Path>) -> Result<ImportReport, ImportError> {
        let path = path.as_ref().to_owned();
        let target = path.clone();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(target))
            .await
            .map_err(|join| std::io::Error::other(join.to_string()))
            .and_then(|r| r)
            .map_err(|source| ImportError::Io { path, source })?;
        self.import(&bytes).await
    }
}
