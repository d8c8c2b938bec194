//! Runbooks that cannot rot: every shell block of `docs/runbooks/*.md` whose fence is
//! ```` ```sh runbook-test ```` runs here with `bash -euo pipefail` against a fresh `mainstay-api`
//! (one per runbook, its blocks in order in one working directory, so a block may leave a file to
//! the next), and fails the test when it exits non-zero or outlives
//! [`BLOCK_TIMEOUT`].
//!
//! What a block gets (docs/runbooks/README.md, "Tested blocks"):
//! - `MAINSTAY_URL` (`http://127.0.0.1:PORT`, the same port across restarts), `ADMIN_TOKEN`, the
//!   `MAINSTAY_RATELIMIT__SECRET` the instance runs with as `LIMITER_SECRET`, and `REDIS_URL` when a
//!   line `# needs: redis` in one of the runbook's blocks asks for a private `redis-server`;
//! - on `PATH`: `mainstay-restart [VAR=value...]` (stops the instance and starts it again on the same
//!   port and data directory with those variables added or replaced), `redis-kill`,
//!   `redis-start`, `redis-freeze` and `redis-thaw` (with `# needs: redis`), and the `mainstay-api` binary under test.
//!
//! The helpers are shell scripts that hand a request file to this test and wait for its answer, so
//! the test owns every process it starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mainstay_tests::Api;
use mainstay_tests::redis::RedisServer;

/// How long one block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(15);
const ADMIN_TOKEN: &str = "runbook-admin-token-0123456789";
const LIMITER_SECRET: &str = "runbook-limiter-secret-0123456789";

/// One `sh runbook-test` block: where it starts and its text.
#[derive(Debug)]
struct Block {
    line: usize,
    script: String,
}

fn runbooks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runbooks")
}

/// The `sh runbook-test` blocks of a Markdown text, in order.
fn blocks(markdown: &str) -> Result<Vec<Block>> {
    let mut found = Vec::new();
    let mut current: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        match &mut current {
            None => {
                if trimmed.starts_with("```") {
                    let info: Vec<&str> =
                        trimmed.trim_start_matches('`').split_whitespace().collect();
                    if info.contains(&"runbook-test") {
                        ensure!(
                            info.first() == Some(&"sh"),
                            "line {}: a runbook-test block must be `sh runbook-test`",
                            index + 1
                        );
                        current = Some(Block {
                            line: index + 1,
                            script: String::new(),
                        });
                    }
                }
            }
            Some(block) => {
                if trimmed.starts_with("```") {
                    found.extend(current.take());
                } else {
                    block.script.push_str(line);
                    block.script.push('\n');
                }
            }
        }
    }
    if let Some(block) = current {
        bail!("the block of line {} is not closed", block.line);
    }
    Ok(found)
}

/// Every runbook with tested blocks: file name and blocks.
fn tested_runbooks() -> Result<BTreeMap<String, Vec<Block>>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(runbooks_dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "md") {
            let text = std::fs::read_to_string(&path)?;
            let blocks = blocks(&text).with_context(|| path.display().to_string())?;
            if !blocks.is_empty() {
                let name = path
                    .file_name()
                    .context("no file name")?
                    .to_string_lossy()
                    .into_owned();
                found.insert(name, blocks);
            }
        }
    }
    Ok(found)
}

/// A free loopback port (bound and released), kept across restarts.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The helpers on the blocks' `PATH`: each writes `request` and waits for `response` in `$RUNBOOK_CONTROL`.
fn write_helpers(bin: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let helper = |name: &str, action: &str| -> Result<()> {
        let script = format!(
            r#"#!/usr/bin/env bash
# Test helper of tests/tests/it/runbooks.rs: asks the test to {name}.
set -euo pipefail
printf '%s\n' {action} "$@" > "$RUNBOOK_CONTROL/request.tmp"
mv "$RUNBOOK_CONTROL/request.tmp" "$RUNBOOK_CONTROL/request"
for _ in $(seq 600); do
  if [ -f "$RUNBOOK_CONTROL/response" ]; then
    answer=$(cat "$RUNBOOK_CONTROL/response"); rm -f "$RUNBOOK_CONTROL/response"
    if [ "$answer" = ok ]; then exit 0; fi
    echo "{name}: $answer" >&2; exit 1
  fi
  sleep 0.05
done
echo "{name}: no answer within 30 s" >&2; exit 1
"#
        );
        let path = bin.join(name);
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(())
    };
    helper("mainstay-restart", "restart")?;
    helper("redis-kill", "redis-kill")?;
    helper("redis-start", "redis-start")?;
    helper("redis-freeze", "redis-freeze")?;
    helper("redis-thaw", "redis-thaw")
}

/// The instance under a runbook and what its helpers act on.
struct Fixture {
    api: Option<Api>,
    redis: Option<RedisServer>,
    env: BTreeMap<String, String>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn start_api(&mut self) -> Result<()> {
        let mut builder = Api::builder().current_dir(self.dir.path());
        for (key, value) in &self.env {
            builder = builder.env(key, value);
        }
        self.api = Some(builder.start()?);
        Ok(())
    }

    /// Carries out one helper request: its lines are the action and its arguments.
    fn handle(&mut self, request: &str) -> Result<()> {
        let mut words = request.lines();
        match words.next() {
            Some("restart") => {
                for assignment in words {
                    let (key, value) = assignment
                        .split_once('=')
                        .with_context(|| format!("`{assignment}` is not VAR=value"))?;
                    self.env.insert(key.to_owned(), value.to_owned());
                }
                if let Some(mut api) = self.api.take() {
                    api.terminate()?;
                    api.wait_exit(Duration::from_secs(10))?;
                }
                self.start_api()
            }
            Some("redis-kill") => self.redis.as_mut().context("no `# needs: redis`")?.kill(),
            Some("redis-start") => self
                .redis
                .as_mut()
                .context("no `# needs: redis`")?
                .restart(),
            Some("redis-freeze") => self.redis.as_ref().context("no `# needs: redis`")?.freeze(),
            Some("redis-thaw") => self.redis.as_ref().context("no `# needs: redis`")?.thaw(),
            other => bail!("unknown helper request {other:?}"),
        }
    }
}

/// Runs every tested block of one runbook against a fresh instance.
fn run_runbook(name: &str) -> Result<()> {
    let runbooks = tested_runbooks()?;
    let blocks = runbooks
        .get(name)
        .with_context(|| format!("{name} has no `sh runbook-test` block"))?;
    let needs_redis = blocks.iter().any(|block| {
        block
            .script
            .lines()
            .any(|line| line.trim() == "# needs: redis")
    });
    let redis = needs_redis.then(RedisServer::start).transpose()?;
    let port = free_port()?;
    let mut env = BTreeMap::from([
        (
            "MAINSTAY_SERVER__ADDR".to_owned(),
            format!("127.0.0.1:{port}"),
        ),
        ("MAINSTAY_ADMIN__TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        (
            "MAINSTAY_RATELIMIT__SECRET".to_owned(),
            LIMITER_SECRET.to_owned(),
        ),
    ]);
    if let Some(redis) = &redis {
        env.insert("MAINSTAY_REDIS__URL".to_owned(), redis.url());
    }
    let mut fixture = Fixture {
        api: None,
        redis,
        env,
        dir: tempfile::tempdir()?,
    };
    fixture.start_api()?;
    let control = tempfile::tempdir()?;
    let bin = tempfile::tempdir()?;
    write_helpers(bin.path())?;
    std::os::unix::fs::symlink(mainstay_tests::api_bin()?, bin.path().join("mainstay-api"))?;
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let work = tempfile::tempdir()?;
    for block in blocks {
        let mut command = Command::new("bash");
        command
            .args([
                "--noprofile",
                "--norc",
                "-euxo",
                "pipefail",
                "-c",
                &block.script,
            ])
            .current_dir(work.path())
            .env_clear()
            .env("PATH", &path)
            .env("HOME", work.path())
            .env("MAINSTAY_URL", format!("http://127.0.0.1:{port}"))
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("LIMITER_SECRET", LIMITER_SECRET)
            .env("RUNBOOK_CONTROL", control.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(redis) = &fixture.redis {
            command.env("REDIS_URL", redis.url());
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().context("could not run bash")?;
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        let status = loop {
            let request = control.path().join("request");
            if let Ok(text) = std::fs::read_to_string(&request) {
                std::fs::remove_file(&request)?;
                let answer = match fixture.handle(&text) {
                    Ok(()) => "ok".to_owned(),
                    Err(error) => format!("{error:#}").replace('\n', " "),
                };
                std::fs::write(control.path().join("response.tmp"), answer)?;
                std::fs::rename(
                    control.path().join("response.tmp"),
                    control.path().join("response"),
                )?;
            }
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let group = rustix::process::Pid::from_raw(i32::try_from(child.id())?)
                    .context("bad pid")?;
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = child.wait_with_output()?;
        let log = || {
            let api_lines = fixture
                .api
                .as_ref()
                .map(|api| api.lines().join("\n"))
                .unwrap_or_default();
            format!(
                "stdout:\n{}\nstderr:\n{}\nmainstay-api printed:\n{api_lines}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        };
        match status {
            None => bail!(
                "{name}, block of line {}: still running after {BLOCK_TIMEOUT:?}\n{}",
                block.line,
                log()
            ),
            Some(status) if !status.success() => {
                bail!("{name}, block of line {}: {status}\n{}", block.line, log())
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The runbooks with tested blocks; [`every_tested_runbook_has_a_case`] keeps this list complete.
const CASES: &[&str] = &[
    "scenario-breaker-stuck.md",
    "scenario-corrupt-data.md",
    "scenario-crash-loop.md",
    "scenario-disk-full.md",
    "scenario-dlq-growing.md",
    "scenario-erase-tenant.md",
    "scenario-object-store-outage.md",
    "scenario-redis-down.md",
    "scenario-restore-from-backup.md",
    "scenario-rotate-secrets.md",
];

#[test]
fn every_tested_runbook_has_a_case() -> Result<()> {
    let found: Vec<String> = tested_runbooks()?.into_keys().collect();
    assert_eq!(
        found, CASES,
        "add a #[test] below for every runbook with a tested block"
    );
    Ok(())
}

#[test]
fn the_block_parser_finds_tagged_blocks_only() -> Result<()> {
    let text =
        "```sh\necho no\n```\n```sh runbook-test\n# needs: redis\ntrue\n```\n```promql\nup\n```\n";
    let found = blocks(text)?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 4);
    assert_eq!(found[0].script, "# needs: redis\ntrue\n");
    assert!(blocks("```sh runbook-test\ntrue\n").is_err());
    assert!(blocks("```bash runbook-test\ntrue\n```\n").is_err());
    Ok(())
}

#[test]
fn breaker_stuck() -> Result<()> {
    run_runbook("scenario-breaker-stuck.md")
}

#[test]
fn corrupt_data() -> Result<()> {
    run_runbook("scenario-corrupt-data.md")
}

#[test]
fn crash_loop() -> Result<()> {
    run_runbook("scenario-crash-loop.md")
}

#[test]
fn disk_full() -> Result<()> {
    run_runbook("scenario-disk-full.md")
}

#[test]
fn object_store_outage() -> Result<()> {
    run_runbook("scenario-object-store-outage.md")
}

#[test]
fn dlq_growing() -> Result<()> {
    run_runbook("scenario-dlq-growing.md")
}

#[test]
fn erase_tenant() -> Result<()> {
    run_runbook("scenario-erase-tenant.md")
}

#[test]
fn redis_down() -> Result<()> {
    run_runbook("scenario-redis-down.md")
}

#[test]
fn restore_from_backup() -> Result<()> {
    run_runbook("scenario-restore-from-backup.md")
}

#[test]
fn rotate_secrets() -> Result<()> {
    run_runbook("scenario-rotate-secrets.md")
}
