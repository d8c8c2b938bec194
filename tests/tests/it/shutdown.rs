//! Graceful shutdown on SIGTERM.

use std::time::{Duration, Instant};

use mainstay_tests::Api;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_refuses_connections_and_exits_0()
-> anyhow::Result<()> {
    let mut api = Api::builder()
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_SHUTDOWN__DRAIN_DELAY", "300ms")
        .env("MAINSTAY_SHUTDOWN__TIMEOUT", "5s")
        .start()?;
    let addr = api.addr().to_owned();
    let slow_url = api.url("/admin/drill/delay?ms=1500");
    let slow = tokio::spawn(async move {
        reqwest::Client::new()
            .get(slow_url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
    });
    // The slow request is in flight once its handler has started.
    api.wait_for_log(Duration::from_secs(5), |line| {
        line["msg"]
            .as_str()
            .is_some_and(|msg| msg.ends_with("drill: delay started"))
    })?;
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
    let slow_url = api.url("/admin/drill/delay?ms=20000");
    let _slow = tokio::spawn(async move {
        reqwest::Client::new()
            .get(slow_url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
    });
    api.wait_for_log(Duration::from_secs(5), |line| {
        line["msg"]
            .as_str()
            .is_some_and(|msg| msg.ends_with("drill: delay started"))
    })?;
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
