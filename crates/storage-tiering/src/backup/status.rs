//! What a backup root says about its own health, for monitoring (decision 0115): the newest
//! verification [`verify_and_record`](super::verify_and_record) recorded, the newest one that
//! found its backup good, and the newest complete backup.

use serde::Deserialize;

use super::manifest::{BackupManifest, MANIFEST_FILE};
use super::{BackupTarget, LAST_SUCCESS_FILE, LAST_VERIFICATION_FILE};

/// The fields of a recorded verification report that monitoring reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct RecordedVerification {
    /// `ok`, `damaged` or `too_old`.
    pub outcome: String,
    /// When the verification finished (Unix seconds).
    pub checked_at: u64,
    /// The backup it verified.
    pub backup_id: String,
    /// That backup's consistent point (Unix seconds).
    pub consistent_at: u64,
}

/// What [`status`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupStatus {
    /// The newest recorded verification, if any.
    pub last_verification: Option<RecordedVerification>,
    /// The newest recorded verification whose outcome was `ok`, if any.
    pub last_success: Option<RecordedVerification>,
    /// The id and consistent point (Unix seconds) of the newest complete backup, if any.
    pub newest_backup: Option<(String, u64)>,
}

/// Reads the root's verification records and its newest complete backup's manifest.
///
/// # Errors
///
/// A description of what could not be read or parsed (the root, a record, a manifest).
pub async fn status(root: &BackupTarget) -> Result<BackupStatus, String> {
    let record = |name: &'static str| async move {
        match root.get(name).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice::<RecordedVerification>(&bytes)
                .map(Some)
                .map_err(|error| format!("{name}: {error}")),
        }
    };
    let last_verification = record(LAST_VERIFICATION_FILE).await?;
    let last_success = record(LAST_SUCCESS_FILE).await?;
    let newest_backup = match root.newest_complete_backup().await?.as_deref() {
        None => None,
        Some(id) => {
            let bytes = root
                .child(id)
                .get(MANIFEST_FILE)
                .await?
                .ok_or_else(|| format!("{id}/{MANIFEST_FILE} disappeared"))?;
            let manifest: BackupManifest = serde_json::from_slice(&bytes)
                .map_err(|error| format!("{id}/{MANIFEST_FILE}: {error}"))?;
            Some((manifest.id, manifest.consistent_point.unix_time))
        }
    };
    Ok(BackupStatus {
        last_verification,
        last_success,
        newest_backup,
    })
}
