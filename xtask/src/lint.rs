//! The offline check of every rule and dashboard against the metric catalogue (issue 16, point 1;
//! decision 0101), run by `cargo xtask codegen` and `codegen --check`.
//!
//! Each PromQL expression of `deploy/prometheus/rules/*.yml` (recording rules and alerts) and of
//! `deploy/grafana/dashboards/*.json` (panel targets and `label_values` variables) is parsed with
//! `promql-parser`, and its labels are followed through the tree:
//!
//! - a selector must name a catalogued series (`NAME_total` of a counter, `NAME_bucket`,
//!   `NAME_sum`, `NAME_count` of a histogram, a gauge's name), a recording rule of the rule files,
//!   or one of Prometheus's own series (`up`, `scrape_*`, `ALERTS`);
//! - a label matcher, a `by`/`without` grouping, an `on`/`ignoring` matching and a `group_left`/
//!   `group_right` inclusion must name a label the series has at that point: the family's labels,
//!   the target labels `job` and `instance`, `le` on a histogram's buckets, what a recording rule
//!   keeps and adds;
//! - `histogram_quantile` needs `le` in its input, and an alert's `{{ $labels.NAME }}` must name a
//!   label its expression (or its own `labels`) yields.
//!
//! No Prometheus needs to run (pint, mimirtool and promcheck ask a live server what exists). The
//! check also returns, per family, the alerts and panels that use it (through recording rules too),
//! which `docs/metrics.md` lists.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, bail};
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, LabelModifier, VectorMatchCardinality, VectorSelector};

/// Labels every scraped series gets from its target.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// Prometheus's own series a rule may use, with their labels (`None`: any label).
const BUILTIN: &[(&str, Option<&[&str]>)] = &[
    ("up", Some(&[])),
    ("scrape_duration_seconds", Some(&[])),
    ("scrape_samples_scraped", Some(&[])),
    ("scrape_series_added", Some(&[])),
    ("ALERTS", None),
    ("ALERTS_FOR_STATE", None),
];

/// The label set of an expression's result: known, or unknown (anything goes).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Labels {
    Known(BTreeSet<String>),
    Any,
}

impl Labels {
    fn none() -> Self {
        Labels::Known(BTreeSet::new())
    }

    fn has(&self, label: &str) -> bool {
        match self {
            Labels::Known(set) => set.contains(label),
            Labels::Any => true,
        }
    }

    fn union(&self, other: &Labels) -> Labels {
        match (self, other) {
            (Labels::Known(a), Labels::Known(b)) => Labels::Known(a | b),
            _ => Labels::Any,
        }
    }

    fn describe(&self) -> String {
        match self {
            Labels::Known(set) if set.is_empty() => "none".to_owned(),
            Labels::Known(set) => set.iter().cloned().collect::<Vec<_>>().join(", "),
            Labels::Any => "any".to_owned(),
        }
    }
}

/// What an expression yields: its labels, whether it is a scalar, and the catalogued families it
/// reads (through recording rules too).
#[derive(Debug, Clone)]
struct Out {
    labels: Labels,
    scalar: bool,
    /// The histogram family whose buckets these series are (`rate(x_bucket[5m])`).
    bucket_of: Option<String>,
    /// The histogram family these series are a quantile of (`histogram_quantile(0.99, ...)`).
    quantile_of: Option<String>,
}

impl Out {
    fn scalar() -> Self {
        Out {
            labels: Labels::none(),
            scalar: true,
            bucket_of: None,
            quantile_of: None,
        }
    }
    fn vector(labels: Labels) -> Self {
        Out {
            labels,
            scalar: false,
            bucket_of: None,
            quantile_of: None,
        }
    }
    /// The same series with other labels.
    fn with_labels(self, labels: Labels) -> Self {
        Out { labels, ..self }
    }
}

/// A catalogued series name: its family and labels.
#[derive(Debug, Clone)]
struct Series {
    family: String,
    labels: BTreeSet<String>,
    /// The family's bucket edges, for a histogram's `_bucket` series.
    buckets: Option<Vec<f64>>,
}

/// One definition of a recording rule (a name may be recorded by several rules, told apart by
/// their static labels): its output labels, static labels and the families it reads.
#[derive(Debug, Clone)]
struct Record {
    labels: Labels,
    statics: BTreeMap<String, String>,
    families: BTreeSet<String>,
    quantile_of: Option<String>,
}

/// Who uses each family: `alert NAME` and `DASHBOARD › panel title` entries.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub(crate) alerts: BTreeMap<String, BTreeSet<String>>,
    pub(crate) panels: BTreeMap<String, BTreeSet<String>>,
}

/// One rule of a rules file.
#[derive(Debug)]
pub(crate) struct Rule {
    file: String,
    record: Option<String>,
    pub(crate) alert: Option<String>,
    expr: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// The checker's state while it walks expressions.
struct Checker {
    series: BTreeMap<String, Series>,
    records: BTreeMap<String, Vec<Record>>,
    errors: Vec<String>,
}

/// Checks the rule files and dashboards (each `(path, text)`) against the catalogue JSON printed by
/// `mainstay-api metrics catalogue`; fails listing every problem, or returns who uses what.
#[cfg(test)]
pub(crate) fn check(
    catalogue_json: &str,
    rule_files: &[(String, String)],
    dashboards: &[(String, String)],
) -> Result<Usage> {
    check_with(catalogue_json, rule_files, dashboards, &[])
}

/// `check`, and also standalone queries (`(who, expr)`: an Argo Rollouts analysis), which
/// `docs/metrics.md` lists among the panels.
pub(crate) fn check_with(
    catalogue_json: &str,
    rule_files: &[(String, String)],
    dashboards: &[(String, String)],
    queries: &[(String, String)],
) -> Result<Usage> {
    let mut checker = Checker {
        series: catalogue_series(catalogue_json)?,
        records: BTreeMap::new(),
        errors: Vec::new(),
    };
    let mut rules = Vec::new();
    for (path, text) in rule_files {
        rules.extend(parse_rules(path, text)?);
    }
    let mut usage = Usage::default();
    checker.resolve_records(&rules);
    for rule in &rules {
        let Some(alert) = &rule.alert else {
            continue;
        };
        let where_ = format!("{}: alert `{alert}`", rule.file);
        let Some((out, families)) = checker.expression(&where_, &rule.expr) else {
            continue;
        };
        let mut labels = out.labels.clone();
        for name in rule.labels.keys() {
            labels = labels.union(&Labels::Known(BTreeSet::from([name.clone()])));
        }
        for (key, template) in &rule.annotations {
            for used in template_labels(template) {
                if !labels.has(&used) {
                    checker.errors.push(format!(
                        "{where_}: annotation `{key}` uses `$labels.{used}`, which its expression does not yield (it yields: {})",
                        labels.describe()
                    ));
                }
            }
        }
        for family in families {
            usage
                .alerts
                .entry(family)
                .or_default()
                .insert(alert.clone());
        }
    }
    for (path, text) in dashboards {
        checker.dashboard(path, text, &mut usage)?;
    }
    for (who, expr) in queries {
        if let Some((_, families)) = checker.expression(who, expr) {
            for family in families {
                usage.panels.entry(family).or_default().insert(who.clone());
            }
        }
    }
    if !checker.errors.is_empty() {
        bail!(
            "rules and dashboards name metrics or labels the catalogue lacks (`mainstay-api metrics catalogue`):\n  {}",
            checker.errors.join("\n  ")
        );
    }
    Ok(usage)
}

/// Every series name the catalogue's families expose.
fn catalogue_series(catalogue_json: &str) -> Result<BTreeMap<String, Series>> {
    let document: serde_json::Value =
        serde_json::from_str(catalogue_json).context("the metric catalogue is not JSON")?;
    let families = document["families"]
        .as_array()
        .context("the metric catalogue has no `families` array")?;
    let mut series = BTreeMap::new();
    for family in families {
        let name = family["name"]
            .as_str()
            .with_context(|| format!("a catalogued family has no name: {family}"))?;
        let kind = family["type"].as_str().unwrap_or_default();
        let mut labels: BTreeSet<String> = family["labels"]
            .as_array()
            .with_context(|| format!("the catalogued family `{name}` has no labels array"))?
            .iter()
            .filter_map(|label| label.as_str().map(str::to_owned))
            .collect();
        labels.extend(TARGET_LABELS.iter().map(|label| (*label).to_owned()));
        let entry = |labels: BTreeSet<String>| Series {
            family: name.to_owned(),
            labels,
            buckets: None,
        };
        let edges: Option<Vec<f64>> = family["buckets"]
            .as_array()
            .map(|edges| edges.iter().filter_map(serde_json::Value::as_f64).collect());
        match kind {
            "counter" => {
                series.insert(format!("{name}_total"), entry(labels.clone()));
            }
            "histogram" => {
                let mut bucket = labels.clone();
                bucket.insert("le".to_owned());
                series.insert(
                    format!("{name}_bucket"),
                    Series {
                        buckets: edges.clone(),
                        ..entry(bucket)
                    },
                );
                series.insert(format!("{name}_sum"), entry(labels.clone()));
                series.insert(format!("{name}_count"), entry(labels.clone()));
            }
            _ => {
                series.insert(name.to_owned(), entry(labels.clone()));
            }
        }
    }
    Ok(series)
}

/// The rules of one rules file.
pub(crate) fn parse_rules(path: &str, text: &str) -> Result<Vec<Rule>> {
    #[derive(serde::Deserialize)]
    struct File {
        groups: Vec<Group>,
    }
    #[derive(serde::Deserialize)]
    struct Group {
        rules: Vec<RawRule>,
    }
    #[derive(serde::Deserialize)]
    struct RawRule {
        record: Option<String>,
        alert: Option<String>,
        expr: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    let file: File =
        serde_norway::from_str(text).with_context(|| format!("{path} is not a rules file"))?;
    Ok(file
        .groups
        .into_iter()
        .flat_map(|group| group.rules)
        .map(|rule| Rule {
            file: path.to_owned(),
            record: rule.record,
            alert: rule.alert,
            expr: rule.expr,
            labels: rule.labels,
            annotations: rule.annotations,
        })
        .collect())
}

/// The `NAME`s of `{{ $labels.NAME }}` (and `$labels.NAME` anywhere) in an annotation template.
fn template_labels(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find("$labels.") {
        rest = &rest[at + "$labels.".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// Grafana's variables replaced by values PromQL parses: `$__rate_interval` and other `$__`
/// intervals by `5m`, any other `$name` or `${name}` (a label value) by `.*`.
fn without_variables(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&next) = chars.peek() {
            if next.is_ascii_alphanumeric() || next == '_' || (braced && next == ':') {
                name.push(next);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        if name.is_empty() {
            out.push('$');
        } else if name.starts_with("__") {
            out.push_str("5m");
        } else {
            out.push_str(".*");
        }
    }
    out
}

impl Checker {
    /// Computes every recording rule's output, in dependency order: a rule waits for the records
    /// it reads; a rule whose records never resolve is reported.
    fn resolve_records(&mut self, rules: &[Rule]) {
        // How many rules record each name, and the recorded names each rule reads (parsed once;
        // an expression that does not parse waits for nothing and is reported when checked).
        let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
        for rule in rules {
            if let Some(record) = rule.record.as_deref() {
                *totals.entry(record).or_default() += 1;
            }
        }
        let mut pending: Vec<(&Rule, Vec<String>)> = rules
            .iter()
            .filter_map(|rule| {
                let record = rule.record.as_deref()?;
                let reads = parser::parse(&rule.expr)
                    .map(|expr| {
                        selector_names(&expr)
                            .into_iter()
                            .filter(|name| name != record && totals.contains_key(name.as_str()))
                            .collect()
                    })
                    .unwrap_or_default();
                Some((rule, reads))
            })
            .collect();
        let mut done: BTreeMap<String, usize> = BTreeMap::new();
        while !pending.is_empty() {
            let before = pending.len();
            let mut still = Vec::new();
            for (rule, reads) in pending {
                let record = rule.record.as_deref().unwrap_or_default();
                let waits = reads.iter().any(|name| {
                    done.get(name).copied().unwrap_or(0)
                        < totals.get(name.as_str()).copied().unwrap_or(0)
                });
                if waits {
                    still.push((rule, reads));
                    continue;
                }
                let where_ = format!("{}: record `{record}`", rule.file);
                let (labels, quantile_of, families) = match self.expression(&where_, &rule.expr) {
                    Some((out, families)) => (out.labels, out.quantile_of, families),
                    None => (Labels::Any, None, BTreeSet::new()),
                };
                let mut labels = labels;
                for name in rule.labels.keys() {
                    labels = labels.union(&Labels::Known(BTreeSet::from([name.clone()])));
                }
                self.records
                    .entry(record.to_owned())
                    .or_default()
                    .push(Record {
                        labels,
                        statics: rule.labels.clone(),
                        families,
                        quantile_of,
                    });
                *done.entry(record.to_owned()).or_default() += 1;
            }
            if still.len() == before {
                for (rule, _) in &still {
                    self.errors.push(format!(
                        "{}: record `{}` reads recording rules that depend on it in a cycle",
                        rule.file,
                        rule.record.as_deref().unwrap_or_default()
                    ));
                }
                return;
            }
            pending = still;
        }
    }

    /// Parses and checks one expression; `None` when it does not parse (reported).
    fn expression(&mut self, where_: &str, text: &str) -> Option<(Out, BTreeSet<String>)> {
        match parser::parse(text) {
            Ok(expr) => {
                let mut families = BTreeSet::new();
                let out = self.walk(where_, &expr, &mut families);
                Some((out, families))
            }
            Err(error) => {
                self.errors
                    .push(format!("{where_}: not PromQL ({error}): {text}"));
                None
            }
        }
    }

    /// The labels a selector's series have, checking its name and matchers.
    fn selector(
        &mut self,
        where_: &str,
        selector: &VectorSelector,
        families: &mut BTreeSet<String>,
    ) -> Out {
        let name = selector.name.clone().or_else(|| {
            selector
                .matchers
                .matchers
                .iter()
                .find(|matcher| matcher.name == "__name__" && matches!(matcher.op, MatchOp::Equal))
                .map(|matcher| matcher.value.clone())
        });
        let Some(name) = name else {
            self.errors.push(format!(
                "{where_}: a selector without a metric name ({selector}) cannot be checked"
            ));
            return Out::vector(Labels::Any);
        };
        let mut out = Out::vector(Labels::Any);
        let labels = if let Some(series) = self.series.get(&name).cloned() {
            families.insert(series.family.clone());
            if let Some(edges) = &series.buckets {
                out.bucket_of = Some(series.family.clone());
                for matcher in &selector.matchers.matchers {
                    if matcher.name == "le"
                        && matches!(matcher.op, MatchOp::Equal)
                        && !is_edge(&matcher.value, edges)
                    {
                        self.errors.push(format!(
                            "{where_}: `{name}{{le=\"{}\"}}` is not a bucket of `{}` (edges: {}): between edges a count is a guess",
                            matcher.value,
                            series.family,
                            describe_edges(edges)
                        ));
                    }
                }
            }
            Labels::Known(series.labels)
        } else if let Some(definitions) = self.records.get(&name) {
            // The definitions this selector can match: an equality matcher on a static label
            // leaves out the definitions with another value (`{slo="latency"}`).
            let matching: Vec<&Record> = definitions
                .iter()
                .filter(|definition| {
                    selector.matchers.matchers.iter().all(|matcher| {
                        !matches!(matcher.op, MatchOp::Equal)
                            || definition
                                .statics
                                .get(&matcher.name)
                                .is_none_or(|value| *value == matcher.value)
                    })
                })
                .collect();
            let mut labels = Labels::none();
            let chosen: Vec<&Record> = if matching.is_empty() {
                definitions.iter().collect()
            } else {
                matching
            };
            if let Some(first) = chosen.first()
                && chosen
                    .iter()
                    .all(|definition| definition.quantile_of == first.quantile_of)
            {
                out.quantile_of.clone_from(&first.quantile_of);
            }
            for definition in chosen {
                families.extend(definition.families.iter().cloned());
                labels = labels.union(&definition.labels);
            }
            labels
        } else if let Some((_, labels)) = BUILTIN.iter().find(|(builtin, _)| *builtin == name) {
            match labels {
                Some(labels) => Labels::Known(
                    labels
                        .iter()
                        .chain(TARGET_LABELS)
                        .map(|label| (*label).to_owned())
                        .collect(),
                ),
                None => Labels::Any,
            }
        } else {
            let hint = self
                .series
                .iter()
                .find(|(_, series)| series.family == name)
                .map(|(sample, _)| format!(" (a query names it `{sample}`)"))
                .unwrap_or_default();
            self.errors.push(format!(
                "{where_}: `{name}` is neither a catalogued series nor a recording rule{hint}"
            ));
            return out;
        };
        let matchers = selector
            .matchers
            .matchers
            .iter()
            .chain(selector.matchers.or_matchers.iter().flatten());
        for matcher in matchers {
            if matcher.name != "__name__" && !labels.has(&matcher.name) {
                self.errors.push(format!(
                    "{where_}: `{name}` has no label `{}` (its labels: {})",
                    matcher.name,
                    labels.describe()
                ));
            }
        }
        out.with_labels(labels)
    }

    /// When `series` is a quantile of a histogram and `other` a number it is compared with, the
    /// number must be one of the histogram's bucket edges: `histogram_quantile` interpolates
    /// between edges, so a threshold between two edges is crossed at a guessed latency.
    fn threshold(&mut self, where_: &str, series: &Out, other: &Expr) {
        let mut other = other;
        while let Expr::Paren(inner) = other {
            other = &inner.expr;
        }
        let (Some(family), Expr::NumberLiteral(number)) = (&series.quantile_of, other) else {
            return;
        };
        let Some(edges) = self
            .series
            .get(&format!("{family}_bucket"))
            .and_then(|series| series.buckets.clone())
        else {
            return;
        };
        if !is_edge(&number.val.to_string(), &edges) {
            self.errors.push(format!(
                "{where_}: the threshold {} on a quantile of `{family}` is not one of its bucket edges ({}); add the edge to the histogram or choose one",
                number.val,
                describe_edges(&edges)
            ));
        }
    }

    /// Checks that each of `wanted` is a label of `have`.
    fn require(&mut self, where_: &str, what: &str, wanted: &[String], have: &Out) {
        if have.scalar {
            return;
        }
        for label in wanted {
            if !have.labels.has(label) {
                self.errors.push(format!(
                    "{where_}: {what} `{label}`, which its input does not have (it has: {})",
                    have.labels.describe()
                ));
            }
        }
    }

    fn walk(&mut self, where_: &str, expr: &Expr, families: &mut BTreeSet<String>) -> Out {
        match expr {
            Expr::VectorSelector(selector) => self.selector(where_, selector, families),
            Expr::MatrixSelector(matrix) => self.selector(where_, &matrix.vs, families),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Out::scalar(),
            Expr::Paren(inner) => self.walk(where_, &inner.expr, families),
            Expr::Unary(inner) => self.walk(where_, &inner.expr, families),
            Expr::Subquery(inner) => self.walk(where_, &inner.expr, families),
            Expr::Aggregate(aggregate) => {
                let input = self.walk(where_, &aggregate.expr, families);
                if let Some(param) = &aggregate.param {
                    self.walk(where_, param, families);
                }
                let op = aggregate.op.to_string();
                let keeps_labels =
                    matches!(op.as_str(), "topk" | "bottomk" | "limitk" | "limit_ratio");
                // Summed buckets are still buckets, the largest quantile still a quantile.
                let keeps_kind = keeps_labels
                    || matches!(op.as_str(), "sum" | "max" | "min" | "avg" | "quantile");
                let labels = match &aggregate.modifier {
                    Some(LabelModifier::Include(by)) => {
                        self.require(where_, &format!("`{op} by` names"), &by.labels, &input);
                        if keeps_labels {
                            input.labels.clone()
                        } else {
                            Labels::Known(by.labels.iter().cloned().collect())
                        }
                    }
                    Some(LabelModifier::Exclude(without)) => {
                        self.require(
                            where_,
                            &format!("`{op} without` names"),
                            &without.labels,
                            &input,
                        );
                        match &input.labels {
                            Labels::Known(set) if !keeps_labels => Labels::Known(
                                set.iter()
                                    .filter(|label| !without.labels.contains(label))
                                    .cloned()
                                    .collect(),
                            ),
                            labels => labels.clone(),
                        }
                    }
                    None if keeps_labels => input.labels.clone(),
                    None => Labels::none(),
                };
                if keeps_kind {
                    input.with_labels(labels)
                } else {
                    Out::vector(labels)
                }
            }
            Expr::Binary(binary) => {
                let left = self.walk(where_, &binary.lhs, families);
                let right = self.walk(where_, &binary.rhs, families);
                let comparison = binary.op.is_comparison_operator();
                if comparison {
                    self.threshold(where_, &left, &binary.rhs);
                    self.threshold(where_, &right, &binary.lhs);
                }
                if left.scalar || right.scalar {
                    let vector = if left.scalar { right } else { left };
                    // A filter keeps what the series are; arithmetic changes their unit.
                    return if comparison {
                        vector
                    } else {
                        Out::vector(vector.labels)
                    };
                }
                let mut result = left.labels.clone();
                if let Some(modifier) = &binary.modifier {
                    match &modifier.matching {
                        Some(LabelModifier::Include(on)) => {
                            self.require(where_, "`on` names", &on.labels, &left);
                            self.require(where_, "`on` names", &on.labels, &right);
                        }
                        Some(LabelModifier::Exclude(ignoring)) => {
                            let both = Out::vector(left.labels.union(&right.labels));
                            self.require(where_, "`ignoring` names", &ignoring.labels, &both);
                        }
                        None => {}
                    }
                    match &modifier.card {
                        VectorMatchCardinality::ManyToOne(include) => {
                            self.require(where_, "`group_left` copies", &include.labels, &right);
                            result = result
                                .union(&Labels::Known(include.labels.iter().cloned().collect()));
                        }
                        VectorMatchCardinality::OneToMany(include) => {
                            self.require(where_, "`group_right` copies", &include.labels, &left);
                            result = right
                                .labels
                                .union(&Labels::Known(include.labels.iter().cloned().collect()));
                        }
                        VectorMatchCardinality::ManyToMany | VectorMatchCardinality::OneToOne => {}
                    }
                }
                let op = binary.op.to_string();
                if op == "or" {
                    result = result.union(&right.labels);
                }
                if comparison || op == "and" || op == "unless" {
                    left.with_labels(result)
                } else {
                    Out::vector(result)
                }
            }
            Expr::Call(call) => {
                let args: Vec<Out> = call
                    .args
                    .args
                    .iter()
                    .map(|arg| self.walk(where_, arg, families))
                    .collect();
                let first = args.iter().find(|arg| !arg.scalar).cloned();
                let string_arg = |at: usize| match call.args.args.get(at).map(|arg| &**arg) {
                    Some(Expr::StringLiteral(text)) => Some(text.val.clone()),
                    _ => None,
                };
                match call.func.name {
                    "histogram_quantile" => {
                        let Some(input) = args.get(1).cloned() else {
                            return Out::vector(Labels::Any);
                        };
                        self.require(
                            where_,
                            "`histogram_quantile` reads",
                            &["le".to_owned()],
                            &input,
                        );
                        let mut out = match input.labels {
                            Labels::Known(mut set) => {
                                set.remove("le");
                                Out::vector(Labels::Known(set))
                            }
                            Labels::Any => Out::vector(Labels::Any),
                        };
                        out.quantile_of = input.bucket_of;
                        out
                    }
                    "label_replace" | "label_join" => {
                        let input = first.unwrap_or_else(|| Out::vector(Labels::Any));
                        match string_arg(1) {
                            Some(target) => Out::vector(
                                input.labels.union(&Labels::Known(BTreeSet::from([target]))),
                            ),
                            None => Out::vector(Labels::Any),
                        }
                    }
                    "absent" | "absent_over_time" => {
                        let equal = call.args.args.first().and_then(|arg| match &**arg {
                            Expr::VectorSelector(selector) => Some(&selector.matchers),
                            Expr::MatrixSelector(matrix) => Some(&matrix.vs.matchers),
                            _ => None,
                        });
                        Out::vector(Labels::Known(
                            equal
                                .map(|matchers| {
                                    matchers
                                        .matchers
                                        .iter()
                                        .filter(|matcher| {
                                            matches!(matcher.op, MatchOp::Equal)
                                                && matcher.name != "__name__"
                                        })
                                        .map(|matcher| matcher.name.clone())
                                        .collect()
                                })
                                .unwrap_or_default(),
                        ))
                    }
                    "vector" => Out::vector(Labels::none()),
                    "scalar" | "time" | "pi" => Out::scalar(),
                    _ => first.unwrap_or_else(Out::scalar),
                }
            }
            Expr::Extension(_) => Out::vector(Labels::Any),
        }
    }

    /// Checks one dashboard's panel targets (rows' nested panels too) and `label_values` variables.
    fn dashboard(&mut self, path: &str, text: &str, usage: &mut Usage) -> Result<()> {
        let document: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("{path} is not JSON"))?;
        let board = std::path::Path::new(path)
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or(path)
            .to_owned();
        let mut panels: Vec<serde_json::Value> =
            document["panels"].as_array().cloned().unwrap_or_default();
        while let Some(panel) = panels.pop() {
            if let Some(nested) = panel["panels"].as_array() {
                panels.extend(nested.iter().cloned());
            }
            let title = panel["title"].as_str().unwrap_or("untitled").to_owned();
            for target in panel["targets"].as_array().cloned().unwrap_or_default() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let where_ = format!("{path}: panel `{title}`");
                if let Some((_, families)) = self.expression(&where_, &without_variables(expr)) {
                    for family in families {
                        usage
                            .panels
                            .entry(family)
                            .or_default()
                            .insert(format!("{board} › {title}"));
                    }
                }
            }
        }
        for variable in document["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let query = match &variable["query"] {
                serde_json::Value::String(text) => text.clone(),
                other => other["query"].as_str().unwrap_or_default().to_owned(),
            };
            let Some(inner) = query
                .trim()
                .strip_prefix("label_values(")
                .and_then(|rest| rest.strip_suffix(')'))
            else {
                continue;
            };
            let where_ = format!(
                "{path}: variable `{}`",
                variable["name"].as_str().unwrap_or_default()
            );
            // `label_values(SELECTOR, LABEL)`: the label is the text after the last comma outside
            // braces.
            let mut depth = 0_i32;
            let mut split = None;
            for (at, c) in inner.char_indices() {
                match c {
                    '{' | '(' => depth += 1,
                    '}' | ')' => depth -= 1,
                    ',' if depth == 0 => split = Some(at),
                    _ => {}
                }
            }
            let Some(split) = split else {
                self.errors
                    .push(format!("{where_}: `{query}` names no label"));
                continue;
            };
            let label = inner[split + 1..].trim().to_owned();
            if let Some((out, _)) = self.expression(&where_, &without_variables(&inner[..split])) {
                self.require(&where_, "`label_values` lists", &[label], &out);
            }
        }
        Ok(())
    }
}

/// Whether `value` (an `le` value or a threshold) is one of `edges` or `+Inf`.
fn is_edge(value: &str, edges: &[f64]) -> bool {
    value == "+Inf"
        || value.parse::<f64>().is_ok_and(|value| {
            edges
                .iter()
                .any(|edge| (edge - value).abs() <= 1e-9 * edge.abs().max(1.0))
        })
}

fn describe_edges(edges: &[f64]) -> String {
    edges
        .iter()
        .map(f64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The metric names of every selector in an expression.
fn selector_names(expr: &Expr) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![expr];
    while let Some(expr) = stack.pop() {
        match expr {
            Expr::VectorSelector(selector) => names.extend(selector.name.clone()),
            Expr::MatrixSelector(matrix) => names.extend(matrix.vs.name.clone()),
            Expr::Paren(inner) => stack.push(&inner.expr),
            Expr::Unary(inner) => stack.push(&inner.expr),
            Expr::Subquery(inner) => stack.push(&inner.expr),
            Expr::Aggregate(aggregate) => {
                stack.push(&aggregate.expr);
                if let Some(param) = &aggregate.param {
                    stack.push(param);
                }
            }
            Expr::Binary(binary) => {
                stack.push(&binary.lhs);
                stack.push(&binary.rhs);
            }
            Expr::Call(call) => stack.extend(call.args.args.iter().map(|arg| &**arg)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::{check, template_labels, without_variables};

    const CATALOGUE: &str = r#"{"families": [
        {"name": "http_requests", "type": "counter", "labels": ["method", "endpoint", "status_code"]},
        {"name": "http_request_duration_seconds", "type": "histogram", "labels": ["method", "endpoint"], "buckets": [0.01, 0.1, 0.15, 0.5]},
        {"name": "circuit_breaker_state_active", "type": "gauge", "labels": ["breaker", "state"]},
        {"name": "dependency_health", "type": "gauge", "labels": ["dependency"]}
    ]}"#;

    fn rules(body: &str) -> Vec<(String, String)> {
        vec![(
            "rules.yml".to_owned(),
            format!("groups:\n  - name: g\n    rules:\n{body}"),
        )]
    }

    fn alert(expr: &str) -> Vec<(String, String)> {
        rules(&format!(
            "      - alert: A\n        expr: '{expr}'\n        annotations:\n          summary: 'x'\n"
        ))
    }

    fn error(result: anyhow::Result<super::Usage>) -> String {
        match result {
            Ok(_) => panic!("the check passed"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_sound_alert_passes_and_reports_its_families() {
        let usage = check(
            CATALOGUE,
            &alert(
                "histogram_quantile(0.99, sum by (job, endpoint, le) (rate(http_request_duration_seconds_bucket{endpoint=~\"/v1.*\"}[5m]))) > 0.15",
            ),
            &[],
        )
        .expect("passes");
        assert_eq!(
            usage.alerts["http_request_duration_seconds"],
            ["A".to_owned()].into()
        );
    }

    #[test]
    fn an_unknown_metric_fails_with_the_name_a_query_uses() {
        let text = error(check(CATALOGUE, &alert("rate(http_requests[5m]) > 1"), &[]));
        assert!(text.contains("`http_requests` is neither"), "{text}");
        assert!(text.contains("`http_requests_total`"), "{text}");
    }

    #[test]
    fn an_unknown_matcher_label_fails() {
        let text = error(check(
            CATALOGUE,
            &alert("dependency_health{check=\"redis\"} == 0"),
            &[],
        ));
        assert!(text.contains("has no label `check`"), "{text}");
    }

    #[test]
    fn grouping_by_a_label_the_input_lacks_fails() {
        let text = error(check(
            CATALOGUE,
            &alert("sum by (job, route) (rate(http_requests_total[5m])) > 1"),
            &[],
        ));
        assert!(text.contains("`sum by` names `route`"), "{text}");
    }

    #[test]
    fn labels_dropped_by_an_aggregation_are_gone_downstream() {
        let text = error(check(
            CATALOGUE,
            &alert(
                "sum by (job) (rate(http_requests_total[5m])) / on (job, endpoint) sum by (job, endpoint) (rate(http_requests_total[5m])) > 1",
            ),
            &[],
        ));
        assert!(text.contains("`on` names `endpoint`"), "{text}");
    }

    #[test]
    fn histogram_quantile_needs_le() {
        let text = error(check(
            CATALOGUE,
            &alert(
                "histogram_quantile(0.99, sum by (job) (rate(http_request_duration_seconds_bucket[5m]))) > 1",
            ),
            &[],
        ));
        assert!(text.contains("`histogram_quantile` reads `le`"), "{text}");
    }

    #[test]
    fn an_annotation_label_the_expression_drops_fails() {
        let text = error(check(
            CATALOGUE,
            &rules(
                "      - alert: A\n        expr: 'max by (job) (circuit_breaker_state_active) > 0'\n        annotations:\n          summary: '{{ $labels.breaker }} is open'\n",
            ),
            &[],
        ));
        assert!(text.contains("`$labels.breaker`"), "{text}");
    }

    #[test]
    fn recording_rules_carry_labels_and_families_in_any_order() {
        // The alert reads a record defined after the record it reads in turn.
        let usage = check(
            CATALOGUE,
            &rules(
                "      - record: job_endpoint:errors:ratio5m\n        expr: 'job_endpoint:requests:rate5m{status_class=\"5xx\"} / ignoring (status_class) group_left sum by (job, endpoint) (job_endpoint:requests:rate5m)'\n\
                 \x20     - record: job_endpoint:requests:rate5m\n        expr: 'sum by (job, endpoint) (rate(http_requests_total[5m]))'\n        labels:\n          status_class: all\n\
                 \x20     - alert: A\n        expr: 'job_endpoint:errors:ratio5m > 0.01'\n        annotations:\n          summary: '{{ $labels.endpoint }}'\n",
            ),
            &[],
        )
        .expect("passes");
        assert!(usage.alerts["http_requests"].contains("A"));
        let text = error(check(
            CATALOGUE,
            &rules(
                "      - record: job:requests:rate5m\n        expr: 'sum by (job) (rate(http_requests_total[5m]))'\n\
                 \x20     - alert: A\n        expr: 'job:requests:rate5m{endpoint=\"/v1/x\"} > 1'\n",
            ),
            &[],
        ));
        assert!(
            text.contains("`job:requests:rate5m` has no label `endpoint`"),
            "{text}"
        );
    }

    #[test]
    fn latency_thresholds_and_le_matchers_must_be_bucket_edges() {
        let quantile = "histogram_quantile(0.99, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))";
        for passing in [
            format!("{quantile} > 0.1"),
            format!("0.5 < max by (job) ({quantile})"),
            // Arithmetic changes the unit: not compared with the edges.
            format!("{quantile} * 1000 > 150"),
            "rate(http_request_duration_seconds_bucket{le=\"+Inf\"}[5m]) - rate(http_request_duration_seconds_bucket{le=\"0.1\"}[5m]) > 0.15".to_owned(),
        ] {
            check(CATALOGUE, &alert(&passing), &[]).unwrap_or_else(|error| panic!("{passing}: {error}"));
        }
        let text = error(check(
            CATALOGUE,
            &alert(&format!("({quantile}) > 0.2")),
            &[],
        ));
        assert!(
            text.contains("the threshold 0.2 on a quantile of `http_request_duration_seconds`"),
            "{text}"
        );
        let text = error(check(
            CATALOGUE,
            &alert("rate(http_request_duration_seconds_bucket{le=\"0.2\"}[5m]) > 1"),
            &[],
        ));
        assert!(
            text.contains("`http_request_duration_seconds_bucket{le=\"0.2\"}` is not a bucket"),
            "{text}"
        );
        // Through a recording rule too.
        let text = error(check(
            CATALOGUE,
            &rules(&format!(
                "      - record: job:http_request_duration_seconds:p99_5m\n        expr: '{quantile}'\n\
                 \x20     - alert: A\n        expr: 'job:http_request_duration_seconds:p99_5m > 0.25'\n"
            )),
            &[],
        ));
        assert!(text.contains("the threshold 0.25"), "{text}");
    }

    #[test]
    fn standalone_queries_are_checked_and_listed() {
        let usage = super::check_with(
            CATALOGUE,
            &[],
            &[],
            &[(
                "rollout analysis › errors".to_owned(),
                "sum by (job) (rate(http_requests_total[5m])) > 1".to_owned(),
            )],
        )
        .expect("passes");
        assert!(usage.panels["http_requests"].contains("rollout analysis › errors"));
        let text = error(super::check_with(
            CATALOGUE,
            &[],
            &[],
            &[(
                "rollout analysis › errors".to_owned(),
                "sum by (pod) (rate(http_requests_total[5m]))".to_owned(),
            )],
        ));
        assert!(
            text.contains("rollout analysis › errors: `sum by` names `pod`"),
            "{text}"
        );
    }

    #[test]
    fn a_static_label_matcher_picks_the_definitions_of_a_shared_record() {
        let usage = check(
            CATALOGUE,
            &rules(
                "      - record: slo:errors:ratio\n        expr: 'sum by (job) (rate(http_requests_total[5m]))'\n        labels:\n          slo: availability\n\
                 \x20     - record: slo:errors:ratio\n        expr: 'sum by (job) (rate(http_request_duration_seconds_count[5m]))'\n        labels:\n          slo: latency\n\
                 \x20     - alert: Latency\n        expr: 'slo:errors:ratio{slo=\"latency\"} > 1'\n",
            ),
            &[],
        )
        .expect("passes");
        assert!(usage.alerts["http_request_duration_seconds"].contains("Latency"));
        assert!(
            !usage.alerts.contains_key("http_requests"),
            "{:?}",
            usage.alerts
        );
    }

    #[test]
    fn dashboard_panels_and_variables_are_checked_with_grafana_variables_replaced() {
        let board = |expr: &str, variable: &str| {
            vec![(
                "deploy/grafana/dashboards/http.json".to_owned(),
                serde_json::json!({
                    "panels": [{"type": "row", "title": "r", "panels": [
                        {"title": "Traffic", "targets": [{"expr": expr}]}
                    ]}],
                    "templating": {"list": [{"name": "instance", "query": {"query": variable}}]},
                })
                .to_string(),
            )]
        };
        let usage = check(
            CATALOGUE,
            &[],
            &board(
                "sum by (endpoint) (rate(http_requests_total{job=~\"$job\",instance=~\"${instance}\"}[$__rate_interval]))",
                "label_values(http_requests_total{job=~\"$job\"}, instance)",
            ),
        )
        .expect("passes");
        assert_eq!(
            usage.panels["http_requests"],
            ["http › Traffic".to_owned()].into()
        );
        let text = error(check(
            CATALOGUE,
            &[],
            &board(
                "sum by (route) (rate(http_requests_total[5m]))",
                "label_values(http_requests_total, pod)",
            ),
        ));
        assert!(
            text.contains("panel `Traffic`: `sum by` names `route`"),
            "{text}"
        );
        assert!(
            text.contains("variable `instance`: `label_values` lists `pod`"),
            "{text}"
        );
    }

    #[test]
    fn variables_and_templates_are_read_as_grafana_and_prometheus_do() {
        assert_eq!(
            without_variables("rate(x{a=~\"$job\",b=~\"${instance}\"}[$__rate_interval])"),
            "rate(x{a=~\".*\",b=~\".*\"}[5m])"
        );
        assert_eq!(
            template_labels("{{ $labels.breaker }} on {{$labels.instance}} {{ $value }}"),
            ["breaker", "instance"]
        );
    }
}
