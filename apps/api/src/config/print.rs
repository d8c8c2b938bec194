//! Printing the effective configuration: every key flattened (`server.addr`) with secrets
//! masked, for `mainstay-api config print` (with the source of each value) and
//! `GET /admin/config`.

use std::collections::BTreeMap;

use figment::Figment;
use serde_json::Value;

use super::types::Config;

/// Key names whose values are never shown.
/// Keys shown as `[REDACTED]` besides those whose name holds a secret by the logs' patterns
/// (`*token*`, `*secret*`, `*password*`, ...): hashes of API keys, header lists (an OTLP
/// collector's `Authorization`), and the storage master key.
const SECRET_KEYS: &[&str] = &["key_sha256", "headers", "otlp_headers", "master_key"];

/// Secret tables whose entry names are shown (which headers are sent), values masked.
const NAMES_SHOWN: &[&str] = &["headers", "otlp_headers"];

/// The value of the secret key `leaf`, masked: a header table keeps its names, every other value
/// is `[REDACTED]` whole.
fn mask_whole(leaf: &str, value: Value) -> Value {
    match value {
        Value::Object(map) if NAMES_SHOWN.contains(&leaf) => Value::Object(
            map.into_iter()
                .map(|(name, _)| (name, Value::String("[REDACTED]".into())))
                .collect(),
        ),
        _ => Value::String("[REDACTED]".into()),
    }
}

/// Whether the setting `leaf` (the last segment of its key) holds a secret.
pub(super) fn is_secret_key(leaf: &str) -> bool {
    SECRET_KEYS.contains(&leaf) || mainstay_telemetry::is_secret_name(leaf)
}

/// `value` with every secret masked: values of secret keys at any depth, and in every string
/// that is a URL, its user-info (`redis://[REDACTED]@host:6379`) and the values of query
/// parameters with secret names (`?password=[REDACTED]`).
fn mask_secrets(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(mask_url(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(mask_secrets).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(name, value)| {
                    let value = if is_secret_key(&name) && !value.is_null() {
                        mask_whole(&name, value)
                    } else {
                        mask_secrets(value)
                    };
                    (name, value)
                })
                .collect(),
        ),
        other => other,
    }
}

/// A URL with its user-info and secret query values masked; any other text unchanged.
pub(crate) fn mask_url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..authority_start]);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str("[REDACTED]");
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let after = &rest[authority_len..];
    let (before_query, query_and_fragment) = match after.find('?') {
        Some(question) => (&after[..question], Some(&after[question + 1..])),
        None => (after, None),
    };
    out.push_str(before_query);
    if let Some(query_and_fragment) = query_and_fragment {
        let (query, fragment) = match query_and_fragment.find('#') {
            Some(hash) => (&query_and_fragment[..hash], &query_and_fragment[hash..]),
            None => (query_and_fragment, ""),
        };
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_key(name) => format!("{name}=[REDACTED]"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
        out.push_str(fragment);
    }
    out
}

/// Tables documented and shown as one key (their entries are names the operator chooses).
const LEAF_TABLES: &[&str] = &[
    "auth.failure_limit",
    "storage.upload.breaker",
    "storage.upload.retry_budget",
    "dlq.queues",
    "health.checks",
    "ratelimit.breaker",
    "ratelimit.plans",
    "ratelimit.route_classes",
    "ratelimit.routes",
    "ratelimit.tiers",
    "telemetry.otlp_headers",
    "telemetry.resource_attributes",
];

/// Optional keys the configuration types leave out when unset.
const ABSENT_WHEN_UNSET: &[&str] = &["ratelimit.secret"];

/// Every configuration key with its current value, flattened (`server.addr`), secrets masked.
#[must_use]
pub fn flatten(config: &Config) -> BTreeMap<String, Value> {
    let mut keys = BTreeMap::new();
    let value = serde_json::to_value(config).unwrap_or(Value::Null);
    flatten_into(&mut keys, String::new(), value);
    for key in ABSENT_WHEN_UNSET {
        keys.entry((*key).to_owned()).or_insert(Value::Null);
    }
    keys
}

fn flatten_into(keys: &mut BTreeMap<String, Value>, prefix: String, value: Value) {
    let is_table = prefix.is_empty() || !LEAF_TABLES.contains(&prefix.as_str());
    match value {
        Value::Object(map) if is_table && (!map.is_empty() || prefix.is_empty()) => {
            for (name, value) in map {
                let key = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                flatten_into(keys, key, value);
            }
        }
        value => {
            let leaf = prefix.rsplit('.').next().unwrap_or_default();
            let masked = if is_secret_key(leaf) && !value.is_null() {
                mask_whole(leaf, value)
            } else {
                mask_secrets(value)
            };
            keys.insert(prefix, masked);
        }
    }
}

/// `mainstay-api config print`: the effective configuration, one key a line with where its value
/// came from, secrets masked.
#[must_use]
pub fn print(config: &Config, figment: &Figment) -> String {
    let mut out = String::from("# effective configuration of mainstay-api (secrets masked)\n");
    for (key, value) in flatten(config) {
        let source = figment
            .find_value(&key)
            .ok()
            .and_then(|value| {
                figment
                    .get_metadata(value.tag())
                    .map(|metadata| match &metadata.source {
                        Some(figment::Source::File(path)) => {
                            format!("{} {}", metadata.name, path.display())
                        }
                        _ => metadata.name.to_string(),
                    })
            })
            .filter(|name| !name.starts_with(std::any::type_name::<Config>()))
            .unwrap_or_else(|| "default".into());
        out.push_str(&format!("{key} = {}  # {source}\n", render(&value)));
    }
    out
}

pub(super) fn render(value: &Value) -> String {
    match value {
        Value::Null => "(unset)".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod secret_tests {
    use serde_json::{Value, json};

    use super::{flatten, mask_url};
    use crate::config::Config;

    /// Issue 15, point 4: the user-info of every URL and the secret query values are masked.
    #[test]
    fn urls_lose_their_user_info_and_secret_query_values() {
        for (url, masked) in [
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://[REDACTED]@127.0.0.1:6379/0",
            ),
            (
                "rediss://app:hunter2@redis.internal:6380",
                "rediss://[REDACTED]@redis.internal:6380",
            ),
            (
                "s3://AKIAXXX:hunter2@bucket/prefix?region=eu-west-1",
                "s3://[REDACTED]@bucket/prefix?region=eu-west-1",
            ),
            (
                "https://user:p%40ss@collector:4318/v1/traces",
                "https://[REDACTED]@collector:4318/v1/traces",
            ),
            (
                "s3://bucket/p?access_key_id=AKIA&secret_access_key=hunter2#x",
                "s3://bucket/p?access_key_id=AKIA&secret_access_key=[REDACTED]#x",
            ),
            (
                "http://collector:4318?api_key=hunter2&token=t",
                "http://collector:4318?api_key=[REDACTED]&token=[REDACTED]",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("not a url: a@b", "not a url: a@b"),
            ("file:///data/mainstay", "file:///data/mainstay"),
        ] {
            assert_eq!(mask_url(url), masked, "{url}");
        }
    }

    /// Every key that is or holds a secret is masked in the flattened configuration that
    /// `config print` and `GET /admin/config` show, and every URL in it loses its user-info.
    #[test]
    fn secret_keys_and_urls_are_masked_in_the_configuration_dump() {
        let mut config = Config::default();
        config.admin.token = Some("admin-hunter2".into());
        config.redis.url = Some("redis://:redis-hunter2@127.0.0.1:6379".into());
        config.storage.object_store_url = Some("s3://AKIA:s3-hunter2@bucket/p".into());
        config.telemetry.otlp_endpoint = Some("https://otlp:otlp-hunter2@collector:4318".into());
        config.storage.master_key = Some(
            "a1a2a3a4a5a6a7a8a9aaabacadaeafa0b1b2b3b4b5b6b7b8b9babbbcbdbebfb0"
                .parse()
                .expect("key"),
        );
        let keys = flatten(&config);
        let dump = serde_json::to_string(&keys).expect("json");
        for secret in [
            "admin-hunter2",
            "redis-hunter2",
            "s3-hunter2",
            "otlp-hunter2",
            "a1a2a3a4a5a6a7a8",
        ] {
            assert!(!dump.contains(secret), "{secret} shown in {dump}");
        }
        assert_eq!(keys["admin.token"], json!("[REDACTED]"));
        assert_eq!(keys["storage.master_key"], json!("[REDACTED]"));
        assert_eq!(
            keys["redis.url"],
            json!("redis://[REDACTED]@127.0.0.1:6379")
        );
        assert_eq!(
            keys["telemetry.otlp_endpoint"],
            json!("https://[REDACTED]@collector:4318")
        );
        assert_eq!(
            keys["server.addr"],
            Value::from(config.server.addr.to_string())
        );
    }
}
