//! The on-disk format of a segment and the scanner that reads it back.
//!
//! ```text
//! segment  header | frame | frame | ... | zeros (space filled ahead of the frames)
//! header   b"MSJRNL\r\n" | u32 version (1) | u64 base LSN | u32 crc32c(previous 20 bytes)   24 bytes
//! frame    u32 len | u32 crc | u64 lsn | payload                                             16 + payload bytes
//!          len = 8 + payload length; crc = crc32c(payload | len | lsn)
//! ```
//!
//! Integers are little-endian. A frame is never all zeros (its length is at least 8), so a zero
//! header followed by zeros to the end of the file is the end of the segment. The CRC covers the
//! length and the LSN as well as the payload, so a damaged length is caught, not followed.
//!
//! The scanner reads frames from the header on. Where a frame does not check out, it
//! resynchronises: it looks, byte by byte, for the next offset where a valid frame starts: length
//! in range, whole, CRC correct, and an LSN above the last good one but at most 2^32 above it
//! (LSNs only grow; this keeps noise in damaged bytes from passing for a frame, as the storage
//! WAL does, decision 0075). The bytes in between are a damaged region; what the damage means (a
//! torn tail or corruption) is decided by the caller, who knows whether valid frames follow
//! anywhere in the log.

use std::ops::Range;

/// Bytes of a segment header.
pub(crate) const HEADER_LEN: usize = 24;
/// Bytes of a frame before its payload.
pub(crate) const FRAME_OVERHEAD: usize = 16;
/// The largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

const MAGIC: &[u8; 8] = b"MSJRNL\r\n";
const VERSION: u32 = 1;
/// The smallest and largest value of a frame's length field.
const MIN_LEN: usize = 8;
const MAX_LEN: usize = MAX_PAYLOAD + 8;

/// A segment header for a segment whose first frame has LSN `base` or higher.
pub(crate) fn header(base: u64) -> [u8; HEADER_LEN] {
    let mut out = [0; HEADER_LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&out[..20]);
    out[20..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The base LSN of a valid header at the start of `data`.
fn parse_header(data: &[u8]) -> Option<u64> {
    let head = data.get(..HEADER_LEN)?;
    let crc = u32::from_le_bytes(head[20..24].try_into().ok()?);
    if &head[..8] != MAGIC || crc32c::crc32c(&head[..20]) != crc {
        return None;
    }
    if u32::from_le_bytes(head[8..12].try_into().ok()?) != VERSION {
        return None;
    }
    Some(u64::from_le_bytes(head[12..20].try_into().ok()?))
}

/// The CRC of a frame's payload, computed before the LSN is known (outside the append lock).
pub(crate) fn payload_crc(payload: &[u8]) -> u32 {
    crc32c::crc32c(payload)
}

/// Appends a frame to `out`, given the CRC of its payload.
pub(crate) fn encode(out: &mut Vec<u8>, lsn: u64, payload: &[u8], payload_crc: u32) {
    // Callers check the payload against MAX_PAYLOAD first, so the length fits in a u32.
    let len = u32::try_from(payload.len() + 8).unwrap_or(u32::MAX);
    let lsn = lsn.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(payload_crc, &len.to_le_bytes()), &lsn);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn);
    out.extend_from_slice(payload);
}

/// A valid frame found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Where the frame starts.
    pub(crate) offset: usize,
    pub(crate) lsn: u64,
    pub(crate) payload: Range<usize>,
    /// Where the frame ends (the next one starts).
    pub(crate) end: usize,
}

/// The frame starting at `offset`, if one is there whole and valid.
fn frame_at(data: &[u8], offset: usize) -> Option<Frame> {
    let head = data.get(offset..offset.checked_add(FRAME_OVERHEAD)?)?;
    let len_bytes: [u8; 4] = head[..4].try_into().ok()?;
    let len = usize::try_from(u32::from_le_bytes(len_bytes)).ok()?;
    if !(MIN_LEN..=MAX_LEN).contains(&len) {
        return None;
    }
    let end = offset + 8 + len;
    let payload = offset + FRAME_OVERHEAD..end;
    let lsn_bytes = &head[8..16];
    let body = data.get(payload.clone())?;
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    let computed = crc32c::crc32c_append(
        crc32c::crc32c_append(payload_crc(body), &len_bytes),
        lsn_bytes,
    );
    (computed == crc).then(|| Frame {
        offset,
        lsn: u64::from_le_bytes(lsn_bytes.try_into().unwrap_or_default()),
        payload,
        end,
    })
}

/// How far above the last good LSN a frame found by resynchronising may be.
const MAX_LSN_JUMP: u64 = 1 << 32;

/// The first offset at or after `from` where a valid frame with an LSN plausibly after `last`
/// starts.
fn resync(data: &[u8], from: usize, last: u64) -> Option<usize> {
    let mut offset = from;
    while offset + FRAME_OVERHEAD <= data.len() {
        if frame_at(data, offset)
            .is_some_and(|frame| frame.lsn > last && frame.lsn - last <= MAX_LSN_JUMP)
        {
            return Some(offset);
        }
        if data[offset] == 0 {
            // A frame's length is never 0, so no frame starts where 4 zero bytes do: jump to
            // the first offset whose length field holds the next non-zero byte.
            let next = data[offset..].iter().position(|byte| *byte != 0)? + offset;
            offset = (offset + 1).max(next.saturating_sub(3));
        } else {
            offset += 1;
        }
    }
    None
}

/// Bytes of `data` up to and including its last non-zero byte.
fn non_zero_len(data: &[u8]) -> usize {
    data.iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1)
}

/// What a segment holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The header's base LSN, when the header is valid.
    pub(crate) base: Option<u64>,
    /// The valid frames, in file order.
    pub(crate) frames: Vec<Frame>,
    /// Regions that do not read as frames: `start..end`, where `end` is the start of the next
    /// valid frame in this file or, for the last region, the end of the non-zero bytes.
    pub(crate) damage: Vec<Range<usize>>,
    /// The file holds nothing at all (no bytes, or zeros only).
    pub(crate) empty: bool,
}

/// Reads every frame of a segment, resynchronising past damage; `last` is the highest LSN of
/// the segments before it (0 for none).
pub(crate) fn scan(data: &[u8], mut last: u64) -> Scan {
    let mut scan = Scan::default();
    let tail = non_zero_len(data);
    if tail == 0 {
        scan.empty = true;
        return scan;
    }
    let mut offset = match parse_header(data) {
        Some(base) => {
            scan.base = Some(base);
            last = last.max(base.saturating_sub(1));
            HEADER_LEN
        }
        None => match resync(data, 1, last) {
            Some(next) => {
                scan.damage.push(0..next);
                next
            }
            None => {
                scan.damage.push(0..tail);
                return scan;
            }
        },
    };
    while offset < tail {
        if let Some(frame) = frame_at(data, offset) {
            offset = frame.end;
            last = last.max(frame.lsn);
            scan.frames.push(frame);
            continue;
        }
        match resync(data, offset + 1, last) {
            Some(next) => {
                scan.damage.push(offset..next);
                offset = next;
            }
            None => {
                scan.damage.push(offset..tail);
                break;
            }
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let mut out = header(1).to_vec();
        let mut offsets = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            offsets.push(out.len());
            encode(&mut out, index as u64 + 1, payload, payload_crc(payload));
        }
        (out, offsets)
    }

    #[test]
    fn frames_round_trip_and_zeros_end_the_segment() {
        let (mut data, offsets) = segment(&[b"one", b"", b"three"]);
        data.extend_from_slice(&[0; 100]);
        let scan = scan(&data, 0);
        assert_eq!(scan.base, Some(1));
        assert!(scan.damage.is_empty());
        let lsns: Vec<u64> = scan.frames.iter().map(|frame| frame.lsn).collect();
        assert_eq!(lsns, [1, 2, 3]);
        assert_eq!(&data[scan.frames[2].payload.clone()], b"three");
        assert_eq!(scan.frames[1].offset, offsets[1]);
    }

    #[test]
    fn a_damaged_length_resynchronises_on_the_next_frame() {
        let (mut data, offsets) = segment(&[b"aaaa", b"bbbb", b"cccc"]);
        // A length that runs past the end of the file would look like a torn frame.
        data[offsets[1] + 3] = 0x70;
        let scan = scan(&data, 0);
        assert_eq!(scan.damage, vec![offsets[1]..offsets[2]]);
        assert_eq!(scan.frames.len(), 2);
        assert_eq!(scan.frames[1].lsn, 3);
    }

    #[test]
    fn a_torn_last_frame_is_a_last_damage_region() {
        let (data, offsets) = segment(&[b"aaaa", b"bbbbbbbb"]);
        let torn = &data[..data.len() - 3];
        let scan = scan(torn, 0);
        assert_eq!(scan.frames.len(), 1);
        assert_eq!(scan.damage, vec![offsets[1]..torn.len()]);
    }

    #[test]
    fn a_damaged_header_is_damage_at_zero() {
        let (mut data, offsets) = segment(&[b"aaaa"]);
        data[3] ^= 1;
        let scan = scan(&data, 0);
        assert_eq!(scan.base, None);
        assert_eq!(scan.damage, vec![0..offsets[0]]);
        assert_eq!(scan.frames.len(), 1);
        assert!(super::scan(&[0; 64], 0).empty);
        assert!(super::scan(&[], 0).empty);
    }

    #[test]
    fn a_valid_frame_with_an_implausible_lsn_does_not_end_the_damage() {
        let (mut data, offsets) = segment(&[b"aaaa", b"bbbb", b"cccc"]);
        // Damage the second frame and plant, inside the damage, a valid frame of an old LSN.
        let mut stale = Vec::new();
        encode(&mut stale, 1, b"", payload_crc(b""));
        data[offsets[1]] ^= 0xff;
        data[offsets[1] + 4..offsets[1] + 4 + stale.len()].copy_from_slice(&stale);
        let scan = scan(&data, 0);
        assert_eq!(scan.damage, vec![offsets[1]..offsets[2]]);
        assert_eq!(
            scan.frames
                .iter()
                .map(|frame| frame.lsn)
                .collect::<Vec<_>>(),
            [1, 3]
        );
        // After the segments before it, LSNs below their last one are stale too.
        let (data, offsets) = segment(&[b"aaaa"]);
        let mut broken = data.clone();
        broken[2] ^= 1;
        assert_eq!(super::scan(&broken, 0).damage, vec![0..offsets[0]]);
        assert_eq!(super::scan(&broken, 5).damage, vec![0..data.len()]);
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let (data, _) = segment(&[b"alpha", b"beta", b"gamma"]);
        for index in HEADER_LEN..data.len() {
            for bit in 0..8 {
                let mut damaged = data.clone();
                damaged[index] ^= 1 << bit;
                let scan = scan(&damaged, 0);
                assert_eq!(
                    scan.damage.len(),
                    1,
                    "flip of bit {bit} at {index} went unseen"
                );
                assert_eq!(scan.frames.len(), 2, "flip of bit {bit} at {index}");
            }
        }
    }
}
