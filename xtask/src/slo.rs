//! SLOs from one declaration (decision 0098): `deploy/slo.toml` declares an availability and a
//! latency objective per `/v1` route template; `cargo xtask codegen` writes from it
//! `deploy/prometheus/rules/slo.yml`:
//!
//! - `slo:sli_error:ratio_rate<W>` for W in 5m, 30m, 1h, 2h, 6h, 1d, 3d and the SLO window: the
//!   share of bad requests, request-weighted (the ratio of summed rates over W, computed from the
//!   raw counters for every window, never a mean of shorter windows' ratios);
//! - `slo:sli_requests:rate1h` (the minimum-traffic guard's input), `slo:error_budget:ratio` (the
//!   allowed error ratio) and `slo:error_budget_remaining:ratio` (1 at the start of a clean
//!   window, 0 when the budget is spent, negative beyond);
//! - multiwindow, multi-burn-rate alerts: `critical` (pages) at 14.4x over 1h and 5m or 6x over
//!   6h and 30m, `warning` (a ticket) at 3x over 1d and 2h or 1x over 3d and 6h (the severity
//!   words of every alert, decision 0099), each only while the route serves more than
//!   the guard's request rate.
//!
//! It also writes `deploy/grafana/dashboards/slo.json`: per objective, the error budget remaining,
//! the burn rates over the alerts' windows with their thresholds, and the SLI over the window;
//! a templated Prometheus datasource and `job`/`instance` variables.
//!
//! A latency threshold that is not a bucket edge of `http_request_duration_seconds` (read from
//! the catalogue that `mainstay-api metrics catalogue` prints) is refused: between edges the
//! good-request count would be an interpolation, not a count.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;

/// The declaration, under the workspace root.
pub(crate) const SLO_TOML: &str = "deploy/slo.toml";

/// The generated rules, under the workspace root.
pub(crate) const SLO_RULES: &str = "deploy/prometheus/rules/slo.yml";

/// The generated SLO dashboard, under the workspace root.
pub(crate) const SLO_DASHBOARD: &str = "deploy/grafana/dashboards/slo.json";

/// The counter of answered requests and the histogram of their durations (catalogue names).
const REQUESTS: &str = "http_requests";
const DURATION: &str = "http_request_duration_seconds";

/// The windows of the error-ratio recording rules, shortest first (the SLO window is added).
const WINDOWS: &[(&str, u64)] = &[
    ("5m", 300),
    ("30m", 1_800),
    ("1h", 3_600),
    ("2h", 7_200),
    ("6h", 21_600),
    ("1d", 86_400),
    ("3d", 259_200),
];

/// One burn-rate alert: name suffix, severity, `for`, and its (long window, short window, factor)
/// pairs, any of which fires it.
struct BurnAlert {
    suffix: &'static str,
    severity: &'static str,
    for_: &'static str,
    conditions: &'static [(&'static str, &'static str, f64)],
}

const BURN_ALERTS: &[BurnAlert] = &[
    BurnAlert {
        suffix: "BudgetBurnFast",
        severity: "critical",
        for_: "2m",
        conditions: &[("1h", "5m", 14.4), ("6h", "30m", 6.0)],
    },
    BurnAlert {
        suffix: "BudgetBurnSlow",
        severity: "warning",
        for_: "15m",
        conditions: &[("1d", "2h", 3.0), ("3d", "6h", 1.0)],
    },
];

/// `deploy/slo.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Declaration {
    window_days: u64,
    route_label: String,
    min_request_rate: f64,
    availability: f64,
    latency: Latency,
    routes: Vec<Route>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct Latency {
    objective: f64,
    threshold_seconds: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Route {
    template: String,
    availability: Option<f64>,
    latency: Option<Latency>,
}

/// One objective of one route, ready to render.
struct Slo<'a> {
    kind: &'static str,
    alert_prefix: &'static str,
    route: &'a str,
    /// The objective in percent (99.9).
    objective: f64,
    /// The latency threshold in seconds, for a latency SLO.
    threshold: Option<f64>,
}

/// Renders `deploy/prometheus/rules/slo.yml` from the declaration, the catalogue JSON (for the
/// route label and the bucket edges), the OpenAPI document (for the route templates) and the
/// repository URL (for `runbook_url`).
pub(crate) fn rules(
    declaration: &str,
    catalogue_json: &str,
    openapi_json: &str,
    repository: &str,
) -> Result<String> {
    let declaration: Declaration =
        toml::from_str(declaration).with_context(|| format!("{SLO_TOML} is not valid"))?;
    let catalogue: serde_json::Value =
        serde_json::from_str(catalogue_json).context("the metric catalogue is not JSON")?;
    let openapi: serde_json::Value =
        serde_json::from_str(openapi_json).context("the OpenAPI document is not JSON")?;
    let family = |name: &str| {
        catalogue["families"]
            .as_array()
            .and_then(|families| families.iter().find(|family| family["name"] == name))
            .with_context(|| format!("the metric catalogue has no family `{name}`"))
    };
    let label = declaration.route_label.as_str();
    for name in [REQUESTS, DURATION] {
        let labels = &family(name)?["labels"];
        ensure!(
            labels
                .as_array()
                .is_some_and(|labels| labels.iter().any(|known| known == label)),
            "{SLO_TOML}: route_label `{label}` is not a label of `{name}` (its labels: {labels})"
        );
    }
    let edges: Vec<f64> = family(DURATION)?["buckets"]
        .as_array()
        .with_context(|| format!("the metric catalogue lists no bucket edges of `{DURATION}`"))?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    ensure!(
        declaration.window_days >= 3,
        "{SLO_TOML}: window_days must be at least 3 (the longest alert window), not {}",
        declaration.window_days
    );
    ensure!(
        declaration.min_request_rate.is_finite() && declaration.min_request_rate >= 0.0,
        "{SLO_TOML}: min_request_rate must be a rate of requests per second, at least 0"
    );
    ensure!(
        !declaration.routes.is_empty(),
        "{SLO_TOML}: declares no [[routes]]"
    );
    let mut slos = Vec::new();
    for route in &declaration.routes {
        let template = route.template.as_str();
        ensure!(
            openapi["paths"].get(template).is_some() && template.starts_with("/v1/"),
            "{SLO_TOML}: route `{template}` is not a /v1 path of the OpenAPI document"
        );
        ensure!(
            declaration
                .routes
                .iter()
                .filter(|other| other.template == template)
                .count()
                == 1,
            "{SLO_TOML}: route `{template}` is declared twice"
        );
        let latency = route.latency.unwrap_or(declaration.latency);
        let threshold = latency.threshold_seconds;
        if !edges
            .iter()
            .any(|edge| (edge - threshold).abs() <= 1e-9 * edge.abs().max(1.0))
        {
            let known: Vec<String> = edges.iter().map(|edge| number(*edge)).collect();
            bail!(
                "{SLO_TOML}: the latency threshold {threshold} s of `{template}` is not a bucket edge of `{DURATION}` (edges: {}); between edges the count of fast requests would be a guess: choose an edge or add one to the histogram",
                known.join(", ")
            );
        }
        for (kind, alert_prefix, objective, threshold) in [
            (
                "availability",
                "Availability",
                route.availability.unwrap_or(declaration.availability),
                None,
            ),
            ("latency", "Latency", latency.objective, Some(threshold)),
        ] {
            ensure!(
                objective > 0.0 && objective < 100.0,
                "{SLO_TOML}: the {kind} objective of `{template}` must be a percentage between 0 and 100, not {objective}"
            );
            slos.push(Slo {
                kind,
                alert_prefix,
                route: template,
                objective,
                threshold,
            });
        }
    }
    let window = format!("{}d", declaration.window_days);
    let mut windows: Vec<&str> = WINDOWS.iter().map(|(name, _)| *name).collect();
    windows.push(&window);

    let mut out = format!(
        "# Generated by `cargo xtask codegen` from {SLO_TOML}: do not edit; change the declaration\n\
         # (docs/decisions/0098-slo-generator.md). `cargo xtask codegen --check` fails when stale.\n\
         groups:\n"
    );
    for slo in &slos {
        let selector = |extra: &str| format!("{{{label}=\"{}\"{extra}}}", slo.route);
        let by = format!("sum by (job, {label})");
        let budget = number((100.0 - slo.objective) / 100.0);
        let own = format!("{{slo=\"{}\",{label}=\"{}\"}}", slo.kind, slo.route);
        let total = |w: &str| match slo.threshold {
            None => format!("{by} (rate(http_requests_total{}[{w}]))", selector("")),
            Some(_) => format!("{by} (rate({DURATION}_count{}[{w}]))", selector("")),
        };
        let _ = write!(
            out,
            "  - name: slo-{}-{}\n    rules:\n",
            slo.kind,
            slug(slo.route)
        );
        for w in &windows {
            let bad = match slo.threshold {
                None => format!(
                    "(\n      {by} (rate(http_requests_total{}[{w}]))\n      or\n      0 * {}\n    )",
                    selector(",status_code=~\"5..\""),
                    total(w)
                ),
                Some(threshold) => format!(
                    "(\n      {}\n      -\n      {by} (rate({DURATION}_bucket{}[{w}]))\n    )",
                    total(w),
                    selector(&format!(",le=\"{}\"", le(threshold)))
                ),
            };
            let _ = write!(
                out,
                "      - record: slo:sli_error:ratio_rate{w}\n        expr: |\n          {}\n          /\n          {}\n{}",
                bad.replace('\n', "\n      "),
                total(w),
                static_labels(slo, label)
            );
        }
        let _ = write!(
            out,
            "      - record: slo:sli_requests:rate1h\n        expr: {}\n{}",
            total("1h"),
            static_labels(slo, label)
        );
        let _ = write!(
            out,
            "      - record: slo:error_budget:ratio\n        expr: vector({budget})\n{}",
            static_labels(slo, label)
        );
        let _ = write!(
            out,
            "      - record: slo:error_budget_remaining:ratio\n        expr: 1 - slo:sli_error:ratio_rate{window}{own} / {budget}\n{}",
            static_labels(slo, label)
        );
        let what = match slo.threshold {
            None => "requests answered without a 5xx status".to_owned(),
            Some(threshold) => format!("requests answered within {}", duration(threshold)),
        };
        for alert in BURN_ALERTS {
            let name = format!("{}{}", slo.alert_prefix, alert.suffix);
            let conditions: Vec<String> = alert
                .conditions
                .iter()
                .map(|(long, short, factor)| {
                    format!(
                        "(\n              slo:sli_error:ratio_rate{long}{own} / {budget} > {f}\n              and\n              slo:sli_error:ratio_rate{short}{own} / {budget} > {f}\n            )",
                        f = number(*factor)
                    )
                })
                .collect();
            let windows_text: Vec<String> = alert
                .conditions
                .iter()
                .map(|(long, short, factor)| {
                    format!("{}x over {long} and {short}", number(*factor))
                })
                .collect();
            let _ = write!(
                out,
                "      - alert: {name}\n        expr: |\n          (\n            {}\n          )\n          and on (job, {label}, slo)\n          slo:sli_requests:rate1h{own} > {}\n        for: {}\n        labels:\n          severity: {}\n          slo: {}\n          {label}: {}\n        annotations:\n          summary: {}\n          description: {}\n          runbook_url: {}\n",
                conditions.join("\n            or\n            "),
                number(declaration.min_request_rate),
                alert.for_,
                alert.severity,
                slo.kind,
                quote(slo.route),
                quote(&format!(
                    "{{{{ $labels.{label} }}}} burns its {} error budget {}",
                    slo.kind,
                    if alert.severity == "critical" {
                        "fast"
                    } else {
                        "steadily"
                    }
                )),
                quote(&format!(
                    "{{{{ $labels.{label} }}}} of {{{{ $labels.job }}}} spends the error budget of its {} objective ({}% of {what} over {window}) {{{{ $value | printf \"%.1f\" }}}} times as fast as the objective allows (fires at {}; guard: more than {} request/s over the last hour).",
                    slo.kind,
                    number(slo.objective),
                    windows_text.join(" or "),
                    number(declaration.min_request_rate)
                )),
                quote(&format!(
                    "{}/blob/main/docs/runbooks/{name}.md",
                    repository.trim_end_matches('/')
                ))
            );
        }
    }
    Ok(out)
}

/// The SLO dashboard (Grafana JSON) for the declaration; [`rules`] validates the declaration.
/// Laid out by the shared builder of `crate::dashboards`.
pub(crate) fn dashboard(declaration: &str) -> Result<String> {
    use crate::dashboards::{Board, Kind, Panel, Row};

    let declaration: Declaration =
        toml::from_str(declaration).with_context(|| format!("{SLO_TOML} is not valid"))?;
    let label = declaration.route_label.as_str();
    let window = format!("{}d", declaration.window_days);
    let panel = |title: String,
                 description: String,
                 unit: &str,
                 targets: Vec<(String, String)>,
                 threshold: Option<f64>| Panel {
        kind: Kind::Timeseries,
        title,
        description,
        unit: unit.to_owned(),
        targets,
        threshold,
    };
    let mut rows = Vec::new();
    for (kind, objective, what) in [
        (
            "availability",
            declaration.availability,
            "requests answered without a 5xx status".to_owned(),
        ),
        (
            "latency",
            declaration.latency.objective,
            format!(
                "requests answered within {}",
                duration(declaration.latency.threshold_seconds)
            ),
        ),
    ] {
        let own = format!("{{slo=\"{kind}\",job=~\"$job\"}}");
        let burn = |w: &str| {
            (
                format!(
                    "slo:sli_error:ratio_rate{w}{own} / on ({label}, slo) group_left slo:error_budget:ratio"
                ),
                format!("{{{{{label}}}}} {w}"),
            )
        };
        rows.push(Row {
            title: format!("{kind}: {}% of {what} over {window} (default objective; see deploy/slo.toml)", number(objective)),
            width: 12,
            panels: vec![
                panel(
                    format!("{kind}: error budget remaining ({window})"),
                    format!("1 at the start of a clean {window} window, 0 when the {kind} error budget is spent, negative beyond (slo:error_budget_remaining:ratio)."),
                    "percentunit",
                    vec![(format!("slo:error_budget_remaining:ratio{own}"), format!("{{{{{label}}}}}"))],
                    None,
                ),
                panel(
                    format!("{kind}: SLI over {window}"),
                    format!("The share of {what} over {window}, request-weighted across instances."),
                    "percentunit",
                    vec![(
                        format!("1 - slo:sli_error:ratio_rate{window}{own}"),
                        format!("{{{{{label}}}}}"),
                    )],
                    None,
                ),
                panel(
                    format!("{kind}: burn rate, page windows"),
                    "Error ratio divided by the error budget (1 spends it exactly over the window). Pages at 14.4 over 1h and 5m, or 6 over 6h and 30m.".to_owned(),
                    "none",
                    vec![burn("1h"), burn("5m"), burn("6h"), burn("30m")],
                    Some(14.4),
                ),
                panel(
                    format!("{kind}: burn rate, ticket windows"),
                    "Error ratio divided by the error budget. Tickets at 3 over 1d and 2h, or 1 over 3d and 6h.".to_owned(),
                    "none",
                    vec![burn("1d"), burn("2h"), burn("3d"), burn("6h")],
                    Some(3.0),
                ),
            ],
        });
    }
    let routes: Vec<String> = declaration
        .routes
        .iter()
        .map(|route| route.template.replace('{', "\\\\{").replace('}', "\\\\}"))
        .collect();
    let routes = routes.join("|");
    let selector = format!("job=~\"$job\",instance=~\"$instance\",{label}=~\"{routes}\"");
    rows.push(Row {
        title: "per instance (raw counters)".to_owned(),
        width: 12,
        panels: vec![
            panel(
                "5xx ratio by instance (5m)".to_owned(),
                "The availability SLI's bad share per instance over 5 minutes, for the SLO routes.".to_owned(),
                "percentunit",
                vec![(
                    format!("sum by (instance) (rate(http_requests_total{{{selector},status_code=~\"5..\"}}[5m])) / sum by (instance) (rate(http_requests_total{{{selector}}}[5m]))"),
                    "{{instance}}".to_owned(),
                )],
                None,
            ),
            panel(
                format!("share over {} by instance (5m)", duration(declaration.latency.threshold_seconds)),
                "The latency SLI's bad share per instance over 5 minutes, for the SLO routes.".to_owned(),
                "percentunit",
                vec![(
                    format!("1 - sum by (instance) (rate(http_request_duration_seconds_bucket{{{selector},le=\"{}\"}}[5m])) / sum by (instance) (rate(http_request_duration_seconds_count{{{selector}}}[5m]))", le(declaration.latency.threshold_seconds)),
                    "{{instance}}".to_owned(),
                )],
                None,
            ),
        ],
    });
    crate::dashboards::render(&Board {
        uid: "mainstay-slo".to_owned(),
        title: "mainstay-api SLOs".to_owned(),
        description: format!(
            "Generated by `cargo xtask codegen` from {SLO_TOML}: do not edit (decision 0098)."
        ),
        tag: "slo".to_owned(),
        from: "now-7d",
        rows,
    })
}

/// The static labels of an SLO's recording rules.
fn static_labels(slo: &Slo<'_>, label: &str) -> String {
    format!(
        "        labels:\n          slo: {}\n          {label}: {}\n",
        slo.kind,
        quote(slo.route)
    )
}

/// A YAML double-quoted string.
pub(crate) fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `/v1/collections/{collection}` as `v1-collections-collection`.
fn slug(route: &str) -> String {
    route
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// A number in its shortest decimal form, rounded to nine decimals (`1 - 0.999` is `0.001`).
fn number(value: f64) -> String {
    let text = format!("{value:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A bucket edge as prometheus-client writes it in `le` (dtoa: `0.1`, `1.0`).
fn le(edge: f64) -> String {
    let text = number(edge);
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// A threshold for people: `100 ms`, `1.5 s`.
fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{} ms", number(seconds * 1_000.0))
    } else {
        format!("{} s", number(seconds))
    }
}

/// The alert names of the rule files in `dir` (read as rule files, `crate::lint::parse_rules`), sorted, deduplicated.
pub(crate) fn alert_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for file in yaml_files(dir)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("could not read {}", file.display()))?;
        let rules = crate::lint::parse_rules(&file.display().to_string(), &text)?;
        names.extend(rules.into_iter().filter_map(|rule| rule.alert));
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The `*.yml` files of a directory, sorted.
pub(crate) fn yaml_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("could not list {}", dir.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Checks that every alert name is tested firing and silent: reads the `alertname:` and
/// `exp_alerts:` lines of promtool test files (an `alert_rule_test` whose `exp_alerts` is `[]`
/// or absent is a silent case, any other a firing one; promtool has no coverage report).
pub(crate) fn check_alert_coverage(alerts: &[String], tests: &[(String, String)]) -> Result<()> {
    let mut firing: Vec<String> = Vec::new();
    let mut silent: Vec<String> = Vec::new();
    for (file, text) in tests {
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let Some(name) = line
                .trim_start()
                .trim_start_matches("- ")
                .strip_prefix("alertname:")
            else {
                continue;
            };
            let name = name.trim().trim_matches('"').to_owned();
            let indent = line.len() - line.trim_start().len();
            // The case ends at the next line indented less than its `alertname` (or a new `- `
            // item at the same depth).
            let mut fires = false;
            for next in &lines[at + 1..] {
                let depth = next.len() - next.trim_start().len();
                let item = next.trim_start().starts_with("- ");
                if !next.trim().is_empty() && (depth < indent || (item && depth <= indent)) {
                    break;
                }
                if let Some(value) = next.trim_start().strip_prefix("exp_alerts:") {
                    fires = value.trim() != "[]";
                    break;
                }
            }
            ensure!(!name.is_empty(), "{file}: an alertname without a name");
            if fires {
                firing.push(name);
            } else {
                silent.push(name);
            }
        }
    }
    let mut gaps = Vec::new();
    for alert in alerts {
        if !firing.contains(alert) {
            gaps.push(format!("{alert} (no case where it fires)"));
        }
        if !silent.contains(alert) {
            gaps.push(format!("{alert} (no case where it stays silent)"));
        }
    }
    ensure!(
        gaps.is_empty(),
        "alerts not tested both ways in deploy/prometheus/tests: {}",
        gaps.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_alert_coverage, dashboard, le, number, rules};

    const CATALOGUE: &str = r#"{"families": [
        {"name": "http_requests", "labels": ["method", "endpoint", "status_code"]},
        {"name": "http_request_duration_seconds", "labels": ["method", "endpoint"],
         "buckets": [0.01, 0.1, 0.5, 1.0]}
    ]}"#;
    const OPENAPI: &str = r#"{"paths": {"/v1/whoami": {}, "/admin/config": {}}}"#;

    fn declaration(threshold: &str, route: &str) -> String {
        format!(
            "window_days = 30\nroute_label = \"endpoint\"\nmin_request_rate = 1\navailability = 99.9\n\
             latency = {{ objective = 99.0, threshold_seconds = {threshold} }}\n\
             [[routes]]\ntemplate = \"{route}\"\n"
        )
    }

    #[test]
    fn the_rules_are_request_weighted_and_guarded() {
        let text = rules(
            &declaration("0.1", "/v1/whoami"),
            CATALOGUE,
            OPENAPI,
            "https://example.com/r",
        )
        .unwrap();
        // Every window, the SLO window included, is a ratio of summed rates of the raw counters.
        for w in ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"] {
            assert!(
                text.contains(&format!(
                    "/\n          sum by (job, endpoint) (rate(http_requests_total{{endpoint=\"/v1/whoami\"}}[{w}]))"
                )),
                "{w}: {text}"
            );
        }
        assert!(text.contains(
            "http_request_duration_seconds_bucket{endpoint=\"/v1/whoami\",le=\"0.1\"}[3d]"
        ));
        assert!(text.contains("slo:sli_error:ratio_rate1h{slo=\"availability\",endpoint=\"/v1/whoami\"} / 0.001 > 14.4"));
        assert!(text.contains(
            "slo:sli_error:ratio_rate6h{slo=\"latency\",endpoint=\"/v1/whoami\"} / 0.01 > 1"
        ));
        assert!(
            text.contains("slo:sli_requests:rate1h{slo=\"latency\",endpoint=\"/v1/whoami\"} > 1\n")
        );
        assert!(text.contains("runbook_url: \"https://example.com/r/blob/main/docs/runbooks/LatencyBudgetBurnSlow.md\""));
        assert!(!text.contains("avg"));
    }

    #[test]
    fn a_threshold_between_bucket_edges_is_refused() {
        let error = rules(&declaration("0.12", "/v1/whoami"), CATALOGUE, OPENAPI, "r").unwrap_err();
        assert!(
            error.to_string().contains("the latency threshold 0.12 s of `/v1/whoami` is not a bucket edge of `http_request_duration_seconds` (edges: 0.01, 0.1, 0.5, 1)"),
            "{error}"
        );
        let error = rules(
            &declaration("0.1", "/admin/config"),
            CATALOGUE,
            OPENAPI,
            "r",
        )
        .unwrap_err();
        assert!(error.to_string().contains("is not a /v1 path"), "{error}");
    }

    #[test]
    fn the_dashboard_has_unique_ids_a_datasource_variable_and_units() {
        let text = dashboard(&declaration("0.1", "/v1/whoami")).unwrap();
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        let panels = document["panels"].as_array().unwrap();
        let mut ids: Vec<u64> = panels
            .iter()
            .map(|panel| panel["id"].as_u64().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), panels.len());
        assert_eq!(document["templating"]["list"][0]["type"], "datasource");
        for panel in panels.iter().filter(|panel| panel["type"] != "row") {
            assert_eq!(panel["datasource"]["uid"], "${datasource}");
            assert!(
                panel["fieldConfig"]["defaults"]["unit"].is_string(),
                "{panel}"
            );
            assert!(!panel["description"].as_str().unwrap().is_empty());
        }
        assert!(
            text.contains(
                "slo:error_budget_remaining:ratio{slo=\\\"latency\\\",job=~\\\"$job\\\"}"
            ),
            "{text}"
        );
    }

    #[test]
    fn numbers_print_as_prometheus_reads_them() {
        assert_eq!(number((100.0 - 99.9) / 100.0), "0.001");
        assert_eq!(number(14.4), "14.4");
        assert_eq!(le(0.1), "0.1");
        assert_eq!(le(1.0), "1.0");
    }

    #[test]
    fn coverage_needs_a_firing_and_a_silent_case_per_alert() {
        let tests = "tests:\n  - alert_rule_test:\n      - eval_time: 5m\n        alertname: A\n        exp_alerts:\n          - exp_labels: {}\n      - eval_time: 5m\n        alertname: A\n        exp_alerts: []\n      - eval_time: 5m\n        alertname: B\n        exp_alerts: []\n";
        let alerts = vec!["A".to_owned(), "B".to_owned()];
        let error =
            check_alert_coverage(&alerts, &[("t.yml".to_owned(), tests.to_owned())]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "alerts not tested both ways in deploy/prometheus/tests: B (no case where it fires)"
        );
        check_alert_coverage(&alerts[..1], &[("t.yml".to_owned(), tests.to_owned())]).unwrap();
    }
}
