//! The keyring on real object stores: the local file system and the in-process S3 server (whose
//! conditional puts make two racing keyrings end with one key).

use std::sync::Arc;

use mainstay_storage_tiering::keyring::{
    Keyring, KeyringError, KeyringMetrics, KeyringOpenError, MasterKey, organisation_hash,
};
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;

use crate::s3_server::S3Server;

fn local(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new_with_prefix(dir).unwrap())
}

async fn keyring(objects: Arc<dyn ObjectStore>, master: &MasterKey) -> Keyring {
    Keyring::builder(objects, master.clone())
        .prefix("_keys")
        .open()
        .await
        .unwrap()
}

/// Every file under `dir`, its bytes.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

#[tokio::test]
async fn values_round_trip_bound_to_their_record_and_a_changed_byte_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let keyring = keyring(local(dir.path()), &master).await;
    let sealed = keyring
        .seal("acme", "orders", "o-1", b"marker-7f3a")
        .await
        .unwrap();
    assert!(
        !sealed.windows(11).any(|window| window == b"marker-7f3a"),
        "the plaintext shows in the sealed value"
    );
    assert_eq!(
        &keyring
            .open("acme", "orders", "o-1", &sealed)
            .await
            .unwrap()[..],
        b"marker-7f3a"
    );
    // Another id, collection or organisation: not the same associated data or key.
    for (org, collection, id) in [
        ("acme", "orders", "o-2"),
        ("acme", "invoices", "o-1"),
        ("globex", "orders", "o-1"),
    ] {
        let opened = keyring.open(org, collection, id, &sealed).await;
        assert!(
            matches!(
                opened,
                Err(KeyringError::Damaged { .. } | KeyringError::KeyNotFound)
            ),
            "{org}/{collection}/{id}: {opened:?}"
        );
    }
    // Every single byte changed, header included, fails to open.
    for index in 0..sealed.len() {
        let mut tampered = sealed.clone();
        tampered[index] ^= 0x01;
        let opened = keyring.open("acme", "orders", "o-1", &tampered).await;
        assert!(
            matches!(
                opened,
                Err(KeyringError::Damaged { .. } | KeyringError::Erased)
            ) || (index < 4 && opened.as_deref() == Ok(&tampered[..])),
            "byte {index}: {opened:?}"
        );
    }
    // Plain values (written before encryption) read as they are.
    assert_eq!(
        &keyring
            .open("acme", "orders", "old", b"{\"plain\":true}")
            .await
            .unwrap()[..],
        b"{\"plain\":true}"
    );
    // The key object is named by the organisation's hash and is no plaintext key.
    let names: Vec<String> = files(dir.path())
        .iter()
        .map(|(path, _)| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&format!("{}.key", organisation_hash("acme"))),
        "{names:?}"
    );
    assert!(names.iter().all(|name| !name.contains("acme")), "{names:?}");
}

#[tokio::test]
async fn a_wrong_master_key_is_a_typed_error_when_the_keyring_opens() {
    let dir = tempfile::tempdir().unwrap();
    let objects = local(dir.path());
    let first = keyring(objects.clone(), &MasterKey::generate()).await;
    first.seal("acme", "c", "i", b"v").await.unwrap();
    let other = Keyring::builder(objects, MasterKey::generate())
        .open()
        .await;
    assert!(
        matches!(other, Err(KeyringOpenError::WrongMasterKey { ref path }) if path == "_keys/check"),
        "{other:?}"
    );
}

#[tokio::test]
async fn destroy_erases_and_reinstate_gives_a_new_key_that_old_values_do_not_open_with() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let mut registry = prometheus_client::registry::Registry::default();
    let keyring = Keyring::builder(local(dir.path()), master.clone())
        .name("it")
        .metrics(KeyringMetrics::register(&mut registry))
        .open()
        .await
        .unwrap();
    let before = keyring.seal("acme", "c", "i", b"old").await.unwrap();
    let other = keyring.seal("globex", "c", "i", b"kept").await.unwrap();

    keyring.destroy("acme").await.unwrap();
    keyring.destroy("acme").await.unwrap(); // idempotent
    assert!(keyring.is_erased("acme").await.unwrap());
    assert_eq!(
        keyring.open("acme", "c", "i", &before).await,
        Err(KeyringError::Erased)
    );
    assert_eq!(
        keyring.seal("acme", "c", "j", b"new").await,
        Err(KeyringError::Erased)
    );
    // A fresh process (no cache) sees the erasure too; other organisations are untouched.
    let restarted = keyring_on(dir.path(), &master).await;
    assert_eq!(
        restarted.open("acme", "c", "i", &before).await,
        Err(KeyringError::Erased)
    );
    assert_eq!(
        &restarted.open("globex", "c", "i", &other).await.unwrap()[..],
        b"kept"
    );

    keyring.reinstate("acme").await.unwrap();
    assert!(!keyring.is_erased("acme").await.unwrap());
    let after = keyring.seal("acme", "c", "i", b"new").await.unwrap();
    assert_eq!(
        &keyring.open("acme", "c", "i", &after).await.unwrap()[..],
        b"new"
    );
    assert_eq!(
        keyring.open("acme", "c", "i", &before).await,
        Err(KeyringError::Erased)
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "keyring_operations_total{keyring=\"it\",operation=\"open\",outcome=\"erased\"} 2",
        "keyring_operations_total{keyring=\"it\",operation=\"seal\",outcome=\"erased\"} 1",
        "keyring_operations_total{keyring=\"it\",operation=\"destroy\",outcome=\"ok\"} 2",
        "keyring_key_lookups_total{keyring=\"it\",outcome=\"created\"} 3",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

async fn keyring_on(dir: &std::path::Path, master: &MasterKey) -> Keyring {
    keyring(local(dir), master).await
}

/// Two keyrings (two instances) sealing for a new organisation at once over the S3 server end
/// with one key object, and each opens what the other sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_keyrings_create_one_key_per_organisation() {
    let server = S3Server::start().await;
    let master = MasterKey::generate();
    let (first, second) = tokio::join!(
        keyring(server.client(), &master),
        keyring(server.client(), &master)
    );
    for round in 0..8 {
        let org = format!("org-{round}");
        let (a, b) = tokio::join!(
            first.seal(&org, "c", "a", b"from-first"),
            second.seal(&org, "c", "b", b"from-second")
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            &second.open(&org, "c", "a", &a).await.unwrap()[..],
            b"from-first"
        );
        assert_eq!(
            &first.open(&org, "c", "b", &b).await.unwrap()[..],
            b"from-second"
        );
        assert_eq!(a[5..9], b[5..9], "round {round}: two key ids");
    }
}

#[test]
fn master_keys_parse_from_hex_or_base64_and_errors_never_echo_them() {
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let from_hex: MasterKey = hex.parse().unwrap();
    assert_eq!(from_hex.to_hex(), hex);
    let from_base64: MasterKey = "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8="
        .parse()
        .unwrap();
    assert_eq!(from_base64, from_hex);
    assert_eq!(format!("{from_hex:?}"), "MasterKey([REDACTED])");
    for bad in [
        "",
        "short",
        &hex[..62],
        "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    ] {
        let error = bad.parse::<MasterKey>().unwrap_err();
        assert_eq!(error.length, bad.len());
        assert!(
            bad.is_empty() || !error.to_string().contains(bad),
            "{error}"
        );
    }
}
