//! Tenant export and provable erasure through the binary (issue 18, points 5 and 6).
//!
//! The erasure test writes a unique marker as record ids and values of one organisation (in
//! memory and object-store collections, some flushed and uploaded, some only in the WAL, an
//! idempotent batch, a dead-letter entry, one evicted into the DLQ archive), erases it with
//! `?purge=now`, and scans every byte under the data directory (the default `file://` object
//! store is inside it) for the marker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use mainstay_tests::{Api, ApiBuilder, sha256_hex};
use serde_json::Value;

const ADMIN_TOKEN: &str = "admin-token-for-tenant-tests-0123456789";
const ACME_KEY: &str = "acme-key-for-tenant-tests";
const OTHER_KEY: &str = "other-key-for-tenant-tests";
/// What the erased organisation writes: in ids and values, nowhere else.
const MARKER: &str = "zq7MARKERx9k2erase";
const KEEP: &str = "kept-by-the-other-organisation";

fn service(data_dir: &Path) -> ApiBuilder {
    let config = format!(
        "[[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"acme\"\n\
         [[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"other\"\n",
        sha256_hex(ACME_KEY),
        sha256_hex(OTHER_KEY)
    );
    Api::builder()
        .config_toml(&config)
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir.to_string_lossy())
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
        .env("MAINSTAY_AUTH__ALLOW_ANONYMOUS", "false")
        .env("MAINSTAY_STORAGE__MEMTABLE_BYTES", "4096")
}

async fn create(client: &reqwest::Client, api: &Api, key: &str, name: &str, policy: &str) {
    let response = client
        .post(api.url("/v1/collections"))
        .bearer_auth(key)
        .json(&serde_json::json!({"name": name, "policy": policy}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
}

async fn put_batch(
    client: &reqwest::Client,
    api: &Api,
    key: &str,
    collection: &str,
    records: &[(String, String)],
    idempotency_key: Option<&str>,
) {
    let body: Vec<Value> = records
        .iter()
        .map(|(id, value)| {
            serde_json::json!({
                "id": id,
                "value_base64": base64::engine::general_purpose::STANDARD.encode(value),
            })
        })
        .collect();
    let mut request = client
        .post(api.url(&format!("/v1/collections/{collection}/records")))
        .bearer_auth(key)
        .json(&serde_json::json!({ "records": body }));
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Every file under `dir` that holds `needle`, with the number of hits.
fn scan(dir: &Path, needle: &[u8]) -> Vec<(PathBuf, usize)> {
    let mut hits = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let count = bytes
                    .windows(needle.len())
                    .filter(|window| *window == needle)
                    .count();
                if count > 0 {
                    hits.push((path, count));
                }
            }
        }
    }
    hits
}

/// Whether a segment object of the collection `name` (store name) is in the object store.
fn uploaded(data_dir: &Path, name: &str) -> bool {
    std::fs::read_dir(data_dir.join("objects/segments").join(name))
        .map(|entries| entries.flatten().next().is_some())
        .unwrap_or(false)
}

async fn status_and_body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// `DELETE /admin/organisations/acme?purge=now`, which must answer 200: its erasure record.
async fn erase_acme(client: &reqwest::Client, api: &Api) -> Value {
    let response = client
        .delete(api.url("/admin/organisations/acme?purge=now"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let (status, record) = status_and_body(response).await;
    assert_eq!(status, 200, "{record}");
    record
}

/// `POST /admin/backups` with `body`, which must answer 201.
async fn take_backup(client: &reqwest::Client, api: &Api, body: Value) {
    let backup = client
        .post(api.url("/admin/backups"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(backup.status(), 201, "{}", backup.text().await.unwrap());
}

/// `backup restore <backups> --data-dir <target>` run as `service`, which must succeed: what it
/// printed.
fn restore_backup(service: ApiBuilder, backups: &Path, target: &Path) -> String {
    let (status, stdout, stderr) = service
        .args(&[
            "backup",
            "restore",
            &backups.display().to_string(),
            "--data-dir",
            &target.display().to_string(),
        ])
        .run()
        .unwrap();
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    stdout
}

async fn assert_erased_key_refused(client: &reqwest::Client, api: &Api) {
    let response = client
        .get(api.url("/v1/collections"))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let (_, problem) = status_and_body(response).await;
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|kind| kind.ends_with("/organisation-erased")),
        "{problem}"
    );
    assert_eq!(problem["title"], "organisation erased");
}

async fn assert_other_intact(client: &reqwest::Client, api: &Api) {
    for n in 0..30 {
        let response = client
            .get(api.url(&format!("/v1/collections/orders/records/keep-{n:03}")))
            .bearer_auth(OTHER_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "record keep-{n:03}");
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            format!("{KEEP} {n:03} {}", "o".repeat(200)).as_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_organisation_leaves_no_byte_in_any_tier_and_its_keys_get_403() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let tag = &sha256_hex("acme")[..12];
    let other_tag = &sha256_hex("other")[..12];
    // A dead-letter entry of one of the organisation's collections, as a failed delivery of
    // its records would leave it, and one evicted before into the DLQ archive; the other
    // organisation's evicted entry stays there.
    {
        let one_each = mainstay_dlq::QueueConfig {
            capacity: 1,
            ..mainstay_dlq::QueueConfig::default()
        };
        let config = mainstay_dlq::DlqConfig {
            queues: [
                ("deliveries".to_owned(), one_each.clone()),
                ("other-deliveries".to_owned(), one_each),
            ]
            .into(),
            ..mainstay_dlq::DlqConfig::default()
        };
        let dlq = mainstay_dlq::Dlq::open(data_dir.join("dlq"), config)
            .await
            .unwrap();
        for (queue, key, payload) in [
            (
                "deliveries",
                format!("{tag}-orders/{MARKER}-archived"),
                MARKER,
            ),
            ("deliveries", format!("{tag}-orders/{MARKER}-dlq"), MARKER),
            (
                "other-deliveries",
                format!("{other_tag}-orders/{KEEP}-archived"),
                KEEP,
            ),
            (
                "other-deliveries",
                format!("{other_tag}-orders/{KEEP}-dlq"),
                KEEP,
            ),
        ] {
            dlq.push(mainstay_dlq::NewEntry::inline(
                queue,
                key,
                format!("payload {payload}").into_bytes(),
                mainstay_dlq::FailureClass::Permanent,
                "delivery failed",
            ))
            .await
            .unwrap();
        }
        dlq.close().await.unwrap();
    }
    let archive = data_dir.join("dlq/archive.jsonl");
    let api = service(&data_dir).start().unwrap();
    let client = reqwest::Client::new();
    create(&client, &api, ACME_KEY, "orders", "memory_s3").await;
    create(&client, &api, ACME_KEY, "notes", "memory").await;
    create(&client, &api, OTHER_KEY, "orders", "memory_s3").await;
    let value = |n: usize| format!("{MARKER} value {n:03} {}", "v".repeat(200));
    // Over the 4 KiB memtable: flushed into segments, the object-store ones uploaded.
    let flushed: Vec<(String, String)> = (0..40)
        .map(|n| (format!("{MARKER}-{n:03}"), value(n)))
        .collect();
    put_batch(&client, &api, ACME_KEY, "orders", &flushed, Some("batch-1")).await;
    put_batch(&client, &api, ACME_KEY, "notes", &flushed, None).await;
    let kept: Vec<(String, String)> = (0..30)
        .map(|n| {
            (
                format!("keep-{n:03}"),
                format!("{KEEP} {n:03} {}", "o".repeat(200)),
            )
        })
        .collect();
    put_batch(&client, &api, OTHER_KEY, "orders", &kept, None).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !uploaded(&data_dir, &format!("{tag}-orders")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the flushed segment was never uploaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more, under the memtable bound: only in the WAL and memory.
    let recent: Vec<(String, String)> = (100..103)
        .map(|n| (format!("{MARKER}-{n:03}"), value(n)))
        .collect();
    put_batch(&client, &api, ACME_KEY, "orders", &recent, Some("batch-2")).await;
    put_batch(&client, &api, ACME_KEY, "notes", &recent, None).await;
    let before = scan(&data_dir, MARKER.as_bytes());
    assert!(
        before
            .iter()
            .any(|(path, _)| path.starts_with(data_dir.join("objects"))),
        "the scan finds the marker in the object store before the erasure: {before:?}"
    );
    assert!(
        before
            .iter()
            .any(|(path, _)| path.starts_with(data_dir.join("wal"))),
        "and in the WAL: {before:?}"
    );
    assert!(
        before.iter().any(|(path, _)| *path == archive),
        "and in the DLQ archive: {before:?}"
    );

    let record = erase_acme(&client, &api).await;
    assert_eq!(record["state"], "complete", "{record}");
    assert_eq!(record["org_hash"], sha256_hex("acme"));
    let hits = scan(&data_dir, MARKER.as_bytes());
    assert!(hits.is_empty(), "the marker is left in {hits:?}");
    assert!(
        record["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|step| step["tier"] == "dlq_archive" && step["done"] == true),
        "{record}"
    );
    let archived = std::fs::read_to_string(&archive).unwrap();
    assert!(
        archived.contains(&format!("{other_tag}-orders/{KEEP}-archived")),
        "the other organisation's archived entry stays: {archived}"
    );
    assert_erased_key_refused(&client, &api).await;
    assert_other_intact(&client, &api).await;
    assert!(
        api.lines()
            .iter()
            .any(|line| line.contains("erasure requested"))
    );
    assert!(
        api.lines()
            .iter()
            .any(|line| line.contains("erasure complete"))
    );

    // A restart: still erased, still refused, nothing replayed from the WAL.
    drop(api);
    let api = service(&data_dir).start().unwrap();
    let hits = scan(&data_dir, MARKER.as_bytes());
    assert!(
        hits.is_empty(),
        "the marker is back after a restart in {hits:?}"
    );
    assert_erased_key_refused(&client, &api).await;
    assert_other_intact(&client, &api).await;
    let response = client
        .get(api.url("/admin/organisations/acme/erasure"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let (status, record) = status_and_body(response).await;
    assert_eq!(status, 200);
    assert_eq!(record["state"], "complete");
    let response = client
        .get(api.url("/admin/organisations/never-erased/erasure"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let listed: Value = client
        .get(api.url("/admin/dlq?queue=deliveries"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["entries"], serde_json::json!([]), "{listed}");
}

/// An export of `acme` as the admin, checked line by line and against its summary
/// ([`crate::export_outage::export_as`]).
async fn export(client: &reqwest::Client, api: &Api, cursor: Option<&str>) -> (Vec<Value>, Value) {
    crate::export_outage::export_as(client, api, ADMIN_TOKEN, cursor).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_streams_every_record_once_with_a_checksum_and_resumes_from_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let api = service(&data_dir)
        .env("MAINSTAY_STORAGE__MEMTABLE_BYTES", "1048576")
        .start()
        .unwrap();
    let client = reqwest::Client::new();
    let collections = ["alpha", "beta", "gamma"];
    let mut expected = Vec::new();
    for (index, name) in collections.iter().enumerate() {
        let policy = if index == 1 { "memory" } else { "memory_s3" };
        create(&client, &api, ACME_KEY, name, policy).await;
        for batch in 0..3 {
            let records: Vec<(String, String)> = (0..400)
                .map(|n| {
                    let id = format!("r{:05}", batch * 400 + n);
                    (id.clone(), format!("{name}/{id}"))
                })
                .collect();
            expected.extend(records.iter().map(|(id, _)| (name.to_string(), id.clone())));
            put_batch(&client, &api, ACME_KEY, name, &records, None).await;
        }
    }
    create(&client, &api, OTHER_KEY, "alpha", "memory").await;
    put_batch(
        &client,
        &api,
        OTHER_KEY,
        "alpha",
        &[("x".into(), "not acme".into())],
        None,
    )
    .await;

    let (lines, last) = export(&client, &api, None).await;
    assert_eq!(last["collections"], 3);
    assert_eq!(last["records"], 3600);
    assert_eq!(last["complete"], true);
    assert!(last["resumed_from"].is_null());
    let records: Vec<&Value> = lines
        .iter()
        .filter(|line| line["type"] == "record")
        .collect();
    let exported: Vec<(String, String)> = records
        .iter()
        .map(|line| {
            let value = base64::engine::general_purpose::STANDARD
                .decode(line["value_b64"].as_str().unwrap())
                .unwrap();
            let collection = line["collection"].as_str().unwrap().to_owned();
            let id = line["id"].as_str().unwrap().to_owned();
            assert_eq!(value, format!("{collection}/{id}").into_bytes());
            (collection, id)
        })
        .collect();
    assert_eq!(exported, expected);
    let headers: Vec<&Value> = lines.iter().filter(|l| l["type"] == "collection").collect();
    assert_eq!(headers.len(), 3);
    assert_eq!(headers[1]["policy"], "memory");

    // The connection is lost after record 1,700: the rest, exactly once.
    let cut = 1700;
    let cursor = records[cut]["cursor"].as_str().unwrap();
    let (resumed, last) = export(&client, &api, Some(cursor)).await;
    assert_eq!(last["resumed_from"], cursor);
    assert_eq!(last["records"], 3600 - (cut as u64 + 1));
    assert_eq!(
        last["collections"], 1,
        "only the collection not started yet has a header"
    );
    let rest: Vec<(String, String)> = resumed
        .iter()
        .filter(|line| line["type"] == "record")
        .map(|line| {
            (
                line["collection"].as_str().unwrap().to_owned(),
                line["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut whole = exported[..=cut].to_vec();
    whole.extend(rest);
    assert_eq!(
        whole, expected,
        "the first part and the resumed part are the whole, once"
    );

    // A cursor this service did not hand out is refused.
    let response = client
        .get(api.url("/admin/organisations/acme/export?cursor=bm90LWEtY3Vyc29y"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

/// The proof of issue 18, point 6, across backups: with `storage.encryption` on (and no
/// compression, the default), a backup taken before the erasure holds no readable value of the
/// erased organisation (values are sealed with its data key, which the erasure destroyed); a
/// restore with the erasure ledger carried over (as the disaster-recovery procedure does)
/// leaves its collections out, so not even its record ids come back; and a restore without the
/// ledger brings back only sealed values that answer 403 `organisation-erased`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_before_an_erasure_restores_nothing_readable_of_the_organisation() {
    const ID_MARKER: &str = "idQ4markerZ7";
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let backups = dir.path().join("backups");
    let keys_url = format!("file://{}", dir.path().join("keys").display());
    let master_key = "7".repeat(64);
    let encrypted = |data_dir: &Path| {
        service(data_dir)
            .env("MAINSTAY_STORAGE__ENCRYPTION", "true")
            .env("MAINSTAY_STORAGE__MASTER_KEY", &master_key)
            .env("MAINSTAY_STORAGE__KEYS_URL", &keys_url)
    };
    let api = encrypted(&data_dir).start().unwrap();
    let client = reqwest::Client::new();
    create(&client, &api, ACME_KEY, "orders", "memory_s3").await;
    create(&client, &api, ACME_KEY, "notes", "memory").await;
    create(&client, &api, OTHER_KEY, "orders", "memory_s3").await;
    let records: Vec<(String, String)> = (0..40)
        .map(|n| {
            (
                format!("{ID_MARKER}-{n:03}"),
                format!("{MARKER} {n:03} {}", "v".repeat(200)),
            )
        })
        .collect();
    put_batch(&client, &api, ACME_KEY, "orders", &records, None).await;
    put_batch(&client, &api, ACME_KEY, "notes", &records, None).await;
    let kept: Vec<(String, String)> = (0..30)
        .map(|n| {
            (
                format!("keep-{n:03}"),
                format!("{KEEP} {n:03} {}", "o".repeat(200)),
            )
        })
        .collect();
    put_batch(&client, &api, OTHER_KEY, "orders", &kept, None).await;
    // Sealed from the start: the marker is nowhere in plain text, though the ids are.
    assert!(scan(&data_dir, MARKER.as_bytes()).is_empty());
    assert!(!scan(&data_dir, ID_MARKER.as_bytes()).is_empty());

    take_backup(
        &client,
        &api,
        serde_json::json!({ "to": backups.display().to_string() }),
    )
    .await;
    let record = erase_acme(&client, &api).await;
    assert!(
        record["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|step| step["tier"] == "keys" && step["done"] == true),
        "{record}"
    );
    for marker in [MARKER, ID_MARKER] {
        let hits = scan(&data_dir, marker.as_bytes());
        assert!(hits.is_empty(), "{marker} is left in {hits:?}");
    }
    // The backup still holds the records, sealed: no value in plain text (ids are not sealed).
    assert!(scan(&backups, MARKER.as_bytes()).is_empty());
    drop(api);

    // Without the ledger (first: a restore that reads the ledger also copies it into the backup
    // root, decision 0121): the records come back sealed, and do not open.
    let bare = dir.path().join("bare");
    restore_backup(encrypted(&bare), &backups, &bare);
    assert!(scan(&bare, MARKER.as_bytes()).is_empty());
    let api = encrypted(&bare).start().unwrap();
    let response = client
        .get(api.url(&format!("/v1/collections/orders/records/{ID_MARKER}-001")))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    let (status, problem) = status_and_body(response).await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|kind| kind.ends_with("/organisation-erased")),
        "{problem}"
    );
    assert_other_intact(&client, &api).await;
    drop(api);

    // With the ledger carried over to the new object store: the organisation is left out.
    let carried = dir.path().join("carried");
    let ledger = data_dir.join("objects/_erasure/ledger");
    let copy = carried.join("objects/_erasure/ledger");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&ledger).unwrap().flatten() {
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    // The ledger's scratch copy lives outside the target, which must look empty but for it.
    std::fs::rename(carried.join("objects"), dir.path().join("carried-objects")).unwrap();
    let carried_objects = dir.path().join("carried-objects");
    let stdout = restore_backup(
        encrypted(&carried).env(
            "MAINSTAY_STORAGE__OBJECT_STORE_URL",
            &format!("file://{}", carried_objects.display()),
        ),
        &backups,
        &carried,
    );
    assert!(stdout.contains("excluded_collections=2"), "{stdout}");
    for place in [&carried, &carried_objects] {
        for marker in [MARKER, ID_MARKER] {
            let hits = scan(place, marker.as_bytes());
            assert!(hits.is_empty(), "{marker} restored into {hits:?}");
        }
    }
}

/// Decision 0121: with `backup.url` set, the erasure ledger is kept in the backup root too, so a
/// restore after the store's prefix is lost (here the data directory with the embedded object
/// store under it) still leaves the erased organisation out. Without encryption a restored
/// record would be plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_after_the_object_store_is_lost_reads_the_erasure_ledger_from_the_backup_root() {
    const ID_MARKER: &str = "idR8markerW3";
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let backups = dir.path().join("backups");
    let with_backups = |data_dir: &Path| {
        service(data_dir).env("MAINSTAY_BACKUP__URL", &backups.display().to_string())
    };
    let api = with_backups(&data_dir).start().unwrap();
    let client = reqwest::Client::new();
    create(&client, &api, ACME_KEY, "orders", "memory_s3").await;
    create(&client, &api, OTHER_KEY, "orders", "memory_s3").await;
    let records: Vec<(String, String)> = (0..20)
        .map(|n| (format!("{ID_MARKER}-{n:03}"), format!("{MARKER} {n:03}")))
        .collect();
    put_batch(&client, &api, ACME_KEY, "orders", &records, None).await;
    let kept = vec![("keep-000".to_owned(), format!("{KEEP} 000"))];
    put_batch(&client, &api, OTHER_KEY, "orders", &kept, None).await;
    take_backup(&client, &api, serde_json::json!({})).await;
    assert!(
        !scan(&backups, MARKER.as_bytes()).is_empty(),
        "the backup holds the records"
    );
    erase_acme(&client, &api).await;
    drop(api);
    // The disaster: the data directory and the object store under it are gone.
    std::fs::remove_dir_all(&data_dir).unwrap();

    let restored = dir.path().join("restored");
    let stdout = restore_backup(with_backups(&restored), &backups, &restored);
    assert!(stdout.contains("excluded_collections=1"), "{stdout}");
    for marker in [MARKER, ID_MARKER] {
        let hits = scan(&restored, marker.as_bytes());
        assert!(hits.is_empty(), "{marker} restored into {hits:?}");
    }
    let api = with_backups(&restored).start().unwrap();
    let kept = client
        .get(api.url("/v1/collections/orders/records/keep-000"))
        .bearer_auth(OTHER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200);
    assert_eq!(kept.text().await.unwrap(), format!("{KEEP} 000"));
}
