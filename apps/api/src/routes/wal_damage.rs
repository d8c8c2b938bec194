//! `GET /admin/store/wal-damage` and `POST /admin/store/wal-damage/acknowledge`: the damaged WAL
//! stretches the store skipped at open under `storage.wal_recovery = "skip_corrupt"`.
//!
//! While any is unacknowledged the `storage-wal` check is degraded and `storage_wal_damage` is
//! above 0. The runbook is `docs/runbooks/storage-wal-damaged.md`.

use axum::Json;
use axum::routing::{get, post};
use mainstay_storage_tiering::WalDamage;
use serde::Serialize;

use super::Routes;
use crate::app::Storage;

/// The routes, relative to `/admin`.
pub fn routes() -> Routes {
    Routes::new()
        .route("get", "/store/wal-damage", get(list))
        .route("post", "/store/wal-damage/acknowledge", post(acknowledge))
}

/// One damaged stretch of a WAL file: the records in it are lost.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DamagedStretch {
    /// The WAL file (rewritten without the damage).
    pub file: String,
    /// The copy of the file as found, under `storage.data_dir/corrupt/`.
    pub copy: String,
    /// Where the damage starts in the file.
    pub offset: u64,
    /// Bytes skipped.
    pub bytes: u64,
    /// The last LSN read before the damage: the lost records had higher ones.
    pub lsn_before: u64,
    /// The first LSN read after it, if any: the lost records had lower ones.
    pub lsn_after: Option<u64>,
}

impl From<&WalDamage> for DamagedStretch {
    fn from(damage: &WalDamage) -> Self {
        Self {
            file: damage.file.display().to_string(),
            copy: damage.copy.display().to_string(),
            offset: damage.offset,
            bytes: damage.bytes,
            lsn_before: damage.lsn_before,
            lsn_after: damage.lsn_after,
        }
    }
}

/// The unacknowledged damage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WalDamageList {
    /// Stretches skipped at open and not yet acknowledged.
    pub damage: Vec<DamagedStretch>,
}

/// What an acknowledgement cleared.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Acknowledged {
    /// Stretches acknowledged (0 when there were none).
    pub acknowledged: usize,
}

/// Lists the damaged WAL stretches skipped at open that are not acknowledged yet.
#[utoipa::path(get, path = "/admin/store/wal-damage", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, description = "The unacknowledged damage (empty when none)", body = WalDamageList)))]
pub async fn list(storage: Storage) -> Json<WalDamageList> {
    Json(WalDamageList {
        damage: storage
            .store
            .wal_damage()
            .iter()
            .map(DamagedStretch::from)
            .collect(),
    })
}

/// Acknowledges the listed damage after an operator checked the copies under `corrupt/`: the
/// `storage-wal` check turns healthy again and `storage_wal_damage` drops to 0.
#[utoipa::path(post, path = "/admin/store/wal-damage/acknowledge", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, description = "The damage is acknowledged", body = Acknowledged)))]
pub async fn acknowledge(storage: Storage) -> Json<Acknowledged> {
    Json(Acknowledged {
        acknowledged: storage.store.acknowledge_wal_damage(),
    })
}
