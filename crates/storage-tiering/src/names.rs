//! Validation of collection names and record ids, and the opaque listing cursor.
//!
//! Neither a collection name nor a record id ever becomes part of a file path: local files are
//! named after generated ids (ULIDs, sequence numbers), and a collection's files live under a
//! directory named by its validated name, which the pattern keeps to `[a-z0-9_-]`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Longest record id, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// Whether `name` is a valid collection name: `[a-z0-9][a-z0-9_-]{0,63}`.
#[must_use]
pub fn valid_collection_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= 64
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.iter().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-'
                })
        }
        None => false,
    }
}

/// Whether `id` is a valid record id: 1 to 512 bytes of URL-safe characters
/// (`A-Z a-z 0-9 - _ . ~`), and not `.` or `..`.
#[must_use]
pub fn valid_record_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// Encodes the last id of a page as an opaque cursor: listing with it continues after `last_id`.
#[must_use]
pub fn encode_cursor(last_id: &str) -> String {
    let mut raw = Vec::with_capacity(last_id.len() + 1);
    raw.push(1u8);
    raw.extend_from_slice(last_id.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a cursor made by [`encode_cursor`] to the id it continues after; `None` when it is
/// not one.
#[must_use]
pub fn decode_cursor(cursor: &str) -> Option<String> {
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let (version, id) = raw.split_first()?;
    if *version != 1 {
        return None;
    }
    let id = String::from_utf8(id.to_vec()).ok()?;
    valid_record_id(&id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_follow_the_pattern() {
        for good in ["a", "0", "orders", "a-b_c", &"a".repeat(64)] {
            assert!(valid_collection_name(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a/b",
            "..",
            "a.b",
            "a%2f",
            &"a".repeat(65),
            "é",
        ] {
            assert!(!valid_collection_name(bad), "{bad}");
        }
    }

    #[test]
    fn record_ids_are_url_safe_and_bounded() {
        for good in ["x", "user.42", "a~b-c_d", &"i".repeat(512)] {
            assert!(valid_record_id(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a%2Fb", "a b", "ü", &"i".repeat(513)] {
            assert!(!valid_record_id(bad), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(&encode_cursor("k-1")).as_deref(), Some("k-1"));
        assert_eq!(decode_cursor("!!!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode(b"\x02abc")), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode(b"\x01../x")), None);
    }
}
