//! A restart during an object-store outage: `mainstay-api` with an `s3://` object store whose
//! endpoint refuses connections starts from its local manifest copy, serves liveness, accepts
//! writes, answers a read that needs the store with 503, and once an S3 server answers on that
//! endpoint again reconciles: the outage's writes and a collection created during it are uploaded
//! and committed, so a new instance with an empty data directory reads them from the store alone.
//!
//! The S3 server is s3s over s3s-fs in this process, on a fixed loopback port that is closed
//! during the outage and bound again (to the same directory) when the store returns.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mainstay_tests::{Api, ApiBuilder, sha256_hex};
use serde_json::json;

pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// An S3 server answering on `addr` from the directory `root` (bucket `bucket`); stops when
/// dropped, and the port refuses connections again. [`S3Server::stop`] also closes the
/// connections it accepted before it returns, so that a running client's pooled keep-alive
/// connection fails as well (an outage under a running service).
pub(crate) struct S3Server {
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl S3Server {
    pub(crate) async fn start(addr: SocketAddr, root: &Path) -> anyhow::Result<Self> {
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|error| anyhow::anyhow!("s3s-fs on {}: {error:?}", root.display()))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single("access", "secret"));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Owned by this task: dropping or shutting down the set ends every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let socket = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => socket,
                        Err(_) => break,
                    },
                };
                while connections.try_join_next().is_some() {}
                let service = service.clone();
                connections.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(socket);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, service)
                    .await;
                });
            }
            drop(listener);
            connections.shutdown().await;
        });
        Ok(Self {
            task,
            stop: Some(stop),
        })
    }

    /// Stops the server and returns once the port refuses connections and every connection
    /// it accepted is closed.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `mainstay-api` on `data_dir` with its objects under `s3://bucket/e2e` at `endpoint`, millisecond
/// retry delays, and one API key of the organisation `acme`.
pub(crate) fn api(data_dir: &Path, endpoint: &str) -> ApiBuilder {
    Api::builder()
        .config_toml(&format!(
            "[[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"acme\"\n",
            sha256_hex("acme-key")
        ))
        .env("MAINSTAY_STORAGE__DATA_DIR", &data_dir.to_string_lossy())
        .env("MAINSTAY_STORAGE__OBJECT_STORE_URL", "s3://bucket/e2e")
        .env("MAINSTAY_STORAGE__UPLOAD__BASE_DELAY", "50ms")
        .env("MAINSTAY_STORAGE__UPLOAD__MAX_DELAY", "200ms")
        .env("MAINSTAY_STORAGE__UPLOAD__ATTEMPT_TIMEOUT", "2s")
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "access")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    async fn create(&self, api: &Api, name: &str, policy: &str) -> anyhow::Result<u16> {
        let response = self
            .http
            .post(api.url("/v1/collections"))
            .bearer_auth("acme-key")
            .json(&json!({ "name": name, "policy": policy }))
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    async fn put(&self, api: &Api, collection: &str, id: &str, value: &str) -> anyhow::Result<u16> {
        let response = self
            .http
            .put(api.url(&format!("/v1/collections/{collection}/records/{id}")))
            .bearer_auth("acme-key")
            .body(value.to_owned())
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// Status and body of a read.
    async fn get(&self, api: &Api, collection: &str, id: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .http
            .get(api.url(&format!("/v1/collections/{collection}/records/{id}")))
            .bearer_auth("acme-key")
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }
}

/// Stops `api` with SIGTERM (uploads are flushed on the way out) and expects exit 0.
pub(crate) fn stop(mut api: Api) -> anyhow::Result<()> {
    api.terminate()?;
    let status = api.wait_exit(Duration::from_secs(30))?;
    anyhow::ensure!(status.success(), "mainstay-api exited with {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_an_object_store_outage_serves_and_reconciles() -> anyhow::Result<()> {
    let (root, data, fresh_data) = (
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    );
    std::fs::create_dir(root.path().join("bucket"))?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let endpoint = format!("http://{addr}");
    let client = Client {
        http: reqwest::Client::new(),
    };

    // A first run with the store up: the data directory gets its manifest copy.
    let server = S3Server::start(addr, root.path()).await?;
    let first = api(data.path(), &endpoint).start()?;
    assert_eq!(client.create(&first, "orders", "memory_s3").await?, 201);
    assert_eq!(client.put(&first, "orders", "o-1", "before").await?, 204);
    stop(first)?;
    drop(server);

    // The outage: the endpoint refuses connections.
    let during = api(data.path(), &endpoint).start()?;
    let live = client.http.get(during.url("/health/live")).send().await?;
    assert_eq!(live.status(), 200);
    // The admin report gives the object store's reason.
    let deps: serde_json::Value = client
        .http
        .get(during.url("/admin/health"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    let store = &deps["checks"]["object-store"];
    assert_eq!(store["status"], "unhealthy", "{deps}");
    assert!(
        store["message"]
            .as_str()
            .is_some_and(|m| m.contains("unreachable")),
        "{deps}"
    );
    assert_eq!(client.put(&during, "orders", "o-2", "during").await?, 204);
    assert_eq!(client.create(&during, "fresh", "memory_s3").await?, 201);
    assert_eq!(client.put(&during, "fresh", "f-1", "new").await?, 204);
    assert_eq!(client.create(&during, "notes", "memory").await?, 201);
    assert_eq!(client.put(&during, "notes", "n-1", "local").await?, 204);
    assert_eq!(
        client.get(&during, "notes", "n-1").await?,
        (200, "local".to_owned())
    );
    assert_eq!(
        client.get(&during, "orders", "o-2").await?,
        (200, "during".to_owned())
    );
    // o-1 lives only in the object store now.
    let (status, body) = client.get(&during, "orders", "o-1").await?;
    assert_eq!(status, 503, "{body}");

    // The store answers again on the same endpoint: the service reconciles by itself.
    let _server = S3Server::start(addr, root.path()).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = client.get(&during, "orders", "o-1").await?;
        if status == 200 {
            assert_eq!(body, "before");
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "o-1 still unreadable after the store returned: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The prefix is claimed again without a restart.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report: serde_json::Value = client
            .http
            .get(during.url("/admin/health"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let store = &report["checks"]["object-store"];
        if store["details"]["prefix_claimed"] == true && store["status"] == "healthy" {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the object store is not reconciled: {store}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(during)?;

    // A new instance with an empty data directory reads the outage's writes from the store.
    let after = api(fresh_data.path(), &endpoint).start()?;
    assert_eq!(
        client.get(&after, "orders", "o-2").await?,
        (200, "during".to_owned())
    );
    assert_eq!(
        client.get(&after, "fresh", "f-1").await?,
        (200, "new".to_owned())
    );
    stop(after)?;
    Ok(())
}
