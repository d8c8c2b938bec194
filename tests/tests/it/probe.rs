//! `mainstay-api probe live|ready|startup`: the container health check, against a running
//! instance, a dead address, a peer that never answers, a peer that answers 503, and bad arguments.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use mainstay_tests::Api;

/// Runs `mainstay-api ARGS` to completion: exit code, stderr, how long it took.
fn probe(args: &[&str]) -> anyhow::Result<(Option<i32>, String, Duration)> {
    let started = Instant::now();
    let (status, _, stderr) = Api::builder().args(args).run()?;
    Ok((status.code(), stderr, started.elapsed()))
}

#[test]
fn every_probe_of_a_running_instance_exits_0() -> anyhow::Result<()> {
    let api = Api::builder().start()?;
    for which in ["live", "ready", "startup"] {
        let (code, stderr, _) = probe(&["probe", which, "--addr", api.addr()])?;
        assert_eq!(code, Some(0), "probe {which}: {stderr}");
        assert_eq!(stderr, "", "probe {which} prints nothing when healthy");
    }
    // Without --addr the probe asks the configured server.addr, read as the server reads it.
    let (status, _, stderr) = Api::builder()
        .default_addr()
        .env("MAINSTAY_SERVER__ADDR", api.addr())
        .args(&["probe", "ready"])
        .run()?;
    assert_eq!(
        status.code(),
        Some(0),
        "probe ready from server.addr: {stderr}"
    );
    Ok(())
}

#[test]
fn a_wildcard_bind_address_is_probed_on_loopback() -> anyhow::Result<()> {
    let api = Api::builder()
        .default_addr()
        .env("MAINSTAY_SERVER__ADDR", "0.0.0.0:0")
        .start()?;
    assert!(api.addr().starts_with("0.0.0.0:"), "{}", api.addr());
    let (code, stderr, _) = probe(&["probe", "live", "--addr", api.addr()])?;
    assert_eq!(code, Some(0), "{stderr}");
    // Linux would reach loopback through 0.0.0.0 as well; where nothing listens, the message
    // shows the address actually asked.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    for (bind, asked) in [("0.0.0.0", "127.0.0.1"), ("[::]", "[::1]")] {
        let (code, stderr, _) = probe(&["probe", "live", "--addr", &format!("{bind}:{port}")])?;
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("GET http://{asked}:{port}/health/live")),
            "{bind}: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn a_dead_address_exits_1_at_once() -> anyhow::Result<()> {
    // A port that was free a moment ago: nothing listens there now.
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let (code, stderr, elapsed) = probe(&["probe", "ready", "--addr", &addr])?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "GET http://{addr}/health/ready: could not connect"
        )) && stderr.contains("refused"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    Ok(())
}

#[test]
fn a_peer_that_never_answers_exits_1_after_the_timeout() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    // Accepts and holds every connection without a byte in return, until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    let (code, stderr, elapsed) = probe(&["probe", "live", "--addr", &addr])?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "GET http://{addr}/health/live: no answer within 2s"
        )),
        "{stderr}"
    );
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(4),
        "took {elapsed:?}"
    );
    Ok(())
}

#[test]
fn a_non_2xx_answer_exits_1_with_its_status_and_body() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let body = "{\n  \"status\": \"unhealthy\",\n  \"reason\": \"starting\"\n}";
            let _ = write!(
                stream,
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let (code, stderr, _) = probe(&["probe", "startup", "--addr", &addr])?;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "mainstay-api: probe: GET http://{addr}/health/startup: 503 Service Unavailable: {{ \"status\": \"unhealthy\", \"reason\": \"starting\" }}"
        )
    );
    Ok(())
}

#[test]
fn bad_arguments_exit_2_with_a_message() -> anyhow::Result<()> {
    let cases: [(&[&str], &str); 5] = [
        (&["probe"], "<PROBE>"),
        (&["probe", "sideways"], "invalid value 'sideways'"),
        (
            &["probe", "ready", "--addr", "localhost"],
            "invalid value 'localhost' for '--addr <ADDR>'",
        ),
        (&["probe", "ready", "--addr", "127.0.0.1:0"], "has port 0"),
        (
            &["--config", "/nonexistent/mainstay.toml", "probe", "ready"],
            "/nonexistent/mainstay.toml",
        ),
    ];
    for (args, expected) in cases {
        let (code, stderr, _) = probe(args)?;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    Ok(())
}
