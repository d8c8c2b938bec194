//! The byte layouts of the keyring: sealed values, wrapped data keys and the master-key check.
//!
//! Every layout starts with a 4-byte magic and a version byte, and the AEAD authenticates the
//! whole header as associated data, so a changed header fails like a changed ciphertext.

use chacha20poly1305::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// The first bytes of a sealed value. A NUL first byte keeps text values (JSON, UTF-8) from ever
/// looking sealed; see [`parse_value`] for binary values written before encryption was on.
pub(crate) const VALUE_MAGIC: [u8; 4] = *b"\0MSE";
/// The first bytes of a wrapped data key object.
pub(crate) const KEY_MAGIC: [u8; 4] = *b"\0MSK";
/// The first bytes of the master-key check object.
pub(crate) const CHECK_MAGIC: [u8; 4] = *b"\0MSC";
/// The one layout version this build writes and reads.
pub(crate) const VERSION: u8 = 1;
/// XChaCha20-Poly1305's nonce.
pub(crate) const NONCE_LEN: usize = 24;
/// Poly1305's tag.
pub(crate) const TAG_LEN: usize = 16;
/// Magic, version, key id, nonce.
pub(crate) const VALUE_HEADER_LEN: usize = 4 + 1 + 4 + NONCE_LEN;
/// Bytes a sealed value holds beyond its plaintext.
pub const SEAL_OVERHEAD: usize = VALUE_HEADER_LEN + TAG_LEN;
/// What the check object encrypts.
const CHECK_PLAINTEXT: &[u8] = b"mainstay keyring master key check";

/// A stored value, as [`parse_value`] reads it.
#[derive(Debug)]
pub(crate) enum Stored<'a> {
    /// Not sealed: written before encryption was on.
    Plain,
    /// Sealed under the data key `key_id`.
    Sealed {
        key_id: u32,
        header: &'a [u8],
        nonce: &'a [u8],
        body: &'a [u8],
    },
    /// Starts like a sealed value but is too short or of an unknown version.
    Malformed(&'static str),
}

/// Reads the header of a stored value. A value without the magic is plain; a value with it is
/// taken as sealed, so a plain binary value that happens to start with the 4 magic bytes reads
/// as damaged (`docs/decisions/0114`).
pub(crate) fn parse_value(stored: &[u8]) -> Stored<'_> {
    if !stored.starts_with(&VALUE_MAGIC) {
        return Stored::Plain;
    }
    if stored.len() < VALUE_HEADER_LEN + TAG_LEN {
        return Stored::Malformed("shorter than a sealed value's header and tag");
    }
    if stored[4] != VERSION {
        return Stored::Malformed("sealed with a format version this build does not read");
    }
    let key_id = u32::from_be_bytes([stored[5], stored[6], stored[7], stored[8]]);
    Stored::Sealed {
        key_id,
        header: &stored[..VALUE_HEADER_LEN],
        nonce: &stored[9..VALUE_HEADER_LEN],
        body: &stored[VALUE_HEADER_LEN..],
    }
}

/// The associated data of a value: its header, then the collection and the id, each
/// length-prefixed so that no two (collection, id) pairs give the same bytes.
pub(crate) fn value_aad(header: &[u8], collection: &str, id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 16 + collection.len() + id.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(&(collection.len() as u64).to_be_bytes());
    aad.extend_from_slice(collection.as_bytes());
    aad.extend_from_slice(&(id.len() as u64).to_be_bytes());
    aad.extend_from_slice(id.as_bytes());
    aad
}

/// Seals `plaintext` under `cipher` (the data key `key_id`): header, ciphertext, tag, in one
/// allocation.
pub(crate) fn seal_value(
    cipher: &XChaCha20Poly1305,
    key_id: u32,
    collection: &str,
    id: &str,
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.extend_from_slice(&VALUE_MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(&nonce);
    let aad = value_aad(&out, collection, id);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(&nonce, &aad, &mut out[VALUE_HEADER_LEN..])
        .ok()?;
    out.extend_from_slice(&tag);
    Some(out)
}

/// Opens a sealed body (ciphertext and tag); `None` when it does not authenticate.
pub(crate) fn open_body(
    cipher: &XChaCha20Poly1305,
    nonce: &[u8],
    aad: &[u8],
    body: &[u8],
) -> Option<Vec<u8>> {
    let (ciphertext, tag) = body.split_at(body.len().checked_sub(TAG_LEN)?);
    let mut plaintext = ciphertext.to_vec();
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            &mut plaintext,
            chacha20poly1305::Tag::from_slice(tag),
        )
        .ok()?;
    Some(plaintext)
}

/// A data key wrapped by the master key, bound to its organisation: magic, version, key id,
/// nonce, then the AEAD of the 32 key bytes with the header and the organisation's hash as
/// associated data (a key object copied under another organisation's name does not unwrap).
pub(crate) fn wrap_key(
    master: &XChaCha20Poly1305,
    org_hash: &str,
    key_id: u32,
    key: &Key,
) -> Option<Vec<u8>> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = Vec::with_capacity(VALUE_HEADER_LEN + 32 + TAG_LEN);
    out.extend_from_slice(&KEY_MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(&nonce);
    let mut aad = out.clone();
    aad.extend_from_slice(org_hash.as_bytes());
    out.extend_from_slice(key);
    let tag = master
        .encrypt_in_place_detached(&nonce, &aad, &mut out[VALUE_HEADER_LEN..])
        .ok()?;
    out.extend_from_slice(&tag);
    Some(out)
}

/// Why a wrapped key did not unwrap.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UnwrapError {
    /// Not a wrapped key object of this version.
    Malformed,
    /// It does not authenticate under the master key.
    Unauthentic,
}

/// The key id and the cipher of a wrapped key object.
pub(crate) fn unwrap_key(
    master: &XChaCha20Poly1305,
    org_hash: &str,
    object: &[u8],
) -> Result<(u32, XChaCha20Poly1305), UnwrapError> {
    if object.len() != VALUE_HEADER_LEN + 32 + TAG_LEN
        || !object.starts_with(&KEY_MAGIC)
        || object[4] != VERSION
    {
        return Err(UnwrapError::Malformed);
    }
    let key_id = u32::from_be_bytes([object[5], object[6], object[7], object[8]]);
    let mut aad = object[..VALUE_HEADER_LEN].to_vec();
    aad.extend_from_slice(org_hash.as_bytes());
    let key = open_body(
        master,
        &object[9..VALUE_HEADER_LEN],
        &aad,
        &object[VALUE_HEADER_LEN..],
    )
    .ok_or(UnwrapError::Unauthentic)?;
    let cipher = XChaCha20Poly1305::new_from_slice(&key).map_err(|_| UnwrapError::Malformed)?;
    Ok((key_id, cipher))
}

/// The check object: the AEAD of a fixed text under the master key.
pub(crate) fn check_object(master: &XChaCha20Poly1305) -> Option<Vec<u8>> {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = Vec::with_capacity(5 + NONCE_LEN + CHECK_PLAINTEXT.len() + TAG_LEN);
    out.extend_from_slice(&CHECK_MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    let aad = out.clone();
    out.extend_from_slice(CHECK_PLAINTEXT);
    let tag = master
        .encrypt_in_place_detached(&nonce, &aad, &mut out[5 + NONCE_LEN..])
        .ok()?;
    out.extend_from_slice(&tag);
    Some(out)
}

/// Whether `object` is a check object the master key wrote.
pub(crate) fn verify_check(master: &XChaCha20Poly1305, object: &[u8]) -> Result<(), UnwrapError> {
    if object.len() < 5 + NONCE_LEN + TAG_LEN
        || !object.starts_with(&CHECK_MAGIC)
        || object[4] != VERSION
    {
        return Err(UnwrapError::Malformed);
    }
    let plaintext = open_body(
        master,
        &object[5..5 + NONCE_LEN],
        &object[..5 + NONCE_LEN],
        &object[5 + NONCE_LEN..],
    )
    .ok_or(UnwrapError::Unauthentic)?;
    if plaintext == CHECK_PLAINTEXT {
        Ok(())
    } else {
        Err(UnwrapError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use chacha20poly1305::aead::KeyInit;
    use chacha20poly1305::{Key, XChaCha20Poly1305};

    use super::*;

    fn cipher(byte: u8) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&[byte; 32]))
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_collection_and_id() {
        let key = cipher(1);
        let sealed = seal_value(&key, 7, "orders", "o-1", b"secret").unwrap();
        assert_eq!(sealed.len(), 6 + SEAL_OVERHEAD);
        let Stored::Sealed {
            key_id,
            header,
            nonce,
            body,
        } = parse_value(&sealed)
        else {
            panic!("not sealed");
        };
        assert_eq!(key_id, 7);
        let open =
            |collection, id| open_body(&key, nonce, &value_aad(header, collection, id), body);
        assert_eq!(open("orders", "o-1").as_deref(), Some(&b"secret"[..]));
        assert_eq!(open("orders", "o-2"), None);
        assert_eq!(open("orders2", "o-1"), None);
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        let moved = seal_value(&key, 7, "ab", "c", b"x").unwrap();
        let Stored::Sealed {
            header,
            nonce,
            body,
            ..
        } = parse_value(&moved)
        else {
            panic!("not sealed");
        };
        assert_eq!(
            open_body(&key, nonce, &value_aad(header, "a", "bc"), body),
            None
        );
    }

    #[test]
    fn text_is_plain_and_short_or_unknown_versions_are_malformed() {
        assert!(matches!(parse_value(b"{\"a\":1}"), Stored::Plain));
        assert!(matches!(parse_value(b""), Stored::Plain));
        assert!(matches!(parse_value(b"\0MSE\x01"), Stored::Malformed(_)));
        let mut sealed = seal_value(&cipher(1), 1, "c", "i", b"v").unwrap();
        sealed[4] = 2;
        assert!(matches!(parse_value(&sealed), Stored::Malformed(_)));
    }

    #[test]
    fn a_wrapped_key_unwraps_only_with_its_master_key_and_organisation() {
        let master = cipher(9);
        let wrapped = wrap_key(&master, "org-a", 42, Key::from_slice(&[3; 32])).unwrap();
        let (key_id, _) = unwrap_key(&master, "org-a", &wrapped).unwrap();
        assert_eq!(key_id, 42);
        assert_eq!(
            unwrap_key(&master, "org-b", &wrapped).err(),
            Some(UnwrapError::Unauthentic)
        );
        assert_eq!(
            unwrap_key(&cipher(8), "org-a", &wrapped).err(),
            Some(UnwrapError::Unauthentic)
        );
        assert_eq!(
            unwrap_key(&master, "org-a", b"junk").err(),
            Some(UnwrapError::Malformed)
        );
    }

    #[test]
    fn the_check_object_verifies_only_under_its_master_key() {
        let check = check_object(&cipher(5)).unwrap();
        assert_eq!(verify_check(&cipher(5), &check), Ok(()));
        assert_eq!(
            verify_check(&cipher(6), &check),
            Err(UnwrapError::Unauthentic)
        );
        assert_eq!(
            verify_check(&cipher(5), b"\0MSC"),
            Err(UnwrapError::Malformed)
        );
    }
}
