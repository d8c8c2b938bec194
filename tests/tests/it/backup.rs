//! Backups through the binary (issue 18, points 1 to 3): `POST /admin/backups` under write
//! load, `backup verify` (exit 0 with its summary line, exit 1 once a byte is changed),
//! `backup restore` into a new directory, and the service started on it serving every record.

use std::path::Path;
use std::time::Duration;

use mainstay_tests::{Api, ApiBuilder};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token-for-backups-0123456789";

fn service(data_dir: &Path) -> ApiBuilder {
    Api::builder()
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir.to_string_lossy())
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
}

fn value(collection: &str, n: usize) -> String {
    format!("{collection}-{n:04}-{}", "v".repeat(n % 64))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_verifies_and_restores_into_a_serving_instance()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let root = dir.path().join("backups");
    let client = reqwest::Client::new();
    let collections = ["hot", "tiered"];
    let mut api = service(&data_dir).start()?;
    for (name, policy) in collections.iter().zip(["memory", "memory_s3"]) {
        let created = client
            .post(api.url("/v1/collections"))
            .json(&json!({ "name": name, "policy": policy }))
            .send()
            .await?;
        assert_eq!(created.status(), 201);
    }
    for n in 0..100 {
        for name in collections {
            let put = client
                .put(api.url(&format!("/v1/collections/{name}/records/r{n:04}")))
                .body(value(name, n))
                .send()
                .await?;
            assert_eq!(put.status(), 204);
        }
    }

    // A writer keeps writing while the backup runs.
    let writer = {
        let (client, base) = (client.clone(), api.url(""));
        tokio::spawn(async move {
            for n in 100..400 {
                let put = client
                    .put(format!("{base}/v1/collections/hot/records/r{n:04}"))
                    .body(value("hot", n))
                    .send()
                    .await;
                if !put.is_ok_and(|r| r.status() == 204) {
                    return n;
                }
            }
            400
        })
    };
    let created = client
        .post(api.url("/admin/backups"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "to": root.to_string_lossy() }))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await?;
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        created["location"],
        json!(format!("{}/{id}", root.display()))
    );
    let records = created["records"].as_u64().expect("records");
    assert!(records >= 200, "{created}");
    assert!(created["consistent_lsn"].as_u64().expect("lsn") > 0);
    assert!(created["files"].as_u64().expect("files") >= 2);
    let inside = client
        .post(api.url("/admin/backups"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "to": data_dir.join("backups").to_string_lossy() }))
        .send()
        .await?;
    assert_eq!(inside.status(), 422);
    let written = writer.await?;
    assert_eq!(written, 400);
    api.terminate()?;
    api.wait_exit(Duration::from_secs(30))?;

    let root_arg = root.to_string_lossy().into_owned();
    let (status, stdout, stderr) = Api::builder()
        .args(&["backup", "verify", &root_arg])
        .run()?;
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with(&format!("backup {id} ok: ")), "{stdout}");

    let damaged = dir.path().join("damaged");
    copy_dir(&root.join(&id), &damaged.join(&id))?;
    let catalog = damaged.join(&id).join("catalog.json");
    let mut bytes = std::fs::read(&catalog)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&catalog, bytes)?;
    let damaged_arg = damaged.to_string_lossy().into_owned();
    let (status, stdout, stderr) = Api::builder()
        .args(&["backup", "verify", &damaged_arg, "--json"])
        .run()?;
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout)?;
    assert_eq!(report["outcome"], "damaged");
    assert_eq!(report["problems"][0]["file"], "catalog.json");

    let restored = dir.path().join("restored");
    let restored_arg = restored.to_string_lossy().into_owned();
    let (status, stdout, stderr) = Api::builder()
        .args(&["backup", "restore", &root_arg, "--data-dir", &restored_arg])
        .run()?;
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    let (status, _, stderr) = Api::builder()
        .args(&["backup", "restore", &root_arg, "--data-dir", &restored_arg])
        .run()?;
    assert_eq!(
        status.code(),
        Some(2),
        "a non-empty target is refused: {stderr}"
    );

    let api = service(&restored).start()?;
    let mut served = 0;
    for name in collections {
        for n in 0..400 {
            let got = client
                .get(api.url(&format!("/v1/collections/{name}/records/r{n:04}")))
                .send()
                .await?;
            if n < 100 {
                assert_eq!(got.status(), 200, "{name}/r{n:04}");
            }
            if got.status() == 200 {
                assert_eq!(got.text().await?, value(name, n), "{name}/r{n:04}");
                served += 1;
            }
        }
    }
    assert_eq!(served, records);
    Ok(())
}
