//! `cargo xtask ci`: every check and test, in order, each timed, with one summary at the end.
//!
//! Every step runs even when an earlier one failed, so that one run shows every failure; the run
//! fails when any step failed, and the summary names each failed step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{cargo, run_command};

/// The environment variable through which the end-to-end tests find the built binary.
const API_BIN_ENV: &str = "MAINSTAY_E2E_API_BIN";

/// The pinned cargo-hack of the `features` step (0.6.x needs Rust 1.85; the MSRV is 1.95).
const CARGO_HACK_VERSION: &str = "0.6.46";

struct Outcome {
    name: &'static str,
    elapsed: Duration,
    error: Option<String>,
}

pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    let mut outcomes = Vec::new();
    let mut step = |name: &'static str, action: &mut dyn FnMut() -> Result<()>| {
        eprintln!("\n==> xtask ci: {name}");
        let step_started = Instant::now();
        let error = action().err().map(|error| format!("{error:#}"));
        let elapsed = step_started.elapsed();
        match &error {
            None => eprintln!("==> {name}: ok in {:.1}s", elapsed.as_secs_f64()),
            Some(error) => eprintln!(
                "==> {name}: FAILED in {:.1}s: {error}",
                elapsed.as_secs_f64()
            ),
        }
        outcomes.push(Outcome {
            name,
            elapsed,
            error,
        });
    };

    step("tools", &mut ensure_tools);
    step("fmt", &mut || {
        run_command(cargo().args(["fmt", "--all", "--check"]))
    });
    step("clippy", &mut || {
        run_command(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
    });
    let mut api_bin = None;
    step("build mainstay-api", &mut || {
        api_bin = Some(build_api()?);
        Ok(())
    });
    step("nextest", &mut || {
        let mut command = cargo();
        command.args([
            "nextest",
            "run",
            "--workspace",
            "--profile",
            "ci",
            "--locked",
        ]);
        if let Some(path) = &api_bin {
            command.env(API_BIN_ENV, path);
        }
        run_command(&mut command)
    });
    step("schemathesis", &mut || match &api_bin {
        Some(path) => crate::schemathesis::run(path),
        None => crate::schemathesis::run(&build_api()?),
    });
    step("loom models", &mut loom_models);
    step("doc tests", &mut || {
        run_command(cargo().args(["test", "--workspace", "--doc", "--locked"]))
    });
    step("docs", &mut || {
        run_command(
            cargo()
                .args([
                    "doc",
                    "--workspace",
                    "--no-deps",
                    "--locked",
                    "--keep-going",
                ])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    });
    step("codegen --check", &mut || crate::codegen::run(true));
    step("promtool", &mut promtool);
    step("deploy checks", &mut crate::deploy::check);
    step("docker-lint", &mut crate::docker::lint);
    step("dependency rules", &mut crate::deps::run);
    step("public surface", &mut crate::surface::run);
    step("audit", &mut crate::audit::run);
    step("features", &mut features);

    eprintln!(
        "\n==> xtask ci summary ({:.1}s in all)",
        started.elapsed().as_secs_f64()
    );
    for outcome in &outcomes {
        let status = if outcome.error.is_some() {
            "FAILED"
        } else {
            "ok"
        };
        eprintln!(
            "    {:<20} {:<6} {:>7.1}s",
            outcome.name,
            status,
            outcome.elapsed.as_secs_f64()
        );
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|outcome| outcome.error.is_some())
        .map(|outcome| outcome.name)
        .collect();
    if failed.is_empty() {
        eprintln!("==> all {} steps passed", outcomes.len());
        Ok(())
    } else {
        bail!("{} step(s) failed: {}", failed.len(), failed.join(", "))
    }
}

/// Makes sure the tools the tests need are on the machine: installs Debian's `redis-server` and
/// `prometheus` when running as root, otherwise stops at once with the exact command to run.
fn ensure_tools() -> Result<()> {
    let nextest = cargo().args(["nextest", "--version"]).output();
    if !nextest.is_ok_and(|output| output.status.success()) {
        bail!("cargo-nextest is missing; install it with: cargo install cargo-nextest --locked");
    }
    if find_on_path("redis-server").is_none() {
        if is_root() {
            eprintln!("redis-server is missing; installing Debian's package");
            run_command(Command::new("apt-get").arg("update"))?;
            run_command(
                Command::new("apt-get")
                    .args(["install", "-y", "redis-server"])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
        } else {
            bail!(
                "redis-server is missing; install it with: sudo apt-get update && sudo apt-get install -y redis-server"
            );
        }
    }
    // The end-to-end test with a real Prometheus and `promtool check metrics` need it.
    ensure_prometheus()
}

fn find_on_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// `promtool check rules` on `deploy/prometheus/rules/*.yml`, `promtool test rules` on
/// `deploy/prometheus/tests/*.yml`, and the check that every alert has a test where it fires and
/// one where it stays silent (decision 0098). Installs Debian's `prometheus` package (for
/// `promtool`, without recommends, and stops a daemon its install started) when running as root.
pub(crate) fn promtool() -> Result<()> {
    ensure_prometheus()?;
    let root = crate::workspace_root();
    let rules = crate::slo::yaml_files(&root.join("deploy/prometheus/rules"))?;
    let tests = crate::slo::yaml_files(&root.join("deploy/prometheus/tests"))?;
    if rules.is_empty() || tests.is_empty() {
        bail!("no rule files or no test files under deploy/prometheus");
    }
    let started = Instant::now();
    run_command(
        Command::new("promtool")
            .args(["check", "rules"])
            .args(&rules),
    )?;
    run_command(
        Command::new("promtool")
            .args(["test", "rules"])
            .args(&tests),
    )?;
    // Grafana runs nowhere here: every dashboard panel's expression (rows' panels included,
    // template variables replaced by `5m` or `.*`) goes into a throw-away rules file that
    // promtool parses; the deploy wiring's
    // Prometheus configuration is checked in a copy promtool can read (decision 0102).
    let scratch = std::env::temp_dir().join(format!("mainstay-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let checked = (|| -> Result<()> {
        let panels = scratch.join("dashboards.yml");
        std::fs::write(
            &panels,
            crate::dashboards::dashboard_rules(&root.join("deploy/grafana/dashboards"))?,
        )?;
        run_command(
            Command::new("promtool")
                .args(["check", "rules"])
                .arg(&panels),
        )?;
        let names: Vec<String> = rules
            .iter()
            .filter_map(|path| Some(path.file_name()?.to_str()?.to_owned()))
            .collect();
        let config = root.join(crate::deploy::PROMETHEUS_CONFIG);
        let text = std::fs::read_to_string(&config)
            .with_context(|| format!("could not read {}", config.display()))?;
        let copy = scratch.join("prometheus.yml");
        std::fs::write(
            &copy,
            crate::deploy::prometheus_config(&text, &names, &root.join("deploy/prometheus/rules"))?,
        )?;
        run_command(
            Command::new("promtool")
                .args(["check", "config"])
                .arg(&copy),
        )?;
        crate::deploy::grafana_provisioning(&root.join("deploy/grafana/provisioning"))
    })();
    std::fs::remove_dir_all(&scratch)?;
    checked?;
    let alerts = crate::slo::alert_names(&root.join("deploy/prometheus/rules"))?;
    let mut texts = Vec::new();
    for test in &tests {
        let text = std::fs::read_to_string(test)
            .with_context(|| format!("could not read {}", test.display()))?;
        texts.push((test.display().to_string(), text));
    }
    crate::slo::check_alert_coverage(&alerts, &texts)?;
    eprintln!(
        "promtool: {} rule file(s), {} test file(s), {} alert(s) tested firing and silent, the Prometheus configuration and Grafana provisioning in {:.1}s",
        rules.len(),
        tests.len(),
        alerts.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs Debian's `prometheus` package (for `promtool`, and the server the end-to-end test
/// runs; without recommends) when running as root and it is missing, and stops a daemon its
/// install started; otherwise fails with the command to run.
fn ensure_prometheus() -> Result<()> {
    const INSTALL: &str = "apt-get install -y --no-install-recommends prometheus";
    if find_on_path("promtool").is_none() || find_on_path("prometheus").is_none() {
        if !is_root() {
            bail!(
                "promtool or prometheus is missing; install them with: sudo apt-get update && sudo {INSTALL}"
            );
        }
        eprintln!(
            "promtool or prometheus is missing; installing Debian's prometheus package: {INSTALL}"
        );
        run_command(Command::new("apt-get").arg("update"))?;
        run_command(
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "prometheus"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        // The package's maintainer script may start the daemon where an init system runs;
        // the tests start their own servers.
        let init = std::path::Path::new("/etc/init.d/prometheus");
        if init.is_file()
            && Command::new(init)
                .arg("status")
                .output()
                .is_ok_and(|output| output.status.success())
        {
            run_command(Command::new(init).arg("stop"))?;
        }
    }
    Ok(())
}

/// The loom models of the circuit breaker's state word (`crates/resilience/tests/loom.rs`): built
/// in release with `--cfg loom` in a target directory of their own (a `--cfg` in `RUSTFLAGS`
/// rebuilds every dependency, so sharing the main directory would throw its cache away on every
/// switch), then run with at most two preemptions, which must take under a minute.
fn loom_models() -> Result<()> {
    const BUDGET: Duration = Duration::from_secs(60);
    let target = target_directory()?.join("loom");
    let loom = || {
        let mut command = cargo();
        command
            .args([
                "test",
                "--package",
                "mainstay-resilience",
                "--release",
                "--locked",
                "--test",
                "loom",
            ])
            .env("RUSTFLAGS", "--cfg loom")
            .env("LOOM_MAX_PREEMPTIONS", "2")
            .env("CARGO_TARGET_DIR", &target);
        command
    };
    run_command(loom().arg("--no-run"))?;
    let started = Instant::now();
    run_command(&mut loom())?;
    let elapsed = started.elapsed();
    if elapsed > BUDGET {
        bail!(
            "the loom models took {:.1}s, more than the {}s allowed: lower the threads or steps of the slowest model",
            elapsed.as_secs_f64(),
            BUDGET.as_secs()
        );
    }
    Ok(())
}

/// Every published library builds on its own with each of its features alone and with none
/// (issue 19): `cargo hack check --each-feature --no-dev-deps` over the workspace members that
/// have a library and may be published, read from `cargo metadata`, so that a new library or a
/// new feature is covered without a change here. One cargo-hack run for all of them, in the
/// shared target directory; `--keep-going` so that one run names every combination that fails.
/// `--no-dev-deps` (cargo-hack takes the dev-dependencies out of the manifests while it runs and
/// puts them back) keeps a test-only dependency from lending a feature to the library. No
/// `--locked`: without the dev-dependencies cargo prunes the lock file, which `--locked` refuses;
/// cargo-hack restores the lock file with the manifests.
pub(crate) fn features() -> Result<()> {
    let hack = crate::tools::pinned("cargo-hack", CARGO_HACK_VERSION)?;
    let metadata = workspace_metadata()?;
    let libraries = published_libraries(&metadata);
    if libraries.is_empty() {
        bail!("cargo metadata lists no publishable library in the workspace");
    }
    eprintln!("checking {}", libraries.join(", "));
    let mut command = Command::new(hack);
    command.current_dir(crate::workspace_root()).args([
        "hack",
        "check",
        "--each-feature",
        "--no-dev-deps",
        "--keep-going",
    ]);
    for library in &libraries {
        command.args(["--package", library]);
    }
    run_command(&mut command)
}

/// `cargo metadata --no-deps` of the workspace, as JSON.
pub(crate) fn workspace_metadata() -> Result<serde_json::Value> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .output()
        .context("could not start cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed");
    }
    serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")
}

/// The names of the workspace members with a library target whose `publish` allows crates.io
/// (`publish = false` reads as an empty list).
fn published_libraries(metadata: &serde_json::Value) -> Vec<String> {
    let mut libraries: Vec<String> = published_packages(metadata)
        .into_iter()
        .filter_map(|package| package["name"].as_str().map(str::to_owned))
        .collect();
    libraries.sort();
    libraries
}

/// The `src` directories of the libraries [`published_libraries`] names.
pub(crate) fn published_library_sources(metadata: &serde_json::Value) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = published_packages(metadata)
        .into_iter()
        .filter_map(|package| package["manifest_path"].as_str())
        .filter_map(|manifest| Some(Path::new(manifest).parent()?.join("src")))
        .collect();
    dirs.sort();
    dirs
}

/// The package entries of [`published_libraries`].
pub(crate) fn published_packages(metadata: &serde_json::Value) -> Vec<&serde_json::Value> {
    let members: Vec<&str> = metadata["workspace_members"]
        .as_array()
        .map(|ids| ids.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|package| {
            package["id"]
                .as_str()
                .is_some_and(|id| members.contains(&id))
        })
        .filter(|package| {
            package["publish"]
                .as_array()
                .is_none_or(|registries| !registries.is_empty())
        })
        .filter(|package| {
            package["targets"].as_array().is_some_and(|targets| {
                targets.iter().any(|target| {
                    target["kind"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|kind| kind == "lib"))
                })
            })
        })
        .collect()
}

/// The workspace's target directory, as cargo resolves it (`CARGO_TARGET_DIR`, config, default).
pub(crate) fn target_directory() -> Result<PathBuf> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("could not start cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed");
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed no JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata names no target directory")
}

/// Builds the `mainstay-api` binary and returns its path, read from cargo's own build messages.
pub(crate) fn build_api() -> Result<PathBuf> {
    let output = cargo()
        .args([
            "build",
            "--package",
            "mainstay-api",
            "--bin",
            "mainstay-api",
            "--locked",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("could not start cargo build")?;
    if !output.status.success() {
        bail!("cargo build -p mainstay-api failed");
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_api_bin = message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "mainstay-api"
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "bin"));
        if let (true, Some(path)) = (is_api_bin, message["executable"].as_str()) {
            return Ok(PathBuf::from(path));
        }
    }
    bail!("cargo build did not report the mainstay-api executable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_features_step_covers_the_publishable_libraries_of_the_workspace_only() {
        let metadata = serde_json::json!({
            "workspace_members": ["lib 1", "private 1", "bin 1", "both 1"],
            "packages": [
                { "id": "lib 1", "name": "lib", "publish": null,
                  "targets": [{ "kind": ["lib"] }] },
                { "id": "private 1", "name": "private", "publish": [],
                  "targets": [{ "kind": ["lib"] }] },
                { "id": "bin 1", "name": "bin", "publish": null,
                  "targets": [{ "kind": ["bin"] }] },
                { "id": "both 1", "name": "both", "publish": ["crates-io"],
                  "targets": [{ "kind": ["bin"] }, { "kind": ["lib"] }] },
                { "id": "dependency 1", "name": "dependency", "publish": null,
                  "targets": [{ "kind": ["lib"] }] }
            ]
        });
        assert_eq!(published_libraries(&metadata), ["both", "lib"]);
    }
}
