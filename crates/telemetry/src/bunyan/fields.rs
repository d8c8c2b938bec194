//! The span field store: a span's fields kept as ready-made `"key":value` JSON fragments (its
//! own and its ancestors'), redacted when recorded, and the `tracing` visitor that records them.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};

use super::encoder::{Escaper, write_number, write_str};
use crate::logs::{REDACTED, Redactor};

/// Bunyan's core field names: a span or event field with one of these names is not written
/// (the core field is), as tracing-bunyan-formatter did.
const CORE_FIELDS: [&str; 7] = ["v", "level", "name", "hostname", "pid", "time", "msg"];

/// Fields as JSON fragments: `"key":value` each, in first-recorded order; recording a key again
/// replaces its value.
#[derive(Debug, Default)]
pub(super) struct Fields {
    json: Vec<u8>,
    entries: Vec<Entry>,
}

/// One live fragment: `json[start..end]`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name: &'static str,
    start: usize,
    end: usize,
}

impl Fields {
    /// Room for `count` fields of a typical size, so that recording them does not reallocate.
    pub(super) fn with_capacity(count: usize) -> Self {
        Self {
            json: Vec::with_capacity(count * 32),
            entries: Vec::with_capacity(count),
        }
    }

    /// A copy of the live fields, with room for `count` more.
    pub(super) fn with_room(&self, count: usize) -> Self {
        let live: usize = self
            .entries
            .iter()
            .map(|entry| entry.end - entry.start)
            .sum();
        let mut copy = Self {
            json: Vec::with_capacity(live + count * 32),
            entries: Vec::with_capacity(self.entries.len() + count),
        };
        copy.merge_live(self);
        copy
    }

    pub(super) fn clear(&mut self) {
        self.json.clear();
        self.entries.clear();
    }

    /// Records `name`; `value` writes its JSON value, unless the name is denied.
    pub(super) fn insert(
        &mut self,
        redactor: &Redactor,
        name: &'static str,
        value: impl FnOnce(&mut Vec<u8>),
    ) {
        if CORE_FIELDS.contains(&name) {
            return;
        }
        let start = self.json.len();
        write_str(&mut self.json, name);
        self.json.push(b':');
        if redactor.is_denied_static(name) {
            write_str(&mut self.json, REDACTED);
        } else {
            value(&mut self.json);
        }
        let end = self.json.len();
        self.set(name, start, end);
    }

    fn set(&mut self, name: &'static str, start: usize, end: usize) {
        match self.entries.iter_mut().find(|entry| entry.name == name) {
            Some(entry) => {
                entry.start = start;
                entry.end = end;
            }
            None => self.entries.push(Entry { name, start, end }),
        }
    }

    /// Records every field of `other`, replacing values of the same keys.
    pub(super) fn merge(&mut self, other: &Self) {
        for entry in &other.entries {
            if let Some(fragment) = other.json.get(entry.start..entry.end) {
                let start = self.json.len();
                self.json.extend_from_slice(fragment);
                let end = self.json.len();
                self.set(entry.name, start, end);
            }
        }
        self.compact_if_sparse();
    }

    /// Drops replaced values once they take most of the buffer, so a span recording the same
    /// field over and over does not grow without bound.
    pub(super) fn compact_if_sparse(&mut self) {
        let live: usize = self
            .entries
            .iter()
            .map(|entry| entry.end - entry.start)
            .sum();
        if self.json.len() > 1024 && self.json.len() > 2 * live {
            *self = self.with_room(0);
        }
    }

    fn merge_live(&mut self, other: &Self) {
        for entry in &other.entries {
            if let Some(fragment) = other.json.get(entry.start..entry.end) {
                let start = self.json.len();
                self.json.extend_from_slice(fragment);
                self.entries.push(Entry {
                    name: entry.name,
                    start,
                    end: self.json.len(),
                });
            }
        }
    }

    /// Writes `,"key":value` for each field.
    pub(super) fn write_to(&self, out: &mut Vec<u8>) {
        for entry in &self.entries {
            if let Some(fragment) = self.json.get(entry.start..entry.end) {
                out.push(b',');
                out.extend_from_slice(fragment);
            }
        }
    }
}

/// Records `tracing` fields as JSON fragments, with tracing-bunyan-formatter's rules: numbers,
/// booleans and strings keep their JSON type (a non-finite float is `null`); anything else is
/// its `Debug` text; in `Debug`-recorded fields, names starting with `log.` are skipped and a
/// leading `r#` is dropped.
pub(super) struct Recorder<'a> {
    pub(super) fields: &'a mut Fields,
    pub(super) redactor: &'a Redactor,
    /// For events: where a `message` field's text goes instead of the fields.
    pub(super) message: Option<&'a mut Message>,
}

/// An event's `message` field, when it is text.
#[derive(Debug, Default)]
pub(super) struct Message {
    pub(super) text: String,
    pub(super) is_text: bool,
}

impl Recorder<'_> {
    /// Whether `name` is an event's message field (which is not written as a field).
    fn message(&mut self, name: &str) -> Option<&mut Message> {
        if name == "message" {
            self.message.as_deref_mut()
        } else {
            None
        }
    }
}

impl Visit for Recorder<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.message(field.name()).is_none() {
            self.fields
                .insert(self.redactor, field.name(), |out| write_number(out, value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.message(field.name()).is_none() {
            self.fields
                .insert(self.redactor, field.name(), |out| write_number(out, value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.message(field.name()).is_none() {
            self.fields
                .insert(self.redactor, field.name(), |out| write_number(out, value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.message(field.name()).is_none() {
            self.fields
                .insert(self.redactor, field.name(), |out| write_number(out, value));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if let Some(message) = self.message(field.name()) {
            message.text.clear();
            message.text.push_str(value);
            message.is_text = true;
        } else {
            self.fields
                .insert(self.redactor, field.name(), |out| write_str(out, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        if let Some(message) = self.message(name) {
            message.text.clear();
            // Formatting into a `String` cannot fail unless `Debug` does.
            let _ = write!(message.text, "{value:?}");
            message.is_text = true;
        } else {
            self.fields.insert(self.redactor, name, |out| {
                out.push(b'"');
                let _ = write!(Escaper(out), "{value:?}");
                out.push(b'"');
            });
        }
    }
}

/// The log fields of a span, written as `tracing` would record them.
#[cfg(feature = "tower")]
pub(crate) struct SpanFields<'a> {
    pub(super) fields: &'a mut Fields,
    pub(super) redactor: &'a Redactor,
}

#[cfg(feature = "tower")]
impl SpanFields<'_> {
    /// As `span.record(name, value)` with a `&str`.
    pub(crate) fn str(&mut self, name: &'static str, value: &str) {
        self.fields
            .insert(self.redactor, name, |out| write_str(out, value));
    }

    /// As `span.record(name, value)` with an unsigned integer.
    pub(crate) fn u64(&mut self, name: &'static str, value: u64) {
        self.fields
            .insert(self.redactor, name, |out| write_number(out, value));
    }
}

#[cfg(test)]
mod tests {
    use super::{Fields, Redactor};

    #[test]
    fn a_field_recorded_over_and_over_does_not_grow_the_span() {
        let redactor = Redactor::new(&[]);
        let mut fields = Fields::default();
        fields.insert(&redactor, "kept", |out| out.extend_from_slice(b"1"));
        for round in 0..10_000_u32 {
            let mut update = Fields::default();
            update.insert(&redactor, "counter", |out| {
                out.extend_from_slice(round.to_string().as_bytes());
            });
            fields.merge(&update);
        }
        assert!(fields.json.len() < 2048, "{}", fields.json.len());
        let mut out = Vec::new();
        fields.write_to(&mut out);
        assert_eq!(out, b",\"kept\":1,\"counter\":9999");
    }
}
