//! Format-preserving edits of Cargo.toml files: a package's version and the version requirements
//! on a dependency, wherever they are written (`[workspace.dependencies]`, `[dependencies]`,
//! `[dev-dependencies]`, `[build-dependencies]` and their `[target.'cfg(..)'.*]` forms).

use anyhow::{Context, Result};
use toml_edit::{DocumentMut, Item, TableLike, Value, value};

/// Sets a value to the string `version`, keeping the spaces and comment around it.
fn replace(item: &mut Item, version: &str) {
    if let Some(old) = item.as_value_mut() {
        let decor = old.decor().clone();
        *old = Value::from(version);
        *old.decor_mut() = decor;
    } else {
        *item = value(version);
    }
}

/// The manifest with `[package] version` set to `version` (replacing `version.workspace = true`).
pub(crate) fn set_package_version(text: &str, version: &str) -> Result<String> {
    let mut document: DocumentMut = text.parse().context("Cargo.toml is not valid TOML")?;
    let package = document
        .get_mut("package")
        .and_then(Item::as_table_like_mut)
        .context("Cargo.toml has no [package] table")?;
    package.insert("version", value(version));
    Ok(document.to_string())
}

/// The manifest with every requirement on `dependency` that names a version set to `version`, and
/// whether anything changed. Entries that inherit (`workspace = true`) or name only a path stay.
pub(crate) fn set_requirement(
    text: &str,
    dependency: &str,
    version: &str,
) -> Result<(String, bool)> {
    let mut document: DocumentMut = text.parse().context("Cargo.toml is not valid TOML")?;
    let mut changed = false;
    let mut update = |table: &mut dyn TableLike| {
        for (key, entry) in table.iter_mut() {
            if let Some(requirement) = entry.as_value().filter(|entry| entry.is_str()) {
                if key.get() == dependency && requirement.as_str() != Some(version) {
                    replace(entry, version);
                    changed = true;
                }
                continue;
            }
            let Some(entry) = entry.as_table_like_mut() else {
                continue;
            };
            let package = entry
                .get("package")
                .and_then(Item::as_str)
                .unwrap_or(key.get());
            if package != dependency {
                continue;
            }
            if let Some(requirement) = entry.get_mut("version")
                && requirement.as_str() != Some(version)
            {
                replace(requirement, version);
                changed = true;
            }
        }
    };
    const KINDS: [&str; 4] = [
        "dependencies",
        "dev-dependencies",
        "dev_dependencies",
        "build-dependencies",
    ];
    for kind in KINDS {
        if let Some(table) = document.get_mut(kind).and_then(Item::as_table_like_mut) {
            update(table);
        }
    }
    if let Some(table) = document
        .get_mut("workspace")
        .and_then(Item::as_table_like_mut)
        .and_then(|workspace| workspace.get_mut("dependencies"))
        .and_then(Item::as_table_like_mut)
    {
        update(table);
    }
    if let Some(targets) = document.get_mut("target").and_then(Item::as_table_like_mut) {
        for (_, target) in targets.iter_mut() {
            let Some(target) = target.as_table_like_mut() else {
                continue;
            };
            for kind in KINDS {
                if let Some(table) = target.get_mut(kind).and_then(Item::as_table_like_mut) {
                    update(table);
                }
            }
        }
    }
    Ok((document.to_string(), changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_version_replaces_the_inherited_one_in_place() {
        let text = "[package]\nname = \"a\"\nversion.workspace = true\nedition.workspace = true\n\n[dependencies]\n";
        assert_eq!(
            set_package_version(text, "0.2.0").unwrap(),
            "[package]\nname = \"a\"\nversion = \"0.2.0\"\nedition.workspace = true\n\n[dependencies]\n"
        );
        let literal = "[package]\nname = \"a\" # the name\nversion = \"0.1.0\"\n";
        assert_eq!(
            set_package_version(literal, "1.0.0").unwrap(),
            "[package]\nname = \"a\" # the name\nversion = \"1.0.0\"\n"
        );
    }

    #[test]
    fn requirements_change_where_a_version_is_written() {
        let text = r#"[workspace.dependencies]
# Ours.
a = { path = "a", version = "0.1.0" }
serde = "1"

[dependencies]
a = { workspace = true }
renamed = { package = "a", path = "../a", version = "0.1" }
plain = "0.1"

[target.'cfg(unix)'.dev-dependencies]
a = "0.1.0" # a comment
"#;
        let (updated, changed) = set_requirement(text, "a", "0.2.0").unwrap();
        assert!(changed);
        assert_eq!(
            updated,
            r#"[workspace.dependencies]
# Ours.
a = { path = "a", version = "0.2.0" }
serde = "1"

[dependencies]
a = { workspace = true }
renamed = { package = "a", path = "../a", version = "0.2.0" }
plain = "0.1"

[target.'cfg(unix)'.dev-dependencies]
a = "0.2.0" # a comment
"#
        );
        let (same, changed) = set_requirement(&updated, "a", "0.2.0").unwrap();
        assert!(!changed);
        assert_eq!(same, updated);
    }
}
