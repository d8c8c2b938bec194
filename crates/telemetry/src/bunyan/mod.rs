//! Bunyan JSON lines, written directly from the `tracing` callbacks (docs/decisions/0044).
//!
//! One layer does what `JsonStorageLayer`, the OpenTelemetry ids layer, tracing-bunyan-formatter's
//! `BunyanFormattingLayer` and the redacting writer did before, with the same lines: the same
//! core fields in the same order (`v`, `name`, `msg`, `level`, `hostname`, `pid`, `time`,
//! `target`, `line`, `file`), the same `msg` forms (`[SPAN - START]`, `[SPAN - END]`,
//! `[SPAN - EVENT] message`), the same field rules and the same JSON encoding (serde_json's).
//!
//! What changes is the cost. A span keeps its fields as ready-made `"key":value` JSON fragments
//! (its own and its ancestors'), so a line is the core fields plus copies of those fragments,
//! built in a reused per-thread buffer and handed to the writer in one `write_all`. Denied field
//! names are redacted when a field is recorded, where the name is known, instead of by scanning
//! and re-parsing every finished line. The OpenTelemetry `trace_id` and `span_id` are read once
//! per span, when it is created, and kept as fragments like any other field.
//!
//! The module is split along its seams: [`encoder`] writes JSON values and RFC 3339 times as
//! serde_json and the `time` crate would, [`fields`] keeps a span's fields as those fragments,
//! and [`layer`] is the `tracing` layer that builds each line from them.

mod encoder;
mod fields;
mod layer;

#[cfg(feature = "tower")]
pub(crate) use layer::unsampled_span_fields;
pub(crate) use layer::{BunyanLayer, RecordingSpanEvents};
