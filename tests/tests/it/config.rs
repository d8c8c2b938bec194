//! Configuration: precedence, bad values, `config print`.

use std::time::Duration;

use mainstay_tests::{Api, ApiBuilder};

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// Stops the service with SIGTERM; it must exit cleanly.
fn stop(mut api: Api) -> anyhow::Result<()> {
    api.terminate()?;
    assert!(api.wait_exit(Duration::from_secs(20))?.success());
    Ok(())
}

/// The line of `key` in `config print` of this configuration (empty when there is none).
fn printed_line(builder: ApiBuilder, key: &str) -> anyhow::Result<String> {
    let (status, out, err) = builder.args(&["config", "print"]).run()?;
    assert!(status.success(), "{err}");
    Ok(out
        .lines()
        .find(|line| line.starts_with(key))
        .unwrap_or_default()
        .to_owned())
}

/// Sends an admin request with the token.
async fn admin_send(request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
    request.bearer_auth(ADMIN_TOKEN).send().await
}

/// The state of the breaker `name` on the admin API.
async fn breaker_state(client: &reqwest::Client, api: &Api, name: &str) -> anyhow::Result<String> {
    let all = admin_get(client, api.url("/admin/circuit-breakers")).await?;
    all.as_array()
        .and_then(|all| all.iter().find(|breaker| breaker["name"] == name))
        .and_then(|breaker| breaker["state"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no breaker {name} in {all}"))
}

/// An admin `GET` answered with JSON.
async fn admin_get(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> anyhow::Result<serde_json::Value> {
    Ok(admin_send(client.get(url)).await?.json().await?)
}

#[test]
fn environment_overrides_file_which_overrides_defaults() -> anyhow::Result<()> {
    let (status, out, err) = Api::builder()
        .config_toml("[server]\nrequest_timeout = \"7s\"\nbody_limit_bytes = 1234\n")
        .env("MAINSTAY_SERVER__BODY_LIMIT_BYTES", "4321")
        .args(&["config", "print"])
        .run()?;
    assert!(status.success(), "config print failed: {err}");
    // From the file, not overridden.
    assert!(
        out.contains("server.request_timeout = \"7s\"  # TOML file"),
        "{out}"
    );
    // The environment beats the file.
    assert!(
        out.contains("server.body_limit_bytes = 4321  # `MAINSTAY_` environment"),
        "{out}"
    );
    // Untouched keys keep their defaults.
    assert!(
        out.contains("shutdown.timeout = \"25s\"  # default"),
        "{out}"
    );
    Ok(())
}

#[test]
fn config_print_masks_secrets() -> anyhow::Result<()> {
    let (status, out, err) = Api::builder()
        .env("MAINSTAY_ADMIN__TOKEN", "a-very-secret-admin-token")
        .args(&["config", "print"])
        .run()?;
    assert!(status.success(), "{err}");
    assert!(!out.contains("a-very-secret-admin-token"), "{out}");
    assert!(out.contains("admin.token = \"[REDACTED]\""), "{out}");
    Ok(())
}

#[test]
fn bad_values_exit_2_naming_key_value_and_what_is_allowed() -> anyhow::Result<()> {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "MAINSTAY_SERVER__ADDR",
            "not-an-address",
            &["server.addr", "not-an-address"],
        ),
        (
            "MAINSTAY_TELEMETRY__LOG_FORMAT",
            "xml",
            &["telemetry.log_format", "xml", "json"],
        ),
        (
            "MAINSTAY_SHUTDOWN__TIMEOUT",
            "soon",
            &["shutdown.timeout", "soon"],
        ),
        (
            "MAINSTAY_SERVER__BODY_LIMIT_BYTES",
            "0",
            &["server.body_limit_bytes", "positive"],
        ),
        (
            "MAINSTAY_ADMIN__TOKEN",
            "short",
            &["admin.token", "16 characters"],
        ),
        ("MAINSTAY_SERVER__NO_SUCH_KEY", "1", &["no_such_key"]),
    ];
    for (key, value, expected) in cases {
        let (status, _, err) = Api::builder().env(key, value).run()?;
        assert_eq!(
            status.code(),
            Some(2),
            "{key}={value} should exit 2; stderr: {err}"
        );
        for needle in *expected {
            assert!(
                err.contains(needle),
                "{key}={value}: stderr should name {needle:?}: {err}"
            );
        }
    }
    Ok(())
}

#[test]
fn a_missing_config_file_is_an_error() -> anyhow::Result<()> {
    let (status, _, err) = Api::builder()
        .args(&["--config", "/nonexistent/mainstay.toml"])
        .run()?;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/mainstay.toml"), "{err}");
    Ok(())
}

#[test]
fn with_no_configuration_it_listens_on_the_default_address_and_says_so() -> anyhow::Result<()> {
    let (status, out, err) = Api::builder()
        .default_addr()
        .args(&["config", "print"])
        .run()?;
    assert!(status.success(), "{err}");
    assert!(
        out.contains("server.addr = \"127.0.0.1:8080\"  # default"),
        "{out}"
    );
    Ok(())
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused_with_a_clear_error() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_string_lossy().into_owned();
    let _first = Api::builder()
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir)
        .start()?;
    let (status, out, err) = Api::builder()
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir)
        .run()?;
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let printed = format!("{out}{err}");
    assert!(
        printed.contains("could not open the dead-letter queue") && printed.contains("lock"),
        "{printed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_compaction_settings_apply_persist_and_win_over_the_environment()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_string_lossy().into_owned();
    let builder = || {
        Api::builder()
            .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir)
            .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
            .env("MAINSTAY_STORAGE__COMPACTION__MIN_SEGMENTS", "6")
    };
    let client = reqwest::Client::new();
    {
        let api = builder().start()?;
        let url = api.url("/admin/config/compaction");
        let current: serde_json::Value = admin_get(&client, &url).await?;
        assert_eq!(
            current["min_segments"], 6,
            "the environment, before any override"
        );

        let mut changed = current.clone();
        changed["min_segments"] = 2.into();
        changed["interval"] = "5s".into();
        let applied = admin_send(client.post(&url).json(&changed)).await?;
        assert_eq!(applied.status(), 200);
        let applied: serde_json::Value = applied.json().await?;
        assert_eq!(
            (
                applied["min_segments"].as_u64(),
                applied["interval"].as_str()
            ),
            (Some(2), Some("5s"))
        );

        let mut bad = changed.clone();
        bad["min_segments"] = 1.into();
        let refused = admin_send(client.post(&url).json(&bad)).await?;
        assert_eq!(refused.status(), 422);
        let problem: serde_json::Value = refused.json().await?;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("storage.compaction.min_segments")),
            "{problem}"
        );
        let unknown = admin_send(client.get(api.url("/admin/config/nope"))).await?;
        assert_eq!(unknown.status(), 404);
        stop(api)?;
    }
    // After a restart the override still wins over the environment, and config print says why.
    let api = builder().start()?;
    let current: serde_json::Value =
        admin_get(&client, api.url("/admin/config/compaction")).await?;
    assert_eq!(current["min_segments"], 2);
    drop(api);
    let line = printed_line(builder(), "storage.compaction.min_segments")?;
    assert!(
        line.starts_with("storage.compaction.min_segments = 2")
            && line.contains("admin-config.toml"),
        "{line}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_dlq_policies_apply_persist_and_protect_the_store_queue() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_string_lossy().into_owned();
    let builder = || {
        Api::builder()
            .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir)
            .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
    };
    let client = reqwest::Client::new();
    let policies = serde_json::json!({
        "defaults": {"capacity": 50, "overflow": "evict", "ttl": "1day", "archive": true},
        "queues": {"orders": {"capacity": 5, "overflow": "reject", "ttl": "none", "archive": true}},
    });
    {
        let api = builder().start()?;
        let url = api.url("/admin/config/dlq");
        let applied = admin_send(client.post(&url).json(&policies)).await?;
        assert_eq!(applied.status(), 200);
        let applied: serde_json::Value = applied.json().await?;
        assert_eq!(applied["defaults"]["capacity"], 50);
        assert_eq!(applied["queues"]["orders"]["ttl"], "none");
        // The record store's own queue keeps rejecting and never expiring.
        assert_eq!(applied["queues"]["storage-segments"]["overflow"], "reject");
        let store_queue = serde_json::json!({
            "defaults": {"capacity": 50},
            "queues": {"storage-segments": {"capacity": 5, "overflow": "evict"}},
        });
        let refused = admin_send(client.post(&url).json(&store_queue)).await?;
        assert_eq!(refused.status(), 422);
        stop(api)?;
    }
    let api = builder().start()?;
    let current: serde_json::Value = admin_get(&client, api.url("/admin/config/dlq")).await?;
    assert_eq!(current["defaults"]["capacity"], 50, "{current}");
    assert_eq!(
        current["queues"]["orders"]["ttl"], "none",
        "no expiry survives the restart: {current}"
    );
    assert_eq!(current["queues"]["orders"]["overflow"], "reject");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_breaker_rules_apply_keep_state_persist_and_win_over_the_environment()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_string_lossy().into_owned();
    let builder = || {
        Api::builder()
            .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir)
            .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
            .env("MAINSTAY_STORAGE__UPLOAD__BREAKER__OPEN_DURATION", "10m")
    };
    let client = reqwest::Client::new();
    {
        let api = builder().start()?;
        let url = api.url("/admin/config/circuit_breaker");
        let current: serde_json::Value = admin_get(&client, &url).await?;
        let uploads = &current["storage-uploads"];
        assert_eq!(
            (
                uploads["trip"].as_str(),
                uploads["open_duration"].as_str(),
                uploads["half_open_successes"].as_u64()
            ),
            (Some("failure_rate"), Some("10m"), Some(10)),
            "the preset with the environment's open duration: {current}"
        );
        assert_eq!(
            current["ratelimit-redis"]["trip"], "consecutive",
            "{current}"
        );

        // Open the uploads breaker by hand: new rules must not close it.
        let forced =
            admin_send(client.post(api.url("/admin/circuit-breakers/storage-uploads/force-open")))
                .await?;
        assert_eq!(forced.status(), 200);
        let change = serde_json::json!({
            "storage-uploads": {"open_duration": "45s", "half_open_successes": 3, "window": "30s"},
            "ratelimit-redis": {"consecutive_failures": 7},
        });
        let applied = admin_send(client.post(&url).json(&change)).await?;
        assert_eq!(applied.status(), 200);
        let applied: serde_json::Value = applied.json().await?;
        let uploads = &applied["storage-uploads"];
        assert_eq!(
            (
                uploads["open_duration"].as_str(),
                uploads["half_open_successes"].as_u64(),
                uploads["window"].as_str(),
                uploads["trip"].as_str(),
                uploads["failure_rate"].as_f64(),
            ),
            (
                Some("45s"),
                Some(3),
                Some("30s"),
                Some("failure_rate"),
                Some(0.5)
            ),
            "keys not given keep their values: {applied}"
        );
        assert_eq!(applied["ratelimit-redis"]["consecutive_failures"], 7);
        assert_eq!(
            breaker_state(&client, &api, "storage-uploads").await?,
            "forced_open",
            "the breaker keeps its state"
        );

        // All or nothing, and the key is named.
        let bad = serde_json::json!({
            "ratelimit-redis": {"consecutive_failures": 2},
            "storage-uploads": {"failure_rate": 1.5},
        });
        let refused = admin_send(client.post(&url).json(&bad)).await?;
        assert_eq!(refused.status(), 422);
        let problem: serde_json::Value = refused.json().await?;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("storage.upload.breaker.failure_rate")),
            "{problem}"
        );
        let buckets = serde_json::json!({"storage-uploads": {"window_buckets": 64}});
        let refused = admin_send(client.post(&url).json(&buckets)).await?;
        assert_eq!(refused.status(), 422);
        let unknown = serde_json::json!({"payments": {"consecutive_failures": 2}});
        let refused = admin_send(client.post(&url).json(&unknown)).await?;
        assert_eq!(refused.status(), 422);
        let after: serde_json::Value = admin_get(&client, &url).await?;
        assert_eq!(after, applied, "refused changes changed nothing");
        stop(api)?;
    }
    // After a restart the override wins over the environment, and config print says why.
    let api = builder().start()?;
    let current: serde_json::Value =
        admin_get(&client, api.url("/admin/config/circuit_breaker")).await?;
    assert_eq!(
        current["storage-uploads"]["open_duration"], "45s",
        "{current}"
    );
    assert_eq!(current["ratelimit-redis"]["consecutive_failures"], 7);
    drop(api);
    let line = printed_line(builder(), "storage.upload.breaker")?;
    assert!(
        line.contains("45s") && line.contains("admin-config.toml"),
        "{line}"
    );
    Ok(())
}

/// Issue 15, point 4: `config print` and `GET /admin/config` never show a password of a URL or
/// a secret key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_in_urls_never_print() -> anyhow::Result<()> {
    let secret_env = |builder: ApiBuilder| {
        builder
            .env(
                "MAINSTAY_STORAGE__OBJECT_STORE_URL",
                "s3://AKIA:s3-sentinel-pw@bucket/p",
            )
            .env(
                "MAINSTAY_TELEMETRY__OTLP_ENDPOINT",
                "https://otlp:otlp-sentinel-pw@127.0.0.1:9/v1/traces",
            )
            .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
    };
    let builder = secret_env(Api::builder())
        .env(
            "MAINSTAY_REDIS__URL",
            "redis://:redis-sentinel-pw@127.0.0.1:6379",
        )
        .env("MAINSTAY_RATELIMIT__SECRET", "ratelimit-sentinel-secret");
    let (status, out, err) = builder.args(&["config", "print"]).run()?;
    assert!(status.success(), "{err}");
    for secret in [
        "redis-sentinel-pw",
        "s3-sentinel-pw",
        "otlp-sentinel-pw",
        ADMIN_TOKEN,
    ] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    assert!(
        out.contains("redis.url = \"redis://[REDACTED]@127.0.0.1:6379\""),
        "{out}"
    );

    // The running service (no object store or Redis needed for this: both stay unset).
    let api = Api::builder()
        .env(
            "MAINSTAY_TELEMETRY__OTLP_ENDPOINT",
            "https://otlp:otlp-sentinel-pw@127.0.0.1:9/v1/traces",
        )
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .start()?;
    let client = reqwest::Client::new();
    let shown = admin_get(&client, api.url("/admin/config"))
        .await?
        .to_string();
    assert!(!shown.contains("otlp-sentinel-pw"), "{shown}");
    assert!(!shown.contains(ADMIN_TOKEN), "{shown}");
    assert!(
        shown.contains("https://[REDACTED]@127.0.0.1:9/v1/traces"),
        "{shown}"
    );
    stop(api)
}

/// Issue 15, point 1: `config check` refuses an unknown check name with exit 2, as start-up
/// does, and accepts every documented one, which the service then starts with.
#[test]
fn config_check_and_start_up_agree_on_check_names() -> anyhow::Result<()> {
    let unknown = "[health.checks.nope]\ncritical = true\n";
    let (status, _, err) = Api::builder()
        .config_toml(unknown)
        .args(&["config", "check"])
        .run()?;
    assert_eq!(status.code(), Some(2), "config check: {err}");
    assert!(err.contains("health.checks.nope"), "{err}");
    assert!(
        err.contains("object-store"),
        "the known names are listed: {err}"
    );

    let documented = "[health.checks.dlq]\ncritical = true\n\
                      [health.checks.object-store]\ncritical = true\n\
                      [health.checks.storage-wal]\ncritical = true\n\
                      [health.checks.dlq-journal]\ncritical = false\n";
    let (status, _, err) = Api::builder()
        .config_toml(documented)
        .args(&["config", "check"])
        .run()?;
    assert!(status.success(), "config check: {err}");
    let api = Api::builder().config_toml(documented).start()?;
    stop(api)
}

/// Issue 15, point 3: one invalid value per section is refused by `config check` and by start-up
/// alike, with exit code 2 and one message format naming the dotted key, the value and what is
/// allowed.
#[test]
fn config_check_refuses_what_start_up_refuses_in_one_format() -> anyhow::Result<()> {
    let cases = [
        (
            "[storage]\nwal_segment_bytes = 100\n",
            "storage.wal_segment_bytes",
            "100",
        ),
        (
            "[storage]\nmemtable_bytes = 0\n",
            "storage.memtable_bytes",
            "0",
        ),
        (
            "[storage.upload]\nmax_attempts = 0\n",
            "storage.upload.max_attempts",
            "0",
        ),
        (
            "[storage.compaction]\nmin_segments = 0\n",
            "storage.compaction.min_segments",
            "0",
        ),
        ("[dlq]\ntotal_capacity = 0\n", "dlq.total_capacity", "0"),
        (
            "[auth]\nfailure_limit = { requests = 0, period = \"1m\" }\n",
            "auth.failure_limit.requests",
            "0",
        ),
        (
            "[ratelimit]\nipv6_prefix_len = 200\n",
            "ratelimit.ipv6_prefix_len",
            "200",
        ),
        (
            "[telemetry]\nsampling_ratio = 2.0\n",
            "telemetry.sampling_ratio",
            "2",
        ),
        (
            "[server]\nrequest_timeout = \"0s\"\n",
            "server.request_timeout",
            "0s",
        ),
        // The harness sets a drain delay of 100 ms; a 110 ms timeout keeps 22 ms for flushing,
        // so the drain would end inside that reserve.
        (
            "[shutdown]\ntimeout = \"110ms\"\n",
            "shutdown.drain_delay",
            "100ms",
        ),
        (
            "[health]\ncache_interval = \"0s\"\n",
            "health.cache_interval",
            "0s",
        ),
        (
            "[health.disk]\ndegraded_below_free_percent = 120\n",
            "health.disk.degraded_below_free_percent",
            "120",
        ),
        (
            "[health.checks.nope]\ncritical = true\n",
            "health.checks.nope",
            "nope",
        ),
    ];
    for (toml, key, value) in cases {
        let expected = format!("key `{key}`: `{value}");
        let (status, _, err) = Api::builder()
            .config_toml(toml)
            .args(&["config", "check"])
            .run()?;
        assert_eq!(status.code(), Some(2), "config check of {key}: {err}");
        assert!(err.contains(&expected), "config check of {key}: {err}");
        assert!(
            err.contains("is not allowed; "),
            "config check of {key}: {err}"
        );
        let (status, out, err) = Api::builder().config_toml(toml).run()?;
        assert_eq!(status.code(), Some(2), "start-up with {key}: {out}{err}");
        assert!(
            err.contains(&expected) || out.contains(&expected),
            "start-up with {key}: {out}{err}"
        );
    }
    Ok(())
}
