//! Reading values out of the service's `/metrics` exposition.

use anyhow::{Context as _, Result};

use crate::Api;

/// The OpenMetrics text `/metrics` answers now.
pub async fn scrape(client: &reqwest::Client, api: &Api) -> Result<String> {
    let response = client
        .get(api.url("/metrics"))
        .send()
        .await
        .context("could not scrape /metrics")?;
    anyhow::ensure!(response.status() == 200, "/metrics: {}", response.status());
    Ok(response.text().await?)
}

/// The sum of the samples of `name` (the sample name as exposed, `_total` included for counters)
/// whose labels contain every `key="value"` pair of `labels`; `None` when no sample matches.
#[must_use]
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(inner) => match inner.split_once("} ") {
                Some(split) => split,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        let wanted = labels
            .iter()
            .all(|(key, value)| label_text.contains(&format!("{key}=\"{value}\"")));
        if let (true, Ok(value)) = (wanted, value.trim().parse::<f64>()) {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}
