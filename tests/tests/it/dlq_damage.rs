//! A DLQ journal damaged in the middle, through the binary (issue 13, point 3): by default
//! (`dlq.journal_recovery = "skip_corrupt"`, entries can be redelivered) the service starts and
//! serves every entry but the damaged one; under `refuse` it exits with code 4 naming the
//! segment and what follows, and changes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mainstay_dlq::{Dlq, DlqConfig, FailureClass, NewEntry};
use mainstay_tests::{Api, ApiBuilder};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-dlq-damage-01234567";

fn service(data_dir: &Path) -> ApiBuilder {
    Api::builder()
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir.to_string_lossy())
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
}

/// The newest journal segment of the DLQ in `dlq_dir` and the start offsets of its frames
/// (24-byte segment header, then `u32 len | u32 crc | u64 lsn | payload`).
fn segment(dlq_dir: &Path) -> anyhow::Result<(PathBuf, Vec<usize>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dlq_dir.join("log"))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    paths.sort();
    let path = paths
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no journal segment"))?;
    let bytes = std::fs::read(&path)?;
    let mut offsets = Vec::new();
    let mut pos = 24;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into()?) as usize;
        if len == 0 {
            break;
        }
        offsets.push(pos);
        pos += 8 + len;
    }
    Ok((path, offsets))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_journal_damaged_in_the_middle_is_skipped_by_default_and_refused_on_request()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let dlq_dir = data_dir.join("dlq");
    {
        let dlq = Dlq::open(&dlq_dir, DlqConfig::default()).await?;
        for n in 1..=20 {
            let key = format!("k{n:02}");
            let entry = NewEntry::inline(
                "orders",
                key.as_str(),
                format!("payload of {key}").into_bytes(),
                FailureClass::Transient,
                "failed",
            );
            dlq.push(entry).await?;
        }
        // Dropped without close (which would compact into a snapshot): the entries are in
        // the journal only, as after a crash.
    }
    let (path, frames) = segment(&dlq_dir)?;
    anyhow::ensure!(frames.len() == 20, "20 frames, found {}", frames.len());
    let mut bytes = std::fs::read(&path)?;
    bytes[frames[9] + 8 + 12] ^= 0x10;
    std::fs::write(&path, &bytes)?;

    // Refused on request: exit 4, the segment and what follows named, nothing changed.
    let refused = service(&data_dir).env("MAINSTAY_DLQ__JOURNAL_RECOVERY", "refuse");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(refused.run()));
    let (status, out, err) = receiver
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| {
            anyhow::anyhow!("the service started on a damaged journal instead of exiting")
        })??;
    assert_eq!(status.code(), Some(4), "stdout: {out}\nstderr: {err}");
    let named = path.display().to_string();
    for needle in [
        named.as_str(),
        &format!("offset {}", frames[9]),
        "10 valid frames follow",
        "dlq.journal_recovery",
    ] {
        assert!(err.contains(needle), "stderr should name {needle:?}: {err}");
    }
    assert_eq!(std::fs::read(&path)?, bytes, "refusing changed the segment");

    // The default recovers around the damage: every other entry is served.
    let api = service(&data_dir).start()?;
    let listed: Value = reqwest::Client::new()
        .get(api.url("/admin/dlq?queue=orders&limit=100"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let mut keys: Vec<String> = listed["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry["key"].as_str().map(ToOwned::to_owned))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    let expected: Vec<String> = (1..=20)
        .filter(|n| *n != 10)
        .map(|n| format!("k{n:02}"))
        .collect();
    assert_eq!(keys, expected, "{listed}");
    assert!(
        api.lines()
            .iter()
            .any(|line| line.contains("dlq journal is damaged")
                && line.contains("\"lost_records\":1")),
        "one error line reports the damage and the one record lost: {:?}",
        api.lines()
    );
    Ok(())
}
