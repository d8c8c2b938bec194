//! `cargo xtask codegen [--check]`: the generated files, written deterministically.
//!
//! - `docs/openapi.json`: the OpenAPI document, printed by `mainstay-api openapi` from the API's code.
//! - `docs/configuration.md`: every configuration key, printed by `mainstay-api config reference`
//!   from the configuration types.
//! - `docs/metrics.md`: every metric family, rendered from the JSON that
//!   `mainstay-api metrics catalogue` prints from the crates' catalogues.
//! - `deploy/prometheus/rules/slo.yml` and `deploy/grafana/dashboards/slo.json`: the SLO recording
//!   rules, burn-rate alerts and dashboard, from `deploy/slo.toml`, the catalogue and the OpenAPI
//!   document (`crate::slo`, decision 0098).
//! - `deploy/grafana/dashboards/{overview,http,resilience,ratelimit,storage,dlq}.json`: the area
//!   dashboards with every alert of `crate::alerts` plotted (`crate::dashboards`, decision 0100).
//! - `deploy/prometheus/rules/{alerts,recording}.yml` and the time-scaled copy of both,
//!   `tests/fixtures/prometheus/rules-scaled.yml`: the symptom alerts and recording rules
//!   (`crate::alerts`, decision 0099).
//! - `deploy/k8s/base/prometheusrule.yaml`: the PrometheusRule carrying every group of the rule
//!   files, for the Prometheus Operator (`crate::deploy`, decision 0107).
//! - `docs/decisions/README.md`: the index of decisions with a status each, read from their files.
//!
//! With `--check` nothing is written; a stale or missing file fails with the command that fixes it.
//! Either way it fails on an alert of `deploy/prometheus/rules/*.yml` without
//! `docs/runbooks/<alert>.md`, a runbook without a section of the template, a `runbook_url` anchor
//! without its heading, a dashboard that fails the structural check, and a rule or panel that
//! names a metric or label the catalogue lacks (`crate::lint`, decision 0101).

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
    let mut files: Vec<(&str, String)> = Vec::new();
    for (path, args) in GENERATED {
        files.push((path, api_output(&api_bin, args)?));
    }
    let catalogue = api_output(&api_bin, &["metrics", "catalogue"])?;
    files.push((crate::slo::SLO_RULES, slo_rules(&catalogue, &files[0].1)?));
    files.push((
        crate::alerts::ALERT_RULES,
        crate::alerts::rules(&repository()?),
    ));
    files.push((crate::alerts::RECORDING_RULES, crate::alerts::recording()));
    files.push((
        crate::alerts::SCALED_RULES,
        crate::alerts::scaled(crate::alerts::SCALE),
    ));
    files.push((
        crate::slo::SLO_DASHBOARD,
        crate::slo::dashboard(&std::fs::read_to_string(
            workspace_root().join(crate::slo::SLO_TOML),
        )?)?,
    ));
    files.extend(crate::dashboards::generate(
        crate::alerts::ALERTS,
        &catalogue,
    )?);
    files.push((
        DECISIONS_INDEX,
        decisions_index(&workspace_root().join("docs/decisions"))?,
    ));
    crate::dashboards::check_files(&workspace_root(), &files)?;
    // Every rule file and dashboard, as generated now (or on disk when not generated), checked
    // against the catalogue; the metrics reference lists who uses each family.
    let rules = outputs(&files, RULES_DIR, "yml")?;
    let usage = crate::lint::check_with(
        &catalogue,
        &rules,
        &outputs(&files, DASHBOARDS_DIR, "json")?,
        &crate::deploy::analysis_queries(&workspace_root())?,
    )?;
    files.push((METRICS_DOC, metrics_doc(&catalogue, &usage)?));
    files.push((
        crate::deploy::PROMETHEUS_RULE,
        crate::deploy::prometheus_rule(&rules)?,
    ));
    let mut stale = Vec::new();
    for (path, fresh) in files {
        let target = workspace_root().join(path);
        let current = std::fs::read_to_string(&target).unwrap_or_default();
        if current == fresh {
            continue;
        }
        if check {
            stale.push(path);
        } else {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&target, fresh).with_context(|| format!("could not write {path}"))?;
            eprintln!("xtask codegen: wrote {path}");
        }
    }
    crate::alerts::check_runbooks(&workspace_root())?;
    if !stale.is_empty() {
        bail!(
            "generated files are stale: {}; run `cargo xtask codegen` and commit the result",
            stale.join(", ")
        );
    }
    Ok(())
}

/// The Prometheus rule files and the Grafana dashboards, under the workspace root.
const RULES_DIR: &str = "deploy/prometheus/rules";
const DASHBOARDS_DIR: &str = "deploy/grafana/dashboards";

/// The `*.EXT` files of `dir`: the generated text for those among `files`, else the text on disk.
fn outputs(files: &[(&str, String)], dir: &str, ext: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = files
        .iter()
        .filter(|(path, _)| {
            let path = std::path::Path::new(path);
            path.parent() == Some(std::path::Path::new(dir))
                && path.extension().is_some_and(|found| found == ext)
        })
        .map(|(path, text)| ((*path).to_owned(), text.clone()))
        .collect();
    let on_disk = workspace_root().join(dir);
    if on_disk.is_dir() {
        for entry in std::fs::read_dir(&on_disk).with_context(|| format!("could not list {dir}"))? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            let relative = format!("{dir}/{name}");
            if path.extension().is_some_and(|found| found == ext)
                && !out.iter().any(|(known, _)| *known == relative)
            {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("could not read {relative}"))?;
                out.push((relative, text));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `deploy/prometheus/rules/slo.yml` from `deploy/slo.toml` (see [`crate::slo`]).
fn slo_rules(catalogue: &str, openapi: &str) -> Result<String> {
    let root = workspace_root();
    let declaration = std::fs::read_to_string(root.join(crate::slo::SLO_TOML))
        .with_context(|| format!("could not read {}", crate::slo::SLO_TOML))?;
    crate::slo::rules(&declaration, catalogue, openapi, &repository()?)
}

/// `workspace.package.repository`: the base of every `runbook_url`.
fn repository() -> Result<String> {
    let manifest: toml::Value = std::fs::read_to_string(workspace_root().join("Cargo.toml"))?
        .parse()
        .context("the workspace manifest is not TOML")?;
    manifest["workspace"]["package"]["repository"]
        .as_str()
        .map(str::to_owned)
        .context("the workspace manifest has no workspace.package.repository")
}

/// What `mainstay-api ARGS` prints, which must succeed.
fn api_output(api_bin: &std::path::Path, args: &[&str]) -> Result<String> {
    let output = Command::new(api_bin)
        .args(args)
        .output()
        .with_context(|| format!("could not run {} {}", api_bin.display(), args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "mainstay-api {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).context("generated text is not UTF-8")
}

/// The metrics reference, generated from the service's catalogue.
pub(crate) const METRICS_DOC: &str = "docs/metrics.md";

/// Renders `docs/metrics.md` from the JSON of `mainstay-api metrics catalogue`: one table per
/// crate, in the order the catalogue lists them, each family under the name a query uses.
pub(crate) fn metrics_doc(catalogue_json: &str, usage: &crate::lint::Usage) -> Result<String> {
    let document: serde_json::Value =
        serde_json::from_str(catalogue_json).context("the metric catalogue is not JSON")?;
    let families = document["families"]
        .as_array()
        .context("the metric catalogue has no `families` array")?;
    let text = |family: &serde_json::Value, key: &str| -> Result<String> {
        family[key]
            .as_str()
            .map(|value| value.replace('|', "\\|"))
            .with_context(|| format!("a catalogued family has no `{key}`: {family}"))
    };
    let mut crates: Vec<(String, Vec<String>)> = Vec::new();
    for family in families {
        let owner = text(family, "crate")?;
        let kind = text(family, "type")?;
        let unit = family["unit"].as_str().unwrap_or("—").to_owned();
        let labels: Vec<String> = family["labels"]
            .as_array()
            .context("a catalogued family has no `labels`")?
            .iter()
            .filter_map(|label| label.as_str().map(|label| format!("`{label}`")))
            .collect();
        let labels = if labels.is_empty() {
            "—".to_owned()
        } else {
            labels.join(", ")
        };
        let name = text(family, "name")?;
        let used =
            |map: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>| {
                map.get(&name).map_or_else(
                    || "—".to_owned(),
                    |users| {
                        users
                            .iter()
                            .map(|user| user.replace('|', "\\|"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                )
            };
        let row = format!(
            "| `{}` | {kind} | {unit} | {labels} | {} | {} | {} |\n",
            text(family, "sample_name")?,
            text(family, "help")?,
            used(&usage.alerts),
            used(&usage.panels)
        );
        match crates.iter_mut().find(|(name, _)| *name == owner) {
            Some((_, rows)) => rows.push(row),
            None => crates.push((owner, vec![row])),
        }
    }
    let mut out = String::from(
        "# Metrics\n\n\
         Every metric family `mainstay-api` exports, by the crate that registers it. Generated by\n\
         `cargo xtask codegen` from `mainstay-api metrics catalogue`, which prints the catalogue each\n\
         crate declares in its `src/catalogue.rs` (`METRICS`); each crate's tests compare that\n\
         catalogue with a real exposition, so do not edit this file: `cargo xtask codegen --check`\n\
         fails when it is stale (docs/decisions/0096-metric-catalogue.md).\n\n\
         Names are the ones a query uses: a counter's samples end in `_total`; a histogram's samples\n\
         are `NAME_bucket` (with the label `le`), `NAME_sum` and `NAME_count`. The unit is the\n\
         exposition's `# UNIT` line (— when it has none). Every family is exported from start-up:\n\
         a labelled family has its known series at zero (a breaker's, a check's, a configured\n\
         queue's) or, before any label value exists, its `# HELP` and `# TYPE` lines alone.\n\n\
         The alerts and panels columns list who reads a family, through recording rules too: the\n\
         alerts of `deploy/prometheus/rules/` and the panels of `deploy/grafana/dashboards/`\n\
         (dashboard › panel). `cargo xtask codegen` fails when a rule or panel names a metric or a\n\
         label this catalogue lacks (docs/decisions/0101-offline-rule-check.md).\n\n\
         ## Naming and labels\n\n\
         The rule every crate follows (docs/decisions/0097-metric-naming-and-start-up-series.md):\n\n\
         - Names are `snake_case`, start with the owning area (`http_`, `circuit_breaker_`,\n\
         \x20 `storage_`, `dlq_`, `ratelimit_`, `health_`, `process_`) and end with their base unit\n\
         \x20 (`_seconds`, `_bytes`, `_ratio`), then `_total` for a counter\n\
         \x20 (`storage_orphan_deleted_bytes_total`). A family with a unit is registered with it, so\n\
         \x20 the exposition has its `# UNIT` line. A 0/1 gauge has no unit.\n\
         - Label names are the same wherever they mean the same thing: `breaker`, `queue`, `store`,\n\
         \x20 `bulkhead`, `operation` (a retried operation), `dependency` (a health check, the name\n\
         \x20 the seeds asked for), `endpoint` (a route template, the seeds' name), `method`,\n\
         \x20 `status_code`, `outcome` (how an attempt ended), `error_type` (the class of an error),\n\
         \x20 `state`, `from` and `to` (states), `scope`, `policy`, `decision`, `backend`, `reason`.\n\
         - A 0/1 gauge says what is true when it is 1 (`health_ready`, `storage_fenced`,\n\
         \x20 `circuit_breaker_state_active`); a ratio is 0 to 1, not a percentage; a gauge with no\n\
         \x20 reading yet is NaN, which matches no alert threshold.\n\
         - Label values are bounded: route templates, instance names and fixed words, never a raw\n\
         \x20 path, key, user or tenant.\n\
         - Latency histograms have a bucket edge at every threshold an alert or SLO uses (0.01,\n\
         \x20 0.1, 0.15 and 0.5 s): each catalogue declares its histograms' edges (printed by\n\
         \x20 `mainstay-api metrics catalogue`, held to the exposed `le` values by the crate's\n\
         \x20 tests), and `cargo xtask codegen` refuses a quantile threshold or an `le` matcher\n\
         \x20 that is not one.\n",
    );
    for (owner, rows) in crates {
        out.push_str(&format!(
            "\n## {owner}\n\n| metric | type | unit | labels | help | alerts | panels |\n|---|---|---|---|---|---|---|\n"
        ));
        for row in rows {
            out.push_str(&row);
        }
    }
    Ok(out)
}

/// The index of decisions, generated from the files under `docs/decisions/`: number, title (the
/// first line, `# NNNN: title`) and a status read from the text. A decision is `superseded by N`
/// when it says "superseded by N", `superseded in part by N` for "superseded in part by N" or
/// "changed in part by N", `amended by N, M` for "touched by decision N" or "since decision N",
/// else `accepted`.
pub(crate) const DECISIONS_INDEX: &str = "docs/decisions/README.md";

pub(crate) fn decisions_index(dir: &std::path::Path) -> Result<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("could not list {}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name.len() > 5 && name.ends_with(".md") && name[..4].bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    files.sort();
    let mut out = String::from(
        "# Decisions\n\n\
         One file per choice a later reader would question: context, options, choice, consequence.\n\
         Generated by `cargo xtask codegen` from the files (titles and the \"superseded by\",\n\
         \"superseded in part by\", \"changed in part by\", \"touched by decision\" and \"since\n\
         decision\" lines in them); `cargo xtask codegen --check` fails when it is stale.\n\n\
         | decision | title | status |\n|---|---|---|\n",
    );
    for name in files {
        let text = std::fs::read_to_string(dir.join(&name))
            .with_context(|| format!("could not read {name}"))?;
        let first = text.lines().next().unwrap_or_default();
        let title = first
            .trim_start_matches('#')
            .trim()
            .split_once(": ")
            .map_or(first, |(_, title)| title)
            .trim();
        out.push_str(&format!(
            "| [{}]({name}) | {title} | {} |\n",
            &name[..4],
            status(&text)
        ));
    }
    Ok(out)
}

/// The status of a decision from its text (see [`decisions_index`]).
fn status(text: &str) -> String {
    let lower = text.to_lowercase().replace(['*', '\n'], " ");
    let numbers_after = |phrases: &[&str]| -> Vec<String> {
        let mut found = Vec::new();
        for phrase in phrases {
            let mut rest = lower.as_str();
            while let Some(at) = rest.find(phrase) {
                rest = &rest[at + phrase.len()..];
                let number: String = rest
                    .trim_start_matches([' ', '['])
                    .trim_start_matches("decision")
                    .trim_start_matches([' ', '['])
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if number.len() == 4 && !found.contains(&number) {
                    found.push(number);
                }
            }
        }
        found
    };
    let whole = numbers_after(&["superseded by"]);
    if let Some(by) = whole.first() {
        return format!("superseded by {by}");
    }
    let part = numbers_after(&["superseded in part by", "changed in part by"]);
    let amended = numbers_after(&["touched by decision", "since decision"]);
    match (part.is_empty(), amended.is_empty()) {
        (true, true) => "accepted".to_owned(),
        (false, true) => format!("superseded in part by {}", part.join(", ")),
        (true, false) => format!("amended by {}", amended.join(", ")),
        (false, false) => format!(
            "superseded in part by {}; amended by {}",
            part.join(", "),
            amended.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{metrics_doc, status};

    #[test]
    fn the_metrics_doc_has_a_table_per_crate_with_query_names() {
        let catalogue = r#"{"families": [
            {"name": "jobs", "sample_name": "jobs_total", "type": "counter", "unit": null,
             "labels": ["queue", "outcome"], "help": "Jobs | runs", "crate": "a"},
            {"name": "wait_seconds", "sample_name": "wait_seconds", "type": "histogram",
             "unit": "seconds", "labels": [], "help": "Wait", "crate": "b"}
        ]}"#;
        let mut usage = crate::lint::Usage::default();
        usage
            .alerts
            .insert("jobs".to_owned(), ["JobsFailing".to_owned()].into());
        usage.panels.insert(
            "jobs".to_owned(),
            ["jobs › Runs".to_owned(), "overview › Jobs".to_owned()].into(),
        );
        let doc = metrics_doc(catalogue, &usage).unwrap();
        assert!(
            doc.contains(
                "## a\n\n| metric | type | unit | labels | help | alerts | panels |\n|---|---|---|---|---|---|---|\n\
                 | `jobs_total` | counter | — | `queue`, `outcome` | Jobs \\| runs | JobsFailing | jobs › Runs, overview › Jobs |\n"
            ),
            "{doc}"
        );
        assert!(
            doc.ends_with(
                "## b\n\n| metric | type | unit | labels | help | alerts | panels |\n|---|---|---|---|---|---|---|\n\
                 | `wait_seconds` | histogram | seconds | — | Wait | — | — |\n"
            ),
            "{doc}"
        );
        assert!(metrics_doc("{}", &usage).is_err());
    }

    #[test]
    fn status_follows_the_words_of_the_decision() {
        assert_eq!(status("# 0001: x\n\nplain"), "accepted");
        assert_eq!(
            status("**Superseded by 0080** (issue 13)"),
            "superseded by 0080"
        );
        assert_eq!(
            status("Superseded in part by decision 0069 (issue 12)"),
            "superseded in part by 0069"
        );
        assert_eq!(
            status("Changed in part by decision\n0080: the clocks"),
            "superseded in part by 0080"
        );
        assert_eq!(
            status("Touched by decision 0080. Since decision 0071 writes"),
            "amended by 0080, 0071"
        );
        assert_eq!(status("a newer version counts as `superseded`"), "accepted");
    }
}
