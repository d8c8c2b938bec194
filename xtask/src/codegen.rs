//! `cargo xtask codegen [--check]`: the generated files, written deterministically.
//!
//! - `docs/openapi.json`: the OpenAPI document, printed by `mainstay-api openapi` from the API's code.
//! - `docs/configuration.md`: every configuration key, printed by `mainstay-api config reference`
//!   from the configuration types.
//!
//! With `--check` nothing is written; a stale or missing file fails with the command that fixes it.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// Each generated file: its path under the workspace root and the `mainstay-api` arguments that
/// print its content.
const GENERATED: &[(&str, &[&str])] = &[
    ("docs/openapi.json", &["openapi"]),
    ("docs/configuration.md", &["config", "reference"]),
];

pub(crate) fn run(check: bool) -> Result<()> {
    let api_bin = crate::ci::build_api()?;
    let mut stale = Vec::new();
    for (path, args) in GENERATED {
        let output = Command::new(&api_bin)
            .args(*args)
            .output()
            .with_context(|| format!("could not run {} {}", api_bin.display(), args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "mainstay-api {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let fresh = String::from_utf8(output.stdout).context("generated text is not UTF-8")?;
        let target = workspace_root().join(path);
        let current = std::fs::read_to_string(&target).unwrap_or_default();
        if current == fresh {
            continue;
        }
        if check {
            stale.push(*path);
        } else {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&target, fresh).with_context(|| format!("could not write {path}"))?;
            eprintln!("xtask codegen: wrote {path}");
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated files are stale: {}; run `cargo xtask codegen` and commit the result",
            stale.join(", ")
        );
    }
    Ok(())
}
