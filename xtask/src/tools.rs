//! Cargo tools the checks run at a pinned version, each installed once with `cargo install` under
//! `$HOME/.cache/mainstay/<tool>-<version>` (a user-level install, the same as root or not) and
//! reused by every later run on the machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// `$HOME/.cache/mainstay`: the tools, the advisory database and CI's target directory.
pub(crate) fn cache_root() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/mainstay"))
}

/// The binary of the crates.io package `package` (a cargo subcommand named like its package) at
/// `version`, installed first when missing or another version, in a scratch target directory
/// removed afterwards. Fails with the command to run by hand when the install fails.
pub(crate) fn pinned(package: &str, version: &str) -> Result<PathBuf> {
    let install_root = cache_root()?.join(format!("{package}-{version}"));
    let binary = install_root.join("bin").join(package);
    if has_version(&binary, package, version) {
        return Ok(binary);
    }
    let manual = format!(
        "cargo install {package} --version {version} --locked --root {}",
        install_root.display()
    );
    eprintln!("{package} {version} is missing; installing it (minutes): {manual}");
    let scratch = std::env::temp_dir().join(format!("mainstay-{package}-{}", std::process::id()));
    std::fs::create_dir_all(&install_root)
        .with_context(|| format!("could not create {}; run: {manual}", install_root.display()))?;
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        // Outside the workspace, so that none of its cargo configuration applies to the tool.
        .current_dir(&install_root)
        .args([
            "install",
            package,
            "--version",
            version,
            "--locked",
            "--root",
        ])
        .arg(&install_root)
        .env("CARGO_TARGET_DIR", &scratch)
        .status();
    let _ = std::fs::remove_dir_all(&scratch);
    if !status.is_ok_and(|status| status.success()) || !has_version(&binary, package, version) {
        bail!("could not install {package} {version}; run: {manual}");
    }
    Ok(binary)
}

/// Whether `binary` runs and reports the pinned version (`cargo-deny 0.20.2`). A cargo subcommand
/// run by itself is given its own name first, as cargo does (`cargo-hack hack --version`), which
/// the tools that need it expect and the others skip.
fn has_version(binary: &Path, package: &str, version: &str) -> bool {
    let subcommand = package.strip_prefix("cargo-").unwrap_or(package);
    binary.is_file()
        && Command::new(binary)
            .args([subcommand, "--version"])
            .output()
            .is_ok_and(|output| {
                output.status.success()
                    && String::from_utf8_lossy(&output.stdout).trim()
                        == format!("{package} {version}")
            })
}
