//! The metric catalogue (`mainstay-api metrics catalogue`) against a real scrape of the service.

use mainstay_clock::catalogue::{SampleRule, check_exposition, parse_exposition};
use mainstay_tests::metrics::scrape;
use mainstay_tests::{Api, sha256_hex};

/// Families the service registers at start-up but that have no series until their first event:
/// prometheus-client (0.25) writes no `# HELP`/`# TYPE` for a labelled family without series, so
/// they are absent from this scrape. The crates' own catalogue tests give each of them a series
/// and check it. Issue 16 point 7 ("every family exported from start-up") empties this list; the
/// test fails when an entry here is exposed after all, so the list cannot go stale.
const NO_SERIES_BEFORE_FIRST_EVENT: &[&str] = &[
    // No retry, bulkhead or breaker transition has happened yet in a fresh process.
    "circuit_breaker_transitions",
    "retry_attempts",
    "retry_budget_exhausted",
    "bulkhead_rejections",
    "bulkhead_in_flight",
    "bulkhead_waiting",
    "bulkhead_max_concurrent",
    "bulkhead_wait_seconds",
    // No check has ended unhealthy.
    "health_check_failures",
    // Per-queue series: no queue exists before the first dead letter.
    "dlq_size",
    "dlq_pushed",
    "dlq_evictions",
    "dlq_rejected",
    "dlq_expired",
    "dlq_redriven",
];

/// Every family of a scrape is catalogued with its type, unit, help and (where it has series)
/// label names, and every catalogued family is in the scrape but those of
/// [`NO_SERIES_BEFORE_FIRST_EVENT`]. The command prints the same catalogue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_is_what_the_service_exports() -> anyhow::Result<()> {
    let (status, stdout, stderr) = Api::builder().args(&["metrics", "catalogue"]).run()?;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stdout, mainstay_api::catalogue::json());

    let api = Api::builder()
        .config_toml(&format!(
            "[[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"acme\"\n",
            sha256_hex("catalogue-key")
        ))
        .start()?;
    let client = reqwest::Client::new();
    // Traffic that gives the labelled HTTP, health and auth families series.
    for path in ["/health/live", "/health/ready", "/no/such/route"] {
        client.get(api.url(path)).send().await?;
    }
    let unknown = client
        .get(api.url("/v1/whoami"))
        .bearer_auth("not-a-key")
        .send()
        .await?;
    assert_eq!(unknown.status(), 401);
    let text = scrape(&client, &api).await?;

    let catalogue = mainstay_api::catalogue::service_catalogue();
    let exposed = parse_exposition(&text);
    for name in NO_SERIES_BEFORE_FIRST_EVENT {
        assert!(
            catalogue.iter().any(|family| family.name == *name),
            "`{name}` is not catalogued"
        );
        assert!(
            !exposed.contains_key(*name),
            "`{name}` is exposed now: remove it from NO_SERIES_BEFORE_FIRST_EVENT"
        );
    }
    let mismatches: Vec<String> = check_exposition(&catalogue, &text, SampleRule::Optional)
        .err()
        .unwrap_or_default()
        .into_iter()
        .filter(|mismatch| {
            !NO_SERIES_BEFORE_FIRST_EVENT
                .iter()
                .any(|name| *mismatch == format!("`{name}` is catalogued but not exposed"))
        })
        .collect();
    assert!(mismatches.is_empty(), "{}\n\n{text}", mismatches.join("\n"));
    // The label names were compared for these, not only the descriptors.
    for name in [
        "http_requests",
        "http_request_duration_seconds",
        "auth_failures",
        "circuit_breaker_state",
        "dependency_health",
        "storage_inserts",
    ] {
        assert!(
            !exposed[name].label_sets.is_empty(),
            "`{name}` has no series"
        );
    }
    Ok(())
}
