//! Just enough PromQL lexing to add label matchers to every vector selector of an expression.

use anyhow::{Result, bail, ensure};

use super::FILTER;

/// PromQL keywords that are not metric names.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
];

/// Aggregation operators, which may be followed by `by (...)` before their parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The filter for a selector of `name`: [`FILTER`], except for a recording rule named
/// `level:metric:operations`, whose level lists the labels it keeps (`job_endpoint`): only the
/// `job` and `instance` matchers of labels it has (a matcher on a label a series lacks would
/// hide it as soon as one instance is chosen).
fn filter_for(name: &str) -> String {
    let Some((level, _)) = name.split_once(':') else {
        return FILTER.to_owned();
    };
    let kept: Vec<&str> = level.split('_').collect();
    FILTER
        .split(',')
        .filter(|matcher| {
            let label = matcher.split("=~").next().unwrap_or_default();
            kept.contains(&label)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Adds [`FILTER`] to every vector selector of a PromQL expression (`up` becomes
/// `up{job=~"$job",instance=~"$instance"}`, `{a="b"}` gets it after its matchers), calling
/// `seen` with each selector's metric name (empty for a bare `{...}`) and its matchers as
/// written (empty without braces). A small lexer, not a
/// parser: strings, comments, ranges and label lists are copied as they are; an identifier is a
/// selector unless it is a keyword, an aggregation, or a function (followed by `(`). Fails on
/// unbalanced brackets or an unterminated string, which the caller takes as "not safe to filter".
pub(crate) fn inject_filter(expr: &str, mut seen: impl FnMut(&str, &str)) -> Result<String> {
    let with_filter = |name: &str, inner: &str| {
        let filter = filter_for(name);
        let inner = inner.trim();
        if filter.is_empty() {
            format!("{{{inner}}}")
        } else if inner.is_empty() || inner.ends_with(',') {
            format!("{{{inner}{filter}}}")
        } else {
            format!("{{{inner},{filter}}}")
        }
    };
    let bytes = expr.as_bytes();
    let mut out = String::with_capacity(expr.len() + 64);
    let mut at = 0;
    let mut depth = 0_u32;
    while at < bytes.len() {
        match bytes[at] {
            b'"' | b'\'' | b'`' => {
                let end = string_end(expr, at)?;
                out.push_str(&expr[at..end]);
                at = end;
            }
            b'#' => {
                let end = expr[at..].find('\n').map_or(expr.len(), |n| at + n);
                out.push_str(&expr[at..end]);
                at = end;
            }
            b'[' => {
                let end = group_end(expr, at)?;
                out.push_str(&expr[at..end]);
                at = end;
            }
            b'{' => {
                let end = group_end(expr, at)?;
                seen("", &expr[at + 1..end - 1]);
                out.push_str(&with_filter("", &expr[at + 1..end - 1]));
                at = end;
            }
            b'(' => {
                depth += 1;
                out.push('(');
                at += 1;
            }
            b')' => {
                ensure!(depth > 0, "`{expr}`: an unmatched `)`");
                depth -= 1;
                out.push(')');
                at += 1;
            }
            b'}' | b']' => {
                bail!("`{expr}`: an unmatched `{}`", char::from(bytes[at]));
            }
            b'0'..=b'9' | b'.' => {
                let end = expr[at..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                    .map_or(expr.len(), |n| at + n);
                out.push_str(&expr[at..end]);
                at = end;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let end = expr[at..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .map_or(expr.len(), |n| at + n);
                let ident = &expr[at..end];
                let lower = ident.to_ascii_lowercase();
                let next_at = expr[end..]
                    .find(|c: char| !c.is_whitespace())
                    .map_or(expr.len(), |n| end + n);
                let next = bytes.get(next_at).copied();
                if LABEL_LISTS.contains(&lower.as_str()) {
                    let stop = if next == Some(b'(') {
                        group_end(expr, next_at)?
                    } else {
                        end
                    };
                    out.push_str(&expr[at..stop]);
                    at = stop;
                } else if next == Some(b'(')
                    || KEYWORDS.contains(&lower.as_str())
                    || AGGREGATIONS.contains(&lower.as_str())
                {
                    out.push_str(ident);
                    at = end;
                } else if next == Some(b'{') {
                    let close = group_end(expr, next_at)?;
                    seen(ident, &expr[next_at + 1..close - 1]);
                    out.push_str(ident);
                    out.push_str(&with_filter(ident, &expr[next_at + 1..close - 1]));
                    at = close;
                } else {
                    seen(ident, "");
                    out.push_str(ident);
                    out.push_str(&with_filter(ident, ""));
                    at = end;
                }
            }
            _ => {
                let c = expr[at..].chars().next().unwrap_or(' ');
                out.push(c);
                at += c.len_utf8();
            }
        }
    }
    ensure!(depth == 0, "`{expr}`: an unclosed `(`");
    Ok(out)
}

/// The index after the string literal that starts at `at`.
fn string_end(expr: &str, at: usize) -> Result<usize> {
    let bytes = expr.as_bytes();
    let quote = bytes[at];
    let mut index = at + 1;
    while index < bytes.len() {
        if bytes[index] == b'\\' && quote != b'`' {
            index += 2;
            continue;
        }
        if bytes[index] == quote {
            return Ok(index + 1);
        }
        index += 1;
    }
    bail!("`{expr}`: an unterminated string")
}

/// The index after the bracket that closes the one at `at` (`{`, `[` or `(`), strings skipped.
fn group_end(expr: &str, at: usize) -> Result<usize> {
    let bytes = expr.as_bytes();
    let open = bytes[at];
    let close = match open {
        b'{' => b'}',
        b'[' => b']',
        _ => b')',
    };
    let mut depth = 0;
    let mut index = at;
    while index < bytes.len() {
        match bytes[index] {
            b'"' | b'\'' | b'`' => {
                index = string_end(expr, index)?;
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(index + 1);
                }
            }
            _ => {}
        }
        index += 1;
    }
    bail!("`{expr}`: an unclosed `{}`", char::from(open))
}
