//! The backup status reaches `/metrics` (issue 18, point 2; decision 0115): the service reads the
//! verification records that `mainstay-api backup verify --record` leaves in `backup.url`, and the
//! newest complete backup, every `backup.status_interval`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mainstay_tests::Api;
use mainstay_tests::metrics::{sample, scrape};

const ADMIN_TOKEN: &str = "backup-status-admin-token-0123";

/// Scrapes until `check` accepts the exposition (the status task reads every 100 ms).
async fn until(
    client: &reqwest::Client,
    api: &Api,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(client, api).await?;
        if check(&text) {
            return Ok(text);
        }
        ensure!(std::time::Instant::now() < deadline, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn outcome(text: &str, outcome: &str) -> Option<f64> {
    sample(text, "backup_verification_outcome", &[("outcome", outcome)])
}

fn verify(dir: &Path, root: &Path) -> Result<std::process::ExitStatus> {
    let (status, _, _) = Api::builder()
        .current_dir(dir)
        .args(&["backup", "verify", &root.display().to_string(), "--record"])
        .run()?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_outcomes_and_the_newest_backup_reach_the_metrics() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let root = scratch.path().join("backups");
    let api = Api::builder()
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_BACKUP__URL", &root.display().to_string())
        .env("MAINSTAY_BACKUP__STATUS_INTERVAL", "100ms")
        .start()?;
    let client = reqwest::Client::new();

    // Nothing recorded yet: `missing`, and the timestamps unknown.
    let text = until(&client, &api, "missing", |text| {
        outcome(text, "missing") == Some(1.0)
    })
    .await?;
    ensure!(outcome(&text, "ok") == Some(0.0));
    ensure!(
        text.contains("backup_last_success_timestamp_seconds NaN"),
        "{text}"
    );

    // A backup, then a verification that finds it good.
    let created = client
        .post(api.url("/admin/backups"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "to": root.display().to_string() }))
        .send()
        .await?;
    ensure!(created.status() == 201, "backup: {}", created.status());
    let created: serde_json::Value = created.json().await?;
    let consistent_at = created["consistent_at"]
        .as_f64()
        .context("no consistent_at")?;
    ensure!(verify(scratch.path(), &root)?.success());
    let text = until(&client, &api, "ok", |text| outcome(text, "ok") == Some(1.0)).await?;
    let newest = sample(&text, "backup_newest_timestamp_seconds", &[]);
    ensure!(
        newest == Some(consistent_at),
        "{newest:?} {consistent_at}\n{text}"
    );
    let success =
        sample(&text, "backup_last_success_timestamp_seconds", &[]).context("no last success")?;
    ensure!(success >= consistent_at, "{text}");
    ensure!(sample(&text, "backup_last_verification_timestamp_seconds", &[]) == Some(success));

    // A damaged backup: the next verification says so and the last success stays.
    let id = created["id"].as_str().context("no id")?;
    let segment = walk(&root.join(id))
        .into_iter()
        .find(|path| {
            path.extension().is_some_and(|ext| ext == "seg") || path.ends_with("wal-tail.bin")
        })
        .context("no segment or WAL tail in the backup")?;
    let mut bytes = std::fs::read(&segment)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, bytes)?;
    ensure!(verify(scratch.path(), &root)?.code() == Some(1));
    let text = until(&client, &api, "damaged", |text| {
        outcome(text, "damaged") == Some(1.0)
    })
    .await?;
    ensure!(outcome(&text, "ok") == Some(0.0));
    ensure!(sample(&text, "backup_last_success_timestamp_seconds", &[]) == Some(success));
    Ok(())
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
