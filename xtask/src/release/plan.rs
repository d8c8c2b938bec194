//! `cargo xtask release plan`: for each publishable crate, in dependency order, the version its
//! changes since its last tag `<crate>-v<version>` require, and the dependents to update.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cargo_metadata::semver::Version;

use super::Repo;
use super::changelog::{self, Level};

/// What a crate's next release is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Release {
    /// Nothing changed since the last tag: no release.
    Nothing,
    /// No tag yet: the version in Cargo.toml is released as it is.
    First(Version),
    /// The version in Cargo.toml was raised by hand above the last tag: released as it is.
    AsIs(Version),
    /// The version the changes require (a patch at least when a dependency gets a new version).
    Bump { level: Level, version: Version },
}

impl Release {
    /// The version to release, if any.
    pub(crate) fn version(&self) -> Option<&Version> {
        match self {
            Self::Nothing => None,
            Self::First(version) | Self::AsIs(version) | Self::Bump { version, .. } => {
                Some(version)
            }
        }
    }

    /// Whether dependents must take a new requirement: a first release changes nothing they say.
    fn moves_requirements(&self) -> bool {
        matches!(self, Self::AsIs(_) | Self::Bump { .. })
    }
}

/// The version `current` becomes for changes of `level`: on 0.x a breaking change bumps the minor
/// and anything else the patch (Cargo's rule for 0.x compatibility); from 1.0 on, SemVer.
pub(crate) fn bump(current: &Version, level: Level) -> Version {
    match (current.major, level) {
        (0, Level::Breaking) => Version::new(0, current.minor + 1, 0),
        (0, _) | (_, Level::Patch) => Version::new(current.major, current.minor, current.patch + 1),
        (_, Level::Minor) => Version::new(current.major, current.minor + 1, 0),
        (_, Level::Breaking) => Version::new(current.major + 1, 0, 0),
    }
}

/// The next release of a crate at `current` whose last tag is `last_tag`, given what its
/// changelog's `Unreleased` section asks (`changes`), the commits touching it since the tag, and
/// whether one of its dependencies gets a new version.
pub(crate) fn next_release(
    current: &Version,
    last_tag: Option<&Version>,
    changes: Option<Level>,
    commits_since_tag: usize,
    dependency_moves: bool,
) -> Result<Release> {
    let Some(tagged) = last_tag else {
        return Ok(Release::First(current.clone()));
    };
    if tagged > current {
        bail!("the last tag, v{tagged}, is newer than the version in Cargo.toml, {current}");
    }
    if tagged < current {
        return Ok(Release::AsIs(current.clone()));
    }
    let undocumented = (commits_since_tag > 0).then_some(Level::Patch);
    let dependency = dependency_moves.then_some(Level::Patch);
    Ok(match changes.max(undocumented).max(dependency) {
        None => Release::Nothing,
        Some(level) => Release::Bump {
            level,
            version: bump(current, level),
        },
    })
}

/// One publishable crate in the plan.
#[derive(Debug)]
pub(crate) struct Crate {
    pub(crate) name: String,
    /// The crate's directory, relative to the workspace root.
    pub(crate) dir: PathBuf,
    pub(crate) current: Version,
    pub(crate) last_tag: Option<Version>,
    /// What the `Unreleased` section asks for; `None` when it is empty.
    pub(crate) changes: Option<Level>,
    pub(crate) commits_since_tag: usize,
    /// Publishable crates of the workspace it depends on (any kind but itself).
    pub(crate) dependencies: Vec<String>,
    /// Dependencies that get a new version in this plan.
    pub(crate) moved_dependencies: Vec<String>,
    pub(crate) release: Release,
    /// Workspace members whose requirement on this crate changes (when its version moves).
    pub(crate) dependents: Vec<String>,
}

impl Crate {
    /// The tag of a release of this crate.
    pub(crate) fn tag(&self, version: &Version) -> String {
        format!("{}-v{version}", self.name)
    }

    /// Why the crate is (or is not) released, in a few words.
    pub(crate) fn reason(&self) -> String {
        match &self.release {
            Release::Nothing => "nothing since the tag".to_owned(),
            Release::First(_) => "first release".to_owned(),
            Release::AsIs(_) => "version raised by hand".to_owned(),
            Release::Bump { level, .. } => {
                let mut why = Vec::new();
                if self.changes.is_some() {
                    why.push("changelog".to_owned());
                } else if self.commits_since_tag > 0 {
                    why.push(format!(
                        "{} commits, changelog empty",
                        self.commits_since_tag
                    ));
                }
                if !self.moved_dependencies.is_empty() {
                    why.push(format!("needs {}", self.moved_dependencies.join(", ")));
                }
                format!("{} ({})", level.name(), why.join("; "))
            }
        }
    }

    /// Commits touch the crate but the changelog says nothing: `--execute` refuses this.
    pub(crate) fn undocumented(&self) -> bool {
        self.changes.is_none() && self.commits_since_tag > 0 && self.last_tag.is_some()
    }
}

/// The plan: every publishable crate of the workspace, dependencies first.
pub(crate) fn plan(repo: &Repo) -> Result<Vec<Crate>> {
    let metadata = repo.metadata().no_deps().exec()?;
    let members = metadata.workspace_packages();
    let publishable: BTreeMap<&str, _> = members
        .iter()
        .filter(|package| !package.publish.as_ref().is_some_and(Vec::is_empty))
        .map(|package| (package.name.as_str(), *package))
        .collect();
    let dependencies: BTreeMap<&str, BTreeSet<&str>> = publishable
        .iter()
        .map(|(name, package)| {
            let on = package
                .dependencies
                .iter()
                .map(|dependency| dependency.name.as_str())
                .filter(|dependency| dependency != name && publishable.contains_key(dependency))
                .collect();
            (*name, on)
        })
        .collect();
    let order = dependency_order(&dependencies)?;

    let mut crates: Vec<Crate> = Vec::new();
    for name in order {
        let package = publishable[name];
        let manifest_dir = package
            .manifest_path
            .parent()
            .context("a manifest path without a directory")?;
        let dir = manifest_dir.strip_prefix(&repo.root).map_or_else(
            |_| manifest_dir.as_std_path().to_path_buf(),
            |dir| dir.as_std_path().to_path_buf(),
        );
        let changelog_path = manifest_dir.join("CHANGELOG.md");
        let text = std::fs::read_to_string(&changelog_path)
            .with_context(|| format!("{name}: could not read {changelog_path}"))?;
        let changes = changelog::level(
            changelog::unreleased(&text).with_context(|| format!("{name}: {changelog_path}"))?,
        );
        let last_tag = last_tag(repo, name)?;
        let commits_since_tag = match &last_tag {
            Some(version) => {
                let range = format!("{name}-v{version}..HEAD");
                let count =
                    repo.git(&["rev-list", "--count", &range, "--", &dir.to_string_lossy()])?;
                count
                    .trim()
                    .parse()
                    .with_context(|| format!("git rev-list said `{count}`"))?
            }
            None => 0,
        };
        let crate_dependencies: Vec<String> = dependencies[name]
            .iter()
            .map(|name| (*name).to_owned())
            .collect();
        let moved_dependencies: Vec<String> = crates
            .iter()
            .filter(|earlier| earlier.release.moves_requirements())
            .filter(|earlier| crate_dependencies.contains(&earlier.name))
            .map(|earlier| earlier.name.clone())
            .collect();
        let release = next_release(
            &package.version,
            last_tag.as_ref(),
            changes,
            commits_since_tag,
            !moved_dependencies.is_empty(),
        )
        .with_context(|| format!("{name}: its tags and Cargo.toml disagree"))?;
        let dependents = if release.moves_requirements() {
            members
                .iter()
                .filter(|member| member.name.as_str() != name)
                .filter(|member| {
                    member
                        .dependencies
                        .iter()
                        .any(|dependency| dependency.name == name)
                })
                .map(|member| member.name.to_string())
                .collect()
        } else {
            Vec::new()
        };
        crates.push(Crate {
            name: name.to_owned(),
            dir,
            current: package.version.clone(),
            last_tag,
            changes,
            commits_since_tag,
            dependencies: crate_dependencies,
            moved_dependencies,
            release,
            dependents,
        });
    }
    Ok(crates)
}

/// The highest version among the tags `<name>-v<version>`.
fn last_tag(repo: &Repo, name: &str) -> Result<Option<Version>> {
    let prefix = format!("{name}-v");
    let tags = repo.git(&["tag", "--list", &format!("{prefix}*")])?;
    Ok(tags
        .lines()
        .filter_map(|tag| tag.trim().strip_prefix(&prefix))
        .filter_map(|version| Version::parse(version).ok())
        .max())
}

/// The crates in an order where each comes after the crates it depends on; ties alphabetical.
fn dependency_order<'a>(
    dependencies: &BTreeMap<&'a str, BTreeSet<&'a str>>,
) -> Result<Vec<&'a str>> {
    let mut order: Vec<&str> = Vec::new();
    let mut left: BTreeMap<&str, &BTreeSet<&str>> =
        dependencies.iter().map(|(name, on)| (*name, on)).collect();
    while !left.is_empty() {
        let ready: Vec<&str> = left
            .iter()
            .filter(|(_, on)| on.iter().all(|dependency| order.contains(dependency)))
            .map(|(name, _)| *name)
            .collect();
        if ready.is_empty() {
            let cycle: Vec<&str> = left.keys().copied().collect();
            bail!(
                "the crates {} depend on each other in a cycle",
                cycle.join(", ")
            );
        }
        for name in ready {
            left.remove(name);
            order.push(name);
        }
    }
    Ok(order)
}

/// The plan as a table, one line per crate.
pub(crate) fn table(crates: &[Crate]) -> String {
    let mut rows = vec![[
        "crate".to_owned(),
        "current".to_owned(),
        "last tag".to_owned(),
        "changelog".to_owned(),
        "release".to_owned(),
        "why".to_owned(),
        "dependents to update".to_owned(),
    ]];
    for krate in crates {
        rows.push([
            krate.name.clone(),
            krate.current.to_string(),
            krate
                .last_tag
                .as_ref()
                .map_or_else(|| "none".to_owned(), |version| krate.tag(version)),
            krate.changes.map_or("empty", Level::name).to_owned(),
            krate
                .release
                .version()
                .map_or_else(|| "-".to_owned(), ToString::to_string),
            krate.reason(),
            if krate.dependents.is_empty() {
                "-".to_owned()
            } else {
                krate.dependents.join(", ")
            },
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The plan as JSON, for scripts.
pub(crate) fn json(crates: &[Crate]) -> serde_json::Value {
    serde_json::Value::Array(
        crates
            .iter()
            .map(|krate| {
                serde_json::json!({
                    "name": krate.name,
                    "dir": krate.dir,
                    "current": krate.current.to_string(),
                    "last_tag": krate.last_tag.as_ref().map(|version| krate.tag(version)),
                    "changes": krate.changes.map(Level::name),
                    "commits_since_tag": krate.commits_since_tag,
                    "dependencies": krate.dependencies,
                    "release": krate.release.version().map(ToString::to_string),
                    "reason": krate.reason(),
                    "dependents": krate.dependents,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn zero_x_breaking_bumps_the_minor_and_everything_else_the_patch() {
        assert_eq!(bump(&v("0.3.2"), Level::Breaking), v("0.4.0"));
        assert_eq!(bump(&v("0.3.2"), Level::Minor), v("0.3.3"));
        assert_eq!(bump(&v("0.3.2"), Level::Patch), v("0.3.3"));
        assert_eq!(bump(&v("0.0.7"), Level::Breaking), v("0.1.0"));
    }

    #[test]
    fn from_one_on_the_bump_follows_semver() {
        assert_eq!(bump(&v("1.4.2"), Level::Breaking), v("2.0.0"));
        assert_eq!(bump(&v("1.4.2"), Level::Minor), v("1.5.0"));
        assert_eq!(bump(&v("1.4.2"), Level::Patch), v("1.4.3"));
    }

    #[test]
    fn next_release_reads_tag_changes_commits_and_dependencies() {
        let current = v("0.2.0");
        let tag = Some(&current);
        let bumped = |level, version: &str| Release::Bump {
            level,
            version: v(version),
        };
        for (last_tag, changes, commits, dependency, expected) in [
            // No tag: the first release, of the version as it is, whatever the changelog says.
            (
                None,
                Some(Level::Breaking),
                4,
                true,
                Release::First(v("0.2.0")),
            ),
            (None, None, 0, false, Release::First(v("0.2.0"))),
            // Tagged, nothing since.
            (tag, None, 0, false, Release::Nothing),
            (
                tag,
                Some(Level::Breaking),
                1,
                false,
                bumped(Level::Breaking, "0.3.0"),
            ),
            (
                tag,
                Some(Level::Minor),
                1,
                false,
                bumped(Level::Minor, "0.2.1"),
            ),
            (
                tag,
                Some(Level::Patch),
                0,
                false,
                bumped(Level::Patch, "0.2.1"),
            ),
            // Commits without a changelog entry, or only a dependency's new version: a patch.
            (tag, None, 3, false, bumped(Level::Patch, "0.2.1")),
            (tag, None, 0, true, bumped(Level::Patch, "0.2.1")),
            (
                tag,
                Some(Level::Breaking),
                0,
                true,
                bumped(Level::Breaking, "0.3.0"),
            ),
            // Raised by hand above the last tag: as it is.
            (Some(&v("0.1.4")), None, 0, false, Release::AsIs(v("0.2.0"))),
        ] {
            assert_eq!(
                next_release(&current, last_tag, changes, commits, dependency).unwrap(),
                expected,
                "{last_tag:?} {changes:?} {commits} {dependency}"
            );
        }
        let newer = next_release(&current, Some(&v("0.3.0")), None, 0, false).unwrap_err();
        assert!(
            newer
                .to_string()
                .contains("newer than the version in Cargo.toml"),
            "{newer}"
        );
        let one = v("1.2.3");
        assert_eq!(
            next_release(&one, Some(&one), Some(Level::Minor), 1, false).unwrap(),
            bumped(Level::Minor, "1.3.0")
        );
    }

    #[test]
    fn dependencies_come_first_and_cycles_are_refused() {
        let graph: BTreeMap<&str, BTreeSet<&str>> = [
            ("app", BTreeSet::from(["b", "a"])),
            ("b", BTreeSet::from(["a"])),
            ("a", BTreeSet::new()),
            ("c", BTreeSet::new()),
        ]
        .into_iter()
        .collect();
        assert_eq!(dependency_order(&graph).unwrap(), ["a", "c", "b", "app"]);
        let cycle: BTreeMap<&str, BTreeSet<&str>> =
            [("a", BTreeSet::from(["b"])), ("b", BTreeSet::from(["a"]))]
                .into_iter()
                .collect();
        assert!(
            dependency_order(&cycle)
                .unwrap_err()
                .to_string()
                .contains("cycle")
        );
    }
}
