//! The binary as the container image runs it (`deploy/docker/Dockerfile`, decision 0103): an
//! unprivileged numeric uid whose only writable path is the data directory.
//!
//! No container engine runs here, so the test reproduces the image's constraints on the host:
//! util-linux's `setpriv` drops to uid and gid 65532 without supplementary groups, the working
//! directory and `HOME` belong to root and are not writable, and `storage.data_dir` is a
//! directory that uid owns. The host's world-writable directories (`/tmp`, ...) stay writable to
//! it, so the test checks afterwards that it left nothing there. It needs root to change users;
//! CI and the development machine run as root, so anything else fails with what to do.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mainstay_tests::Api;
use serde_json::json;

/// The image's user and group (`USER 65532:65532`, distroless's `nonroot`).
const IMAGE_UID: u32 = 65532;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_user_serves_and_writes_with_only_the_data_dir_writable() -> anyhow::Result<()> {
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
    // As in the image, the binary sits root-owned in a directory that uid can read (a link to the
    // built one, or a copy): the target directory may be under /root, which that uid cannot enter.
    let bin = root.path().join("mainstay-api");
    let built = mainstay_tests::api_bin()?;
    if std::fs::hard_link(&built, &bin).is_err() {
        std::fs::copy(&built, &bin)?;
    }

    let mut api = Api::builder()
        .as_user(IMAGE_UID)
        .binary(&bin)
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

    // A clean shutdown as that user too: the store and the DLQ flush into the data directory.
    api.terminate()?;
    let status = api.wait_exit(Duration::from_secs(30))?;
    assert!(status.success(), "exit: {status}");

    // On the host uid 65532 may also write the world-writable directories, which a read-only
    // root file system would not offer: it wrote nothing there, nor in its working directory,
    // and the data directory holds what it wrote.
    let outside: Vec<PathBuf> = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock"]
        .iter()
        .flat_map(|dir| owned_by(Path::new(dir), IMAGE_UID, &data))
        .collect();
    assert_eq!(
        outside,
        Vec::<PathBuf>::new(),
        "written outside {}",
        data.display()
    );
    assert_eq!(std::fs::read_dir(&cwd)?.count(), 0, "the working directory");
    assert!(std::fs::read_dir(&data)?.count() > 0, "the data directory");
    Ok(())
}

/// Every path under `dir` (not following links, skipping `except`) owned by `uid`.
fn owned_by(dir: &Path, uid: u32, except: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.map_while(Result::ok) {
        let path = entry.path();
        if path == except {
            continue;
        }
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.uid() == uid {
            found.push(path.clone());
        }
        if metadata.is_dir() {
            found.extend(owned_by(&path, uid, except));
        }
    }
    found
}
