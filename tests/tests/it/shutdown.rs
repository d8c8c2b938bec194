//! Graceful shutdown on SIGTERM.

use std::time::{Duration, Instant};

use mainstay_tests::Api;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// Starts `GET /admin/drill/delay?ms=MS` and returns once its handler runs (the request is in
/// flight); the task ends with the response.
async fn slow_request(
    api: &mut Api,
    ms: u64,
) -> anyhow::Result<tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>> {
    let url = api.url(&format!("/admin/drill/delay?ms={ms}"));
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
    });
    api.wait_for_log(Duration::from_secs(5), |line| {
        line["msg"]
            .as_str()
            .is_some_and(|msg| msg.ends_with("drill: delay started"))
    })?;
    Ok(request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_refuses_connections_and_exits_0()
-> anyhow::Result<()> {
    let mut api = Api::builder()
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_SHUTDOWN__DRAIN_DELAY", "300ms")
        .env("MAINSTAY_SHUTDOWN__TIMEOUT", "5s")
        .start()?;
    let addr = api.addr().to_owned();
    // The slow request is in flight once its handler has started.
    let slow = slow_request(&mut api, 1500).await?;
    let signalled = Instant::now();
    api.terminate()?;

    // During the drain delay new connections are still accepted.
    api.wait_for_log(Duration::from_secs(5), |line| {
        line["msg"]
            .as_str()
            .is_some_and(|msg| msg.contains("still accepting during the drain delay"))
    })?;
    // After it, the listener is closed: new connections are refused.
    api.wait_for_log(Duration::from_secs(5), |line| {
        line["msg"]
            .as_str()
            .is_some_and(|msg| msg.contains("listener closed"))
    })?;
    // The line is written as the graceful-shutdown signal fires; the server drops its listener
    // just after, so a connection in that instant can still land in the accept backlog. Refused
    // within a second, or the listener was never closed.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a new connection after the drain delay must be refused"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The in-flight request completes normally.
    let response = slow.await??;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<serde_json::Value>().await?["delayed_ms"],
        1500
    );

    let status = api.wait_exit(Duration::from_secs(5))?;
    assert!(status.success(), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exited within shutdown.timeout"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_longer_than_the_shutdown_timeout_is_abandoned_with_exit_1() -> anyhow::Result<()>
{
    let mut api = Api::builder()
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_SHUTDOWN__DRAIN_DELAY", "50ms")
        .env("MAINSTAY_SHUTDOWN__TIMEOUT", "1s")
        .start()?;
    let _slow = slow_request(&mut api, 20000).await?;
    api.terminate()?;
    let status = api.wait_exit(Duration::from_secs(5))?;
    assert_eq!(status.code(), Some(1));
    api.wait_for_log(Duration::from_secs(1), |line| {
        line["msg"]
            .as_str()
            .is_some_and(|msg| msg.contains("timeout reached"))
    })?;
    Ok(())
}

/// A SIGTERM sent the moment the listening line appears is a graceful shutdown (exit 0): the
/// signal handlers are in place before the line is written. Ten starts, to catch the race that
/// once let the default action kill the process.
#[test]
fn a_sigterm_right_after_the_listening_line_shuts_down_cleanly() -> anyhow::Result<()> {
    for _ in 0..10 {
        let mut api = Api::builder().start()?;
        api.terminate()?;
        let status = api.wait_exit(Duration::from_secs(20))?;
        assert!(status.success(), "{status}");
    }
    Ok(())
}

/// A TCP proxy to `upstream` that stops passing bytes once frozen (connections stay open, nothing
/// is answered): a dependency that hangs rather than fails.
struct FreezableProxy {
    addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start(upstream: std::net::SocketAddr) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&frozen);
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let flag = std::sync::Arc::clone(&flag);
                tokio::spawn(async move {
                    if flag.load(Ordering::SeqCst) {
                        // Accept and hold, answering nothing.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        drop(client);
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut from_client = [0u8; 16 * 1024];
                    let mut from_server = [0u8; 16 * 1024];
                    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                    loop {
                        tokio::select! {
                            read = client.read(&mut from_client) => match read {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    while flag.load(Ordering::SeqCst) {
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                    }
                                    if server.write_all(&from_client[..n]).await.is_err() { return; }
                                }
                            },
                            read = server.read(&mut from_server) => match read {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    while flag.load(Ordering::SeqCst) {
                                        tokio::time::sleep(Duration::from_millis(50)).await;
                                    }
                                    if client.write_all(&from_server[..n]).await.is_err() { return; }
                                }
                            },
                        }
                    }
                });
            }
        });
        Ok(Self { addr, frozen, task })
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Issue 15, point 6: with `shutdown.timeout = 4s`, a request that outlives it, an OTLP collector
/// that accepts and never answers, and an object store that stops answering, the process still
/// exits within `shutdown.timeout` + 1 s of the SIGTERM (exit 1: a request was abandoned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_its_timeout_whatever_hangs() -> anyhow::Result<()> {
    // A collector that accepts connections and never reads or answers.
    let collector = std::net::TcpListener::bind("127.0.0.1:0")?;
    let collector_addr = collector.local_addr()?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in collector.incoming().flatten() {
            held.push(stream);
        }
    });
    // An S3 server behind a proxy that freezes.
    let root = tempfile::tempdir()?;
    std::fs::create_dir_all(root.path().join("bucket"))?;
    let s3_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let s3_addr = s3_listener.local_addr()?;
    drop(s3_listener);
    let _s3 = crate::outage::S3Server::start(s3_addr, root.path()).await?;
    let proxy = FreezableProxy::start(s3_addr).await?;
    let data = tempfile::tempdir()?;
    let mut api = crate::outage::api(data.path(), &format!("http://{}", proxy.addr))
        .env("MAINSTAY_SHUTDOWN__TIMEOUT", "4s")
        .env("MAINSTAY_SHUTDOWN__DRAIN_DELAY", "100ms")
        .env(
            "MAINSTAY_TELEMETRY__OTLP_ENDPOINT",
            &format!("http://{collector_addr}/v1/traces"),
        )
        .env("MAINSTAY_TELEMETRY__SAMPLING_RATIO", "1.0")
        .start()?;
    let client = reqwest::Client::new();
    // Spans to export, and data the store must upload at close.
    let created = client
        .post(api.url("/v1/collections"))
        .header("x-api-key", "acme-key")
        .json(&serde_json::json!({"name": "c", "policy": "memory_s3"}))
        .send()
        .await?;
    assert!(created.status().is_success(), "{}", created.status());
    let put = client
        .put(api.url("/v1/collections/c/records/k"))
        .header("x-api-key", "acme-key")
        .json(&serde_json::json!({"v": 1}))
        .send()
        .await?;
    assert!(put.status().is_success(), "{}", put.status());
    let _slow = slow_request(&mut api, 60000).await?;
    proxy.freeze();
    let signalled = Instant::now();
    api.terminate()?;
    let status = api.wait_exit(Duration::from_secs(30))?;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(1), "a request was abandoned");
    // The bound is shutdown.timeout + 1 s; the rest is slack for a loaded 2-core machine to
    // notice the exit.
    assert!(
        took < Duration::from_millis(5_500),
        "exit took {took:?} after SIGTERM with shutdown.timeout = 4s"
    );
    Ok(())
}
