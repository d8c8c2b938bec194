//! A WAL damaged in the middle, through the binary (issue 13, point 3): one flipped bit in the
//! 10th of 20 acknowledged records stops start-up with exit code 4 naming the file, the offset
//! and the 10 valid frames that follow (before, the service cut the WAL at the damage, lost
//! records 10 to 20 and started as if nothing happened); `storage.wal_recovery = "skip_corrupt"`
//! recovers the other 19, keeps a copy, and reports the loss until an operator acknowledges it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mainstay_tests::metrics::{sample, scrape};
use mainstay_tests::{Api, ApiBuilder};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token-for-wal-damage-0123456";

fn service(data_dir: &Path) -> ApiBuilder {
    Api::builder()
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir.to_string_lossy())
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
}

fn value(n: u32) -> Vec<u8> {
    format!("value-{n:02}-").repeat(80).into_bytes()
}

/// The WAL segment holding the frame of the record `id`, and where in it a byte of that frame's
/// value starts (a `mainstay-journal` segment: 24-byte header, then frames `u32 len | u32 crc |
/// u64 lsn | body`, body: `u64 incarnation | u8 name length | name | u32 count | u16 id length |
/// id | u8 kind | u32 value length | value`).
fn frame_of(wal_dir: &Path, id: &str) -> anyhow::Result<(PathBuf, usize, usize)> {
    for entry in std::fs::read_dir(wal_dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("seg") {
            continue;
        }
        let data = std::fs::read(&path)?;
        let mut offset = 24usize;
        while offset + 16 <= data.len() {
            let len = u32::from_le_bytes(data[offset..offset + 4].try_into()?) as usize;
            if len == 0 {
                break;
            }
            let body = &data[offset + 16..offset + 8 + len];
            let name_len = usize::from(body[8]);
            let at = 9 + name_len + 4;
            let id_len = usize::from(u16::from_le_bytes(body[at..at + 2].try_into()?));
            if &body[at + 2..at + 2 + id_len] == id.as_bytes() {
                let value_at = offset + 16 + at + 2 + id_len + 1 + 4;
                return Ok((path, offset, value_at));
            }
            offset += 8 + len;
        }
    }
    anyhow::bail!("no wal frame holds {id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_damaged_in_the_middle_stops_start_up_or_is_skipped_and_reported()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let client = reqwest::Client::new();
    {
        let api = service(&data_dir).start()?;
        let created = client
            .post(api.url("/v1/collections"))
            .json(&json!({ "name": "damaged", "policy": "memory" }))
            .send()
            .await?;
        assert_eq!(created.status(), 201);
        for n in 1..=20 {
            let put = client
                .put(api.url(&format!("/v1/collections/damaged/records/k{n:02}")))
                .body(value(n))
                .send()
                .await?;
            assert_eq!(put.status(), 204, "put k{n:02}");
        }
        // Killed: the 20 records are only in the WAL (the memtable is far from its bound).
    }

    let (wal_file, frame, value_at) = frame_of(&data_dir.join("wal"), "k10")?;
    let mut bytes = std::fs::read(&wal_file)?;
    bytes[value_at + 100] ^= 0x10;
    std::fs::write(&wal_file, &bytes)?;

    // The default refuses, with exit code 4 and a message that names the file, the offset and
    // what follows; nothing is changed.
    // (Bounded: a service that starts anyway would otherwise serve forever.)
    let refused = service(&data_dir);
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(refused.run()));
    let (status, out, err) = receiver
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| {
            anyhow::anyhow!("the service started on a damaged wal instead of exiting")
        })??;
    assert_eq!(status.code(), Some(4), "stdout: {out}\nstderr: {err}");
    let file_name = wal_file.display().to_string();
    for needle in [
        file_name.as_str(),
        &format!("offset {frame}"),
        "10 valid frames follow",
        "storage.wal_recovery",
    ] {
        assert!(err.contains(needle), "stderr should name {needle:?}: {err}");
    }
    assert_eq!(
        std::fs::read(&wal_file)?,
        bytes,
        "refusing changed the file"
    );

    // skip_corrupt recovers every other record and reports the loss.
    let api = service(&data_dir)
        .env("MAINSTAY_STORAGE__WAL_RECOVERY", "skip_corrupt")
        .start()?;
    for n in 1..=20 {
        let got = client
            .get(api.url(&format!("/v1/collections/damaged/records/k{n:02}")))
            .send()
            .await?;
        if n == 10 {
            assert_eq!(got.status(), 404, "k10 was in the damaged frame");
        } else {
            assert_eq!(got.status(), 200, "k{n:02}");
            assert_eq!(got.bytes().await?.to_vec(), value(n), "k{n:02}");
        }
    }
    let admin = |path: &str| client.get(api.url(path)).bearer_auth(ADMIN_TOKEN).send();
    let listed: Value = admin("/admin/store/wal-damage").await?.json().await?;
    let damage = listed["damage"].as_array().cloned().unwrap_or_default();
    assert_eq!(damage.len(), 1, "{listed}");
    assert_eq!(damage[0]["offset"], frame as u64);
    assert_eq!(damage[0]["file"], file_name);
    let copy = damage[0]["copy"].as_str().unwrap_or_default().to_owned();
    assert!(
        copy.starts_with(&data_dir.join("corrupt").display().to_string()),
        "{copy}"
    );
    assert_eq!(
        std::fs::read(&copy)?,
        bytes,
        "the copy is the file as found"
    );
    let health: Value = admin("/admin/health").await?.json().await?;
    assert_eq!(
        health["checks"]["storage-wal"]["status"], "degraded",
        "{health}"
    );
    let text = scrape(&client, &api).await?;
    assert_eq!(sample(&text, "storage_wal_damage", &[]), Some(1.0));
    assert!(
        api.lines()
            .iter()
            .any(|line| line.contains("skipping damaged wal bytes")),
        "one error line says what was skipped"
    );

    let acknowledged: Value = client
        .post(api.url("/admin/store/wal-damage/acknowledge"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(acknowledged["acknowledged"], 1);
    // Checks are cached for the registry's interval: the next fresh result is healthy.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let health: Value = admin("/admin/health").await?.json().await?;
        if health["checks"]["storage-wal"]["status"] == "healthy" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = scrape(&client, &api).await?;
    assert_eq!(sample(&text, "storage_wal_damage", &[]), Some(0.0));

    // The WAL was rewritten without the damage: the default starts again.
    let mut api = api;
    api.terminate()?;
    assert!(api.wait_exit(Duration::from_secs(20))?.success());
    let api = service(&data_dir).start()?;
    let got = client
        .get(api.url("/v1/collections/damaged/records/k20"))
        .send()
        .await?;
    assert_eq!(got.status(), 200);
    Ok(())
}
