//! The JSON encoder of the bunyan lines: numbers, strings and ids written byte for byte as
//! serde_json writes them, and times as RFC 3339 UTC strings, straight into a line buffer.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Writes a number or boolean as serde_json does (a non-finite float as `null`).
pub(super) fn write_number<T: serde::Serialize>(out: &mut Vec<u8>, value: T) {
    // Serialising a number into a `Vec` cannot fail.
    let _ = serde_json::to_writer(out, &value);
}

/// Writes `text` as a JSON string, escaped as serde_json escapes it.
pub(super) fn write_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escape_into(out, text);
    out.push(b'"');
}

/// Lower-case hexadecimal, as the `Display` of OpenTelemetry ids.
pub(super) fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
    out.push(b'"');
}

/// The escape of each byte inside a JSON string, as serde_json writes it: 0 for none, `u` for
/// `\u00xx`, else the letter after the backslash.
static ESCAPES: [u8; 256] = {
    let mut table = [0_u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[b'\t' as usize] = b't';
    table[b'\n' as usize] = b'n';
    table[0x0c] = b'f';
    table[b'\r' as usize] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends `text` escaped for the inside of a JSON string, byte for byte as serde_json does:
/// `"` and `\` escaped, control characters as `\b \t \n \f \r` or `\u00xx`, everything else
/// (including non-ASCII) as it is.
pub(super) fn escape_into(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = text.as_bytes();
    while let Some(index) = rest
        .iter()
        .position(|&byte| ESCAPES[usize::from(byte)] != 0)
    {
        let (clean, escaped) = rest.split_at(index);
        out.extend_from_slice(clean);
        let Some((&byte, after)) = escaped.split_first() else {
            break;
        };
        let escape = ESCAPES[usize::from(byte)];
        out.push(b'\\');
        out.push(escape);
        if escape == b'u' {
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0x0f)]);
        }
        rest = after;
    }
    out.extend_from_slice(rest);
}

/// A `fmt::Write` that escapes what it is given for the inside of a JSON string.
pub(super) struct Escaper<'a>(pub(super) &'a mut Vec<u8>);

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape_into(self.0, text);
        Ok(())
    }
}

/// Writes `time` as an RFC 3339 UTC JSON string, as the `time` crate formats it: the fraction
/// of a second with its trailing zeros removed, and none when it is zero
/// (`"2026-11-23T20:21:54.1234Z"`).
pub(super) fn write_time(out: &mut Vec<u8>, time: SystemTime) {
    thread_local! {
        /// The last second written by this thread and its `YYYY-MM-DDTHH:MM:SS`.
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let text = SECOND
        .try_with(|cached| {
            let (second, text) = cached.get();
            if second == seconds {
                text
            } else {
                let text = format_second(seconds);
                cached.set((seconds, text));
                text
            }
        })
        .unwrap_or_else(|_| format_second(seconds));
    out.push(b'"');
    out.extend_from_slice(&text);
    let mut nanos = since_epoch.subsec_nanos();
    if nanos != 0 {
        let mut digits = 9;
        while nanos.is_multiple_of(10) {
            nanos /= 10;
            digits -= 1;
        }
        out.push(b'.');
        push_digits(out, u64::from(nanos), digits);
    }
    out.extend_from_slice(b"Z\"");
}

/// `YYYY-MM-DDTHH:MM:SS` of a count of seconds since the Unix epoch, by humantime's RFC 3339
/// formatting (years up to 9999; a later time is written as the last second of 9999).
fn format_second(seconds: u64) -> [u8; 19] {
    use std::fmt::Write as _;
    let time = UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .unwrap_or(UNIX_EPOCH);
    let mut text = String::with_capacity(20);
    if write!(text, "{}", humantime::format_rfc3339_seconds(time)).is_err() {
        text = "9999-12-31T23:59:59Z".to_owned();
    }
    let mut fixed = [b'0'; 19];
    for (slot, byte) in fixed.iter_mut().zip(text.bytes()) {
        *slot = byte;
    }
    fixed
}

/// `value` in decimal, zero-padded to `width` digits (more when it needs more).
fn push_digits(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut buffer = [b'0'; 20];
    let mut rest = value;
    let mut index = buffer.len();
    while rest > 0 && index > 0 {
        index -= 1;
        buffer[index] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let start = index.min(buffer.len().saturating_sub(width));
    out.extend_from_slice(buffer.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::{escape_into, write_time};

    #[test]
    fn escaping_matches_serde_json() {
        let mut all: String = (0_u8..=0x7f).map(char::from).collect();
        all.push_str("é€😀\u{2028}");
        for text in [all.as_str(), "", "plain", "\"", "\\\\"] {
            let mut ours = b"\"".to_vec();
            escape_into(&mut ours, text);
            ours.push(b'"');
            assert_eq!(
                String::from_utf8(ours).expect("utf-8"),
                serde_json::to_string(text).expect("serialise")
            );
        }
    }

    #[test]
    fn time_is_rfc3339_utc_with_a_trimmed_fraction() {
        use std::time::{Duration, UNIX_EPOCH};
        for (since_epoch, expected) in [
            (Duration::ZERO, "1970-01-01T00:00:00Z"),
            (Duration::from_secs(951_782_400), "2000-02-29T00:00:00Z"),
            (Duration::from_secs(951_868_799), "2000-02-29T23:59:59Z"),
            (Duration::from_secs(951_868_800), "2000-03-01T00:00:00Z"),
            (
                Duration::new(1_700_000_000, 123_000_000),
                "2023-11-14T22:13:20.123Z",
            ),
            (
                Duration::new(1_795_467_714, 987_654_321),
                "2026-11-23T21:01:54.987654321Z",
            ),
            (
                Duration::new(4_102_444_800, 10),
                "2100-01-01T00:00:00.00000001Z",
            ),
        ] {
            let mut out = Vec::new();
            write_time(&mut out, UNIX_EPOCH + since_epoch);
            assert_eq!(
                String::from_utf8(out).expect("utf-8"),
                format!("\"{expected}\"")
            );
        }
    }
}
