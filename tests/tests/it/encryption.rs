//! Encryption at rest (`storage.encryption`, issue 18 point 6): record values reach neither the
//! data directory nor the object store in plain text, read back as written, and the service
//! refuses to start without the master key or with another one (exit 2).

use std::path::Path;
use std::time::{Duration, Instant};

use mainstay_tests::{Api, ApiBuilder, sha256_hex};

const MASTER_KEY: &str = "6d61696e737461792d746573742d6d61737465722d6b65792d303132333435ff";
const OTHER_KEY: &str = "00000000000000000000000000000000000000000000000000000000000000ff";

fn api(data_dir: &Path, master_key: Option<&str>) -> ApiBuilder {
    let builder = Api::builder()
        .config_toml(&format!(
            "[[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"acme\"\n",
            sha256_hex("acme-key")
        ))
        .env(
            "MAINSTAY_STORAGE__DATA_DIR",
            &data_dir.display().to_string(),
        )
        .env("MAINSTAY_STORAGE__ENCRYPTION", "true")
        .env("MAINSTAY_STORAGE__COMPRESSION", "none")
        .env("MAINSTAY_STORAGE__FLUSH_INTERVAL", "100ms")
        .env("MAINSTAY_RATELIMIT__ENABLED", "false");
    match master_key {
        Some(key) => builder.env("MAINSTAY_STORAGE__MASTER_KEY", key),
        None => builder,
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> std::io::Result<Vec<String>> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            hits.extend(files_containing(&path, needle)?);
        } else if std::fs::read(&path)?
            .windows(needle.len())
            .any(|window| window == needle)
        {
            hits.push(path.display().to_string());
        }
    }
    Ok(hits)
}

/// Files under `dir` whose path contains `part`.
fn count_files(dir: &Path, part: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .map(|path| {
            if path.is_dir() {
                count_files(&path, part)
            } else {
                usize::from(path.display().to_string().contains(part))
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_sealed_on_disk_and_in_the_object_store_and_read_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let marker = format!("marker-{}-plaintext", std::process::id());
    let batch_marker = format!("batch-{}-plaintext", std::process::id());
    let client = reqwest::Client::new();
    {
        let mut api = api(&data, Some(MASTER_KEY)).start()?;
        let created = client
            .post(api.url("/v1/collections"))
            .bearer_auth("acme-key")
            .json(&serde_json::json!({ "name": "notes" }))
            .send()
            .await?;
        assert_eq!(created.status(), 201);
        let put = client
            .put(api.url("/v1/collections/notes/records/n-1"))
            .bearer_auth("acme-key")
            .body(marker.clone())
            .send()
            .await?;
        assert_eq!(put.status(), 204);
        let batch = client
            .post(api.url("/v1/collections/notes/records"))
            .bearer_auth("acme-key")
            .json(&serde_json::json!({ "records": [
                { "id": "n-2", "value_base64": base64(batch_marker.as_bytes()) }
            ]}))
            .send()
            .await?;
        assert_eq!(batch.status(), 200, "{}", batch.text().await?);
        // The memtable is frozen after the flush interval and its segment uploaded.
        let deadline = Instant::now() + Duration::from_secs(20);
        while count_files(&data.join("objects"), ".seg") == 0 {
            anyhow::ensure!(Instant::now() < deadline, "no segment was uploaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api.terminate()?;
        assert!(api.wait_exit(Duration::from_secs(20))?.success());
    }
    assert!(
        count_files(&data.join("objects"), "_keys") >= 2,
        "no key objects"
    );
    for needle in [&marker, &batch_marker] {
        let hits = files_containing(&data, needle.as_bytes())?;
        assert!(hits.is_empty(), "{needle} in plain text in {hits:?}");
    }

    let api = api(&data, Some(MASTER_KEY)).start()?;
    let read = client
        .get(api.url("/v1/collections/notes/records/n-1"))
        .bearer_auth("acme-key")
        .send()
        .await?;
    assert_eq!(read.status(), 200);
    assert_eq!(read.text().await?, marker);
    let listed: serde_json::Value = client
        .get(api.url("/v1/collections/notes/records"))
        .bearer_auth("acme-key")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        listed["records"][1]["value_base64"],
        base64(batch_marker.as_bytes()),
        "{listed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_master_key_or_another_one_exits_2() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (status, _, stderr) = api(&data, None).run()?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("storage.master_key"), "{stderr}");

    let (status, _, stderr) = api(&data, Some("not-a-key")).run()?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("storage.master_key"), "{stderr}");
    assert!(!stderr.contains("not-a-key"), "the key is shown: {stderr}");

    let mut first = api(&data, Some(MASTER_KEY)).start()?;
    first.terminate()?;
    assert!(first.wait_exit(Duration::from_secs(20))?.success());
    let (status, _, stderr) = api(&data, Some(OTHER_KEY)).run()?;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("master key is not the one"), "{stderr}");
    assert!(!stderr.contains(OTHER_KEY), "the key is shown: {stderr}");
    Ok(())
}

/// Standard base64 with padding, as batches and listings carry values.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let triple = chunk.iter().enumerate().fold(0u32, |acc, (i, byte)| {
            acc | u32::from(*byte) << (16 - 8 * i)
        });
        for position in 0..4 {
            if position <= chunk.len() {
                out.push(char::from(
                    ALPHABET[(triple >> (18 - 6 * position)) as usize & 63],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}
