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

/// Issue 15, point 9: the statuses the layers answer (authentication, rate limit, extractors,
/// body limit, timeout) are documented on every operation they apply to, as problem+json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_the_statuses_its_layers_answer() -> anyhow::Result<()> {
    let api = Api::builder()
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .start()?;
    let doc: Value = reqwest::get(api.url("/openapi.json")).await?.json().await?;
    let mut missing = Vec::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            operations += 1;
            let mut expected = vec!["504"];
            if path.starts_with("/v1/") {
                expected.extend(["401", "429"]);
            }
            if path.starts_with("/admin/") {
                expected.push("401");
            }
            let has_parameters = operation["parameters"]
                .as_array()
                .is_some_and(|parameters| !parameters.is_empty());
            if has_parameters || operation.get("requestBody").is_some() {
                expected.push("422");
            }
            if let Some(body) = operation.get("requestBody") {
                expected.push("413");
                if body["content"].get("application/json").is_some() {
                    expected.push("415");
                }
            }
            let responses = &operation["responses"];
            for status in expected {
                if responses.get(status).is_none() {
                    missing.push(format!("{method} {path}: {status} is not documented"));
                }
            }
            for (status, response) in responses.as_object().into_iter().flatten() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                let is_health_report = path.starts_with("/health/") || path == "/admin/health";
                if is_error && !(is_health_report && status == "503") {
                    let schema = &response["content"]["application/problem+json"]["schema"];
                    if schema["$ref"] != "#/components/schemas/Problem" {
                        missing.push(format!(
                            "{method} {path}: {status} is not an application/problem+json Problem"
                        ));
                    }
                }
            }
        }
    }
    assert!(operations > 30, "every route is in the document");
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    Ok(())
}

/// Issue 15, point 9: the constraints the server enforces are in the document, and a value the
/// document refuses is refused by the server with the documented problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_carries_the_enforced_constraints_and_rejections_are_problems()
-> anyhow::Result<()> {
    let api = Api::builder()
        .config_toml(&keys_toml(false))
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
        .start()?;
    let client = reqwest::Client::new();
    let doc: Value = reqwest::get(api.url("/openapi.json")).await?.json().await?;
    let parameter = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|parameter| parameter["name"] == name)
            .map(|parameter| parameter["schema"].clone())
            .unwrap_or(Value::Null)
    };
    let records = "/v1/collections/{collection}/records";
    assert_eq!(
        parameter(records, "get", "collection")["pattern"],
        "^[a-z0-9][a-z0-9_-]{0,50}$"
    );
    assert_eq!(parameter(records, "get", "limit")["maximum"], 1000);
    assert_eq!(parameter(records, "get", "limit")["minimum"], 1);
    assert_eq!(
        parameter(records, "post", "Idempotency-Key")["maxLength"],
        128
    );
    assert_eq!(parameter("/admin/dlq", "get", "limit")["maximum"], 1000);
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["NewCollection"]["properties"]["name"]["maxLength"],
        51
    );
    assert_eq!(schemas["Batch"]["properties"]["records"]["minItems"], 1);
    assert_eq!(
        schemas["Policy"]["enum"],
        serde_json::json!(["memory", "memory_s3", "s3_only"])
    );
    assert_eq!(
        schemas["ErrorClass"]["enum"].as_array().map(Vec::len),
        Some(4)
    );

    let key = |request: reqwest::RequestBuilder| request.header("x-api-key", ACME_KEY);
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth(ADMIN_TOKEN);
    let cases = [
        // Extractor rejections: axum's plain-text 400s before.
        (
            key(client.get(api.url("/v1/collections/orders/records?limit=abc"))),
            422,
        ),
        (admin(client.get(api.url("/admin/dlq/export"))), 422),
        (admin(client.get(api.url("/admin/dlq?limit=5000"))), 422),
        (admin(client.get(api.url("/admin/dlq?class="))), 422),
        // A body not declared as JSON, and JSON that is not an object.
        (
            key(client
                .post(api.url("/v1/collections"))
                .body(r#"{"name":"a"}"#)),
            415,
        ),
        (
            key(client.post(api.url("/v1/collections")))
                .header("content-type", "application/json")
                .body(r#"["orders"]"#),
            422,
        ),
        (
            admin(client.post(api.url("/admin/dlq/retry")))
                .header("content-type", "application/json")
                .body("[null, null]"),
            422,
        ),
        (
            admin(client.post(api.url("/admin/dlq/retry")))
                .json(&serde_json::json!({ "older_than": "1 h" })),
            422,
        ),
        (admin(client.post(api.url("/admin/store/handover"))), 415),
        (
            admin(client.post(api.url("/admin/store/handover")))
                .json(&serde_json::json!({ "data_dir": "relative/dir" })),
            422,
        ),
        // A schema-valid path that holds no data directory: not found, never a 5xx.
        (
            admin(client.post(api.url("/admin/store/handover")))
                .json(&serde_json::json!({ "data_dir": "/etc/hostname/x" })),
            404,
        ),
        // Schema-valid values the server takes.
        (
            admin(client.post(api.url("/admin/dlq/retry")))
                .json(&serde_json::json!({ "older_than": "1h 30m", "error_class": null })),
            200,
        ),
        (
            admin(client.get(api.url("/admin/dlq?cursor=01arz3ndektsv4rrffq69g5fav&limit=1"))),
            200,
        ),
    ];
    for (index, (request, status)) in cases.into_iter().enumerate() {
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), status, "case {index}");
        if status >= 400 {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json",
                "case {index}"
            );
            assert_eq!(json(response).await["status"], status, "case {index}");
        }
    }

    // The listing cursor is the id the page ends on, which the document can describe.
    let created = key(client.post(api.url("/v1/collections")))
        .json(&serde_json::json!({ "name": "orders", "policy": "memory" }))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let batch = key(client.post(api.url("/v1/collections/orders/records")))
        .json(&serde_json::json!({ "records": [
            { "id": "a", "value_base64": "MQ==" },
            { "id": "b", "value_base64": "Mg==" },
            { "id": "c", "value_base64": "Mw==" },
        ] }))
        .send()
        .await?;
    assert_eq!(batch.status(), 200);
    let page = json(
        key(client.get(api.url("/v1/collections/orders/records?limit=2")))
            .send()
            .await?,
    )
    .await;
    assert_eq!(page["next_cursor"], "b", "{page}");
    let rest = json(
        key(client.get(api.url("/v1/collections/orders/records?cursor=b")))
            .send()
            .await?,
    )
    .await;
    assert_eq!(rest["records"][0]["id"], "c", "{rest}");
    Ok(())
}
