//! `cargo xtask release`: checks that every library crate is ready to publish.
//!
//! A publishable crate has the metadata crates.io shows (description, license, repository, readme,
//! keywords), a README and a CHANGELOG with an `Unreleased` section, and packages cleanly.

use anyhow::{Result, bail};

use crate::{cargo, run_command, workspace_root};

pub(crate) fn run() -> Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(workspace_root())
        .no_deps()
        .exec()?;
    let mut problems = Vec::new();
    for package in metadata.workspace_packages() {
        if package.publish.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let name = &package.name;
        let dir = package.manifest_path.parent().map(|dir| dir.to_path_buf());
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
        if let Some(dir) = dir {
            if !dir.join("README.md").is_file() {
                problems.push(format!("{name}: README.md is missing"));
            }
            match std::fs::read_to_string(dir.join("CHANGELOG.md")) {
                Ok(text) if text.contains("## [Unreleased]") => {}
                Ok(_) => problems.push(format!(
                    "{name}: CHANGELOG.md has no `## [Unreleased]` section"
                )),
                Err(_) => problems.push(format!("{name}: CHANGELOG.md is missing")),
            }
        }
        run_command(cargo().args([
            "package",
            "--no-verify",
            "--allow-dirty",
            "--list",
            "-p",
            name,
        ]))?;
    }
    if problems.is_empty() {
        eprintln!("xtask release: every library crate is ready to publish");
        Ok(())
    } else {
        bail!("not ready to publish:\n  {}", problems.join("\n  "))
    }
}
