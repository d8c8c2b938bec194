//! mainstay's automation, run as `cargo xtask <command>`.
//!
//! - `ci`: every check CI runs, in order, each timed, with one summary at the end.
//! - `codegen [--check]`: writes (or checks) the generated files under `docs/` and `deploy/`.
//! - `deps`: fails when a crate gains a dependency edge that `ARCHITECTURE.md` forbids.
//! - `surface`: public error enums are `#[non_exhaustive]`; a third-party type in a library's public API is listed in its README.
//! - `bench [NAME ...]`: runs the named benchmarks (all when none is named).
//! - `soak storage --minutes N`: runs the record store's model-based fault test on fresh seeds.
//! - `release`: checks that every library crate is ready to publish.
//! - `deploy-check`: checks the compose file and the Kubernetes manifests (decisions 0106, 0107).
//! - `release plan|--dry-run|--execute`: plans, checks and cuts releases of the library crates (decision 0104).
//! - `promtool`: checks and unit-tests the Prometheus rules with `promtool` (decision 0098).
//! - `schemathesis`: fuzzes the built `mainstay-api` against its OpenAPI document (decision 0091).
//! - `docker-lint`: lints `deploy/docker/Dockerfile` with hadolint and the image's rules (decision 0103).
//! - `image-check`: the release binary's size and start-up time, as the image would run it (decision 0103).
//! - `audit`: cargo-deny's advisories (against an offline RustSec snapshot), licences, bans and sources (decision 0109).

mod alerts;
mod audit;
mod ci;
mod codegen;
mod dashboards;
mod deploy;
mod deps;
mod docker;
mod image_check;
mod lint;
mod public_api;
mod release;
mod schemathesis;
mod slo;
mod surface;
mod tools;
mod venv;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "mainstay's automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run every check and test that CI runs.
    Ci,
    /// Write the generated files (OpenAPI document, configuration and metrics references, SLO rules, dashboards).
    Codegen {
        /// Fail when a generated file is stale instead of writing it.
        #[arg(long)]
        check: bool,
    },
    /// Check the dependency rules between the workspace crates.
    Deps,
    /// Check the libraries' public surface: error enums are `#[non_exhaustive]`; third-party types in it are listed in the crate README.
    Surface,
    /// Run benchmarks: `http`, `breaker`, `dlq`, `health`, `journal`, `probes`, `ratelimit`, `storage`, `restore` (all when none is named).
    Bench {
        /// Names of the benchmarks to run.
        names: Vec<String>,
    },
    /// Plan (`plan`), check (`--dry-run`) or cut (`--execute`) releases of the library crates.
    Release(release::Args),
    /// Check `deploy/prometheus/rules/*.yml` and run their unit tests with promtool.
    Promtool,
    /// Check the deploy files: compose structurally, Kubernetes manifests against their schemas, checkov.
    DeployCheck,
    /// Build `mainstay-api` and fuzz `/v1` and `/admin` against the OpenAPI document.
    Schemathesis,
    /// Lint `deploy/docker/Dockerfile`: hadolint with no finding allowed, and the image's rules.
    DockerLint,
    /// Build the release binary; report its size and median start-up time to `/health/startup`.
    ImageCheck,
    /// Check the dependencies with cargo-deny, offline: advisories (RustSec snapshot), licences, bans, sources.
    Audit,
    /// Check every publishable library alone with each feature alone and with none (cargo-hack).
    Features,
    /// Run a randomized test on fresh seeds for a while: `storage` (the record store's model test).
    Soak {
        /// What to soak: `storage`.
        name: String,
        /// How long to run new sequences, in minutes (failures are then shrunk and reported).
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Ci => ci::run(),
        Task::Codegen { check } => codegen::run(check),
        Task::Deps => deps::run(),
        Task::Surface => surface::run(),
        Task::Bench { names } => bench(&names),
        Task::Release(args) => release::run(args),
        Task::Promtool => ci::promtool(),
        Task::DeployCheck => deploy::check(),
        Task::Schemathesis => ci::build_api().and_then(|bin| schemathesis::run(&bin)),
        Task::DockerLint => docker::lint(),
        Task::ImageCheck => image_check::run(),
        Task::Audit => audit::run(),
        Task::Features => ci::features(),
        Task::Soak { name, minutes } => soak(&name, minutes),
    };
    if let Err(error) = result {
        eprintln!("xtask: error: {error:#}");
        std::process::exit(1);
    }
}

/// The root of the workspace `cargo xtask` was run in, asked of cargo at run time: the binary may
/// have been built from another checkout sharing the same target directory, so the path it was
/// compiled in is not to be trusted.
fn workspace_root() -> PathBuf {
    let located = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["locate-project", "--workspace", "--message-format", "plain"])
        .output();
    match located {
        Ok(output) if output.status.success() => {
            let manifest = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
            manifest
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        }
        _ => PathBuf::from("."),
    }
}

/// A `cargo` command run from the workspace root, honouring the `CARGO` the alias was started with.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

/// Runs a command to completion, failing with its command line when it exits non-zero.
fn run_command(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} exited with {status}");
    }
    Ok(())
}

/// The benchmarks `cargo xtask bench` knows: name, package, bench target.
const BENCHES: &[(&str, &str, &str)] = &[
    ("http", "mainstay-telemetry", "http_stack"),
    ("breaker", "mainstay-resilience", "breaker"),
    ("dlq", "mainstay-dlq", "push"),
    ("health", "mainstay-health", "report"),
    ("journal", "mainstay-journal", "append"),
    ("probes", "mainstay-tests", "probes"),
    ("ratelimit", "mainstay-ratelimit", "limits"),
    ("storage", "mainstay-storage-tiering", "inserts"),
    ("restore", "mainstay-storage-tiering", "restore"),
];

fn bench(names: &[String]) -> Result<()> {
    for name in names {
        if !BENCHES.iter().any(|(known, _, _)| known == name) {
            let known: Vec<&str> = BENCHES.iter().map(|(known, _, _)| *known).collect();
            bail!("unknown benchmark `{name}`; known: {}", known.join(", "));
        }
    }
    for (name, package, target) in BENCHES {
        if names.is_empty() || names.iter().any(|wanted| wanted == name) {
            eprintln!("xtask: bench {name}: cargo bench -p {package} --bench {target}");
            run_command(cargo().args(["bench", "-p", package, "--bench", target]))?;
        }
    }
    Ok(())
}

/// Runs the model-based fault test of the record store on fresh random seeds for `minutes`: through
/// `cargo test` rather than nextest, whose slow-test limit would cut a long run short.
fn soak(name: &str, minutes: u64) -> Result<()> {
    if name != "storage" {
        bail!("unknown soak `{name}`; known: storage");
    }
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    eprintln!("xtask: soak storage: model sequences on fresh seeds for {minutes} min");
    run_command(
        cargo()
            .args([
                "test",
                "-p",
                "mainstay-storage-tiering",
                "--test",
                "it",
                "--",
                "model::model_sequences",
                "--exact",
                "--nocapture",
            ])
            .env("MAINSTAY_MODEL_MINUTES", minutes.to_string()),
    )
}
