//! `wal-tail.bin`: the WAL records a backup holds beyond its segments.
//!
//! ```text
//! magic "MSBTAIL1" | then per record: u64 lsn | u32 body length | u32 crc32c(body) | body
//! ```
//!
//! The body is the WAL's own record body (`wal::encode_body`).

use crate::wal::{self, WalRecord};

const MAGIC: &[u8; 8] = b"MSBTAIL1";

/// Encodes `records` (in LSN order).
pub(crate) fn encode(records: &[WalRecord]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for record in records {
        let body = wal::encode_body(&record.collection, record.incarnation, &record.entries);
        out.extend_from_slice(&record.lsn.to_le_bytes());
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a tail file; `Err` says what is wrong (records must be in increasing LSN order).
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<WalRecord>, String> {
    let mut rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("wrong magic bytes")?;
    let mut records: Vec<WalRecord> = Vec::new();
    while !rest.is_empty() {
        let header = rest.get(..16).ok_or("a record header is cut short")?;
        let lsn = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[12..16].try_into().unwrap_or_default());
        let body = rest
            .get(16..16 + len)
            .ok_or_else(|| format!("record at lsn {lsn} is cut short"))?;
        if crc32c::crc32c(body) != crc {
            return Err(format!("record at lsn {lsn} fails its checksum"));
        }
        if records.last().is_some_and(|last| last.lsn >= lsn) {
            return Err(format!("record at lsn {lsn} is out of order"));
        }
        let record = wal::decode_body(lsn, body)
            .ok_or_else(|| format!("record at lsn {lsn} does not decode"))?;
        records.push(record);
        rest = &rest[16 + len..];
    }
    Ok(records)
}
