//! Runtime configuration on the admin API: `GET/POST /admin/config/{section}`.
//!
//! A POST validates the section, applies it to the running component and persists it in
//! `storage.data_dir/admin-config.toml` (temp + fsync + rename + fsync of the directory), which is
//! read last at start-up: an admin override wins over defaults, the file and the environment, and
//! `config print` names it as the source. Sections: `compaction` (`storage.compaction`), `dlq`
//! (`dlq.defaults` and `dlq.queues`; the record store's own queue is not adjustable, as it must
//! never evict or expire) and `circuit_breaker` (the configured breakers by name:
//! `storage-uploads` is `storage.upload.breaker`, `ratelimit-redis` is `ratelimit.breaker`; keys
//! not given keep their values, and the breakers keep their state).
//!
//! Without a record store (the stateless mode) `compaction` and `dlq` answer 404 of type
//! `.../storage-disabled` and `circuit_breaker` holds `ratelimit-redis` only; a POST still
//! persists into `storage.data_dir`, and answers 503 (nothing changed) when that directory is not
//! writable: stateless deployments change their configuration file instead.

use std::io::Write as _;
use std::path::Path as FsPath;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mainstay_resilience::{BreakerConfig, CircuitBreaker};
use mainstay_storage_tiering::CompactionConfig;
use std::collections::BTreeMap;

use super::Routes;
use crate::app::AppState;
use crate::config::ADMIN_OVERRIDES_FILE;
use crate::problem::{Path, Problem};

/// The sections, with the configuration key each one is.
const SECTIONS: &[(&str, &str)] = &[
    ("compaction", "storage.compaction"),
    ("dlq", "dlq"),
    (
        "circuit_breaker",
        "storage.upload.breaker, ratelimit.breaker",
    ),
];

/// The breakers the `circuit_breaker` section adjusts, with their configuration keys.
fn configurable_breakers(state: &AppState) -> Vec<(CircuitBreaker, &'static str)> {
    let mut breakers = Vec::new();
    if let Some(storage) = &state.storage {
        breakers.push((storage.store.breaker().clone(), "storage.upload.breaker"));
    }
    // The rate limiter's breaker is reached through the registry: the state holds no limiter.
    if let Ok(limiter) = state.breakers.get(mainstay_ratelimit::BREAKER_NAME) {
        breakers.push((limiter, "ratelimit.breaker"));
    }
    breakers
}

/// The `circuit_breaker` section: each configurable breaker's rules in force, by name.
fn breaker_configs(state: &AppState) -> BTreeMap<String, BreakerConfig> {
    configurable_breakers(state)
        .into_iter()
        .map(|(breaker, _)| (breaker.name().to_owned(), breaker.config()))
        .collect()
}

/// The `dlq` section: the queue policies that can change on the running queue.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqPolicies {
    /// Settings of queues not configured by name.
    pub defaults: mainstay_dlq::QueueConfig,
    /// Settings by queue name (merged: queues not named keep theirs).
    #[serde(default)]
    pub queues: std::collections::BTreeMap<String, mainstay_dlq::QueueConfig>,
}

/// The runtime configuration routes, relative to `/admin`.
pub fn routes() -> Routes {
    Routes::new()
        .route("get", "/config/{section}", get(read))
        .route("post", "/config/{section}", post(write))
}

fn unknown(section: &str) -> Response {
    let known: Vec<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
    Problem::new(
        StatusCode::NOT_FOUND,
        format!(
            "no runtime configuration section {section:?}; sections: {}",
            known.join(", ")
        ),
    )
    .into_response()
}

/// The section's settings in force.
#[utoipa::path(get, path = "/admin/config/{section}", tag = "admin", security(("admin_token" = [])),
    params(("section" = String, Path, description = "`compaction`, `dlq` or `circuit_breaker`", pattern = "^(compaction|dlq|circuit_breaker)$")),
    responses(
        (status = 200, description = "The settings in force", body = Object),
        (status = 404, description = "No such section; on a stateless instance (`storage.enabled = false`) also `compaction` and `dlq` (type `.../storage-disabled`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn read(State(state): State<AppState>, Path(section): Path<String>) -> Response {
    let storage = state.storage.as_ref();
    match (section.as_str(), storage) {
        ("compaction" | "dlq", None) => crate::app::storage_disabled().into_response(),
        ("compaction", Some(storage)) => Json(storage.store.compaction_config()).into_response(),
        ("dlq", Some(storage)) => {
            let (defaults, queues) = storage.dlq.queue_policies();
            Json(DlqPolicies { defaults, queues }).into_response()
        }
        ("circuit_breaker", _) => Json(breaker_configs(&state)).into_response(),
        _ => unknown(&section),
    }
}

/// Validates, applies and persists the section.
#[utoipa::path(post, path = "/admin/config/{section}", tag = "admin", security(("admin_token" = [])),
    params(("section" = String, Path, description = "`compaction`, `dlq` or `circuit_breaker`", pattern = "^(compaction|dlq|circuit_breaker)$")),
    request_body(content = Object, description = "The whole section, as `GET` returns it; for `circuit_breaker`, any of the breakers with any of their keys (the others keep their values)"),
    responses(
        (status = 200, description = "Applied and persisted; the settings in force", body = Object),
        (status = 404, description = "No such section; on a stateless instance (`storage.enabled = false`) also `compaction` and `dlq` (type `.../storage-disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A value is not allowed (the key is named); nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Could not be persisted; nothing changed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn write(
    State(state): State<AppState>,
    Path(section): Path<String>,
    body: Bytes,
) -> Response {
    let Some((_, key)) = SECTIONS.iter().find(|(name, _)| *name == section) else {
        return unknown(&section);
    };
    let data_dir = state.config.storage.data_dir.clone();
    if section == "circuit_breaker" {
        return write_breakers(&state, &body).await;
    }
    // The other sections belong to the record store and its dead-letter queue.
    let Some(storage) = state.storage.as_ref() else {
        return crate::app::storage_disabled().into_response();
    };
    match section.as_str() {
        "compaction" => {
            let compaction: CompactionConfig = match serde_json::from_slice(&body) {
                Ok(compaction) => compaction,
                Err(error) => return unreadable(key, &error),
            };
            let previous = storage.store.compaction_config();
            if let Err(error) = storage.store.set_compaction_config(compaction.clone()) {
                return invalid(&format!("storage.{}", error.key), &error);
            }
            let persisted = persist_blocking(data_dir, vec![(*key, to_toml(&compaction))]).await;
            if let Err(detail) = persisted {
                let _ = storage.store.set_compaction_config(previous);
                return not_persisted(&detail);
            }
            tracing::warn!(section = %section, "admin: runtime configuration changed and persisted");
            Json(storage.store.compaction_config()).into_response()
        }
        _ => {
            let policies: DlqPolicies = match serde_json::from_slice(&body) {
                Ok(policies) => policies,
                Err(error) => return unreadable(key, &error),
            };
            if policies
                .queues
                .contains_key(mainstay_storage_tiering::DLQ_QUEUE)
            {
                return Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "key `dlq.queues.{}`: the record store's queue must never evict or expire; it is not adjustable",
                        mainstay_storage_tiering::DLQ_QUEUE
                    ),
                )
                .into_response();
            }
            let (previous_defaults, previous_queues) = storage.dlq.queue_policies();
            if let Err(error) = storage
                .dlq
                .set_queue_policies(policies.defaults.clone(), &policies.queues)
            {
                return invalid(&format!("dlq.{}", error.key), &error);
            }
            let persisted = persist_blocking(
                data_dir,
                vec![
                    ("dlq.defaults", to_toml(&policies.defaults)),
                    ("dlq.queues", to_toml(&policies.queues)),
                ],
            )
            .await;
            if let Err(detail) = persisted {
                let _ = storage
                    .dlq
                    .set_queue_policies(previous_defaults, &previous_queues);
                return not_persisted(&detail);
            }
            tracing::warn!(section = %section, "admin: runtime configuration changed and persisted");
            let (defaults, queues) = storage.dlq.queue_policies();
            Json(DlqPolicies { defaults, queues }).into_response()
        }
    }
}

/// Applies a `circuit_breaker` section: every named breaker's keys merged over its rules in force,
/// all applied or none, then persisted (and reverted when persisting fails).
async fn write_breakers(state: &AppState, body: &[u8]) -> Response {
    let changes: BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
        match serde_json::from_slice(body) {
            Ok(changes) => changes,
            Err(error) => {
                return Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "`circuit_breaker` could not be read (an object of breakers by name, each an object of keys): {error}"
                    ),
                )
                .into_response();
            }
        };
    let configurable = configurable_breakers(state);
    let mut planned = Vec::with_capacity(changes.len());
    for (name, keys) in changes {
        let Some((breaker, key)) = configurable.iter().find(|(known, _)| known.name() == name)
        else {
            let known: Vec<&str> = configurable.iter().map(|(known, _)| known.name()).collect();
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "no configurable circuit breaker {name:?}; breakers: {}",
                    known.join(", ")
                ),
            )
            .into_response();
        };
        // The keys given, over the rules in force: a partial object alone would fall back to
        // the defaults of the keys it leaves out.
        let previous = breaker.config();
        let merged = serde_json::to_value(&previous).and_then(|mut merged| {
            if let serde_json::Value::Object(fields) = &mut merged {
                fields.extend(keys);
            }
            serde_json::from_value::<BreakerConfig>(merged)
        });
        let config = match merged {
            Ok(config) => config,
            Err(error) => return unreadable(key, &error),
        };
        planned.push((breaker, *key, previous, config));
    }
    // All or none: `reconfigure` validates, and a refusal part-way puts back what was applied.
    for (index, (breaker, key, _, config)) in planned.iter().enumerate() {
        if let Err(error) = breaker.reconfigure(config.clone()) {
            for (breaker, _, previous, _) in &planned[..index] {
                let _ = breaker.reconfigure(previous.clone());
            }
            return invalid(&format!("{key}.{}", error.key), &error);
        }
    }
    let values = planned
        .iter()
        .map(|(_, key, _, config)| (*key, to_toml(config)))
        .collect();
    if let Err(detail) = persist_blocking(state.config.storage.data_dir.clone(), values).await {
        for (breaker, _, previous, _) in &planned {
            let _ = breaker.reconfigure(previous.clone());
        }
        return not_persisted(&detail);
    }
    tracing::warn!(section = "circuit_breaker", breakers = ?planned.iter().map(|(breaker, ..)| breaker.name().to_owned()).collect::<Vec<_>>(), "admin: runtime configuration changed and persisted");
    Json(breaker_configs(state)).into_response()
}

fn unreadable(key: &str, error: &serde_json::Error) -> Response {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("`{key}` could not be read: {error}"),
    )
    .into_response()
}

fn invalid(key: &str, error: &dyn std::fmt::Display) -> Response {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("key `{key}`: {error}"),
    )
    .into_response()
}

fn not_persisted(detail: &str) -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("could not persist {ADMIN_OVERRIDES_FILE}: {detail}; nothing changed"),
    )
    .into_response()
}

fn to_toml(value: &impl serde::Serialize) -> Result<toml::Value, String> {
    toml::Value::try_from(value).map_err(|error| error.to_string())
}

/// Persists the values off the runtime's worker threads; the running component is reverted by the
/// caller when this fails.
async fn persist_blocking(
    data_dir: std::path::PathBuf,
    values: Vec<(&'static str, Result<toml::Value, String>)>,
) -> Result<(), String> {
    let mut ready = Vec::with_capacity(values.len());
    for (key, value) in values {
        ready.push((key, value?));
    }
    match tokio::task::spawn_blocking(move || persist(&data_dir, &ready)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the persisting task failed".to_owned()),
    }
}

/// Writes each value under its dotted key into the overrides file, keeping its other sections:
/// temp file, fsync, rename, fsync of the directory.
fn persist(data_dir: &FsPath, values: &[(&str, toml::Value)]) -> std::io::Result<()> {
    let invalid = |error: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string())
    };
    let path = data_dir.join(ADMIN_OVERRIDES_FILE);
    let mut document: toml::Table = match std::fs::read_to_string(&path) {
        Ok(text) => text.parse().map_err(|error| invalid(&error))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(error) => return Err(error),
    };
    for (key, value) in values {
        let mut table = &mut document;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        for part in parts {
            let entry = table
                .entry(part.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(inner) = entry else {
                return Err(invalid(&format!(
                    "{ADMIN_OVERRIDES_FILE}: `{part}` is not a table"
                )));
            };
            table = inner;
        }
        table.insert(last.to_owned(), value.clone());
    }
    let text = toml::to_string_pretty(&document).map_err(|error| invalid(&error))?;
    let temp = data_dir.join(format!("{ADMIN_OVERRIDES_FILE}.tmp"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(b"# Settings changed through the admin API; they win over mainstay.toml and MAINSTAY_ variables.\n")?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()
}
