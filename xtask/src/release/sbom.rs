//! CycloneDX 1.5 JSON software bills of materials, from `cargo metadata` and `Cargo.lock`.
//!
//! One per library crate (every dependency any of its features may pull in, on every platform) and
//! one per binary (the dependencies it is built with on this host). Deterministic: sorted, no
//! timestamp and no serial number, so that two dry runs of one commit write the same files.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cargo_metadata::{CargoOpt, DependencyKind, Metadata, Package, PackageId};
use serde_json::{Value, json};

use super::Repo;

/// `pkg:cargo/name@version`, the package URL of a crate (also its `bom-ref`).
fn purl(package: &Package) -> String {
    format!("pkg:cargo/{}@{}", package.name, package.version)
}

/// The SHA-256 checksums of `Cargo.lock` (registry packages have one), by name and version.
pub(crate) fn lock_checksums(lock: &str) -> Result<BTreeMap<(String, String), String>> {
    #[derive(serde::Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<Locked>,
    }
    #[derive(serde::Deserialize)]
    struct Locked {
        name: String,
        version: String,
        checksum: Option<String>,
    }
    let lock: Lock = toml::from_str(lock).context("Cargo.lock is not valid TOML")?;
    Ok(lock
        .package
        .into_iter()
        .filter_map(|locked| Some(((locked.name, locked.version), locked.checksum?)))
        .collect())
}

/// The `license` of a manifest as an SPDX expression: old manifests write `MIT/Apache-2.0` (or
/// `Apache-2.0 / MIT`) where SPDX says `MIT OR Apache-2.0`.
fn spdx_expression(license: &str) -> String {
    let spaced = license.replace('/', " OR ");
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A CycloneDX component for one package.
fn component(
    package: &Package,
    kind: &str,
    checksums: &BTreeMap<(String, String), String>,
) -> Value {
    let mut component = json!({
        "type": kind,
        "bom-ref": purl(package),
        "name": package.name.as_str(),
        "version": package.version.to_string(),
        "purl": purl(package),
    });
    let licenses = match (&package.license, &package.license_file) {
        (Some(license), _) => json!([{ "expression": spdx_expression(license) }]),
        (None, Some(file)) => json!([{ "license": { "name": format!("see {file}") } }]),
        (None, None) => Value::Null,
    };
    if !licenses.is_null() {
        component["licenses"] = licenses;
    }
    let key = (package.name.to_string(), package.version.to_string());
    if let Some(checksum) = checksums.get(&key) {
        component["hashes"] = json!([{ "alg": "SHA-256", "content": checksum }]);
    }
    component
}

/// The bill of materials of `root`: the packages its normal and build dependencies reach in the
/// resolve of `metadata`, with the dependency graph between them.
pub(crate) fn bom(
    metadata: &Metadata,
    root: &PackageId,
    kind: &str,
    checksums: &BTreeMap<(String, String), String>,
) -> Result<Value> {
    let resolve = metadata
        .resolve
        .as_ref()
        .context("cargo metadata gave no resolve")?;
    let nodes: BTreeMap<&PackageId, _> =
        resolve.nodes.iter().map(|node| (&node.id, node)).collect();
    let packages: BTreeMap<&PackageId, &Package> = metadata
        .packages
        .iter()
        .map(|package| (&package.id, package))
        .collect();
    let package = |id: &PackageId| {
        packages
            .get(id)
            .copied()
            .with_context(|| format!("cargo metadata has no package {id}"))
    };
    let mut reached: BTreeSet<&PackageId> = BTreeSet::from([root]);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut queue = VecDeque::from([root]);
    while let Some(id) = queue.pop_front() {
        let node = nodes
            .get(id)
            .with_context(|| format!("the resolve has no node {id}"))?;
        let from = purl(package(id)?);
        let on = edges.entry(from).or_default();
        for dependency in &node.deps {
            let used = dependency
                .dep_kinds
                .iter()
                .any(|kind| matches!(kind.kind, DependencyKind::Normal | DependencyKind::Build));
            if !used {
                continue;
            }
            on.insert(purl(package(&dependency.pkg)?));
            if reached.insert(&dependency.pkg) {
                queue.push_back(&dependency.pkg);
            }
        }
    }
    let mut components: Vec<Value> = reached
        .iter()
        .filter(|id| **id != root)
        .map(|id| Ok(component(package(id)?, "library", checksums)))
        .collect::<Result<_>>()?;
    components.sort_by_key(|component| component["bom-ref"].as_str().map(str::to_owned));
    components.dedup_by_key(|component| component["bom-ref"].as_str().map(str::to_owned));
    let dependencies: Vec<Value> = edges
        .into_iter()
        .map(|(from, on)| json!({ "ref": from, "dependsOn": on }))
        .collect();
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "tools": { "components": [{ "type": "application", "name": "cargo xtask release" }] },
            "component": component(package(root)?, kind, checksums),
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

/// Writes `<name>-<version>.cdx.json` into `out` for each library crate in `libraries` and each
/// binary package in `binaries`; returns the files written.
pub(crate) fn write(
    repo: &Repo,
    libraries: &[String],
    binaries: &[String],
    out: &Path,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("could not create {}", out.display()))?;
    let lock = std::fs::read_to_string(repo.root.join("Cargo.lock")).unwrap_or_default();
    let checksums = lock_checksums(&lock)?;
    let mut written = Vec::new();
    let mut write_bom = |metadata: &Metadata, name: &str, kind: &str| -> Result<()> {
        let package = metadata
            .workspace_packages()
            .into_iter()
            .find(|package| package.name.as_str() == name)
            .with_context(|| format!("no workspace package `{name}`"))?;
        let bom = bom(metadata, &package.id, kind, &checksums)?;
        let path = out.join(format!("{}-{}.cdx.json", package.name, package.version));
        std::fs::write(&path, serde_json::to_string_pretty(&bom)? + "\n")
            .with_context(|| format!("could not write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    if !libraries.is_empty() {
        let every_feature = repo.metadata().features(CargoOpt::AllFeatures).exec()?;
        for name in libraries {
            write_bom(&every_feature, name, "library")?;
        }
    }
    if !binaries.is_empty() {
        let host = repo.host()?;
        let as_built = repo
            .metadata()
            .other_options(vec!["--filter-platform".to_owned(), host])
            .exec()?;
        for name in binaries {
            write_bom(&as_built, name, "application")?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_licence_separators_become_spdx_or() {
        assert_eq!(spdx_expression("MIT/Apache-2.0"), "MIT OR Apache-2.0");
        assert_eq!(spdx_expression("Apache-2.0 / MIT"), "Apache-2.0 OR MIT");
        assert_eq!(
            spdx_expression("(MIT OR Apache-2.0) AND Unicode-3.0"),
            "(MIT OR Apache-2.0) AND Unicode-3.0"
        );
    }

    #[test]
    fn lock_checksums_come_from_registry_packages_only() {
        let lock = r#"
version = 4

[[package]]
name = "a"
version = "0.1.0"

[[package]]
name = "serde"
version = "1.0.229"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "0123abcd"
"#;
        let checksums = lock_checksums(lock).unwrap();
        assert_eq!(
            checksums,
            BTreeMap::from([(
                ("serde".to_owned(), "1.0.229".to_owned()),
                "0123abcd".to_owned()
            )])
        );
    }
}
