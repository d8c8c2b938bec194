//! The record routes with `storage.encryption` on, in process: a changed or moved value answers
//! 500 `.../damaged-record` and is counted; an erased organisation's values answer 403
//! `.../organisation-erased`; after reinstatement new values work and old ones stay erased.

use axum::http::StatusCode;
use mainstay_api::config::{ApiKeyEntry, Config, Plan, Tier};
use sha2::{Digest as _, Sha256};

const KEY: &str = "acme-key-for-the-encryption-tests";

/// Sends a request as the `acme` organisation; the status and the body.
async fn send(app: &axum::Router, method: &str, path: &str, body: &[u8]) -> (StatusCode, Vec<u8>) {
    use tower::ServiceExt as _;
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_vec()))
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
    (status, bytes.to_vec())
}

fn problem_type(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    value["type"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn damaged_values_answer_500_and_erased_organisations_403() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.storage.encryption = true;
    config.storage.master_key = Some(mainstay_storage_tiering::keyring::MasterKey::generate());
    config.ratelimit.enabled = false;
    config.auth.api_keys.push(ApiKeyEntry {
        key_sha256: hex::encode(Sha256::digest(KEY.as_bytes())),
        organisation: "acme".into(),
        tier: Tier::ApiKey,
        plan: Plan::Free,
    });
    config.validate().expect("valid");
    let app = mainstay_api::app::build(config).await.expect("valid");
    let router = &app.router;
    let store = app.storage.as_ref().expect("storage is on").store.clone();
    let keyring = app.keyring.clone().expect("encryption is on");
    let (status, _) = send(router, "POST", "/v1/collections", br#"{"name":"notes"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    for id in ["n-1", "n-2"] {
        let (status, _) = send(
            router,
            "PUT",
            &format!("/v1/collections/notes/records/{id}"),
            format!("value of {id}").as_bytes(),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, body) = send(router, "GET", "/v1/collections/notes/records/n-1", b"").await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"value of n-1"[..])
    );
    // The store holds the sealed value under its name of the collection.
    let name = store
        .collections()
        .into_iter()
        .map(|info| info.name)
        .find(|name| name.ends_with("-notes"))
        .expect("the collection");
    let sealed = store.get(&name, "n-1").await.expect("read").expect("found");
    assert_ne!(sealed.as_ref(), b"value of n-1");

    // A changed byte, and a value moved to another id: 500 damaged-record, counted.
    let mut changed = sealed.to_vec();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    store.put(&name, "n-1", changed.into()).await.expect("put");
    store.put(&name, "n-3", sealed.clone()).await.expect("put");
    for id in ["n-1", "n-3"] {
        let (status, body) = send(
            router,
            "GET",
            &format!("/v1/collections/notes/records/{id}"),
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(problem_type(&body).ends_with("/damaged-record"), "{body:?}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("notes") && text.contains(id), "{text}");
    }
    let (status, body) = send(router, "GET", "/v1/collections/notes/records", b"").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(problem_type(&body).ends_with("/damaged-record"));
    let (_, metrics) = send(router, "GET", "/metrics", b"").await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(
            "keyring_operations_total{keyring=\"storage\",operation=\"open\",outcome=\"damaged\"} 3"
        ),
        "{metrics}"
    );
    store.delete(&name, "n-1").await.expect("delete");
    store.delete(&name, "n-3").await.expect("delete");

    // Erased: reads, listings and writes answer 403 organisation-erased.
    keyring.destroy("acme").await.expect("destroyed");
    for (method, path, body) in [
        ("GET", "/v1/collections/notes/records/n-2", &b""[..]),
        ("GET", "/v1/collections/notes/records", b""),
        ("PUT", "/v1/collections/notes/records/n-4", b"new"),
        (
            "POST",
            "/v1/collections/notes/records",
            br#"{"records":[{"id":"n-5","value_base64":"eA=="}]}"#,
        ),
    ] {
        let (status, answer) = send(router, method, path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert!(
            problem_type(&answer).ends_with("/organisation-erased"),
            "{method} {path}: {answer:?}"
        );
    }

    // Reinstated: a new key for new values; the old value stays erased.
    keyring.reinstate("acme").await.expect("reinstated");
    let (status, _) = send(router, "PUT", "/v1/collections/notes/records/n-4", b"new").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send(router, "GET", "/v1/collections/notes/records/n-4", b"").await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"new"[..]));
    let (status, body) = send(router, "GET", "/v1/collections/notes/records/n-2", b"").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(problem_type(&body).ends_with("/organisation-erased"));
}

/// The seal's overhead never refuses a value within `storage.limits.max_value_bytes`, and a value
/// over it is refused naming the configured limit.
#[tokio::test]
async fn the_value_limit_applies_to_the_plaintext() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.storage.encryption = true;
    config.storage.master_key = Some(mainstay_storage_tiering::keyring::MasterKey::generate());
    config.storage.limits.max_value_bytes = 64;
    config.ratelimit.enabled = false;
    config.auth.api_keys.push(ApiKeyEntry {
        key_sha256: hex::encode(Sha256::digest(KEY.as_bytes())),
        organisation: "acme".into(),
        tier: Tier::ApiKey,
        plan: Plan::Free,
    });
    let app = mainstay_api::app::build(config).await.expect("valid");
    let (status, _) = send(
        &app.router,
        "POST",
        "/v1/collections",
        br#"{"name":"notes"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = send(
        &app.router,
        "PUT",
        "/v1/collections/notes/records/a",
        &[b'x'; 64],
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send(
        &app.router,
        "PUT",
        "/v1/collections/notes/records/b",
        &[b'x'; 65],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&body).contains("64"), "{body:?}");
}
