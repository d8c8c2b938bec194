//! Integration tests of mainstay-dlq against the real file system, one module per area.

mod api;
mod archive;
mod backup;
mod bounds;
mod crash;
mod durability;
mod power_loss;
mod recovery;
mod redrive;
mod ttl;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mainstay_clock::ManualClock;
use mainstay_dlq::{Dlq, DlqConfig, DlqMetrics, FailureClass, NewEntry, QueueConfig};
use prometheus_client::registry::Registry;

/// A config with no redrive rate limit and small, test-sized bounds.
pub(crate) fn config() -> DlqConfig {
    DlqConfig {
        redrive_rate_per_second: 0,
        ..DlqConfig::default()
    }
}

/// A queue config that evicts at `capacity`, with a 1 hour TTL.
pub(crate) fn evicting(capacity: usize) -> QueueConfig {
    QueueConfig {
        capacity,
        ttl: Some(Duration::from_secs(3600)),
        ..QueueConfig::default()
    }
}

pub(crate) struct Harness {
    pub(crate) dlq: Dlq,
    pub(crate) registry: Registry,
}

pub(crate) async fn open_with(dir: &Path, config: DlqConfig, clock: &ManualClock) -> Harness {
    let mut registry = Registry::default();
    let metrics = DlqMetrics::register(&mut registry);
    let dlq = Dlq::builder(dir)
        .config(config)
        .metrics(metrics)
        .clock(Arc::new(clock.clone()))
        .open()
        .await
        .expect("open dlq");
    Harness { dlq, registry }
}

pub(crate) fn entry(queue: &str, key: &str) -> NewEntry {
    NewEntry::inline(
        queue,
        key,
        format!("payload of {key}").into_bytes(),
        FailureClass::Transient,
        format!("failed {key}"),
    )
}

/// The value of the sample `series` (name with labels, as exposed) in `registry`, or 0.
pub(crate) fn metric(registry: &Registry, series: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode metrics");
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

pub(crate) fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode metrics");
    text
}

pub(crate) const HEADER: usize = 24;

/// Start offsets of the frames in a journal segment, and where the frames end (zeros follow).
pub(crate) fn frame_offsets(bytes: &[u8]) -> (Vec<usize>, usize) {
    let mut offsets = Vec::new();
    let mut pos = HEADER;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        offsets.push(pos);
        pos += 8 + len;
    }
    (offsets, pos)
}

/// The segments of the DLQ's journal (`log/`, mainstay-journal), oldest first.
pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    paths.sort();
    paths
}

/// The active (last) journal segment.
pub(crate) fn journal(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("a journal segment")
}

/// The keys of every entry, in list order.
pub(crate) fn keys(dlq: &Dlq) -> Vec<String> {
    dlq.list(&Default::default(), None, 1000)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.key().to_owned())
        .collect()
}
