//! The metric catalogue: one plain, static description per metric family a crate exports, and a
//! check of a catalogue against a real OpenMetrics exposition.
//!
//! It lives here, in the base every mainstay crate already depends on, because it has no
//! dependency and no time in it: every metric-exporting crate declares a
//! `pub const METRICS: &[MetricFamily]` with it and tests that declaration against what it really
//! registers (`docs/decisions/0096-metric-catalogue.md`).
//!
//! ```
//! use mainstay_clock::catalogue::{MetricFamily, MetricKind, SampleRule, check_exposition};
//!
//! const METRICS: &[MetricFamily] = &[MetricFamily {
//!     name: "jobs",
//!     kind: MetricKind::Counter,
//!     unit: None,
//!     labels: &["queue"],
//!     help: "Jobs run",
//!     owner: "example",
//!     buckets: None,
//! }];
//! let exposition = "# HELP jobs Jobs run.\n# TYPE jobs counter\njobs_total{queue=\"a\"} 1\n# EOF\n";
//! assert_eq!(check_exposition(METRICS, exposition, SampleRule::Required), Ok(()));
//! // A label the catalogue does not declare is a mismatch.
//! let other = exposition.replace("queue=", "tenant=");
//! assert!(check_exposition(METRICS, &other, SampleRule::Required).is_err());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One metric family as it appears in the exposition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricFamily {
    /// The family name of the `# TYPE` line: with the unit suffix when the family has one, without
    /// the `_total` a counter's samples carry.
    pub name: &'static str,
    /// The `# TYPE` of the family.
    pub kind: MetricKind,
    /// The `# UNIT` of the family (`seconds`, `bytes`), `None` when the exposition has no such line.
    pub unit: Option<&'static str>,
    /// The label names of the family's samples, in the order the code writes them (a histogram's
    /// `le` is not listed).
    pub labels: &'static [&'static str],
    /// The help text as registered, without the full stop the encoder adds.
    pub help: &'static str,
    /// The crate that registers the family (`mainstay-resilience`, `mainstay-api`).
    pub owner: &'static str,
    /// A histogram's bucket edges (the finite `le` values, ascending); `None` for other types.
    /// Alert and SLO thresholds must be among them: between edges a count is a guess.
    pub buckets: Option<&'static [f64]>,
}

impl MetricFamily {
    /// The name a query uses for the family's main samples: `name_total` for a counter, `name_info`
    /// for an info metric, `name` otherwise (a histogram's samples add `_bucket`, `_sum`, `_count`).
    #[must_use]
    pub fn sample_name(&self) -> String {
        match self.kind {
            MetricKind::Counter => format!("{}_total", self.name),
            MetricKind::Info => format!("{}_info", self.name),
            MetricKind::Gauge | MetricKind::Histogram => self.name.to_owned(),
        }
    }
}

/// The type of a metric family, as its `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// A monotonic count (samples named `_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
    /// Constant labels with the value 1.
    Info,
}

impl MetricKind {
    /// The word of the `# TYPE` line: `counter`, `gauge`, `histogram`, `info`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Info => "info",
        }
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Whether [`check_exposition`] requires a sample of every catalogued family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleRule {
    /// Every family must have at least one sample, so that its label names are checked: for a
    /// crate's own test, which exercises every family.
    Required,
    /// A family without samples passes on its `# HELP` and `# TYPE` lines alone: for a scrape of a
    /// running service, where a labelled family has no series until something uses it. (A
    /// prometheus-client `Family` without series writes no descriptor at all, so such a family is
    /// "catalogued but not exposed"; a collector may write a descriptor without samples.)
    Optional,
}

/// One family read from an exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExposedFamily {
    /// The `# TYPE` word.
    pub kind: String,
    /// The `# UNIT`, if any.
    pub unit: Option<String>,
    /// The `# HELP` text, unescaped as written (the encoder's trailing full stop included).
    pub help: String,
    /// Each distinct set of label names among the family's samples, `le` left out.
    pub label_sets: BTreeSet<Vec<String>>,
    /// The distinct finite `le` values of a histogram's bucket samples, ascending.
    pub buckets: Vec<f64>,
}

/// Reads the families of an OpenMetrics text exposition: every `# HELP`, `# TYPE` and `# UNIT`
/// line, and the label names of the samples that follow each family's descriptor.
#[must_use]
pub fn parse_exposition(text: &str) -> BTreeMap<String, ExposedFamily> {
    let mut families: BTreeMap<String, ExposedFamily> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let rest = parts.next().unwrap_or_default().to_owned();
            let family = families.entry(name.to_owned()).or_default();
            match keyword {
                "HELP" => family.help = rest,
                "TYPE" => family.kind = rest,
                "UNIT" => family.unit = Some(rest),
                _ => continue,
            }
            current = Some(name.to_owned());
            continue;
        }
        let Some(name) = current.as_ref() else {
            continue;
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let labels = sample_label_names(line);
        if let Some(family) = families.get_mut(name) {
            family.label_sets.insert(labels);
            if let Some(edge) = bucket_edge(line)
                && !family.buckets.contains(&edge)
            {
                family.buckets.push(edge);
                family.buckets.sort_by(f64::total_cmp);
            }
        }
    }
    families
}

/// The finite `le` value of a bucket sample line (`x_bucket{le="0.1"} 3`), `None` for `+Inf` and
/// other lines.
fn bucket_edge(line: &str) -> Option<f64> {
    let (name, _) = line.split_once('{')?;
    if !name.ends_with("_bucket") {
        return None;
    }
    let at = line.find("le=\"")?;
    let rest = &line[at + 4..];
    rest[..rest.find('"')?]
        .parse::<f64>()
        .ok()
        .filter(|edge| edge.is_finite())
}

/// The label names of one sample line, `le` left out; quoted values may hold `,`, `}` and `\"`.
fn sample_label_names(line: &str) -> Vec<String> {
    let Some(open) = line.find(['{', ' ']) else {
        return Vec::new();
    };
    if !line[open..].starts_with('{') {
        return Vec::new();
    }
    let mut names = Vec::new();
    let mut rest = &line[open + 1..];
    while let Some(equals) = rest.find('=') {
        let name = rest[..equals].trim_start_matches(',').trim();
        if name != "le" {
            names.push(name.to_owned());
        }
        // Skip the quoted value, honouring backslash escapes.
        let mut chars = rest[equals + 1..].char_indices().skip(1);
        let mut end = None;
        while let Some((at, character)) = chars.next() {
            match character {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = Some(equals + 1 + at + 1);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        rest = &rest[end..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// Compares a catalogue with an exposition, both ways: every catalogued family is exposed with
/// the same type, unit and help and, where it has samples, exactly the catalogued label names;
/// every exposed family is catalogued. Returns every mismatch, one sentence each.
///
/// # Errors
///
/// The list of mismatches, when there is at least one.
pub fn check_exposition(
    catalogue: &[MetricFamily],
    exposition: &str,
    samples: SampleRule,
) -> Result<(), Vec<String>> {
    let exposed = parse_exposition(exposition);
    let mut mismatches = Vec::new();
    let mut catalogued = BTreeSet::new();
    for family in catalogue {
        if !catalogued.insert(family.name) {
            mismatches.push(format!("`{}` is catalogued twice", family.name));
        }
        let Some(found) = exposed.get(family.name) else {
            mismatches.push(format!("`{}` is catalogued but not exposed", family.name));
            continue;
        };
        if found.kind != family.kind.as_str() {
            mismatches.push(format!(
                "`{}` is catalogued as a {} but exposed as a {}",
                family.name, family.kind, found.kind
            ));
        }
        if found.unit.as_deref() != family.unit {
            mismatches.push(format!(
                "`{}` is catalogued with unit {:?} but exposed with unit {:?}",
                family.name, family.unit, found.unit
            ));
        }
        let help = found.help.strip_suffix('.').unwrap_or(&found.help);
        if help != family.help {
            mismatches.push(format!(
                "`{}` is catalogued with help {:?} but exposed with help {:?}",
                family.name, family.help, help
            ));
        }
        match (family.kind, family.buckets) {
            (MetricKind::Histogram, None) => mismatches.push(format!(
                "`{}` is a histogram catalogued without its bucket edges",
                family.name
            )),
            (MetricKind::Histogram, Some(edges))
                if !found.buckets.is_empty() && found.buckets != edges =>
            {
                mismatches.push(format!(
                    "`{}` is catalogued with buckets {edges:?} but exposed with {:?}",
                    family.name, found.buckets
                ));
            }
            (MetricKind::Histogram, Some(_)) => {}
            (_, Some(_)) => mismatches.push(format!(
                "`{}` is a {} catalogued with bucket edges",
                family.name, family.kind
            )),
            (_, None) => {}
        }
        let labels: Vec<String> = family.labels.iter().map(|&name| name.to_owned()).collect();
        if found.label_sets.is_empty() {
            if samples == SampleRule::Required {
                mismatches.push(format!(
                    "`{}` has no sample, so its labels are unchecked",
                    family.name
                ));
            }
        } else if found.label_sets.iter().any(|set| *set != labels) {
            mismatches.push(format!(
                "`{}` is catalogued with labels {:?} but exposed with {:?}",
                family.name, labels, found.label_sets
            ));
        }
    }
    for name in exposed.keys() {
        if !catalogued.contains(name.as_str()) {
            mismatches.push(format!("`{name}` is exposed but not catalogued"));
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(mismatches)
    }
}

#[cfg(test)]
mod tests {
    use super::{MetricFamily, MetricKind, SampleRule, check_exposition, sample_label_names};

    #[test]
    fn label_names_skip_quoted_commas_braces_and_escapes() {
        let line = r#"x_bucket{path="a,b}=\"c\"",le="0.1"} 3"#;
        assert_eq!(sample_label_names(line), vec!["path".to_owned()]);
        assert!(sample_label_names("x_total 3").is_empty());
    }

    #[test]
    fn bucket_edges_are_compared_with_the_exposed_le_values() {
        const EDGES: &[f64] = &[0.01, 0.1];
        let catalogue = |buckets| {
            [MetricFamily {
                name: "wait_seconds",
                kind: MetricKind::Histogram,
                unit: Some("seconds"),
                labels: &[],
                help: "Wait",
                owner: "test",
                buckets,
            }]
        };
        let exposition = "# HELP wait_seconds Wait.\n# TYPE wait_seconds histogram\n# UNIT wait_seconds seconds\n\
                          wait_seconds_sum 0.2\nwait_seconds_count 2\n\
                          wait_seconds_bucket{le=\"0.01\"} 1\nwait_seconds_bucket{le=\"0.1\"} 2\n\
                          wait_seconds_bucket{le=\"+Inf\"} 2\n# EOF\n";
        assert_eq!(
            check_exposition(&catalogue(Some(EDGES)), exposition, SampleRule::Required),
            Ok(())
        );
        let mismatches = check_exposition(
            &catalogue(Some(&[0.01, 0.15])),
            exposition,
            SampleRule::Required,
        )
        .unwrap_err();
        assert_eq!(
            mismatches,
            ["`wait_seconds` is catalogued with buckets [0.01, 0.15] but exposed with [0.01, 0.1]"]
        );
    }

    #[test]
    fn every_mismatch_is_reported() {
        const CATALOGUE: &[MetricFamily] = &[
            MetricFamily {
                name: "latency_seconds",
                kind: MetricKind::Histogram,
                unit: Some("seconds"),
                labels: &["route"],
                help: "Latency",
                owner: "test",
                buckets: None,
            },
            MetricFamily {
                name: "missing",
                kind: MetricKind::Gauge,
                unit: None,
                labels: &[],
                help: "Never exposed",
                owner: "test",
                buckets: None,
            },
        ];
        let exposition = "# HELP latency_seconds Latency.\n# TYPE latency_seconds gauge\n\
                          latency_seconds{route=\"/\",method=\"GET\"} 1\n\
                          # HELP extra Extra.\n# TYPE extra gauge\n# EOF\n";
        let mismatches = check_exposition(CATALOGUE, exposition, SampleRule::Optional).unwrap_err();
        assert_eq!(
            mismatches,
            vec![
                "`latency_seconds` is catalogued as a histogram but exposed as a gauge",
                "`latency_seconds` is catalogued with unit Some(\"seconds\") but exposed with unit None",
                "`latency_seconds` is a histogram catalogued without its bucket edges",
                "`latency_seconds` is catalogued with labels [\"route\"] but exposed with {[\"route\", \"method\"]}",
                "`missing` is catalogued but not exposed",
                "`extra` is exposed but not catalogued",
            ]
        );
    }
}
