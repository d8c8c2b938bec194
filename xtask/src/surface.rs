//! Rules of the publishable libraries' public surface (issue 19 point 2, CONTRIBUTING.md "Public surface"):
//! every public error enum of a publishable library is `#[non_exhaustive]`, so that a new kind of
//! failure is not a breaking change; and no third-party type is in the public API unless the crate
//! README lists it (`crate::public_api`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::workspace_root;

/// Both checks, the second even when the first fails, so that one run shows every finding.
pub(crate) fn run() -> Result<()> {
    let enums = error_enums();
    let third_party = crate::public_api::run();
    match (enums, third_party) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), Ok(())) | (Ok(()), Err(error)) => Err(error),
        (Err(enums), Err(third_party)) => bail!("{enums:#}\n{third_party:#}"),
    }
}

/// Every public error enum of the publishable libraries is `#[non_exhaustive]`.
fn error_enums() -> Result<()> {
    let root = workspace_root();
    let sources = crate::ci::published_library_sources(&crate::ci::workspace_metadata()?);
    if sources.is_empty() {
        bail!("cargo metadata lists no publishable library in the workspace");
    }
    let mut violations = Vec::new();
    let mut enums = 0;
    for source in &sources {
        for file in rust_files(source)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let relative = file
                .strip_prefix(&root)
                .unwrap_or(&file)
                .display()
                .to_string();
            let (count, found) = exhaustive_error_enums(&text);
            enums += count;
            violations.extend(
                found
                    .into_iter()
                    .map(|(line, name)| format!("{relative}:{line}: pub enum {name}")),
            );
        }
    }
    if violations.is_empty() {
        eprintln!("xtask surface: all {enums} public error enums are #[non_exhaustive]");
        Ok(())
    } else {
        bail!(
            "public error enums without #[non_exhaustive] (a new variant would break users' matches):\n  {}",
            violations.join("\n  ")
        )
    }
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The public error enums of one file (a `pub enum` at the start of a line whose name ends in
/// `Error`), and those among them whose attributes lack `#[non_exhaustive]`, with their 1-based
/// line numbers.
fn exhaustive_error_enums(text: &str) -> (usize, Vec<(usize, String)>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut count = 0;
    let mut found = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("pub enum ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.ends_with("Error") {
            continue;
        }
        count += 1;
        // The attributes and doc comments right above it (an attribute may span lines).
        let marked = lines[..index]
            .iter()
            .rev()
            .take_while(|above| {
                let above = above.trim_start();
                above.starts_with("#[")
                    || above.starts_with("///")
                    || above.starts_with(')')
                    || (above.starts_with('"') || above.ends_with(','))
                        && !above.starts_with("pub ")
            })
            .any(|above| above.contains("#[non_exhaustive]"));
        if !marked {
            found.push((index + 1, name));
        }
    }
    (count, found)
}

#[cfg(test)]
mod tests {
    use super::exhaustive_error_enums;

    #[test]
    fn an_error_enum_without_non_exhaustive_is_found_and_a_marked_one_is_not() {
        let text = r#"
/// Why it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("io")]
    Io,
}

/// Not marked.
#[derive(
    Debug,
    thiserror::Error,
)]
pub enum WriteError<E> {
    #[error("closed")]
    Closed(E),
}

#[derive(Debug)]
pub enum Policy {
    Memory,
}

#[non_exhaustive]
#[derive(Debug)]
#[error("{0}")]
pub enum ReadError {
    X,
}
"#;
        let (count, found) = exhaustive_error_enums(text);
        assert_eq!(count, 3);
        assert_eq!(found, [(15, "WriteError".to_owned())]);
    }
}
