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
//!
//! And, by `cargo xtask deploy-check` (decision 0106), `deploy/compose/compose.yaml`: health
//! checks, health-gated start order, pinned images, mounted files.

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

/// `cargo xtask deploy-check`: the structural checks of the deploy files that need no tool.
pub(crate) fn check() -> Result<()> {
    let root = crate::workspace_root();
    let started = std::time::Instant::now();
    let path = root.join(COMPOSE);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("could not read {COMPOSE}"))?;
    compose(&text, path.parent().unwrap_or(&root))?;
    let manifests = kubernetes(&root.join(K8S))?;
    checkov(&root)?;
    eprintln!(
        "deploy-check: {COMPOSE}, {manifests} Kubernetes manifests and checkov on them and {DOCKERFILE} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The image's Dockerfile, under the workspace root.
const DOCKERFILE: &str = "deploy/docker/Dockerfile";

/// The checkov release (PyPI) the manifests and the Dockerfile must pass.
const CHECKOV: &str = "3.2.500";

/// `checkov --skip-download` on `deploy/k8s` (framework kubernetes) and on the Dockerfile: zero
/// failed checks. A deliberate exception is skipped in place with its reason (a
/// `checkov.io/skipN` annotation on the resource, a `# checkov:skip=ID: reason` comment in the
/// Dockerfile), so a reviewer sees it where it applies.
fn checkov(root: &Path) -> Result<()> {
    let checkov = crate::venv::tool("checkov", CHECKOV, "checkov")?;
    for (framework, target) in [
        ("kubernetes", ["-d", K8S]),
        ("dockerfile", ["-f", DOCKERFILE]),
    ] {
        let output = std::process::Command::new(&checkov)
            .current_dir(root)
            .args([
                "--skip-download",
                "--quiet",
                "--compact",
                "--framework",
                framework,
            ])
            .args(target)
            .env("BC_SKIP_MAPPING", "TRUE")
            .output()
            .context("could not run checkov")?;
        ensure!(
            output.status.success(),
            "checkov {CHECKOV} found failed checks in {} ({framework}); fix them, or skip one in place with its reason:\n{}{}",
            target[1],
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The Kubernetes manifests, under the workspace root: `base/`, and one directory per mode.
const K8S: &str = "deploy/k8s";

/// The kustomizations `K8S` holds.
const KUSTOMIZATIONS: &[&str] = &[
    "base",
    "writer",
    "stateless",
    "analysis",
    "canary",
    "bluegreen",
];

/// The Kubernetes version the core kinds are validated against, and the `kubernetes-validate`
/// release (PyPI) that bundles its schemas.
const KUBERNETES_VERSION: &str = "1.31.0";
const KUBERNETES_VALIDATE: &str = "1.31.0";

/// The schemas kept in the repository for the custom resources, by `apiVersion` group and kind.
const CUSTOM_SCHEMAS: &[(&str, &str)] = &[
    ("ServiceMonitor", "schemas/servicemonitor.json"),
    ("PrometheusRule", "schemas/prometheusrule.json"),
    ("Rollout", "schemas/rollout.json"),
    ("AnalysisTemplate", "schemas/analysistemplate.json"),
];

/// Checks the manifests under `dir` (`deploy/k8s`): each kustomization lists files that exist and
/// every manifest of its directory; core kinds validate in strict mode against the schemas of
/// `KUBERNETES_VERSION`; custom resources against the schemas of `CUSTOM_SCHEMAS`; the workloads
/// follow the rules of [`workload`]. Returns how many manifests were checked.
fn kubernetes(dir: &Path) -> Result<usize> {
    let mut core = Vec::new();
    let mut custom: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut problems = Vec::new();
    let mut settings: Option<Settings> = None;
    let mut workloads = Vec::new();
    for name in KUSTOMIZATIONS {
        let kustomization = dir.join(name).join("kustomization.yaml");
        let text = std::fs::read_to_string(&kustomization)
            .with_context(|| format!("could not read {}", kustomization.display()))?;
        let document: Value = serde_norway::from_str(&text)
            .with_context(|| format!("{} is not YAML", kustomization.display()))?;
        let listed: Vec<String> = document["resources"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry.as_str().map(str::to_owned))
            .collect();
        for entry in &listed {
            let target = dir.join(name).join(entry);
            if !(target.is_file() || target.join("kustomization.yaml").is_file()) {
                problems.push(format!(
                    "{K8S}/{name}/kustomization.yaml lists {entry}, which does not exist"
                ));
            }
        }
        for file in std::fs::read_dir(dir.join(name))? {
            let path = file?.path();
            let Some(file_name) = path.file_name().and_then(|name| name.to_str()) else {
                continue;
            };
            if !file_name.ends_with(".yaml") || file_name == "kustomization.yaml" {
                continue;
            }
            if !listed.iter().any(|entry| entry == file_name) {
                problems.push(format!(
                    "{K8S}/{name}/{file_name} is not listed in its kustomization.yaml"
                ));
            }
            let text = std::fs::read_to_string(&path)?;
            let manifest: Value = serde_norway::from_str(&text)
                .with_context(|| format!("{} is not YAML", path.display()))?;
            let kind = manifest["kind"].as_str().unwrap_or_default().to_owned();
            match CUSTOM_SCHEMAS
                .iter()
                .find(|(custom_kind, _)| *custom_kind == kind)
            {
                Some((_, schema)) => custom.push((path.clone(), dir.join(schema))),
                None if manifest["apiVersion"]
                    .as_str()
                    .is_some_and(|api| api.contains('.') && !api.contains("k8s.io")) =>
                {
                    problems.push(format!(
                        "{}: the custom resource {kind} has no schema in {K8S}/schemas",
                        path.display()
                    ));
                }
                None => core.push(path.clone()),
            }
            if kind == "ConfigMap" {
                settings = settings.or(Settings::of(&manifest));
            }
            if matches!(kind.as_str(), "Deployment" | "StatefulSet") {
                workloads.push((path.display().to_string(), manifest));
            } else if kind == "CronJob" {
                problems.extend(
                    cron_job(&manifest)
                        .into_iter()
                        .map(|problem| format!("{}: {problem}", path.display())),
                );
            }
        }
    }
    for (path, manifest) in &workloads {
        problems.extend(
            workload(manifest, settings)
                .into_iter()
                .map(|problem| format!("{path}: {problem}")),
        );
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    let validate = crate::venv::tool(
        "kubernetes-validate",
        KUBERNETES_VALIDATE,
        "kubernetes-validate",
    )?;
    let output = std::process::Command::new(&validate)
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .args(&core)
        .output()
        .context("could not run kubernetes-validate")?;
    ensure!(
        output.status.success(),
        "kubernetes-validate --strict -k {KUBERNETES_VERSION} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The custom resources: jsonschema and PyYAML come with kubernetes-validate.
    let python = validate.with_file_name("python");
    let mut arguments = Vec::new();
    for (manifest, schema) in &custom {
        arguments.push(manifest.clone());
        arguments.push(schema.clone());
    }
    let output = std::process::Command::new(&python)
        .arg("-c")
        .arg(CUSTOM_CHECK)
        .args(&arguments)
        .output()
        .context("could not run the custom resource check")?;
    ensure!(
        output.status.success(),
        "custom resources do not match their schemas:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(core.len() + custom.len())
}

/// Validates `MANIFEST SCHEMA` pairs (its arguments) with jsonschema's Draft 7 validator, printing
/// every error; exits 1 when there is one.
const CUSTOM_CHECK: &str = r#"import json, sys, yaml, jsonschema
bad = 0
pairs = sys.argv[1:]
for manifest, schema in zip(pairs[0::2], pairs[1::2]):
    validator = jsonschema.Draft7Validator(json.load(open(schema)))
    for error in validator.iter_errors(yaml.safe_load(open(manifest))):
        bad += 1
        print(f"{manifest}: {'/'.join(map(str, error.absolute_path))}: {error.message}")
sys.exit(1 if bad else 0)
"#;

/// The settings of the `mainstay.toml` a ConfigMap carries that the manifests must agree with,
/// in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settings {
    shutdown_timeout: u64,
    check_timeout: u64,
}

impl Settings {
    fn of(config_map: &Value) -> Option<Self> {
        let text = config_map["data"]["mainstay.toml"].as_str()?;
        let config: toml::Value = text.parse().ok()?;
        let seconds = |section: &str, key: &str| -> Option<u64> {
            config
                .get(section)?
                .get(key)?
                .as_str()?
                .strip_suffix('s')?
                .parse()
                .ok()
        };
        Some(Self {
            shutdown_timeout: seconds("shutdown", "timeout")?,
            check_timeout: seconds("health", "default_timeout")?,
        })
    }
}

/// The rules every workload of `deploy/k8s` follows (what a reviewer would otherwise check by
/// hand): the pod runs as a non-root uid with the RuntimeDefault seccomp profile and no service
/// account token; each container has a read-only root file system, no privilege escalation, all
/// capabilities dropped, resource requests and a memory limit, and startup, readiness and
/// liveness probes on `/health/startup`, `/health/ready` and `/health/live`; the grace period is
/// longer than `shutdown.timeout`; a StatefulSet (the writer) has exactly one replica.
fn workload(manifest: &Value, settings: Option<Settings>) -> Vec<String> {
    let pod = &manifest["spec"]["template"]["spec"];
    let mut problems = pod_rules(pod);
    let mut require = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    let Some(settings) = settings else {
        return vec![
            "no ConfigMap sets shutdown.timeout and health.default_timeout to compare with"
                .to_owned(),
        ];
    };
    require(
        grace > settings.shutdown_timeout,
        &format!(
            "terminationGracePeriodSeconds ({grace}) must exceed shutdown.timeout ({}s)",
            settings.shutdown_timeout
        ),
    );
    if manifest["kind"] == "StatefulSet" {
        require(
            manifest["spec"]["replicas"].as_u64() == Some(1),
            "the writer StatefulSet must have exactly one replica (one writer per prefix)",
        );
    }
    let mut container_problems = Vec::new();
    for container in pod["containers"].as_sequence().into_iter().flatten() {
        container_problems.extend(container_rules(container));
        for (probe, path) in [
            ("startupProbe", "/health/startup"),
            ("readinessProbe", "/health/ready"),
            ("livenessProbe", "/health/live"),
        ] {
            require(
                container[probe]["httpGet"]["path"] == path,
                &format!("each container needs a {probe} on {path}"),
            );
            // A check may take health.default_timeout; the probe must outwait it, or a slow
            // dependency turns into a failed probe rather than an unhealthy answer.
            let timeout = container[probe]["timeoutSeconds"].as_u64().unwrap_or(1);
            require(
                timeout > settings.check_timeout,
                &format!(
                    "{probe}.timeoutSeconds ({timeout}) must exceed health.default_timeout ({}s)",
                    settings.check_timeout
                ),
            );
        }
    }
    problems.extend(container_problems);
    problems
}

/// The rules every CronJob of `deploy/k8s` follows (the backup jobs, decision 0115): the pod
/// rules of [`workload`] (non-root, RuntimeDefault seccomp, no service account token) and its
/// container rules but the probes (a job is not a server), plus what keeps a job from piling up
/// or running forever: `concurrencyPolicy: Forbid`, a `startingDeadlineSeconds`, an
/// `activeDeadlineSeconds` and a `backoffLimit`, and `restartPolicy: Never` (a failed attempt is
/// a new pod with its own logs, counted by the backoff limit).
fn cron_job(manifest: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = &manifest["spec"];
    let job = &spec["jobTemplate"]["spec"];
    let pod = &job["template"]["spec"];
    let mut require = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    require(
        spec["concurrencyPolicy"] == "Forbid",
        "a CronJob must set concurrencyPolicy: Forbid",
    );
    require(
        spec["startingDeadlineSeconds"].as_u64().is_some(),
        "a CronJob must set startingDeadlineSeconds",
    );
    require(
        job["activeDeadlineSeconds"].as_u64().is_some(),
        "a CronJob's job must set activeDeadlineSeconds",
    );
    require(
        job["backoffLimit"].as_u64().is_some(),
        "a CronJob's job must set backoffLimit",
    );
    require(
        pod["restartPolicy"] == "Never",
        "a CronJob's pod must set restartPolicy: Never",
    );
    problems.extend(pod_rules(pod));
    for container in pod["containers"].as_sequence().into_iter().flatten() {
        problems.extend(container_rules(container));
    }
    problems
}

/// The security rules of a pod: non-root, RuntimeDefault seccomp, no service account token.
fn pod_rules(pod: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut require = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    require(
        pod["securityContext"]["runAsNonRoot"].as_bool() == Some(true),
        "the pod must set runAsNonRoot: true",
    );
    require(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .is_some_and(|uid| uid > 0),
        "the pod must run as a numeric non-root runAsUser",
    );
    require(
        pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
        "the pod must use the RuntimeDefault seccomp profile",
    );
    require(
        pod["automountServiceAccountToken"].as_bool() == Some(false),
        "the pod must not mount a service account token",
    );
    problems
}

/// The security and resource rules of one container (probes apart).
fn container_rules(container: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut require = |ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    let security = &container["securityContext"];
    require(
        security["readOnlyRootFilesystem"].as_bool() == Some(true),
        "each container must have a read-only root file system",
    );
    require(
        security["allowPrivilegeEscalation"].as_bool() == Some(false),
        "each container must set allowPrivilegeEscalation: false",
    );
    require(
        security["capabilities"]["drop"]
            .as_sequence()
            .is_some_and(|drop| drop.iter().any(|cap| cap == "ALL")),
        "each container must drop ALL capabilities",
    );
    require(
        container["resources"]["requests"].is_mapping()
            && container["resources"]["limits"]["memory"].is_string(),
        "each container must request resources and limit memory",
    );
    problems
}

/// The PrometheusRule that ships the generated rules to a Prometheus Operator, under the root.
pub(crate) const PROMETHEUS_RULE: &str = "deploy/k8s/base/prometheusrule.yaml";

/// The PrometheusRule carrying every group of the rule files (`(path, text)`, in order), so that
/// the rules shipped to Kubernetes are the generated ones (`codegen --check` keeps it current).
pub(crate) fn prometheus_rule(rule_files: &[(String, String)]) -> Result<String> {
    let mut groups = Vec::new();
    for (path, text) in rule_files {
        let file: Value =
            serde_norway::from_str(text).with_context(|| format!("{path} is not YAML"))?;
        groups.extend(
            file["groups"]
                .as_sequence()
                .with_context(|| format!("{path} has no groups"))?
                .iter()
                .cloned(),
        );
    }
    let mut document = serde_norway::Mapping::new();
    document.insert("apiVersion".into(), "monitoring.coreos.com/v1".into());
    document.insert("kind".into(), "PrometheusRule".into());
    let mut metadata = serde_norway::Mapping::new();
    metadata.insert("name".into(), "mainstay-api".into());
    metadata.insert("namespace".into(), "mainstay".into());
    let mut labels = serde_norway::Mapping::new();
    labels.insert("app.kubernetes.io/name".into(), "mainstay-api".into());
    metadata.insert("labels".into(), Value::Mapping(labels));
    document.insert("metadata".into(), Value::Mapping(metadata));
    let mut spec = serde_norway::Mapping::new();
    spec.insert("groups".into(), Value::Sequence(groups));
    document.insert("spec".into(), Value::Mapping(spec));
    let body = serde_norway::to_string(&Value::Mapping(document))
        .context("could not write the PrometheusRule")?;
    Ok(format!(
        "# Generated by `cargo xtask codegen` from deploy/prometheus/rules/*.yml: do not edit\n\
         # (decision 0107). `cargo xtask codegen --check` fails when it differs from the rules.\n{body}"
    ))
}

/// The Argo Rollouts analysis, under the workspace root.
const ANALYSIS: &str = "deploy/k8s/analysis/analysistemplate.yaml";

/// The Prometheus queries of the rollout analysis, as `(who, expr)` for `crate::lint`.
pub(crate) fn analysis_queries(root: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(root.join(ANALYSIS))
        .with_context(|| format!("could not read {ANALYSIS}"))?;
    let template: Value =
        serde_norway::from_str(&text).with_context(|| format!("{ANALYSIS} is not YAML"))?;
    Ok(template["spec"]["metrics"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|metric| {
            Some((
                format!("rollout analysis › {}", metric["name"].as_str()?),
                metric["provider"]["prometheus"]["query"]
                    .as_str()?
                    .to_owned(),
            ))
        })
        .collect())
}

/// The compose file, under the workspace root.
pub(crate) const COMPOSE: &str = "deploy/compose/compose.yaml";

/// The key by which a service without a health check says why it has none.
const NO_HEALTHCHECK: &str = "x-mainstay-no-healthcheck";

/// Checks a compose file (its text, and the directory its relative paths start from), returning
/// every problem: each service has an exec-form health check or says why not (`NO_HEALTHCHECK`);
/// each dependency waits for `service_healthy` (or, for a one-shot job with `restart: "no"`,
/// `service_completed_successfully`) of a service that exists and has a health check; each image
/// is pinned to a tag other than `latest` or a digest; each bind-mounted file or directory and
/// each build context and Dockerfile exist; each named volume is declared.
pub(crate) fn compose(text: &str, dir: &Path) -> Result<()> {
    let document: Value =
        serde_norway::from_str(text).with_context(|| format!("{COMPOSE} is not YAML"))?;
    let services = document["services"]
        .as_mapping()
        .with_context(|| format!("{COMPOSE} has no services"))?;
    let declared_volumes: Vec<String> = document["volumes"]
        .as_mapping()
        .map(|volumes| {
            volumes
                .keys()
                .filter_map(|key| key.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut problems = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        let has_check = service["healthcheck"]["test"]
            .as_sequence()
            .is_some_and(|test| {
                test.first()
                    .is_some_and(|first| first == "CMD" || first == "CMD-SHELL")
            });
        let reason = service[NO_HEALTHCHECK].as_str().unwrap_or_default().trim();
        match (has_check, reason.is_empty()) {
            (true, false) => problems.push(format!(
                "service `{name}` has a health check and says why it has none"
            )),
            (false, true) => problems.push(format!(
                "service `{name}` has no exec-form health check (`test: [\"CMD\", ...]`) and no `{NO_HEALTHCHECK}` reason"
            )),
            _ => {}
        }
        if service["healthcheck"]["disable"].as_bool() == Some(true) {
            problems.push(format!("service `{name}` disables its health check"));
        }
        if let Some(depends) = service.get("depends_on") {
            let Some(depends) = depends.as_mapping() else {
                problems.push(format!(
                    "service `{name}`: depends_on must be the long form with a condition per dependency"
                ));
                continue;
            };
            for (target, rule) in depends {
                let target = target.as_str().unwrap_or_default();
                let condition = rule["condition"].as_str().unwrap_or("service_started");
                let Some(other) = services.get(target) else {
                    problems.push(format!(
                        "service `{name}` depends on `{target}`, which does not exist"
                    ));
                    continue;
                };
                let other_checked = other["healthcheck"]["test"].as_sequence().is_some();
                let one_shot = other["restart"].as_str() == Some("no");
                match condition {
                    "service_healthy" if other_checked => {}
                    "service_healthy" => problems.push(format!(
                        "service `{name}` waits for `{target}` to be healthy, but `{target}` has no health check"
                    )),
                    "service_completed_successfully" if one_shot => {}
                    other => problems.push(format!(
                        "service `{name}` waits for `{target}` with `{other}`; use service_healthy (or service_completed_successfully for a one-shot job with restart: \"no\")"
                    )),
                }
            }
        }
        let image = service["image"].as_str().unwrap_or_default();
        if image.is_empty() {
            problems.push(format!("service `{name}` names no image"));
        } else {
            let last = image.rsplit('/').next().unwrap_or(image);
            let pinned = image.contains("@sha256:")
                || last
                    .split_once(':')
                    .is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest");
            if !pinned {
                problems.push(format!(
                    "service `{name}`: image `{image}` is not pinned to a tag or digest"
                ));
            }
        }
        if let Some(build) = service.get("build") {
            let context = dir.join(build["context"].as_str().unwrap_or("."));
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            if !dockerfile.is_file() {
                problems.push(format!(
                    "service `{name}`: its Dockerfile {} does not exist",
                    dockerfile.display()
                ));
            }
        }
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let Some(short) = volume.as_str() else {
                problems.push(format!("service `{name}`: use the short volume syntax"));
                continue;
            };
            let source = short.split(':').next().unwrap_or_default();
            if source.starts_with('.') || source.starts_with('/') {
                if !dir.join(source).exists() {
                    problems.push(format!(
                        "service `{name}` mounts {source}, which does not exist"
                    ));
                }
            } else if !declared_volumes.iter().any(|declared| declared == source) {
                problems.push(format!(
                    "service `{name}` mounts the volume `{source}`, which is not declared"
                ));
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "{COMPOSE}:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Settings, compose, cron_job, prometheus_config, workload};

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

    const COMPOSE_OK: &str = "services:\n  api:\n    image: api:local\n    volumes:\n      - data:/data\n      - ./conf:/conf:ro\n    healthcheck:\n      test: [\"CMD\", \"api\", \"probe\", \"ready\"]\n    depends_on:\n      redis:\n        condition: service_healthy\n      init:\n        condition: service_completed_successfully\n  redis:\n    image: redis:7.2.5-alpine\n    healthcheck:\n      test: [\"CMD\", \"redis-cli\", \"ping\"]\n  init:\n    image: mc:1.0\n    restart: \"no\"\n    x-mainstay-no-healthcheck: one-shot\nvolumes:\n  data:\n";

    fn compose_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf")).unwrap();
        dir
    }

    #[test]
    fn a_sound_compose_file_passes() {
        let dir = compose_dir();
        compose(COMPOSE_OK, dir.path()).unwrap();
    }

    #[test]
    fn each_compose_rule_fails_on_its_own_breakage() {
        let dir = compose_dir();
        for (broken, expected) in [
            (
                COMPOSE_OK.replace(
                    "    healthcheck:\n      test: [\"CMD\", \"redis-cli\", \"ping\"]\n",
                    "",
                ),
                "`redis` has no exec-form health check",
            ),
            (
                COMPOSE_OK.replace(
                    "redis:\n        condition: service_healthy",
                    "redis:\n        condition: service_started",
                ),
                "waits for `redis` with `service_started`",
            ),
            (
                COMPOSE_OK.replace("    restart: \"no\"\n", ""),
                "waits for `init` with `service_completed_successfully`",
            ),
            (
                COMPOSE_OK.replace("redis:7.2.5-alpine", "redis"),
                "`redis` is not pinned",
            ),
            (
                COMPOSE_OK.replace("redis:7.2.5-alpine", "redis:latest"),
                "`redis:latest` is not pinned",
            ),
            (
                COMPOSE_OK.replace("./conf:/conf", "./missing:/conf"),
                "mounts ./missing, which does not exist",
            ),
            (
                COMPOSE_OK.replace("- data:/data", "- cache:/data"),
                "the volume `cache`, which is not declared",
            ),
            (
                COMPOSE_OK.replace("    x-mainstay-no-healthcheck: one-shot\n", ""),
                "`init` has no exec-form health check",
            ),
            (
                COMPOSE_OK.replace(
                    "      init:\n        condition",
                    "      nothing:\n        condition",
                ),
                "depends on `nothing`, which does not exist",
            ),
        ] {
            let error = compose(&broken, dir.path()).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }

    const WRITER: &str = include_str!("../../deploy/k8s/writer/statefulset.yaml");
    const STATELESS: &str = include_str!("../../deploy/k8s/stateless/deployment.yaml");
    const CONFIG: &str = include_str!("../../deploy/k8s/base/configmap.yaml");

    fn problems(text: &str) -> Vec<String> {
        let config: serde_norway::Value = serde_norway::from_str(CONFIG).unwrap();
        let settings = Settings::of(&config);
        assert_eq!(
            settings,
            Some(Settings {
                shutdown_timeout: 25,
                check_timeout: 2
            })
        );
        workload(&serde_norway::from_str(text).unwrap(), settings)
    }

    const BACKUP_JOB: &str = include_str!("../../deploy/k8s/writer/cronjob-backup.yaml");
    const VERIFY_JOB: &str = include_str!("../../deploy/k8s/writer/cronjob-backup-verify.yaml");

    fn job_problems(text: &str) -> Vec<String> {
        cron_job(&serde_norway::from_str(text).unwrap())
    }

    #[test]
    fn the_shipped_cron_jobs_follow_every_rule() {
        assert_eq!(job_problems(BACKUP_JOB), Vec::<String>::new());
        assert_eq!(job_problems(VERIFY_JOB), Vec::<String>::new());
    }

    #[test]
    fn each_cron_job_rule_fails_on_its_own_breakage() {
        for (from, to, expected) in [
            (
                "concurrencyPolicy: Forbid",
                "concurrencyPolicy: Allow",
                "Forbid",
            ),
            (
                "  startingDeadlineSeconds: 600\n",
                "",
                "startingDeadlineSeconds",
            ),
            (
                "      activeDeadlineSeconds: 1800\n",
                "",
                "activeDeadlineSeconds",
            ),
            ("      backoffLimit: 2\n", "", "backoffLimit"),
            (
                "restartPolicy: Never",
                "restartPolicy: OnFailure",
                "restartPolicy",
            ),
            ("runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot"),
            ("type: RuntimeDefault", "type: Unconfined", "seccomp"),
            (
                "automountServiceAccountToken: false",
                "automountServiceAccountToken: true",
                "service account token",
            ),
            (
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: false",
                "read-only root",
            ),
            ("drop: [ALL]", "drop: [NET_RAW]", "drop ALL"),
            ("                  memory: 64Mi\n", "", "limit memory"),
        ] {
            assert!(BACKUP_JOB.contains(from), "{from}");
            let found = job_problems(&BACKUP_JOB.replacen(from, to, 1));
            assert!(
                found.iter().any(|problem| problem.contains(expected)),
                "{expected}: {found:?}"
            );
        }
    }

    #[test]
    fn the_shipped_workloads_follow_every_rule() {
        assert_eq!(problems(WRITER), Vec::<String>::new());
        assert_eq!(problems(STATELESS), Vec::<String>::new());
    }

    #[test]
    fn each_workload_rule_fails_on_its_own_breakage() {
        for (from, to, expected) in [
            ("runAsNonRoot: true", "runAsNonRoot: false", "runAsNonRoot"),
            ("type: RuntimeDefault", "type: Unconfined", "seccomp"),
            (
                "      automountServiceAccountToken: false\n",
                "",
                "service account token",
            ),
            (
                "terminationGracePeriodSeconds: 45",
                "terminationGracePeriodSeconds: 25",
                "must exceed shutdown.timeout",
            ),
            ("  replicas: 1\n", "  replicas: 2\n", "exactly one replica"),
            (
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: false",
                "read-only root",
            ),
            (
                "allowPrivilegeEscalation: false",
                "allowPrivilegeEscalation: true",
                "allowPrivilegeEscalation",
            ),
            ("drop: [ALL]", "drop: [NET_RAW]", "drop ALL"),
            ("              memory: 512Mi\n", "", "limit memory"),
            (
                "path: /health/ready",
                "path: /health/live",
                "readinessProbe on /health/ready",
            ),
            (
                "      timeoutSeconds: 3\n            failureThreshold: 60",
                "      timeoutSeconds: 2\n            failureThreshold: 60",
                "startupProbe.timeoutSeconds (2) must exceed",
            ),
        ] {
            assert!(WRITER.contains(from), "{from}");
            let found = problems(&WRITER.replacen(from, to, 1));
            assert!(
                found.iter().any(|problem| problem.contains(expected)),
                "{expected}: {found:?}"
            );
        }
    }
}
