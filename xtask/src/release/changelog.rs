//! The `## [Unreleased]` section of a Keep a Changelog file: what it asks of the next version, and
//! moving it under a released version.

use anyhow::{Result, bail};

/// The weight of a change for semantic versioning, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// A fix, a security fix or any other compatible change: the patch version.
    Patch,
    /// New API (`### Added`) or a deprecation (`### Deprecated`, SemVer 2.0.0 item 7): the minor version.
    Minor,
    /// `### Removed`, `### Breaking`, or any entry marked `BREAKING`: the major version (the minor on 0.x).
    Breaking,
}

impl Level {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Patch => "patch",
            Self::Minor => "minor",
            Self::Breaking => "breaking",
        }
    }
}

/// The heading that opens the section of unreleased changes.
const UNRELEASED: &str = "## [Unreleased]";

/// The byte range of the `Unreleased` section's body: after its heading line, up to the next `## `
/// heading or the end of the file.
fn unreleased_body(text: &str) -> Result<(usize, usize)> {
    let mut offset = 0;
    let mut start = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_end();
        match start {
            None if trimmed.eq_ignore_ascii_case(UNRELEASED) => start = Some(offset + line.len()),
            Some(start) if trimmed.starts_with("## ") => return Ok((start, offset)),
            _ => {}
        }
        offset += line.len();
    }
    match start {
        Some(start) => Ok((start, text.len())),
        None => bail!("the changelog has no `{UNRELEASED}` heading"),
    }
}

/// The text of the `Unreleased` section, without its heading, trimmed.
pub(crate) fn unreleased(text: &str) -> Result<&str> {
    let (start, end) = unreleased_body(text)?;
    Ok(text[start..end].trim())
}

/// What the entries of an `Unreleased` section require: `None` when it holds no entry.
///
/// A `### Removed` or `### Breaking` heading with entries, or the word `BREAKING` anywhere, is a
/// breaking change; `### Added` and `### Deprecated` are minor; every other heading (`### Fixed`,
/// `### Security`, `### Changed` without the marker) and text outside a heading are a patch.
pub(crate) fn level(section: &str) -> Option<Level> {
    let mut level = None;
    let mut heading_level = Level::Patch;
    for line in section.lines().map(str::trim) {
        if let Some(heading) = line.strip_prefix("### ") {
            let heading = heading.trim().to_ascii_lowercase();
            heading_level = if heading.starts_with("removed") || heading.starts_with("breaking") {
                Level::Breaking
            } else if heading.starts_with("added") || heading.starts_with("deprecated") {
                Level::Minor
            } else {
                Level::Patch
            };
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let entry = if line.contains("BREAKING") {
            Level::Breaking
        } else {
            heading_level
        };
        level = level.max(Some(entry));
    }
    level
}

/// The changelog with its `Unreleased` entries moved under `## [version] - date` and an empty
/// `Unreleased` section left above. `note` (a whole `### ...` block) is added to the released
/// section when the `Unreleased` section is empty, so that a release made only for a dependency
/// still says why.
pub(crate) fn release(text: &str, version: &str, date: &str, note: Option<&str>) -> Result<String> {
    let (start, end) = unreleased_body(text)?;
    let mut entries = text[start..end].trim().to_owned();
    if entries.is_empty()
        && let Some(note) = note
    {
        entries = note.trim().to_owned();
    }
    let mut released = format!("\n## [{version}] - {date}\n");
    if !entries.is_empty() {
        released.push('\n');
        released.push_str(&entries);
        released.push('\n');
    }
    if end < text.len() {
        released.push('\n');
    }
    Ok(format!("{}{released}{}", &text[..start], &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "# Changelog\n\nAll notable changes.\n\n";

    #[test]
    fn unreleased_ends_at_the_next_version_heading() {
        let text = format!(
            "{HEAD}## [Unreleased]\n\n### Fixed\n\n- a bug.\n\n## [0.1.0] - 2026-01-01\n\n### Added\n\n- all.\n"
        );
        assert_eq!(unreleased(&text).unwrap(), "### Fixed\n\n- a bug.");
        let missing = unreleased("# Changelog\n\n## [0.1.0]\n").unwrap_err();
        assert!(
            missing.to_string().contains("no `## [Unreleased]`"),
            "{missing}"
        );
    }

    #[test]
    fn headings_and_markers_give_the_level() {
        for (section, expected) in [
            ("", None),
            ("### Added\n\n### Fixed\n", None),
            ("### Fixed\n\n- a bug.", Some(Level::Patch)),
            ("### Security\n\n- a hole.", Some(Level::Patch)),
            ("### Changed\n\n- faster.", Some(Level::Patch)),
            ("Some words outside a heading.", Some(Level::Patch)),
            (
                "### Fixed\n\n- a bug.\n\n### Added\n\n- `new`.",
                Some(Level::Minor),
            ),
            ("### Deprecated\n\n- `old`.", Some(Level::Minor)),
            (
                "### Changed\n\n- **BREAKING**: `run` takes a `Config`.",
                Some(Level::Breaking),
            ),
            (
                "### Added\n\n- `x`.\n\n### Removed\n\n- `y`.",
                Some(Level::Breaking),
            ),
            ("### Breaking\n\n- `y` is async.", Some(Level::Breaking)),
            // An empty breaking heading asks for nothing.
            ("### Removed\n\n### Fixed\n\n- a bug.", Some(Level::Patch)),
        ] {
            assert_eq!(level(section), expected, "{section:?}");
        }
    }

    #[test]
    fn release_moves_the_entries_under_the_version() {
        let text = format!(
            "{HEAD}## [Unreleased]\n\n### Added\n\n- `new`.\n\n## [0.1.0] - 2026-01-01\n\n- first.\n"
        );
        let released = release(&text, "0.2.0", "2026-12-05", Some("### Changed\n\n- x")).unwrap();
        assert_eq!(
            released,
            format!(
                "{HEAD}## [Unreleased]\n\n## [0.2.0] - 2026-12-05\n\n### Added\n\n- `new`.\n\n## [0.1.0] - 2026-01-01\n\n- first.\n"
            )
        );
        assert_eq!(unreleased(&released).unwrap(), "");
    }

    #[test]
    fn release_of_an_empty_section_writes_the_note() {
        let text = format!("{HEAD}## [Unreleased]\n");
        let note = "### Changed\n\n- Requires `a` 0.2.0.";
        assert_eq!(
            release(&text, "0.1.1", "2026-12-05", Some(note)).unwrap(),
            format!("{HEAD}## [Unreleased]\n\n## [0.1.1] - 2026-12-05\n\n{note}\n")
        );
        assert_eq!(
            release(&text, "0.1.0", "2026-12-05", None).unwrap(),
            format!("{HEAD}## [Unreleased]\n\n## [0.1.0] - 2026-12-05\n")
        );
    }
}
