//! The binary record format of the journal and the snapshot, and the frame scanner that
//! recovers from torn or corrupt data.
//!
//! A frame is `len: u32 LE | crc32c(body): u32 LE | body`. A body starts with a record type:
//! 1 push (a whole entry), 2 remove (an id), 3 update (the fields a failed redrive changes).
//! Records carry absolute values, so replaying one twice gives the same state.

use std::path::PathBuf;

use bytes::Bytes;
use ulid::Ulid;

use crate::config::MAX_PAYLOAD_LIMIT;
use crate::entry::{Entry, EntryId, ErrorClass, InlinePayload, Payload, PinnedFile};

/// Bytes before a frame's body.
pub(crate) const FRAME_HEADER: usize = 8;

/// Largest body a frame may have: the largest payload plus room for the other fields.
pub(crate) const MAX_BODY: usize = MAX_PAYLOAD_LIMIT + 64 * 1024;

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
    pub(crate) error_class: ErrorClass,
    pub(crate) message: String,
    pub(crate) attempts: u32,
    pub(crate) last_failure_ms: u64,
    pub(crate) redrive_count: u32,
}

fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    start
}

fn finish(out: &mut [u8], start: usize) {
    let body_start = start + FRAME_HEADER;
    let body = &out[body_start..];
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..body_start].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a push frame for `entry`.
pub(crate) fn encode_push(entry: &Entry, out: &mut Vec<u8>) {
    let start = begin(out);
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
    finish(out, start);
}

/// Appends a remove frame.
pub(crate) fn encode_remove(id: EntryId, out: &mut Vec<u8>) {
    let start = begin(out);
    out.push(REMOVE);
    out.extend_from_slice(&id.ulid().to_bytes());
    finish(out, start);
}

/// Appends an update frame carrying the redrive fields of `entry`.
pub(crate) fn encode_update(entry: &Entry, out: &mut Vec<u8>) {
    let start = begin(out);
    out.push(UPDATE);
    out.extend_from_slice(&entry.id.ulid().to_bytes());
    out.push(entry.error_class.code());
    put_bytes(out, entry.message.as_bytes());
    out.extend_from_slice(&entry.attempts.to_le_bytes());
    out.extend_from_slice(&entry.last_failure_ms.to_le_bytes());
    out.extend_from_slice(&entry.redrive_count.to_le_bytes());
    finish(out, start);
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

/// Decodes one frame body; `None` when it is not a valid record.
pub(crate) fn decode(body: &[u8]) -> Option<Record> {
    let mut r = Reader { bytes: body };
    let record = match r.u8()? {
        PUSH => {
            let id = r.id()?;
            let schema_version = r.u16()?;
            let queue = r.string()?;
            let key = r.string()?;
            let error_class = ErrorClass::from_code(r.u8()?)?;
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
            error_class: ErrorClass::from_code(r.u8()?)?,
            message: r.string()?,
            attempts: r.u32()?,
            last_failure_ms: r.u64()?,
            redrive_count: r.u32()?,
        }),
        _ => return None,
    };
    r.bytes.is_empty().then_some(record)
}

/// How a scan ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TailKind {
    /// The last frame is incomplete: a write cut short by a crash.
    Torn,
    /// A frame is complete but fails its checksum or does not decode, or its length is
    /// impossible, and what follows cannot be read as clean frames.
    Corrupt,
}

/// The outcome of scanning a run of frames.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) records: Vec<Record>,
    /// Offset just past the last frame kept; everything after it is discarded.
    pub(crate) valid_len: usize,
    /// Complete frames with a bad checksum that were skipped because clean frames follow them.
    pub(crate) skipped: u64,
    /// Why the scan stopped before the end, if it did.
    pub(crate) tail: Option<TailKind>,
}

enum Frame<'a> {
    End,
    Torn,
    BadLength,
    Bad { next: usize },
    Good { body: &'a [u8], next: usize },
}

fn frame_at(data: &[u8], pos: usize) -> Frame<'_> {
    let rest = data.get(pos..).unwrap_or_default();
    if rest.is_empty() {
        return Frame::End;
    }
    let Some(header) = rest.get(..FRAME_HEADER) else {
        return Frame::Torn;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_BODY {
        return Frame::BadLength;
    }
    let Some(body) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Frame::Torn;
    };
    let next = pos + FRAME_HEADER + len;
    if crc32c::crc32c(body) == crc {
        Frame::Good { body, next }
    } else {
        Frame::Bad { next }
    }
}

/// Whether at least one good frame follows `pos` and everything from `pos` reads as good
/// frames, allowing a torn last frame. A bad frame at the very end is a corrupt tail, not a skip.
fn clean_from(data: &[u8], mut pos: usize) -> bool {
    if !matches!(frame_at(data, pos), Frame::Good { .. }) {
        return false;
    }
    loop {
        match frame_at(data, pos) {
            Frame::End | Frame::Torn => return true,
            Frame::Good { body, next } if decode(body).is_some() => pos = next,
            _ => return false,
        }
    }
}

/// Scans frames in `data` from `start`.
///
/// A frame that fails its checksum (a bit flip) is skipped when the rest of the data reads as
/// clean frames; otherwise the scan stops there and the rest is reported as a corrupt tail.
pub(crate) fn scan(data: &[u8], start: usize) -> Scan {
    let mut scan = Scan {
        records: Vec::new(),
        valid_len: start,
        skipped: 0,
        tail: None,
    };
    let mut pos = start;
    loop {
        match frame_at(data, pos) {
            Frame::End => break,
            Frame::Torn => {
                scan.tail = Some(TailKind::Torn);
                break;
            }
            Frame::BadLength => {
                scan.tail = Some(TailKind::Corrupt);
                break;
            }
            Frame::Good { body, next } => match decode(body) {
                Some(record) => {
                    scan.records.push(record);
                    pos = next;
                    scan.valid_len = pos;
                }
                None if clean_from(data, next) => {
                    scan.skipped += 1;
                    pos = next;
                    scan.valid_len = pos;
                }
                None => {
                    scan.tail = Some(TailKind::Corrupt);
                    break;
                }
            },
            Frame::Bad { next } => {
                if clean_from(data, next) {
                    scan.skipped += 1;
                    pos = next;
                    scan.valid_len = pos;
                } else {
                    scan.tail = Some(TailKind::Corrupt);
                    break;
                }
            }
        }
    }
    scan
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
            error_class: ErrorClass::Transient,
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
    fn push_round_trips() {
        let mut out = Vec::new();
        encode_push(&entry(1), &mut out);
        encode_remove(entry(2).id, &mut out);
        let scan = scan(&out, 0);
        assert_eq!(scan.records.len(), 2);
        assert!(matches!(&scan.records[0], Record::Push(e) if *e == entry(1)));
        assert_eq!(scan.valid_len, out.len());
        assert_eq!(scan.tail, None);
    }

    #[test]
    fn torn_tail_stops_at_last_good_frame() {
        let mut out = Vec::new();
        encode_push(&entry(1), &mut out);
        let good = out.len();
        encode_push(&entry(2), &mut out);
        out.truncate(out.len() - 3);
        let scan = scan(&out, 0);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.valid_len, good);
        assert_eq!(scan.tail, Some(TailKind::Torn));
    }

    #[test]
    fn flipped_middle_frame_is_skipped_and_last_is_corrupt_tail() {
        let mut out = Vec::new();
        encode_push(&entry(1), &mut out);
        let first = out.len();
        encode_push(&entry(2), &mut out);
        let second = out.len();
        encode_push(&entry(3), &mut out);
        let mut middle = out.clone();
        middle[first + 30] ^= 0x10;
        let scan_middle = scan(&middle, 0);
        assert_eq!(scan_middle.records.len(), 2);
        assert_eq!(scan_middle.skipped, 1);
        assert_eq!(scan_middle.tail, None);

        let mut last = out.clone();
        last[second + 30] ^= 0x01;
        let scan_last = scan(&last, 0);
        assert_eq!(scan_last.records.len(), 2);
        assert_eq!(scan_last.skipped, 0);
        assert_eq!(scan_last.valid_len, second);
        assert_eq!(scan_last.tail, Some(TailKind::Corrupt));
    }
}
