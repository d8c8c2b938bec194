//! In-process tests of the API's assembly: routes against the OpenAPI document, the configuration
//! reference against the configuration types.

use std::collections::BTreeSet;

use mainstay_api::config::{self, Config};
use mainstay_api::routes::openapi::ApiDoc;
use utoipa::OpenApi;

mod encryption;

const TOKEN: &str = "a-token-long-enough-for-validation";

/// Sends a request with the admin token through the router; the status and the JSON body.
async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (axum::http::StatusCode, serde_json::Value) {
    use tower::ServiceExt as _;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(axum::body::Body::empty, |body| {
            axum::body::Body::from(body.to_string())
        }))
        .expect("a valid request");
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// A configuration with every route on, its data in a fresh temporary directory (kept alive by the
/// returned guard).
fn every_route_config() -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut config = Config::default();
    config.admin.token = Some(TOKEN.into());
    config.storage.data_dir = dir.path().to_path_buf();
    (config, dir)
}

#[tokio::test]
async fn every_served_route_is_in_the_openapi_document() {
    let (config, _dir) = every_route_config();
    let app = mainstay_api::app::build(config)
        .await
        .expect("the configuration is valid");
    let doc = ApiDoc::openapi();
    let documented: BTreeSet<(String, String)> = doc
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = [
                ("get", item.get.is_some()),
                ("post", item.post.is_some()),
                ("put", item.put.is_some()),
                ("delete", item.delete.is_some()),
                ("patch", item.patch.is_some()),
            ];
            methods
                .into_iter()
                .filter(|(_, present)| *present)
                .map(|(method, _)| (method.to_owned(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        app.served.len() >= 6,
        "the admin routes are on: {:?}",
        app.served
    );
    for (method, path) in &app.served {
        assert!(
            documented.contains(&((*method).to_owned(), path.clone())),
            "{method} {path} is served but missing from the OpenAPI document; add it to ApiDoc"
        );
    }
}

/// Issue 17, point 1: a stateless build serves no route that needs the store, the stateful build
/// serves every one the document marks `stateful`, and the document marks each operation with
/// the modes that serve it.
#[tokio::test]
async fn the_openapi_document_says_which_routes_each_mode_serves() {
    use mainstay_api::routes::needs_storage;
    let (config, _dir) = every_route_config();
    let mut stateless_config = config.clone();
    stateless_config.storage.enabled = false;
    stateless_config.storage.data_dir = "/proc/mainstay-no-such-dir".into();
    let stateful = mainstay_api::app::build(config).await.expect("valid");
    let stateless = mainstay_api::app::build(stateless_config)
        .await
        .expect("a stateless build needs no data directory");
    assert!(stateless.storage.is_none() && stateless.dlq_cleanup.is_none());
    let served_stateless: BTreeSet<(&str, &str)> = stateless
        .served
        .iter()
        .map(|(method, path)| (*method, path.as_str()))
        .collect();
    for (method, path) in &stateful.served {
        assert_eq!(
            served_stateless.contains(&(*method, path.as_str())),
            !needs_storage(path),
            "{method} {path}"
        );
    }
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
    let mut stateful_operations = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("an item") {
            let mode = operation["x-mainstay-mode"].as_str();
            let expected = if needs_storage(path) {
                "stateful"
            } else {
                "all"
            };
            assert_eq!(mode, Some(expected), "{method} {path}");
            if expected == "stateful" {
                stateful_operations += 1;
                assert!(
                    stateful
                        .served
                        .iter()
                        .any(|(m, p)| m == method && p == path),
                    "{method} {path} is marked stateful but not served with storage"
                );
                assert!(
                    operation["description"]
                        .as_str()
                        .is_some_and(|text| text.contains("storage.enabled = true")),
                    "{method} {path}"
                );
                assert!(operation["responses"]["404"].is_object(), "{method} {path}");
            }
        }
    }
    assert!(stateful_operations >= 15, "{stateful_operations}");
}

#[test]
fn the_configuration_reference_documents_exactly_the_keys_the_types_have() {
    let keys: BTreeSet<String> = config::flatten(&Config::default()).into_keys().collect();
    let documented: BTreeSet<String> = config::KEY_DOCS
        .iter()
        .map(|(key, _, _)| (*key).to_owned())
        .collect();
    let undocumented: Vec<_> = keys.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&keys).collect();
    assert!(
        undocumented.is_empty(),
        "keys without documentation in KEY_DOCS: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "KEY_DOCS documents keys that do not exist: {stale:?}"
    );
    let reference = config::reference();
    for key in keys {
        assert!(
            reference.contains(&format!("| `{key}` |")),
            "{key} missing from the reference"
        );
    }
    // Every row has exactly the five columns: a `|` inside a cell is escaped.
    for row in reference.lines().filter(|line| line.starts_with("| `")) {
        let cells = row.replace("\\|", "").matches('|').count() - 1;
        assert_eq!(cells, 5, "{row}");
    }
}

#[test]
fn the_defaults_are_valid_and_secrets_are_masked() {
    let mut config = Config::default();
    config.validate().expect("the defaults are valid");
    config.admin.token = Some("super-secret-admin-token".into());
    let flat = config::flatten(&config);
    assert_eq!(flat["admin.token"], "[REDACTED]");
    assert_eq!(flat["server.addr"], "127.0.0.1:8080");
    assert_eq!(flat["auth.allow_anonymous"], true);
    assert_eq!(flat["shutdown.timeout"], "25s");
}

#[test]
fn api_key_hashes_must_be_sha256_hex() {
    let mut config = Config::default();
    config.auth.api_keys.push(config::ApiKeyEntry {
        key_sha256: "not-hex".into(),
        organisation: "acme".into(),
        tier: config::Tier::ApiKey,
        plan: config::Plan::Free,
    });
    let error = config
        .validate()
        .expect_err("a malformed hash is refused")
        .to_string();
    assert!(
        error.contains("auth.api_keys[0].key_sha256") && error.contains("not-hex"),
        "{error}"
    );
}

mod admin_breakers {
    use std::time::Duration;

    use axum::http::StatusCode;
    use mainstay_resilience::{BreakerConfig, CircuitBreaker};

    use super::{call, every_route_config};

    #[tokio::test]
    async fn breakers_are_listed_reset_and_forced_open_by_name() {
        let (config, _dir) = every_route_config();
        let app = mainstay_api::app::build(config).await.expect("valid");
        let breaker = CircuitBreaker::new(
            "object-store",
            BreakerConfig::consecutive(5, Duration::from_secs(30)),
        )
        .expect("a valid breaker");
        app.breakers.register(&breaker).expect("a unique name");

        let (status, list) = call(&app.router, "GET", "/admin/circuit-breakers", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list[0]["name"], "object-store");
        assert_eq!(list[0]["state"], "closed");

        let (status, forced) = call(
            &app.router,
            "POST",
            "/admin/circuit-breakers/object-store/force-open",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(forced["state"], "forced_open");
        assert!(breaker.snapshot().state != mainstay_resilience::BreakerState::Closed);

        let (status, reset) = call(
            &app.router,
            "POST",
            "/admin/circuit-breakers/object-store/reset",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reset["state"], "closed");

        let (status, problem) = call(
            &app.router,
            "POST",
            "/admin/circuit-breakers/nope/reset",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("nope")),
            "{problem}"
        );
    }
}

mod admin_dlq {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::StatusCode;
    use mainstay_dlq::{Entry, FailureClass, HandlerError, NewEntry, RedriveHandler};
    use serde_json::json;

    use super::{call, every_route_config};

    /// The owning component's handler: every second call fails.
    #[derive(Debug, Default)]
    struct Flaky {
        calls: AtomicUsize,
        delivered: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl RedriveHandler for Flaky {
        async fn redrive(&self, _entry: &Entry) -> Result<(), HandlerError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
                return Err(HandlerError::new("downstream still failing"));
            }
            self.delivered.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_admin_api_pages_gets_redrives_deletes_purges_and_exports() {
        let (mut config, _dir) = every_route_config();
        config.dlq.redrive_rate_per_second = 0;
        let app = mainstay_api::app::build(config).await.expect("valid");
        let dlq = app.storage.as_ref().expect("storage is on").dlq.clone();
        let mut ids = Vec::new();
        for index in 0..6 {
            let entry = NewEntry::inline(
                "orders",
                format!("order-{index}"),
                vec![b'x'; 8],
                FailureClass::Exhausted,
                "gave up",
            );
            ids.push(dlq.push(entry).await.expect("pushed").to_string());
        }
        dlq.push(NewEntry::inline(
            "emails",
            "mail-1",
            b"hello".to_vec(),
            FailureClass::Permanent,
            "bounced",
        ))
        .await
        .expect("pushed");

        // Paged listing in id order, filtered by queue and class.
        let (status, first) =
            call(&app.router, "GET", "/admin/dlq?queue=orders&limit=4", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(first["entries"].as_array().map(Vec::len), Some(4));
        let cursor = first["next_cursor"]
            .as_str()
            .expect("a next page")
            .to_owned();
        let (_, second) = call(
            &app.router,
            "GET",
            &format!("/admin/dlq?queue=orders&limit=4&cursor={cursor}"),
            None,
        )
        .await;
        assert_eq!(second["entries"].as_array().map(Vec::len), Some(2));
        assert!(second["next_cursor"].is_null());
        let (_, permanent) = call(&app.router, "GET", "/admin/dlq?class=permanent", None).await;
        assert_eq!(permanent["entries"][0]["queue"], "emails");
        let (status, _) = call(&app.router, "GET", "/admin/dlq?class=bogus", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        // One entry with its payload.
        let (status, entry) =
            call(&app.router, "GET", &format!("/admin/dlq/{}", ids[0]), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(entry["key"], "order-0");
        let (status, _) = call(&app.router, "GET", "/admin/dlq/not-a-ulid", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        // A queue without a handler: 409, nothing moves.
        let (status, problem) = call(
            &app.router,
            "POST",
            "/admin/dlq/retry",
            Some(json!({"queue": "orders"})),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert_eq!(dlq.len(), 7);

        // With the owning component's handler: really redriven, failures stay.
        let handler = Arc::new(Flaky::default());
        dlq.register_handler("orders", handler.clone());
        let (status, report) = call(
            &app.router,
            "POST",
            "/admin/dlq/retry",
            Some(json!({"queue": "orders"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(
            (report["succeeded"].as_u64(), report["failed"].as_u64()),
            (Some(3), Some(3))
        );
        assert_eq!(handler.delivered.load(Ordering::SeqCst), 3);
        assert_eq!(dlq.len(), 4);

        // Export, delete one, purge a queue.
        let (status, export) =
            call(&app.router, "GET", "/admin/dlq/export?queue=orders", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(export["entries"].as_array().map(Vec::len), Some(3));
        let (_, page) = call(&app.router, "GET", "/admin/dlq?queue=emails", None).await;
        let mail = page["entries"][0]["id"].as_str().expect("an id").to_owned();
        let (status, _) = call(&app.router, "DELETE", &format!("/admin/dlq/{mail}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(&app.router, "DELETE", &format!("/admin/dlq/{mail}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, purged) = call(&app.router, "DELETE", "/admin/dlq?queue=orders", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(purged["purged"], 3);
        assert!(dlq.is_empty());
    }
}

#[tokio::test]
async fn every_route_the_rate_limit_classes_name_is_served() {
    let (config, _dir) = every_route_config();
    let routes = config.ratelimit.routes.clone();
    let app = mainstay_api::app::build(config).await.expect("valid");
    for key in routes.keys() {
        let (method, path) = key.split_once(' ').expect("`METHOD /template`");
        assert!(
            app.served
                .iter()
                .any(
                    |(served_method, served_path)| served_method.eq_ignore_ascii_case(method)
                        && served_path == path
                ),
            "ratelimit.routes names `{key}`, which the API does not serve"
        );
    }
}

/// Issue 15, point 1: the names `health.checks.<name>` may use are exactly the checks the
/// service registers, with and without Redis, so that `config check` (which knows the names
/// before anything is built) and start-up agree.
#[tokio::test]
async fn the_registrable_check_names_are_the_registered_ones() {
    for redis in [false, true] {
        let (mut config, _dir) = every_route_config();
        if redis {
            config.redis.url = Some("redis://127.0.0.1:6379".into());
            config.ratelimit.secret =
                serde_json::from_value(serde_json::json!("a-secret-for-identities-0123456789"))
                    .expect("a secret");
        }
        let mut expected: Vec<String> = config
            .registrable_checks()
            .into_iter()
            .map(str::to_owned)
            .collect();
        expected.sort();
        let app = mainstay_api::app::build(config).await.expect("valid");
        let mut registered = app.health.check_names();
        registered.sort();
        assert_eq!(registered, expected, "redis: {redis}");
    }
}

/// Issue 15, point 1: every documented check can be overridden, and an unknown name is refused
/// by validation, before anything is opened.
#[test]
fn every_registrable_check_may_be_overridden_and_no_other() {
    let mut config = Config::default();
    config.redis.url = Some("redis://127.0.0.1:6379".into());
    config.ratelimit.secret =
        serde_json::from_value(serde_json::json!("a-secret-for-identities-0123456789"))
            .expect("a secret");
    for name in config.registrable_checks() {
        let mut with = config.clone();
        with.health
            .checks
            .insert(name.to_owned(), mainstay_health::CheckOverride::default());
        with.validate()
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
    let mut unknown = config.clone();
    unknown.health.checks.insert(
        "object_store".to_owned(),
        mainstay_health::CheckOverride::default(),
    );
    let error = unknown
        .validate()
        .expect_err("an unknown check name")
        .to_string();
    assert!(error.contains("health.checks.object_store"), "{error}");
    assert!(error.contains("object-store"), "{error}");
}
