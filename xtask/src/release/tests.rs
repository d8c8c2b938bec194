//! `release` on a small fixture workspace made in a temporary directory: `a`, `b` (which depends
//! on `a`) and `app` (a binary that is not published, on `b`), in a git repository.

use std::path::Path;

use super::*;

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path)).unwrap()
}

fn library(root: &Path, name: &str, dependencies: &str) {
    write(
        root,
        &format!("{name}/Cargo.toml"),
        &format!(
            "[package]\nname = \"{name}\"\ndescription = \"The crate {name}\"\nversion.workspace = true\n\
             edition.workspace = true\nlicense.workspace = true\nrepository.workspace = true\n\
             readme = \"README.md\"\nkeywords = [\"fixture\"]\n\n[dependencies]\n{dependencies}"
        ),
    );
    write(
        root,
        &format!("{name}/src/lib.rs"),
        "//! A fixture.\n\npub fn one() -> u32 {\n    1\n}\n",
    );
    write(root, &format!("{name}/README.md"), &format!("# {name}\n"));
    write(
        root,
        &format!("{name}/CHANGELOG.md"),
        "# Changelog\n\n## [Unreleased]\n\n## [0.1.0] - 2026-01-01\n\n### Added\n\n- `one`.\n",
    );
    for file in LICENSE_FILES {
        write(root, &format!("{name}/{file}"), &format!("{file} text\n"));
    }
}

/// A repository whose `a` and `b` were released as 0.1.0 (tagged), after which `a` lost an item.
fn fixture() -> (tempfile::TempDir, Repo) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "Cargo.toml",
        "[workspace]\nresolver = \"3\"\nmembers = [\"a\", \"b\", \"app\"]\n\n[workspace.package]\n\
         version = \"0.1.0\"\nedition = \"2024\"\nlicense = \"MIT OR Apache-2.0\"\n\
         repository = \"https://example.com/fixture\"\n\n[workspace.dependencies]\n\
         # Ours.\na = { path = \"a\", version = \"0.1.0\" }\nb = { path = \"b\", version = \"0.1.0\" }\n",
    );
    library(root, "a", "");
    library(root, "b", "a = { workspace = true }\n");
    write(
        root,
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion.workspace = true\nedition.workspace = true\n\
         publish = false\n\n[dependencies]\nb = { workspace = true }\n",
    );
    write(
        root,
        "app/src/main.rs",
        "fn main() {\n    println!(\"{}\", b::one());\n}\n",
    );
    write(root, ".gitignore", "/target\n");
    let repo = Repo {
        root: root.to_path_buf(),
        target_dir: Some(root.join("target")),
    };
    let status = repo
        .cargo()
        .args(["generate-lockfile", "--offline", "--quiet"])
        .status()
        .unwrap();
    assert!(status.success());
    for args in [
        &["init", "--quiet"][..],
        &["config", "user.name", "Fixture"],
        &["config", "user.email", "fixture@example.com"],
        &["config", "commit.gpgsign", "false"],
        &["config", "tag.gpgsign", "false"],
        &["add", "."],
        &["commit", "--quiet", "-m", "first"],
        &["tag", "a-v0.1.0"],
        &["tag", "b-v0.1.0"],
    ] {
        repo.git(args).unwrap();
    }
    write(
        root,
        "a/src/lib.rs",
        "//! A fixture.\n\npub fn one() -> u64 {\n    1\n}\n",
    );
    let changelog = read(root, "a/CHANGELOG.md").replace(
        "## [Unreleased]\n",
        "## [Unreleased]\n\n### Changed\n\n- BREAKING: `one` returns a `u64`.\n",
    );
    write(root, "a/CHANGELOG.md", &changelog);
    repo.git(&["commit", "--quiet", "-am", "a: widen one"])
        .unwrap();
    (dir, repo)
}

fn release_of(crates: &[Crate], name: &str) -> Option<String> {
    let krate = crates.iter().find(|krate| krate.name == name).unwrap();
    krate.release.version().map(ToString::to_string)
}

#[test]
fn plan_bumps_the_breaking_crate_and_patches_its_dependent() {
    let (_dir, repo) = fixture();
    let crates = plan::plan(&repo).unwrap();
    let names: Vec<&str> = crates.iter().map(|krate| krate.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b"],
        "dependency order, without the unpublished app"
    );
    assert_eq!(release_of(&crates, "a").as_deref(), Some("0.2.0"));
    assert_eq!(crates[0].dependents, ["b"]);
    assert_eq!(crates[1].dependents, ["app"]);
    assert_eq!(crates[0].commits_since_tag, 1);
    assert_eq!(release_of(&crates, "b").as_deref(), Some("0.1.1"));
    assert_eq!(crates[1].moved_dependencies, ["a"]);
    let json = plan::json(&crates);
    assert_eq!(json[1]["reason"], "patch (needs a)");
    assert_eq!(json[0]["last_tag"], "a-v0.1.0");
    let table = plan::table(&crates);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "a",
            "0.1.0",
            "a-v0.1.0",
            "breaking",
            "0.2.0",
            "breaking",
            "(changelog)",
            "b"
        ],
        "{table}"
    );
}

#[test]
fn a_dirty_tree_is_refused() {
    let (_dir, repo) = fixture();
    write(&repo.root, "notes.txt", "not committed\n");
    for error in [
        dry_run(&repo, None, false, &[]).unwrap_err(),
        execute(&repo, "2026-12-05").unwrap_err(),
    ] {
        let message = error.to_string();
        assert!(message.contains("the working tree is dirty"), "{message}");
        assert!(message.contains("?? notes.txt"), "{message}");
    }
    assert!(repo.git(&["tag", "--list", "a-v0.2.0"]).unwrap().is_empty());
}

#[test]
fn dry_run_packages_with_licences_and_writes_sboms() {
    let (_dir, repo) = fixture();
    let artifacts = tempfile::tempdir().unwrap();
    let out = artifacts.path().join("release");
    let summary = dry_run(&repo, Some(&out), true, &["app"]).unwrap();
    assert!(summary.contains("a-0.1.0.crate: "), "{summary}");
    assert!(summary.contains("licences ok"), "{summary}");
    assert!(
        summary.contains("would release: a 0.2.0, b 0.1.1"),
        "{summary}"
    );
    let files = crate_files(&out.join("b-0.1.0.crate")).unwrap();
    assert!(
        files.contains("b-0.1.0/LICENSE-MIT") && files.contains("b-0.1.0/LICENSE-APACHE"),
        "{files:?}"
    );

    let bom = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(name)).unwrap()).unwrap()
    };
    let b = bom("b-0.1.0.cdx.json");
    assert_eq!(b["bomFormat"], "CycloneDX");
    assert_eq!(b["specVersion"], "1.5");
    assert_eq!(b["metadata"]["component"]["purl"], "pkg:cargo/b@0.1.0");
    assert_eq!(
        b["metadata"]["component"]["licenses"][0]["expression"],
        "MIT OR Apache-2.0"
    );
    assert_eq!(b["components"].as_array().unwrap().len(), 1);
    assert_eq!(b["components"][0]["purl"], "pkg:cargo/a@0.1.0");
    assert_eq!(b["components"][0]["type"], "library");
    let graph = b["dependencies"].as_array().unwrap();
    assert!(
        graph.contains(
            &serde_json::json!({ "ref": "pkg:cargo/b@0.1.0", "dependsOn": ["pkg:cargo/a@0.1.0"] })
        ),
        "{graph:?}"
    );
    let app = bom("app-0.1.0.cdx.json");
    assert_eq!(app["metadata"]["component"]["type"], "application");
    let components: Vec<&str> = app["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|component| component["name"].as_str().unwrap())
        .collect();
    assert_eq!(components, ["a", "b"]);
    assert!(
        bom("a-0.1.0.cdx.json")["components"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A dry run changes nothing.
    assert!(repo.git(&["status", "--porcelain"]).unwrap().is_empty());
}

#[test]
fn execute_moves_changelogs_bumps_versions_commits_and_tags() {
    let (_dir, repo) = fixture();
    let summary = execute(&repo, "2026-12-05").unwrap();
    let root = &repo.root;
    assert!(
        read(root, "a/CHANGELOG.md").contains(
            "## [Unreleased]\n\n## [0.2.0] - 2026-12-05\n\n### Changed\n\n- BREAKING: `one` returns a `u64`.\n\n## [0.1.0]"
        ),
        "{}",
        read(root, "a/CHANGELOG.md")
    );
    assert!(
        read(root, "b/CHANGELOG.md").contains(
            "## [Unreleased]\n\n## [0.1.1] - 2026-12-05\n\n### Changed\n\n- Requires `a` 0.2.0.\n\n## [0.1.0]"
        ),
        "{}",
        read(root, "b/CHANGELOG.md")
    );
    assert!(read(root, "a/Cargo.toml").contains("\nversion = \"0.2.0\"\n"));
    assert!(read(root, "b/Cargo.toml").contains("\nversion = \"0.1.1\"\n"));
    let workspace = read(root, "Cargo.toml");
    assert!(
        workspace.contains("# Ours.\na = { path = \"a\", version = \"0.2.0\" }\n"),
        "{workspace}"
    );
    assert!(
        workspace.contains("b = { path = \"b\", version = \"0.1.1\" }\n"),
        "{workspace}"
    );
    assert!(read(root, "Cargo.lock").contains("name = \"a\"\nversion = \"0.2.0\""));

    assert_eq!(
        repo.git(&["log", "-1", "--format=%s"]).unwrap().trim(),
        "release: a 0.2.0, b 0.1.1"
    );
    assert_eq!(
        repo.git(&["tag", "--points-at", "HEAD"]).unwrap(),
        "a-v0.2.0\nb-v0.1.1\n"
    );
    assert_eq!(
        repo.git(&["describe", "--exact-match", "a-v0.2.0"])
            .unwrap()
            .trim(),
        "a-v0.2.0"
    );
    assert!(
        repo.git(&["status", "--porcelain"]).unwrap().is_empty(),
        "everything committed"
    );
    assert!(
        summary.contains("  cargo publish -p a\n  cargo publish -p b\n"),
        "{summary}"
    );

    // Released: the next plan has nothing to do, and a second run says so.
    let crates = plan::plan(&repo).unwrap();
    assert_eq!(release_of(&crates, "a"), None);
    assert_eq!(release_of(&crates, "b"), None);
    assert_eq!(
        execute(&repo, "2026-12-06").unwrap(),
        "xtask release: nothing to release\n"
    );
}

#[test]
fn execute_refuses_commits_the_changelog_does_not_mention() {
    let (_dir, repo) = fixture();
    write(
        &repo.root,
        "b/src/lib.rs",
        "//! A fixture.\n\npub fn one() -> u32 {\n    2\n}\n",
    );
    repo.git(&["commit", "--quiet", "-am", "b: quietly change one"])
        .unwrap();
    let error = execute(&repo, "2026-12-05").unwrap_err().to_string();
    assert!(error.contains("b: 1 commits since its last tag"), "{error}");
    assert!(
        repo.git(&["status", "--porcelain"]).unwrap().is_empty(),
        "nothing written"
    );
}

#[test]
fn dates_are_gregorian_and_checked() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(11_016), "2000-02-29");
    assert_eq!(civil_date(20_792), "2026-12-05");
    assert!(check_date("2026-12-05").is_ok());
    assert!(check_date("5.12.2026").is_err());
}
