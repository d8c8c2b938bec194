//! The command line: `mainstay-api [--config PATH] [serve | config print | config check | config reference | openapi | metrics catalogue | probe live|ready|startup [--addr ADDR] | backup create|verify|restore]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;

/// Exit code for a configuration the service refuses.
pub const EXIT_CONFIG: u8 = 2;

/// Exit code for data the service will not open as it is: a WAL damaged in the middle (under
/// `storage.wal_recovery = "refuse"`), a corrupt segment or DLQ snapshot, a DLQ journal damaged
/// in the middle (under `dlq.journal_recovery = "refuse"`). The message names the
/// file and the runbook; nothing was changed on disk.
pub const EXIT_DAMAGED: u8 = 4;

/// Whether a start-up failure is damaged data (exit code 4) rather than a runtime failure.
fn damaged_data(error: &crate::app::BuildError) -> bool {
    use mainstay_storage_tiering::{OpenError, WalError};
    let dlq_damaged = |error: &mainstay_dlq::OpenError| {
        matches!(
            error,
            mainstay_dlq::OpenError::CorruptSnapshot { .. }
                | mainstay_dlq::OpenError::CorruptJournal { .. }
        )
    };
    match error {
        crate::app::BuildError::Store(
            OpenError::Wal(WalError::Corrupt { .. } | WalError::Unreadable { .. })
            | OpenError::CorruptSegment { .. },
        ) => true,
        crate::app::BuildError::Store(OpenError::Dlq(error))
        | crate::app::BuildError::Dlq(error) => dlq_damaged(error),
        crate::app::BuildError::Keyring(error) => matches!(
            error,
            mainstay_storage_tiering::keyring::KeyringOpenError::DamagedCheck { .. }
        ),
        _ => false,
    }
}

/// mainstay-api: the mainstay reference service.
#[derive(Debug, Parser)]
#[command(name = "mainstay-api", version, about)]
pub struct Cli {
    /// Read this configuration file instead of `./mainstay.toml`.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the OpenAPI document.
    Openapi,
    /// Inspect the metrics the service exports.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Ask a running instance's health route: exit 0 on a 2xx within 2 s, 1 otherwise (a container
    /// health check that needs no shell or curl).
    Probe {
        /// Which route: `live` (`/health/live`), `ready` (`/health/ready`), `startup` (`/health/startup`).
        #[arg(value_enum)]
        probe: crate::probe::Probe,
        /// The address to ask (default: the configured `server.addr`; a wildcard bind address such
        /// as `0.0.0.0` is asked on loopback).
        #[arg(long, value_name = "ADDR")]
        addr: Option<std::net::SocketAddr>,
    },
    /// Create, verify and restore backups (docs/operations/backup.md).
    #[command(subcommand)]
    Backup(crate::backup::BackupCommand),
}

/// `metrics` subcommands.
#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Print the catalogue of every metric family as JSON (docs/metrics.md is generated from it).
    Catalogue,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration, where each value came from, secrets masked.
    Print,
    /// Check the configuration and exit 0 when it is valid.
    Check,
    /// Print the configuration reference (docs/configuration.md).
    Reference,
}

/// Runs the command line and returns the process's exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", crate::routes::openapi::document());
            ExitCode::SUCCESS
        }
        Command::Metrics(MetricsCommand::Catalogue) => {
            print!("{}", crate::catalogue::json());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", config::reference());
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Print) => match config::load(cli.config.as_deref()) {
            Ok((config, figment)) => {
                print!("{}", config::print(&config, &figment));
                ExitCode::SUCCESS
            }
            Err(error) => config_failure(&error),
        },
        Command::Config(ConfigCommand::Check) => match config::load(cli.config.as_deref()) {
            Ok(_) => {
                eprintln!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(error) => config_failure(&error),
        },
        Command::Serve => serve(cli.config.as_deref()),
        Command::Probe { probe, addr } => run_probe(cli.config.as_deref(), probe, addr),
        Command::Backup(command) => crate::backup::run(cli.config.as_deref(), command),
    }
}

/// `probe`: exit 0 when the route answers 2xx within [`crate::probe::TIMEOUT`], 1 with one line
/// on stderr otherwise, 2 when there is no address to ask (the configuration does not load, or
/// its `server.addr` has port 0).
fn run_probe(
    file: Option<&std::path::Path>,
    probe: crate::probe::Probe,
    addr: Option<std::net::SocketAddr>,
) -> ExitCode {
    let bind = match addr {
        Some(addr) => addr,
        None => match config::load(file) {
            Ok((config, _)) => config.server.addr,
            Err(error) => return config_failure(&error),
        },
    };
    if bind.port() == 0 {
        eprintln!(
            "mainstay-api: probe: {bind} has port 0, which the service replaces by a free port at start; pass --addr with the port it listens on"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let target = crate::probe::target(bind);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mainstay-api: probe: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::probe::run(target, probe, crate::probe::TIMEOUT)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mainstay-api: probe: {error}");
            ExitCode::FAILURE
        }
    }
}

fn config_failure(error: &config::ConfigError) -> ExitCode {
    eprintln!("mainstay-api: {error}");
    ExitCode::from(EXIT_CONFIG)
}

fn serve(file: Option<&std::path::Path>) -> ExitCode {
    let config = match config::load(file) {
        Ok((config, _)) => config,
        Err(error) => return config_failure(&error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mainstay-api: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // The OTLP exporters need the runtime, so telemetry starts inside it.
        let telemetry = match mainstay_telemetry::init(&config.telemetry) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("mainstay-api: could not start telemetry: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let app = match crate::app::build(config.clone()).await {
            Ok(app) => app,
            Err(crate::app::BuildError::Config(error)) => {
                let _ = telemetry.shutdown();
                return config_failure(&error);
            }
            Err(error) if damaged_data(&error) => {
                tracing::error!(error = %error, "mainstay-api will not open damaged data");
                eprintln!("mainstay-api: {error}");
                let _ = telemetry.shutdown();
                return ExitCode::from(EXIT_DAMAGED);
            }
            Err(error) => {
                tracing::error!(error = %error, "mainstay-api could not start");
                let _ = telemetry.shutdown();
                return ExitCode::FAILURE;
            }
        };
        let storage = app.storage.clone();
        let outcome = crate::server::serve(app, &config).await;
        // Storage and the dead-letter queue flush after the last request drained: the memtable is
        // flushed, uploads get half of what is left of the budget (the DLQ and telemetry the
        // rest), and whatever is not uploaded by then stays safe in the WAL.
        let deadline = outcome.as_ref().map_or_else(
            |_| std::time::Instant::now() + crate::server::flush_reserve(config.shutdown.timeout),
            |stopped| stopped.deadline,
        );
        // Whatever hangs, the process ends one second past the budget: every step below is
        // bounded by what is left of it, and this watchdog ends the process if one is not.
        shutdown_watchdog(deadline + std::time::Duration::from_secs(1));
        // Stateless (`storage.enabled = false`): there is no store or queue to flush.
        if let Some(crate::app::Storage { store, dlq, .. }) = storage {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Err(error) = store.close(left / 2).await {
                tracing::error!(error = %error, "the record store did not close cleanly; the WAL keeps every write");
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match tokio::time::timeout(left, dlq.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::error!(error = %error, "the dead-letter queue did not close cleanly");
                }
                Err(_) => tracing::error!(
                    "the dead-letter queue did not close within the shutdown budget; its journal keeps every acknowledged entry"
                ),
            }
        }
        let code = match &outcome {
            Ok(stopped) if stopped.exit == crate::server::Exit::Drained => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "mainstay-api stopped on an error"
                );
                ExitCode::FAILURE
            }
        };
        // What is left of the budget, and at least a moment to write the last log lines.
        let left = deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(std::time::Duration::from_millis(100));
        if let Err(error) = telemetry.shutdown_within(left) {
            eprintln!("mainstay-api: telemetry did not flush: {error}");
        }
        code
    })
}

/// Ends the process with exit code 1 at `at` if it is still running then: the last guard of
/// `shutdown.timeout` (+ 1 s), whatever step hangs.
fn shutdown_watchdog(at: std::time::Instant) {
    let spawned = std::thread::Builder::new()
        .name("shutdown-watchdog".to_owned())
        .spawn(move || {
            std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
            eprintln!(
                "mainstay-api: shutdown ran past shutdown.timeout + 1 s; exiting now (exit 1)"
            );
            std::process::exit(1);
        });
    if let Err(error) = spawned {
        eprintln!("mainstay-api: could not start the shutdown watchdog: {error}");
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::damaged_data;
    use crate::app::BuildError;

    #[test]
    fn a_damaged_dlq_journal_or_snapshot_is_damaged_data() {
        let journal = || mainstay_dlq::OpenError::CorruptJournal {
            file: PathBuf::from("dlq/log/00000000000000000001.seg"),
            offset: 120,
            valid_frames_after: 3,
        };
        assert!(damaged_data(&BuildError::Dlq(journal())));
        assert!(damaged_data(&BuildError::Store(
            mainstay_storage_tiering::OpenError::Dlq(journal())
        )));
        assert!(damaged_data(&BuildError::Dlq(
            mainstay_dlq::OpenError::CorruptSnapshot {
                path: PathBuf::from("dlq/snapshot"),
                reason: "checksum mismatch",
            }
        )));
        assert!(!damaged_data(&BuildError::Dlq(
            mainstay_dlq::OpenError::Locked {
                dir: PathBuf::from("dlq"),
            }
        )));
    }
}
