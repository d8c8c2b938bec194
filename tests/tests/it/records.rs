//! The data API: collections and records per organisation, bounds, durability across a restart.

use std::time::Duration;

use mainstay_tests::{Api, ApiBuilder, sha256_hex};
use serde_json::{Value, json};

fn two_organisations() -> String {
    format!(
        "[[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"acme\"\n\
         [[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"globex\"\n",
        sha256_hex("acme-key"),
        sha256_hex("globex-key")
    )
}

fn api(data_dir: &str) -> ApiBuilder {
    Api::builder()
        .config_toml(&two_organisations())
        .env("MAINSTAY_STORAGE__DATA_DIR", data_dir)
        .env("MAINSTAY_STORAGE__LIMITS__MAX_VALUE_BYTES", "64")
}

/// Creates a collection in `acme`'s organisation.
async fn create_as_acme(
    client: &reqwest::Client,
    api: &Api,
    name: &str,
    policy: &str,
) -> anyhow::Result<()> {
    let created = client
        .post(api.url("/v1/collections"))
        .bearer_auth("acme-key")
        .json(&json!({ "name": name, "policy": policy }))
        .send()
        .await?;
    anyhow::ensure!(
        created.status() == 201,
        "creating {name}: {}",
        created.status()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_written_read_listed_and_deleted_per_organisation() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let api = api(&data.path().to_string_lossy()).start()?;
    let client = reqwest::Client::new();
    let acme = |request: reqwest::RequestBuilder| request.bearer_auth("acme-key");

    let created = acme(client.post(api.url("/v1/collections")))
        .json(&json!({"name": "orders", "policy": "memory_s3"}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let again = acme(client.post(api.url("/v1/collections")))
        .json(&json!({"name": "orders"}))
        .send()
        .await?;
    assert_eq!(again.status(), 409);

    for index in 0..5 {
        let put =
            acme(client.put(api.url(&format!("/v1/collections/orders/records/order-{index}"))))
                .body(format!("value-{index}"))
                .send()
                .await?;
        assert_eq!(put.status(), 204);
    }
    let got = acme(client.get(api.url("/v1/collections/orders/records/order-3")))
        .send()
        .await?;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await?.as_ref(), b"value-3");

    // A page at a time, in id order, with an opaque cursor.
    let first: Value =
        acme(client.get(api.url("/v1/collections/orders/records?prefix=order-&limit=2")))
            .send()
            .await?
            .json()
            .await?;
    assert_eq!(first["records"][0]["id"], "order-0");
    assert_eq!(first["records"].as_array().map(Vec::len), Some(2));
    assert_eq!(first["degraded"], false);
    let cursor = first["next_cursor"].as_str().unwrap_or_default().to_owned();
    assert!(
        cursor
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte)),
        "{cursor}"
    );
    let second: Value = acme(client.get(api.url(&format!(
        "/v1/collections/orders/records?limit=10&cursor={cursor}"
    ))))
    .send()
    .await?
    .json()
    .await?;
    let ids: Vec<&str> = second["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, ["order-2", "order-3", "order-4"]);

    // Another organisation sees none of it, even with the same collection name.
    let other = client
        .get(api.url("/v1/collections/orders/records/order-3"))
        .bearer_auth("globex-key")
        .send()
        .await?;
    assert_eq!(other.status(), 404);
    let listed: Value = client
        .get(api.url("/v1/collections"))
        .bearer_auth("globex-key")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["collections"], json!([]));
    let mine: Value = acme(client.get(api.url("/v1/collections")))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(mine["collections"][0]["name"], "orders");

    // Deletes.
    let deleted = acme(client.delete(api.url("/v1/collections/orders/records/order-3")))
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    let gone = acme(client.get(api.url("/v1/collections/orders/records/order-3")))
        .send()
        .await?;
    assert_eq!(gone.status(), 404);
    assert_eq!(gone.headers()["content-type"], "application/problem+json");
    let dropped = acme(client.delete(api.url("/v1/collections/orders")))
        .send()
        .await?;
    assert_eq!(dropped.status(), 204);
    let missing = acme(client.get(api.url("/v1/collections/orders/records/order-1")))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_all_or_nothing_and_bounds_are_named() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let api = api(&data.path().to_string_lossy()).start()?;
    let client = reqwest::Client::new();
    create_as_acme(&client, &api, "events", "memory").await?;
    let batch = |records: Value| {
        client
            .post(api.url("/v1/collections/events/records"))
            .bearer_auth("acme-key")
            .json(&json!({ "records": records }))
            .send()
    };
    let ok =
        batch(json!([{"id": "a", "value_base64": "YQ=="}, {"id": "b", "value_base64": "Yg=="}]))
            .await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await?["written"], 2);
    // One bad id refuses the whole batch: "c" is not written.
    let bad = batch(
        json!([{"id": "c", "value_base64": "Yw=="}, {"id": "bad id", "value_base64": "Yw=="}]),
    )
    .await?;
    assert_eq!(bad.status(), 422);
    let c = client
        .get(api.url("/v1/collections/events/records/c"))
        .bearer_auth("acme-key")
        .send()
        .await?;
    assert_eq!(c.status(), 404);

    // A value over storage.limits.max_value_bytes is 413 with the limit named.
    let big = client
        .put(api.url("/v1/collections/events/records/big"))
        .bearer_auth("acme-key")
        .body(vec![b'x'; 65])
        .send()
        .await?;
    assert_eq!(big.status(), 413);
    let problem: Value = big.json().await?;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("64")),
        "{problem}"
    );

    // Names never escape into paths.
    for path in [
        "/v1/collections/..%2F..%2Fetc/records/x",
        "/v1/collections/events/records/..",
        "/v1/collections/events/records/%2E%2E",
        "/v1/collections/Events/records/x",
        "/v1/collections/events/records/a%2Fb",
    ] {
        let response = client
            .get(api.url(path))
            .bearer_auth("acme-key")
            .send()
            .await?;
        assert!(
            [404, 422].contains(&response.status().as_u16()),
            "{path}: {}",
            response.status()
        );
    }
    let created = client
        .post(api.url("/v1/collections"))
        .bearer_auth("acme-key")
        .json(&json!({"name": "../escape"}))
        .send()
        .await?;
    assert_eq!(created.status(), 422);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_restart() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_string_lossy().into_owned();
    let client = reqwest::Client::new();
    {
        let mut api = api(&data_dir).start()?;
        create_as_acme(&client, &api, "ledger", "memory_s3").await?;
        for index in 0..15 {
            let put = client
                .put(api.url(&format!("/v1/collections/ledger/records/entry-{index:02}")))
                .bearer_auth("acme-key")
                .body(format!("amount-{index}"))
                .send()
                .await?;
            assert_eq!(put.status(), 204);
        }
        api.terminate()?;
        assert!(api.wait_exit(Duration::from_secs(20))?.success());
    }
    let api = api(&data_dir).start()?;
    for index in [0, 7, 14] {
        let got = client
            .get(api.url(&format!("/v1/collections/ledger/records/entry-{index:02}")))
            .bearer_auth("acme-key")
            .send()
            .await?;
        assert_eq!(got.status(), 200);
        assert_eq!(
            got.bytes().await?.as_ref(),
            format!("amount-{index}").as_bytes()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_a_retried_batch_once_and_refuses_other_content()
-> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let api = api(&data.path().to_string_lossy()).start()?;
    let client = reqwest::Client::new();
    create_as_acme(&client, &api, "payments", "memory").await?;
    let send = |key: &'static str, records: Value| {
        client
            .post(api.url("/v1/collections/payments/records"))
            .bearer_auth("acme-key")
            .header("idempotency-key", key)
            .json(&json!({ "records": records }))
            .send()
    };
    let batch = json!([{"id": "p1", "value_base64": "MTA="}]);
    let first: Value = send("pay-1", batch.clone()).await?.json().await?;
    assert_eq!(
        (first["written"].as_u64(), first["replayed"].as_bool()),
        (Some(1), None)
    );
    let retried: Value = send("pay-1", batch).await?.json().await?;
    assert_eq!(
        (retried["written"].as_u64(), retried["replayed"].as_bool()),
        (Some(1), Some(true))
    );
    let reused = send("pay-1", json!([{"id": "p2", "value_base64": "MjA="}])).await?;
    assert_eq!(reused.status(), 422);
    let p2 = client
        .get(api.url("/v1/collections/payments/records/p2"))
        .bearer_auth("acme-key")
        .send()
        .await?;
    assert_eq!(p2.status(), 404, "a refused reuse writes nothing");
    Ok(())
}
