//! The metric catalogue of the whole service: every crate's families and the API's own, printed
//! by `mainstay-api metrics catalogue` as JSON (`cargo xtask codegen` writes `docs/metrics.md`
//! from it). The end-to-end test `metrics_catalogue` compares it with a real scrape.

use mainstay_clock::catalogue::{MetricFamily, MetricKind};

const OWNER: &str = "mainstay-api";

/// The families the API registers itself (`crate::faults`, `crate::auth`, `crate::backup_status`,
/// `crate::erasure`).
pub const METRICS: &[MetricFamily] = &[
    MetricFamily {
        name: "dlq_journal_failed",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &[],
        help: "1 when the dead-letter queue's journal refuses writes after a failed write or fsync",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "auth_failures",
        kind: MetricKind::Counter,
        unit: None,
        labels: &["reason", "outcome"],
        help: "Failed authentications of /v1 callers, by reason (unknown_key, malformed_key) and outcome (rejected: 401, throttled: 429)",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "backup_last_success_timestamp_seconds",
        kind: MetricKind::Gauge,
        unit: Some("seconds"),
        labels: &[],
        help: "Unix time when the newest verification that restored a backup of `backup.url` and found it good finished",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "backup_last_verification_timestamp_seconds",
        kind: MetricKind::Gauge,
        unit: Some("seconds"),
        labels: &[],
        help: "Unix time when the newest verification of a backup of `backup.url` finished, whatever it found",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "backup_verification_outcome",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &["outcome"],
        help: "1 for the outcome of the newest backup verification (ok, damaged, too_old), or missing (none recorded) or unreadable (the root or the record could not be read); 0 for the others",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "backup_newest_timestamp_seconds",
        kind: MetricKind::Gauge,
        unit: Some("seconds"),
        labels: &[],
        help: "Unix time of the consistent point of the newest complete backup under `backup.url`",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "organisation_erasures_requested",
        kind: MetricKind::Counter,
        unit: None,
        labels: &[],
        help: "Erasures of organisations requested (DELETE /admin/organisations/{org})",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "organisation_erasures_completed",
        kind: MetricKind::Counter,
        unit: None,
        labels: &[],
        help: "Erasures of organisations physically complete in every tier",
        owner: OWNER,
        buckets: None,
    },
    MetricFamily {
        name: "organisation_erasures_pending",
        kind: MetricKind::Gauge,
        unit: None,
        labels: &[],
        help: "Erasures of organisations recorded but not yet physically complete",
        owner: OWNER,
        buckets: None,
    },
];

/// Every family the service exports, crate by crate in the order `app::build` registers them,
/// each crate's in its declared order.
#[must_use]
pub fn service_catalogue() -> Vec<MetricFamily> {
    [
        mainstay_telemetry::METRICS,
        mainstay_resilience::METRICS,
        mainstay_ratelimit::METRICS,
        mainstay_health::METRICS,
        mainstay_dlq::METRICS,
        mainstay_storage_tiering::METRICS,
        METRICS,
    ]
    .concat()
}

/// The families only the record store and its dead-letter queue register: every family of
/// `mainstay-storage-tiering` and `mainstay-dlq`, and the API's `dlq_journal_failed` and `backup_*`. The
/// stateless mode (`storage.enabled = false`) registers none of them, so its scrape has neither
/// their series nor their `# HELP` lines.
#[must_use]
pub fn needs_storage(family: &MetricFamily) -> bool {
    family.owner == "mainstay-storage-tiering"
        || family.owner == "mainstay-dlq"
        || family.name == "dlq_journal_failed"
        || family.name.starts_with("backup_")
        || family.name.starts_with("organisation_erasures_")
}

/// The families the service exports in the stateless mode: [`service_catalogue`] less those
/// that [`needs_storage`].
#[must_use]
pub fn stateless_catalogue() -> Vec<MetricFamily> {
    service_catalogue()
        .into_iter()
        .filter(|family| !needs_storage(family))
        .collect()
}

/// The service's catalogue as pretty JSON, newline-terminated: `{"families": [{"name", "type",
/// "unit", "labels", "help", "crate", "sample_name"}]}`, and `"buckets"`:
/// a histogram's edges (`null` for other types). `name` is the family of the `# TYPE`
/// line; `sample_name` is what a query names (`_total` added for counters).
#[must_use]
pub fn json() -> String {
    let families: Vec<serde_json::Value> = service_catalogue()
        .iter()
        .map(|family| {
            serde_json::json!({
                "name": family.name,
                "type": family.kind.as_str(),
                "unit": family.unit,
                "labels": family.labels,
                "help": family.help,
                "crate": family.owner,
                "sample_name": family.sample_name(),
                "buckets": family.buckets,
            })
        })
        .collect();
    let document = serde_json::json!({ "families": families });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{json, service_catalogue};

    #[test]
    fn no_family_is_catalogued_twice_and_the_json_lists_each() {
        let catalogue = service_catalogue();
        let names: BTreeSet<&str> = catalogue.iter().map(|family| family.name).collect();
        assert_eq!(names.len(), catalogue.len());
        let document: serde_json::Value = serde_json::from_str(&json()).unwrap();
        let families = document["families"].as_array().unwrap();
        assert_eq!(families.len(), catalogue.len());
        assert_eq!(families[0]["name"], "http_requests");
        assert_eq!(families[0]["sample_name"], "http_requests_total");
        assert!(families[0]["buckets"].is_null());
        let duration = families
            .iter()
            .find(|family| family["name"] == "http_request_duration_seconds")
            .unwrap();
        assert_eq!(
            duration["buckets"],
            serde_json::json!(mainstay_telemetry::http::DURATION_BUCKETS)
        );
    }
}
