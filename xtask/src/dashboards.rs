//! The Grafana dashboards of `mainstay-api` (issue 16, point 2; decision 0100): `cargo xtask
//! codegen` writes `deploy/grafana/dashboards/<area>.json` for each [`Area`] from the panel table
//! of `areas.rs` and the alerts of [`crate::alerts::ALERTS`], and checks every dashboard JSON of that
//! directory (the SLO dashboard of `crate::slo` included) structurally, since no Grafana runs here.
//!
//! - The builder ([`Board`], [`Row`], [`Panel`], [`render`]): a templated Prometheus datasource
//!   variable, `job` and `instance` variables, rows laid out left to right, ids numbered in order
//!   (rows included), links to every other `mainstay` dashboard.
//! - The area dashboards ([`generate`]): an "Alerts" row on top with each alert of the area, its own
//!   expression and its threshold as a red line, then rows per concern. Every vector selector of
//!   a panel is filtered by `job=~"$job",instance=~"$instance"` ([`inject_filter`]); the table
//!   writes expressions without it.
//! - The structural check ([`check`]): unique uids across dashboards, unique panel ids within one,
//!   the datasource variable on every panel, target and query variable, a unit and a description
//!   on every panel, `job`/`instance` variables, a non-empty `expr` and a unique `refId` per target.
//! - [`dashboard_rules`]: every panel expression as a recording rule, for `promtool check rules`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::alerts::{Alert, Area};

mod areas;
mod promql;

pub(crate) use promql::inject_filter;

/// The dashboards' directory, under the workspace root.
pub(crate) const DASHBOARDS: &str = "deploy/grafana/dashboards";

/// The matchers every selector of an area dashboard carries.
pub(crate) const FILTER: &str = "job=~\"$job\",instance=~\"$instance\"";

/// The datasource of every panel, target and query variable.
const DATASOURCE: &str = "${datasource}";

/// The metric the `job` and `instance` variables read their values from: unlabelled, so every
/// instance exports it from start-up (a labelled family has no series before its first label value).
const VARIABLE_SOURCE: &str = "process_start_time_seconds";

/// A dashboard before layout.
#[derive(Debug)]
pub(crate) struct Board {
    /// `mainstay-<area>`.
    pub(crate) uid: String,
    pub(crate) title: String,
    pub(crate) description: String,
    /// Beside `mainstay`, which every dashboard has and the links follow.
    pub(crate) tag: String,
    /// The default time range (`now-6h`).
    pub(crate) from: &'static str,
    pub(crate) rows: Vec<Row>,
}

/// A row of panels, each `width` grid units wide (24 is the full width).
#[derive(Debug)]
pub(crate) struct Row {
    pub(crate) title: String,
    pub(crate) width: u64,
    pub(crate) panels: Vec<Panel>,
}

/// How a panel draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Timeseries,
    /// One big number: the last value.
    Stat,
}

/// A panel.
#[derive(Debug)]
pub(crate) struct Panel {
    pub(crate) kind: Kind,
    pub(crate) title: String,
    pub(crate) description: String,
    /// A Grafana unit id (`s`, `percentunit`, `bytes`, `Bps`, `ops`, `reqps`, `none`).
    pub(crate) unit: String,
    /// (PromQL expression, legend), in refId order.
    pub(crate) targets: Vec<(String, String)>,
    /// Drawn as a red line.
    pub(crate) threshold: Option<f64>,
}

/// The dashboard's JSON (schemaVersion 39), pretty-printed with a final newline.
pub(crate) fn render(board: &Board) -> Result<String> {
    let datasource = json!({"type": "prometheus", "uid": DATASOURCE});
    let mut panels = Vec::new();
    let mut id = 0_u64;
    let mut y = 0_u64;
    for row in &board.rows {
        ensure!(
            (1..=24).contains(&row.width),
            "row `{}` of {}: width {} is not 1 to 24",
            row.title,
            board.uid,
            row.width
        );
        id += 1;
        panels.push(json!({
            "id": id,
            "type": "row",
            "title": row.title,
            "collapsed": false,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }));
        y += 1;
        let mut x = 0;
        for panel in &row.panels {
            if x + row.width > 24 {
                x = 0;
                y += 8;
            }
            id += 1;
            let steps = match panel.threshold {
                Some(value) => {
                    json!([{"color": "green", "value": null}, {"color": "red", "value": value}])
                }
                None => json!([{"color": "green", "value": null}]),
            };
            let mut targets = Vec::new();
            for (at, (expr, legend)) in panel.targets.iter().enumerate() {
                let reference = u8::try_from(at)
                    .ok()
                    .filter(|at| *at < 26)
                    .with_context(|| {
                        format!(
                            "panel `{}` of {}: more than 26 targets",
                            panel.title, board.uid
                        )
                    })?;
                targets.push(json!({
                    "datasource": datasource,
                    "expr": expr,
                    "legendFormat": legend,
                    "refId": char::from(b'A' + reference).to_string(),
                }));
            }
            let mut defaults = json!({
                "unit": panel.unit,
                "thresholds": {"mode": "absolute", "steps": steps},
            });
            let mut item = json!({
                "id": id,
                "title": panel.title,
                "description": panel.description,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": row.width, "x": x, "y": y},
                "targets": targets,
            });
            match panel.kind {
                Kind::Timeseries => {
                    defaults["custom"] = json!({"thresholdsStyle": {
                        "mode": if panel.threshold.is_some() { "line" } else { "off" }
                    }});
                    item["type"] = json!("timeseries");
                }
                Kind::Stat => {
                    item["type"] = json!("stat");
                    item["options"] = json!({
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                        "colorMode": "value",
                        "graphMode": "area",
                    });
                }
            }
            item["fieldConfig"] = json!({"defaults": defaults, "overrides": []});
            panels.push(item);
            x += row.width;
        }
        if !row.panels.is_empty() {
            y += 8;
        }
    }
    let variable = |name: &str, query: String| {
        json!({
            "name": name,
            "label": name,
            "type": "query",
            "datasource": datasource,
            "query": {"query": query, "refId": name},
            "definition": query,
            "includeAll": true,
            "allValue": ".*",
            "multi": true,
            "refresh": 2,
            "sort": 1,
            "current": {},
        })
    };
    let document = json!({
        "title": board.title,
        "uid": board.uid,
        "description": board.description,
        "tags": ["mainstay", board.tag],
        "editable": false,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": board.from, "to": "now"},
        "timezone": "utc",
        "links": [{
            "title": "mainstay dashboards",
            "type": "dashboards",
            "tags": ["mainstay"],
            "asDropdown": true,
            "includeVars": true,
            "keepTime": true,
        }],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "current": {}},
            variable("job", format!("label_values({VARIABLE_SOURCE}, job)")),
            variable("instance", format!("label_values({VARIABLE_SOURCE}{{job=~\"$job\"}}, instance)")),
        ]},
        "panels": panels,
    });
    let mut text =
        serde_json::to_string_pretty(&document).context("could not encode the dashboard")?;
    text.push('\n');
    Ok(text)
}

/// The file of an area's dashboard, under the workspace root.
pub(crate) fn path(area: Area) -> &'static str {
    match area {
        Area::Overview => "deploy/grafana/dashboards/overview.json",
        Area::Http => "deploy/grafana/dashboards/http.json",
        Area::Resilience => "deploy/grafana/dashboards/resilience.json",
        Area::Ratelimit => "deploy/grafana/dashboards/ratelimit.json",
        Area::Storage => "deploy/grafana/dashboards/storage.json",
        Area::Dlq => "deploy/grafana/dashboards/dlq.json",
    }
}

/// Every area dashboard: (path, JSON). `catalogue_json` is what `mainstay-api metrics catalogue`
/// prints; a panel of the table that names a metric it lacks fails (alert expressions are checked
/// where the alerts are written).
pub(crate) fn generate(
    alerts: &[Alert],
    catalogue_json: &str,
) -> Result<Vec<(&'static str, String)>> {
    let known = sample_names(catalogue_json)?;
    let mut files = Vec::new();
    for area in Area::ALL {
        let (title, description, rows) = areas::layout(area);
        let mut board_rows = Vec::new();
        let own: Vec<&Alert> = alerts.iter().filter(|alert| alert.area == area).collect();
        if !own.is_empty() {
            board_rows.push(Row {
                title: "Alerts".to_owned(),
                width: 8,
                panels: own.into_iter().map(alert_panel).collect(),
            });
        }
        for (row_title, width, specs) in *rows {
            let mut panels = Vec::new();
            for spec in *specs {
                let mut targets = Vec::new();
                for (expr, legend) in spec.queries {
                    let mut unknown = Vec::new();
                    let filtered = inject_filter(expr, |name, _| {
                        if !name.is_empty() && !known.iter().any(|known| known == name) {
                            unknown.push(name.to_owned());
                        }
                    })
                    .with_context(|| {
                        format!(
                            "panel `{}` of {}: cannot filter `{expr}`",
                            spec.title,
                            area.slug()
                        )
                    })?;
                    ensure!(
                        unknown.is_empty(),
                        "panel `{}` of {}: the metric catalogue has no {}",
                        spec.title,
                        area.slug(),
                        unknown.join(", ")
                    );
                    targets.push((filtered, (*legend).to_owned()));
                }
                panels.push(Panel {
                    kind: spec.kind,
                    title: spec.title.to_owned(),
                    description: spec.description.to_owned(),
                    unit: spec.unit.to_owned(),
                    targets,
                    threshold: None,
                });
            }
            board_rows.push(Row {
                title: (*row_title).to_owned(),
                width: *width,
                panels,
            });
        }
        let board = Board {
            uid: format!("mainstay-{}", area.slug()),
            title: (*title).to_owned(),
            description: format!(
                "{description} Generated by `cargo xtask codegen` from xtask/src/dashboards.rs and xtask/src/alerts.rs: do not edit (decision 0100)."
            ),
            tag: area.slug().to_owned(),
            from: "now-6h",
            rows: board_rows,
        };
        files.push((path(area), render(&board)?));
    }
    Ok(files)
}

/// The names a query may use for the catalogue's families: a counter's `_total`, a histogram's
/// `_bucket`, `_sum` and `_count`, a gauge's name.
fn sample_names(catalogue_json: &str) -> Result<Vec<String>> {
    let catalogue: Value =
        serde_json::from_str(catalogue_json).context("the metric catalogue is not JSON")?;
    let families = catalogue["families"]
        .as_array()
        .context("the metric catalogue has no `families` array")?;
    let mut names = Vec::new();
    for family in families {
        let name = family["name"]
            .as_str()
            .with_context(|| format!("a catalogued family has no `name`: {family}"))?;
        match family["type"].as_str() {
            Some("histogram") => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{name}{suffix}"));
                }
            }
            _ => names.push(family["sample_name"].as_str().unwrap_or(name).to_owned()),
        }
    }
    Ok(names)
}

/// The panel of an alert: its own expression (with the job/instance filter when every selector
/// takes it, else as written), its threshold as a red line.
fn alert_panel(alert: &Alert) -> Panel {
    let (expr, filtered) = match inject_filter(alert.expr, |_, _| {}) {
        Ok(expr) => (expr, true),
        Err(_) => (alert.expr.to_owned(), false),
    };
    let condition = match alert.threshold {
        Some((op, value)) => format!("the expression is {op} {value}"),
        None => "the expression returns any series".to_owned(),
    };
    let description = format!(
        "{}. Severity {}, fires when {condition} for {} (the alert's own expression{}). Runbook: docs/runbooks/{}.md.",
        templates_as_words(alert.summary).trim_end_matches('.'),
        alert.severity.label(),
        alert.for_,
        if filtered {
            ", filtered by the job and instance variables"
        } else {
            ", plotted as written: the job and instance variables do not apply"
        },
        alert.name
    );
    Panel {
        kind: Kind::Timeseries,
        title: alert.name.to_owned(),
        description,
        unit: alert.unit.to_owned(),
        targets: vec![(expr, String::new())],
        threshold: alert.threshold.map(|(_, value)| value),
    }
}

/// `{{ $labels.breaker }}` as `{breaker}`, `{{ $value }}` as `{value}`: a panel description is not
/// an alert template, and Grafana would read `$labels` as a variable.
fn templates_as_words(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            rest = &rest[start..];
            break;
        };
        let inner = rest[start + 2..start + end].trim();
        let word = inner
            .trim_start_matches("$labels.")
            .trim_start_matches('$')
            .split_whitespace()
            .next()
            .unwrap_or_default();
        let _ = write!(out, "{{{word}}}");
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

/// The panels of a dashboard, rows' nested panels included, depth first.
fn all_panels(document: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = document["panels"]
        .as_array()
        .map(|panels| panels.iter().rev().collect())
        .unwrap_or_default();
    while let Some(panel) = stack.pop() {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            stack.extend(nested.iter().rev());
        }
    }
    out
}

/// Checks dashboards, given as (path, JSON text), structurally (see the module docs); fails
/// listing every problem with its file and panel.
pub(crate) fn check(dashboards: &[(String, String)]) -> Result<()> {
    let mut problems = Vec::new();
    let mut uids: Vec<(String, &str)> = Vec::new();
    for (path, text) in dashboards {
        let document: Value = match serde_json::from_str(text) {
            Ok(document) => document,
            Err(error) => {
                problems.push(format!("{path}: not JSON ({error})"));
                continue;
            }
        };
        let mut problem = |what: String| problems.push(format!("{path}: {what}"));
        match document["uid"].as_str() {
            Some(uid) if !uid.is_empty() => {
                if let Some((_, other)) = uids.iter().find(|(known, _)| known == uid) {
                    problem(format!("uid `{uid}` is also the uid of {other}"));
                }
                uids.push((uid.to_owned(), path));
            }
            _ => problem("no uid".to_owned()),
        }
        let variables = document["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !variables
            .iter()
            .any(|variable| variable["type"] == "datasource" && variable["name"] == "datasource")
        {
            problem(
                "no datasource variable (templating.list: type `datasource`, name `datasource`)"
                    .to_owned(),
            );
        }
        for name in ["job", "instance"] {
            match variables.iter().find(|variable| variable["name"] == name) {
                None => problem(format!("no `{name}` variable")),
                Some(variable) if variable["datasource"]["uid"] != DATASOURCE => problem(format!(
                    "the `{name}` variable does not query the datasource `{DATASOURCE}`"
                )),
                Some(_) => {}
            }
        }
        let panels = all_panels(&document);
        let mut ids: Vec<i64> = Vec::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            let Some(id) = panel["id"].as_i64() else {
                problem(format!("panel `{title}` has no numeric id"));
                continue;
            };
            let name = format!("panel {id} `{title}`");
            if ids.contains(&id) {
                problem(format!("{name}: id {id} is used twice"));
            }
            ids.push(id);
            if panel["type"] == "row" {
                continue;
            }
            if panel["datasource"]["uid"] != DATASOURCE {
                problem(format!("{name}: its datasource is not `{DATASOURCE}`"));
            }
            if panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                problem(format!("{name}: no unit (fieldConfig.defaults.unit)"));
            }
            if panel["description"]
                .as_str()
                .is_none_or(|text| text.trim().is_empty())
            {
                problem(format!("{name}: no description"));
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problem(format!("{name}: no targets"));
            }
            let mut refs: Vec<&str> = Vec::new();
            for target in &targets {
                let reference = target["refId"].as_str().unwrap_or_default();
                if reference.is_empty() {
                    problem(format!("{name}: a target without a refId"));
                } else if refs.contains(&reference) {
                    problem(format!("{name}: refId {reference} is used twice"));
                }
                refs.push(reference);
                if target["datasource"]["uid"] != DATASOURCE {
                    problem(format!(
                        "{name}: the datasource of target {reference} is not `{DATASOURCE}`"
                    ));
                }
                if target["expr"]
                    .as_str()
                    .is_none_or(|expr| expr.trim().is_empty())
                {
                    problem(format!("{name}: target {reference} has no expr"));
                }
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "dashboards fail the structural check (docs/decisions/0100-area-dashboards.md):\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

/// Checks the generated dashboards in `files` (paths under `deploy/grafana/dashboards/`) together
/// with any other dashboard JSON of that directory under `root`.
pub(crate) fn check_files(root: &Path, files: &[(&str, String)]) -> Result<()> {
    let mut dashboards: Vec<(String, String)> = files
        .iter()
        .filter(|(path, _)| path.starts_with(DASHBOARDS) && path.ends_with(".json"))
        .map(|(path, text)| ((*path).to_owned(), text.clone()))
        .collect();
    for file in json_files(&root.join(DASHBOARDS))? {
        let relative = format!(
            "{DASHBOARDS}/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        if dashboards.iter().any(|(path, _)| *path == relative) {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("could not read {}", file.display()))?;
        dashboards.push((relative, text));
    }
    check(&dashboards)
}

/// The `*.json` files of a directory, sorted (none when it does not exist yet).
fn json_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("could not list {}", dir.display()))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// A rules file with one recording rule per panel expression of the dashboards in `dir` (rows'
/// nested panels included), for `promtool check rules` to parse: Grafana's interval variables
/// become `5m`, the dashboard's own variables `.*`; the datasource variable may not appear in an
/// expression.
pub(crate) fn dashboard_rules(dir: &Path) -> Result<String> {
    let mut out = String::from("groups:\n");
    for file in json_files(dir)? {
        let document: Value = serde_json::from_str(
            &std::fs::read_to_string(&file)
                .with_context(|| format!("could not read {}", file.display()))?,
        )
        .with_context(|| format!("{} is not JSON", file.display()))?;
        let variables: Vec<&str> = document["templating"]["list"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|variable| variable["type"] != "datasource")
                    .filter_map(|variable| variable["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let _ = write!(
            out,
            "  - name: {}\n    rules:\n",
            json!(file.display().to_string())
        );
        // Record names unique across the file: promtool's lint reports a name recorded twice.
        let stem: String = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        for panel in all_panels(&document) {
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let expr = substitute(expr, &variables)
                    .with_context(|| format!("{}: panel {}", file.display(), panel["id"]))?;
                let _ = write!(
                    out,
                    "      - record: dashboard:{stem}_panel_{}_{}\n        expr: {}\n",
                    panel["id"],
                    target["refId"].as_str().unwrap_or("A"),
                    json!(expr)
                );
            }
        }
    }
    Ok(out)
}

/// Grafana's variables of a panel expression replaced by values PromQL parses.
fn substitute(expr: &str, variables: &[&str]) -> Result<String> {
    const INTERVALS: &[&str] = &["__rate_interval", "__interval", "__range"];
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, length) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .with_context(|| format!("`{expr}`: an unclosed `${{`"))?;
            // `${job:regex}` formats the value; the name is before the colon.
            let inner = &braced[..end];
            (inner.split(':').next().unwrap_or(inner), end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        ensure!(
            name != "datasource",
            "`{expr}`: the datasource variable in an expression"
        );
        if INTERVALS.contains(&name) {
            out.push_str("5m");
        } else if variables.contains(&name) {
            out.push_str(".*");
        } else {
            // `$1` in a `label_replace` replacement, or text PromQL will refuse.
            out.push('$');
            out.push_str(&after[..length]);
        }
        rest = &after[length..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{
        Board, FILTER, Kind, Panel, Row, check, dashboard_rules, generate, inject_filter, render,
        substitute,
    };
    use crate::alerts::{ALERTS, Alert, Area, Severity};

    /// A catalogue with every family of the generated `docs/metrics.md`.
    fn catalogue() -> String {
        let text =
            std::fs::read_to_string(crate::workspace_root().join("docs/metrics.md")).unwrap();
        let families: Vec<Value> = text
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some(json!({"name": name, "sample_name": name, "type": cells.get(2)?}))
            })
            .collect();
        assert!(families.len() > 40, "{families:?}");
        json!({ "families": families }).to_string()
    }

    fn filtered(expr: &str) -> String {
        inject_filter(expr, |_, _| {}).unwrap()
    }

    #[test]
    fn the_filter_goes_into_every_selector_and_nowhere_else() {
        let f = FILTER;
        assert_eq!(
            filtered("sum by (endpoint) (rate(http_requests_total[$__rate_interval]))"),
            format!("sum by (endpoint) (rate(http_requests_total{{{f}}}[$__rate_interval]))")
        );
        assert_eq!(
            filtered(
                "max by (job, instance, breaker) (circuit_breaker_state_active{state=~\"open|forced_open\"})"
            ),
            format!(
                "max by (job, instance, breaker) (circuit_breaker_state_active{{state=~\"open|forced_open\",{f}}})"
            )
        );
        assert_eq!(
            filtered("a / on (x) group_left (y) b offset 5m > bool 1e3 AND {__name__=\"c\",}"),
            format!(
                "a{{{f}}} / on (x) group_left (y) b{{{f}}} offset 5m > bool 1e3 AND {{__name__=\"c\",{f}}}"
            )
        );
        assert_eq!(
            filtered("label_replace(up, \"dst\", \"$1 x{y}\", \"src\", \"(.*)\")"),
            format!("label_replace(up{{{f}}}, \"dst\", \"$1 x{{y}}\", \"src\", \"(.*)\")")
        );
        assert_eq!(
            filtered("sum without (le) (max_over_time(up[5m:1m])) or vector(0)"),
            format!("sum without (le) (max_over_time(up{{{f}}}[5m:1m])) or vector(0)")
        );
        // A recording rule keeps the labels its level names: only those are filtered on.
        assert_eq!(
            filtered("job_endpoint:x:rate5m{endpoint=\"/v1\"} > 1 and instance:y:ratio"),
            "job_endpoint:x:rate5m{endpoint=\"/v1\",job=~\"$job\"} > 1 and instance:y:ratio{instance=~\"$instance\"}"
        );
        assert_eq!(filtered("store:z:ratio"), "store:z:ratio{}");
        assert_eq!(
            filtered("absent(dlq_size{ }) == 1"),
            format!("absent(dlq_size{{{f}}}) == 1")
        );
        let mut names = Vec::new();
        inject_filter("sum(rate(a[1m])) / count(b{c=\"d\"})", |name, matchers| {
            names.push(format!("{name}:{matchers}"));
        })
        .unwrap();
        assert_eq!(names, ["a:", "b:c=\"d\""]);
        for broken in ["sum(x", "x)", "x}", "x{a=\"b\"", "rate(x[5m)", "x{a=\"b}"] {
            assert!(inject_filter(broken, |_, _| {}).is_err(), "{broken}");
        }
    }

    #[test]
    fn variables_become_values_promql_parses() {
        let variables = ["job", "instance"];
        assert_eq!(
            substitute(
                "rate(x{job=~\"$job\",instance=~\"${instance:regex}\"}[$__rate_interval]) + label_replace(y, \"a\", \"$1\", \"b\", \"(.*)\")",
                &variables
            )
            .unwrap(),
            "rate(x{job=~\".*\",instance=~\".*\"}[5m]) + label_replace(y, \"a\", \"$1\", \"b\", \"(.*)\")"
        );
        let error = substitute("x{a=\"${datasource}\"}", &variables).unwrap_err();
        assert!(
            error.to_string().contains("the datasource variable"),
            "{error}"
        );
    }

    /// A dashboard that passes the check: a row and a panel with two targets.
    fn good(uid: &str) -> Value {
        let text = render(&Board {
            uid: uid.to_owned(),
            title: "t".to_owned(),
            description: "d".to_owned(),
            tag: "x".to_owned(),
            from: "now-1h",
            rows: vec![Row {
                title: "r".to_owned(),
                width: 12,
                panels: vec![Panel {
                    kind: Kind::Timeseries,
                    title: "p".to_owned(),
                    description: "what it shows".to_owned(),
                    unit: "s".to_owned(),
                    targets: vec![
                        ("up".to_owned(), String::new()),
                        ("down".to_owned(), String::new()),
                    ],
                    threshold: Some(1.0),
                }],
            }],
        })
        .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn problems(documents: &[Value]) -> String {
        let files: Vec<(String, String)> = documents
            .iter()
            .enumerate()
            .map(|(at, document)| (format!("d{at}.json"), document.to_string()))
            .collect();
        match check(&files) {
            Ok(()) => String::new(),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_structural_check_names_each_broken_rule() {
        assert_eq!(problems(&[good("a"), good("b")]), "");
        type Case = (&'static str, fn(&mut Value));
        let cases: &[Case] = &[
            ("d0.json: no uid", |d| d["uid"] = json!("")),
            ("d0.json: no datasource variable", |d| {
                d["templating"]["list"][0]["type"] = json!("custom");
            }),
            ("d0.json: no `job` variable", |d| {
                d["templating"]["list"][1]["name"] = json!("jobs");
            }),
            ("d0.json: no `instance` variable", |d| {
                d["templating"]["list"][2]["name"] = json!("host");
            }),
            (
                "d0.json: the `job` variable does not query the datasource",
                |d| {
                    d["templating"]["list"][1]["datasource"]["uid"] = json!("prom");
                },
            ),
            ("d0.json: panel 1 `p`: id 1 is used twice", |d| {
                // A collapsed row holds its panels inside: ids count there too.
                let mut nested = d["panels"][1].clone();
                nested["id"] = json!(1);
                d["panels"][0]["panels"] = json!([nested]);
                d["panels"][0]["collapsed"] = json!(true);
                d["panels"].as_array_mut().unwrap().truncate(1);
            }),
            ("d0.json: panel `p` has no numeric id", |d| {
                d["panels"][1]["id"] = json!("2");
            }),
            (
                "d0.json: panel 2 `p`: its datasource is not `${datasource}`",
                |d| {
                    d["panels"][1]["datasource"]["uid"] = json!("prometheus");
                },
            ),
            ("d0.json: panel 2 `p`: no unit", |d| {
                d["panels"][1]["fieldConfig"]["defaults"]
                    .as_object_mut()
                    .unwrap()
                    .remove("unit");
            }),
            ("d0.json: panel 2 `p`: no description", |d| {
                d["panels"][1]["description"] = json!(" ");
            }),
            ("d0.json: panel 2 `p`: no targets", |d| {
                d["panels"][1]["targets"] = json!([]);
            }),
            ("d0.json: panel 2 `p`: refId A is used twice", |d| {
                d["panels"][1]["targets"][1]["refId"] = json!("A");
            }),
            ("d0.json: panel 2 `p`: a target without a refId", |d| {
                d["panels"][1]["targets"][1]["refId"] = json!("");
            }),
            (
                "d0.json: panel 2 `p`: the datasource of target B is not",
                |d| {
                    d["panels"][1]["targets"][1]["datasource"] = json!(null);
                },
            ),
            ("d0.json: panel 2 `p`: target B has no expr", |d| {
                d["panels"][1]["targets"][1]["expr"] = json!("");
            }),
        ];
        for (expected, breaks) in cases {
            let mut broken = good("a");
            breaks(&mut broken);
            let found = problems(&[broken, good("b")]);
            assert!(found.contains(expected), "{expected}: {found}");
        }
        let found = problems(&[good("a"), good("a")]);
        assert!(
            found.contains("d1.json: uid `a` is also the uid of d0.json"),
            "{found}"
        );
        let found = match check(&[("x.json".to_owned(), "{".to_owned())]) {
            Ok(()) => String::new(),
            Err(error) => error.to_string(),
        };
        assert!(found.contains("x.json: not JSON"), "{found}");
    }

    /// One alert per area, one without threshold, one whose expression cannot be filtered.
    fn alerts() -> Vec<Alert> {
        let mut alerts: Vec<Alert> = Area::ALL
            .iter()
            .enumerate()
            .map(|(at, area)| Alert {
                name: ["A0", "A1", "A2", "A3", "A4", "A5"][at],
                area: *area,
                severity: Severity::Warning,
                expr: "max by (job, instance) (health_ready{a=\"b\"})",
                threshold: Some(("<", 0.5)),
                for_: "5m",
                unit: "none",
                summary: "{{ $labels.instance }} is down",
                description: "d",
            })
            .collect();
        alerts[0].threshold = None;
        alerts[0].expr = "absent(health_ready)";
        alerts[1].expr = "sum(rate(x[5m]) unbalanced";
        alerts
    }

    fn panels(document: &Value) -> Vec<Value> {
        document["panels"].as_array().unwrap().clone()
    }

    #[test]
    fn every_area_dashboard_plots_its_alerts_first_with_their_thresholds() {
        let catalogue = catalogue();
        for alerts in [alerts(), ALERTS.to_vec()] {
            let files = generate(&alerts, &catalogue).unwrap();
            assert_eq!(files.len(), Area::ALL.len());
            let owned: Vec<(String, String)> = files
                .iter()
                .map(|(path, text)| ((*path).to_owned(), text.clone()))
                .collect();
            check(&owned).unwrap();
            for (area, (path, text)) in Area::ALL.iter().zip(&files) {
                assert_eq!(
                    *path,
                    format!("deploy/grafana/dashboards/{}.json", area.slug())
                );
                let document: Value = serde_json::from_str(text).unwrap();
                assert_eq!(document["uid"], format!("mainstay-{}", area.slug()));
                let panels = panels(&document);
                let own: Vec<&Alert> = alerts.iter().filter(|alert| alert.area == *area).collect();
                if !own.is_empty() {
                    assert_eq!(panels[0]["title"], "Alerts", "{path}");
                }
                for alert in &alerts {
                    let found: Vec<&Value> = panels
                        .iter()
                        .filter(|panel| panel["title"] == alert.name)
                        .collect();
                    if alert.area != *area {
                        assert!(found.is_empty(), "{} on {path}", alert.name);
                        continue;
                    }
                    // In the Alerts row: before the second row.
                    let second_row = panels
                        .iter()
                        .skip(1)
                        .position(|panel| panel["type"] == "row")
                        .unwrap()
                        + 1;
                    let at = panels
                        .iter()
                        .position(|panel| panel["title"] == alert.name)
                        .unwrap_or_else(|| panic!("{} missing from {path}", alert.name));
                    assert!(at < second_row, "{} on {path}", alert.name);
                    let panel = found[0];
                    let expr = panel["targets"][0]["expr"].as_str().unwrap();
                    let plain = inject_filter(alert.expr, |_, _| {});
                    match &plain {
                        Ok(filtered) => assert_eq!(expr, filtered),
                        Err(_) => assert_eq!(expr, alert.expr),
                    }
                    assert_eq!(panel["fieldConfig"]["defaults"]["unit"], alert.unit);
                    let description = panel["description"].as_str().unwrap();
                    assert!(
                        description.contains(alert.severity.label()),
                        "{description}"
                    );
                    assert!(
                        description.contains(&format!("for {}", alert.for_)),
                        "{description}"
                    );
                    assert!(!description.contains("$labels"), "{description}");
                    let style =
                        &panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"];
                    let steps = &panel["fieldConfig"]["defaults"]["thresholds"]["steps"];
                    match alert.threshold {
                        Some((_, value)) => {
                            assert_eq!(style, "line");
                            assert_eq!(steps[1], json!({"color": "red", "value": value}));
                        }
                        None => assert_eq!(style, "off"),
                    }
                }
                // Every selector of every other panel is filtered by job and instance.
                for panel in panels.iter().filter(|panel| {
                    panel["type"] != "row"
                        && !alerts.iter().any(|alert| panel["title"] == alert.name)
                }) {
                    for target in panel["targets"].as_array().unwrap() {
                        let expr = target["expr"].as_str().unwrap();
                        inject_filter(expr, |name, matchers| {
                            assert!(matchers.contains(FILTER), "{name} in {expr}");
                        })
                        .unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn a_panel_naming_a_metric_the_catalogue_lacks_fails() {
        let catalogue = catalogue().replace("\"dlq_oldest_entry_age_seconds\"", "\"dlq_oldest\"");
        let error = generate(&[], &catalogue).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("panel `oldest entry age` of dlq: the metric catalogue has no dlq_oldest_entry_age_seconds"),
            "{error}"
        );
    }

    #[test]
    fn the_promtool_file_holds_every_panel_rows_included() {
        let dir = std::env::temp_dir().join(format!("mainstay-dashboards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut document = good("a");
        // Collapse the row: its panel moves inside it.
        let panel = document["panels"][1].clone();
        document["panels"] =
            json!([{"id": 1, "type": "row", "title": "r", "collapsed": true, "panels": [panel]}]);
        document["panels"][0]["panels"][0]["targets"][0]["expr"] =
            json!("rate(x{job=~\"$job\",instance=~\"$instance\"}[$__rate_interval])");
        std::fs::write(dir.join("a.json"), document.to_string()).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a dashboard").unwrap();
        let rules = dashboard_rules(&dir);
        document["panels"][0]["panels"][0]["targets"][1]["expr"] = json!("x{a=\"$datasource\"}");
        std::fs::write(dir.join("a.json"), document.to_string()).unwrap();
        let refused = dashboard_rules(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let rules = rules.unwrap();
        assert!(
            rules.contains(
                "      - record: dashboard:a_panel_2_A\n        expr: \"rate(x{job=~\\\".*\\\",instance=~\\\".*\\\"}[5m])\"\n"
            ),
            "{rules}"
        );
        assert!(rules.contains("dashboard:a_panel_2_B"), "{rules}");
        assert!(refused.is_err());
    }
}
