//! The generated alerts against a real Prometheus scraping the built binary (issue 16, point 6),
//! and `promtool check metrics` on a real scrape (point 5).
//!
//! The rules are `tests/fixtures/prometheus/rules-scaled.yml`, which `cargo xtask codegen` writes
//! from the same declarations as `deploy/prometheus/rules/{recording,alerts}.yml` with every
//! range window and `for` divided by 60 (a minute becomes a second), so that a 1 s scrape and
//! evaluation interval plays hours of alerting in seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use mainstay_tests::metrics::scrape;
use mainstay_tests::prometheus::{Prometheus, check_metrics};
use mainstay_tests::redis::RedisServer;
use mainstay_tests::{Api, ApiBuilder};
use serde_json::Value;

const ADMIN_TOKEN: &str = "prometheus-e2e-admin-token";
const JOB: &str = "mainstay-api";
/// Long enough for a scrape, an evaluation and a scaled `for` on a loaded 2-core machine.
const ALERT_TIMEOUT: Duration = Duration::from_secs(45);

fn rules() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/prometheus/rules-scaled.yml")
}

fn with_redis(redis: &RedisServer) -> ApiBuilder {
    Api::builder()
        .redis(&redis.url())
        .env("MAINSTAY_RATELIMIT__REDIS_TIMEOUT", "200ms")
        .env("MAINSTAY_RATELIMIT__BREAKER__OPEN_DURATION", "300ms")
        .env("MAINSTAY_HEALTH__CACHE_INTERVAL", "200ms")
        .env("MAINSTAY_HEALTH__DEFAULT_TIMEOUT", "500ms")
        .env("MAINSTAY_HEALTH__DISK__ENABLED", "false")
        .env("MAINSTAY_HEALTH__MEMORY__ENABLED", "false")
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
}

/// A readiness prober as a kubelet runs one: `GET /health/ready` every period with a timeout,
/// not ready after `FAILURE_THRESHOLD` failures in a row. Counts how often it would have taken
/// the pod out of rotation.
struct Kubelet {
    stop: Arc<AtomicBool>,
    removals: Arc<AtomicU32>,
    probes: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

const FAILURE_THRESHOLD: u32 = 3;

impl Kubelet {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let removals = Arc::new(AtomicU32::new(0));
        let probes = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn({
            let (stop, removals, probes) = (stop.clone(), removals.clone(), probes.clone());
            async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(1))
                    .build()
                    .unwrap_or_default();
                let mut failures = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ready = client
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|response| response.status() == 200);
                    probes.fetch_add(1, Ordering::Relaxed);
                    failures = if ready { 0 } else { failures + 1 };
                    if failures == FAILURE_THRESHOLD {
                        removals.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        });
        Self {
            stop,
            removals,
            probes,
            task,
        }
    }

    /// Probes run so far.
    fn probes(&self) -> u32 {
        self.probes.load(Ordering::Relaxed)
    }

    /// Stops probing; how many probes ran and how often the pod left rotation.
    async fn finish(self) -> anyhow::Result<(u32, u32)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?;
        Ok((
            self.probes.load(Ordering::Relaxed),
            self.removals.load(Ordering::Relaxed),
        ))
    }
}

async fn admin_post(client: &reqwest::Client, api: &Api, path: &str) -> anyhow::Result<()> {
    let response = client
        .post(api.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
    Ok(())
}

fn states(alerts: &[Value]) -> Vec<String> {
    alerts
        .iter()
        .map(|alert| alert["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_and_fallback_alerts_fire_and_clear_in_a_real_prometheus() -> anyhow::Result<()> {
    let mut redis = RedisServer::start()?;
    let api = with_redis(&redis).start()?;
    let prometheus = Prometheus::start(JOB, api.addr(), &rules())?;
    let client = reqwest::Client::new();
    let kubelet = Kubelet::start(api.url("/health/ready"));

    // Scraped, rules loaded, and quiet while all is well.
    let deadline = tokio::time::Instant::now() + ALERT_TIMEOUT;
    loop {
        let up = prometheus
            .api(&client, &format!("query?query=up{{job=\"{JOB}\"}}"))
            .await?;
        if up["result"][0]["value"][1] == "1" {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "prometheus never scraped the service: {up}; {}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let groups = prometheus.api(&client, "rules").await?;
    let loaded: Vec<&str> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .filter_map(|rule| rule["name"].as_str())
        .collect();
    for name in ["CircuitBreakerOpen", "RateLimitFallbackActive"] {
        anyhow::ensure!(loaded.contains(&name), "{name} is not loaded: {loaded:?}");
    }
    assert_eq!(
        client.get(api.url("/v1/whoami")).send().await?.status(),
        200
    );
    // A few evaluations (each scaled `for` of the two alerts is at most 2 s): no alert of the
    // whole set, not only these two, is pending or firing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let active = prometheus.api(&client, "alerts").await?;
    assert_eq!(
        active["alerts"].as_array().map(Vec::len),
        Some(0),
        "alerts active while all is well: {active}"
    );

    // A breaker forced open through the admin API: pending, then firing; reset: cleared.
    admin_post(
        &client,
        &api,
        "/admin/circuit-breakers/ratelimit-redis/force-open",
    )
    .await?;
    let alerts = prometheus
        .wait_alerts(&client, "CircuitBreakerOpen", ALERT_TIMEOUT, |alerts| {
            alerts.iter().any(|alert| alert["state"] == "firing")
        })
        .await?;
    let alert = &alerts[0];
    assert_eq!(alert["labels"]["breaker"], "ratelimit-redis", "{alert}");
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .is_some_and(|url| url.ends_with("docs/runbooks/CircuitBreakerOpen.md")),
        "{alert}"
    );
    admin_post(
        &client,
        &api,
        "/admin/circuit-breakers/ratelimit-redis/reset",
    )
    .await?;
    prometheus
        .wait_alerts(
            &client,
            "CircuitBreakerOpen",
            ALERT_TIMEOUT,
            <[Value]>::is_empty,
        )
        .await?;

    // Redis killed: requests keep being answered from the fallback, the fallback alert goes
    // pending, then firing; Redis back: the breaker closes by itself and the alert clears. The
    // outage lasts at least one more probe than the prober's failure threshold.
    let probes_before_outage = kubelet.probes();
    redis.kill()?;
    for _ in 0..10 {
        let status = client.get(api.url("/v1/whoami")).send().await?.status();
        assert_eq!(status, 200, "no request fails because Redis is down");
    }
    let alerts = prometheus
        .wait_alerts(
            &client,
            "RateLimitFallbackActive",
            ALERT_TIMEOUT,
            |alerts| !alerts.is_empty(),
        )
        .await?;
    assert!(
        states(&alerts)
            .iter()
            .all(|state| state == "pending" || state == "firing"),
        "{alerts:?}"
    );
    let alerts = prometheus
        .wait_alerts(
            &client,
            "RateLimitFallbackActive",
            ALERT_TIMEOUT,
            |alerts| alerts.iter().any(|alert| alert["state"] == "firing"),
        )
        .await?;
    assert_eq!(alerts[0]["labels"]["severity"], "warning", "{alerts:?}");
    let deadline = tokio::time::Instant::now() + ALERT_TIMEOUT;
    while kubelet.probes() < probes_before_outage + FAILURE_THRESHOLD + 1 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the prober stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.restart()?;
    prometheus
        .wait_alerts(
            &client,
            "RateLimitFallbackActive",
            ALERT_TIMEOUT,
            <[Value]>::is_empty,
        )
        .await?;
    prometheus
        .wait_alerts(
            &client,
            "CircuitBreakerOpen",
            ALERT_TIMEOUT,
            <[Value]>::is_empty,
        )
        .await?;

    // Redis is not a critical dependency: the pod stayed in rotation throughout.
    let (probes, removals) = kubelet.finish().await?;
    assert!(probes > 5, "the prober ran {probes} times");
    assert_eq!(
        removals, 0,
        "readiness failed {FAILURE_THRESHOLD} probes in a row while only Redis was down"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_scrape_passes_promtool_check_metrics() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let api = with_redis(&redis).start()?;
    let client = reqwest::Client::new();
    // Traffic, a limit decision, an error and a breaker transition, so that labelled families
    // have series and not only their HELP and TYPE lines.
    for path in [
        "/v1/whoami",
        "/v1/whoami",
        "/v1/no-such-route",
        "/health/ready",
    ] {
        client.get(api.url(path)).send().await?;
    }
    admin_post(
        &client,
        &api,
        "/admin/circuit-breakers/ratelimit-redis/force-open",
    )
    .await?;
    let exposition = scrape(&client, &api).await?;
    assert!(exposition.contains("http_requests_total{"), "{exposition}");
    let printed = check_metrics(&exposition)?;
    assert!(
        printed.trim().is_empty(),
        "promtool check metrics found problems: {printed}"
    );
    Ok(())
}
