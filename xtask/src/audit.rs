//! `cargo xtask audit`: cargo-deny's advisories, licences, bans and sources checks, offline,
//! against a RustSec advisory-database snapshot that must be there and readable (decision 0109).
//!
//! The database comes from `MAINSTAY_ADVISORY_DB` (a directory or a `.tar.gz`) or, by default,
//! `../shared/data/rustsec-advisory-db.tar.gz` beside the workspace root. An archive is unpacked
//! once into `$HOME/.cache/mainstay/advisory-db/<sha256 of the archive>`. A missing path, an
//! archive `tar` cannot unpack, or a directory without `.git` or without advisories under
//! `crates/` stops the audit: an empty database would let every dependency pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::run_command;

/// The pinned cargo-deny (0.20.x needs Rust 1.88; the workspace's MSRV is 1.95).
pub(crate) const CARGO_DENY_VERSION: &str = "0.20.2";

/// Where the database comes from, when set: a directory or a `.tar.gz`.
const DB_ENV: &str = "MAINSTAY_ADVISORY_DB";

/// The snapshot used when `MAINSTAY_ADVISORY_DB` is not set, relative to the workspace root.
const DEFAULT_SNAPSHOT: &str = "../shared/data/rustsec-advisory-db.tar.gz";

/// The directory under its `db-path` where cargo-deny 0.20 opens the database of its default
/// URL, `https://github.com/RustSec/advisory-db`: the URL's last segment and the XxHash64 (seed
/// `0xca80de71`) of the lowercased URL (`url_to_db_path` in cargo-deny's
/// `src/advisories/helpers/db.rs`). Pinned with the tool's version.
const DB_DIR_NAME: &str = "advisory-db-3157b0e258782691";

/// A snapshot older than this is reported as stale (cargo-deny's own default limit).
const STALE_DAYS: u64 = 90;

pub(crate) fn run() -> Result<()> {
    let root = crate::workspace_root();
    let config_path = root.join("deny.toml");
    let config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("could not read {}", config_path.display()))?;
    check_reasons(&config).with_context(|| format!("{} is refused", config_path.display()))?;

    let cache = crate::tools::cache_root()?.join("advisory-db");
    let source = database_source(&root, &cache)?;
    let db_root = prepare_database(&source, &cache)?;
    let database = db_root.join(DB_DIR_NAME);
    let advisories = count_advisories(&database)?;
    let snapshot = snapshot(&database)?;
    let age = age_days(snapshot.commit_time, now_unix());
    eprintln!(
        "audit: advisory database {} ({advisories} advisories), commit {}, {age} day(s) old",
        source.display(),
        snapshot.commit
    );
    if age > STALE_DAYS {
        eprintln!(
            "audit: warning: the snapshot is older than {STALE_DAYS} days; advisories published since are not checked (set {DB_ENV} to a newer clone of https://github.com/RustSec/advisory-db)"
        );
    }

    // cargo-deny reads `db-path` from its configuration only: a copy of `deny.toml` naming the
    // unpacked snapshot, one per run (two checkouts may share the cache with different files).
    let mut document: toml_edit::DocumentMut = config
        .parse()
        .with_context(|| format!("{} is not TOML", config_path.display()))?;
    let Some(path) = db_root.to_str() else {
        bail!("the cache path {} is not UTF-8", db_root.display());
    };
    document["advisories"]["db-path"] = toml_edit::value(path);
    let deny = crate::tools::pinned("cargo-deny", CARGO_DENY_VERSION)?;
    let generated = std::env::temp_dir().join(format!("mainstay-deny-{}.toml", std::process::id()));
    std::fs::write(&generated, document.to_string())
        .with_context(|| format!("could not write {}", generated.display()))?;
    // cargo-deny's `cargo metadata` needs every package of the lock file, other platforms'
    // included, and `--frozen` forbids downloading them: fetch them first (from the registry
    // cache when it has them; a fresh machine's cache has only this platform's).
    run_command(
        crate::cargo()
            .current_dir(&root)
            .args(["fetch", "--locked"]),
    )
    .context("cargo fetch --locked, for cargo-deny's offline metadata")?;
    let checked = run_command(
        Command::new(&deny)
            .current_dir(&root)
            // `--frozen`: `--locked` and `--offline`, which also keeps cargo-deny from fetching
            // the advisory database (0.20 dropped `check --disable-fetch`).
            .args(["--frozen", "--config"])
            .arg(&generated)
            .args(["check", "advisories", "licenses", "bans", "sources"]),
    );
    let _ = std::fs::remove_file(&generated);
    checked.context(
        "cargo deny failed, see its diagnostics above (an advisory fails the audit unless deny.toml accepts it with a reason)",
    )
}

/// Where the database is to be read from: `MAINSTAY_ADVISORY_DB` or the default snapshot.
fn database_source(root: &Path, cache: &Path) -> Result<PathBuf> {
    if let Some(value) = std::env::var_os(DB_ENV).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(value);
        if !path.exists() {
            bail!(
                "{DB_ENV}={} does not exist: point it at a clone of https://github.com/RustSec/advisory-db (with its .git) or a .tar.gz of one",
                path.display()
            );
        }
        return Ok(path);
    }
    let path = root.join(DEFAULT_SNAPSHOT);
    // A copy of the last snapshot read from the default place, for a checkout that is not beside
    // `shared/` (a CI clone elsewhere on the same machine): still a real snapshot, validated and
    // reported with its commit and age like any other, never an empty pass.
    let kept = cache.join(KEPT_SNAPSHOT);
    if path.is_file() {
        if std::fs::metadata(&kept).map(|meta| meta.len()).ok()
            != std::fs::metadata(&path).map(|meta| meta.len()).ok()
        {
            std::fs::create_dir_all(cache)
                .with_context(|| format!("could not create {}", cache.display()))?;
            let scratch = cache.join(format!("{KEPT_SNAPSHOT}.{}", std::process::id()));
            std::fs::copy(&path, &scratch)
                .with_context(|| format!("could not copy {}", path.display()))?;
            std::fs::rename(&scratch, &kept)?;
        }
        return Ok(path);
    }
    if kept.is_file() {
        eprintln!(
            "audit: {} does not exist; using the copy of the last snapshot read from there, {}",
            path.display(),
            kept.display()
        );
        return Ok(kept);
    }
    bail!(
        "no advisory database: {} does not exist; set {DB_ENV} to a clone of https://github.com/RustSec/advisory-db (with its .git: `git clone --depth 1 https://github.com/RustSec/advisory-db`) or a .tar.gz of one",
        path.display()
    )
}

/// The copy of the default snapshot kept in the cache.
const KEPT_SNAPSHOT: &str = "last-default-snapshot.tar.gz";

/// Makes the database readable by cargo-deny and returns the `db-path` to give it: a directory
/// holding the database as [`DB_DIR_NAME`]. An archive is unpacked once into `cache/<sha256>`
/// (into a scratch directory first, renamed when complete); a directory is linked from
/// `cache/dir-<sha256 of its path>`. Either way the database is checked before it is used.
fn prepare_database(source: &Path, cache: &Path) -> Result<PathBuf> {
    if source.is_dir() {
        validate_database(source)?;
        let target = source
            .canonicalize()
            .with_context(|| format!("could not resolve {}", source.display()))?;
        let key = hex(&Sha256::digest(target.as_os_str().as_encoded_bytes()));
        let db_root = cache.join(format!("dir-{}", &key[..16]));
        let link = db_root.join(DB_DIR_NAME);
        std::fs::create_dir_all(&db_root)
            .with_context(|| format!("could not create {}", db_root.display()))?;
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&link);
            #[cfg(unix)]
            std::os::unix::fs::symlink(&target, &link)
                .with_context(|| format!("could not link {}", link.display()))?;
            #[cfg(not(unix))]
            bail!(
                "a directory in {DB_ENV} needs symbolic links (Unix); give a .tar.gz of it instead"
            );
        }
        return Ok(db_root);
    }
    let bytes = std::fs::read(source)
        .with_context(|| format!("could not read the advisory database {}", source.display()))?;
    let key = hex(&Sha256::digest(&bytes));
    let db_root = cache.join(&key[..16]);
    if db_root.join(DB_DIR_NAME).is_dir() {
        validate_database(&db_root.join(DB_DIR_NAME))?;
        return Ok(db_root);
    }
    let scratch = cache.join(format!("{}.partial-{}", &key[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("could not create {}", scratch.display()))?;
    let unpacked = (|| -> Result<()> {
        let output = Command::new("tar")
            .arg("-xzf")
            .arg(source)
            .arg("-C")
            .arg(&scratch)
            .output()
            .context("could not start tar")?;
        if !output.status.success() {
            bail!(
                "tar could not unpack the advisory database {}: {}",
                source.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // The archive holds the clone itself or one folder with it (`advisory-db/`).
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&scratch)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        let database = match entries.as_mut_slice() {
            [single] if single.is_dir() => single.clone(),
            _ => {
                let inner = scratch.join("db");
                std::fs::create_dir(&inner)?;
                for entry in entries {
                    let Some(name) = entry.file_name() else {
                        continue;
                    };
                    std::fs::rename(&entry, inner.join(name))?;
                }
                inner
            }
        };
        validate_database(&database)
            .with_context(|| format!("in the archive {}", source.display()))?;
        std::fs::rename(&database, scratch.join(DB_DIR_NAME))?;
        Ok(())
    })();
    if let Err(error) = unpacked {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(error);
    }
    // A leftover without the database is junk; a complete one may be another run's, which won
    // the race to unpack the same archive: keep it and drop this copy.
    if db_root.exists() && !db_root.join(DB_DIR_NAME).is_dir() {
        let _ = std::fs::remove_dir_all(&db_root);
    }
    if let Err(error) = std::fs::rename(&scratch, &db_root) {
        let _ = std::fs::remove_dir_all(&scratch);
        if !db_root.join(DB_DIR_NAME).is_dir() {
            return Err(error).with_context(|| {
                format!(
                    "could not move the unpacked database to {}",
                    db_root.display()
                )
            });
        }
    }
    validate_database(&db_root.join(DB_DIR_NAME))?;
    Ok(db_root)
}

/// Refuses a directory that is not a RustSec database clone with at least one advisory.
fn validate_database(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "the advisory database {} is missing or not a directory",
            dir.display()
        );
    }
    if !dir.join(".git").exists() {
        bail!(
            "the advisory database {} has no .git: it must be a git clone (cargo-deny reads its commit)",
            dir.display()
        );
    }
    count_advisories(dir)?;
    Ok(())
}

/// The number of `crates/<crate>/RUSTSEC-*.md` advisories, failing when there is none.
fn count_advisories(dir: &Path) -> Result<usize> {
    let crates = dir.join("crates");
    let listing = std::fs::read_dir(&crates).with_context(|| {
        format!(
            "the advisory database {} has no readable crates/ folder",
            dir.display()
        )
    })?;
    let mut count = 0;
    for krate in listing {
        let krate = krate.with_context(|| format!("could not list {}", crates.display()))?;
        let Ok(advisories) = std::fs::read_dir(krate.path()) else {
            continue;
        };
        count += advisories
            .filter_map(Result::ok)
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                name.starts_with("RUSTSEC-") && name.ends_with(".md")
            })
            .count();
    }
    if count == 0 {
        bail!(
            "the advisory database {} holds no advisories under crates/",
            dir.display()
        );
    }
    Ok(count)
}

/// The commit a database clone is at, and that commit's time (seconds since the epoch).
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    commit: String,
    commit_time: u64,
}

/// Reads the snapshot's commit with `git -C DIR log -1 --format=%H %ct`.
fn snapshot(dir: &Path) -> Result<Snapshot> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["log", "-1", "--format=%H %ct"])
        .output()
        .context("could not start git")?;
    if !output.status.success() {
        bail!(
            "git could not read the commit of the advisory database {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let parsed = text.trim().split_once(' ').and_then(|(commit, time)| {
        let valid = commit.len() >= 40 && commit.chars().all(|c| c.is_ascii_hexdigit());
        Some(Snapshot {
            commit: valid.then(|| commit.to_owned())?,
            commit_time: time.parse().ok()?,
        })
    });
    parsed.with_context(|| format!("git printed no commit and time: {:?}", text.trim()))
}

/// Whole days from `then` to `now` (both seconds since the epoch); 0 for a time in the future.
fn age_days(then: u64, now: u64) -> u64 {
    now.saturating_sub(then) / 86_400
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Fails when an `[advisories] ignore` or a `[bans] skip`/`skip-tree` entry of a cargo-deny
/// configuration has no `reason`: cargo-deny accepts a bare `"RUSTSEC-…"` or `"crate@1"`, we do
/// not, since an accepted risk nobody can explain is never revisited.
fn check_reasons(config: &str) -> Result<()> {
    let document: toml::Table = config.parse().context("not TOML")?;
    let mut missing = Vec::new();
    for (section, key, id_key) in [
        ("advisories", "ignore", "id"),
        ("bans", "skip", "crate"),
        ("bans", "skip-tree", "crate"),
    ] {
        let Some(entries) = document.get(section).and_then(|table| table.get(key)) else {
            continue;
        };
        let Some(entries) = entries.as_array() else {
            bail!("[{section}] {key} is not an array");
        };
        for entry in entries {
            let has_reason = entry
                .get("reason")
                .and_then(toml::Value::as_str)
                .is_some_and(|reason| !reason.trim().is_empty());
            if !has_reason {
                let name = match entry {
                    toml::Value::String(name) => name.clone(),
                    other => other
                        .get(id_key)
                        .or_else(|| other.get("crate"))
                        .and_then(toml::Value::as_str)
                        .map_or_else(|| other.to_string(), str::to_owned),
                };
                missing.push(format!("[{section}] {key} entry {name:?}"));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "every accepted advisory and skipped duplicate needs a `reason`: write it as {{ id = \"…\", reason = \"…\" }} or {{ crate = \"…\", reason = \"…\" }}; missing for {}",
            missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory that passes the checks: `.git` and one advisory.
    fn good_database(dir: &Path) {
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::create_dir_all(dir.join("crates/demo")).unwrap();
        std::fs::write(dir.join("crates/demo/RUSTSEC-2020-0001.md"), "advisory").unwrap();
    }

    fn refused(source: &Path, cache: &Path) -> String {
        match prepare_database(source, cache) {
            Ok(path) => panic!("{} was accepted as {}", source.display(), path.display()),
            Err(error) => format!("{error:#}"),
        }
    }

    #[test]
    fn a_good_directory_and_archive_are_accepted() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("clone");
        good_database(&dir);
        let cache = temp.path().join("cache");
        let root = prepare_database(&dir, &cache).unwrap();
        assert_eq!(count_advisories(&root.join(DB_DIR_NAME)).unwrap(), 1);

        let archive = temp.path().join("db.tar.gz");
        run_command(
            Command::new("tar")
                .arg("-czf")
                .arg(&archive)
                .arg("-C")
                .arg(temp.path())
                .arg("clone"),
        )
        .unwrap();
        let root = prepare_database(&archive, &cache).unwrap();
        assert!(root.join(DB_DIR_NAME).join(".git").is_dir());
        assert_eq!(count_advisories(&root.join(DB_DIR_NAME)).unwrap(), 1);
        // The second time comes from the cache, keyed by the archive's hash.
        assert_eq!(prepare_database(&archive, &cache).unwrap(), root);
    }

    #[test]
    fn an_empty_directory_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("empty");
        std::fs::create_dir(&dir).unwrap();
        assert!(refused(&dir, &temp.path().join("cache")).contains("has no .git"));
    }

    #[test]
    fn a_directory_without_advisories_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("clone");
        good_database(&dir);
        std::fs::remove_file(dir.join("crates/demo/RUSTSEC-2020-0001.md")).unwrap();
        assert!(refused(&dir, &temp.path().join("cache")).contains("holds no advisories"));
        std::fs::remove_dir_all(dir.join("crates")).unwrap();
        assert!(refused(&dir, &temp.path().join("cache")).contains("no readable crates/"));
    }

    #[test]
    fn a_corrupt_archive_is_refused_and_leaves_nothing_behind() {
        let temp = tempfile::tempdir().unwrap();
        let archive = temp.path().join("db.tar.gz");
        std::fs::write(&archive, b"\x1f\x8b\x08\x00 this is not a gzip stream").unwrap();
        let cache = temp.path().join("cache");
        assert!(refused(&archive, &cache).contains("tar could not unpack"));
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_path_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let missing = temp.path().join("nowhere.tar.gz");
        assert!(refused(&missing, &temp.path().join("cache")).contains("could not read"));
        // The default location, beside a workspace root that has none, and no kept copy.
        let cache = temp.path().join("cache");
        let error = database_source(temp.path(), &cache)
            .map(|_| ())
            .unwrap_err();
        assert!(format!("{error:#}").contains("does not exist"));
        // A kept copy of a snapshot read before is used, and said so.
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(cache.join(super::KEPT_SNAPSHOT), b"kept").unwrap();
        assert_eq!(
            database_source(temp.path(), &cache).unwrap(),
            cache.join(super::KEPT_SNAPSHOT)
        );
    }

    #[test]
    fn the_snapshot_commit_and_age_are_read_from_git() {
        let temp = tempfile::tempdir().unwrap();
        let repo = temp.path();
        let git = |args: &[&str]| {
            run_command(
                Command::new("git")
                    .arg("-C")
                    .arg(repo)
                    .args(args)
                    .env("GIT_AUTHOR_NAME", "test")
                    .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
                    .env("GIT_COMMITTER_NAME", "test")
                    .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
                    .env("GIT_AUTHOR_DATE", "@1755734400 +0000")
                    .env("GIT_COMMITTER_DATE", "@1755734400 +0000"),
            )
            .unwrap();
        };
        git(&["init", "--quiet"]);
        git(&["commit", "--quiet", "--allow-empty", "-m", "snapshot"]);
        let read = snapshot(repo).unwrap();
        assert_eq!(read.commit_time, 1_755_734_400);
        assert_eq!(read.commit.len(), 40);
        assert!(read.commit.chars().all(|c| c.is_ascii_hexdigit()));
        // 2025-08-21 00:00 to 2025-12-05 12:00 (106 days and a half); whole days only.
        assert_eq!(age_days(read.commit_time, 1_764_936_000), 106);
        assert_eq!(
            age_days(read.commit_time, 1_755_734_400 + 106 * 86_400 - 1),
            105
        );
        assert_eq!(
            age_days(read.commit_time, 1_755_734_400 + 106 * 86_400),
            106
        );
        assert_eq!(age_days(read.commit_time, 1_755_734_399), 0);
        // A directory that is no clone.
        let plain = tempfile::tempdir().unwrap();
        assert!(format!("{:#}", snapshot(plain.path()).unwrap_err()).contains("git could not"));
    }

    #[test]
    fn every_ignore_and_skip_needs_a_reason() {
        let good = r#"
            [advisories]
            ignore = [{ id = "RUSTSEC-2024-0001", reason = "not reachable: we never call it" }]
            [bans]
            skip = [{ crate = "foo@1", reason = "two majors until bar upgrades" }]
        "#;
        check_reasons(good).unwrap();
        check_reasons("[licenses]\nallow = [\"MIT\"]\n").unwrap();

        for (bad, named) in [
            (
                "[advisories]\nignore = [\"RUSTSEC-2024-0001\"]\n",
                "RUSTSEC-2024-0001",
            ),
            (
                "[advisories]\nignore = [{ id = \"RUSTSEC-2024-0002\" }]\n",
                "RUSTSEC-2024-0002",
            ),
            (
                "[advisories]\nignore = [{ id = \"RUSTSEC-2024-0003\", reason = \" \" }]\n",
                "RUSTSEC-2024-0003",
            ),
            ("[bans]\nskip = [\"foo@1\"]\n", "foo@1"),
            ("[bans]\nskip = [{ crate = \"bar@2\" }]\n", "bar@2"),
            ("[bans]\nskip-tree = [{ crate = \"baz@3\" }]\n", "baz@3"),
        ] {
            let error = format!("{:#}", check_reasons(bad).unwrap_err());
            assert!(error.contains(named), "{error}");
        }
    }
}
