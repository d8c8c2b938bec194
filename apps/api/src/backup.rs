//! `mainstay-api backup create | verify | restore`: backups from the command line.
//!
//! - `backup create --to URL` backs up a stopped instance: it opens the store and the DLQ of the
//!   configuration, writes the backup, and closes them. A running instance holds the data
//!   directory's lock: then it refuses (exit 2) and points at `POST /admin/backups`.
//! - `backup verify URL [--max-age DURATION] [--json] [--record]` restores the backup (or the
//!   newest complete one of a root) into a temporary directory and checks it: exit 0 ok,
//!   1 damaged, 3 older than `--max-age`, 2 for bad arguments or configuration.
//! - `backup restore URL --data-dir DIR [--at TIME|LSN]` rebuilds a data directory: exit 0,
//!   1 when the backup is damaged, 2 for bad arguments, a non-empty target or a point outside
//!   what the backups cover.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use mainstay_storage_tiering::{
    BackupTarget, RestoreError, RestoreOptions, RestorePoint, Store, Verification, VerifyOptions,
};

use crate::cli::EXIT_CONFIG;
use crate::config;

/// Exit code of `backup verify` for a damaged backup, and of `backup restore` when the backup
/// is damaged.
pub const EXIT_BACKUP_DAMAGED: u8 = 1;
/// Exit code of `backup verify` for a sound backup older than `--max-age`.
pub const EXIT_BACKUP_TOO_OLD: u8 = 3;

/// `backup` subcommands.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up a stopped instance's store, DLQ and runtime settings to `<URL>/<backup id>/`.
    Create {
        /// The backup root: a directory, `file:///dir` or `s3://bucket/prefix` (default:
        /// `backup.url`).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Ask the running instance at HOST:PORT for an online backup (`POST /admin/backups`
        /// with `admin.token`) instead of opening a stopped instance's data directory.
        #[arg(long, value_name = "HOST:PORT")]
        addr: Option<String>,
        /// With --addr: how long to wait for the instance's answer.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30m")]
        timeout: Duration,
    },
    /// Verify a backup by restoring it into a temporary directory: exit 0 ok, 1 damaged,
    /// 3 older than --max-age.
    Verify {
        /// A backup, or a root (then its newest complete backup); default: `backup.url`.
        #[arg(value_name = "URL")]
        url: Option<String>,
        /// A backup whose consistent point is older than this is too old (exit 3), e.g. `26h`.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        max_age: Option<Duration>,
        /// Also print the report as JSON on stdout (the summary line goes to stderr then).
        #[arg(long)]
        json: bool,
        /// Write the report to `<root>/last-verification.json`.
        #[arg(long)]
        record: bool,
    },
    /// Rebuild a data directory from a backup.
    Restore {
        /// A backup, or a root (then its newest complete backup, or the one --at chooses);
        /// default: `backup.url`.
        #[arg(value_name = "URL")]
        url: Option<String>,
        /// The data directory to rebuild; it must be empty or missing.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Restore at this point: an LSN inside a backup's window, or an RFC 3339 time (the
        /// newest backup at or before it).
        #[arg(long, value_name = "TIME|LSN")]
        at: Option<String>,
    },
    /// Run the backup timetable until stopped: an online backup of the instance at --addr at
    /// start and every --every, a recorded verification at start and every --verify-every.
    Schedule {
        /// The running instance to back up (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        addr: String,
        /// The backup root (default: `backup.url`).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// Time between backups.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "1h")]
        every: Duration,
        /// Time between verifications.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "24h")]
        verify_every: Duration,
        /// A verified backup older than this is `too_old`.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "2h")]
        max_age: Duration,
    },
}

/// `url`, or the configured `backup.url`, or a refusal naming both.
fn root_or_configured(file: Option<&Path>, url: Option<String>) -> Result<String, ExitCode> {
    if let Some(url) = url {
        return Ok(url);
    }
    match config::load(file) {
        Ok((config, _)) => config.backup.url.ok_or_else(|| {
            refuse("no backup location: give one, or set `backup.url` (MAINSTAY_BACKUP__URL)")
        }),
        Err(error) => Err(refuse(error)),
    }
}

/// Runs a `backup` subcommand.
#[must_use]
pub fn run(file: Option<&Path>, command: BackupCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mainstay-api: backup: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        BackupCommand::Create { to, addr, timeout } => {
            if let Some(addr) = addr {
                return runtime.block_on(create_online(file, &addr, to.as_deref(), timeout));
            }
            match root_or_configured(file, to) {
                Ok(to) => runtime.block_on(create(file, &to)),
                Err(code) => code,
            }
        }
        BackupCommand::Verify {
            url,
            max_age,
            json,
            record,
        } => match root_or_configured(file, url) {
            Ok(url) => runtime.block_on(verify(&url, max_age, json, record)),
            Err(code) => code,
        },
        BackupCommand::Restore { url, data_dir, at } => match root_or_configured(file, url) {
            Ok(url) => runtime.block_on(restore(file, &url, &data_dir, at.as_deref())),
            Err(code) => code,
        },
        BackupCommand::Schedule {
            addr,
            to,
            every,
            verify_every,
            max_age,
        } => match root_or_configured(file, to) {
            Ok(to) => runtime.block_on(schedule(file, addr, to, every, verify_every, max_age)),
            Err(code) => code,
        },
    }
}

/// The admin token of the configuration (`admin.token`, usually `MAINSTAY_ADMIN__TOKEN`).
fn admin_token(file: Option<&Path>) -> Result<Option<String>, ExitCode> {
    config::load(file)
        .map(|(config, _)| config.admin.token)
        .map_err(refuse)
}

/// The one line `backup create` prints, from `POST /admin/backups`'s answer.
fn created_line(answer: &serde_json::Value) -> String {
    format!(
        "backup {} written to {}: lsn={} files={} bytes={} records={} dlq_entries={}",
        answer["id"].as_str().unwrap_or("?"),
        answer["location"].as_str().unwrap_or("?"),
        answer["consistent_lsn"],
        answer["files"],
        answer["bytes"],
        answer["records"],
        answer["dlq_entries"],
    )
}

async fn create_online(
    file: Option<&Path>,
    addr: &str,
    to: Option<&str>,
    timeout: Duration,
) -> ExitCode {
    let token = match admin_token(file) {
        Ok(token) => token,
        Err(code) => return code,
    };
    match crate::backup_client::request_backup(addr, token.as_deref(), to, timeout).await {
        Ok(answer) => {
            println!("{}", created_line(&answer));
            ExitCode::SUCCESS
        }
        Err(
            error @ (crate::backup_client::ClientError::Address { .. }
            | crate::backup_client::ClientError::NoToken),
        ) => refuse(error),
        Err(error) => {
            eprintln!("mainstay-api: backup: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn schedule(
    file: Option<&Path>,
    addr: String,
    to: String,
    every: Duration,
    verify_every: Duration,
    max_age: Duration,
) -> ExitCode {
    let config = match config::load(file) {
        Ok((config, _)) => config,
        Err(error) => return refuse(error),
    };
    let token = config.admin.token.clone();
    if token.is_none() {
        return refuse(crate::backup_client::ClientError::NoToken);
    }
    let location = match BackupTarget::parse(&to) {
        Ok(location) => location,
        Err(error) => return refuse(error),
    };
    // JSON lines on stdout like the service's, so its log pipeline reads the timetable too.
    let _telemetry = match mainstay_telemetry::init(&config.telemetry) {
        Ok(guard) => guard,
        Err(error) => return refuse(format!("telemetry: {error}")),
    };
    let backup = || {
        let (addr, token, to) = (addr.clone(), token.clone(), to.clone());
        async move {
            crate::backup_client::request_backup(
                &addr,
                token.as_deref(),
                Some(&to),
                Duration::from_secs(1800),
            )
            .await
            .map(|answer| created_line(&answer))
            .map_err(|error| error.to_string())
        }
    };
    let verify = || {
        let location = location.clone();
        async move {
            let options = VerifyOptions::max_age(Some(max_age));
            match mainstay_storage_tiering::verify_and_record(&location, &options).await {
                Ok(report) if report.outcome == Verification::Ok => Ok(report.summary()),
                Ok(report) => Err(report.summary()),
                Err(error) => Err(error.to_string()),
            }
        }
    };
    crate::backup_schedule::run(every, verify_every, backup, verify).await;
    ExitCode::SUCCESS
}

fn refuse(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("mainstay-api: backup: {message}");
    ExitCode::from(EXIT_CONFIG)
}

async fn create(file: Option<&Path>, to: &str) -> ExitCode {
    let config = match config::load(file) {
        Ok((config, _)) => config,
        Err(error) => return refuse(error),
    };
    if !config.storage.enabled {
        return refuse("storage.enabled = false: there is no store to back up");
    }
    let data_dir = config.storage.data_dir.clone();
    let target = match BackupTarget::parse(to) {
        Ok(target) => target.settings_file(data_dir.join(config::ADMIN_OVERRIDES_FILE)),
        Err(error) => return refuse(error),
    };
    let locked = || {
        refuse(format!(
            "data directory {} is in use by a running instance: back it up with POST /admin/backups on that instance, or stop it first",
            data_dir.display()
        ))
    };
    let dlq = match mainstay_dlq::Dlq::builder(data_dir.join("dlq"))
        .config(config.dlq.clone())
        .open()
        .await
    {
        Ok(dlq) => dlq,
        Err(mainstay_dlq::OpenError::Locked { .. }) => return locked(),
        Err(error) => {
            eprintln!("mainstay-api: backup: could not open the dead-letter queue: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut store_config = config.storage.clone();
    match crate::app::object_store_url(&config.storage) {
        Ok(url) => store_config.object_store_url = Some(url),
        Err(error) => {
            eprintln!("mainstay-api: backup: {error}");
            return ExitCode::FAILURE;
        }
    }
    let store = match Store::builder(store_config).dlq(dlq.clone()).open().await {
        Ok(store) => store,
        Err(mainstay_storage_tiering::OpenError::Locked { .. }) => return locked(),
        Err(error) => {
            eprintln!("mainstay-api: backup: could not open the record store: {error}");
            return ExitCode::FAILURE;
        }
    };
    let backed_up = store.backup(&target).await;
    let closed = store.close(Duration::from_secs(60)).await;
    let _ = dlq.close().await;
    if let Err(error) = closed {
        eprintln!("mainstay-api: backup: the store did not close cleanly: {error}");
    }
    match backed_up {
        Ok(manifest) => {
            let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
            println!(
                "backup {} written to {}/{}: lsn={} files={} bytes={bytes} records={} dlq_entries={}",
                manifest.id,
                to.trim_end_matches('/'),
                manifest.id,
                manifest.consistent_point.lsn,
                manifest.files.len(),
                manifest.counts.records,
                manifest.counts.dlq_entries,
            );
            ExitCode::SUCCESS
        }
        Err(
            error @ (mainstay_storage_tiering::BackupError::InvalidDestination { .. }
            | mainstay_storage_tiering::BackupError::InsideLive { .. }),
        ) => refuse(error),
        Err(error) => {
            eprintln!("mainstay-api: backup: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn verify(url: &str, max_age: Option<Duration>, json: bool, record: bool) -> ExitCode {
    let location = match BackupTarget::parse(url) {
        Ok(location) => location,
        Err(error) => return refuse(error),
    };
    let options = VerifyOptions::max_age(max_age);
    let verified = if record {
        mainstay_storage_tiering::verify_and_record(&location, &options).await
    } else {
        mainstay_storage_tiering::verify(&location, &options).await
    };
    let report = match verified {
        Ok(report) => report,
        Err(error @ (RestoreError::InvalidLocation { .. } | RestoreError::NoBackup(_))) => {
            return refuse(error);
        }
        Err(error) => {
            eprintln!("mainstay-api: backup: {error}");
            return ExitCode::from(EXIT_BACKUP_DAMAGED);
        }
    };
    if json {
        eprintln!("{}", report.summary());
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("{}", report.summary());
    }
    match report.outcome {
        Verification::Ok => ExitCode::SUCCESS,
        Verification::TooOld => ExitCode::from(EXIT_BACKUP_TOO_OLD),
        _ => ExitCode::from(EXIT_BACKUP_DAMAGED),
    }
}

/// `--at`: digits are an LSN, anything else an RFC 3339 time.
fn parse_point(at: &str) -> Result<RestorePoint, String> {
    if !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()) {
        return at
            .parse()
            .map(RestorePoint::Lsn)
            .map_err(|e| format!("--at {at}: {e}"));
    }
    humantime::parse_rfc3339_weak(at)
        .map(RestorePoint::Time)
        .map_err(|e| format!("--at {at:?} is neither an LSN nor an RFC 3339 time: {e}"))
}

async fn restore(file: Option<&Path>, url: &str, data_dir: &Path, at: Option<&str>) -> ExitCode {
    let config = match config::load(file) {
        Ok((config, _)) => config,
        Err(error) => return refuse(error),
    };
    let at = match at.map(parse_point).transpose() {
        Ok(at) => at,
        Err(error) => return refuse(error),
    };
    let location = match BackupTarget::parse(url) {
        Ok(location) => location,
        Err(error) => return refuse(error),
    };
    let data_dir = if data_dir.is_absolute() {
        data_dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(data_dir))
            .unwrap_or_else(|_| data_dir.to_path_buf())
    };
    // The object store the service will use on this directory: the configured one, or (the
    // embedded default) `objects/` inside it.
    let object_store = config
        .storage
        .object_store_url
        .clone()
        .unwrap_or_else(|| format!("file://{}", data_dir.join("objects").display()));
    // Erased organisations are never restored: their tags come from the erasure ledger in the
    // object store the restored service will use (decision 0112). Its local half is read into a
    // scratch directory, so that the target stays empty for the restore's own check.
    let scratch =
        std::env::temp_dir().join(format!("mainstay-restore-ledger-{}", std::process::id()));
    // A local object store that does not exist yet holds no ledger; opening it would create it
    // (inside the target, in the embedded default).
    let absent = object_store
        .strip_prefix("file://")
        .is_some_and(|dir| !Path::new(dir).exists());
    // The ledger's copy in the backup root outlives the store's prefix (decision 0121): read
    // the root restored from and the configured one too.
    let mut ledger_urls: Vec<String> = Vec::new();
    if !absent {
        ledger_urls.push(object_store.clone());
    }
    for root in [Some(url), config.backup.url.as_deref()]
        .into_iter()
        .flatten()
    {
        match crate::app::backup_root_url(root) {
            Ok(root) => ledger_urls.push(root),
            Err(error) => {
                eprintln!("mainstay-api: backup: {error}; nothing was restored");
                return ExitCode::FAILURE;
            }
        }
    }
    let ledger = if ledger_urls.is_empty() {
        Ok(None)
    } else {
        crate::erasure::ErasureLedger::open(&scratch, &ledger_urls)
            .await
            .map(Some)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let erased = match ledger {
        Ok(None) => Vec::new(),
        Ok(Some(ledger)) => crate::erasure::erased_collection_prefixes(&ledger),
        Err(error) => {
            eprintln!(
                "mainstay-api: backup: could not read the erasure ledger of {object_store}: {error}; nothing was restored"
            );
            return ExitCode::FAILURE;
        }
    };
    let mut options = RestoreOptions::new(Some(object_store));
    options.at = at;
    options.exclude_collection_prefixes = erased.into_iter().map(|tag| format!("{tag}-")).collect();
    match mainstay_storage_tiering::restore(&location, &data_dir, &options).await {
        Ok(report) => {
            println!(
                "backup {} restored into {}: lsn={} collections={} records={} dlq_entries={} excluded_collections={}",
                report.backup_id,
                data_dir.display(),
                report.restored_lsn,
                report.collections,
                report.records,
                report.dlq_entries,
                report.excluded_collections.len(),
            );
            ExitCode::SUCCESS
        }
        Err(error @ RestoreError::Damaged { .. }) => {
            eprintln!("mainstay-api: backup: {error}");
            ExitCode::from(EXIT_BACKUP_DAMAGED)
        }
        Err(
            error @ (RestoreError::TargetNotEmpty(_)
            | RestoreError::OutsideWindow { .. }
            | RestoreError::InvalidLocation { .. }
            | RestoreError::NoBackup(_)
            | RestoreError::ObjectStoreNotEmpty(_)),
        ) => refuse(error),
        Err(error) => {
            eprintln!("mainstay-api: backup: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_an_lsn_or_an_rfc3339_time() {
        assert_eq!(parse_point("42"), Ok(RestorePoint::Lsn(42)));
        assert!(matches!(
            parse_point("2026-12-05T03:00:00Z"),
            Ok(RestorePoint::Time(_))
        ));
        assert!(parse_point("yesterday").is_err());
        assert!(parse_point("").is_err());
    }
}
