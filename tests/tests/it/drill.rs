//! The disaster-recovery drill (issue 18, point 4): a writer loses its whole data directory (the
//! WAL, the catalog, local segments, the DLQ and, in the embedded default, the object store under
//! it) and is recovered from its newest backup with the documented procedure
//! (docs/operations/disaster-recovery.md, "Lost disk"). The drill measures what the procedure
//! achieves, the recovery point (the writes after the backup's consistent point are lost, and
//! counted) and the recovery time (from the loss to a ready instance serving every backed-up
//! record), and writes a report as JSON and Markdown to `$CARGO_TARGET_DIR/mainstay-drill/` (or
//! `MAINSTAY_DRILL_REPORT_DIR`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use mainstay_tests::Api;

const ADMIN_TOKEN: &str = "drill-admin-token-0123456789";
const BEFORE: usize = 400;
const AFTER: usize = 40;

fn builder(dir: &Path, backups: &Path) -> mainstay_tests::ApiBuilder {
    Api::builder()
        .current_dir(dir)
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_BACKUP__URL", &backups.display().to_string())
        // The drill reads every record back one by one; limits are not what it measures.
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
        // A small memtable: the records before the backup are flushed into segments, and the
        // `memory_s3` ones uploaded, so the backup and the restore carry the object store too.
        .env("MAINSTAY_STORAGE__MEMTABLE_BYTES", "4096")
}

/// Whether a segment of the collection `name` (as the client names it) is in the embedded
/// object store under `data`.
fn uploaded(data: &Path, name: &str) -> bool {
    let suffix = format!("-{name}");
    std::fs::read_dir(data.join("objects/segments"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(&suffix))
        .any(|entry| {
            std::fs::read_dir(entry.path()).is_ok_and(|mut segments| segments.next().is_some())
        })
}

fn report_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MAINSTAY_DRILL_REPORT_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("mainstay-drill")
}

async fn put_batch(
    client: &reqwest::Client,
    api: &Api,
    collection: &str,
    ids: std::ops::Range<usize>,
) -> Result<()> {
    use base64::Engine as _;
    let records: Vec<serde_json::Value> = ids
        .map(|n| {
            serde_json::json!({
                "id": format!("r{n:05}"),
                "value_base64": base64::engine::general_purpose::STANDARD.encode(format!("{collection}-{n}")),
            })
        })
        .collect();
    let answer = client
        .post(api.url(&format!("/v1/collections/{collection}/records")))
        .json(&serde_json::json!({ "records": records }))
        .send()
        .await?;
    ensure!(answer.status().is_success(), "batch: {}", answer.status());
    Ok(())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_directory_is_recovered_from_the_newest_backup_and_the_drill_is_reported()
-> Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path();
    // `backup.url` longer than the 63 characters a request's `to` may have, as real roots are:
    // the service's own setting is not held to the request's schema.
    let backups = dir
        .join("backups-of-the-orders-service")
        .join("production-eu-west-1-hourly");
    assert!(backups.to_string_lossy().chars().count() > 63);
    let client = reqwest::Client::new();
    // A dead-letter entry, as a failed delivery leaves it: the DLQ is lost with the disk too.
    {
        let dlq = mainstay_dlq::Dlq::open(dir.join("data/dlq"), mainstay_dlq::DlqConfig::default())
            .await?;
        dlq.push(mainstay_dlq::NewEntry::inline(
            "deliveries",
            "drill-entry",
            b"payload".to_vec(),
            mainstay_dlq::FailureClass::Permanent,
            "delivery failed",
        ))
        .await?;
        dlq.close().await?;
    }
    let api = builder(dir, &backups).start()?;

    // Before the backup: three collections, one of each policy. The `s3_only` one is read from
    // the object store once its segments are committed, so only a restore that brings the
    // object store back where the service looks serves it (memory_s3 serves from local files).
    for (name, policy) in [
        ("hot", "memory"),
        ("tiered", "memory_s3"),
        ("cold", "s3_only"),
    ] {
        let created = client
            .post(api.url("/v1/collections"))
            .json(&serde_json::json!({ "name": name, "policy": policy }))
            .send()
            .await?;
        ensure!(
            created.status() == 201,
            "create {name}: {}",
            created.status()
        );
        put_batch(&client, &api, name, 0..BEFORE).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for name in ["tiered", "cold"] {
        while !uploaded(&dir.join("data"), name) {
            ensure!(
                Instant::now() < deadline,
                "no segment of `{name}` was uploaded before the backup"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let backup_requested_at = unix_now();
    let backup = client
        .post(api.url("/admin/backups"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await?;
    ensure!(backup.status() == 201, "backup: {}", backup.status());
    let backup: serde_json::Value = backup.json().await?;
    let consistent_at = backup["consistent_at"]
        .as_f64()
        .context("the backup answer has no consistent_at")?;
    // The consistent point is taken while the backup request runs (in whole seconds): the
    // recovery point the report gives is measured from it.
    let backup_answered_at = unix_now();
    ensure!(
        backup_requested_at.floor() <= consistent_at && consistent_at <= backup_answered_at.ceil(),
        "consistent_at {consistent_at} is outside the backup request ({backup_requested_at} to {backup_answered_at})"
    );
    // After the backup: writes the loss will take (the recovery point is the backup's).
    for name in ["hot", "tiered", "cold"] {
        put_batch(&client, &api, name, BEFORE..BEFORE + AFTER).await?;
    }

    // The disaster: the process dies and its disk is gone.
    drop(api);
    let lost_at = unix_now();
    let loss = Instant::now();
    std::fs::remove_dir_all(dir.join("data")).context("no data directory to lose")?;

    // The procedure: restore the newest backup into an empty data directory, start.
    let restore_started = Instant::now();
    let (status, stdout, stderr) = builder(dir, &backups)
        .args(&[
            "backup",
            "restore",
            &backups.display().to_string(),
            "--data-dir",
            &dir.join("data").display().to_string(),
        ])
        .run()?;
    ensure!(status.success(), "restore: {status}\n{stdout}\n{stderr}");
    let restore_took = restore_started.elapsed();
    // The segments are back in the object store the service will use (the embedded one under
    // the data directory), not only in its local files.
    for name in ["tiered", "cold"] {
        ensure!(
            uploaded(&dir.join("data"), name),
            "the restore left no segment of `{name}` in {}",
            dir.join("data/objects").display()
        );
    }
    let api = builder(dir, &backups).start()?;
    loop {
        let ready = client.get(api.url("/health/ready")).send().await?;
        if ready.status() == 200 {
            break;
        }
        ensure!(
            loss.elapsed() < Duration::from_secs(60),
            "not ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovery_time = loss.elapsed();

    // Every record of the backup is served with its value; the later ones are counted lost.
    let mut served = 0;
    let mut lost = 0;
    for name in ["hot", "tiered", "cold"] {
        for n in 0..BEFORE + AFTER {
            let answer = client
                .get(api.url(&format!("/v1/collections/{name}/records/r{n:05}")))
                .send()
                .await?;
            match answer.status().as_u16() {
                200 => {
                    ensure!(n < BEFORE, "{name}/r{n:05} was written after the backup");
                    ensure!(answer.bytes().await? == format!("{name}-{n}").as_bytes());
                    served += 1;
                }
                404 => {
                    ensure!(n >= BEFORE, "{name}/r{n:05} was in the backup and is gone");
                    lost += 1;
                }
                other => anyhow::bail!("{name}/r{n:05}: {other}"),
            }
        }
    }
    ensure!(served == 3 * BEFORE && lost == 3 * AFTER);
    let listed: serde_json::Value = client
        .get(api.url("/admin/dlq?queue=deliveries"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let keys: Vec<&serde_json::Value> = listed["entries"]
        .as_array()
        .context("the DLQ listing has no entries")?
        .iter()
        .map(|entry| &entry["key"])
        .collect();
    ensure!(
        keys == ["drill-entry"],
        "the dead-letter entry of the backup is not restored: {listed}"
    );

    let recovery_point = lost_at - consistent_at;
    ensure!(
        (0.0..=lost_at - backup_requested_at + 1.0).contains(&recovery_point),
        "a recovery point of {recovery_point} s for a loss {} s after the backup was requested",
        lost_at - backup_requested_at
    );
    let report = serde_json::json!({
        "scenario": "lost disk (data directory, embedded object store under it)",
        "backup_id": backup["id"],
        "backup_consistent_at": consistent_at,
        "lost_at": lost_at,
        "recovery_point_seconds": recovery_point,
        "writes_lost": lost,
        "records_restored": served,
        "restore_seconds": restore_took.as_secs_f64(),
        "recovery_time_seconds": recovery_time.as_secs_f64(),
        "procedure": ["mainstay-api backup restore <backup.url> --data-dir <storage.data_dir>", "start mainstay-api", "wait for /health/ready"],
    });
    let out = report_dir();
    std::fs::create_dir_all(&out)?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let markdown = format!(
        "# Disaster-recovery drill\n\n| | |\n|---|---|\n| scenario | lost disk |\n| backup | {} |\n| records restored | {served} |\n| writes lost (after the backup) | {lost} |\n| recovery point | {recovery_point:.1} s |\n| restore | {:.2} s |\n| recovery time (loss to ready) | {:.2} s |\n",
        backup["id"].as_str().unwrap_or_default(),
        restore_took.as_secs_f64(),
        recovery_time.as_secs_f64(),
    );
    std::fs::write(out.join("report.md"), markdown)?;
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json"))?)?;
    ensure!(written["records_restored"] == served);
    Ok(())
}
