//! A private Debian `prometheus` server on an ephemeral loopback port, scraping one target every
//! second and evaluating a rules file every second, with its TSDB in a temporary directory; and
//! `promtool check metrics` on an exposition.
//!
//! `cargo xtask ci` installs Debian's `prometheus` package (`apt-get install -y
//! --no-install-recommends prometheus`) before the tests run; without it the harness fails at once
//! with that command.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

const INSTALL: &str = "apt-get update && apt-get install -y --no-install-recommends prometheus";

/// The path of a Debian prometheus tool (`prometheus`, `promtool`), or an error naming the
/// install command.
pub fn tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("`{name}` is missing; install it with: {INSTALL}"))
}

/// Runs `promtool check metrics` on an OpenMetrics exposition, after the one normalisation
/// prometheus-client's output needs for promtool 2.42 (a counter's `# HELP` and `# TYPE` name
/// `x`, its samples `x_total`: the lines are renamed to `x_total`, see `../shared`'s dependency
/// notes). Returns what promtool printed; fails when it exits non-zero.
pub fn check_metrics(exposition: &str) -> Result<String> {
    let mut counters = std::collections::HashSet::new();
    for line in exposition.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if let ["#", "TYPE", name, "counter"] = fields.as_slice() {
            counters.insert((*name).to_owned());
        }
    }
    let mut normalised = String::with_capacity(exposition.len());
    for line in exposition.lines() {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        match fields.as_slice() {
            ["#", kind @ ("HELP" | "TYPE" | "UNIT"), name, rest] if counters.contains(*name) => {
                normalised.push_str(&format!("# {kind} {name}_total {rest}\n"));
            }
            _ => {
                normalised.push_str(line);
                normalised.push('\n');
            }
        }
    }
    let mut child = Command::new(tool("promtool")?)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start promtool")?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("promtool has no stdin")?;
        stdin.write_all(normalised.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("promtool check metrics exited {}: {printed}", output.status);
    }
    Ok(printed)
}

/// A private Prometheus server, killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`HOST:PORT`, path `/metrics`) as job `job` every
    /// second, evaluating `rules` every second, and waits until it is ready.
    pub fn start(job: &str, target: &str, rules: &Path) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let rules = rules
            .canonicalize()
            .with_context(|| format!("no rules file at {}", rules.display()))?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(tool("prometheus")?)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start prometheus; install it with: {INSTALL}"))?;
        let mut server = Self { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("prometheus exited {status} at start: {}", server.log());
            }
            let ready = std::net::TcpStream::connect(&server.addr).is_ok_and(|mut stream| {
                use std::io::{Read as _, Write as _};
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let request = format!("GET /-/ready HTTP/1.0\r\nHost: {}\r\n\r\n", server.addr);
                let mut answer = String::new();
                stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.0 200")
            });
            if ready {
                return Ok(server);
            }
            if Instant::now() > deadline {
                bail!("prometheus was not ready within 20 s: {}", server.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What Prometheus logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/PATH` (with a query string), its `data`.
    pub async fn api(&self, client: &reqwest::Client, path: &str) -> Result<Value> {
        let url = format!("http://{}/api/v1/{path}", self.addr);
        let body: Value = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("could not ask prometheus {url}"))?
            .json()
            .await?;
        anyhow::ensure!(body["status"] == "success", "{url}: {body}");
        Ok(body["data"].clone())
    }

    /// The active alerts (pending and firing) named `name`.
    pub async fn alerts(&self, client: &reqwest::Client, name: &str) -> Result<Vec<Value>> {
        let data = self.api(client, "alerts").await?;
        Ok(data["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .filter(|alert| alert["labels"]["alertname"] == name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Polls until `done` holds for the alerts named `name`, or fails after `timeout` with what
    /// Prometheus last reported and its target's scrape state.
    pub async fn wait_alerts(
        &self,
        client: &reqwest::Client,
        name: &str,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let alerts = self.alerts(client, name).await?;
            if done(&alerts) {
                return Ok(alerts);
            }
            if Instant::now() > deadline {
                let targets = self.api(client, "targets").await.unwrap_or(Value::Null);
                let rules = self.api(client, "rules").await.unwrap_or(Value::Null);
                bail!(
                    "alert {name}: not as expected within {timeout:?}; last seen {alerts:?}; targets {targets}; rules {rules}; log {}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
