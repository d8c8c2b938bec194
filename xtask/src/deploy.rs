//! Checks of the hand-written deploy wiring (issue 16, point 8; decision 0102), run by
//! `cargo xtask promtool`:
//!
//! - `deploy/prometheus/prometheus.yml` loads every rules file of `deploy/prometheus/rules/` and
//!   nothing else, `promtool check config` accepts it, and every job labels its series
//!   `job="mainstay-api"` (what the rules and dashboards select). Debian's promtool is built
//!   without Kubernetes discovery, so a job with `kubernetes_sd_configs` is checked here instead
//!   (keeps only `app.kubernetes.io/name=mainstay-api` pods, sets `instance` and `job`, uses known
//!   relabel actions) and left out of the copy promtool reads.
//! - the Grafana provisioning files under `deploy/grafana/provisioning/` declare a Prometheus
//!   datasource and a file provider that refuses UI edits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_norway::Value;

/// The scrape and rule configuration, under the workspace root.
pub(crate) const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";

/// The job every rule and dashboard selects.
const JOB: &str = "mainstay-api";

/// The relabel actions Prometheus knows.
const ACTIONS: &[&str] = &[
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
];

/// Checks `prometheus.yml` (the text of `PROMETHEUS_CONFIG`) against the rules files present
/// (their names under `rules/`) and returns the copy for `promtool check config`: Kubernetes jobs
/// removed, rule files made absolute under `rules_dir`.
pub(crate) fn prometheus_config(text: &str, rules: &[String], rules_dir: &Path) -> Result<String> {
    let mut config: Value =
        serde_norway::from_str(text).with_context(|| format!("{PROMETHEUS_CONFIG} is not YAML"))?;
    let listed: Vec<String> = config["rule_files"]
        .as_sequence()
        .with_context(|| format!("{PROMETHEUS_CONFIG} has no rule_files"))?
        .iter()
        .filter_map(|file| file.as_str().map(str::to_owned))
        .collect();
    let wanted: Vec<String> = rules.iter().map(|name| format!("rules/{name}")).collect();
    for file in &wanted {
        ensure!(
            listed.contains(file),
            "{PROMETHEUS_CONFIG}: rule_files does not load {file}"
        );
    }
    for file in &listed {
        ensure!(
            wanted.contains(file),
            "{PROMETHEUS_CONFIG}: rule_files names {file}, which deploy/prometheus/rules lacks"
        );
    }
    let jobs = config["scrape_configs"]
        .as_sequence_mut()
        .with_context(|| format!("{PROMETHEUS_CONFIG} has no scrape_configs"))?;
    ensure!(!jobs.is_empty(), "{PROMETHEUS_CONFIG}: no scrape job");
    let mut kept = Vec::new();
    for job in jobs.drain(..) {
        let name = job["job_name"].as_str().unwrap_or_default().to_owned();
        let relabel = job["relabel_configs"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        let sets_job = relabel
            .iter()
            .any(|rule| rule["target_label"] == "job" && rule["replacement"].as_str() == Some(JOB));
        ensure!(
            name == JOB || sets_job,
            "{PROMETHEUS_CONFIG}: job `{name}` neither is named {JOB} nor relabels `job` to it; every rule and dashboard selects job=\"{JOB}\""
        );
        if job.get("kubernetes_sd_configs").is_none() {
            kept.push(job);
            continue;
        }
        kubernetes_job(&name, &relabel)?;
    }
    ensure!(
        !kept.is_empty(),
        "{PROMETHEUS_CONFIG}: no job promtool can check (only Kubernetes jobs)"
    );
    config["scrape_configs"] = Value::Sequence(kept);
    config["rule_files"] = Value::Sequence(
        wanted
            .iter()
            .map(|file| {
                Value::String(
                    rules_dir
                        .join(file.trim_start_matches("rules/"))
                        .display()
                        .to_string(),
                )
            })
            .collect(),
    );
    serde_norway::to_string(&config).context("could not write the promtool copy")
}

/// The checks of a Kubernetes pod job that promtool cannot make here.
fn kubernetes_job(name: &str, relabel: &[Value]) -> Result<()> {
    let allowed = [
        "source_labels",
        "separator",
        "regex",
        "modulus",
        "target_label",
        "replacement",
        "action",
    ];
    for rule in relabel {
        let mapping = rule.as_mapping().with_context(|| {
            format!("{PROMETHEUS_CONFIG}: job `{name}`: a relabel rule is not a mapping")
        })?;
        for key in mapping.keys() {
            let key = key.as_str().unwrap_or_default();
            ensure!(
                allowed.contains(&key),
                "{PROMETHEUS_CONFIG}: job `{name}`: unknown relabel key `{key}`"
            );
        }
        let action = rule["action"].as_str().unwrap_or("replace");
        ensure!(
            ACTIONS.contains(&action),
            "{PROMETHEUS_CONFIG}: job `{name}`: unknown relabel action `{action}`"
        );
        if matches!(action, "replace" | "hashmod") {
            ensure!(
                rule.get("target_label").is_some(),
                "{PROMETHEUS_CONFIG}: job `{name}`: a `{action}` rule without target_label"
            );
        }
    }
    let keeps_app = relabel.iter().any(|rule| {
        rule["action"] == "keep"
            && rule["regex"].as_str() == Some(JOB)
            && rule["source_labels"].as_sequence().is_some_and(|labels| {
                labels
                    .iter()
                    .any(|label| label == "__meta_kubernetes_pod_label_app_kubernetes_io_name")
            })
    });
    ensure!(
        keeps_app,
        "{PROMETHEUS_CONFIG}: job `{name}` does not keep only pods labelled app.kubernetes.io/name={JOB}"
    );
    let sets_instance = relabel
        .iter()
        .any(|rule| rule["target_label"] == "instance");
    ensure!(
        sets_instance,
        "{PROMETHEUS_CONFIG}: job `{name}` does not set `instance` (the pod's address changes on every restart)"
    );
    Ok(())
}

/// Checks the Grafana provisioning files under `dir` (`deploy/grafana/provisioning`).
pub(crate) fn grafana_provisioning(dir: &Path) -> Result<()> {
    let read = |path: PathBuf| -> Result<Value> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("could not read {}", path.display()))?;
        serde_norway::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))
    };
    let datasources = read(dir.join("datasources/prometheus.yml"))?;
    ensure!(
        datasources["apiVersion"].as_u64() == Some(1),
        "grafana datasources: apiVersion must be 1"
    );
    let prometheus = datasources["datasources"]
        .as_sequence()
        .and_then(|list| list.iter().find(|source| source["type"] == "prometheus"))
        .context("grafana datasources: no datasource of type prometheus")?;
    ensure!(
        prometheus["url"]
            .as_str()
            .is_some_and(|url| url.starts_with("http")),
        "grafana datasources: the prometheus datasource has no http(s) url"
    );
    let dashboards = read(dir.join("dashboards/mainstay.yml"))?;
    ensure!(
        dashboards["apiVersion"].as_u64() == Some(1),
        "grafana dashboards: apiVersion must be 1"
    );
    let Some(providers) = dashboards["providers"].as_sequence() else {
        bail!("grafana dashboards: no providers");
    };
    for provider in providers {
        ensure!(
            provider["type"] == "file" && provider["options"]["path"].as_str().is_some(),
            "grafana dashboards: provider {:?} is not a file provider with options.path",
            provider["name"]
        );
        ensure!(
            provider["allowUiUpdates"].as_bool() == Some(false),
            "grafana dashboards: provider {:?} must refuse UI edits (the files are generated)",
            provider["name"]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prometheus_config;

    fn config(jobs: &str) -> String {
        format!("rule_files:\n  - rules/alerts.yml\n  - rules/slo.yml\nscrape_configs:\n{jobs}")
    }

    const STATIC: &str =
        "  - job_name: mainstay-api\n    static_configs:\n      - targets: ['api:8080']\n";
    const PODS: &str = "  - job_name: pods\n    kubernetes_sd_configs:\n      - role: pod\n    relabel_configs:\n      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]\n        action: keep\n        regex: mainstay-api\n      - source_labels: [__meta_kubernetes_pod_name]\n        target_label: instance\n      - target_label: job\n        replacement: mainstay-api\n";

    fn rules() -> Vec<String> {
        vec!["alerts.yml".to_owned(), "slo.yml".to_owned()]
    }

    #[test]
    fn the_promtool_copy_drops_kubernetes_jobs_and_makes_rule_files_absolute() {
        let copy = prometheus_config(
            &config(&format!("{STATIC}{PODS}")),
            &rules(),
            std::path::Path::new("/repo/deploy/prometheus/rules"),
        )
        .unwrap();
        assert!(
            copy.contains("/repo/deploy/prometheus/rules/slo.yml"),
            "{copy}"
        );
        assert!(!copy.contains("kubernetes_sd_configs"), "{copy}");
        assert!(copy.contains("api:8080"), "{copy}");
    }

    #[test]
    fn a_missing_or_unknown_rules_file_fails() {
        let dir = std::path::Path::new("/r");
        let error = prometheus_config(&config(STATIC), &["recording.yml".to_owned()], dir)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("does not load rules/recording.yml"),
            "{error}"
        );
        let error = prometheus_config(&config(STATIC), &["alerts.yml".to_owned()], dir)
            .unwrap_err()
            .to_string();
        assert!(error.contains("names rules/slo.yml"), "{error}");
    }

    #[test]
    fn a_job_without_the_expected_job_label_fails() {
        let error = prometheus_config(
            &config("  - job_name: api\n    static_configs:\n      - targets: ['a:1']\n"),
            &rules(),
            std::path::Path::new("/r"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("job `api` neither"), "{error}");
    }

    #[test]
    fn a_kubernetes_job_must_keep_the_app_and_set_instance() {
        let dir = std::path::Path::new("/r");
        for (broken, expected) in [
            (
                PODS.replace("regex: mainstay-api", "regex: other"),
                "does not keep only pods",
            ),
            (
                PODS.replace("target_label: instance", "target_label: pod"),
                "does not set `instance`",
            ),
            (
                PODS.replace("action: keep", "action: kept"),
                "unknown relabel action",
            ),
        ] {
            let error = prometheus_config(&config(&format!("{STATIC}{broken}")), &rules(), dir)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
