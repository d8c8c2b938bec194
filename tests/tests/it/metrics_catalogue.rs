//! The metric catalogue (`mainstay-api metrics catalogue`) against a real scrape of the service.

use mainstay_clock::catalogue::{SampleRule, check_exposition, parse_exposition};
use mainstay_tests::metrics::{sample, scrape};
use mainstay_tests::{Api, sha256_hex};

/// Every family of a scrape is catalogued with its type, unit, help and (where it has series)
/// label names, and every catalogued family is in the scrape of a fresh process: each is exported
/// from start-up, with its known series at zero or, where no label value is known yet (no retry
/// or bulkhead in the service, no dead letter), with its `# HELP` and `# TYPE` lines alone
/// (`docs/decisions/0097`). The command prints the same catalogue.
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
    let mismatches = check_exposition(&catalogue, &text, SampleRule::Optional)
        .err()
        .unwrap_or_default();
    assert!(mismatches.is_empty(), "{}\n\n{text}", mismatches.join("\n"));
    // The label names were compared for these, not only the descriptors.
    for name in [
        "http_requests",
        "http_request_duration_seconds",
        "auth_failures",
        "circuit_breaker_state",
        "dependency_health",
        "storage_inserts",
        "circuit_breaker_state_active",
        "circuit_breaker_transitions",
        "health_check_failures",
    ] {
        assert!(
            !exposed[name].label_sets.is_empty(),
            "`{name}` has no series"
        );
    }
    Ok(())
}

/// The gauges the alerts of issue 16 read move with what they report in the running service:
/// forcing a breaker open through the admin API makes `circuit_breaker_state_active` 1 for
/// `forced_open` and 0 for the other states; `health_ready` is 1 while readiness answers 200;
/// the upload backlog's bound is exported beside the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_gauges_follow_the_service_state() -> anyhow::Result<()> {
    const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
    let api = Api::builder()
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .start()?;
    let client = reqwest::Client::new();
    let active = |text: &str, state: &str| {
        sample(
            text,
            "circuit_breaker_state_active",
            &[("breaker", "storage-uploads"), ("state", state)],
        )
    };
    let states = ["closed", "open", "half_open", "disabled", "forced_open"];

    let ready = client.get(api.url("/health/ready")).send().await?;
    assert_eq!(ready.status(), 200);
    let text = scrape(&client, &api).await?;
    for state in states {
        let expected = if state == "closed" { 1.0 } else { 0.0 };
        assert_eq!(active(&text, state), Some(expected), "{state}\n{text}");
    }
    assert_eq!(sample(&text, "health_ready", &[]), Some(1.0), "{text}");
    assert!(
        sample(&text, "storage_backlog_limit_bytes", &[]).is_some_and(|limit| limit > 0.0),
        "{text}"
    );

    let forced = client
        .post(api.url("/admin/circuit-breakers/storage-uploads/force-open"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(forced.status(), 200);
    let text = scrape(&client, &api).await?;
    for state in states {
        let expected = if state == "forced_open" { 1.0 } else { 0.0 };
        assert_eq!(active(&text, state), Some(expected), "{state}\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            "circuit_breaker_state",
            &[("breaker", "storage-uploads")]
        ),
        Some(4.0)
    );
    Ok(())
}
