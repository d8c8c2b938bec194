//! `cargo xtask release`: plans, checks and cuts releases of the library crates (decision 0104).
//!
//! - `release plan [--json]`: for each publishable crate, in dependency order, the version its
//!   changes since its last tag `<crate>-v<version>` require, and the dependents to update.
//! - `release --dry-run [--out DIR] [--no-verify]`: on a clean tree, checks the crates' metadata,
//!   runs `cargo package` for all of them at once, checks that each `.crate` holds `LICENSE-MIT`
//!   and `LICENSE-APACHE`, and writes a CycloneDX SBOM per crate and for `mainstay-api`.
//! - `release --execute [--date YYYY-MM-DD]`: on a clean tree, moves each released crate's
//!   `Unreleased` changelog section under its version, bumps versions and requirements, makes one
//!   commit and a tag per crate. Publishing stays manual: the commands are printed at the end.
//!
//! The steps and what to check are in `docs/operations/release.md`.

mod changelog;
mod manifest;
mod plan;
mod sbom;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace_root;
use plan::{Crate, Release};

/// The binaries that get an SBOM of their own in a dry run.
const BINARIES: &[&str] = &["mainstay-api"];

/// The licence files every package must hold.
const LICENSE_FILES: [&str; 2] = ["LICENSE-MIT", "LICENSE-APACHE"];

/// Arguments of `cargo xtask release`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Option<Subcommand>,
    /// Package every crate, check its licence files and write SBOMs; changes nothing.
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Move the changelogs, bump versions and requirements, commit and tag (no publishing).
    #[arg(long)]
    execute: bool,
    /// Where `--dry-run` writes the .crate files and SBOMs [default: TARGET_DIR/release-artifacts].
    #[arg(long, requires = "dry_run")]
    out: Option<PathBuf>,
    /// Package without cargo's verification build (faster, checks less).
    #[arg(long, requires = "dry_run")]
    no_verify: bool,
    /// The release date written into the changelogs [default: today, UTC].
    #[arg(long, requires = "execute")]
    date: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Show each crate's next version, why, and the dependents to update, in dependency order.
    Plan {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(args: Args) -> Result<()> {
    let repo = Repo {
        root: workspace_root(),
        target_dir: None,
    };
    match args.command {
        Some(Subcommand::Plan { json }) => print_plan(&repo, json),
        None if args.dry_run => {
            let summary = dry_run(&repo, args.out.as_deref(), !args.no_verify, BINARIES)?;
            print!("{summary}");
            Ok(())
        }
        None if args.execute => {
            let date = match args.date {
                Some(date) => date,
                None => today()?,
            };
            let summary = execute(&repo, &date)?;
            print!("{summary}");
            Ok(())
        }
        None => {
            print_plan(&repo, false)?;
            eprintln!(
                "xtask release: this is the plan; `--dry-run` packages, `--execute` commits and tags"
            );
            Ok(())
        }
    }
}

fn print_plan(repo: &Repo, json: bool) -> Result<()> {
    let crates = plan::plan(repo)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan::json(&crates))?);
    } else {
        print!("{}", plan::table(&crates));
    }
    Ok(())
}

/// The workspace a release is made in: its root and, for tests, the target directory to use.
#[derive(Debug)]
pub(crate) struct Repo {
    pub(crate) root: PathBuf,
    target_dir: Option<PathBuf>,
}

impl Repo {
    /// A `cargo` command run in the workspace.
    fn cargo(&self) -> Command {
        let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        command.current_dir(&self.root);
        if let Some(target_dir) = &self.target_dir {
            command.env("CARGO_TARGET_DIR", target_dir);
        }
        command
    }

    fn metadata(&self) -> cargo_metadata::MetadataCommand {
        let mut command = cargo_metadata::MetadataCommand::new();
        command.current_dir(&self.root);
        if let Some(target_dir) = &self.target_dir {
            command.env("CARGO_TARGET_DIR", target_dir);
        }
        command
    }

    /// The host's target triple, from `rustc -vV`.
    fn host(&self) -> Result<String> {
        let output = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
            .arg("-vV")
            .output()
            .context("could not run rustc -vV")?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .map(str::to_owned)
            .context("rustc -vV named no host")
    }

    /// Runs git in the workspace and returns its standard output; fails with its error output.
    fn git(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("git")
            .current_dir(&self.root)
            .args(args)
            .output()
            .with_context(|| format!("could not run git {}", args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Fails unless `git status --porcelain` is empty: a release is made of committed files only.
    fn require_clean(&self) -> Result<()> {
        let status = self.git(&["status", "--porcelain"])?;
        if !status.trim().is_empty() {
            bail!(
                "the working tree is dirty; commit or stash these first (git status --porcelain):\n{}",
                status.trim_end()
            );
        }
        Ok(())
    }

    /// The target directory cargo uses for this workspace.
    fn target_directory(&self) -> Result<PathBuf> {
        Ok(self
            .metadata()
            .no_deps()
            .exec()?
            .target_directory
            .into_std_path_buf())
    }
}

/// The metadata crates.io shows and the files every package needs, for each crate in `crates`.
fn readiness(repo: &Repo, crates: &[Crate]) -> Result<()> {
    let metadata = repo.metadata().no_deps().exec()?;
    let mut problems = Vec::new();
    for krate in crates {
        let name = &krate.name;
        let Some(package) = metadata
            .workspace_packages()
            .into_iter()
            .find(|package| package.name.as_str() == name)
        else {
            continue;
        };
        for (field, present) in [
            ("description", package.description.is_some()),
            ("license", package.license.is_some()),
            ("repository", package.repository.is_some()),
            ("readme", package.readme.is_some()),
            ("keywords", !package.keywords.is_empty()),
        ] {
            if !present {
                problems.push(format!("{name}: Cargo.toml has no `{field}`"));
            }
        }
        let dir = repo.root.join(&krate.dir);
        for file in ["README.md", "CHANGELOG.md"]
            .into_iter()
            .chain(LICENSE_FILES)
        {
            if !dir.join(file).is_file() {
                problems.push(format!("{name}: {file} is missing"));
            }
        }
    }
    if !problems.is_empty() {
        bail!("not ready to publish:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// The files of a `.crate`, as `tar` lists them.
fn crate_files(path: &Path) -> Result<BTreeSet<String>> {
    let output = Command::new("tar")
        .arg("-tzf")
        .arg(path)
        .output()
        .with_context(|| format!("could not run tar -tzf {}", path.display()))?;
    if !output.status.success() {
        bail!(
            "tar -tzf {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// `--dry-run`: packages every crate, checks the licence files in each package, writes the SBOMs;
/// returns the summary to print.
fn dry_run(repo: &Repo, out: Option<&Path>, verify: bool, binaries: &[&str]) -> Result<String> {
    repo.require_clean()?;
    let crates = plan::plan(repo)?;
    eprint!("{}", plan::table(&crates));
    readiness(repo, &crates)?;
    let target = repo.target_directory()?;
    let out = out.map_or_else(|| target.join("release-artifacts"), Path::to_path_buf);
    std::fs::create_dir_all(&out).with_context(|| format!("could not create {}", out.display()))?;

    // All crates in one `cargo package`: cargo then resolves each crate's dependencies on the
    // others against the packages it just made (a local registry overlay), not crates.io, where a
    // first release finds nothing. Offline: everything it needs is in Cargo.lock and the cache.
    let mut command = repo.cargo();
    command.args(["package", "--offline", "--locked"]);
    if !verify {
        command.arg("--no-verify");
    }
    for krate in &crates {
        command.args(["-p", &krate.name]);
    }
    eprintln!("xtask release: {command:?}");
    let status = command.status().context("could not run cargo package")?;
    if !status.success() {
        bail!("cargo package exited with {status}");
    }

    let mut summary = String::from("\nxtask release --dry-run:\n");
    let mut problems = Vec::new();
    for krate in &crates {
        let stem = format!("{}-{}", krate.name, krate.current);
        let packaged = target.join("package").join(format!("{stem}.crate"));
        let files = crate_files(&packaged)?;
        let missing: Vec<&str> = LICENSE_FILES
            .into_iter()
            .filter(|file| !files.contains(&format!("{stem}/{file}")))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{}: the package lacks {}",
                krate.name,
                missing.join(", ")
            ));
        }
        let copy = out.join(format!("{stem}.crate"));
        std::fs::copy(&packaged, &copy).with_context(|| {
            format!(
                "could not copy {} to {}",
                packaged.display(),
                copy.display()
            )
        })?;
        let size = std::fs::metadata(&copy).map(|file| file.len()).unwrap_or(0);
        summary.push_str(&format!(
            "  {stem}.crate: {} files, {:.1} KiB, licences {}\n",
            files.iter().filter(|file| !file.ends_with('/')).count(),
            size as f64 / 1024.0,
            if missing.is_empty() { "ok" } else { "MISSING" },
        ));
    }
    if !problems.is_empty() {
        bail!(
            "packages without their licence files:\n  {}",
            problems.join("\n  ")
        );
    }
    let libraries: Vec<String> = crates.iter().map(|krate| krate.name.clone()).collect();
    let binaries: Vec<String> = binaries.iter().map(|name| (*name).to_owned()).collect();
    let written = sbom::write(repo, &libraries, &binaries, &out)?;
    for path in &written {
        let components = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|bom| bom["components"].as_array().map(Vec::len))
            .unwrap_or(0);
        summary.push_str(&format!(
            "  {}: CycloneDX 1.5, {components} components\n",
            path.file_name()
                .map(|name| name.to_string_lossy())
                .unwrap_or_default()
        ));
    }
    let releases: Vec<String> = crates
        .iter()
        .filter_map(|krate| {
            krate
                .release
                .version()
                .map(|version| format!("{} {version}", krate.name))
        })
        .collect();
    summary.push_str(&format!(
        "  {} packaged ({}), artifacts in {}\n  would release: {}\n",
        crates.len(),
        if verify {
            "verified by building each"
        } else {
            "not verified"
        },
        out.display(),
        if releases.is_empty() {
            "nothing".to_owned()
        } else {
            releases.join(", ")
        },
    ));
    Ok(summary)
}

/// `--execute`: moves the changelog sections, bumps versions and requirements, commits and tags;
/// returns the summary with the publishing commands.
fn execute(repo: &Repo, date: &str) -> Result<String> {
    repo.require_clean()?;
    check_date(date)?;
    let crates = plan::plan(repo)?;
    eprint!("{}", plan::table(&crates));
    let undocumented: Vec<String> = crates
        .iter()
        .filter(|krate| krate.release.version().is_some() && krate.undocumented())
        .map(|krate| {
            format!(
                "{}: {} commits since its last tag, but the `Unreleased` section of {} is empty",
                krate.name,
                krate.commits_since_tag,
                krate.dir.join("CHANGELOG.md").display()
            )
        })
        .collect();
    if !undocumented.is_empty() {
        bail!(
            "write the changes down before releasing:\n  {}",
            undocumented.join("\n  ")
        );
    }
    let releases: Vec<&Crate> = crates
        .iter()
        .filter(|krate| krate.release.version().is_some())
        .collect();
    if releases.is_empty() {
        return Ok("xtask release: nothing to release\n".to_owned());
    }

    let metadata = repo.metadata().no_deps().exec()?;
    let mut manifests: Vec<PathBuf> = vec![repo.root.join("Cargo.toml")];
    manifests.extend(
        metadata
            .workspace_packages()
            .iter()
            .map(|package| package.manifest_path.clone().into_std_path_buf()),
    );
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    for krate in &releases {
        let Some(version) = krate.release.version() else {
            continue;
        };
        let version = version.to_string();
        let dir = repo.root.join(&krate.dir);
        let changelog_path = dir.join("CHANGELOG.md");
        let text = std::fs::read_to_string(&changelog_path)
            .with_context(|| format!("could not read {}", changelog_path.display()))?;
        let note = (!krate.moved_dependencies.is_empty()).then(|| {
            let requires: Vec<String> = krate
                .moved_dependencies
                .iter()
                .filter_map(|name| {
                    let moved = crates.iter().find(|other| &other.name == name)?;
                    Some(format!("`{name}` {}", moved.release.version()?))
                })
                .collect();
            format!("### Changed\n\n- Requires {}.", requires.join(", "))
        });
        let released = changelog::release(&text, &version, date, note.as_deref())
            .with_context(|| format!("{}: {}", krate.name, changelog_path.display()))?;
        std::fs::write(&changelog_path, released)?;
        touched.insert(changelog_path);

        if matches!(krate.release, Release::Bump { .. }) {
            let manifest_path = dir.join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest_path)?;
            let bumped = manifest::set_package_version(&text, &version)
                .with_context(|| format!("{}", manifest_path.display()))?;
            std::fs::write(&manifest_path, bumped)?;
            touched.insert(manifest_path);
        }
        if !matches!(krate.release, Release::First(_)) {
            for path in &manifests {
                let text = std::fs::read_to_string(path)?;
                let (updated, changed) = manifest::set_requirement(&text, &krate.name, &version)
                    .with_context(|| format!("{}", path.display()))?;
                if changed {
                    std::fs::write(path, updated)?;
                    touched.insert(path.clone());
                }
            }
        }
    }
    // The lock file records the members' versions: refresh those entries only.
    let status = repo
        .cargo()
        .args(["update", "--workspace", "--offline", "--quiet"])
        .status()
        .context("could not run cargo update --workspace")?;
    if !status.success() {
        bail!("cargo update --workspace --offline exited with {status}");
    }
    let lock = repo.root.join("Cargo.lock");
    if lock.is_file() {
        touched.insert(lock);
    }

    let released: Vec<String> = releases
        .iter()
        .filter_map(|krate| Some(format!("{} {}", krate.name, krate.release.version()?)))
        .collect();
    let message = format!("release: {}", released.join(", "));
    let mut add = vec!["add", "--"];
    let paths: Vec<String> = touched
        .iter()
        .map(|path| path.to_string_lossy().into_owned())
        .collect();
    add.extend(paths.iter().map(String::as_str));
    repo.git(&add)?;
    repo.git(&["commit", "--quiet", "-m", &message])?;
    let mut tags = Vec::new();
    for krate in &releases {
        let Some(version) = krate.release.version() else {
            continue;
        };
        let tag = krate.tag(version);
        repo.git(&[
            "tag",
            "-a",
            &tag,
            "-m",
            &format!("{} {version}", krate.name),
        ])?;
        tags.push(tag);
    }

    let mut summary = format!(
        "\nxtask release --execute: committed `{message}`, tagged {}\n",
        tags.join(", ")
    );
    summary.push_str(
        "Check the commit (git show), then push it and the tags, and publish in this order:\n",
    );
    summary.push_str(&format!("  git push origin HEAD {}\n", tags.join(" ")));
    for krate in &releases {
        summary.push_str(&format!("  cargo publish -p {}\n", krate.name));
    }
    Ok(summary)
}

/// Refuses a date that is not `YYYY-MM-DD`.
fn check_date(date: &str) -> Result<()> {
    let parts: Vec<&str> = date.split('-').collect();
    let shaped = parts.len() == 3
        && [4, 2, 2].iter().zip(&parts).all(|(length, part)| {
            part.len() == *length && part.bytes().all(|byte| byte.is_ascii_digit())
        });
    if !shaped {
        bail!("--date must be YYYY-MM-DD, not `{date}`");
    }
    Ok(())
}

/// Today's date in UTC, `YYYY-MM-DD`.
fn today() -> Result<String> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    Ok(civil_date(seconds / 86_400))
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> String {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests;
