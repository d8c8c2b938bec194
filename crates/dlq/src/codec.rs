//! The binary record format: one record is one journal entry (framed and checksummed by
//! mainstay-journal) or one record of the snapshot.
//!
//! A record starts with its type: 1 push (a whole entry), 2 remove (an id), 3 update (the fields
//! a failed redrive changes). Records carry absolute values, so replaying one twice gives the
//! same state. The format is unchanged from the pre-journal frames' bodies, which is what lets
//! `legacy` read old directories with the same decoder.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use ulid::Ulid;

use crate::entry::{Entry, EntryId, FailureClass, InlinePayload, Payload, PinnedFile};

const PUSH: u8 = 1;
const REMOVE: u8 = 2;
const UPDATE: u8 = 3;

const PAYLOAD_INLINE: u8 = 1;
const PAYLOAD_FILE: u8 = 2;

/// One journal record.
#[derive(Debug)]
pub(crate) enum Record {
    Push(Entry),
    Remove(EntryId),
    Update(Update),
}

/// The fields a failed redrive changes.
#[derive(Debug)]
pub(crate) struct Update {
    pub(crate) id: EntryId,
    pub(crate) error_class: FailureClass,
    pub(crate) message: String,
    pub(crate) attempts: u32,
    pub(crate) last_failure_ms: u64,
    pub(crate) redrive_count: u32,
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a push record for `entry`.
pub(crate) fn encode_push(entry: &Entry, out: &mut Vec<u8>) {
    out.push(PUSH);
    out.extend_from_slice(&entry.id.ulid().to_bytes());
    out.extend_from_slice(&entry.schema_version.to_le_bytes());
    put_bytes(out, entry.queue.as_bytes());
    put_bytes(out, entry.key.as_bytes());
    out.push(entry.error_class.code());
    put_bytes(out, entry.message.as_bytes());
    out.extend_from_slice(&entry.attempts.to_le_bytes());
    out.extend_from_slice(&entry.first_failure_ms.to_le_bytes());
    out.extend_from_slice(&entry.last_failure_ms.to_le_bytes());
    match entry.expires_at_ms {
        Some(ms) => {
            out.push(1);
            out.extend_from_slice(&ms.to_le_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&entry.redrive_count.to_le_bytes());
    match &entry.payload {
        Payload::Inline(inline) => {
            out.push(PAYLOAD_INLINE);
            out.extend_from_slice(&inline.crc32c().to_le_bytes());
            put_bytes(out, inline.data());
        }
        Payload::File(file) => {
            out.push(PAYLOAD_FILE);
            put_bytes(out, file.path.as_os_str().as_encoded_bytes());
            out.extend_from_slice(&file.size.to_le_bytes());
            out.extend_from_slice(&file.crc32c.to_le_bytes());
        }
    }
}

/// Appends a remove record.
pub(crate) fn encode_remove(id: EntryId, out: &mut Vec<u8>) {
    out.push(REMOVE);
    out.extend_from_slice(&id.ulid().to_bytes());
}

/// Appends an update record carrying the redrive fields of `entry`.
pub(crate) fn encode_update(entry: &Entry, out: &mut Vec<u8>) {
    out.push(UPDATE);
    out.extend_from_slice(&entry.id.ulid().to_bytes());
    out.push(entry.error_class.code());
    put_bytes(out, entry.message.as_bytes());
    out.extend_from_slice(&entry.attempts.to_le_bytes());
    out.extend_from_slice(&entry.last_failure_ms.to_le_bytes());
    out.extend_from_slice(&entry.redrive_count.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn id(&mut self) -> Option<EntryId> {
        self.array()
            .map(|b| EntryId::from_ulid(Ulid::from_bytes(b)))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        self.take(len)
    }

    fn string(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }
}

/// Applies `record` to `entries`.
pub(crate) fn apply(entries: &mut BTreeMap<EntryId, Entry>, record: Record) {
    match record {
        Record::Push(entry) => {
            entries.insert(entry.id, entry);
        }
        Record::Remove(id) => {
            entries.remove(&id);
        }
        Record::Update(update) => {
            if let Some(entry) = entries.get_mut(&update.id) {
                entry.error_class = update.error_class;
                entry.message = update.message;
                entry.attempts = update.attempts;
                entry.last_failure_ms = update.last_failure_ms;
                entry.redrive_count = update.redrive_count;
            }
        }
    }
}

/// Decodes one record; `None` when it is not a valid record.
pub(crate) fn decode(body: &[u8]) -> Option<Record> {
    let mut r = Reader { bytes: body };
    let record = match r.u8()? {
        PUSH => {
            let id = r.id()?;
            let schema_version = r.u16()?;
            let queue = r.string()?;
            let key = r.string()?;
            let error_class = FailureClass::from_code(r.u8()?)?;
            let message = r.string()?;
            let attempts = r.u32()?;
            let first_failure_ms = r.u64()?;
            let last_failure_ms = r.u64()?;
            let expires_at_ms = match r.u8()? {
                0 => None,
                1 => Some(r.u64()?),
                _ => return None,
            };
            let redrive_count = r.u32()?;
            let payload = match r.u8()? {
                PAYLOAD_INLINE => {
                    let crc = r.u32()?;
                    let data = Bytes::copy_from_slice(r.bytes()?);
                    Payload::Inline(InlinePayload::from_parts(data, crc))
                }
                PAYLOAD_FILE => {
                    let path = PathBuf::from(std::str::from_utf8(r.bytes()?).ok()?);
                    let size = r.u64()?;
                    let crc32c = r.u32()?;
                    Payload::File(PinnedFile { path, size, crc32c })
                }
                _ => return None,
            };
            Record::Push(Entry {
                id,
                queue,
                key,
                payload,
                error_class,
                message,
                attempts,
                first_failure_ms,
                last_failure_ms,
                expires_at_ms,
                redrive_count,
                schema_version,
            })
        }
        REMOVE => Record::Remove(r.id()?),
        UPDATE => Record::Update(Update {
            id: r.id()?,
            error_class: FailureClass::from_code(r.u8()?)?,
            message: r.string()?,
            attempts: r.u32()?,
            last_failure_ms: r.u64()?,
            redrive_count: r.u32()?,
        }),
        _ => return None,
    };
    r.bytes.is_empty().then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::SCHEMA_VERSION;

    fn entry(n: u8) -> Entry {
        Entry {
            id: EntryId::from_ulid(Ulid::from_parts(1_000 + u64::from(n), u128::from(n))),
            queue: "q".into(),
            key: format!("k{n}"),
            payload: Payload::Inline(InlinePayload::new(Bytes::from(vec![n; 40]))),
            error_class: FailureClass::Transient,
            message: "boom".into(),
            attempts: 3,
            first_failure_ms: 1,
            last_failure_ms: 2,
            expires_at_ms: Some(9),
            redrive_count: 0,
            schema_version: SCHEMA_VERSION,
        }
    }

    #[test]
    fn records_round_trip() {
        let mut push = Vec::new();
        encode_push(&entry(1), &mut push);
        assert!(matches!(decode(&push), Some(Record::Push(e)) if e == entry(1)));
        let mut remove = Vec::new();
        encode_remove(entry(2).id, &mut remove);
        assert!(matches!(decode(&remove), Some(Record::Remove(id)) if id == entry(2).id));
        let mut update = Vec::new();
        encode_update(&entry(3), &mut update);
        assert!(
            matches!(decode(&update), Some(Record::Update(u)) if u.id == entry(3).id && u.attempts == 3)
        );
        push.push(0);
        assert!(decode(&push).is_none(), "trailing bytes are refused");
        assert!(decode(&[9]).is_none(), "an unknown type is refused");
    }
}
