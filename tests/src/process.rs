//! Starting `mainstay-api` as a child process and reading its log lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The variable through which `cargo xtask ci` passes the built binary.
pub const API_BIN_ENV: &str = "MAINSTAY_E2E_API_BIN";

/// The path of the `mainstay-api` binary under test.
pub fn api_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_or_build().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_or_build() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(API_BIN_ENV) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "{API_BIN_ENV} names {}, which does not exist",
            path.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace root")?;
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "-p",
            "mainstay-api",
            "--bin",
            "mainstay-api",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo build")?;
    if !output.status.success() {
        bail!("cargo build -p mainstay-api failed");
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|message| {
            (message["reason"] == "compiler-artifact"
                && message["target"]["name"] == "mainstay-api")
                .then(|| message["executable"].as_str().map(PathBuf::from))
                .flatten()
        })
        .context("cargo did not report the mainstay-api executable")
}

/// Lines a child printed, shared with the thread that reads them.
#[derive(Debug, Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
    /// How many of the child's two output streams reached their end.
    closed: std::sync::atomic::AtomicUsize,
}

/// How to start one `mainstay-api` process.
#[derive(Debug)]
pub struct ApiBuilder {
    ephemeral_port: bool,
    env: Vec<(String, String)>,
    config: Option<String>,
    args: Vec<String>,
    user: Option<u32>,
    dir: Option<PathBuf>,
    bin: Option<PathBuf>,
}

impl ApiBuilder {
    /// Sets a `MAINSTAY_...` (or any other) environment variable.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Uses the Redis at `url` for rate limits (`redis.url`), with the shared limiter secret
    /// every test instance on it uses (`ratelimit.secret`, required with `redis.url`).
    #[must_use]
    pub fn redis(self, url: &str) -> Self {
        self.env("MAINSTAY_REDIS__URL", url).env(
            "MAINSTAY_RATELIMIT__SECRET",
            "a-shared-secret-for-the-tests",
        )
    }

    /// Leaves `server.addr` at its default instead of an ephemeral port.
    #[must_use]
    pub fn default_addr(mut self) -> Self {
        self.ephemeral_port = false;
        self
    }

    /// Writes this TOML as the `--config` file.
    #[must_use]
    pub fn config_toml(mut self, toml: &str) -> Self {
        self.config = Some(toml.into());
        self
    }

    /// Adds command-line arguments (before the config flag).
    #[must_use]
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// Runs the binary as this user and group id, without supplementary groups, through
    /// util-linux's `setpriv` (the harness must run as root).
    #[must_use]
    pub fn as_user(mut self, id: u32) -> Self {
        self.user = Some(id);
        self
    }

    /// Runs this copy of the binary instead of [`api_bin`] (for another user, who may not reach
    /// the target directory).
    #[must_use]
    pub fn binary(mut self, path: &Path) -> Self {
        self.bin = Some(path.to_path_buf());
        self
    }

    /// Runs the binary in this directory (where `./data` and the `--config` file go) instead of a
    /// fresh temporary one.
    #[must_use]
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    fn command(&self, dir: &Path) -> Result<Command> {
        let bin = match &self.bin {
            Some(path) => path.clone(),
            None => api_bin()?,
        };
        let mut command = match self.user {
            Some(id) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={id}"))
                    .arg(format!("--regid={id}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(bin);
                command
            }
            None => Command::new(bin),
        };
        command.current_dir(dir).env_clear();
        for key in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        if self.ephemeral_port {
            command.env("MAINSTAY_SERVER__ADDR", "127.0.0.1:0");
        }
        command.env("MAINSTAY_SHUTDOWN__DRAIN_DELAY", "100ms");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command.args(&self.args);
        if let Some(toml) = &self.config {
            let path = dir.join("test.toml");
            std::fs::write(&path, toml)?;
            command.arg("--config").arg(path);
        }
        Ok(command)
    }

    /// Runs a one-shot command (`config print`) to completion: exit status, stdout, stderr.
    pub fn run(&self) -> Result<(ExitStatus, String, String)> {
        let (dir, _temporary) = self.directory()?;
        let output = self.command(&dir)?.output()?;
        Ok((
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// The directory to run in: the one [`ApiBuilder::current_dir`] named, or a fresh temporary
    /// one (kept alive by the second value).
    fn directory(&self) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
        match &self.dir {
            Some(dir) => Ok((dir.clone(), None)),
            None => {
                let temporary = tempfile::tempdir()?;
                Ok((temporary.path().to_path_buf(), Some(temporary)))
            }
        }
    }

    /// Starts the service and waits until it listens.
    pub fn start(self) -> Result<Api> {
        let (dir, temporary) = self.directory()?;
        let mut child = self
            .command(&dir)?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("could not start mainstay-api")?;
        let lines = Arc::new(Lines::default());
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines
                        .lines
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line);
                    lines.grew.notify_all();
                }
                lines
                    .closed
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                lines.grew.notify_all();
            });
        }
        let mut api = Api {
            child,
            lines,
            addr: String::new(),
            _dir: temporary,
        };
        let listening = api.wait_for_log(Duration::from_secs(30), |line| {
            line["msg"]
                .as_str()
                .is_some_and(|msg| msg.starts_with("mainstay-api listening"))
        })?;
        api.addr = listening["addr"]
            .as_str()
            .context("listening line has no addr")?
            .to_owned();
        Ok(api)
    }
}

/// A running `mainstay-api`; killed when dropped.
#[derive(Debug)]
pub struct Api {
    child: Child,
    lines: Arc<Lines>,
    addr: String,
    _dir: Option<tempfile::TempDir>,
}

impl Api {
    /// A builder with the test defaults: an ephemeral port and a 100 ms drain delay.
    #[must_use]
    pub fn builder() -> ApiBuilder {
        ApiBuilder {
            ephemeral_port: true,
            env: Vec::new(),
            config: None,
            args: Vec::new(),
            user: None,
            dir: None,
            bin: None,
        }
    }

    /// `host:port` the service listens on.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The URL of a path on the service.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line printed so far, stdout and stderr interleaved.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every line printed so far that parses as a JSON object.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(Value::is_object)
            .collect()
    }

    /// Waits for a JSON log line matching `predicate`.
    pub fn wait_for_log(
        &mut self,
        timeout: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(found) = guard
                .iter()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|value| predicate(value))
            {
                return Ok(found);
            }
            let all_read = self.lines.closed.load(std::sync::atomic::Ordering::SeqCst) == 2;
            if let (true, Ok(Some(status))) = (all_read, self.child.try_wait()) {
                bail!(
                    "mainstay-api exited with {status}; it printed:\n{}",
                    guard.join("\n")
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "no matching log line within {timeout:?}; printed:\n{}",
                    guard.join("\n")
                );
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            guard = self
                .lines
                .grew
                .wait_timeout(guard, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<()> {
        let pid =
            rustix::process::Pid::from_raw(i32::try_from(self.child.id())?).context("bad pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        Ok(())
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("mainstay-api did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
