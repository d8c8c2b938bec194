//! HTTP behaviour: problem+json errors, request ids, API keys, the admin API, the OpenAPI document.

use std::time::Duration;

use mainstay_tests::{Api, sha256_hex};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
/// `printf %s test-key-acme | sha256sum`
const ACME_KEY: &str = "test-key-acme";

fn keys_toml(allow_anonymous: bool) -> String {
    format!(
        "[auth]\nallow_anonymous = {allow_anonymous}\n[[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"acme\"\ntier = \"premium\"\nplan = \"pro\"\n",
        sha256_hex(ACME_KEY)
    )
}

async fn json(response: reqwest::Response) -> Value {
    response.json::<Value>().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_problem_json_with_the_request_id() -> anyhow::Result<()> {
    let api = Api::builder()
        .env("MAINSTAY_SERVER__BODY_LIMIT_BYTES", "64")
        .env("MAINSTAY_SERVER__REQUEST_TIMEOUT", "200ms")
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .start()?;
    let client = reqwest::Client::new();

    let cases = [
        (client.get(api.url("/no/such/route")), 404),
        (client.post(api.url("/health/live")), 405),
        (
            client
                .get(api.url("/admin/drill/delay?ms=2000"))
                .bearer_auth(ADMIN_TOKEN),
            504,
        ),
    ];
    for (request, status) in cases {
        let response = request.header("x-request-id", "case-id-1").send().await?;
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(response.headers()["x-request-id"], "case-id-1");
        let body = json(response).await;
        assert_eq!(body["status"], status);
        assert_eq!(body["request_id"], "case-id-1");
        assert!(
            body["title"].is_string() && body["detail"].is_string(),
            "{body}"
        );
    }
    // Issue 15, point 8: the request past `server.request_timeout` is counted as a timeout.
    let metrics = reqwest::get(api.url("/metrics")).await?.text().await?;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("http_errors_total{")
                && line.contains("endpoint=\"/admin/drill/delay\"")
                && line.contains("error_type=\"timeout\"")),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_problem_json() -> anyhow::Result<()> {
    let api = Api::builder()
        .env("MAINSTAY_SERVER__BODY_LIMIT_BYTES", "64")
        .start()?;
    let response = reqwest::Client::new()
        .post(api.url("/v1/whoami"))
        .body(vec![b'x'; 1024])
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    // Issue 15, point 8: the 413 is counted like every other answer, with its route.
    let metrics = reqwest::get(api.url("/metrics")).await?.text().await?;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("http_requests_total{")
                && line.contains("endpoint=\"/v1/whoami\"")
                && line.contains("status_code=\"413\"")
                && line.ends_with(" 1")),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_accepted_replaced_when_invalid_echoed_and_logged() -> anyhow::Result<()> {
    let mut api = Api::builder().start()?;
    let client = reqwest::Client::new();

    let good = client
        .get(api.url("/health/live"))
        .header("x-request-id", "req-abc.123:4_5")
        .send()
        .await?;
    assert_eq!(good.headers()["x-request-id"], "req-abc.123:4_5");

    let too_long = "x".repeat(129);
    for bad in [too_long.as_str(), "has space", "semi;colon", "<script>"] {
        let response = client
            .get(api.url("/health/live"))
            .header("x-request-id", bad)
            .send()
            .await?;
        let echoed = response.headers()["x-request-id"].to_str()?.to_owned();
        assert_ne!(echoed, bad);
        assert!(!echoed.is_empty() && echoed.len() <= 128);
    }
    let made = client.get(api.url("/health/live")).send().await?;
    assert!(!made.headers()["x-request-id"].is_empty());

    // The accepted id is on the request's log lines.
    api.wait_for_log(Duration::from_secs(5), |line| {
        line["request_id"] == "req-abc.123:4_5"
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_identify_callers_and_unknown_keys_are_401() -> anyhow::Result<()> {
    let api = Api::builder().config_toml(&keys_toml(true)).start()?;
    let client = reqwest::Client::new();

    let bearer = client
        .get(api.url("/v1/whoami"))
        .bearer_auth(ACME_KEY)
        .send()
        .await?;
    assert_eq!(bearer.status(), 200);
    let caller = json(bearer).await;
    assert_eq!(caller["organisation"], "acme");
    assert_eq!(caller["tier"], "premium");
    assert_eq!(caller["plan"], "pro");
    let principal = caller["principal"].as_str().unwrap_or_default().to_owned();
    assert_eq!(principal.len(), 32, "a truncated HMAC-SHA256 in hex");
    assert!(!principal.contains(ACME_KEY));

    let header = client
        .get(api.url("/v1/whoami"))
        .header("x-api-key", ACME_KEY)
        .send()
        .await?;
    assert_eq!(json(header).await["principal"], principal.as_str());

    let unknown = client
        .get(api.url("/v1/whoami"))
        .bearer_auth("not-a-key")
        .send()
        .await?;
    assert_eq!(unknown.status(), 401);
    assert_eq!(unknown.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );

    let anonymous = client.get(api.url("/v1/whoami")).send().await?;
    assert_eq!(anonymous.status(), 200);
    let anonymous = json(anonymous).await;
    assert_eq!(anonymous["organisation"], "public");
    assert_eq!(anonymous["tier"], "anonymous");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_anonymous_access_a_keyless_caller_is_401() -> anyhow::Result<()> {
    let api = Api::builder().config_toml(&keys_toml(false)).start()?;
    let client = reqwest::Client::new();
    let response = client.get(api.url("/v1/whoami")).send().await?;
    assert_eq!(response.status(), 401);
    let ok = client
        .get(api.url("/v1/whoami"))
        .bearer_auth(ACME_KEY)
        .send()
        .await?;
    assert_eq!(ok.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_token_and_are_audited() -> anyhow::Result<()> {
    let mut api = Api::builder()
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .start()?;
    let client = reqwest::Client::new();

    let missing = client.get(api.url("/admin/config")).send().await?;
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let wrong = client
        .get(api.url("/admin/config"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);

    let ok = client
        .get(api.url("/admin/config"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(ok.status(), 200);
    let config = json(ok).await;
    assert_eq!(config["admin.token"], "[REDACTED]");
    assert_eq!(config["server.addr"], "127.0.0.1:0");

    let audit_ok = api.wait_for_log(Duration::from_secs(5), |line| {
        line["target"] == "audit" && line["outcome"] == 200 && line["action"] == "GET /admin/config"
    })?;
    let token_hash = audit_ok["credential_sha256"].as_str().unwrap_or_default();
    assert_eq!(token_hash, &sha256_hex(ADMIN_TOKEN)[..16]);
    api.wait_for_log(Duration::from_secs(5), |line| {
        line["target"] == "audit" && line["outcome"] == 401 && line["credential_sha256"] == "none"
    })?;
    assert!(
        api.lines().iter().all(|line| !line.contains(ADMIN_TOKEN)),
        "the token itself is never logged"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_admin_routes_do_not_exist() -> anyhow::Result<()> {
    let api = Api::builder().start()?;
    let response = reqwest::Client::new()
        .get(api.url("/admin/config"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_the_committed_one() -> anyhow::Result<()> {
    let api = Api::builder().start()?;
    let served: Value = reqwest::get(api.url("/openapi.json")).await?.json().await?;
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json"),
    )?)?;
    assert_eq!(served, committed, "run `cargo xtask codegen`");
    Ok(())
}
