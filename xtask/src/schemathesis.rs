//! `cargo xtask schemathesis` and the `schemathesis` step of `cargo xtask ci`: the OpenAPI document
//! checked against the built binary by a schema-driven fuzzer (decision 0091).
//!
//! Schemathesis is pinned and lives in a virtual environment under `$HOME/.cache/mainstay/`, made
//! on first use. The binary runs on a fresh data directory, on an ephemeral port, with rate
//! limiting off, an API key and an admin token. `/v1` and `/admin` are fuzzed by two schemathesis
//! processes side by side (one worker each: its threaded workers trip over Hypothesis' lambda
//! introspection now and then), with every check; the drill route, the breaker force-open and the
//! runtime-configuration POST are left out, as they change how the instance answers everything
//! after them. Any failure fails the step with schemathesis's report.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The schemathesis release the step runs.
pub(crate) const VERSION: &str = "4.32.5";

/// Test cases per operation: the step takes about two minutes on two cores (`/v1`, the slower
/// prefix, about 100 s on an idle machine, 140 s beside other builds).
const MAX_EXAMPLES: &str = "400";

/// The seed unless `MAINSTAY_SCHEMATHESIS_SEED` gives another: a fixed one, so that a failure is
/// reproduced by running the step again.
const DEFAULT_SEED: &str = "20261204";

/// Operations left out: they change how the instance answers everything after them.
const EXCLUDED: &str = r"^(GET /admin/drill/delay|POST /admin/circuit-breakers/\{name\}/force-open|POST /admin/config/\{section\})$";

const API_KEY: &str = "schemathesis-api-key-0123456789";
const ADMIN_TOKEN: &str = "schemathesis-admin-token-0123456789";

/// The `st` of the pinned virtual environment (`crate::venv`), made when missing.
pub(crate) fn ensure() -> Result<PathBuf> {
    crate::venv::tool("schemathesis", VERSION, "st")
}

/// A running `mainstay-api` with its scratch directory; killed and removed when dropped.
struct Instance {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sha256_hex(text: &str) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start sha256sum")?;
    std::io::Write::write_all(
        child.stdin.as_mut().context("sha256sum has no stdin")?,
        text.as_bytes(),
    )?;
    drop(child.stdin.take());
    let output = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let digest = text.split_whitespace().next().unwrap_or_default();
    if digest.len() != 64 {
        bail!("sha256sum printed {text:?}");
    }
    Ok(digest.to_owned())
}

/// Starts the binary on a fresh directory and waits for its listening line.
fn start(api_bin: &Path) -> Result<Instance> {
    let dir = std::env::temp_dir().join(format!(
        "mainstay-schemathesis-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos())
    ));
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("mainstay.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nallow_anonymous = false\n[[auth.api_keys]]\nkey_sha256 = \"{}\"\norganisation = \"fuzz\"\ntier = \"premium\"\nplan = \"pro\"\n",
            sha256_hex(API_KEY)?
        ),
    )?;
    let log = std::fs::File::create(dir.join("api.log"))?;
    let mut command = Command::new(api_bin);
    command.current_dir(&dir).env_clear();
    for key in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command
        .env("MAINSTAY_SERVER__ADDR", "127.0.0.1:0")
        .env("MAINSTAY_STORAGE__DATA_DIR", dir.join("data"))
        // `POST /admin/backups` with `{}` backs up to `backup.url`: set, so that every request
        // the document allows is one the service can serve.
        .env("MAINSTAY_BACKUP__URL", dir.join("backups"))
        .env("MAINSTAY_RATELIMIT__ENABLED", "false")
        .env("MAINSTAY_ADMIN__TOKEN", ADMIN_TOKEN)
        .env("MAINSTAY_SHUTDOWN__DRAIN_DELAY", "100ms")
        .arg("--config")
        .arg(&config)
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = command
        .spawn()
        .with_context(|| format!("could not start {}", api_bin.display()))?;
    let mut instance = Instance {
        child,
        dir,
        addr: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let file = std::fs::File::open(instance.dir.join("api.log"))?;
        let listening = BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
            .find_map(|line| {
                line["msg"]
                    .as_str()
                    .is_some_and(|msg| msg.starts_with("mainstay-api listening"))
                    .then(|| line["addr"].as_str().map(str::to_owned))
                    .flatten()
            });
        if let Some(addr) = listening {
            instance.addr = addr;
            return Ok(instance);
        }
        if let Some(status) = instance.child.try_wait()? {
            let log = std::fs::read_to_string(instance.dir.join("api.log")).unwrap_or_default();
            bail!("mainstay-api exited with {status} before listening:\n{log}");
        }
        if Instant::now() > deadline {
            bail!("mainstay-api did not listen within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fuzzes `/v1` and `/admin` of the binary; fails on any schemathesis failure or error.
pub(crate) fn run(api_bin: &Path) -> Result<()> {
    let st = ensure()?;
    let seed = std::env::var("MAINSTAY_SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let instance = start(api_bin)?;
    let schema = format!("http://{}/openapi.json", instance.addr);
    eprintln!(
        "schemathesis {VERSION}: {schema}, seed {seed} (MAINSTAY_SCHEMATHESIS_SEED), {MAX_EXAMPLES} examples per operation"
    );
    let started = Instant::now();
    let runs: Vec<(&str, Child, PathBuf)> = ["v1", "admin"]
        .into_iter()
        .map(|prefix| {
            let report = instance.dir.join(format!("schemathesis-{prefix}.txt"));
            let output = std::fs::File::create(&report)?;
            let child = Command::new(&st)
                .current_dir(&instance.dir)
                .args(["run", &schema, "--checks", "all", "--workers", "1"])
                .args(["--max-examples", MAX_EXAMPLES, "--seed", &seed])
                .args(["--include-path-regex", &format!("^/{prefix}/")])
                .args(["--exclude-name-regex", EXCLUDED])
                .args(["--header", &format!("X-Api-Key: {API_KEY}")])
                .args(["--header", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
                .args(["--generation-database", "none", "--no-color"])
                .stdout(output.try_clone()?)
                .stderr(output)
                .spawn()
                .with_context(|| format!("could not start {}", st.display()))?;
            Ok((prefix, child, report))
        })
        .collect::<Result<_>>()?;
    let mut failed = Vec::new();
    for (prefix, mut child, report) in runs {
        let status = child.wait()?;
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        if status.success() {
            let summary = text.lines().last().unwrap_or_default().trim_matches('=');
            eprintln!("schemathesis /{prefix}: {}", summary.trim());
        } else {
            eprintln!("{text}");
            eprintln!("schemathesis /{prefix}: FAILED ({status})");
            failed.push(format!("/{prefix}"));
        }
    }
    eprintln!("schemathesis took {:.1}s", started.elapsed().as_secs_f64());
    drop(instance);
    if !failed.is_empty() {
        bail!(
            "schemathesis found failures on {}; reproduce with MAINSTAY_SCHEMATHESIS_SEED={seed} cargo xtask schemathesis",
            failed.join(" and ")
        );
    }
    Ok(())
}
