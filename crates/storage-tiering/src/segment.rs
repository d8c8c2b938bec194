//! Immutable segment files: sorted records in checksummed blocks, a block index and a footer.
//!
//! Layout: `blocks | index | footer`. A block is a run of records (`u16 id length | id | u64 lsn |
//! u8 kind | [u32 value length | value]`) in id order. The index lists each block's first and last
//! id, offset, length and CRC-32C. The fixed 68-byte footer holds the index's offset, length and
//! CRC-32C, the LSN range, the record count, the upload's write id, its own CRC-32C and a magic.
//! Every read checks the CRC of what it read, so corrupt bytes are reported, never served. The
//! index opens with the blocks' codec: stored as is, gzip- or zstd-compressed (the CRC covers the
//! stored bytes, so corruption is caught before decompression, and decompression stops at
//! [`MAX_BLOCK`]; see `docs/decisions/0061`). A codec whose cargo feature this build leaves out
//! reads as [`SegmentError::MissingFeature`], after the CRC check: intact data, never corrupt
//! (`docs/decisions/0118`).

#[cfg(any(feature = "gzip", feature = "zstd"))]
use std::io::Read as _;
#[cfg(feature = "gzip")]
use std::io::Write as _;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::Compression;
use crate::error::SegmentError;

/// Largest decompressed block accepted (a bound against a corrupt or hostile length).
#[cfg(any(feature = "gzip", feature = "zstd"))]
const MAX_BLOCK: u64 = 64 * 1024 * 1024;

/// The largest zstd window a block may ask the decoder to allocate: 2^26 bytes = [`MAX_BLOCK`].
/// zstd's own default limit is 2^27; a block never needs a window larger than its content.
#[cfg(feature = "zstd")]
const ZSTD_WINDOW_LOG_MAX: u32 = 26;

/// zstd's default level, the C library's own balance of speed against ratio.
#[cfg(feature = "zstd")]
const ZSTD_LEVEL: i32 = 3;

/// Bytes of the footer.
pub(crate) const FOOTER_LEN: usize = 68;
const MAGIC: &[u8; 8] = b"MSTSEG01";

/// A record's state in one source: a value or a tombstone, with the LSN that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) lsn: u64,
    pub(crate) value: Option<Bytes>,
}

impl Entry {
    pub(crate) fn size(&self, id: &str) -> u64 {
        (id.len() + 24 + self.value.as_ref().map_or(0, Bytes::len)) as u64
    }
}

/// One block of a segment, as listed in its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockRef {
    pub(crate) first: String,
    pub(crate) last: String,
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) codec: Compression,
}

fn codec_byte(codec: Compression) -> u8 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Zstd => 2,
    }
}

/// The stored form of a block under `codec`, or `None` when the compressor failed (it only does
/// when it cannot allocate its state) or is left out of this build (opening refuses such a
/// configuration first); [`encode`] then stores the segment uncompressed.
fn compress(block: &[u8], codec: Compression) -> Option<Vec<u8>> {
    match codec {
        Compression::None => Some(block.to_vec()),
        #[cfg(feature = "gzip")]
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(block).ok()?;
            encoder.finish().ok()
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd::bulk::compress(block, ZSTD_LEVEL).ok(),
        #[cfg(not(all(feature = "gzip", feature = "zstd")))]
        _ => None,
    }
}

/// The error for blocks stored under a codec whose feature this build leaves out: the segment
/// is intact, only unreadable here, so it must not be handled as corrupt.
#[cfg(not(all(feature = "gzip", feature = "zstd")))]
fn codec_left_out(feature: &'static str) -> SegmentError {
    SegmentError::MissingFeature(crate::error::MissingFeature {
        feature,
        needed_for: format!("reading {feature}-compressed segment blocks"),
    })
}

/// Reads a decompressor to its end. More than [`MAX_BLOCK`] bytes is refused, not truncated: the
/// output never grows past the bound, whatever size the compressed stream declares.
#[cfg(any(feature = "gzip", feature = "zstd"))]
fn inflate(decoder: impl std::io::Read) -> Result<Vec<u8>, SegmentError> {
    let malformed = |_| SegmentError::Corrupt("compressed block");
    let mut out = Vec::new();
    let mut bounded = decoder.take(MAX_BLOCK);
    bounded.read_to_end(&mut out).map_err(malformed)?;
    let mut beyond = Vec::new();
    bounded
        .into_inner()
        .take(1)
        .read_to_end(&mut beyond)
        .map_err(malformed)?;
    if !beyond.is_empty() {
        return Err(SegmentError::Corrupt("compressed block over 64 MiB"));
    }
    Ok(out)
}

/// The decoded footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub(crate) index_offset: u64,
    pub(crate) index_len: u32,
    pub(crate) index_crc: u32,
    pub(crate) min_lsn: u64,
    pub(crate) max_lsn: u64,
    pub(crate) records: u64,
    pub(crate) write_id: u128,
}

/// What the manifest records about one segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentMeta {
    /// The segment's id (a ULID); its object key and file name derive from it.
    pub(crate) id: String,
    pub(crate) size: u64,
    pub(crate) crc32c: u32,
    pub(crate) min_lsn: u64,
    pub(crate) max_lsn: u64,
    pub(crate) records: u64,
    /// The unique id of the write that produced the object (a ULID).
    pub(crate) write_id: String,
}

fn put_record(out: &mut Vec<u8>, id: &str, entry: &Entry) {
    out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&entry.lsn.to_le_bytes());
    match &entry.value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(value);
        }
    }
}

fn put_string(out: &mut Vec<u8>, value: &str) {
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// Encodes sorted `entries` into a segment file; returns the bytes and the block index.
/// `lsn_range` overrides the LSN range the footer records (a compacted segment keeps its inputs'
/// range even when it dropped their newest tombstone).
pub(crate) fn encode(
    entries: &[(String, Entry)],
    block_bytes: usize,
    write_id: u128,
    lsn_range: Option<(u64, u64)>,
    codec: Compression,
) -> (Vec<u8>, Vec<BlockRef>) {
    let mut out = Vec::new();
    let mut block_buffer = Vec::new();
    let mut blocks = Vec::new();
    let mut first: Option<&str> = None;
    let mut last = "";
    let (mut min_lsn, mut max_lsn) = (u64::MAX, 0u64);
    let mut compressor_failed = false;
    let mut close = |out: &mut Vec<u8>,
                     block: &mut Vec<u8>,
                     blocks: &mut Vec<BlockRef>,
                     first: &mut Option<&str>,
                     last: &str| {
        if let Some(first_id) = first.take() {
            let stored = compress(block, codec).unwrap_or_else(|| {
                compressor_failed = true;
                Vec::new()
            });
            blocks.push(BlockRef {
                first: first_id.to_owned(),
                last: last.to_owned(),
                offset: out.len() as u64,
                len: u32::try_from(stored.len()).unwrap_or(u32::MAX),
                crc: crc32c::crc32c(&stored),
                codec,
            });
            out.extend_from_slice(&stored);
            block.clear();
        }
    };
    for (id, entry) in entries {
        min_lsn = min_lsn.min(entry.lsn);
        max_lsn = max_lsn.max(entry.lsn);
        if first.is_none() {
            first = Some(id);
        }
        put_record(&mut block_buffer, id, entry);
        last = id;
        if block_buffer.len() >= block_bytes {
            close(&mut out, &mut block_buffer, &mut blocks, &mut first, last);
        }
    }
    close(&mut out, &mut block_buffer, &mut blocks, &mut first, last);
    if compressor_failed {
        // One codec covers every block of a segment: a block the compressor failed on would
        // otherwise be stored empty under a valid CRC, so the whole segment is stored as is.
        tracing::warn!(
            ?codec,
            "block compression failed; segment stored uncompressed"
        );
        return encode(entries, block_bytes, write_id, lsn_range, Compression::None);
    }
    if let Some((min, max)) = lsn_range {
        min_lsn = min;
        max_lsn = max;
    }
    let min_lsn = if min_lsn == u64::MAX { 0 } else { min_lsn };
    let lsns = (min_lsn, max_lsn);
    write_index_and_footer(
        &mut out,
        codec,
        &blocks,
        lsns,
        entries.len() as u64,
        write_id,
    );
    (out, blocks)
}

/// Appends the block index and the footer to `out`, which holds the blocks.
fn write_index_and_footer(
    out: &mut Vec<u8>,
    codec: Compression,
    blocks: &[BlockRef],
    (min_lsn, max_lsn): (u64, u64),
    records: u64,
    write_id: u128,
) {
    let index_offset = out.len() as u64;
    let mut index = vec![codec_byte(codec)];
    index.extend_from_slice(
        &u32::try_from(blocks.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for block in blocks {
        put_string(&mut index, &block.first);
        put_string(&mut index, &block.last);
        index.extend_from_slice(&block.offset.to_le_bytes());
        index.extend_from_slice(&block.len.to_le_bytes());
        index.extend_from_slice(&block.crc.to_le_bytes());
    }
    out.extend_from_slice(&index);
    let footer_start = out.len();
    out.extend_from_slice(&index_offset.to_le_bytes());
    out.extend_from_slice(&u32::try_from(index.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&index).to_le_bytes());
    out.extend_from_slice(&min_lsn.to_le_bytes());
    out.extend_from_slice(&max_lsn.to_le_bytes());
    out.extend_from_slice(&records.to_le_bytes());
    out.extend_from_slice(&write_id.to_le_bytes());
    let footer_crc = crc32c::crc32c(out.get(footer_start..).unwrap_or_default());
    out.extend_from_slice(&footer_crc.to_le_bytes());
    out.extend_from_slice(MAGIC);
}

/// Reads little-endian fields off the front of a byte slice; `None` once too few bytes are left.
/// Segments and WAL record bodies decode with it.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    /// Whether every byte was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    /// `len` bytes of UTF-8.
    pub(crate) fn str_of(&mut self, len: usize) -> Option<String> {
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
    /// A string with a `u16` length before it.
    fn string(&mut self) -> Option<String> {
        let len = usize::from(self.u16()?);
        self.str_of(len)
    }
}

/// Decodes the footer from the last [`FOOTER_LEN`] bytes of a segment.
pub(crate) fn decode_footer(tail: &[u8]) -> Result<Footer, SegmentError> {
    let corrupt = || SegmentError::Corrupt("footer");
    if tail.len() != FOOTER_LEN || tail.get(60..) != Some(&MAGIC[..]) {
        return Err(corrupt());
    }
    let body = tail.get(..56).ok_or_else(corrupt)?;
    let crc = u32::from_le_bytes(
        tail.get(56..60)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?,
    );
    if crc32c::crc32c(body) != crc {
        return Err(corrupt());
    }
    let mut cursor = Cursor::new(body);
    let parse = |cursor: &mut Cursor<'_>| -> Option<Footer> {
        Some(Footer {
            index_offset: cursor.u64()?,
            index_len: cursor.u32()?,
            index_crc: cursor.u32()?,
            min_lsn: cursor.u64()?,
            max_lsn: cursor.u64()?,
            records: cursor.u64()?,
            write_id: u128::from_le_bytes(cursor.take(16)?.try_into().ok()?),
        })
    };
    parse(&mut cursor).ok_or_else(corrupt)
}

/// Decodes a block index, checking its CRC against the footer's.
pub(crate) fn decode_index(index: &[u8], footer: &Footer) -> Result<Vec<BlockRef>, SegmentError> {
    if crc32c::crc32c(index) != footer.index_crc {
        return Err(SegmentError::Corrupt("index"));
    }
    let mut cursor = Cursor::new(index);
    let parse = |cursor: &mut Cursor<'_>| -> Option<Vec<BlockRef>> {
        let codec = match cursor.take(1)?.first()? {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Zstd,
            _ => return None,
        };
        let count = cursor.u32()?;
        let mut blocks = Vec::new();
        for _ in 0..count {
            blocks.push(BlockRef {
                first: cursor.string()?,
                last: cursor.string()?,
                offset: cursor.u64()?,
                len: cursor.u32()?,
                crc: cursor.u32()?,
                codec,
            });
        }
        Some(blocks)
    };
    parse(&mut cursor).ok_or(SegmentError::Corrupt("index"))
}

/// Decodes one stored block, checking its CRC before decompressing it.
pub(crate) fn decode_block(
    stored: &[u8],
    block: &BlockRef,
) -> Result<Vec<(String, Entry)>, SegmentError> {
    if crc32c::crc32c(stored) != block.crc {
        return Err(SegmentError::Corrupt("block"));
    }
    #[cfg(any(feature = "gzip", feature = "zstd"))]
    let inflated;
    let raw = match block.codec {
        Compression::None => stored,
        #[cfg(feature = "gzip")]
        Compression::Gzip => {
            inflated = inflate(flate2::read::GzDecoder::new(stored))?;
            &inflated
        }
        #[cfg(not(feature = "gzip"))]
        Compression::Gzip => return Err(codec_left_out("gzip")),
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let malformed = |_| SegmentError::Corrupt("compressed block");
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(stored).map_err(malformed)?;
            // A frame asking for a larger window is refused before the decoder allocates it.
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(malformed)?;
            inflated = inflate(decoder)?;
            &inflated
        }
        #[cfg(not(feature = "zstd"))]
        Compression::Zstd => return Err(codec_left_out("zstd")),
    };
    let mut cursor = Cursor::new(raw);
    let mut out = Vec::new();
    while !cursor.is_empty() {
        let mut parse = || -> Option<(String, Entry)> {
            let id = cursor.string()?;
            let lsn = cursor.u64()?;
            let kind = cursor.take(1)?.first().copied()?;
            let value = match kind {
                0 => None,
                1 => {
                    let len = usize::try_from(cursor.u32()?).ok()?;
                    Some(Bytes::copy_from_slice(cursor.take(len)?))
                }
                _ => return None,
            };
            Some((id, Entry { lsn, value }))
        };
        out.push(parse().ok_or(SegmentError::Corrupt("block"))?);
    }
    Ok(out)
}

/// A decoded segment: its records, footer and block index.
pub(crate) type Decoded = (Vec<(String, Entry)>, Footer, Vec<BlockRef>);

/// Decodes a whole segment file, checking every checksum.
pub(crate) fn decode_all(bytes: &[u8]) -> Result<Decoded, SegmentError> {
    let footer_start = bytes
        .len()
        .checked_sub(FOOTER_LEN)
        .ok_or(SegmentError::Corrupt("footer"))?;
    let footer = decode_footer(bytes.get(footer_start..).unwrap_or_default())?;
    let index_start =
        usize::try_from(footer.index_offset).map_err(|_| SegmentError::Corrupt("footer"))?;
    let index_end = index_start + footer.index_len as usize;
    let index = bytes
        .get(index_start..index_end)
        .filter(|_| index_end == footer_start)
        .ok_or(SegmentError::Corrupt("footer"))?;
    let blocks = decode_index(index, &footer)?;
    let mut entries = Vec::with_capacity(usize::try_from(footer.records).unwrap_or(0).min(1 << 20));
    for block in &blocks {
        let start = usize::try_from(block.offset).map_err(|_| SegmentError::Corrupt("index"))?;
        let data = bytes
            .get(start..start + block.len as usize)
            .ok_or(SegmentError::Corrupt("index"))?;
        entries.extend(decode_block(data, block)?);
    }
    if entries.len() as u64 != footer.records {
        return Err(SegmentError::Corrupt("record count"));
    }
    Ok((entries, footer, blocks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<(String, Entry)> {
        (0..n)
            .map(|i| {
                let value = (i % 5 != 0).then(|| Bytes::from(format!("value-{i}")));
                (
                    format!("k{i:05}"),
                    Entry {
                        lsn: i as u64 + 10,
                        value,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn segments_round_trip_over_many_blocks() {
        let entries = sample(500);
        let (bytes, blocks) = encode(&entries, 512, 42, None, Compression::None);
        assert!(blocks.len() > 5, "{}", blocks.len());
        let (decoded, footer, index) = decode_all(&bytes).expect("decodes");
        assert_eq!(decoded, entries);
        assert_eq!(index, blocks);
        assert_eq!(
            (
                footer.min_lsn,
                footer.max_lsn,
                footer.records,
                footer.write_id
            ),
            (10, 509, 500, 42)
        );
    }

    #[test]
    fn any_flipped_byte_is_detected() {
        for codec in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let (bytes, _) = encode(&sample(50), 256, 7, None, codec);
            for position in (0..bytes.len()).step_by(3) {
                let mut damaged = bytes.clone();
                if let Some(byte) = damaged.get_mut(position) {
                    *byte ^= 0x40;
                }
                assert!(
                    decode_all(&damaged).is_err(),
                    "{codec:?}: flip at {position} went unnoticed"
                );
            }
            assert!(decode_all(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[cfg(all(feature = "gzip", feature = "zstd"))]
    #[test]
    fn compressed_blocks_round_trip_and_shrink_repetitive_values() {
        let entries: Vec<(String, Entry)> = (0..400)
            .map(|i| {
                (
                    format!("k{i:05}"),
                    Entry {
                        lsn: i,
                        value: Some(Bytes::from("abc".repeat(40))),
                    },
                )
            })
            .collect();
        let (plain, _) = encode(&entries, 1024, 1, None, Compression::None);
        for (codec, byte) in [(Compression::Gzip, 1), (Compression::Zstd, 2)] {
            let (packed, blocks) = encode(&entries, 1024, 1, None, codec);
            assert!(
                packed.len() * 3 < plain.len(),
                "{codec:?}: {} vs {}",
                packed.len(),
                plain.len()
            );
            assert!(blocks.iter().all(|b| b.codec == codec));
            let footer = decode_footer(&packed[packed.len() - FOOTER_LEN..]).expect("footer");
            assert_eq!(packed[footer.index_offset as usize], byte, "{codec:?}");
            let (decoded, _, index) = decode_all(&packed).expect("decodes");
            assert_eq!(decoded, entries, "{codec:?}");
            assert_eq!(index, blocks);
            for block in &blocks {
                let stored = &packed[block.offset as usize..][..block.len as usize];
                assert!(!decode_block(stored, block).expect("decodes").is_empty());
            }
        }
    }

    /// A one-block segment holding `stored` as its block under `codec`, every CRC valid: what a
    /// hostile writer with access to the object store could produce.
    #[cfg(feature = "zstd")]
    fn segment_around(stored: &[u8], codec: Compression) -> (Vec<u8>, BlockRef) {
        let block = BlockRef {
            first: "a".to_owned(),
            last: "z".to_owned(),
            offset: 0,
            len: u32::try_from(stored.len()).expect("small"),
            crc: crc32c::crc32c(stored),
            codec,
        };
        let mut out = stored.to_vec();
        write_index_and_footer(&mut out, codec, std::slice::from_ref(&block), (1, 1), 1, 7);
        (out, block)
    }

    #[cfg(all(feature = "gzip", feature = "zstd"))]
    #[test]
    fn decompression_bombs_are_refused_with_a_typed_error() {
        // Zeros one byte past the bound, streamed through the encoders so the test never holds
        // them: a few KiB of zstd (no content size in the frame) or 65 KiB of gzip.
        let zeros = || std::io::repeat(0).take(MAX_BLOCK + 1);
        let zstd_bomb = zstd::stream::encode_all(zeros(), 1).expect("compresses");
        let mut gzip_bomb = Vec::new();
        flate2::read::GzEncoder::new(zeros(), flate2::Compression::best())
            .read_to_end(&mut gzip_bomb)
            .expect("compresses");
        for (codec, bomb) in [
            (Compression::Zstd, zstd_bomb),
            (Compression::Gzip, gzip_bomb),
        ] {
            assert!(bomb.len() < 128 * 1024, "{codec:?}: {} bytes", bomb.len());
            let (segment, block) = segment_around(&bomb, codec);
            let refused = SegmentError::Corrupt("compressed block over 64 MiB");
            assert_eq!(
                decode_block(&bomb, &block),
                Err(refused.clone()),
                "{codec:?}"
            );
            assert_eq!(decode_all(&segment).map(|_| ()), Err(refused), "{codec:?}");
        }
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_frames_asking_for_a_large_window_or_misstating_their_size_are_refused() {
        // A valid frame of one zero byte (magic, no content size, a window descriptor, one last
        // raw block) whose header asks for a 128 MiB window (exponent 27 - 10): zstd's default
        // limit takes it, the 64 MiB limit here refuses it before the window is allocated.
        let large_window = vec![
            0x28,
            0xB5,
            0x2F,
            0xFD,
            0x00,
            17 << 3,
            0x09,
            0x00,
            0x00,
            0x00,
        ];
        assert_eq!(
            zstd::stream::decode_all(&large_window[..]).expect("a valid frame"),
            [0]
        );
        // A frame whose header says 10 bytes where its block holds 100.
        let honest = zstd::bulk::compress(&[7; 100], 1).expect("compresses");
        assert_eq!(
            (honest[4], honest[5]),
            (0x20, 100),
            "single segment, 1-byte content size"
        );
        let mut misstated = honest.clone();
        misstated[5] = 10;
        let garbage = b"not a zstd frame".to_vec();
        let truncated = honest[..honest.len() - 3].to_vec();
        for stored in [large_window, misstated, garbage, truncated] {
            let (segment, block) = segment_around(&stored, Compression::Zstd);
            assert_eq!(
                decode_block(&stored, &block),
                Err(SegmentError::Corrupt("compressed block")),
                "{stored:x?}"
            );
            assert!(decode_all(&segment).is_err());
        }
        let (segment, _) = segment_around(&honest, Compression::Zstd);
        assert!(
            decode_all(&segment).is_err(),
            "100 bytes of 7s are not records"
        );
    }

    /// The segments of `tests/it/fixtures/compressed-prefix` whose blocks are under `codec`.
    #[cfg(not(all(feature = "gzip", feature = "zstd")))]
    fn fixture_segments(codec: &str) -> Vec<Vec<u8>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/it/fixtures/compressed-prefix/segments");
        let mut out = Vec::new();
        for policy in ["memory_s3", "s3_only"] {
            for file in std::fs::read_dir(root.join(format!("{codec}_{policy}"))).expect("a dir") {
                out.push(std::fs::read(file.expect("an entry").path()).expect("a segment"));
            }
        }
        out
    }

    /// Blocks under a codec this build leaves out decode to [`SegmentError::MissingFeature`]
    /// naming it, never to `Corrupt`; a block that fails its checksum is still `Corrupt`.
    #[cfg(not(all(feature = "gzip", feature = "zstd")))]
    fn check_left_out_codec(codec: &'static str) {
        for segment in fixture_segments(codec) {
            let missing = match decode_all(&segment) {
                Err(SegmentError::MissingFeature(missing)) => missing,
                other => panic!("{codec}: {:?}", other.map(|_| ())),
            };
            assert_eq!(missing.feature, codec);
            assert_eq!(
                missing.needed_for,
                format!("reading {codec}-compressed segment blocks")
            );
            let footer = decode_footer(&segment[segment.len() - FOOTER_LEN..]).expect("footer");
            let start = usize::try_from(footer.index_offset).expect("small");
            let index = &segment[start..segment.len() - FOOTER_LEN];
            let blocks = decode_index(index, &footer).expect("the index is not compressed");
            for block in &blocks {
                let stored = &segment[block.offset as usize..][..block.len as usize];
                assert!(matches!(
                    decode_block(stored, block),
                    Err(SegmentError::MissingFeature(_))
                ));
                let mut damaged = stored.to_vec();
                damaged[0] ^= 0x40;
                assert_eq!(
                    decode_block(&damaged, block),
                    Err(SegmentError::Corrupt("block"))
                );
            }
        }
    }

    #[cfg(not(feature = "gzip"))]
    #[test]
    fn gzip_blocks_without_the_gzip_feature_are_a_missing_feature_not_corruption() {
        check_left_out_codec("gzip");
    }

    #[cfg(not(feature = "zstd"))]
    #[test]
    fn zstd_blocks_without_the_zstd_feature_are_a_missing_feature_not_corruption() {
        check_left_out_codec("zstd");
    }

    #[test]
    fn an_empty_segment_is_valid() {
        let (bytes, blocks) = encode(&[], 512, 1, Some((3, 9)), Compression::Gzip);
        assert!(blocks.is_empty());
        let (entries, footer, _) = decode_all(&bytes).expect("decodes");
        assert!(entries.is_empty());
        assert_eq!((footer.records, footer.min_lsn, footer.max_lsn), (0, 3, 9));
    }
}
