//! Reading the DLQ's files as written before it moved onto mainstay-journal (decision 0081), for
//! the migration at open. Read-only: nothing here writes.
//!
//! ```text
//! journal   header | frames...   header: magic MSDLQJNL, u32 version 1, u64 generation, crc32c
//! snapshot  header | frames...   header: magic MSDLQSNP, the generation it covers
//! ```
//!
//! A frame is `len: u32 LE | crc32c(body): u32 LE | body`, the body a record of `codec`. A
//! journal whose generation the snapshot covers (a crash between the two renames of an old
//! compaction) is skipped. The frame scan keeps the old rule (decision 0022): a bad frame followed
//! by clean frames is skipped, anything else ends the scan.

use std::collections::BTreeMap;

use crate::codec::{self, Record};
use crate::config::MAX_PAYLOAD_LIMIT;
use crate::entry::{Entry, EntryId};

/// The magic bytes of an old journal.
pub(crate) const JOURNAL_MAGIC: &[u8; 8] = b"MSDLQJNL";
/// The magic bytes of an old snapshot.
pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"MSDLQSNP";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
const FRAME_HEADER: usize = 8;
/// Largest body an old frame may have: the largest payload plus room for the other fields.
const MAX_BODY: usize = MAX_PAYLOAD_LIMIT + 64 * 1024;

/// The generation in an old header, or why it is unreadable.
pub(crate) fn parse_header(magic: &[u8; 8], data: &[u8]) -> Result<u64, &'static str> {
    let Some(head) = data.get(..HEADER_LEN) else {
        return Err("header is shorter than 24 bytes");
    };
    if &head[..8] != magic {
        return Err("wrong magic bytes");
    }
    let mut crc = [0; 4];
    crc.copy_from_slice(&head[20..]);
    if crc32c::crc32c(&head[..20]) != u32::from_le_bytes(crc) {
        return Err("header checksum mismatch");
    }
    let mut version = [0; 4];
    version.copy_from_slice(&head[8..12]);
    if u32::from_le_bytes(version) != FORMAT_VERSION {
        return Err("unsupported format version");
    }
    let mut generation = [0; 8];
    generation.copy_from_slice(&head[12..20]);
    Ok(u64::from_le_bytes(generation))
}

/// What the old files held.
#[derive(Debug, Default)]
pub(crate) struct Legacy {
    pub(crate) entries: BTreeMap<EntryId, Entry>,
    pub(crate) snapshot_records: usize,
    pub(crate) journal_records: usize,
    /// Frames skipped for a bad checksum while clean frames followed.
    pub(crate) corrupt_records: u64,
    /// The journal ended in an incomplete frame.
    pub(crate) torn_tail: bool,
    /// A file ended in a bad frame, or the journal's header was unreadable.
    pub(crate) corrupt_tail: bool,
    /// Bytes after the last good frame of the journal.
    pub(crate) truncated_bytes: u64,
    /// The journal was already covered by the snapshot.
    pub(crate) stale_journal: bool,
}

/// Loads the old snapshot and journal (either may be missing).
///
/// # Errors
///
/// The reason an old snapshot's header is unreadable (it was replaced atomically, so that is
/// damage, not a crash).
pub(crate) fn load(
    snapshot: Option<&[u8]>,
    journal: Option<&[u8]>,
) -> Result<Legacy, &'static str> {
    let mut legacy = Legacy::default();
    let mut covered = 0;
    if let Some(bytes) = snapshot {
        covered = parse_header(SNAPSHOT_MAGIC, bytes)?;
        let scan = scan(bytes, HEADER_LEN);
        legacy.snapshot_records = scan.records.len();
        legacy.corrupt_records += scan.skipped;
        legacy.corrupt_tail |= scan.tail.is_some();
        for record in scan.records {
            codec::apply(&mut legacy.entries, record);
        }
    }
    if let Some(bytes) = journal {
        match parse_header(JOURNAL_MAGIC, bytes) {
            Ok(generation) if generation <= covered => legacy.stale_journal = true,
            Ok(_) => {
                let scan = scan(bytes, HEADER_LEN);
                legacy.journal_records = scan.records.len();
                legacy.corrupt_records += scan.skipped;
                legacy.truncated_bytes = (bytes.len() - scan.valid_len) as u64;
                match scan.tail {
                    Some(TailKind::Torn) => legacy.torn_tail = true,
                    Some(TailKind::Corrupt) => legacy.corrupt_tail = true,
                    None => {}
                }
                for record in scan.records {
                    codec::apply(&mut legacy.entries, record);
                }
            }
            Err(_) => {
                legacy.corrupt_tail = true;
                legacy.truncated_bytes = bytes.len() as u64;
            }
        }
    }
    Ok(legacy)
}

/// How a scan ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TailKind {
    /// The last frame is incomplete: a write cut short by a crash.
    Torn,
    /// A frame is complete but fails its checksum or does not decode, or its length is
    /// impossible, and what follows cannot be read as clean frames.
    Corrupt,
}

/// The outcome of scanning a run of frames.
#[derive(Debug)]
struct Scan {
    records: Vec<Record>,
    /// Offset just past the last frame kept; everything after it is discarded.
    valid_len: usize,
    /// Complete frames with a bad checksum that were skipped because clean frames follow them.
    skipped: u64,
    /// Why the scan stopped before the end, if it did.
    tail: Option<TailKind>,
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
            Frame::Good { body, next } if codec::decode(body).is_some() => pos = next,
            _ => return false,
        }
    }
}

/// Scans frames in `data` from `start`.
///
/// A frame that fails its checksum (a bit flip) is skipped when the rest of the data reads as
/// clean frames; otherwise the scan stops there and the rest is reported as a corrupt tail.
fn scan(data: &[u8], start: usize) -> Scan {
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
            Frame::Good { body, next } => match codec::decode(body) {
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

    fn frame(body: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
        out.extend_from_slice(body);
    }

    fn removes(count: u8) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut starts = Vec::new();
        for n in 0..count {
            starts.push(out.len());
            let mut body = Vec::new();
            codec::encode_remove(
                EntryId::from_ulid(ulid::Ulid::from_parts(1, n.into())),
                &mut body,
            );
            frame(&body, &mut out);
        }
        (out, starts)
    }

    #[test]
    fn the_old_scan_skips_a_bad_middle_frame_and_stops_at_a_torn_or_bad_last_one() {
        let (out, starts) = removes(3);
        assert_eq!(scan(&out, 0).records.len(), 3);
        let mut middle = out.clone();
        middle[starts[1] + 10] ^= 1;
        let middle = scan(&middle, 0);
        assert_eq!(
            (middle.records.len(), middle.skipped, middle.tail),
            (2, 1, None)
        );
        let torn = scan(&out[..out.len() - 2], 0);
        assert_eq!((torn.records.len(), torn.tail), (2, Some(TailKind::Torn)));
        let mut last = out.clone();
        last[starts[2] + 10] ^= 1;
        let last = scan(&last, 0);
        assert_eq!(
            (last.records.len(), last.valid_len, last.tail),
            (2, starts[2], Some(TailKind::Corrupt))
        );
    }
}
