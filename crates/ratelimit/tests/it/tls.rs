//! `rediss://` against a private `redis-server --tls-port` whose certificate a test CA signed
//! (made with the `openssl` command line): decisions over TLS, a wrong CA refused.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mainstay_ratelimit::{Backend, BuildError, LimitRequest, LimitSpec, RateLimiter};

use crate::support::{huge, limits, redis_config};

/// A CA (`ca.pem`) and a certificate it signed for `127.0.0.1` (`server.pem`, `server.key`).
fn make_certificates(dir: &Path, name: &str) -> PathBuf {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    openssl(
        &[
            &["req", "-x509", "-new", "-nodes"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", &format!("/CN={name} test CA")],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new", "-nodes"][..],
            &ec,
            &["-keyout", "server.key", "-out", "server.csr"],
            &["-subj", "/CN=localhost"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial",
        "2", "-days", "2", "-out", "server.pem", "-extfile", "server.ext",
    ]);
    dir
}

/// A `redis-server` that listens with TLS only, on a free port, stopped by pid.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(certificates: &Path, dir: &Path) -> Self {
        for _ in 0..20 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .unwrap()
                .port();
            let file = |name: &str| certificates.join(name).to_str().unwrap().to_owned();
            let mut child = Command::new("/usr/bin/redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--tls-cert-file", &file("server.pem")])
                .args(["--tls-key-file", &file("server.key")])
                .args(["--tls-ca-cert-file", &file("ca.pem")])
                .args(["--tls-auth-clients", "no"])
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                let pong = Command::new("/usr/bin/redis-cli")
                    .args(["--tls", "--cacert", &file("ca.pem")])
                    .args(["-p", &port.to_string(), "PING"])
                    .output()
                    .is_ok_and(|output| output.stdout.starts_with(b"PONG"));
                if pong {
                    return Self { child, port };
                }
                // Polling for the process to come up, not waiting for a rule.
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server with TLS");
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn request(client: IpAddr) -> LimitRequest<'static> {
    LimitRequest {
        caller: None,
        client: Some(client),
        route: None,
    }
}

#[tokio::test]
async fn decisions_are_made_on_redis_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = make_certificates(dir.path(), "server");
    let redis = TlsRedis::start(&certificates, dir.path());
    let config = limits(redis_config(), LimitSpec::per_minute(3), huge(), huge());
    let limiter = RateLimiter::builder(config)
        .redis_url(redis.url())
        .redis_tls_ca_file(certificates.join("ca.pem"))
        .build()
        .unwrap();

    assert!(limiter.ping_redis().await.unwrap().is_some());
    let client: IpAddr = "203.0.113.9".parse().unwrap();
    let mut allowed = 0;
    for _ in 0..5 {
        let decision = limiter.check(&request(client)).await;
        assert_eq!(decision.backend, Backend::Redis, "{decision:?}");
        assert!(decision.redis_time_micros.is_some());
        allowed += u32::from(decision.allowed);
    }
    assert_eq!(allowed, 3);
    // A second limiter over its own TLS connections sees the same bucket: the count is in Redis.
    let config = limits(redis_config(), LimitSpec::per_minute(3), huge(), huge());
    let other = RateLimiter::builder(config)
        .redis_url(redis.url())
        .redis_tls_ca_file(certificates.join("ca.pem"))
        .build()
        .unwrap();
    let decision = other.check(&request(client)).await;
    assert_eq!(
        (decision.backend, decision.allowed),
        (Backend::Redis, false)
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = make_certificates(dir.path(), "server");
    let other_ca = make_certificates(dir.path(), "other");
    let redis = TlsRedis::start(&certificates, dir.path());
    let config = limits(redis_config(), LimitSpec::per_minute(3), huge(), huge());
    let limiter = RateLimiter::builder(config)
        .redis_url(redis.url())
        .redis_tls_ca_file(other_ca.join("ca.pem"))
        .build()
        .unwrap();

    let error = limiter.ping_redis().await.unwrap_err().to_string();
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    let decision = limiter.check(&request("203.0.113.9".parse().unwrap())).await;
    assert_eq!(decision.backend, Backend::Fallback, "{decision:?}");
}

#[test]
fn a_ca_file_is_refused_when_unreadable_empty_or_given_for_plain_redis() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = make_certificates(dir.path(), "server");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "no certificate here").unwrap();
    let cases = [
        ("rediss://127.0.0.1:1", dir.path().join("missing.pem"), "cannot be read"),
        ("rediss://127.0.0.1:1", not_pem, "holds no PEM certificate"),
        ("redis://127.0.0.1:1", certificates.join("ca.pem"), "not a rediss:// URL"),
    ];
    for (url, file, reason) in cases {
        let error = RateLimiter::builder(redis_config())
            .redis_url(url)
            .redis_tls_ca_file(&file)
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, BuildError::TlsCaFile { path, .. } if *path == file),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("redis.tls_ca_file") && message.contains(reason),
            "{message}"
        );
    }
}
