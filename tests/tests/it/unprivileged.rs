//! The binary as the container image runs it (`deploy/docker/Dockerfile`, decision 0103): an
//! unprivileged numeric uid whose only writable path is the data directory.
//!
//! No container engine runs here, so the test reproduces the image's constraints on the host:
//! util-linux's `setpriv` drops to uid and gid 65532 without supplementary groups, the working
//! directory and `HOME` belong to root and are not writable, and `storage.data_dir` is a
//! directory that uid owns. It needs root to change users; CI and the development machine run as
//! root, so anything else fails with what to do.

use std::os::unix::fs::PermissionsExt as _;

use mainstay_tests::Api;
use serde_json::json;

/// The image's user and group (`USER 65532:65532`, distroless's `nonroot`).
const IMAGE_UID: u32 = 65532;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_user_serves_and_writes_with_only_the_data_dir_writable() -> anyhow::Result<()>
{
    anyhow::ensure!(
        rustix::process::geteuid().is_root(),
        "this test runs the binary as uid {IMAGE_UID} through setpriv and must run as root (CI does); run it with sudo"
    );
    // Root-owned and read-only for everyone else, as the image's root file system is.
    let root = tempfile::tempdir()?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
    let data = root.path().join("data");
    std::fs::create_dir(&data)?;
    std::os::unix::fs::chown(&data, Some(IMAGE_UID), Some(IMAGE_UID))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
    let cwd = root.path().join("app");
    std::fs::create_dir(&cwd)?;

    let api = Api::builder()
        .as_user(IMAGE_UID)
        .current_dir(&cwd)
        .env("HOME", &cwd.to_string_lossy())
        .env("MAINSTAY_STORAGE__DATA_DIR", &data.to_string_lossy())
        .start()?;

    // The process really runs as the image's user.
    let status = std::fs::read_to_string(format!("/proc/{}/status", api.pid()))?;
    let uid_line = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .unwrap_or_default();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65532"; 4],
        "{uid_line}"
    );

    let client = reqwest::Client::new();
    let ready = client.get(api.url("/health/ready")).send().await?;
    let ready_status = ready.status();
    assert_eq!(ready_status, 200, "{}", ready.text().await?);

    let created = client
        .post(api.url("/v1/collections"))
        .json(&json!({"name": "orders", "policy": "memory_s3"}))
        .send()
        .await?;
    assert_eq!(created.status(), 201, "{}", created.text().await?);
    let put = client
        .put(api.url("/v1/collections/orders/records/order-1"))
        .body("first order")
        .send()
        .await?;
    assert_eq!(put.status(), 204, "{}", put.text().await?);
    let got = client
        .get(api.url("/v1/collections/orders/records/order-1"))
        .send()
        .await?;
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await?, "first order");

    // Nothing was written outside the data directory (the working directory stays empty), and
    // the data directory holds what the service wrote there.
    assert_eq!(std::fs::read_dir(&cwd)?.count(), 0, "the working directory");
    assert!(std::fs::read_dir(&data)?.count() > 0, "the data directory");
    Ok(())
}
