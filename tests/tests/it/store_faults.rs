//! The record store under faults, through the binary: compaction across restarts keeps the newest
//! version (issue 12, point 1), a failed catalog write leaves no collection behind (point 3), and
//! a writer fenced by another instance on its prefix refuses writes, turns unready and hands its
//! stranded records over (point 5).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mainstay_tests::metrics::{sample, scrape};
use mainstay_tests::{Api, ApiBuilder, sha256_hex};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token-for-store-faults-0123";

/// The store's name of the anonymous (`public`) organisation's collection `name`.
fn store_name(name: &str) -> String {
    format!("{}-{name}", &sha256_hex("public")[..12])
}

/// A service on `data_dir` with the admin API on and no rate limit.
fn service(data_dir: &Path) -> ApiBuilder {
    Api::builder()
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir.to_string_lossy())
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
}

async fn stop(mut api: Api) -> anyhow::Result<()> {
    api.terminate()?;
    let status = api.wait_exit(Duration::from_secs(20))?;
    anyhow::ensure!(status.success(), "mainstay-api exited with {status}");
    Ok(())
}

async fn create(
    client: &reqwest::Client,
    api: &Api,
    name: &str,
    policy: &str,
) -> anyhow::Result<reqwest::Response> {
    Ok(client
        .post(api.url("/v1/collections"))
        .json(&json!({ "name": name, "policy": policy }))
        .send()
        .await?)
}

async fn put(
    client: &reqwest::Client,
    api: &Api,
    collection: &str,
    id: &str,
    value: impl Into<reqwest::Body>,
) -> anyhow::Result<reqwest::Response> {
    Ok(client
        .put(api.url(&format!("/v1/collections/{collection}/records/{id}")))
        .body(value)
        .send()
        .await?)
}

/// The status and body of `GET` of one record.
async fn get(
    client: &reqwest::Client,
    api: &Api,
    collection: &str,
    id: &str,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let response = client
        .get(api.url(&format!("/v1/collections/{collection}/records/{id}")))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.bytes().await?.to_vec()))
}

/// Polls `/metrics` until `done` holds for the text, for at most `timeout`.
async fn wait_for_metrics(
    client: &reqwest::Client,
    api: &Api,
    timeout: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = scrape(client, api).await?;
        if done(&text) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} not seen within {timeout:?}; metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 12, point 1: after restarts that leave `k=v1` in an older segment and `k=v2` in a newer
/// one, compaction must keep `v2`, and a read must agree with the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_across_restarts_keeps_the_newest_version() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let memory_store = || {
        service(data.path())
            .env("MAINSTAY_STORAGE__MEMTABLE_BYTES", "65536")
            .env("MAINSTAY_STORAGE__COMPACTION__MIN_SEGMENTS", "2")
            .env("MAINSTAY_STORAGE__COMPACTION__INTERVAL", "100ms")
    };
    let client = reqwest::Client::new();

    let api = memory_store().start()?;
    assert_eq!(create(&client, &api, "kv", "memory").await?.status(), 201);
    assert_eq!(put(&client, &api, "kv", "k", "v1").await?.status(), 204);
    stop(api).await?;

    let api = memory_store().start()?;
    assert_eq!(put(&client, &api, "kv", "k", "v2").await?.status(), 204);
    // Values that do not compress, so that segment sizes (and size tiers) follow the records.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for index in 0..200 {
        let value: Vec<u8> = (0..1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()[0]
            })
            .collect();
        let id = format!("r-{index:03}");
        assert_eq!(put(&client, &api, "kv", &id, value).await?.status(), 204);
    }
    stop(api).await?;

    let api = memory_store().start()?;
    assert_eq!(put(&client, &api, "kv", "x", "x").await?.status(), 204);
    stop(api).await?;

    let api = memory_store().start()?;
    assert_eq!(put(&client, &api, "kv", "y", "y").await?.status(), 204);
    stop(api).await?;

    let api = memory_store().start()?;
    // Background compaction (every 100 ms) finds small segments of one size tier: `k=v1`'s,
    // `x`'s and `y`'s, with the segments holding `k=v2` between the first and the others in LSN
    // order. Only `x`'s and `y`'s are neighbours; merging `k=v1`'s with them (as it once did)
    // makes the read find `v1` first. Either way this run compacts something, so the wait ends.
    wait_for_metrics(
        &client,
        &api,
        Duration::from_secs(10),
        "a successful compaction",
        |text| {
            sample(text, "storage_compactions_total", &[("outcome", "success")])
                .is_some_and(|count| count >= 1.0)
        },
    )
    .await?;

    let (status, value) = get(&client, &api, "kv", "k").await?;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&value),
        "v2",
        "the newest acknowledged version of k"
    );
    let listing: Value = client
        .get(api.url("/v1/collections/kv/records?prefix=k&limit=10"))
        .send()
        .await?
        .json()
        .await?;
    let listed: Vec<(&str, &str)> = listing["records"]
        .as_array()
        .context("records")?
        .iter()
        .map(|record| {
            (
                record["id"].as_str().unwrap_or_default(),
                record["value_base64"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    // "v2" in base64.
    assert_eq!(
        listed,
        vec![("k", "djI=")],
        "the listing agrees with the read"
    );
    stop(api).await
}

/// Issue 12, point 3: a collection whose catalog write failed is refused (503) and leaves no
/// trace, neither in memory nor after a restart; once the catalog can be written, it is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_whose_catalog_write_failed_leaves_no_trace() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let client = reqwest::Client::new();
    let api = service(data.path()).start()?;
    // The catalog is replaced through `catalog.json.tmp`: a directory there makes the write fail.
    let blocker = data.path().join("catalog.json.tmp");
    std::fs::create_dir(&blocker)?;

    let refused = create(&client, &api, "ghost", "memory").await?;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("application/problem+json")
    );
    let written = put(&client, &api, "ghost", "r", "lost?").await?;
    assert_eq!(
        written.status(),
        404,
        "a write to a collection that was never created must not be acknowledged"
    );
    let listed: Value = client
        .get(api.url("/v1/collections"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["collections"], json!([]));

    std::fs::remove_dir(&blocker)?;
    stop(api).await?;
    let api = service(data.path()).start()?;
    assert_eq!(get(&client, &api, "ghost", "r").await?.0, 404);
    let listed: Value = client
        .get(api.url("/v1/collections"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["collections"], json!([]), "nothing came back");

    assert_eq!(
        create(&client, &api, "ghost", "memory").await?.status(),
        201
    );
    assert_eq!(
        put(&client, &api, "ghost", "r", "kept").await?.status(),
        204
    );
    stop(api).await?;
    let api = service(data.path()).start()?;
    assert_eq!(
        get(&client, &api, "ghost", "r").await?,
        (200, b"kept".to_vec())
    );
    stop(api).await
}

/// One of two instances on one object-store prefix.
fn writer(data_dir: &Path, objects: &Path) -> ApiBuilder {
    service(data_dir)
        .config_toml("[health.checks.storage-writer]\ntimeout = \"1s\"\n")
        .env(
            "MAINSTAY_STORAGE__OBJECT_STORE_URL",
            &format!("file://{}", objects.display()),
        )
        .env("MAINSTAY_STORAGE__MEMTABLE_BYTES", "4096")
        .env("MAINSTAY_STORAGE__COMPACTION__ENABLED", "false")
        .env("MAINSTAY_STORAGE__COMPACTION__COLLECT_ORPHANS", "false")
}

/// Issue 12, point 5: a second instance on the prefix fences the first; the first refuses
/// writes with 503 `/fenced`, turns unready with the `storage-writer` reason and says so once;
/// its acknowledged records that never reached the object store are handed to the second,
/// which keeps what it wrote itself since it took over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_writer_refuses_writes_and_hands_its_records_over() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (dir_a, dir_b, objects) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("objects"),
    );
    std::fs::create_dir_all(&objects)?;
    let client = reqwest::Client::new();
    let big = vec![b'z'; 5000];

    // A writes and commits a first version of two records.
    let mut first = writer(&dir_a, &objects).start()?;
    assert_eq!(
        create(&client, &first, "hot", "memory_s3").await?.status(),
        201
    );
    assert_eq!(
        create(&client, &first, "local", "memory").await?.status(),
        201
    );
    for (id, value) in [("k-old", "a1"), ("k-both", "a1")] {
        assert_eq!(put(&client, &first, "hot", id, value).await?.status(), 204);
    }
    assert_eq!(
        put(&client, &first, "hot", "seed", big.clone())
            .await?
            .status(),
        204
    );
    wait_for_metrics(
        &client,
        &first,
        Duration::from_secs(15),
        "the first segment committed",
        |text| {
            sample(
                text,
                "storage_upload_attempts_total",
                &[("outcome", "success")],
            )
            .is_some_and(|count| count >= 1.0)
                && sample(text, "storage_backlog_bytes", &[]) == Some(0.0)
        },
    )
    .await?;
    // Then acknowledges records it will never upload.
    for (collection, id) in [("hot", "k-both"), ("hot", "k-new"), ("local", "m1")] {
        assert_eq!(
            put(&client, &first, collection, id, "a2").await?.status(),
            204
        );
    }

    // B opens on the prefix: it claims it, and writes one of A's ids itself.
    let second = writer(&dir_b, &objects).start()?;
    assert_eq!(
        get(&client, &second, "hot", "k-both").await?,
        (200, b"a1".to_vec())
    );
    assert_eq!(
        put(&client, &second, "hot", "k-new", "b").await?.status(),
        204
    );

    // A's next upload finds the newer manifest.
    assert_eq!(
        put(&client, &first, "hot", "big", big.clone())
            .await?
            .status(),
        204
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let ready = loop {
        let ready = client.get(first.url("/health/ready")).send().await?;
        if ready.status() == 503 {
            break ready.json::<Value>().await?;
        }
        anyhow::ensure!(Instant::now() < deadline, "the fenced writer stayed ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready["checks"]["storage-writer"]["status"], "unhealthy");
    assert_eq!(ready["checks"]["storage-writer"]["critical"], true);
    let admin: Value = client
        .get(first.url("/admin/health"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let reason = admin["checks"]["storage-writer"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.starts_with("fenced by another writer (manifest v"),
        "{admin}"
    );

    for attempt in 0..2 {
        let request_id = format!("fenced-write-{attempt}");
        let refused = client
            .put(first.url("/v1/collections/hot/records/k-late"))
            .header("x-request-id", &request_id)
            .body("late")
            .send()
            .await?;
        assert_eq!(refused.status(), 503);
        let header = |name: &str| {
            refused
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/problem+json")
        );
        assert_eq!(header("retry-after").as_deref(), Some("5"));
        let problem: Value = refused.json().await?;
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|kind| kind.ends_with("/fenced")),
            "{problem}"
        );
        assert_eq!(problem["status"], 503);
        assert_eq!(problem["request_id"], request_id.as_str());
    }
    assert_eq!(get(&client, &first, "hot", "k-late").await?.0, 404);
    let metrics = scrape(&client, &first).await?;
    assert_eq!(sample(&metrics, "storage_fenced", &[]), Some(1.0));
    assert_eq!(sample(&metrics, "storage_wal_failed", &[]), Some(0.0));
    assert_eq!(sample(&metrics, "dlq_journal_failed", &[]), Some(0.0));
    let is_fenced_line = |line: &Value| {
        line["msg"]
            .as_str()
            .is_some_and(|msg| msg.contains("this instance is fenced"))
    };
    first.wait_for_log(Duration::from_secs(5), is_fenced_line)?;
    let fenced_lines = first
        .json_lines()
        .iter()
        .filter(|line| is_fenced_line(line))
        .count();
    assert_eq!(
        fenced_lines, 1,
        "one error line for the state, not one per write"
    );

    // A handover needs A stopped.
    let locked = client
        .post(second.url("/admin/store/handover"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "data_dir": dir_a }))
        .send()
        .await?;
    assert_eq!(locked.status(), 409);
    first.terminate()?;
    first.wait_exit(Duration::from_secs(20))?;

    let handed = client
        .post(second.url("/admin/store/handover"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "data_dir": dir_a }))
        .send()
        .await?;
    assert_eq!(handed.status(), 200);
    let outcome: Value = handed.json().await?;
    let collection = |name: &str| {
        outcome["collections"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["collection"] == store_name(name).as_str())
            .cloned()
            .unwrap_or(Value::Null)
    };
    let hot = collection("hot");
    assert_eq!(hot["created"], false, "{outcome}");
    assert_eq!(hot["applied"], 2, "k-both and big: {outcome}");
    assert_eq!(hot["skipped_ids"], json!(["k-new"]), "{outcome}");
    let local = collection("local");
    assert_eq!(local["created"], true, "{outcome}");
    assert_eq!(local["applied"], 1, "{outcome}");

    assert_eq!(
        get(&client, &second, "hot", "k-both").await?,
        (200, b"a2".to_vec())
    );
    assert_eq!(
        get(&client, &second, "hot", "k-new").await?,
        (200, b"b".to_vec())
    );
    assert_eq!(
        get(&client, &second, "hot", "k-old").await?,
        (200, b"a1".to_vec())
    );
    assert_eq!(get(&client, &second, "hot", "big").await?, (200, big));
    assert_eq!(
        get(&client, &second, "local", "m1").await?,
        (200, b"a2".to_vec())
    );
    assert_eq!(get(&client, &second, "hot", "k-late").await?.0, 404);

    // A's WAL and segments were moved aside; a second handover finds nothing to do.
    assert!(!dir_a.join("wal").exists());
    let moved_to = outcome["moved_to"].as_str().unwrap_or_default();
    assert!(Path::new(moved_to).join("wal").is_dir(), "{outcome}");
    let again: Value = client
        .post(second.url("/admin/store/handover"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "data_dir": dir_a }))
        .send()
        .await?
        .json()
        .await?;
    for entry in again["collections"].as_array().context("collections")? {
        assert_eq!(entry["applied"], 0, "{again}");
    }
    stop(second).await
}
