//! The data API: collections and records per organisation, bounds, durability across a restart.

use std::time::{Duration, Instant};

use anyhow::Context as _;
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

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// The object store's upload breaker, as the admin API lists it.
const STORE_BREAKER: &str = "storage-uploads";

/// [`api`] with the admin API on and no rate limit (these tests write many records quickly).
fn with_admin(data_dir: &str) -> ApiBuilder {
    api(data_dir)
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
}

/// Forces the store's breaker open (`force-open`) or closes it (`reset`); returns its new state.
async fn store_breaker(client: &reqwest::Client, api: &Api, action: &str) -> anyhow::Result<Value> {
    let response = client
        .post(api.url(&format!("/admin/circuit-breakers/{STORE_BREAKER}/{action}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 200,
        "{action} {STORE_BREAKER}: {}",
        response.status()
    );
    Ok(response.json::<Value>().await?["state"].clone())
}

/// Standard base64 with padding, as listings carry values (`value_base64`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let triple = chunk.iter().enumerate().fold(0u32, |acc, (i, byte)| {
            acc | u32::from(*byte) << (16 - 8 * i)
        });
        for position in 0..4 {
            if position <= chunk.len() {
                let index = (triple >> (18 - 6 * position)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every page of `acme`'s `collection`, a cursor at a time: each page's body, and the records
/// of all of them as (id, value_base64).
async fn every_page(
    client: &reqwest::Client,
    api: &Api,
    collection: &str,
) -> anyhow::Result<(Vec<Value>, Vec<(String, String)>)> {
    let (mut pages, mut records) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("/v1/collections/{collection}/records?limit=1000");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let response = client
            .get(api.url(&url))
            .bearer_auth("acme-key")
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "{url}: {}", response.status());
        let page: Value = response.json().await?;
        for record in page["records"].as_array().into_iter().flatten() {
            let id = record["id"].as_str().unwrap_or_default().to_owned();
            let value = record["value_base64"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            records.push((id, value));
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        pages.push(page);
        anyhow::ensure!(pages.len() <= 50, "the cursor never ends: {pages:?}");
        if cursor.is_none() {
            return Ok((pages, records));
        }
    }
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
    assert_eq!(reused.status(), 409);
    let p2 = client
        .get(api.url("/v1/collections/payments/records/p2"))
        .bearer_auth("acme-key")
        .send()
        .await?;
    assert_eq!(p2.status(), 404, "a refused reuse writes nothing");
    Ok(())
}

/// The value of the stored record `s-{index}`: 48 bytes.
/// The listing of `memory` records `m-NN` and the first `stored` records `s-NN`, in id order,
/// values base64-encoded.
fn expected_listing(memory: usize, stored: usize) -> Vec<(String, String)> {
    let memory = (0..memory).map(|i| {
        (
            format!("m-{i:02}"),
            base64(format!("memory-{i}").as_bytes()),
        )
    });
    let stored = (0..stored).map(|i| (format!("s-{i:02}"), base64(stored_value(i).as_bytes())));
    memory.chain(stored).collect()
}

fn stored_value(index: usize) -> String {
    format!("stored-{index:02}-{}", "x".repeat(38))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_breaker_open_listings_answer_memory_and_cache_and_store_reads_are_503()
-> anyhow::Result<()> {
    const STORED: usize = 24;
    let data = tempfile::tempdir()?;
    let data_dir = data.path().to_string_lossy().into_owned();
    // 512-byte blocks: the stored records span several blocks, so the cache can hold one block
    // of the segment and not the others.
    let tiered = || with_admin(&data_dir).env("MAINSTAY_STORAGE__BLOCK_BYTES", "512");
    let client = reqwest::Client::new();
    {
        let mut api = tiered().start()?;
        create_as_acme(&client, &api, "archive", "s3_only").await?;
        for index in 0..STORED {
            let put = client
                .put(api.url(&format!("/v1/collections/archive/records/s-{index:02}")))
                .bearer_auth("acme-key")
                .body(stored_value(index))
                .send()
                .await?;
            assert_eq!(put.status(), 204);
        }
        // A clean stop flushes and uploads: the object store holds the records.
        api.terminate()?;
        assert!(api.wait_exit(Duration::from_secs(20))?.success());
    }
    let uploaded = data
        .path()
        .join("objects/segments")
        .join(format!("{}-archive", &sha256_hex("acme")[..12]));
    let objects = std::fs::read_dir(&uploaded)?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "seg"))
        .count();
    assert!(objects >= 1, "no segment object in {}", uploaded.display());

    // After a restart memory holds none of an `s3_only` collection's uploaded records and the
    // cache is cold: reading s-00 brings its block, and only that one, into the cache.
    let api = tiered().start()?;
    let get = |id: &str| {
        client
            .get(api.url(&format!("/v1/collections/archive/records/{id}")))
            .bearer_auth("acme-key")
    };
    let put = |id: &str, value: String| {
        client
            .put(api.url(&format!("/v1/collections/archive/records/{id}")))
            .bearer_auth("acme-key")
            .body(value)
    };
    let warmed = get("s-00").send().await?;
    assert_eq!(warmed.status(), 200);
    assert_eq!(warmed.text().await?, stored_value(0));
    // Records written now are in memory (the memtable is far from its bound).
    for index in 0..3 {
        let written = put(&format!("m-{index:02}"), format!("memory-{index}"))
            .send()
            .await?;
        assert_eq!(written.status(), 204);
    }

    assert_eq!(
        store_breaker(&client, &api, "force-open").await?,
        "forced_open"
    );
    let breakers: Value = client
        .get(api.url("/admin/circuit-breakers"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    assert!(
        breakers
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b["name"] == STORE_BREAKER && b["state"] == "forced_open"),
        "{breakers}"
    );

    // Every page of the listing is a 200 that says it is degraded, and together they hold
    // exactly what memory and the cache have: the memtable, then s-00's block.
    let (pages, records) = every_page(&client, &api, "archive").await?;
    for page in &pages {
        assert_eq!(
            (
                &page["degraded"],
                &page["unavailable_sources"],
                &page["partial_results"]
            ),
            (&json!(true), &json!(["object_store"]), &json!(true)),
            "{page}"
        );
    }
    let cached = records
        .iter()
        .filter(|(id, _)| id.starts_with("s-"))
        .count();
    assert!(
        (1..STORED).contains(&cached),
        "the cache holds s-00's block and not every block: {records:?}"
    );
    assert_eq!(records, expected_listing(3, cached));

    // A read that needs the store is a 503 problem with the same fields, never a false 404.
    let last = format!("s-{:02}", STORED - 1);
    let unavailable = get(&last)
        .header("x-request-id", "degraded-read-1")
        .send()
        .await?;
    assert_eq!(unavailable.status(), 503);
    assert_eq!(
        unavailable.headers()["content-type"],
        "application/problem+json"
    );
    assert!(unavailable.headers().contains_key("retry-after"));
    let problem: Value = unavailable.json().await?;
    assert_eq!(
        (
            &problem["status"],
            &problem["degraded"],
            &problem["unavailable_sources"],
            &problem["partial_results"],
            &problem["request_id"]
        ),
        (
            &json!(503),
            &json!(true),
            &json!(["object_store"]),
            &json!(true),
            &json!("degraded-read-1")
        ),
        "{problem}"
    );
    // What memory and the cache hold is still read.
    for (id, value) in [("s-00", stored_value(0)), ("m-01", "memory-1".to_owned())] {
        let got = get(id).send().await?;
        assert_eq!(got.status(), 200, "{id}");
        assert_eq!(got.text().await?, value);
    }
    // Writes are acknowledged.
    assert_eq!(put("m-03", "memory-3".into()).send().await?.status(), 204);
    assert_eq!(get("m-03").send().await?.text().await?, "memory-3");

    // Closed again, the listing is complete and not degraded.
    assert_eq!(store_breaker(&client, &api, "reset").await?, "closed");
    let (pages, records) = every_page(&client, &api, "archive").await?;
    for page in &pages {
        assert_eq!(
            (
                &page["degraded"],
                &page["unavailable_sources"],
                &page["partial_results"]
            ),
            (&json!(false), &json!([]), &json!(false)),
            "{page}"
        );
    }
    assert_eq!(records, expected_listing(4, STORED));
    let got = get(&last).send().await?;
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await?, stored_value(STORED - 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_breaker_open_writes_succeed_until_the_backlog_bound() -> anyhow::Result<()>
{
    const MEMTABLE_BYTES: usize = 2048;
    const MAX_BACKLOG_BYTES: usize = 8192;
    let data = tempfile::tempdir()?;
    let api = with_admin(&data.path().to_string_lossy())
        .env(
            "MAINSTAY_STORAGE__MEMTABLE_BYTES",
            &MEMTABLE_BYTES.to_string(),
        )
        .env(
            "MAINSTAY_STORAGE__UPLOAD__MAX_BACKLOG_BYTES",
            &MAX_BACKLOG_BYTES.to_string(),
        )
        .env("MAINSTAY_STORAGE__UPLOAD__BREAKER_POLL_INTERVAL", "50ms")
        .start()?;
    let client = reqwest::Client::new();
    create_as_acme(&client, &api, "inbox", "s3_only").await?;
    let put = |id: &str| {
        client
            .put(api.url(&format!("/v1/collections/inbox/records/{id}")))
            .bearer_auth("acme-key")
            .body(vec![b'v'; 64])
            .send()
    };
    assert_eq!(
        store_breaker(&client, &api, "force-open").await?,
        "forced_open"
    );

    // Nothing is uploaded while the breaker is open: writes are acknowledged until the backlog
    // passes its bound, then refused with 503 and Retry-After, never dropped.
    let mut accepted = Vec::new();
    let mut refused = None;
    for index in 0..1000 {
        let id = format!("w-{index:04}");
        let response = put(&id).await?;
        match response.status().as_u16() {
            204 => accepted.push(id),
            503 => {
                refused = Some(response);
                break;
            }
            other => anyhow::bail!("writing {id}: {other}"),
        }
    }
    let refused = refused.context("the backlog bound never refused a write")?;
    assert!(
        accepted.len() * 64 > MEMTABLE_BYTES,
        "writes go on past a full memtable: {} accepted",
        accepted.len()
    );
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await?;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(&format!("limit of {MAX_BACKLOG_BYTES} bytes"))),
        "{problem}"
    );

    // Closed again, the backlog uploads and writes are acknowledged again.
    assert_eq!(store_breaker(&client, &api, "reset").await?, "closed");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = put("after-reset").await?.status();
        if status == 204 {
            break;
        }
        assert_eq!(status, 503);
        anyhow::ensure!(
            Instant::now() < deadline,
            "writes were still refused 20 s after the breaker closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    accepted.push("after-reset".to_owned());
    accepted.sort();
    let (pages, records) = every_page(&client, &api, "inbox").await?;
    assert!(
        pages.iter().all(|page| page["degraded"] == false),
        "{pages:?}"
    );
    let ids: Vec<&str> = records.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, accepted, "every acknowledged write, nothing else");
    Ok(())
}
