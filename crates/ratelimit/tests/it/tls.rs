//! `rediss://` against a private `redis-server --tls-port` whose certificate a test CA signed
//! (made with the `openssl` command line): decisions over TLS, a wrong CA refused.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mainstay_ratelimit::{Backend, BuildError, LimitRequest, LimitSpec, RateLimiter};

use mainstay_health::{Check, Status};
use mainstay_ratelimit::health::RedisCheck;

use crate::support::{free_port, huge, limits, redis_config, until_on_redis};

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
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "2",
        "-days",
        "2",
        "-out",
        "server.pem",
        "-extfile",
        "server.ext",
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
        Self::start_with(certificates, dir, &[])
    }

    /// Starts one with `extra_args` besides TLS and the test defaults.
    fn start_with(certificates: &Path, dir: &Path, extra_args: &[&str]) -> Self {
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
                .args(extra_args)
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

    /// `redis-cli` over TLS to this server: its output.
    fn cli(&self, certificates: &Path, args: &[&str]) -> String {
        let output = Command::new("/usr/bin/redis-cli")
            .args([
                "--tls",
                "--cacert",
                certificates.join("ca.pem").to_str().unwrap(),
            ])
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
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
    until_on_redis(&limiter).await;
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
    until_on_redis(&other).await;
    let decision = other.check(&request(client)).await;
    assert_eq!(
        (decision.backend, decision.allowed),
        (Backend::Redis, false)
    );
}

/// `rediss://` in cluster mode: three TLS masters (`tls-cluster`, a bus over TLS too), the seed
/// given as `rediss://` with the private CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_decides_on_redis_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = make_certificates(dir.path(), "server");
    let nodes: Vec<TlsRedis> = (0..3)
        .map(|index| {
            let node_dir = dir.path().join(format!("node-{index}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let bus = free_port().to_string();
            TlsRedis::start_with(
                &certificates,
                &node_dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                ],
            )
        })
        .collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port))
        .collect();
    let output = Command::new("/usr/bin/redis-cli")
        .args([
            "--tls",
            "--cacert",
            certificates.join("ca.pem").to_str().unwrap(),
        ])
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli runs");
    assert!(
        output.status.success(),
        "redis-cli --cluster create: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !nodes.iter().all(|node| {
        node.cli(&certificates, &["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
    }) {
        assert!(
            Instant::now() < deadline,
            "the TLS cluster did not become ok"
        );
        // Polling for the cluster to form, not waiting for a rule.
        std::thread::sleep(Duration::from_millis(50));
    }

    let config = limits(redis_config(), LimitSpec::per_minute(3), huge(), huge());
    let limiter = RateLimiter::builder(config)
        .redis_url(nodes[0].url())
        .redis_cluster([nodes[1].url()])
        .redis_tls_ca_file(certificates.join("ca.pem"))
        .build()
        .unwrap();
    until_on_redis(&limiter).await;
    for index in 0..12u8 {
        let client = IpAddr::from([203, 0, 113, index]);
        let mut allowed = 0;
        for _ in 0..4 {
            let decision = limiter.check(&request(client)).await;
            assert_eq!(decision.backend, Backend::Redis, "{decision:?}");
            allowed += u32::from(decision.allowed);
        }
        assert_eq!(allowed, 3, "client {index}");
    }
    // The keys went to more than one master, so the slot map was followed over TLS.
    let holding = nodes
        .iter()
        .filter(|node| node.cli(&certificates, &["DBSIZE"]).trim() != "0")
        .count();
    assert!(holding >= 2, "keys on {holding} of 3 masters");
    let outcome = RedisCheck::new(limiter).check().await;
    assert_eq!(outcome.status, Status::Healthy, "{outcome:?}");
    assert_eq!(outcome.details["cluster_state"], "ok", "{outcome:?}");
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
    let decision = limiter
        .check(&request("203.0.113.9".parse().unwrap()))
        .await;
    assert_eq!(decision.backend, Backend::Fallback, "{decision:?}");
}

#[test]
fn a_ca_file_is_refused_when_unreadable_empty_or_given_for_plain_redis() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = make_certificates(dir.path(), "server");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "no certificate here").unwrap();
    let cases = [
        (
            "rediss://127.0.0.1:1",
            dir.path().join("missing.pem"),
            "cannot be read",
        ),
        ("rediss://127.0.0.1:1", not_pem, "holds no PEM certificate"),
        (
            "redis://127.0.0.1:1",
            certificates.join("ca.pem"),
            "not a rediss:// URL",
        ),
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
