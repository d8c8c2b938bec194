//! `cargo xtask deps`: the dependency rules between workspace crates, read from `cargo metadata`.
//!
//! The rules (ARCHITECTURE.md, "Invariants"):
//! - the shared base: every library may depend on `clock` and `journal`; `clock` depends on no
//!   crate of ours, `journal` only on `clock`;
//! - other allowed edges between libraries: `ratelimit -> resilience`,
//!   `storage-tiering -> resilience, dlq`;
//! - any library may depend on `health`, but only as an optional dependency enabled by a feature
//!   named `health`;
//! - no library depends on `telemetry`, on `mainstay-api`, on `mainstay-tests` or on `xtask`;
//! - `mainstay-api` and `mainstay-tests` may depend on every library; `xtask` on none.
//!
//! Dev-dependencies count too: a library's tests may not pull in a crate its code may not use,
//! except the crate itself and `health` (to test a `health` feature).

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use cargo_metadata::{DependencyKind, Metadata, Package};

use crate::workspace_root;

/// The base below every library: the one time source, which depends on no crate of ours.
const CLOCK: &str = "mainstay-clock";

/// The base's framed log, atomic replace and directory lock, which depends only on [`CLOCK`].
const JOURNAL: &str = "mainstay-journal";

/// Library-to-library edges that are allowed without conditions.
const ALLOWED_LIBRARY_EDGES: &[(&str, &str)] = &[
    ("mainstay-ratelimit", "mainstay-resilience"),
    ("mainstay-storage-tiering", "mainstay-resilience"),
    ("mainstay-storage-tiering", "mainstay-dlq"),
];

/// Members that compose everything.
const COMPOSERS: &[&str] = &["mainstay-api", "mainstay-tests"];

pub(crate) fn run() -> Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(workspace_root())
        .no_deps()
        .exec()?;
    let violations = violations(&metadata);
    if violations.is_empty() {
        eprintln!("xtask deps: every dependency edge between workspace crates is allowed");
        Ok(())
    } else {
        bail!("forbidden dependency edges:\n  {}", violations.join("\n  "))
    }
}

fn violations(metadata: &Metadata) -> Vec<String> {
    let members: BTreeSet<String> = metadata
        .workspace_packages()
        .iter()
        .map(|package| package.name.to_string())
        .collect();
    let mut violations = Vec::new();
    for package in metadata.workspace_packages() {
        for dependency in &package.dependencies {
            if !members.contains(dependency.name.as_str()) {
                continue;
            }
            if let Some(reason) = forbidden(
                package,
                &dependency.name,
                dependency.optional,
                dependency.kind,
            ) {
                violations.push(format!("{} -> {}: {reason}", package.name, dependency.name));
            }
        }
    }
    violations.extend(cycles(metadata));
    violations
}

fn forbidden(
    package: &Package,
    dependency: &str,
    optional: bool,
    kind: DependencyKind,
) -> Option<String> {
    let from = package.name.as_str();
    if COMPOSERS.contains(&from) {
        return None;
    }
    if from == "xtask" {
        return Some("xtask drives the workspace through cargo and depends on no member".into());
    }
    if COMPOSERS.contains(&dependency) || dependency == "xtask" {
        return Some("no library depends on the app, the e2e tests or xtask".into());
    }
    if dependency == from && kind == DependencyKind::Development {
        // A crate's tests may depend on the crate itself to turn its optional features on.
        return None;
    }
    if dependency == "mainstay-telemetry" {
        return Some("no library depends on telemetry; libraries log with `tracing` only".into());
    }
    if let Some(verdict) = base_verdict(from, dependency) {
        return verdict.err();
    }
    if dependency == "mainstay-health" {
        if kind == DependencyKind::Development {
            // The tests of a `health` feature need the health crate; its code still may not.
            return None;
        }
        let behind_feature = package.features.get("health").is_some_and(|enables| {
            enables
                .iter()
                .any(|item| item == "dep:mainstay-health" || item == "mainstay-health")
        });
        return match (optional && kind == DependencyKind::Normal, behind_feature) {
            (true, true) => None,
            _ => Some("a library may depend on health only as an optional dependency behind its `health` feature".into()),
        };
    }
    if ALLOWED_LIBRARY_EDGES.contains(&(from, dependency)) {
        return None;
    }
    Some("this edge between libraries is not in the allowed list (ARCHITECTURE.md)".into())
}

/// The verdict of the base's rules on an edge between libraries, `None` when they do not decide it:
/// `clock` depends on no crate of ours, `journal` only on `clock`, and every other library may
/// depend on both.
fn base_verdict(from: &str, dependency: &str) -> Option<Result<(), String>> {
    if from == CLOCK {
        return Some(Err(
            "mainstay-clock is the base of every crate and depends on no crate of ours".into(),
        ));
    }
    if from == JOURNAL {
        return Some(if dependency == CLOCK {
            Ok(())
        } else {
            Err("mainstay-journal depends only on mainstay-clock".into())
        });
    }
    (dependency == CLOCK || dependency == JOURNAL).then_some(Ok(()))
}

/// Finds cycles among workspace members (normal and build edges; dev-dependency cycles are legal in
/// cargo but are reported too, as the rules above would already forbid them between libraries).
fn cycles(metadata: &Metadata) -> Vec<String> {
    let packages = metadata.workspace_packages();
    let names: Vec<&str> = packages
        .iter()
        .map(|package| package.name.as_str())
        .collect();
    let edges = |from: &str| -> Vec<&str> {
        packages
            .iter()
            .find(|package| package.name.as_str() == from)
            .map(|package| {
                package
                    .dependencies
                    .iter()
                    .filter(|dependency| dependency.kind != DependencyKind::Development)
                    .filter_map(|dependency| {
                        names.iter().copied().find(|name| *name == dependency.name)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut found = Vec::new();
    for start in &names {
        let mut stack = vec![(*start, vec![*start])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in edges(node) {
                if next == *start {
                    found.push(format!("cycle: {} -> {start}", path.join(" -> ")));
                } else if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push((next, longer));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBRARIES: &[&str] = &[
        "mainstay-dlq",
        "mainstay-health",
        "mainstay-ratelimit",
        "mainstay-resilience",
        "mainstay-storage-tiering",
        "mainstay-telemetry",
    ];

    #[test]
    fn every_library_may_depend_on_the_base() {
        for library in LIBRARIES {
            assert_eq!(base_verdict(library, CLOCK), Some(Ok(())), "{library}");
            assert_eq!(base_verdict(library, JOURNAL), Some(Ok(())), "{library}");
        }
        assert_eq!(base_verdict(JOURNAL, CLOCK), Some(Ok(())));
    }

    #[test]
    fn the_base_depends_on_nothing_above_it() {
        for library in LIBRARIES.iter().chain([&JOURNAL]) {
            assert!(
                matches!(base_verdict(CLOCK, library), Some(Err(_))),
                "{library}"
            );
        }
        for library in LIBRARIES {
            assert!(
                matches!(base_verdict(JOURNAL, library), Some(Err(_))),
                "{library}"
            );
        }
    }

    #[test]
    fn other_edges_are_left_to_the_other_rules() {
        assert_eq!(
            base_verdict("mainstay-ratelimit", "mainstay-resilience"),
            None
        );
        assert_eq!(base_verdict("mainstay-dlq", "mainstay-health"), None);
    }
}
