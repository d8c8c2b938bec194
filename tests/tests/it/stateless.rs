//! The stateless mode (`storage.enabled = false`; issue 17, point 1; decision 0105): the service
//! runs without a data directory it could use, serves limits, health, telemetry and the admin
//! API, and answers what needs the record store with one documented problem.

use std::time::Duration;

use mainstay_clock::catalogue::{SampleRule, check_exposition};
use mainstay_tests::metrics::scrape;
use mainstay_tests::{Api, ApiBuilder};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// A data directory that cannot be created, even by root: nothing can be made under `/proc`.
const UNUSABLE_DATA_DIR: &str = "/proc/mainstay-stateless-test/data";

/// The storage health checks, none of which a stateless instance registers.
const STORAGE_CHECKS: [&str; 5] = [
    "dlq",
    "dlq-journal",
    "object-store",
    "storage-wal",
    "storage-writer",
];

fn stateless() -> ApiBuilder {
    Api::builder()
        .env("MAINSTAY_STORAGE__ENABLED", "false")
        .env("MAINSTAY_STORAGE__DATA_DIR", UNUSABLE_DATA_DIR)
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
}

/// The status and the problem `type` of an answer that must be problem+json.
async fn problem(response: reqwest::Response) -> anyhow::Result<(u16, String)> {
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].to_str()?.to_owned();
    assert_eq!(content_type, "application/problem+json", "{status}");
    let body: Value = response.json().await?;
    Ok((status, body["type"].as_str().unwrap_or_default().to_owned()))
}

fn is_storage_disabled(kind: &str) -> bool {
    kind.ends_with("/storage-disabled")
}

/// With storage on, the unusable data directory stops start-up: it is the store that needs it.
#[test]
fn with_storage_on_the_unusable_data_directory_stops_start_up() {
    let started = Api::builder()
        .env("MAINSTAY_STORAGE__DATA_DIR", UNUSABLE_DATA_DIR)
        .start();
    assert!(
        started.is_err(),
        "started with storage on {UNUSABLE_DATA_DIR}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_instance_serves_everything_but_the_store() -> anyhow::Result<()> {
    let mut api = stateless().start()?;
    let mode = api.wait_for_log(Duration::from_secs(5), |line| {
        line["msg"]
            .as_str()
            .is_some_and(|msg| msg.starts_with("mode: "))
    })?;
    assert_eq!(mode["mode"], "stateless", "{mode}");
    let client = reqwest::Client::new();

    // Health: ready, with no storage check registered.
    for path in ["/health/ready", "/health/deps"] {
        let response = client.get(api.url(path)).send().await?;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await?;
        let checks = body["checks"]
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("{path}: no checks in {body}"))?;
        for name in STORAGE_CHECKS {
            assert!(!checks.contains_key(name), "{path} lists {name}: {body}");
        }
        assert!(checks.contains_key("circuit-breakers"), "{path}: {body}");
    }

    // The `/v1` API with its limits: each call takes from the caller's allowance.
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let whoami = client.get(api.url("/v1/whoami")).send().await?;
        assert_eq!(whoami.status(), 200);
        assert!(whoami.headers().contains_key("x-ratelimit-limit"));
        remaining.push(
            whoami.headers()["x-ratelimit-remaining"]
                .to_str()?
                .parse::<u64>()?,
        );
        let caller: Value = whoami.json().await?;
        assert_eq!(caller["organisation"], "public");
    }
    assert_eq!(remaining[1] + 1, remaining[0], "{remaining:?}");

    // The records API: one documented problem, whatever the method and path below it; an unknown
    // route stays a plain 404.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/collections"),
        (reqwest::Method::POST, "/v1/collections"),
        (reqwest::Method::PUT, "/v1/collections/orders/records/o-1"),
        (reqwest::Method::GET, "/v1/collections/orders/records"),
    ] {
        let response = client.request(method.clone(), api.url(path)).send().await?;
        let (status, kind) = problem(response).await?;
        assert_eq!(status, 404, "{method} {path}");
        assert!(is_storage_disabled(&kind), "{method} {path}: {kind}");
    }
    let (status, kind) = problem(client.get(api.url("/v1/no-such-route")).send().await?).await?;
    assert_eq!((status, kind.as_str()), (404, "about:blank"));

    // The admin API stays; its store routes answer the same problem, behind the token.
    let (status, _) = problem(client.get(api.url("/admin/dlq")).send().await?).await?;
    assert_eq!(status, 401, "the token is still required");
    for (method, path) in [
        (reqwest::Method::GET, "/admin/dlq"),
        (reqwest::Method::POST, "/admin/dlq/retry"),
        (reqwest::Method::POST, "/admin/store/handover"),
        (reqwest::Method::GET, "/admin/store/wal-damage"),
        (reqwest::Method::POST, "/admin/collections/orders/compact"),
        (reqwest::Method::GET, "/admin/config/compaction"),
        (reqwest::Method::GET, "/admin/config/dlq"),
    ] {
        let response = client
            .request(method.clone(), api.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        let (status, kind) = problem(response).await?;
        assert_eq!(status, 404, "{method} {path}");
        assert!(is_storage_disabled(&kind), "{method} {path}: {kind}");
    }
    let breakers: Value = client
        .get(api.url("/admin/circuit-breakers"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let names: Vec<&str> = breakers
        .as_array()
        .map(|all| all.iter().filter_map(|b| b["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["ratelimit-redis"], "{breakers}");
    let rules: Value = client
        .get(api.url("/admin/config/circuit_breaker"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert!(
        rules.get("ratelimit-redis").is_some() && rules.get("storage-uploads").is_none(),
        "{rules}"
    );
    let admin_health = client
        .get(api.url("/admin/health"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(admin_health.status(), 200);

    // Metrics: no storage or DLQ family at all, and exactly the stateless catalogue (an unknown
    // key first, which gives `auth_failures` its series, as in the `metrics_catalogue` test).
    let unknown = client
        .get(api.url("/v1/whoami"))
        .bearer_auth("not-a-key")
        .send()
        .await?;
    assert_eq!(unknown.status(), 401);
    let text = scrape(&client, &api).await?;
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        assert!(
            !name.starts_with("storage_") && !name.starts_with("dlq_"),
            "a storage family in a stateless scrape: {line}"
        );
    }
    let mismatches = check_exposition(
        &mainstay_api::catalogue::stateless_catalogue(),
        &text,
        SampleRule::Optional,
    )
    .err()
    .unwrap_or_default();
    assert!(mismatches.is_empty(), "{}\n\n{text}", mismatches.join("\n"));

    api.terminate()?;
    assert!(api.wait_exit(Duration::from_secs(20))?.success());
    Ok(())
}

/// With storage on (the default) the mode line says so and the records API is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_mode_is_stateful_and_serves_the_records_api() -> anyhow::Result<()> {
    let mut api = Api::builder().start()?;
    let mode = api.wait_for_log(Duration::from_secs(5), |line| {
        line["msg"]
            .as_str()
            .is_some_and(|msg| msg.starts_with("mode: "))
    })?;
    assert_eq!(mode["mode"], "stateful", "{mode}");
    let listed = reqwest::get(api.url("/v1/collections")).await?;
    assert_eq!(listed.status(), 200);
    Ok(())
}

/// A bad `storage.enabled` stops start-up and `config check` with exit 2 naming the key; a good
/// one is printed with its source.
#[test]
fn a_bad_storage_enabled_exits_2_naming_the_key() -> anyhow::Result<()> {
    let (status, _, err) = Api::builder()
        .env("MAINSTAY_STORAGE__ENABLED", "sometimes")
        .args(&["config", "check"])
        .run()?;
    assert_eq!(status.code(), Some(2), "config check: {err}");
    assert!(
        err.contains("storage.enabled") && err.contains("sometimes"),
        "config check: {err}"
    );
    // Start-up: the process ends before it listens (a valid value would listen, and fail here
    // at once rather than hang).
    let refused = Api::builder()
        .env("MAINSTAY_STORAGE__ENABLED", "sometimes")
        .start()
        .err()
        .map(|error| format!("{error:#}"))
        .unwrap_or_default();
    assert!(
        refused.contains("exit status: 2") && refused.contains("storage.enabled"),
        "start-up: {refused}"
    );
    let (status, out, err) = Api::builder()
        .env("MAINSTAY_STORAGE__ENABLED", "false")
        .args(&["config", "print"])
        .run()?;
    assert!(status.success(), "{err}");
    assert!(
        out.lines()
            .any(|line| line.starts_with("storage.enabled = false  # `MAINSTAY_` environment")),
        "{out}"
    );
    Ok(())
}
