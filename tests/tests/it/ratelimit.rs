//! Rate limits in front of `/v1`, in-process and on a private redis-server.

use std::time::{Duration, Instant};

use mainstay_tests::redis::RedisServer;
use mainstay_tests::{Api, sha256_hex};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// Anonymous callers get 3 requests a minute (burst 3); `boss-key` is an admin-tier key.
fn small_limits() -> String {
    format!(
        "[ratelimit.tiers.anonymous]\nlimit = {{ requests = 3, period = \"1m\" }}\n\
         [[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"acme\"\ntier = \"admin\"\n",
        sha256_hex("boss-key")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_answers_carry_limit_headers_and_a_denial_is_429_problem_json() -> anyhow::Result<()> {
    let api = Api::builder().config_toml(&small_limits()).start()?;
    let client = reqwest::Client::new();
    for remaining in [2, 1, 0] {
        let response = client.get(api.url("/v1/whoami")).send().await?;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["x-ratelimit-limit"], "3");
        assert_eq!(
            headers["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        assert!(headers.contains_key("x-ratelimit-reset"));
        assert!(headers.contains_key("ratelimit-policy") && headers.contains_key("ratelimit"));
    }
    let denied = client
        .get(api.url("/v1/whoami"))
        .header("x-request-id", "limited-1")
        .send()
        .await?;
    assert_eq!(denied.status(), 429);
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    let retry_after: u64 = denied.headers()["retry-after"].to_str()?.parse()?;
    assert!(retry_after >= 1, "Retry-After is at least 1 second");
    let problem: Value = denied.json().await?;
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["request_id"], "limited-1");

    // Admin-tier callers bypass every limit; health and metrics are never limited.
    for _ in 0..5 {
        let response = client
            .get(api.url("/v1/whoami"))
            .bearer_auth("boss-key")
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        assert!(!response.headers().contains_key("x-ratelimit-limit"));
        assert_eq!(
            client.get(api.url("/health/live")).send().await?.status(),
            200
        );
    }
    let metrics = client.get(api.url("/metrics")).send().await?.text().await?;
    assert!(metrics.contains("ratelimit_decisions_total{"), "{metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_v1_keeps_answering_from_the_fallback_and_the_breaker_is_listed()
-> anyhow::Result<()> {
    let mut redis = RedisServer::start()?;
    let api = Api::builder()
        .redis(&redis.url())
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .start()?;
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(api.url("/v1/whoami")).send().await?.status(),
        200
    );
    redis.kill()?;
    // Enough to open the breaker (5 consecutive failures), and below the burst of 20 that the
    // fallback limiter grants even when a loaded machine sent the first request there too (a
    // 20 ms Redis timeout): a 429 here would be the limit, not Redis being down.
    for _ in 0..15 {
        let status = client.get(api.url("/v1/whoami")).send().await?.status();
        assert!(
            status == 200,
            "no request fails because Redis is down: {status}"
        );
    }
    let breakers: Value = client
        .get(api.url("/admin/circuit-breakers"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let breaker = breakers
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|breaker| breaker["name"] == "ratelimit-redis")
        })
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(breaker["state"], "open", "{breakers}");
    let metrics = client.get(api.url("/metrics")).send().await?.text().await?;
    assert!(
        metrics
            .lines()
            .any(|line| line == "ratelimit_fallback_active 1"),
        "{metrics}"
    );
    Ok(())
}

#[test]
fn redis_without_a_shared_secret_is_a_config_error() -> anyhow::Result<()> {
    let (status, _, err) = Api::builder()
        .env("MAINSTAY_REDIS__URL", "redis://127.0.0.1:1")
        .run()?;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("ratelimit.secret"), "{err}");
    Ok(())
}

#[test]
fn out_of_range_prefix_lengths_and_timeouts_are_config_errors_naming_the_key() -> anyhow::Result<()>
{
    for (variable, value, key) in [
        (
            "MAINSTAY_RATELIMIT__IPV6_PREFIX_LEN",
            "129",
            "ratelimit.ipv6_prefix_len",
        ),
        (
            "MAINSTAY_RATELIMIT__IPV4_PREFIX_LEN",
            "0",
            "ratelimit.ipv4_prefix_len",
        ),
        (
            "MAINSTAY_RATELIMIT__REDIS_RESPONSE_TIMEOUT",
            "1ms",
            "ratelimit.redis_response_timeout",
        ),
    ] {
        let (status, _, err) = Api::builder().env(variable, value).run()?;
        assert_eq!(status.code(), Some(2), "{variable}: {err}");
        assert!(err.contains(key), "{variable}: {err}");
    }
    Ok(())
}

/// Issue 14, point 1: bad `redis.cluster`, `redis.cluster_seeds` and `redis.tls_ca_file` values
/// are refused by `config check` (which runs the start-up validation) with exit 2 and the dotted key.
#[test]
fn bad_cluster_seeds_and_tls_ca_files_are_config_errors_naming_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "no certificate")?;
    let missing = dir.path().join("missing.pem");
    let (not_pem, missing) = (not_pem.to_str().unwrap(), missing.to_str().unwrap());
    let secret = (
        "MAINSTAY_RATELIMIT__SECRET",
        "a-secret-for-identities-0123456789",
    );
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("MAINSTAY_REDIS__CLUSTER", "true")], "redis.cluster"),
        (
            &[
                ("MAINSTAY_REDIS__URL", "redis://127.0.0.1:1"),
                ("MAINSTAY_REDIS__CLUSTER_SEEDS", "[\"redis://127.0.0.1:2\"]"),
            ],
            "redis.cluster_seeds",
        ),
        (
            &[
                ("MAINSTAY_REDIS__URL", "redis://127.0.0.1:1"),
                ("MAINSTAY_REDIS__CLUSTER", "true"),
                (
                    "MAINSTAY_REDIS__CLUSTER_SEEDS",
                    "[\"redis://127.0.0.1:2\", \"http://127.0.0.1:3\"]",
                ),
            ],
            "redis.cluster_seeds[1]",
        ),
        (
            &[
                ("MAINSTAY_REDIS__URL", "rediss://127.0.0.1:1"),
                ("MAINSTAY_REDIS__TLS_CA_FILE", missing),
            ],
            "redis.tls_ca_file",
        ),
        (
            &[
                ("MAINSTAY_REDIS__URL", "rediss://127.0.0.1:1"),
                ("MAINSTAY_REDIS__TLS_CA_FILE", not_pem),
            ],
            "redis.tls_ca_file",
        ),
        (
            &[
                ("MAINSTAY_REDIS__URL", "redis://127.0.0.1:1"),
                ("MAINSTAY_REDIS__TLS_CA_FILE", not_pem),
            ],
            "redis.tls_ca_file",
        ),
    ];
    for (variables, key) in cases {
        let mut api = Api::builder()
            .args(&["config", "check"])
            .env(secret.0, secret.1);
        for (variable, value) in variables {
            api = api.env(variable, value);
        }
        let (status, _, err) = api.run()?;
        assert_eq!(status.code(), Some(2), "{variables:?}: {err}");
        assert!(err.contains(&format!("`{key}`")), "{variables:?}: {err}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_of_one_ipv6_subnet_share_one_limit() -> anyhow::Result<()> {
    // The service trusts the test as a proxy, so that each request can name its client.
    let api = Api::builder()
        .config_toml(&format!(
            "ratelimit.trusted_proxies = [\"127.0.0.1\"]\n{}",
            small_limits()
        ))
        .start()?;
    let client = reqwest::Client::new();
    let mut allowed = 0;
    for index in 0..20u32 {
        let response = client
            .get(api.url("/v1/whoami"))
            .header("x-forwarded-for", format!("2001:db8:7:7:{index:x}::1"))
            .send()
            .await?;
        allowed += usize::from(response.status() != 429);
    }
    assert_eq!(allowed, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_classes_apply_to_the_data_routes() -> anyhow::Result<()> {
    let api = Api::builder().start()?;
    let client = reqwest::Client::new();
    let created = client
        .post(api.url("/v1/collections"))
        .json(&serde_json::json!({"name": "limited", "policy": "memory"}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    assert_eq!(
        created.headers()["x-ratelimit-limit"],
        "60",
        "creating a collection is a write"
    );
    let put = client
        .put(api.url("/v1/collections/limited/records/a"))
        .body("x")
        .send()
        .await?;
    assert_eq!(
        put.headers()["x-ratelimit-limit"],
        "60",
        "a record write is a write"
    );
    let list = client
        .get(api.url("/v1/collections/limited/records"))
        .send()
        .await?;
    assert_eq!(
        list.headers()["x-ratelimit-limit"],
        "30",
        "a listing is a query"
    );
    let who = client.get(api.url("/v1/whoami")).send().await?;
    assert_eq!(
        who.headers()["x-ratelimit-limit"],
        "100",
        "other routes: the default class and the tier"
    );
    Ok(())
}

/// The `ratelimit-redis` breaker's state, from the admin API.
async fn redis_breaker_state(api: &Api) -> anyhow::Result<Value> {
    let breakers: Value = reqwest::Client::new()
        .get(api.url("/admin/circuit-breakers"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    Ok(breakers
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|breaker| breaker["name"] == "ratelimit-redis")
        })
        .map_or(Value::Null, |breaker| breaker["state"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_instance_recovers_readiness_and_its_breaker_without_a_request()
-> anyhow::Result<()> {
    let mut redis = RedisServer::start()?;
    let api = Api::builder()
        .redis(&redis.url())
        .env("MAINSTAY_RATELIMIT__BREAKER__OPEN_DURATION", "300ms")
        .env("MAINSTAY_HEALTH__CACHE_INTERVAL", "200ms")
        .env("MAINSTAY_HEALTH__DEFAULT_TIMEOUT", "500ms")
        .env("MAINSTAY_HEALTH__DISK__ENABLED", "false")
        .env("MAINSTAY_HEALTH__MEMORY__ENABLED", "false")
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .start()?;
    let client = reqwest::Client::new();
    let redis_status = async || -> anyhow::Result<Value> {
        let body: Value = client
            .get(api.url("/health/ready"))
            .send()
            .await?
            .json()
            .await?;
        Ok(body["checks"]["redis"]["status"].clone())
    };
    assert_eq!(
        client.get(api.url("/v1/whoami")).send().await?.status(),
        200
    );
    redis.kill()?;
    // Requests during the outage open the breaker; then nobody calls.
    for _ in 0..10 {
        client.get(api.url("/v1/whoami")).send().await?;
    }
    assert_eq!(redis_breaker_state(&api).await?, "open");
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_status().await? != "unhealthy" {
        anyhow::ensure!(Instant::now() < deadline, "the outage was never reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    redis.restart()?;
    let returned = Instant::now();
    // Readiness: within one cache interval + one check timeout (plus a second of slack for a
    // loaded machine), without a request.
    while redis_status().await? != "healthy" {
        anyhow::ensure!(
            returned.elapsed() < Duration::from_millis(200 + 500 + 1_000),
            "readiness did not recover without traffic"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The breaker: its own trial closes it within one open duration (plus the same slack).
    while redis_breaker_state(&api).await? != "closed" {
        anyhow::ensure!(
            returned.elapsed() < Duration::from_millis(300 + 1_000),
            "the breaker did not close without traffic: {}",
            redis_breaker_state(&api).await?
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Three private `redis-server`s made a Redis Cluster (masters only) with `redis-cli --cluster
/// create`; killed by pid when dropped.
struct ClusterMasters {
    children: Vec<std::process::Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl ClusterMasters {
    fn start() -> anyhow::Result<Self> {
        let mut cluster = Self {
            children: Vec::new(),
            ports: Vec::new(),
            dir: tempfile::tempdir()?,
        };
        for index in 0..3 {
            let node_dir = cluster.dir.path().join(index.to_string());
            std::fs::create_dir_all(&node_dir)?;
            // A taken bus port makes the node exit too: each attempt takes a new one.
            let (child, port) = mainstay_tests::redis::spawn_on_free_port(&node_dir, |_| {
                let bus = mainstay_tests::redis::free_port().unwrap_or(0);
                ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"]
                    .into_iter()
                    .map(str::to_owned)
                    .chain(["--cluster-port".to_owned(), bus.to_string()])
                    .chain(["--cluster-config-file", "nodes.conf"].map(str::to_owned))
                    .collect()
            })?;
            cluster.children.push(child);
            cluster.ports.push(port);
        }
        let cli = Self::cli;
        let deadline = Instant::now() + Duration::from_secs(10);
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let output = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        while !cluster
            .ports
            .iter()
            .all(|port| cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            anyhow::ensure!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(cluster)
    }

    fn url(&self, index: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[index])
    }

    /// `redis-cli -p PORT ARGS...`: its output.
    fn cli(port: u16, args: &[&str]) -> String {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for ClusterMasters {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Issue 14, point 1: with `redis.cluster = true` the service decides on a real Redis Cluster
/// (the limit holds across the cluster's masters) and the `redis` check reports `cluster_state`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_limits_hold_and_the_redis_check_reports_the_cluster_state()
-> anyhow::Result<()> {
    let cluster = ClusterMasters::start()?;
    let api = Api::builder()
        .redis(&cluster.url(0))
        .env("MAINSTAY_REDIS__CLUSTER", "true")
        .env(
            "MAINSTAY_REDIS__CLUSTER_SEEDS",
            &format!("[\"{}\"]", cluster.url(1)),
        )
        .env("MAINSTAY_RATELIMIT__REDIS_TIMEOUT", "1s")
        .env("MAINSTAY_RATELIMIT__REDIS_RESPONSE_TIMEOUT", "2s")
        .env("MAINSTAY_HEALTH__DISK__ENABLED", "false")
        .env("MAINSTAY_HEALTH__MEMORY__ENABLED", "false")
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .config_toml(&small_limits())
        .start()?;
    let client = reqwest::Client::new();
    // Anonymous callers get 3 a minute: the fourth is refused, by the cluster.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.get(api.url("/v1/whoami")).send().await?.status());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // The caller's buckets are in the cluster, in one hash (decision 0093) on whichever master
    // owns its slot.
    let mut tier_fields = 0;
    for port in &cluster.ports {
        for hash in ClusterMasters::cli(*port, &["--scan", "--pattern", "rl:{*}"])
            .lines()
            .filter(|key| *key != "rl:{instances}")
        {
            tier_fields += ClusterMasters::cli(*port, &["HKEYS", hash])
                .lines()
                .filter(|field| field.starts_with("t:anonymous:"))
                .count();
        }
    }
    assert_eq!(tier_fields, 1);
    let admin: Value = client
        .get(api.url("/admin/health"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let redis = &admin["checks"]["redis"];
    assert_eq!(redis["status"], "healthy", "{admin}");
    assert_eq!(redis["details"]["cluster_state"], "ok", "{admin}");
    assert_eq!(redis["details"]["fallback_active"], false, "{admin}");
    Ok(())
}
