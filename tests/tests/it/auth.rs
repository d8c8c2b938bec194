//! Failed authentications are throttled per client network, through the rate limiter.

use mainstay_tests::metrics::{sample, scrape};
use mainstay_tests::redis::RedisServer;
use mainstay_tests::{Api, sha256_hex};
use serde_json::Value;

const GOOD_KEY: &str = "the-one-good-key";

/// One configured key, and failed authentications limited to `limit` a minute.
fn config(limit: u32, extra: &str) -> String {
    format!(
        "[auth]\nfailure_limit = {{ requests = {limit}, period = \"1m\" }}\n\
         [[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"acme\"\n{extra}",
        sha256_hex(GOOD_KEY)
    )
}

/// The status of `GET /v1/whoami` with `key` (as a bearer token) and an optional forwarded client.
async fn whoami(
    client: &reqwest::Client,
    api: &Api,
    key: &str,
    forwarded_for: Option<&str>,
) -> anyhow::Result<reqwest::Response> {
    let mut request = client.get(api.url("/v1/whoami")).bearer_auth(key);
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    Ok(request.send().await?)
}

fn throttle_warnings(api: &Api) -> Vec<Value> {
    api.json_lines()
        .into_iter()
        .filter(|line| {
            line["msg"]
                .as_str()
                .is_some_and(|msg| msg.contains("past `auth.failure_limit`"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_keys_is_answered_429_past_the_failure_limit_and_a_valid_key_still_passes()
-> anyhow::Result<()> {
    let api = Api::builder().config_toml(&config(10, "")).start()?;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for guess in 0..30 {
        let response = whoami(&client, &api, &format!("guess-{guess}"), None).await?;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let retry_after: u64 = response.headers()["retry-after"].to_str()?.parse()?;
            assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        } else {
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
    }
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 20], "{statuses:?}");

    // The valid key is never throttled, even from the throttled address.
    let response = whoami(&client, &api, GOOD_KEY, None).await?;
    assert_eq!(response.status(), 200);
    let caller: Value = response.json().await?;
    assert_eq!(caller["organisation"], "acme");

    // A credential header that is not a key counts as a failure too, and is throttled as well.
    let malformed = client
        .get(api.url("/v1/whoami"))
        .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .send()
        .await?;
    assert_eq!(malformed.status(), 429);

    let metrics = scrape(&client, &api).await?;
    let count = |reason, outcome| {
        sample(
            &metrics,
            "auth_failures_total",
            &[("reason", reason), ("outcome", outcome)],
        )
    };
    assert_eq!(count("unknown_key", "rejected"), Some(10.0), "{metrics}");
    assert_eq!(count("unknown_key", "throttled"), Some(20.0), "{metrics}");
    assert_eq!(count("malformed_key", "throttled"), Some(1.0), "{metrics}");
    // One warn line per network per minute, not one per request; it names no address or key.
    let warnings = throttle_warnings(&api);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let line = warnings[0].to_string();
    assert!(
        !line.contains("127.0.0.1") && !line.contains("guess-"),
        "{line}"
    );
    assert!(warnings[0]["client_network"].is_string(), "{line}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_non_bearer_credential_is_a_401_not_an_anonymous_call() -> anyhow::Result<()> {
    let api = Api::builder().config_toml(&config(10, "")).start()?;
    let client = reqwest::Client::new();
    for (name, value) in [
        ("x-api-key", ""),
        ("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l"),
        ("authorization", "Bearer "),
    ] {
        let response = client
            .get(api.url("/v1/whoami"))
            .header(name, value)
            .send()
            .await?;
        assert_eq!(response.status(), 401, "{name}: {value:?}");
        let problem: Value = response.json().await?;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("malformed")),
            "{problem}"
        );
    }
    // Without any credential the caller is anonymous (allowed by default).
    let anonymous = client.get(api.url("/v1/whoami")).send().await?;
    assert_eq!(anonymous.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_behind_a_trusted_proxy_are_counted_per_slash_64() -> anyhow::Result<()> {
    let api = Api::builder()
        .config_toml(&config(
            5,
            "[ratelimit]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
        ))
        .start()?;
    let client = reqwest::Client::new();
    // Five addresses of one /64 share the budget of five failures...
    for host in 1..=5 {
        let address = format!("2001:db8:1:2::{host:x}");
        let response = whoami(&client, &api, "wrong", Some(&address)).await?;
        assert_eq!(response.status(), 401, "{address}");
    }
    for address in [
        "2001:db8:1:2::6",
        "2001:db8:1:2:ffff::1",
        "2001:db8:1:2:dead:beef:0:1",
    ] {
        let response = whoami(&client, &api, "wrong", Some(address)).await?;
        assert_eq!(response.status(), 429, "{address}");
    }
    // ... another /64 has its own, and a valid key from the throttled one passes.
    let response = whoami(&client, &api, "wrong", Some("2001:db8:1:3::1")).await?;
    assert_eq!(response.status(), 401);
    let response = whoami(&client, &api, GOOD_KEY, Some("2001:db8:1:2::7")).await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_count_failures_together() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let start = || {
        Api::builder()
            .config_toml(&config(10, ""))
            .redis(&redis.url())
            .start()
    };
    let (first, second) = (start()?, start()?);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for guess in 0..14 {
        let api = if guess % 2 == 0 { &first } else { &second };
        let response = whoami(&client, api, &format!("guess-{guess}"), None).await?;
        statuses.push(response.status().as_u16());
    }
    // Ten failures in all, not ten per instance.
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 4], "{statuses:?}");
    let metrics = scrape(&client, &first).await?;
    assert!(
        sample(
            &metrics,
            "ratelimit_decisions_total",
            &[("policy", "event:auth-failure"), ("backend", "redis")]
        )
        .is_some_and(|count| count >= 7.0),
        "{metrics}"
    );
    Ok(())
}
