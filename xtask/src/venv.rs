//! PyPI tools at pinned versions, each in its own virtual environment under
//! `$HOME/.cache/mainstay/<package>-<version>`, made when missing (or failing at once with the
//! commands that make it).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The path of `bin` from `package==version`'s virtual environment, installing it when the
/// environment or the package is missing.
pub(crate) fn tool(package: &str, version: &str, bin: &str) -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = PathBuf::from(home)
        .join(".cache/mainstay")
        .join(format!("{package}-{version}"));
    let path = venv.join("bin").join(bin);
    if path.is_file() && installed(&venv, package, version) {
        return Ok(path);
    }
    let shown = venv.display();
    let manual = format!(
        "python3 -m venv {shown} && {shown}/bin/pip install {package}=={version} (Debian needs `apt-get install -y python3-venv` first)"
    );
    eprintln!("{package} {version} is missing; installing it into {shown}");
    std::fs::create_dir_all(&venv)
        .with_context(|| format!("could not create {shown}; run: {manual}"))?;
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status();
    if !made.is_ok_and(|status| status.success()) {
        bail!("could not create the virtual environment; run: {manual}");
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("{package}=={version}"),
        ])
        .status();
    if !pip.is_ok_and(|status| status.success())
        || !path.is_file()
        || !installed(&venv, package, version)
    {
        bail!("could not install {package} {version}; run: {manual}");
    }
    Ok(path)
}

/// Whether the environment holds `package` at `version`: pip's record of it,
/// `lib/python*/site-packages/<name>-<version>.dist-info` (the name with `-` as `_`, lowercase).
fn installed(venv: &std::path::Path, package: &str, version: &str) -> bool {
    let record = format!(
        "{}-{version}.dist-info",
        package.replace('-', "_").to_lowercase()
    );
    std::fs::read_dir(venv.join("lib")).is_ok_and(|pythons| {
        pythons
            .filter_map(Result::ok)
            .any(|python| python.path().join("site-packages").join(&record).is_dir())
    })
}
