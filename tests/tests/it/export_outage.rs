//! An organisation export while the object store is down (issue 18, point 5): the export
//! streams what the service can read (collections on local disk) and ends with a summary
//! `"complete": false` that names the unavailable source and the cursor to resume from, never a
//! silently truncated export; once the store is back, the export resumed from that cursor
//! delivers the rest, so every record and dead-letter entry arrives exactly once across the two,
//! and an export resumed after a dead-letter entry delivers only the entries after it.
//!
//! The organisation's object-store collections are cold: written by a first run that uploaded
//! them on its way out, and served by a second run that has no local copy of them (committed
//! segments are not kept locally). The S3 server (s3s over s3s-fs, see [`crate::outage`]) is
//! then stopped under the running service and started again on the same port and directory.

use std::time::{Duration, Instant};

use base64::Engine as _;
use mainstay_tests::{Api, sha256_hex};
use serde_json::Value;
use sha2::Digest as _;

use crate::outage::{ADMIN_TOKEN, S3Server, api, stop};

/// Records per collection: more than one export page (100) each.
const RECORDS: usize = 250;

/// The organisation's collections, in the order the export visits them, and their policies:
/// one on local disk only, two whose data is in the object store.
const COLLECTIONS: [(&str, &str); 3] = [
    ("alpha", "memory"),
    ("beta", "s3_only"),
    ("gamma", "memory_s3"),
];

/// [`export_as`] with this file's admin token.
async fn export(client: &reqwest::Client, api: &Api, cursor: Option<&str>) -> (Vec<Value>, Value) {
    export_as(client, api, ADMIN_TOKEN, cursor).await
}

/// One export of organisation `acme` with the admin token `token`: every line parsed (each must
/// be a JSON object with a `type`, and every line but the summary a `cursor`), the summary checked
/// against the SHA-256 of the lines before it and against their counts. Returns the lines before
/// the summary, and the summary.
pub(crate) async fn export_as(
    client: &reqwest::Client,
    api: &Api,
    token: &str,
    cursor: Option<&str>,
) -> (Vec<Value>, Value) {
    let mut url = api.url("/admin/organisations/acme/export");
    if let Some(cursor) = cursor {
        url = format!("{url}?cursor={cursor}");
    }
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    assert!(text.ends_with('\n'), "the export ends mid-line: {text:?}");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("a malformed line ({error}): {line}"));
            assert!(value["type"].is_string(), "a line without a type: {line}");
            value
        })
        .collect();
    let summary = lines.pop().expect("an export is never empty");
    assert_eq!(summary["type"], "summary", "{summary}");
    for line in &lines {
        assert_ne!(line["type"], "summary", "a summary before the end: {line}");
        assert!(
            line["cursor"].is_string(),
            "a line without a cursor: {line}"
        );
    }
    let body_end = text
        .trim_end_matches('\n')
        .rfind('\n')
        .map_or(0, |at| at + 1);
    assert_eq!(
        summary["sha256"],
        hex::encode(sha2::Sha256::digest(&text.as_bytes()[..body_end])),
        "the checksum of the lines before the summary"
    );
    for (kind, field) in [
        ("collection", "collections"),
        ("record", "records"),
        ("dlq_entry", "dlq_entries"),
    ] {
        let count = lines.iter().filter(|line| line["type"] == kind).count();
        assert_eq!(summary[field], count as u64, "{field}: {summary}");
    }
    (lines, summary)
}

/// The records of an export as (collection, id), each value checked.
fn records(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|line| line["type"] == "record")
        .map(|line| {
            let collection = line["collection"].as_str().unwrap().to_owned();
            let id = line["id"].as_str().unwrap().to_owned();
            let value = base64::engine::general_purpose::STANDARD
                .decode(line["value_b64"].as_str().unwrap())
                .unwrap();
            assert_eq!(value, format!("{collection}/{id}").into_bytes(), "{line}");
            (collection, id)
        })
        .collect()
}

/// The lines of `kind` of an export, by the field that names them.
fn named(lines: &[Value], kind: &str, field: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line["type"] == kind)
        .map(|line| line[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_during_an_object_store_outage_is_incomplete_and_resumes_exactly_once()
-> anyhow::Result<()> {
    export_during_an_outage(false).await
}

/// The same with the `s3_only` collection partly in the block cache when the store goes down
/// (512-byte blocks, the first one read before the outage): what the cache holds may be
/// exported, the rest is not, and the two parts still give every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_a_partly_cached_collection_during_an_outage_resumes_exactly_once()
-> anyhow::Result<()> {
    export_during_an_outage(true).await
}

/// The export-during-an-outage scenario; with `partly_cached`, small blocks and the first block
/// of the `s3_only` collection read before the outage.
async fn export_during_an_outage(partly_cached: bool) -> anyhow::Result<()> {
    let block_bytes = if partly_cached { "512" } else { "65536" };
    let (root, data) = (tempfile::tempdir()?, tempfile::tempdir()?);
    std::fs::create_dir(root.path().join("bucket"))?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let endpoint = format!("http://{addr}");
    let client = reqwest::Client::new();
    let tag = &sha256_hex("acme")[..12];

    // Dead-letter entries of the organisation's collections (and one of another organisation,
    // which its export leaves out), as failed deliveries would leave them.
    {
        let dlq =
            mainstay_dlq::Dlq::open(data.path().join("dlq"), mainstay_dlq::DlqConfig::default())
                .await?;
        for key in [
            format!("{tag}-beta/failed-1"),
            format!("{tag}-gamma/failed-2"),
            format!("{}-beta/failed-3", &sha256_hex("other")[..12]),
        ] {
            dlq.push(mainstay_dlq::NewEntry::inline(
                "deliveries",
                key,
                b"payload".to_vec(),
                mainstay_dlq::FailureClass::Permanent,
                "delivery failed",
            ))
            .await?;
        }
        dlq.close().await?;
    }

    // A first run with the store up writes every collection; SIGTERM uploads the object-store
    // ones and commits them.
    let mut expected = Vec::new();
    let server = S3Server::start(addr, root.path()).await?;
    let first = api(data.path(), &endpoint)
        .env("MAINSTAY_STORAGE__BLOCK_BYTES", block_bytes)
        .start()?;
    for (name, policy) in COLLECTIONS {
        let created = client
            .post(first.url("/v1/collections"))
            .bearer_auth("acme-key")
            .json(&serde_json::json!({ "name": name, "policy": policy }))
            .send()
            .await?;
        assert_eq!(created.status(), 201, "{}", created.text().await?);
        let batch: Vec<Value> = (0..RECORDS)
            .map(|n| {
                let id = format!("r{n:04}");
                let value = format!("{name}/{id}");
                expected.push((name.to_owned(), id.clone()));
                serde_json::json!({
                    "id": id,
                    "value_base64": base64::engine::general_purpose::STANDARD.encode(value),
                })
            })
            .collect();
        let written = client
            .post(first.url(&format!("/v1/collections/{name}/records")))
            .bearer_auth("acme-key")
            .json(&serde_json::json!({ "records": batch }))
            .send()
            .await?;
        assert_eq!(written.status(), 200, "{}", written.text().await?);
    }
    stop(first)?;

    // A second run, the store up at its start: the committed segments are in the object store
    // only. A short breaker open time, so that reads come back soon after the store does.
    let service = api(data.path(), &endpoint)
        .env("MAINSTAY_STORAGE__BLOCK_BYTES", block_bytes)
        .env("MAINSTAY_STORAGE__UPLOAD__BREAKER__OPEN_DURATION", "500ms")
        .env(
            "MAINSTAY_STORAGE__UPLOAD__BREAKER__HALF_OPEN_SUCCESSES",
            "1",
        )
        .start()?;
    if partly_cached {
        // The first block of `beta` (s3_only) into the cache: r0000 and a few after it.
        let read = client
            .get(service.url("/v1/collections/beta/records/r0000"))
            .bearer_auth("acme-key")
            .send()
            .await?;
        assert_eq!(read.status(), 200);
    }
    // The outage, under the running service: its pooled connections to the store are closed
    // too.
    server.stop().await;
    if partly_cached {
        // Partly cached indeed: the first block serves r0000, a later one is not there.
        for (id, want) in [("r0000", 200), ("r0249", 503)] {
            let read = client
                .get(service.url(&format!("/v1/collections/beta/records/{id}")))
                .bearer_auth("acme-key")
                .send()
                .await?;
            assert_eq!(read.status(), want, "beta/{id} during the outage");
        }
    }
    let (first_part, summary) = export(&client, &service, None).await;
    assert_eq!(summary["complete"], false, "{summary}");
    assert_eq!(
        summary["unavailable_sources"],
        serde_json::json!(["object_store"]),
        "{summary}"
    );
    assert!(summary["resumed_from"].is_null(), "{summary}");
    let resume_cursor = summary["resume_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("no resume_cursor in {summary}"))
        .to_owned();
    // The cursor is that of the last line delivered: nothing after it was sent.
    assert_eq!(
        first_part.last().map(|line| &line["cursor"]),
        Some(&Value::String(resume_cursor.clone())),
        "{summary}"
    );
    let delivered = records(&first_part);
    assert!(
        delivered.len() < expected.len(),
        "every record was exported with the object store down: is any collection cold?"
    );
    // The local collection in full; of the cold ones nothing, or (partly cached) at most a
    // part of `beta` that the cache holds, never all of it.
    let within = if partly_cached {
        delivered.len() < 2 * RECORDS
    } else {
        delivered.len() == RECORDS
    };
    assert!(
        within && delivered.len() >= RECORDS && delivered[..] == expected[..delivered.len()],
        "the local collection in full and of the cold ones at most what the cache holds: {} records, {:?} .. {:?}",
        delivered.len(),
        delivered.first(),
        delivered.last(),
    );
    eprintln!(
        "exported during the outage: {} records ({} of the cold collections)",
        delivered.len(),
        delivered.len() - RECORDS
    );

    // The store is back on the same endpoint; once a cold record reads again, resume.
    let _server = S3Server::start(addr, root.path()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, _) in &COLLECTIONS[1..] {
        loop {
            let read = client
                .get(service.url(&format!("/v1/collections/{name}/records/r0000")))
                .bearer_auth("acme-key")
                .send()
                .await?;
            if read.status() == 200 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} still unreadable after the store returned: {}",
                read.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (second_part, summary) = export(&client, &service, Some(&resume_cursor)).await;
    assert_eq!(summary["complete"], true, "{summary}");
    assert_eq!(summary["resumed_from"], resume_cursor.as_str(), "{summary}");
    assert!(summary.get("unavailable_sources").is_none(), "{summary}");
    assert!(summary.get("resume_cursor").is_none(), "{summary}");

    // Across the two parts: every record, collection and dead-letter entry exactly once.
    let mut whole = delivered;
    whole.extend(records(&second_part));
    let first_difference = whole
        .iter()
        .zip(&expected)
        .position(|(got, want)| got != want);
    assert!(
        whole.len() == expected.len() && first_difference.is_none(),
        "the two parts are not the whole export once: {} records for {}, first difference at {first_difference:?}",
        whole.len(),
        expected.len(),
    );
    let mut headers = named(&first_part, "collection", "name");
    headers.extend(named(&second_part, "collection", "name"));
    assert_eq!(headers, ["alpha", "beta", "gamma"]);
    let mut entries = named(&first_part, "dlq_entry", "key");
    entries.extend(named(&second_part, "dlq_entry", "key"));
    entries.sort();
    assert_eq!(
        entries,
        [
            format!("{tag}-beta/failed-1"),
            format!("{tag}-gamma/failed-2")
        ]
    );

    // Resumed after the first dead-letter entry: only the entries after it.
    let first_entry = second_part
        .iter()
        .find(|line| line["type"] == "dlq_entry")
        .expect("a dead-letter entry in the resumed export");
    let cursor = first_entry["cursor"].as_str().unwrap();
    let (rest, summary) = export(&client, &service, Some(cursor)).await;
    assert_eq!(summary["complete"], true, "{summary}");
    let rest_entries = named(&rest, "dlq_entry", "key");
    assert_eq!(
        rest.len(),
        rest_entries.len(),
        "only dead-letter entries: {rest:?}"
    );
    let first_key = first_entry["key"].as_str().unwrap();
    assert_eq!(
        rest_entries,
        entries
            .iter()
            .filter(|key| key.as_str() != first_key)
            .cloned()
            .collect::<Vec<_>>()
    );
    // A `d.` position that is no entry id (the OpenAPI pattern allows any) is still a position
    // in id order, never an empty export that says it is complete.
    let first_id = first_entry["id"].as_str().unwrap();
    for (position, want) in [
        ("d.0".to_owned(), entries.clone()),
        (format!("d.{first_id}0"), rest_entries.clone()),
    ] {
        let (lines, summary) = export(&client, &service, Some(&position)).await;
        assert_eq!(summary["complete"], true, "{position}: {summary}");
        let mut keys = named(&lines, "dlq_entry", "key");
        keys.sort();
        assert_eq!(keys, want, "resumed from {position}");
    }
    stop(service)?;
    Ok(())
}
